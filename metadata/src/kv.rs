//! The small key-value surface Kafscale needs from its metadata store: prefix
//! reads, compare-and-swap transactions and prefix watches. etcd provides it in
//! production; [`FileKv`] provides the same semantics in one process for dev mode.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::MetadataError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

/// A condition a transaction checks before it writes.
#[derive(Debug, Clone)]
pub enum Compare {
    /// The key does not exist.
    Absent(String),
    /// The key exists and was last written at this revision.
    ModRevision(String, i64),
}

#[derive(Debug, Clone)]
pub enum Write {
    Put(String, Vec<u8>),
    /// A put whose key disappears when the lease ends (expiry or revocation).
    PutLeased(String, Vec<u8>, i64),
    Delete(String),
    DeletePrefix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put(KeyValue),
    Delete(String),
    /// The watch lost events (reconnect, lag): re-read everything.
    Resync,
}

#[async_trait]
pub trait KvBackend: Send + Sync + 'static {
    async fn get_prefix(&self, prefix: &str) -> Result<Vec<KeyValue>, MetadataError>;
    /// Applies `writes` atomically if every compare holds; returns whether it did.
    async fn txn(&self, compares: Vec<Compare>, writes: Vec<Write>) -> Result<bool, MetadataError>;
    /// Events for keys under `prefix`, from now on.
    fn watch(&self, prefix: &str) -> broadcast::Receiver<WatchEvent>;
    fn describe(&self) -> String;
    /// A lease that ends `ttl` after its last renewal.
    async fn grant_lease(&self, ttl: Duration) -> Result<i64, MetadataError>;
    /// Renews the lease once; false when it has already ended.
    async fn keep_alive(&self, lease: i64) -> Result<bool, MetadataError>;
    /// Ends the lease now, deleting its keys.
    async fn revoke_lease(&self, lease: i64) -> Result<(), MetadataError>;
    /// The store's current revision (every write raises it).
    async fn revision(&self) -> Result<i64, MetadataError>;
    /// Drops the history before `revision` (older versions of keys), so that
    /// a store written to all the time (offset commits) stays bounded, and
    /// defragments members whose file is mostly free space.
    async fn compact_history(&self, revision: i64) -> Result<HistoryCompaction, MetadataError>;
    /// Whether the store refuses writes for lack of space (etcd's NOSPACE
    /// alarm). [`KvBackend::compact_history`] clears it.
    async fn out_of_space(&self) -> Result<bool, MetadataError> {
        Ok(false)
    }
    /// What the store's data and history take now, if it keeps history
    /// that [`KvBackend::compact_history`] can drop.
    async fn history_bytes(&self) -> Result<Option<u64>, MetadataError> {
        Ok(None)
    }
}

/// What a history compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryCompaction {
    /// Members defragmented, by endpoint.
    pub defragmented: Vec<String>,
    /// Members whose out-of-space alarm was raised, then cleared.
    pub space_alarms_cleared: usize,
}

#[derive(Default, Serialize, Deserialize)]
struct FileState {
    revision: i64,
    entries: BTreeMap<String, (i64, Vec<u8>)>,
    /// Keys bound to a lease, with it. Leases live only as long as the
    /// process, so these keys are dropped when the file is opened again.
    #[serde(default)]
    leased: BTreeMap<String, i64>,
}

/// A single-process store persisted as one JSON file, rewritten atomically
/// (write to a temporary file, fsync, rename) on every transaction.
pub struct FileKv {
    path: PathBuf,
    state: Mutex<FileState>,
    live_leases: Mutex<BTreeSet<i64>>,
    events: broadcast::Sender<(String, WatchEvent)>,
}

impl FileKv {
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, MetadataError> {
        let path = path.into();
        let mut state: FileState = match std::fs::read(&path) {
            Ok(raw) => serde_json::from_slice(&raw).map_err(|e| {
                MetadataError::Store(format!(
                    "metadata file {} is unreadable ({e}); restore it or move it away to start empty",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileState::default(),
            Err(e) => return Err(MetadataError::Store(format!("{}: {e}", path.display()))),
        };
        for key in std::mem::take(&mut state.leased).into_keys() {
            state.entries.remove(&key);
        }
        let (events, _) = broadcast::channel(1024);
        Ok(Self {
            path,
            state: Mutex::new(state),
            live_leases: Mutex::default(),
            events,
        })
    }

    fn persist(&self, state: &FileState) -> Result<(), MetadataError> {
        let io = |e: std::io::Error| MetadataError::Store(format!("{}: {e}", self.path.display()));
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = self.path.with_extension("tmp");
        let raw = serde_json::to_vec(state).map_err(|e| MetadataError::Store(e.to_string()))?;
        {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&raw).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        // The rename itself must survive power loss, or the store would come
        // back with the previous state after acknowledging this one.
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty());
        std::fs::File::open(dir.unwrap_or(std::path::Path::new(".")))
            .and_then(|d| d.sync_all())
            .map_err(io)
    }
}

#[async_trait]
impl KvBackend for FileKv {
    async fn get_prefix(&self, prefix: &str) -> Result<Vec<KeyValue>, MetadataError> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Ok(state
            .entries
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (rev, v))| KeyValue {
                key: k.clone(),
                value: v.clone(),
                mod_revision: *rev,
            })
            .collect())
    }

    async fn txn(&self, compares: Vec<Compare>, writes: Vec<Write>) -> Result<bool, MetadataError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let holds = compares.iter().all(|c| match c {
            Compare::Absent(k) => !state.entries.contains_key(k),
            Compare::ModRevision(k, rev) => state.entries.get(k).map(|e| e.0) == Some(*rev),
        });
        if !holds {
            return Ok(false);
        }
        let mut next = FileState {
            revision: state.revision + 1,
            entries: state.entries.clone(),
            leased: state.leased.clone(),
        };
        let rev = next.revision;
        let mut events = Vec::new();
        for w in writes {
            let w = match w {
                Write::PutLeased(k, v, lease) => {
                    next.leased.insert(k.clone(), lease);
                    Write::Put(k, v)
                }
                Write::Put(k, v) => {
                    next.leased.remove(&k);
                    Write::Put(k, v)
                }
                other => other,
            };
            match w {
                Write::PutLeased(..) => {}
                Write::Put(k, v) => {
                    next.entries.insert(k.clone(), (rev, v.clone()));
                    events.push((
                        k.clone(),
                        WatchEvent::Put(KeyValue {
                            key: k,
                            value: v,
                            mod_revision: rev,
                        }),
                    ));
                }
                Write::Delete(k) => {
                    next.leased.remove(&k);
                    if next.entries.remove(&k).is_some() {
                        events.push((k.clone(), WatchEvent::Delete(k)));
                    }
                }
                Write::DeletePrefix(p) => {
                    let keys: Vec<String> = next
                        .entries
                        .keys()
                        .filter(|k| k.starts_with(&p))
                        .cloned()
                        .collect();
                    for k in keys {
                        next.entries.remove(&k);
                        next.leased.remove(&k);
                        events.push((k.clone(), WatchEvent::Delete(k)));
                    }
                }
            }
        }
        self.persist(&next)?;
        *state = next;
        drop(state);
        for e in events {
            let _ = self.events.send(e);
        }
        Ok(true)
    }

    fn watch(&self, prefix: &str) -> broadcast::Receiver<WatchEvent> {
        let (tx, rx) = broadcast::channel(1024);
        let mut all = self.events.subscribe();
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            loop {
                match all.recv().await {
                    Ok((key, ev)) if key.starts_with(&prefix) => {
                        if tx.send(ev).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if tx.send(WatchEvent::Resync).is_err() {
                            break;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        rx
    }

    fn describe(&self) -> String {
        format!("embedded file store {}", self.path.display())
    }

    /// Leases of the embedded store end only when revoked or when the process
    /// ends: one process is the only client, so it is alive while it asks.
    async fn grant_lease(&self, _ttl: Duration) -> Result<i64, MetadataError> {
        let mut live = self.live_leases.lock().unwrap_or_else(|e| e.into_inner());
        let id = live.last().map_or(1, |l| l + 1);
        live.insert(id);
        Ok(id)
    }

    async fn keep_alive(&self, lease: i64) -> Result<bool, MetadataError> {
        Ok(self
            .live_leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&lease))
    }

    async fn revision(&self) -> Result<i64, MetadataError> {
        Ok(self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .revision)
    }

    /// The file holds no history: nothing to drop.
    async fn compact_history(&self, _revision: i64) -> Result<HistoryCompaction, MetadataError> {
        Ok(HistoryCompaction::default())
    }

    async fn revoke_lease(&self, lease: i64) -> Result<(), MetadataError> {
        self.live_leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&lease);
        let keys: Vec<String> = {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state
                .leased
                .iter()
                .filter(|(_, l)| **l == lease)
                .map(|(k, _)| k.clone())
                .collect()
        };
        self.txn(Vec::new(), keys.into_iter().map(Write::Delete).collect())
            .await
            .map(|_| ())
    }
}
