//! Object-storage metrics and health: every store call is counted, timed and
//! fed to a sliding window that classifies the store as healthy, degraded or
//! unavailable. The broker reads that state (Health request) and sheds
//! produce load instead of queueing without bound.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use kafscale_telemetry::prometheus_client::encoding::EncodeLabelSet;
use kafscale_telemetry::prometheus_client::metrics::counter::Counter;
use kafscale_telemetry::prometheus_client::metrics::family::Family;
use kafscale_telemetry::prometheus_client::metrics::gauge::Gauge;
use kafscale_telemetry::prometheus_client::metrics::histogram::Histogram;
use kafscale_telemetry::prometheus_client::registry::{Registry, Unit};
use kafscale_telemetry::{latency_buckets, size_buckets};

use crate::object_store::{ObjectInfo, ObjectStore, StoreError};
use crate::protocol::HealthState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub op: &'static str,
    pub kind: &'static str,
}

/// Everything the flusher exports.
pub struct FlusherMetrics {
    pub s3_requests: Family<OpLabels, Counter>,
    pub s3_errors: Family<ErrorLabels, Counter>,
    pub s3_bytes: Family<OpLabels, Counter>,
    pub s3_duration: Family<OpLabels, Histogram>,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub cache_bytes: Gauge,
    pub segments_written: Counter,
    pub segment_bytes: Histogram,
    /// Intake objects uploaded (one per flush window of a broker).
    pub intake_objects_written: Counter,
    pub intake_object_bytes: Histogram,
    /// Partitions in each intake object.
    pub intake_parts: Histogram,
    /// Intake parts copied into segments.
    pub compacted_parts: Counter,
    /// Intake objects deleted once nothing in them was needed.
    pub intake_objects_deleted: Counter,
    /// Directory summaries stored.
    pub intake_summaries_written: Counter,
    /// Small segments folded into merged ones.
    pub merge_segments: Counter,
    /// Merged segments written.
    pub merge_written: Counter,
    /// Redundant segments removed after an interrupted merge.
    pub merge_removed: Counter,
    /// Cleaning passes of compacted partitions that rewrote segments.
    pub cleaner_passes: Counter,
    /// Bytes of segments the cleaner read (to map keys and to clean).
    pub cleaner_bytes_read: Counter,
    /// Bytes of cleaned segments written.
    pub cleaner_bytes_written: Counter,
    pub health_state: Gauge,
    pub health_error_rate: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl FlusherMetrics {
    /// Metrics registered nowhere (tests and embedded uses that do not export).
    pub fn detached() -> Arc<Self> {
        Self::new(&mut Registry::default(), &HealthSettings::default())
    }

    pub fn new(registry: &mut Registry, health: &HealthSettings) -> Arc<Self> {
        let m = Arc::new(Self {
            s3_requests: Family::default(),
            s3_errors: Family::default(),
            s3_bytes: Family::default(),
            s3_duration: Family::new_with_constructor(|| Histogram::new(latency_buckets())),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            cache_bytes: Gauge::default(),
            segments_written: Counter::default(),
            segment_bytes: Histogram::new(size_buckets()),
            intake_objects_written: Counter::default(),
            intake_object_bytes: Histogram::new(size_buckets()),
            intake_parts: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(1.0, 4.0, 8),
            ),
            compacted_parts: Counter::default(),
            intake_objects_deleted: Counter::default(),
            intake_summaries_written: Counter::default(),
            merge_segments: Counter::default(),
            merge_written: Counter::default(),
            merge_removed: Counter::default(),
            cleaner_passes: Counter::default(),
            cleaner_bytes_read: Counter::default(),
            cleaner_bytes_written: Counter::default(),
            health_state: Gauge::default(),
            health_error_rate: Gauge::default(),
        });
        let r = registry.sub_registry_with_prefix("kafscale_flusher");
        r.register(
            "s3_requests",
            "Object-store requests by operation",
            m.s3_requests.clone(),
        );
        r.register(
            "s3_request_errors",
            "Failed object-store requests by operation and kind",
            m.s3_errors.clone(),
        );
        r.register_with_unit(
            "s3_transferred",
            "Bytes sent (put) and received (get) by operation",
            Unit::Bytes,
            m.s3_bytes.clone(),
        );
        r.register_with_unit(
            "s3_request_duration",
            "Object-store request latency by operation",
            Unit::Seconds,
            m.s3_duration.clone(),
        );
        r.register(
            "cache_hits",
            "Cold reads served from the segment cache",
            m.cache_hits.clone(),
        );
        r.register(
            "cache_misses",
            "Cold reads that had to go to object storage",
            m.cache_misses.clone(),
        );
        r.register_with_unit(
            "cache",
            "Verified segments held in the cache",
            Unit::Bytes,
            m.cache_bytes.clone(),
        );
        r.register(
            "segments_written",
            "Segments uploaded",
            m.segments_written.clone(),
        );
        r.register_with_unit(
            "segment_size",
            "Size of uploaded segments",
            Unit::Bytes,
            m.segment_bytes.clone(),
        );
        r.register(
            "intake_objects_written",
            "Intake objects uploaded (the partitions of one flush window each)",
            m.intake_objects_written.clone(),
        );
        r.register_with_unit(
            "intake_object_size",
            "Size of uploaded intake objects",
            Unit::Bytes,
            m.intake_object_bytes.clone(),
        );
        r.register(
            "intake_summaries_written",
            "Directory summaries stored (the directories of many intake objects each)",
            m.intake_summaries_written.clone(),
        );
        r.register(
            "intake_object_parts",
            "Partitions held by each uploaded intake object",
            m.intake_parts.clone(),
        );
        r.register(
            "compacted_intake_parts",
            "Intake parts copied into per-partition segments",
            m.compacted_parts.clone(),
        );
        r.register(
            "intake_objects_deleted",
            "Intake objects deleted once every part was compacted or obsolete",
            m.intake_objects_deleted.clone(),
        );
        r.register(
            "merged_segments",
            "Small segments folded into merged segments",
            m.merge_segments.clone(),
        );
        r.register(
            "merges_written",
            "Merged segments written",
            m.merge_written.clone(),
        );
        r.register(
            "merge_leftovers_removed",
            "Redundant segments removed after an interrupted merge",
            m.merge_removed.clone(),
        );
        r.register(
            "cleaner_passes",
            "Cleaning passes of compacted partitions that rewrote segments",
            m.cleaner_passes.clone(),
        );
        r.register(
            "cleaner_read_bytes",
            "Bytes of segments the cleaner read, to map keys and to clean",
            m.cleaner_bytes_read.clone(),
        );
        r.register(
            "cleaner_written_bytes",
            "Bytes of cleaned segments written",
            m.cleaner_bytes_written.clone(),
        );
        r.register(
            "s3_health_state",
            "Object-store health: 0 healthy, 1 degraded, 2 unavailable",
            m.health_state.clone(),
        );
        r.register(
            "s3_error_ratio",
            "Share of failed object-store requests in the health window",
            m.health_error_rate.clone(),
        );
        let thresholds: Family<ThresholdLabels, Gauge<f64, std::sync::atomic::AtomicU64>> =
            Family::default();
        for (name, value) in [
            ("degraded_error_ratio", health.degraded_error_rate),
            ("unavailable_error_ratio", health.unavailable_error_rate),
            (
                "degraded_latency_seconds",
                health.degraded_latency.as_secs_f64(),
            ),
            ("window_seconds", health.window.as_secs_f64()),
        ] {
            thresholds
                .get_or_create(&ThresholdLabels { threshold: name })
                .set(value);
        }
        r.register(
            "s3_health_threshold",
            "Configured object-store health thresholds",
            thresholds,
        );
        m
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ThresholdLabels {
    threshold: &'static str,
}

/// When the store counts as degraded or unavailable.
#[derive(Debug, Clone)]
pub struct HealthSettings {
    /// Requests older than this are forgotten.
    pub window: Duration,
    pub degraded_error_rate: f64,
    pub unavailable_error_rate: f64,
    /// Mean latency above which the store is degraded.
    pub degraded_latency: Duration,
    /// This many failures in a row make it unavailable at once.
    pub unavailable_after_consecutive_failures: u32,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(30),
            degraded_error_rate: 0.2,
            unavailable_error_rate: 0.5,
            degraded_latency: Duration::from_secs(2),
            unavailable_after_consecutive_failures: 3,
        }
    }
}

/// Recent outcomes (when, how long, whether the store answered) and the
/// number of failures in a row.
type Window = (VecDeque<(Instant, Duration, bool)>, u32);

/// Sliding window of recent request outcomes.
pub struct StoreHealth {
    settings: HealthSettings,
    samples: Mutex<Window>,
}

impl StoreHealth {
    pub fn new(settings: HealthSettings) -> Self {
        Self {
            settings,
            samples: Mutex::new((VecDeque::new(), 0)),
        }
    }

    pub fn record(&self, now: Instant, latency: Duration, ok: bool) {
        let mut s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        s.0.push_back((now, latency, ok));
        s.1 = if ok { 0 } else { s.1 + 1 };
        while s
            .0
            .front()
            .is_some_and(|(t, _, _)| now.duration_since(*t) > self.settings.window)
        {
            s.0.pop_front();
        }
    }

    /// The state, the error ratio and a sentence for operators.
    pub fn state(&self, now: Instant) -> (HealthState, f64, String) {
        let s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let recent: Vec<&(Instant, Duration, bool)> =
            s.0.iter()
                .filter(|(t, _, _)| now.duration_since(*t) <= self.settings.window)
                .collect();
        let n = recent.len();
        let failures = recent.iter().filter(|(_, _, ok)| !ok).count();
        let rate = if n == 0 {
            0.0
        } else {
            failures as f64 / n as f64
        };
        let mean = if n == 0 {
            Duration::ZERO
        } else {
            recent.iter().map(|(_, d, _)| *d).sum::<Duration>() / n as u32
        };
        let window = self.settings.window.as_secs();
        if s.1 >= self.settings.unavailable_after_consecutive_failures {
            return (
                HealthState::Unavailable,
                rate,
                format!("the last {} object-store requests failed", s.1),
            );
        }
        if n >= 3 && rate >= self.settings.unavailable_error_rate {
            return (
                HealthState::Unavailable,
                rate,
                format!(
                    "{:.0}% of object-store requests failed in the last {window}s",
                    rate * 100.0
                ),
            );
        }
        if n >= 3 && rate >= self.settings.degraded_error_rate {
            return (
                HealthState::Degraded,
                rate,
                format!(
                    "{:.0}% of object-store requests failed in the last {window}s",
                    rate * 100.0
                ),
            );
        }
        if n >= 3 && mean >= self.settings.degraded_latency {
            return (
                HealthState::Degraded,
                rate,
                format!("object-store requests take {mean:?} on average over the last {window}s"),
            );
        }
        (
            HealthState::Healthy,
            rate,
            format!("{n} object-store requests in the last {window}s, {failures} failed"),
        )
    }

    /// Time since the last successful request, if any is in the window.
    pub fn since_last_success(&self, now: Instant) -> Option<Duration> {
        let s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        s.0.iter()
            .rev()
            .find(|(_, _, ok)| *ok)
            .map(|(t, _, _)| now.duration_since(*t))
    }
}

/// An [`ObjectStore`] that records metrics and health for another one.
pub struct InstrumentedStore {
    inner: Arc<dyn ObjectStore>,
    metrics: Arc<FlusherMetrics>,
    pub health: Arc<StoreHealth>,
}

impl InstrumentedStore {
    pub fn new(
        inner: Arc<dyn ObjectStore>,
        metrics: Arc<FlusherMetrics>,
        health: Arc<StoreHealth>,
    ) -> Self {
        Self {
            inner,
            metrics,
            health,
        }
    }

    fn observe<T>(
        &self,
        op: &'static str,
        started: Instant,
        result: &Result<T, StoreError>,
        bytes: u64,
    ) {
        let elapsed = started.elapsed();
        let labels = OpLabels { op };
        self.metrics.s3_requests.get_or_create(&labels).inc();
        self.metrics
            .s3_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        // A refused conditional write or a missing key is the store working as asked.
        let healthy = match result {
            Ok(_) => {
                self.metrics.s3_bytes.get_or_create(&labels).inc_by(bytes);
                true
            }
            Err(e) => {
                let kind = match e {
                    StoreError::AlreadyExists(_) => "already_exists",
                    StoreError::Changed(_) => "changed",
                    StoreError::NotFound(_) => "not_found",
                    StoreError::Unavailable(_) => "unavailable",
                    StoreError::Other(_) => "other",
                };
                self.metrics
                    .s3_errors
                    .get_or_create(&ErrorLabels { op, kind })
                    .inc();
                !matches!(e, StoreError::Unavailable(_) | StoreError::Other(_))
            }
        };
        self.health.record(Instant::now(), elapsed, healthy);
    }
}

#[async_trait]
impl ObjectStore for InstrumentedStore {
    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        let started = Instant::now();
        let len = body.len() as u64;
        let r = self.inner.put_if_absent(key, body).await;
        self.observe("put", started, &r, len);
        r
    }

    async fn put_replacing(
        &self,
        key: &str,
        body: Bytes,
        expected_etag: Option<&str>,
    ) -> Result<(), StoreError> {
        let started = Instant::now();
        let len = body.len() as u64;
        let r = self.inner.put_replacing(key, body, expected_etag).await;
        self.observe("put", started, &r, len);
        r
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let started = Instant::now();
        let r = self.inner.get(key).await;
        let len = r.as_ref().map(|b| b.len() as u64).unwrap_or(0);
        self.observe("get", started, &r, len);
        r
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        let started = Instant::now();
        let r = self.inner.get_range(key, range).await;
        let len = r.as_ref().map(|b| b.len() as u64).unwrap_or(0);
        self.observe("get", started, &r, len);
        r
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let started = Instant::now();
        let r = self.inner.list(prefix).await;
        self.observe("list", started, &r, 0);
        r
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        let started = Instant::now();
        let r = self.inner.delete(keys).await;
        self.observe("delete", started, &r, 0);
        r
    }

    async fn probe(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let r = self.inner.probe().await;
        self.observe("probe", started, &r, 0);
        r
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_follows_errors_latency_and_recovers() {
        let h = StoreHealth::new(HealthSettings::default());
        let t = Instant::now();
        assert_eq!(h.state(t).0, HealthState::Healthy);
        for i in 0..8 {
            h.record(t + Duration::from_millis(i), Duration::from_millis(5), true);
        }
        h.record(t, Duration::from_millis(5), false);
        h.record(t, Duration::from_millis(5), false);
        h.record(t, Duration::from_millis(5), true);
        assert_eq!(
            h.state(t).0,
            HealthState::Healthy,
            "2 of 11 failed: under 20%"
        );
        h.record(t, Duration::from_millis(5), false);
        assert_eq!(h.state(t).0, HealthState::Degraded, "3 of 12 failed");
        for _ in 0..3 {
            h.record(t, Duration::from_millis(5), false);
        }
        assert_eq!(
            h.state(t).0,
            HealthState::Unavailable,
            "three failures in a row"
        );
        h.record(t, Duration::from_millis(5), true);
        assert_ne!(h.state(t).0, HealthState::Unavailable);
        // After the window the failures are forgotten.
        let later = t + Duration::from_secs(31);
        h.record(later, Duration::from_millis(5), true);
        assert_eq!(h.state(later).0, HealthState::Healthy);
        let slow = StoreHealth::new(HealthSettings::default());
        for _ in 0..3 {
            slow.record(t, Duration::from_secs(3), true);
        }
        assert_eq!(slow.state(t).0, HealthState::Degraded);
    }
}
