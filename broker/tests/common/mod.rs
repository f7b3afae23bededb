//! What the in-process broker tests share: a broker backed by an in-process
//! flusher over a local directory and the embedded metadata store, and a way
//! to send it one request through the wire format.

#![allow(dead_code)] // each test crate uses its own part

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafscale_broker::kafka::handlers;
use kafscale_broker::object_storage::StorageAccess;
use kafscale_broker::{Broker, BrokerConfig};
use kafscale_flusher::metrics::{FlusherMetrics, HealthSettings, StoreHealth};
use kafscale_flusher::{FlusherService, FlusherSettings, LocalDirStore};
use kafscale_flusher_protocol::{dispatch, ErrorKind, ObjectStorage, Op};
use kafscale_flusher_protocol::{RemoteError, Request, Response, Transport};
use kafscale_metadata::{FileKv, KvBackend, MetadataStore};

/// A dev-mode-like broker (topics auto-created, 1 ms flush window) in `dir`.
pub async fn start_broker(dir: &std::path::Path) -> Arc<Broker> {
    start_broker_with(dir, |_| {}).await
}

/// The same, with `adjust` applied to its configuration first.
pub async fn start_broker_with(
    dir: &std::path::Path,
    adjust: impl FnOnce(&mut BrokerConfig),
) -> Arc<Broker> {
    let kv = Arc::new(FileKv::open(dir.join("meta.json")).unwrap());
    start_broker_on(dir, kv, adjust).await
}

/// The in-process flusher of these tests, over `dir/objects`.
fn flusher_service(dir: &std::path::Path) -> Arc<FlusherService> {
    FlusherService::new(
        Arc::new(LocalDirStore::new(dir.join("objects")).unwrap()),
        FlusherSettings::default(),
        FlusherMetrics::detached(),
        Arc::new(StoreHealth::new(HealthSettings::default())),
    )
}

/// The configuration of these tests' brokers, with `adjust` applied.
fn test_config(adjust: impl FnOnce(&mut BrokerConfig)) -> BrokerConfig {
    let mut config = BrokerConfig {
        auto_create_topics: true,
        ..BrokerConfig::default()
    };
    config.log.flush_window = Duration::from_millis(1);
    // As long as the flusher client waits.
    config.log.upload_timeout = Duration::from_secs(10);
    adjust(&mut config);
    config
}

/// The same, over the metadata store `kv` (which the test may inspect).
pub async fn start_broker_on(
    dir: &std::path::Path,
    kv: Arc<dyn KvBackend>,
    adjust: impl FnOnce(&mut BrokerConfig),
) -> Arc<Broker> {
    let service = flusher_service(dir);
    let socket = dir.join("flusher.sock");
    let listener = kafscale_flusher::server::bind(&socket).unwrap();
    tokio::spawn(kafscale_flusher::server::serve(
        listener,
        service,
        std::future::pending(),
    ));
    Broker::start(
        test_config(adjust),
        MetadataStore::new(kv, "test"),
        StorageAccess::flusher_socket(&socket, Duration::from_secs(10), Duration::from_secs(2)),
        kafscale_broker::metrics::BrokerMetrics::detached(),
    )
    .await
    .unwrap()
}

/// How a [`FaultyStorage`] treats one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Refused before anything is done, as an unreachable store refuses.
    Unavailable,
    /// Carried out, but the answer is lost: the broker hears "unavailable".
    DoneThenLost,
}

/// Object storage with faults a test switches on per operation, in front of
/// the in-process flusher; every request it sees is counted.
pub struct FaultyStorage {
    flusher: Arc<dyn ObjectStorage>,
    faults: Mutex<Vec<(Op, Fault)>>,
    seen: Mutex<Vec<Op>>,
}

impl FaultyStorage {
    pub fn set(&self, op: Op, fault: Option<Fault>) {
        let mut faults = self.faults.lock().unwrap();
        faults.retain(|(o, _)| *o != op);
        faults.extend(fault.map(|f| (op, f)));
    }

    /// How many requests of `op` reached this storage.
    pub fn seen(&self, op: Op) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|o| **o == op)
            .count()
    }
}

#[async_trait::async_trait]
impl Transport for FaultyStorage {
    async fn call(&self, request: Request) -> Result<Response, RemoteError> {
        let op = request.op();
        self.seen.lock().unwrap().push(op);
        let fault = self
            .faults
            .lock()
            .unwrap()
            .iter()
            .find(|(o, _)| *o == op)
            .map(|(_, f)| *f);
        let lost = |what: &str| RemoteError {
            kind: ErrorKind::Unavailable,
            message: format!("injected fault: {op:?} {what}"),
        };
        match fault {
            None => dispatch(self.flusher.as_ref(), request).await,
            Some(Fault::Unavailable) => Err(lost("refused")),
            Some(Fault::DoneThenLost) => {
                let _ = dispatch(self.flusher.as_ref(), request).await;
                Err(lost("done, answer lost"))
            }
        }
    }
}

/// A broker like [`start_broker_with`] whose every request to object storage
/// passes through the returned [`FaultyStorage`] (health polls included).
pub async fn start_broker_behind_faults(
    dir: &std::path::Path,
    adjust: impl FnOnce(&mut BrokerConfig),
) -> (Arc<Broker>, Arc<FaultyStorage>) {
    let kv = Arc::new(FileKv::open(dir.join("meta.json")).unwrap());
    let storage = Arc::new(FaultyStorage {
        flusher: flusher_service(dir),
        faults: Mutex::default(),
        seen: Mutex::default(),
    });
    let broker = Broker::start(
        test_config(adjust),
        MetadataStore::new(kv, "test"),
        StorageAccess::direct(storage.clone(), "a faulty in-process flusher"),
        kafscale_broker::metrics::BrokerMetrics::detached(),
    )
    .await
    .unwrap();
    (broker, storage)
}

pub fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// One v2 batch of one record (lz4), not idempotent.
pub fn batch(value: &str) -> Bytes {
    idempotent_batch(value, -1, -1, -1)
}

/// One v2 batch of one record from `producer_id` at `epoch`, `sequence`.
pub fn idempotent_batch(value: &str, producer_id: i64, epoch: i16, sequence: i32) -> Bytes {
    let record = Record {
        transactional: false,
        control: false,
        partition_leader_epoch: 0,
        producer_id,
        producer_epoch: epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence,
        timestamp: 1_700_000_000_000,
        key: Some(Bytes::from_static(b"k")),
        value: Some(Bytes::from(value.to_string())),
        headers: Default::default(),
        delete_horizon: false,
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        [&record],
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::Lz4,
        },
    )
    .unwrap();
    buf.freeze()
}

/// Round-trips the request through the wire format at `version`, dispatches it
/// and encodes the response at `version`.
pub async fn call(
    broker: &Arc<Broker>,
    api: ApiKey,
    version: i16,
    request: RequestKind,
) -> Option<ResponseKind> {
    call_as(
        broker,
        &handlers::RequestContext::default(),
        api,
        version,
        request,
    )
    .await
}

/// [`call`] from the client `ctx` describes (its principal, address).
pub async fn call_as(
    broker: &Arc<Broker>,
    ctx: &handlers::RequestContext,
    api: ApiKey,
    version: i16,
    request: RequestKind,
) -> Option<ResponseKind> {
    let mut wire = BytesMut::new();
    request
        .encode(&mut wire, version)
        .unwrap_or_else(|e| panic!("{api:?} v{version} request: {e}"));
    let decoded = RequestKind::decode(api, &mut wire.freeze(), version).unwrap();
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version);
    let response = handlers::dispatch(broker, ctx, &header, decoded)
        .await
        .await?;
    let mut out = BytesMut::new();
    response
        .encode(&mut out, version)
        .unwrap_or_else(|e| panic!("{api:?} v{version} response does not encode: {e}"));
    Some(response)
}
