//! The broker's one door to object storage. Partition logs (writes, reads,
//! recoveries) and maintenance (retention, merging, intake compaction, topic
//! deletion, health) all ask through the flusher protocol's two sides,
//! [`LogStorage`] and [`MaintenanceStorage`]; the broker never names the
//! client behind them. In production and dev mode that is the flusher's
//! socket; tests put a double, or faults, behind it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kafscale_flusher_protocol::FlusherClient;
use kafscale_flusher_protocol::{MaintenanceStorage, ObjectStorage};

/// How the broker reaches object storage.
#[derive(Clone)]
pub struct StorageAccess {
    /// Every request of partition logs and maintenance.
    pub requests: Arc<dyn ObjectStorage>,
    /// Health polls, on a connection of their own: on the data connection
    /// they would queue behind segment frames, and a busy flusher
    /// (backpressure) would look unreachable, which refuses every produce.
    pub health_polls: Arc<dyn MaintenanceStorage>,
    /// Where requests go, for logs and readiness checks.
    pub location: String,
}

impl StorageAccess {
    /// The flusher listening on `socket`; each request waits at most
    /// `timeout`, each health poll at most `health_timeout`.
    pub fn flusher_socket(socket: &Path, timeout: Duration, health_timeout: Duration) -> Self {
        Self {
            requests: Arc::new(FlusherClient::new(socket, timeout)),
            health_polls: Arc::new(FlusherClient::new(socket, health_timeout)),
            location: format!("flusher socket {}", socket.display()),
        }
    }

    /// One implementation for everything, health polls included (tests).
    pub fn direct(storage: Arc<dyn ObjectStorage>, location: impl Into<String>) -> Self {
        Self {
            health_polls: storage.clone(),
            requests: storage,
            location: location.into(),
        }
    }
}
