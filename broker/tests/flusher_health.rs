//! A flusher busy with segment frames is not an unreachable flusher: the
//! broker's health poll must not wait behind the data connection, or
//! backpressure would refuse every produce.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafscale_broker::metrics::BrokerMetrics;
use kafscale_broker::object_storage::StorageAccess;
use kafscale_broker::storage_health::{StorageHealth, HEALTHY};
use kafscale_flusher::metrics::{FlusherMetrics, StoreHealth};
use kafscale_flusher::{FlusherService, FlusherSettings, LocalDirStore};
use kafscale_flusher_protocol::request;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_answered_while_the_data_connection_is_backed_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalDirStore::new(dir.path().join("objects")).unwrap());
    let service = FlusherService::new(
        store,
        FlusherSettings::default(),
        FlusherMetrics::detached(),
        Arc::new(StoreHealth::new(Default::default())),
    );
    let socket = dir.path().join("flusher.sock");
    let listener = kafscale_flusher::server::bind(&socket).unwrap();
    // The first connection (the broker's data connection) is accepted and
    // never read, as a flusher too busy to keep up would leave it; later
    // connections are served.
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let Ok((stalled, _)) = listener.accept().await else {
            return;
        };
        let _ = first_tx.send(());
        let _keep_open = stalled;
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(kafscale_flusher::server::serve_connection(
                stream,
                service.clone(),
            ));
        }
    });

    // As the broker reaches its flusher.
    let access =
        StorageAccess::flusher_socket(&socket, Duration::from_secs(30), Duration::from_secs(2));
    let data = access.requests.clone();
    let writer = data.clone();
    let stuck = tokio::spawn(async move {
        // Far more than a socket buffer holds: the write cannot complete.
        writer
            .write_segment(request::WriteSegment {
                topic: "t".into(),
                partition: 0,
                not_after_ms: i64::MAX,
                batches: vec![Bytes::from(vec![0u8; 32 << 20])],
            })
            .await
    });
    first_rx.await.unwrap();

    let metrics = BrokerMetrics::new(&mut prometheus_client::registry::Registry::default());
    let tasks = kafscale_broker::tasks::BackgroundTasks::new();
    let health = StorageHealth::spawn(access.health_polls, access.location, metrics, &tasks);
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(
        health.state(),
        HEALTHY,
        "health while the data connection is backed up: {} ({})",
        health.name(),
        health.detail()
    );
    assert!(
        !stuck.is_finished(),
        "the data connection was not backed up"
    );
    // What the poll would see on the data connection: no answer in time.
    let on_data_connection =
        tokio::time::timeout(Duration::from_secs(2), data.health(request::Health {})).await;
    assert!(
        on_data_connection.is_err(),
        "the data connection answered health although it is backed up"
    );
    stuck.abort();
}
