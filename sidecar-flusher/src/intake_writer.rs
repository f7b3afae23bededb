//! Gathers the parts that arrive within one flush window, from every
//! partition the broker leads, into one intake object, uploads it with one
//! create-once PUT and answers each part once it is stored. A broker's PUTs
//! per second are set by the window and the size threshold, not by how many
//! partitions it leads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::collections::HashMap;

use tokio::sync::{oneshot, Notify};

use crate::batch;
use crate::deadline::{before_deadline, now_ms};
use crate::intake::{self, PartInput};
use crate::intake_index::{IntakeIndex, IntakeObject};
use crate::intake_summary::{self, PendingSummary, SummarizedObject};
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

/// Where a part's outcome goes. While it exists the part is unsettled: it
/// may still land.
struct Answer {
    to: oneshot::Sender<Result<Written, RemoteError>>,
    _unsettled: Unsettled,
}

impl Answer {
    fn send(self, outcome: Result<Written, RemoteError>) {
        let _ = self.to.send(outcome);
    }
}

/// Parts accepted and not yet answered, per partition: a recovery waits
/// until none of its partition's parts can land any more.
#[derive(Default)]
struct Settlement {
    unsettled: Mutex<HashMap<PartitionKey, usize>>,
    changed: Notify,
}

/// One part counted in [`Settlement`] until it is dropped (with its answer).
struct Unsettled {
    settlement: Arc<Settlement>,
    key: PartitionKey,
}

impl Unsettled {
    fn new(settlement: &Arc<Settlement>, key: PartitionKey) -> Self {
        *settlement
            .unsettled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default() += 1;
        Self {
            settlement: settlement.clone(),
            key,
        }
    }
}

impl Drop for Unsettled {
    fn drop(&mut self) {
        let mut counts = self
            .settlement
            .unsettled
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
                self.settlement.changed.notify_waiters();
            }
        }
    }
}

/// A partition of one topic incarnation, as parts name it.
type PartitionKey = (String, [u8; 16], i32);

fn key_of(part: &PartInput) -> PartitionKey {
    (part.topic.clone(), part.topic_id, part.partition)
}

struct OpenObject {
    parts: Vec<PartInput>,
    answers: Vec<Answer>,
    bytes: usize,
    /// The earliest deadline of its parts: no part may land after its own.
    not_after_ms: i64,
    /// When its first part came: the window runs from here.
    opened: tokio::time::Instant,
}

#[derive(Default)]
struct Gathering {
    open: Option<OpenObject>,
    /// Per partition, the generation of a part whose object failed. Parts of
    /// that generation that come after it were numbered after the failed
    /// one: stored, they would leave a gap in the partition's offsets, so
    /// they fail too. A later generation (the writer recovered) clears it.
    failed: HashMap<PartitionKey, u64>,
}

/// Gathers parts and uploads one object at a time, in order: an object's PUT
/// starts only once the one before it has ended, so a partition's parts
/// land in offset order, and after a failure the parts queued behind the
/// failed ones fail too instead of landing after a gap.
pub struct IntakeWriter {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    settings: IntakeSettings,
    /// Random per process, so that two flushers never pick the same key.
    writer_id: u64,
    sequence: AtomicU64,
    gathering: Mutex<Gathering>,
    /// Wakes the uploader: a first part, or the size threshold reached.
    wake: Arc<Notify>,
    index: Arc<IntakeIndex>,
    /// Stored objects not yet in a directory summary.
    summary: Mutex<PendingSummary>,
    metrics: Arc<FlusherMetrics>,
    settlement: Arc<Settlement>,
}

impl IntakeWriter {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        settings: IntakeSettings,
        index: Arc<IntakeIndex>,
        metrics: Arc<FlusherMetrics>,
    ) -> Arc<Self> {
        let writer = Arc::new(Self {
            store,
            prefix: prefix.to_string(),
            settings,
            writer_id: rand::random(),
            sequence: AtomicU64::new(0),
            gathering: Mutex::new(Gathering::default()),
            wake: Arc::new(Notify::new()),
            index,
            summary: Mutex::new(PendingSummary::default()),
            metrics,
            settlement: Arc::default(),
        });
        tokio::spawn(uploader(Arc::downgrade(&writer), writer.wake.clone()));
        writer
    }

    fn gathering(&self) -> std::sync::MutexGuard<'_, Gathering> {
        self.gathering.lock().unwrap_or_else(|e| e.into_inner())
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
        let (to, answered) = oneshot::channel();
        let answer = Answer {
            to,
            _unsettled: Unsettled::new(&self.settlement, key_of(&part)),
        };
        let bytes: usize = part.batches.iter().map(|b| b.len()).sum();
        {
            let mut g = self.gathering();
            let key = key_of(&part);
            match g.failed.get(&key) {
                Some(&failed) if part.generation <= failed => {
                    return Err(behind_a_failure(&part));
                }
                Some(_) => {
                    g.failed.remove(&key);
                }
                None => {}
            }
            let object = g.open.get_or_insert_with(|| OpenObject {
                parts: Vec::new(),
                answers: Vec::new(),
                bytes: 0,
                not_after_ms,
                opened: tokio::time::Instant::now(),
            });
            object.parts.push(part);
            object.answers.push(answer);
            object.bytes += bytes;
            object.not_after_ms = object.not_after_ms.min(not_after_ms);
            if object.parts.len() == 1 || object.bytes >= self.settings.max_bytes {
                self.wake.notify_one();
            }
        }
        answered.await.unwrap_or_else(|_| {
            Err(RemoteError {
                kind: ErrorKind::Internal,
                message: "the intake upload ended without an answer".into(),
            })
        })
    }

    /// Waits until no part of the partition written before this call can
    /// land any more: each was stored or failed (a part that reaches its
    /// deadline is failed, its PUT cancelled). A recovery reads the log end
    /// only after this, so no part of an older generation lands behind it.
    pub async fn settled(&self, topic: &str, topic_id: [u8; 16], partition: i32) {
        let key = (topic.to_string(), topic_id, partition);
        loop {
            let changed = self.settlement.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let pending = self
                .settlement
                .unsettled
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&key);
            if !pending {
                return;
            }
            changed.await;
        }
    }

    /// The open object once it is due: its window has passed or it reached
    /// the size threshold. `None` when nothing is open.
    async fn next_due(&self) -> Option<OpenObject> {
        loop {
            let due_at = {
                let mut g = self.gathering();
                let object = g.open.as_ref()?;
                let due_at = object.opened + self.settings.window;
                if object.bytes >= self.settings.max_bytes || tokio::time::Instant::now() >= due_at
                {
                    return g.open.take();
                }
                due_at
            };
            let _ = tokio::time::timeout_at(due_at, self.wake.notified()).await;
        }
    }

    async fn upload(&self, object: OpenObject) {
        let OpenObject {
            parts,
            answers,
            not_after_ms,
            ..
        } = object;
        let number = self.sequence.fetch_add(1, Ordering::Relaxed);
        let created_ms = now_ms();
        let result = match intake::encode(&parts, created_ms) {
            Ok(encoded) => {
                let key = intake::intake_key(&self.prefix, created_ms, self.writer_id, number);
                let size = encoded.body.len() as u64;
                let put = self.store.put_if_absent(&key, encoded.body.clone());
                let stored = match before_deadline(not_after_ms, &key, put).await {
                    Ok(()) => Ok(()),
                    // A retried PUT whose first attempt landed finds its own bytes.
                    Err(e)
                        if e.kind == ErrorKind::Conflict
                            && self.store.get(&key).await.is_ok_and(|b| b == encoded.body) =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
                stored.map(|()| {
                    let tail = intake_summary::tail_of(&encoded.body).ok();
                    (key, size, encoded.entries, tail)
                })
            }
            Err(e) => Err(RemoteError {
                kind: ErrorKind::BadRequest,
                message: e.to_string(),
            }),
        };
        match result {
            Ok((key, size, entries, tail)) => {
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
                    key: key.clone(),
                    size,
                    created_ms,
                    entries,
                });
                for (answer, w) in answers.into_iter().zip(written) {
                    answer.send(Ok(w));
                }
                if let Some(tail) = tail {
                    self.summarize(
                        number,
                        SummarizedObject {
                            key,
                            size,
                            created_ms,
                            tail,
                        },
                    );
                }
            }
            Err(e) => {
                // Whatever of these partitions waits behind them fails too.
                let behind: Vec<(Answer, PartInput)> = {
                    let mut g = self.gathering();
                    for p in &parts {
                        let failed = g.failed.entry(key_of(p)).or_insert(p.generation);
                        *failed = (*failed).max(p.generation);
                    }
                    let failed = g.failed.clone();
                    match g.open.as_mut() {
                        Some(open) => {
                            let queued = std::mem::take(&mut open.parts);
                            let waiting = std::mem::take(&mut open.answers);
                            let (doomed, kept): (Vec<_>, Vec<_>) =
                                waiting.into_iter().zip(queued).partition(|(_, p)| {
                                    failed.get(&key_of(p)).is_some_and(|&g| p.generation <= g)
                                });
                            for (a, p) in kept {
                                open.answers.push(a);
                                open.parts.push(p);
                            }
                            open.bytes = open
                                .parts
                                .iter()
                                .flat_map(|p| p.batches.iter())
                                .map(|b| b.len())
                                .sum();
                            if open.parts.is_empty() {
                                g.open = None;
                            }
                            doomed
                        }
                        None => Vec::new(),
                    }
                };
                for answer in answers {
                    answer.send(Err(e.clone()));
                }
                for (answer, part) in behind {
                    answer.send(Err(behind_a_failure(&part)));
                }
            }
        }
    }
}

impl IntakeWriter {
    /// Adds a stored object to the next directory summary and stores that
    /// summary once it is due, in the background: it is only a cache for
    /// cold starts, so nobody waits for it and a failure costs nothing but
    /// the GETs it would have saved.
    fn summarize(&self, seq: u64, object: SummarizedObject) {
        if object.key.len() > usize::from(u16::MAX) {
            return; // a summary names keys with a u16 length (S3 keys are at most 1,024 bytes)
        }
        let due =
            self.summary
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .add(self.writer_id, seq, object);
        let Some((range, objects)) = due else { return };
        let store = self.store.clone();
        let key = intake_summary::summary_key(&self.prefix, range);
        let body = intake_summary::encode(&objects);
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            match store.put_if_absent(&key, body).await {
                Ok(()) => {
                    metrics.intake_summaries_written.inc();
                }
                Err(error) => tracing::warn!(
                    %key, %error,
                    "could not store a directory summary; a flusher starting cold reads \
                     those objects' directories one by one instead"
                ),
            }
        });
    }
}

/// Uploads due objects one after another for as long as the writer exists.
async fn uploader(writer: std::sync::Weak<IntakeWriter>, wake: Arc<Notify>) {
    loop {
        let Some(w) = writer.upgrade() else { return };
        match w.next_due().await {
            Some(object) => w.upload(object).await,
            None => {
                // Nothing open: wait for a first part, without keeping the
                // writer alive (it ends this task by going away).
                drop(w);
                let _ = tokio::time::timeout(Duration::from_secs(1), wake.notified()).await;
            }
        }
    }
}

fn behind_a_failure(part: &PartInput) -> RemoteError {
    RemoteError {
        kind: ErrorKind::Unavailable,
        message: format!(
            "{}-{}: an earlier upload of this partition failed, so this part (numbered after it) was not stored; retry",
            part.topic, part.partition
        ),
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
    use crate::batch::test_support::make_batch;
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
        let index = Arc::new(IntakeIndex::new(store.clone(), "ns/c", 1 << 20));
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
        let fresh = IntakeIndex::new(store.clone(), "ns/c", 1 << 20);
        fresh.refresh().await.unwrap();
        let claims = fresh.claims("t", [1; 16], 7);
        assert_eq!(claims.len(), 1);
        let bytes = fresh
            .read_part(&claims[0].source, crate::intake_cache::PartRead::Alone)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(bytes, part(7, 10, 3).batches[0]);
        assert!(fresh.claims("t", [2; 16], 7).is_empty(), "another topic id");
    }

    #[tokio::test]
    async fn a_flusher_starting_cold_learns_many_objects_from_one_summary() {
        use crate::object_store::tests::counting;
        use std::sync::atomic::Ordering::SeqCst;

        let (_dir, counting) = counting();
        let store: Arc<dyn ObjectStore> = counting.clone();
        let index = Arc::new(IntakeIndex::new(store.clone(), "ns/c", 1 << 20));
        let settings = IntakeSettings {
            window: Duration::ZERO,
            max_bytes: 1,
        };
        let w = IntakeWriter::new(
            store.clone(),
            "ns/c",
            settings,
            index,
            FlusherMetrics::detached(),
        );
        let objects = intake_summary::SEAL_OBJECTS as i64 + 10;
        for n in 0..objects {
            w.write(part(0, n * 3, 3), now_ms() + 60_000).await.unwrap();
        }
        let summaries = intake_summary::summary_prefix("ns/c");
        let mut listed = Vec::new();
        for _ in 0..100 {
            listed = store.list(&summaries).await.unwrap();
            if !listed.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            listed.len(),
            1,
            "one summary per {} objects",
            intake_summary::SEAL_OBJECTS
        );

        let gets_before = counting.whole.load(SeqCst) + counting.ranged.load(SeqCst);
        let fresh = IntakeIndex::new(store.clone(), "ns/c", 1 << 20);
        fresh.refresh().await.unwrap();
        let gets = counting.whole.load(SeqCst) + counting.ranged.load(SeqCst) - gets_before;
        assert_eq!(
            gets,
            1 + 10,
            "the summary, then the tails of the 10 objects it does not cover"
        );
        let mut bases: Vec<i64> = fresh
            .claims("t", [1; 16], 0)
            .iter()
            .map(|c| c.base_offset)
            .collect();
        bases.sort();
        assert_eq!(bases, (0..objects).map(|n| n * 3).collect::<Vec<_>>());

        // The summary stays while any object it covers does.
        let summary = vec![listed[0].key.clone()];
        let mut keys: Vec<String> = fresh.objects().iter().map(|o| o.key.clone()).collect();
        let last = keys.remove(intake_summary::SEAL_OBJECTS - 1);
        store.delete(&keys).await.unwrap();
        fresh.refresh().await.unwrap();
        assert!(fresh.summaries_without_objects(&summary).is_empty());
        store.delete(&[last]).await.unwrap();
        fresh.refresh().await.unwrap();
        assert_eq!(fresh.summaries_without_objects(&summary), summary);
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

    /// Its first PUT waits for `release`, then fails; the rest go through.
    struct FirstPutFails {
        inner: LocalDirStore,
        puts: std::sync::atomic::AtomicUsize,
        release: Notify,
    }

    #[async_trait::async_trait]
    impl ObjectStore for FirstPutFails {
        async fn put_if_absent(
            &self,
            key: &str,
            body: bytes::Bytes,
        ) -> Result<(), crate::object_store::StoreError> {
            if self.puts.fetch_add(1, Ordering::SeqCst) == 0 {
                self.release.notified().await;
                return Err(crate::object_store::StoreError::Unavailable(
                    "injected".into(),
                ));
            }
            self.inner.put_if_absent(key, body).await
        }
        async fn put_replacing(
            &self,
            key: &str,
            body: bytes::Bytes,
            expected_etag: Option<&str>,
        ) -> Result<(), crate::object_store::StoreError> {
            self.inner.put_replacing(key, body, expected_etag).await
        }
        async fn get(&self, key: &str) -> Result<bytes::Bytes, crate::object_store::StoreError> {
            self.inner.get(key).await
        }
        async fn get_range(
            &self,
            key: &str,
            range: std::ops::Range<u64>,
        ) -> Result<bytes::Bytes, crate::object_store::StoreError> {
            self.inner.get_range(key, range).await
        }
        async fn list(
            &self,
            prefix: &str,
        ) -> Result<Vec<crate::object_store::ObjectInfo>, crate::object_store::StoreError> {
            self.inner.list(prefix).await
        }
        async fn delete(&self, keys: &[String]) -> Result<(), crate::object_store::StoreError> {
            self.inner.delete(keys).await
        }
        async fn probe(&self) -> Result<(), crate::object_store::StoreError> {
            Ok(())
        }
        fn describe(&self) -> String {
            "first put fails".into()
        }
    }

    #[tokio::test]
    async fn parts_queued_behind_a_failed_object_fail_instead_of_landing_after_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FirstPutFails {
            inner: LocalDirStore::new(dir.path()).unwrap(),
            puts: Default::default(),
            release: Notify::new(),
        });
        let index = Arc::new(IntakeIndex::new(store.clone(), "ns/c", 1 << 20));
        let w = IntakeWriter::new(
            store.clone(),
            "ns/c",
            IntakeSettings {
                window: Duration::from_millis(10),
                max_bytes: 1 << 20,
            },
            index,
            FlusherMetrics::detached(),
        );
        let far = now_ms() + 60_000;
        let first = tokio::spawn({
            let w = w.clone();
            async move { w.write(part(0, 0, 2), far).await }
        });
        while store.puts.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Sent while the first object's PUT runs: partition 0's next part
        // (same generation) and another partition's part.
        let behind = tokio::spawn({
            let w = w.clone();
            async move { w.write(part(0, 2, 1), far).await }
        });
        let other = tokio::spawn({
            let w = w.clone();
            async move { w.write(part(5, 0, 1), far).await }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        store.release.notify_one();
        assert_eq!(
            first.await.unwrap().unwrap_err().kind,
            ErrorKind::Unavailable
        );
        let behind = behind.await.unwrap().unwrap_err();
        assert!(
            behind.message.contains("earlier upload"),
            "{}",
            behind.message
        );
        other.await.unwrap().unwrap();
        // After its recovery the writer's next generation is taken again.
        let mut recovered = part(0, 0, 1);
        recovered.generation = 2;
        w.write(recovered, far).await.unwrap();
        let objects = store.list(&intake::intake_prefix("ns/c")).await.unwrap();
        assert_eq!(
            objects.len(),
            2,
            "the other partition's part and the recovered one"
        );
    }
}
