//! The broker's view of object-storage health, polled from the flusher every
//! second. Produce refuses new data at once (with a retriable error) while the
//! store is unavailable, instead of queueing it without bound.
//!
//! The poll has a connection of its own
//! ([`StorageAccess::health_polls`](crate::object_storage::StorageAccess)).

use crate::tasks::BackgroundTasks;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafscale_flusher_protocol::{request, Health, HealthState, MaintenanceStorage};

use crate::metrics::BrokerMetrics;

/// State values; the first three match the flusher's.
pub const HEALTHY: u8 = 0;
pub const DEGRADED: u8 = 1;
pub const UNAVAILABLE: u8 = 2;
pub const FLUSHER_UNREACHABLE: u8 = 3;

/// How long one health poll may take before the flusher counts as unreachable.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(2);

pub struct StorageHealth {
    state: AtomicU8,
    detail: Mutex<String>,
    /// Where the polls go (the flusher's socket).
    location: String,
}

impl StorageHealth {
    /// Polls `flusher` (at `location`) every second.
    pub fn spawn(
        flusher: Arc<dyn MaintenanceStorage>,
        location: String,
        metrics: Arc<BrokerMetrics>,
        tasks: &BackgroundTasks,
    ) -> Arc<Self> {
        let health = Arc::new(Self {
            state: AtomicU8::new(HEALTHY),
            detail: Mutex::new("not polled yet".into()),
            location,
        });
        let weak = Arc::downgrade(&health);
        tasks.spawn("storage health", async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(h) = weak.upgrade() else { return };
                let polled =
                    tokio::time::timeout(POLL_TIMEOUT, flusher.health(request::Health {})).await;
                let (state, detail) = match polled {
                    Ok(Ok(Health { state, detail })) => (
                        match state {
                            HealthState::Healthy => HEALTHY,
                            HealthState::Degraded => DEGRADED,
                            HealthState::Unavailable => UNAVAILABLE,
                        },
                        detail,
                    ),
                    Ok(Err(e)) => (FLUSHER_UNREACHABLE, e.message),
                    Err(_) => (
                        FLUSHER_UNREACHABLE,
                        format!(
                            "the flusher did not answer a health check within {POLL_TIMEOUT:?}"
                        ),
                    ),
                };
                let before = h.state.swap(state, Ordering::Relaxed);
                if before != state {
                    tracing::warn!(from = before, to = state, %detail, "object-store health changed");
                }
                metrics.storage_state.set(i64::from(state));
                *h.detail.lock().unwrap_or_else(|e| e.into_inner()) = detail;
            }
        });
        health
    }

    /// Where the polls go, for readiness checks.
    pub fn location(&self) -> &str {
        &self.location
    }

    pub fn state(&self) -> u8 {
        self.state.load(Ordering::Relaxed)
    }

    pub fn name(&self) -> &'static str {
        match self.state() {
            HEALTHY => "healthy",
            DEGRADED => "degraded",
            UNAVAILABLE => "unavailable",
            _ => "flusher_unreachable",
        }
    }

    pub fn detail(&self) -> String {
        self.detail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether new produce data should be refused right away.
    pub fn refuses_writes(&self) -> bool {
        self.state() >= UNAVAILABLE
    }
}
