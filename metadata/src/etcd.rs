//! [`KvBackend`] on etcd v3: prefix gets, `Txn` compare-and-swap and a prefix
//! watch that reconnects by itself and resumes from the last seen revision.

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    AlarmAction, AlarmOptions, AlarmType, Client, Compare as EtcdCompare, CompareOp,
    ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};
use tokio::sync::broadcast;

use crate::kv::{Compare, HistoryCompaction, KeyValue, KvBackend, WatchEvent, Write};
use crate::MetadataError;

pub struct EtcdKv {
    client: Client,
    endpoints: Vec<String>,
}

/// Connection problems and timeouts are worth retrying; anything else is a
/// request etcd refused.
fn unavailable(e: etcd_client::Error) -> MetadataError {
    use etcd_client::Error as E;
    let transient = match &e {
        E::GRpcStatus(s) => matches!(
            s.code(),
            tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Cancelled
                | tonic::Code::Aborted
        ),
        E::InvalidArgs(_) | E::Utf8Error(_) => false,
        _ => true,
    };
    if transient {
        MetadataError::Unavailable(format!("etcd: {e}"))
    } else {
        MetadataError::Store(format!("etcd refused the request: {e}"))
    }
}

impl EtcdKv {
    pub async fn connect(endpoints: &[String], timeout: Duration) -> Result<Self, MetadataError> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        let client = Client::connect(endpoints, Some(opts)).await.map_err(|e| {
            MetadataError::Unavailable(format!(
                "cannot reach etcd at {}: {e}; check the endpoints and that etcd is running",
                endpoints.join(",")
            ))
        })?;
        Ok(Self {
            client,
            endpoints: endpoints.to_vec(),
        })
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }
}

#[async_trait]
impl KvBackend for EtcdKv {
    async fn get_prefix(&self, prefix: &str) -> Result<Vec<KeyValue>, MetadataError> {
        let resp = self
            .client
            .kv_client()
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(unavailable)?;
        Ok(resp
            .kvs()
            .iter()
            .map(|kv| KeyValue {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                value: kv.value().to_vec(),
                mod_revision: kv.mod_revision(),
            })
            .collect())
    }

    async fn txn(&self, compares: Vec<Compare>, writes: Vec<Write>) -> Result<bool, MetadataError> {
        let compares: Vec<EtcdCompare> = compares
            .into_iter()
            .map(|c| match c {
                Compare::Absent(k) => EtcdCompare::create_revision(k, CompareOp::Equal, 0),
                Compare::ModRevision(k, rev) => EtcdCompare::mod_revision(k, CompareOp::Equal, rev),
            })
            .collect();
        let ops: Vec<TxnOp> = writes
            .into_iter()
            .map(|w| match w {
                Write::Put(k, v) => TxnOp::put(k, v, None),
                Write::PutLeased(k, v, lease) => {
                    TxnOp::put(k, v, Some(PutOptions::new().with_lease(lease)))
                }
                Write::Delete(k) => TxnOp::delete(k, None),
                Write::DeletePrefix(p) => {
                    TxnOp::delete(p, Some(DeleteOptions::new().with_prefix()))
                }
            })
            .collect();
        let resp = self
            .client
            .kv_client()
            .txn(Txn::new().when(compares).and_then(ops))
            .await
            .map_err(unavailable)?;
        Ok(resp.succeeded())
    }

    fn watch(&self, prefix: &str) -> broadcast::Receiver<WatchEvent> {
        let (tx, rx) = broadcast::channel(1024);
        let client = self.client.clone();
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            let mut next_revision = 0i64;
            loop {
                if tx.receiver_count() == 0 {
                    break;
                }
                let mut opts = WatchOptions::new().with_prefix();
                if next_revision > 0 {
                    opts = opts.with_start_revision(next_revision);
                }
                let mut watch_client = client.watch_client();
                match watch_client.watch(prefix.as_bytes(), Some(opts)).await {
                    Ok(mut stream) => {
                        // Events between the caller's last read and this point are
                        // not replayed: have subscribers re-read once.
                        let _ = tx.send(WatchEvent::Resync);
                        if !forward_events(&mut stream, &tx, &mut next_revision).await {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "etcd watch failed; retrying");
                    }
                }
                // The watch broke: tell subscribers to re-read (events may be lost)
                // and reconnect after a pause.
                let _ = tx.send(WatchEvent::Resync);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        rx
    }

    fn describe(&self) -> String {
        format!("etcd {}", self.endpoints.join(","))
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<i64, MetadataError> {
        // etcd counts in whole seconds; never round a lease down to nothing.
        let secs = i64::try_from(ttl.as_millis().div_ceil(1000))
            .unwrap_or(i64::MAX)
            .max(1);
        let resp = self
            .client
            .lease_client()
            .grant(secs, None)
            .await
            .map_err(unavailable)?;
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: i64) -> Result<bool, MetadataError> {
        // etcd reports an ended lease either as an error or as a TTL of zero.
        let ended = |e: etcd_client::Error| match e {
            etcd_client::Error::LeaseKeepAliveError(m) if m.contains("not found") => Ok(false),
            e => Err(unavailable(e)),
        };
        let (mut keeper, mut stream) = match self.client.lease_client().keep_alive(lease).await {
            Ok(s) => s,
            Err(e) => return ended(e),
        };
        if let Err(e) = keeper.keep_alive().await {
            return ended(e);
        }
        let message = match stream.message().await {
            Ok(m) => m,
            Err(e) => return ended(e),
        };
        match message {
            Some(resp) => Ok(resp.ttl() > 0),
            None => Err(MetadataError::Unavailable(
                "etcd closed the lease keep-alive stream".into(),
            )),
        }
    }

    async fn revision(&self) -> Result<i64, MetadataError> {
        let resp = self
            .client
            .kv_client()
            .get("\0", Some(GetOptions::new().with_count_only()))
            .await
            .map_err(unavailable)?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    async fn out_of_space(&self) -> Result<bool, MetadataError> {
        Ok(!space_alarms(&self.client).await?.is_empty())
    }

    /// The space in use in the database file of the member answering (what
    /// compaction shrinks; the file itself shrinks only by defragmenting).
    async fn history_bytes(&self) -> Result<Option<u64>, MetadataError> {
        let status = self.client.clone().status().await.map_err(unavailable)?;
        Ok(u64::try_from(status.raft_used_db_size()).ok())
    }

    async fn compact_history(&self, revision: i64) -> Result<HistoryCompaction, MetadataError> {
        // Out of space, etcd refuses every write (offset commits, leases'
        // keys, topic changes) until its history shrinks and the alarm is
        // cleared by hand: do that here, to the newest revision (watches
        // that fall behind it re-read everything, which beats a cluster
        // that cannot write).
        let alarmed = space_alarms(&self.client).await?;
        let revision = if alarmed.is_empty() {
            revision
        } else {
            tracing::warn!(
                members = alarmed.len(),
                "etcd is out of space (NOSPACE alarm) and refuses writes; compacting all history, defragmenting and clearing the alarm"
            );
            self.revision().await?
        };
        if revision > 0 {
            match self.client.kv_client().compact(revision, None).await {
                Ok(_) => {}
                // Someone (etcd's own auto-compaction, another controller) got there first.
                Err(etcd_client::Error::GRpcStatus(s))
                    if s.code() == tonic::Code::OutOfRange || s.message().contains("compacted") =>
                {
                    tracing::debug!(
                        revision,
                        "etcd history was already compacted past this revision"
                    )
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
        // Compaction frees pages inside each member's file, which later
        // writes reuse; only defragmenting gives them back. It blocks the
        // member while it runs, so at most one member per pass, and only
        // one whose file is large and mostly free.
        let mut report = HistoryCompaction::default();
        for endpoint in &self.endpoints {
            let Ok(mut member) = Client::connect([endpoint.as_str()], None).await else {
                continue;
            };
            let Ok(status) = member.status().await else {
                continue;
            };
            if !alarmed.is_empty()
                || defragment_worthwhile(status.db_size(), status.raft_used_db_size())
            {
                member.defragment().await.map_err(unavailable)?;
                tracing::info!(
                    endpoint,
                    db_bytes = status.db_size(),
                    in_use_bytes = status.raft_used_db_size(),
                    "defragmented an etcd member"
                );
                report.defragmented.push(endpoint.clone());
                if alarmed.is_empty() {
                    break;
                }
            }
        }
        for member in &alarmed {
            let mut options = AlarmOptions::new();
            options.with_member(*member);
            self.client
                .clone()
                .alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(options))
                .await
                .map_err(unavailable)?;
            report.space_alarms_cleared += 1;
        }
        if !alarmed.is_empty() {
            tracing::warn!(
                cleared = report.space_alarms_cleared,
                defragmented = report.defragmented.len(),
                "etcd's NOSPACE alarm cleared; writes resume. Raise etcd's --quota-backend-bytes or find what writes so much (metric metadata_space_alarms_cleared)"
            );
        }
        Ok(report)
    }

    async fn revoke_lease(&self, lease: i64) -> Result<(), MetadataError> {
        match self.client.lease_client().revoke(lease).await {
            Ok(_) => Ok(()),
            // Already ended: nothing left to revoke.
            Err(etcd_client::Error::GRpcStatus(s)) if s.code() == tonic::Code::NotFound => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }
}

/// The members with a NOSPACE alarm raised.
async fn space_alarms(client: &Client) -> Result<Vec<u64>, MetadataError> {
    let response = client
        .clone()
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .map_err(unavailable)?;
    Ok(response
        .alarms()
        .iter()
        .filter(|a| a.alarm() == AlarmType::Nospace)
        .map(|a| a.member_id())
        .collect())
}

/// Members at least this large are defragmented once less than half of
/// their file is in use.
const DEFRAGMENT_MIN_DB_BYTES: i64 = 64 * 1024 * 1024;

fn defragment_worthwhile(db_bytes: i64, in_use_bytes: i64) -> bool {
    db_bytes >= DEFRAGMENT_MIN_DB_BYTES && in_use_bytes.saturating_mul(2) < db_bytes
}

/// Forwards watch events until the stream ends or is cancelled. Returns false
/// when nobody is subscribed any more.
async fn forward_events(
    stream: &mut etcd_client::WatchStream,
    tx: &broadcast::Sender<WatchEvent>,
    next_revision: &mut i64,
) -> bool {
    while let Ok(Some(resp)) = stream.message().await {
        if resp.canceled() {
            // Compacted past our revision: start over from a full read.
            *next_revision = 0;
            return true;
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            *next_revision = (*next_revision).max(kv.mod_revision() + 1);
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let event = match ev.event_type() {
                EventType::Put => WatchEvent::Put(KeyValue {
                    key,
                    value: kv.value().to_vec(),
                    mod_revision: kv.mod_revision(),
                }),
                EventType::Delete => WatchEvent::Delete(key),
            };
            if tx.send(event).is_err() {
                return false;
            }
        }
    }
    true
}
