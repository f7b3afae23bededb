//! Gathers the parts that arrive within one flush window, from every
//! partition the broker leads, into one intake object, uploads it with one
//! create-once PUT and answers each part once it is stored. A broker's PUTs
//! per second are set by the window and the size threshold, not by how many
//! partitions it leads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::batch;
use crate::deadline::{before_deadline, now_ms};
use crate::intake::{self, PartInput};
use crate::intake_index::{IntakeIndex, IntakeObject};
use crate::metrics::FlusherMetrics;
use crate::object_store::ObjectStore;
use crate::protocol::{ErrorKind, RemoteError, Written};

/// When an intake object is sealed.
#[derive(Debug, Clone, Copy)]
pub struct IntakeSettings {
    /// How long the first part of an object waits for others.
    pub window: Duration,
    /// An object is sealed at once when its parts reach this many bytes.
    pub max_bytes: usize,
}

/// The cost/latency dial: how long a broker's writes gather before one PUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FlushPreset {
    /// 5 ms or 1 MiB: the lowest produce latency, the most PUTs.
    Latency,
    /// 50 ms or 4 MiB.
    Balanced,
    /// 250 ms or 8 MiB: the fewest PUTs.
    Cost,
}

impl FlushPreset {
    pub fn settings(self) -> IntakeSettings {
        let (ms, mib) = match self {
            FlushPreset::Latency => (5, 1),
            FlushPreset::Balanced => (50, 4),
            FlushPreset::Cost => (250, 8),
        };
        IntakeSettings {
            window: Duration::from_millis(ms),
            max_bytes: mib * 1024 * 1024,
        }
    }
}

impl Default for IntakeSettings {
    fn default() -> Self {
        FlushPreset::Balanced.settings()
    }
}

type Answer = oneshot::Sender<Result<Written, RemoteError>>;

struct OpenObject {
    /// Tells the window's timer which object it was started for.
    number: u64,
    parts: Vec<PartInput>,
    answers: Vec<Answer>,
    bytes: usize,
    /// The earliest deadline of its parts: no part may land after its own.
    not_after_ms: i64,
}

pub struct IntakeWriter {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    settings: IntakeSettings,
    /// Random per process, so that two flushers never pick the same key.
    writer_id: u64,
    sequence: AtomicU64,
    open: Mutex<Option<OpenObject>>,
    index: Arc<IntakeIndex>,
    metrics: Arc<FlusherMetrics>,
}

impl IntakeWriter {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        settings: IntakeSettings,
        index: Arc<IntakeIndex>,
        metrics: Arc<FlusherMetrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            prefix: prefix.to_string(),
            settings,
            writer_id: rand::random(),
            sequence: AtomicU64::new(0),
            open: Mutex::new(None),
            index,
            metrics,
        })
    }

    fn open(&self) -> std::sync::MutexGuard<'_, Option<OpenObject>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds one partition's batches to the object being gathered and answers
    /// once that object is stored (or failed). A part that is not valid on
    /// its own is refused at once and never joins an object, so it cannot
    /// fail anyone else's.
    pub async fn write(
        self: &Arc<Self>,
        part: PartInput,
        not_after_ms: i64,
    ) -> Result<Written, RemoteError> {
        check_part(&part)?;
        let (answer, answered) = oneshot::channel();
        let bytes: usize = part.batches.iter().map(|b| b.len()).sum();
        let (sealed, timer_for) = {
            let mut open = self.open();
            let started = open.is_none();
            let object = open.get_or_insert_with(|| OpenObject {
                number: self.sequence.fetch_add(1, Ordering::Relaxed),
                parts: Vec::new(),
                answers: Vec::new(),
                bytes: 0,
                not_after_ms,
            });
            object.parts.push(part);
            object.answers.push(answer);
            object.bytes += bytes;
            object.not_after_ms = object.not_after_ms.min(not_after_ms);
            let number = object.number;
            if object.bytes >= self.settings.max_bytes {
                (open.take(), None)
            } else {
                (None, started.then_some(number))
            }
        };
        if let Some(object) = sealed {
            tokio::spawn(self.clone().upload(object));
        } else if let Some(number) = timer_for {
            let this = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(this.settings.window).await;
                let due = {
                    let mut open = this.open();
                    match open.as_ref() {
                        Some(o) if o.number == number => open.take(),
                        _ => None, // sealed by size already
                    }
                };
                if let Some(object) = due {
                    this.upload(object).await;
                }
            });
        }
        answered.await.unwrap_or_else(|_| {
            Err(RemoteError {
                kind: ErrorKind::Internal,
                message: "the intake upload ended without an answer".into(),
            })
        })
    }

    async fn upload(self: Arc<Self>, object: OpenObject) {
        let OpenObject {
            number,
            parts,
            answers,
            not_after_ms,
            ..
        } = object;
        let created_ms = now_ms();
        let result = match intake::encode(&parts, created_ms) {
            Ok(encoded) => {
                let key = intake::intake_key(&self.prefix, created_ms, self.writer_id, number);
                let size = encoded.body.len() as u64;
                let put = self.store.put_if_absent(&key, encoded.body);
                before_deadline(not_after_ms, &key, put)
                    .await
                    .map(|()| (key, size, encoded.entries))
            }
            Err(e) => Err(RemoteError {
                kind: ErrorKind::BadRequest,
                message: e.to_string(),
            }),
        };
        match result {
            Ok((key, size, entries)) => {
                self.metrics.intake_objects_written.inc();
                self.metrics.intake_object_bytes.observe(size as f64);
                self.metrics.intake_parts.observe(entries.len() as f64);
                let written: Vec<Written> = entries
                    .iter()
                    .map(|e| Written {
                        base_offset: e.base_offset,
                        last_offset: e.last_offset,
                        object_bytes: size,
                    })
                    .collect();
                self.index.added(IntakeObject {
                    key,
                    size,
                    created_ms,
                    entries,
                });
                for (answer, w) in answers.into_iter().zip(written) {
                    let _ = answer.send(Ok(w));
                }
            }
            Err(e) => {
                for answer in answers {
                    let _ = answer.send(Err(e.clone()));
                }
            }
        }
    }
}

/// A part must hold valid batches with contiguous offsets.
fn check_part(part: &PartInput) -> Result<(), RemoteError> {
    let bad = |message: String| RemoteError {
        kind: ErrorKind::BadRequest,
        message: format!("{}-{}: {message}", part.topic, part.partition),
    };
    if part.batches.is_empty() {
        return Err(bad("a part needs at least one batch".into()));
    }
    let mut next: Option<i64> = None;
    for b in &part.batches {
        let h = batch::validate(b).map_err(|e| bad(e.to_string()))?;
        if next.is_some_and(|n| n != h.base_offset) {
            return Err(bad(format!(
                "batch at offset {} does not follow the one before",
                h.base_offset
            )));
        }
        next = Some(h.last_offset() + 1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::make_batch;
    use crate::object_store::LocalDirStore;

    fn part(partition: i32, base: i64, n: i32) -> PartInput {
        PartInput {
            topic: "t".into(),
            topic_id: [1; 16],
            partition,
            leader_epoch: 1,
            generation: 1,
            batches: vec![make_batch(base, n, &[9; 64])],
        }
    }

    fn writer(
        dir: &std::path::Path,
        window_ms: u64,
        max_bytes: usize,
    ) -> (Arc<IntakeWriter>, Arc<IntakeIndex>, Arc<dyn ObjectStore>) {
        let store: Arc<dyn ObjectStore> = Arc::new(LocalDirStore::new(dir).unwrap());
        let index = Arc::new(IntakeIndex::new(store.clone(), "ns/c"));
        let w = IntakeWriter::new(
            store.clone(),
            "ns/c",
            IntakeSettings {
                window: Duration::from_millis(window_ms),
                max_bytes,
            },
            index.clone(),
            FlusherMetrics::detached(),
        );
        (w, index, store)
    }

    #[tokio::test]
    async fn parts_of_many_partitions_in_one_window_share_one_object() {
        let dir = tempfile::tempdir().unwrap();
        let (w, index, store) = writer(dir.path(), 50, 1 << 20);
        let far = now_ms() + 60_000;
        let writes = (0..20).map(|p| {
            let w = w.clone();
            async move { w.write(part(p, 10, 3), far).await }
        });
        let answers = futures::future::join_all(writes).await;
        for a in &answers {
            let a = a.as_ref().unwrap();
            assert_eq!((a.base_offset, a.last_offset), (10, 12));
        }
        let objects = store.list(&intake::intake_prefix("ns/c")).await.unwrap();
        assert_eq!(objects.len(), 1, "20 partitions in one window take one PUT");
        // The flusher knows it without listing, and a listing agrees.
        assert_eq!(index.claims("t", [1; 16], 7).len(), 1);
        let fresh = IntakeIndex::new(store.clone(), "ns/c");
        fresh.refresh().await.unwrap();
        let claims = fresh.claims("t", [1; 16], 7);
        assert_eq!(claims.len(), 1);
        let bytes = fresh.read_part(&claims[0].source).await.unwrap().unwrap();
        assert_eq!(bytes, part(7, 10, 3).batches[0]);
        assert!(fresh.claims("t", [2; 16], 7).is_empty(), "another topic id");
    }

    #[tokio::test]
    async fn the_size_threshold_seals_an_object_before_the_window_ends() {
        let dir = tempfile::tempdir().unwrap();
        let (w, _, store) = writer(dir.path(), 60_000, 1);
        let far = now_ms() + 120_000;
        let a = tokio::time::timeout(Duration::from_secs(5), w.write(part(0, 0, 1), far))
            .await
            .expect("a full object waited for its window");
        a.unwrap();
        let objects = store.list(&intake::intake_prefix("ns/c")).await.unwrap();
        assert_eq!(objects.len(), 1);
    }

    #[tokio::test]
    async fn a_bad_part_is_refused_alone_and_an_expired_object_fails_its_parts() {
        let dir = tempfile::tempdir().unwrap();
        let (w, _, store) = writer(dir.path(), 20, 1 << 20);
        let mut gap = part(1, 0, 2);
        gap.batches.push(make_batch(9, 1, b"x"));
        let far = now_ms() + 60_000;
        let (bad, good) = tokio::join!(w.write(gap, far), w.write(part(2, 0, 1), far));
        assert_eq!(bad.unwrap_err().kind, ErrorKind::BadRequest);
        good.unwrap();
        let expired = w.write(part(3, 0, 1), now_ms() - 1).await.unwrap_err();
        assert_eq!(expired.kind, ErrorKind::Expired);
        let objects = store.list(&intake::intake_prefix("ns/c")).await.unwrap();
        assert_eq!(objects.len(), 1, "nothing was stored for the expired part");
    }
}
