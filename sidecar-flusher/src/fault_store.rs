//! The fault-injecting store of the end-to-end tests and benchmarks: it
//! hands every write and delete to the real store and passes a crash point
//! (`kafscale_telemetry::crash_points`) before and after it, named
//! `{put|delete}:{intake|segment|index|other}:{before|after}`, plus
//! `delete:{class}:partial` after only the first key of a multi-key delete.
//! With `KAFSCALE_CRASH_AT` naming one of them the flusher dies exactly
//! there: e.g. `put:intake:after@3` is the third intake object stored but
//! never answered, `put:segment:after` a compacted segment without its index
//! and with its parts still in intake.
//!
//! It can also hold every PUT back, for benchmarks: a local MinIO answers a
//! PUT in a few milliseconds, S3 in tens and now and then in hundreds, and
//! how produce latency copes with that is otherwise never seen here.
//! `KAFSCALE_BENCH_PUT_DELAY` is `MS`, or `MS,EVERY:SLOW_MS` to make every
//! EVERY-th PUT wait SLOW_MS instead.
//!
//! The flusher wraps its store in it only when a crash point is armed or a
//! PUT delay is set; never in production.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use kafscale_telemetry::crash_points;

use crate::intake::INTAKE_DIR;
use crate::object_store::{ObjectInfo, ObjectStore, StoreError};

pub const PUT_DELAY_ENV: &str = "KAFSCALE_BENCH_PUT_DELAY";

/// How long PUTs are held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutDelay {
    pub every_put: Duration,
    /// Every n-th PUT waits this long instead.
    pub slow: Option<(u64, Duration)>,
}

impl PutDelay {
    /// Parses `MS` or `MS,EVERY:SLOW_MS`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let ms = |s: &str| {
            s.trim()
                .parse::<u64>()
                .ok()
                .filter(|&ms| ms <= 60_000)
                .map(Duration::from_millis)
                .ok_or_else(|| format!("{PUT_DELAY_ENV}: {s:?} is not a delay in ms (0 to 60000)"))
        };
        let (base, slow) = match text.split_once(',') {
            None => (text, None),
            Some((base, slow)) => (base, Some(slow)),
        };
        let slow = match slow {
            None => None,
            Some(s) => {
                let (every, slow_ms) = s.split_once(':').ok_or_else(|| {
                    format!("{PUT_DELAY_ENV}: expected MS or MS,EVERY:SLOW_MS, got {text:?}")
                })?;
                let every = every
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("{PUT_DELAY_ENV}: {every:?} is not a positive count"))?;
                Some((every, ms(slow_ms)?))
            }
        };
        Ok(Self {
            every_put: ms(base)?,
            slow,
        })
    }

    /// The delay of the `n`-th PUT (from 1).
    fn of(&self, n: u64) -> Duration {
        match self.slow {
            Some((every, slow)) if n.is_multiple_of(every) => slow,
            _ => self.every_put,
        }
    }
}

pub struct FaultStore {
    inner: Arc<dyn ObjectStore>,
    put_delay: Option<PutDelay>,
    puts: AtomicU64,
}

impl FaultStore {
    pub fn new(inner: Arc<dyn ObjectStore>, put_delay: Option<PutDelay>) -> Self {
        Self {
            inner,
            put_delay,
            puts: AtomicU64::new(0),
        }
    }

    async fn hold_back(&self) {
        if let Some(delay) = &self.put_delay {
            let n = self.puts.fetch_add(1, Ordering::Relaxed) + 1;
            tokio::time::sleep(delay.of(n)).await;
        }
    }
}

/// What kind of object a key names, for the crash point's name.
fn class(key: &str) -> &'static str {
    if key.split('/').any(|part| part == INTAKE_DIR) {
        "intake"
    } else if key.ends_with(".kfs") {
        "segment"
    } else if key.ends_with(".index") {
        "index"
    } else {
        "other"
    }
}

fn pass(op: &str, key: &str, when: &str) {
    crash_points::reached(&format!("{op}:{}:{when}", class(key)));
}

#[async_trait]
impl ObjectStore for FaultStore {
    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        pass("put", key, "before");
        self.hold_back().await;
        let result = self.inner.put_if_absent(key, body).await;
        if result.is_ok() {
            pass("put", key, "after");
        }
        result
    }

    async fn put_replacing(
        &self,
        key: &str,
        body: Bytes,
        expected_etag: Option<&str>,
    ) -> Result<(), StoreError> {
        pass("put", key, "before");
        self.hold_back().await;
        let result = self.inner.put_replacing(key, body, expected_etag).await;
        if result.is_ok() {
            pass("put", key, "after");
        }
        result
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.inner.get(key).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        self.inner.get_range(key, range).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        self.inner.list(prefix).await
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        let Some(first) = keys.first() else {
            return self.inner.delete(keys).await;
        };
        pass("delete", first, "before");
        if keys.len() > 1 {
            self.inner.delete(&keys[..1]).await?;
            pass("delete", first, "partial");
        }
        self.inner.delete(keys).await?;
        pass("delete", first, "after");
        Ok(())
    }

    async fn probe(&self) -> Result<(), StoreError> {
        self.inner.probe().await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_points_are_named_by_the_kind_of_object() {
        assert_eq!(class("c/!intake/0001-00-0000000001.kfi"), "intake");
        assert_eq!(class("c/t/0/segment-00000000000000000000.kfs"), "segment");
        assert_eq!(class("c/t/0/segment-00000000000000000000.index"), "index");
        assert_eq!(class("c/!fencing-check"), "other");
    }

    #[test]
    fn delays_parse_and_every_nth_put_is_slow() {
        let d = PutDelay::parse("80,20:400").unwrap();
        assert_eq!(d.of(1), Duration::from_millis(80));
        assert_eq!(d.of(20), Duration::from_millis(400));
        assert_eq!(d.of(40), Duration::from_millis(400));
        assert_eq!(
            PutDelay::parse("5").unwrap(),
            PutDelay {
                every_put: Duration::from_millis(5),
                slow: None
            }
        );
        for bad in ["", "x", "80,0:400", "80,20", "80,20:x", "999999"] {
            let err = PutDelay::parse(bad).unwrap_err();
            assert!(err.contains(PUT_DELAY_ENV), "{bad}: {err}");
        }
    }
}
