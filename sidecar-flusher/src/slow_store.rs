//! A store that holds every PUT back before handing it on, for benchmarks:
//! a local MinIO answers a PUT in a few milliseconds, S3 in tens, and now
//! and then in hundreds, and how produce latency copes with that is what a
//! benchmark on this machine would otherwise never see. Armed only by
//! `KAFSCALE_BENCH_PUT_DELAY` (`MS`, or `MS,EVERY:SLOW_MS` to make every
//! EVERY-th PUT wait SLOW_MS instead); never in production.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

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

pub struct SlowStore {
    inner: Arc<dyn ObjectStore>,
    delay: PutDelay,
    puts: AtomicU64,
}

impl SlowStore {
    pub fn new(inner: Arc<dyn ObjectStore>, delay: PutDelay) -> Self {
        Self {
            inner,
            delay,
            puts: AtomicU64::new(0),
        }
    }

    async fn hold_back(&self) {
        let n = self.puts.fetch_add(1, Ordering::Relaxed) + 1;
        tokio::time::sleep(self.delay.of(n)).await;
    }
}

#[async_trait]
impl ObjectStore for SlowStore {
    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        self.hold_back().await;
        self.inner.put_if_absent(key, body).await
    }

    async fn put_replacing(
        &self,
        key: &str,
        body: Bytes,
        expected_etag: Option<&str>,
    ) -> Result<(), StoreError> {
        self.hold_back().await;
        self.inner.put_replacing(key, body, expected_etag).await
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
        self.inner.delete(keys).await
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
