//! The broker's view of object-storage health, polled from the flusher every
//! second. Produce refuses new data at once (with a retriable error) while the
//! store is unavailable, instead of queueing it without bound.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafscale_flusher::protocol::{HealthState, Request, Response};
use kafscale_flusher::FlusherClient;

use crate::metrics::BrokerMetrics;

/// State values; the first three match the flusher's.
pub const HEALTHY: u8 = 0;
pub const DEGRADED: u8 = 1;
pub const UNAVAILABLE: u8 = 2;
pub const FLUSHER_UNREACHABLE: u8 = 3;

pub struct StorageHealth {
    state: AtomicU8,
    detail: Mutex<String>,
}

impl StorageHealth {
    pub fn spawn(flusher: Arc<FlusherClient>, metrics: Arc<BrokerMetrics>) -> Arc<Self> {
        let health = Arc::new(Self {
            state: AtomicU8::new(HEALTHY),
            detail: Mutex::new("not polled yet".into()),
        });
        let weak = Arc::downgrade(&health);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(h) = weak.upgrade() else { return };
                let polled =
                    tokio::time::timeout(Duration::from_secs(2), flusher.call(Request::Health))
                        .await;
                let (state, detail) = match polled {
                    Ok(Ok(Response::Health { state, detail })) => (
                        match state {
                            HealthState::Healthy => HEALTHY,
                            HealthState::Degraded => DEGRADED,
                            HealthState::Unavailable => UNAVAILABLE,
                        },
                        detail,
                    ),
                    Ok(Ok(_)) => (
                        FLUSHER_UNREACHABLE,
                        "unexpected answer from the flusher".into(),
                    ),
                    Ok(Err(e)) => (FLUSHER_UNREACHABLE, e.message),
                    Err(_) => (
                        FLUSHER_UNREACHABLE,
                        "the flusher did not answer a health check within 2s".into(),
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
