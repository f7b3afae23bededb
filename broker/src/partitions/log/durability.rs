//! The durability rule of one partition as a synchronous state machine: no
//! I/O, no clock, no locks. The driver (`partition_log`) feeds it events
//! (an append, an upload taken or finished, a leadership change, a
//! recovery's result) and carries out what it answers (upload these batches,
//! keep these chunks in memory, recover first).
//!
//! What it decides:
//! * Appends are admitted only at the epoch this broker leads, within the
//!   limits of unacknowledged bytes, after the idempotence check; they get
//!   the next offsets and wait as *pending*, never readable.
//! * An upload takes everything pending; up to `max_in_flight` run at once
//!   (one on the segment path, whose keys order nothing; more on the intake
//!   path, whose flusher stores a partition's parts in order). Outcomes are
//!   applied in the order the uploads were taken: when one is stored, and
//!   only if the partition is still led at the epoch the upload was taken
//!   under with a valid session, the high watermark moves to its end and the
//!   producers waiting for those offsets are answered.
//! * Any other outcome fails everything not yet durable (it was numbered
//!   after what failed; later uploads in flight are disregarded whatever
//!   they end with) and the log end is learnt again from object storage
//!   before the next append: what failed on our side may have landed.
//! * A recovery read under an earlier leadership is discarded.

use bytes::{Bytes, BytesMut};
use kafscale_storage_format::batch::{self, BatchHeader, BatchRewrite};
use tokio::sync::oneshot;

use super::LogError;
use crate::partitions::producer_state::{seq_add, ProducerStateTable, SequenceCheck};

/// Batches made durable together, kept in memory for tail reads.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// When the chunk became durable, in the broker-wide order (0 while pending).
    pub durable_seq: u64,
    pub base_offset: i64,
    /// One past the last offset.
    pub end_offset: i64,
    pub max_timestamp: i64,
    pub bytes: Bytes,
}

/// Resolves once the offsets it waits for are durable, or failed.
pub type Durable = oneshot::Receiver<Result<(), LogError>>;

struct Waiter {
    end_offset: i64,
    done: oneshot::Sender<Result<(), LogError>>,
}

/// Where admitted batches landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: i64,
    pub log_start: i64,
    /// The broker time written into the batches (LogAppendTime), else -1.
    pub log_append_time_ms: i64,
}

/// Why an append is refused before it is numbered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Log(LogError),
    /// Too much is waiting for object storage (`scope`: where); retriable.
    Backlog {
        waiting: usize,
        scope: &'static str,
    },
    /// The broker remembers as many idempotent producers as it may; a new
    /// one waits until idle ones are forgotten; retriable.
    Producers {
        remembered: usize,
    },
}

/// The admission limits of one append.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Unacknowledged bytes this partition may hold.
    pub partition_bytes: usize,
    /// Unacknowledged bytes across the broker right now, and their limit.
    pub broker_bytes: usize,
    pub broker_limit: usize,
    /// Idempotent producers remembered across the broker's partitions right
    /// now, and their limit: a producer new to this partition is refused
    /// at the limit.
    pub producers: usize,
    pub producer_limit: usize,
}

/// An upload to make: everything that was pending.
pub struct Upload {
    /// Names the upload when it finishes.
    pub id: u64,
    pub epoch: i32,
    pub batches: Vec<Bytes>,
}

/// An upload in flight, in the order taken.
struct InFlight {
    id: u64,
    chunks: Vec<Chunk>,
    bytes: usize,
    epoch: i32,
    /// Its outcome once it ended: acknowledgeable, or why not.
    outcome: Option<Result<(), LogError>>,
    /// An earlier upload failed: whatever this one ends with, nothing in it
    /// is acknowledged (it was numbered after what failed).
    disregarded: bool,
}

/// How an upload ended, as the driver saw it.
pub enum UploadResult {
    Stored,
    Failed(LogError),
}

/// What the driver does after an upload ended.
#[derive(Debug)]
pub enum AfterUpload {
    /// Durable and acknowledged: keep these chunks as the readable tail. Then,
    /// if an upload taken later had failed already, everything after them
    /// was abandoned (`then_abandoned`).
    Durable {
        chunks: Vec<Chunk>,
        high_watermark: i64,
        then_abandoned: Option<LogError>,
    },
    /// Not acknowledged; the log recovers before the next append.
    Abandoned(LogError),
    /// Ended before an earlier upload did: decided once that one ends.
    Waiting,
    /// The log was closed meanwhile (or the upload was disregarded).
    Closed,
}

pub struct LogCore {
    needs_recovery: bool,
    deleted: bool,
    log_start: i64,
    /// Next offset to assign.
    log_end: i64,
    /// One past the last durable offset: what consumers may see.
    high_watermark: i64,
    /// Assigned, not yet durable, in offset order.
    pending: Vec<Chunk>,
    pending_bytes: usize,
    /// Uploads in flight, oldest first.
    uploading: std::collections::VecDeque<InFlight>,
    next_upload_id: u64,
    waiters: Vec<Waiter>,
    producers: ProducerStateTable,
    /// The epoch at which this broker leads the partition; `None`: not leader.
    leader_epoch: Option<i32>,
    /// Counts leadership changes, so a recovery that raced one is discarded.
    leadership_changes: u64,
    /// What producers are told when this broker does not (or no longer)
    /// lead the partition.
    not_leader: LogError,
}

impl LogCore {
    pub fn new(not_leader: LogError) -> Self {
        Self {
            needs_recovery: true,
            deleted: false,
            log_start: 0,
            log_end: 0,
            high_watermark: 0,
            pending: Vec::new(),
            pending_bytes: 0,
            uploading: std::collections::VecDeque::new(),
            next_upload_id: 0,
            waiters: Vec::new(),
            producers: ProducerStateTable::default(),
            leader_epoch: None,
            leadership_changes: 0,
            not_leader,
        }
    }
}

/// A recovery's result came after a change of leadership: another leader may
/// have written since it read, so it is not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superseded;

/// A recovery in progress: whose result applies only if leadership has not
/// changed since it began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryTicket {
    generation: u64,
}

impl LogCore {
    pub fn leader_epoch(&self) -> Option<i32> {
        self.leader_epoch
    }
    pub fn needs_recovery(&self) -> bool {
        self.needs_recovery
    }
    pub fn deleted(&self) -> bool {
        self.deleted
    }
    pub fn log_start(&self) -> i64 {
        self.log_start
    }
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }
    /// Bytes numbered but not yet acknowledged (pending and uploading).
    pub fn unacknowledged_bytes(&self) -> usize {
        self.pending_bytes + self.uploading.iter().map(|u| u.bytes).sum::<usize>()
    }
    /// Some upload is in flight.
    pub fn uploading(&self) -> bool {
        !self.uploading.is_empty()
    }
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }
    /// Nothing waits for an upload.
    pub fn quiet(&self) -> bool {
        self.pending.is_empty() && self.uploading.is_empty()
    }

    /// Numbers validated batches and queues them for the next upload. The
    /// receiver resolves once they are durable (or failed).
    pub fn append(
        &mut self,
        batches: &[(BatchHeader, Bytes)],
        leader_epoch: i32,
        append_time: Option<i64>,
        limits: Limits,
    ) -> Result<(Appended, Durable), Refusal> {
        if self.needs_recovery {
            return Err(Refusal::Log(LogError::StorageUnavailable(
                "a previous upload failed and the partition is recovering; retry".into(),
            )));
        }
        if self.deleted {
            return Err(Refusal::Log(LogError::Deleted));
        }
        if self.leader_epoch != Some(leader_epoch) {
            return Err(Refusal::Log(self.not_leader.clone()));
        }
        let size: usize = batches.iter().map(|(_, b)| b.len()).sum();
        let waiting = self.unacknowledged_bytes();
        if waiting + size > limits.partition_bytes && waiting > 0 {
            return Err(Refusal::Backlog {
                waiting,
                scope: "partition",
            });
        }
        if limits.broker_bytes + size > limits.broker_limit && limits.broker_bytes > 0 {
            return Err(Refusal::Backlog {
                waiting: limits.broker_bytes,
                scope: "broker",
            });
        }
        // Sequence checks and numbering in one step, so a retry racing its
        // original is still recognised.
        let mut accepted: Vec<(i64, i16, i32)> = Vec::new();
        let mut checks = Vec::with_capacity(batches.len());
        for (h, _) in batches {
            let check = self
                .producers
                .check(h, &accepted)
                .map_err(|e| Refusal::Log(e.into()))?;
            let new_producer = h.producer_id >= 0
                && !self.producers.knows(h.producer_id)
                && !accepted.iter().any(|(pid, _, _)| *pid == h.producer_id);
            if new_producer && limits.producers >= limits.producer_limit {
                return Err(Refusal::Producers {
                    remembered: limits.producers,
                });
            }
            if check == SequenceCheck::Append && h.producer_id >= 0 {
                accepted.push((
                    h.producer_id,
                    h.producer_epoch,
                    seq_add(h.base_sequence, h.last_offset_delta),
                ));
            }
            checks.push(check);
        }
        if checks
            .iter()
            .all(|c| matches!(c, SequenceCheck::Duplicate { .. }))
        {
            return Ok(self.answer_duplicate(&checks));
        }
        let base_offset = match checks.first() {
            Some(SequenceCheck::Duplicate { base_offset, .. }) => *base_offset,
            _ => self.log_end,
        };
        let first_new = self.log_end;
        let mut next = self.log_end;
        let mut out = BytesMut::with_capacity(size);
        let mut max_timestamp = -1;
        for ((h, b), check) in batches.iter().zip(&checks) {
            if check != &SequenceCheck::Append {
                continue;
            }
            let rewritten = batch::rewrite(
                b,
                BatchRewrite {
                    base_offset: next,
                    partition_leader_epoch: leader_epoch,
                    log_append_time_ms: append_time,
                },
            );
            out.extend_from_slice(&rewritten);
            max_timestamp = max_timestamp.max(append_time.unwrap_or(h.max_timestamp));
            self.producers.record(
                h.producer_id,
                h.producer_epoch,
                h.base_sequence,
                h.last_offset_delta,
                next,
            );
            next += h.offset_count();
        }
        self.log_end = next;
        self.pending.push(Chunk {
            durable_seq: 0,
            base_offset: first_new,
            end_offset: next,
            max_timestamp,
            bytes: out.freeze(),
        });
        self.pending_bytes += size;
        Ok((
            Appended {
                base_offset,
                log_start: self.log_start,
                log_append_time_ms: append_time.unwrap_or(-1),
            },
            self.wait_for(next),
        ))
    }

    fn wait_for(&mut self, end_offset: i64) -> Durable {
        let (tx, rx) = oneshot::channel();
        if end_offset <= self.high_watermark {
            let _ = tx.send(Ok(()));
        } else {
            self.waiters.push(Waiter {
                end_offset,
                done: tx,
            });
        }
        rx
    }

    /// A request made only of retried batches: their original offsets, once
    /// those are durable.
    fn answer_duplicate(&mut self, checks: &[SequenceCheck]) -> (Appended, Durable) {
        let (base_offset, end_offset) = checks.iter().fold((i64::MAX, 0), |(lo, hi), c| match c {
            SequenceCheck::Duplicate {
                base_offset,
                last_offset,
            } => (lo.min(*base_offset), hi.max(*last_offset + 1)),
            SequenceCheck::Append => (lo, hi),
        });
        let appended = Appended {
            base_offset,
            log_start: self.log_start,
            log_append_time_ms: -1,
        };
        (appended, self.wait_for(end_offset))
    }

    /// Takes everything pending for one upload, given the latest moment it
    /// may land (`None`: no valid session, so nothing may be uploaded and
    /// everything pending fails), while fewer than `max_in_flight` run.
    pub fn take_upload(
        &mut self,
        write_deadline: Option<i64>,
        max_in_flight: usize,
    ) -> Option<Upload> {
        if self.pending.is_empty()
            || self.deleted
            || self.needs_recovery
            || self.uploading.len() >= max_in_flight.max(1)
        {
            return None;
        }
        let epoch = self.leader_epoch?;
        if write_deadline.is_none() {
            // Paused or cut off: a new leader may be writing already.
            self.abandon(&self.not_leader.clone());
            return None;
        }
        let chunks = std::mem::take(&mut self.pending);
        let batches: Vec<Bytes> = chunks
            .iter()
            .flat_map(|c| {
                batch::iter_headers(&c.bytes)
                    .map(|(pos, h)| c.bytes.slice(pos..pos + h.size))
                    .collect::<Vec<_>>()
            })
            .collect();
        let id = self.next_upload_id;
        self.next_upload_id += 1;
        self.uploading.push_back(InFlight {
            id,
            chunks,
            bytes: self.pending_bytes,
            epoch,
            outcome: None,
            disregarded: false,
        });
        self.pending_bytes = 0;
        Some(Upload { id, epoch, batches })
    }

    /// Upload `id` ended. Acknowledged only as the leader the upload was
    /// taken under, with a valid session (`session_valid`, as the driver saw
    /// it when the upload ended): after a move the new leader may have read
    /// the log end before this upload landed. Outcomes apply in the order
    /// the uploads were taken, so an upload that ends before an earlier one
    /// waits for it.
    pub fn upload_finished(
        &mut self,
        id: u64,
        result: UploadResult,
        session_valid: bool,
    ) -> AfterUpload {
        let leader_epoch = self.leader_epoch;
        let not_leader = self.not_leader.clone();
        let Some(upload) = self.uploading.iter_mut().find(|u| u.id == id) else {
            return AfterUpload::Closed;
        };
        upload.outcome = Some(match result {
            UploadResult::Stored if leader_epoch == Some(upload.epoch) && session_valid => Ok(()),
            UploadResult::Stored => Err(not_leader),
            UploadResult::Failed(e) => Err(e),
        });
        let mut durable: Vec<Chunk> = Vec::new();
        let mut failure = None;
        while self.uploading.front().is_some_and(|u| u.outcome.is_some()) {
            let Some(done) = self.uploading.pop_front() else {
                break;
            };
            if done.disregarded || self.deleted {
                continue;
            }
            match done.outcome {
                Some(Ok(())) => durable.extend(done.chunks),
                Some(Err(e)) => {
                    // Everything taken later is disregarded; those that ended
                    // already leave the queue in this same pass.
                    for later in self.uploading.iter_mut() {
                        later.disregarded = true;
                    }
                    failure = Some(e);
                }
                None => {}
            }
        }
        if self.deleted {
            return AfterUpload::Closed;
        }
        if let Some(end) = durable.last().map(|c| c.end_offset) {
            self.high_watermark = end;
            let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiters)
                .into_iter()
                .partition(|w| w.end_offset <= end);
            self.waiters = waiting;
            for w in done {
                let _ = w.done.send(Ok(()));
            }
        }
        if let Some(err) = &failure {
            self.abandon(err);
        }
        match (durable.is_empty(), failure) {
            (false, then_abandoned) => AfterUpload::Durable {
                chunks: durable,
                high_watermark: self.high_watermark,
                then_abandoned,
            },
            (true, Some(err)) => AfterUpload::Abandoned(err),
            (true, None) if self.uploading.iter().any(|u| u.id == id) => AfterUpload::Waiting,
            (true, None) => AfterUpload::Closed,
        }
    }

    /// Fails everything not yet durable: it was numbered after what failed.
    /// The log end is learnt again before the next append.
    fn abandon(&mut self, err: &LogError) {
        self.pending.clear();
        self.pending_bytes = 0;
        self.log_end = self.high_watermark;
        self.needs_recovery = true;
        for w in self.waiters.drain(..) {
            let _ = w.done.send(Err(err.clone()));
        }
    }

    /// Follows this broker's leadership of the partition. Any change drops
    /// what was not yet handed to an upload (its producers fail, retriably)
    /// and makes the next use recover: another leader may have written.
    /// The upload in flight decides its own producers' fate. Returns the
    /// epoch given up, if any.
    pub fn follow_leadership(&mut self, epoch: Option<i32>) -> Option<Option<i32>> {
        if self.leader_epoch == epoch {
            return None;
        }
        let given_up = self.leader_epoch;
        self.leader_epoch = epoch;
        self.leadership_changes += 1;
        self.needs_recovery = true;
        self.pending.clear();
        self.pending_bytes = 0;
        let kept = self
            .uploading
            .iter()
            .rev()
            .find(|u| !u.disregarded)
            .and_then(|u| u.chunks.last().map(|c| c.end_offset))
            .unwrap_or(self.high_watermark);
        self.log_end = kept;
        let (failed, kept_waiters): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|w| w.end_offset > kept);
        self.waiters = kept_waiters;
        for w in failed {
            let _ = w.done.send(Err(self.not_leader.clone()));
        }
        Some(given_up)
    }

    /// Starts a recovery, unless none is needed.
    pub fn begin_recovery(&self) -> Result<Option<RecoveryTicket>, LogError> {
        if self.deleted {
            return Err(LogError::Deleted);
        }
        Ok(self.needs_recovery.then_some(RecoveryTicket {
            generation: self.leadership_changes,
        }))
    }

    /// Applies what a recovery read: the listing's log start and end, the
    /// stored log start (DeleteRecords, retention) and the producers' recent
    /// batches. Refused when leadership changed since the ticket was taken.
    pub fn recovered(
        &mut self,
        ticket: RecoveryTicket,
        listed_start: i64,
        log_end: i64,
        stored_start: i64,
        producers: ProducerStateTable,
    ) -> Result<(), Superseded> {
        if ticket.generation != self.leadership_changes {
            return Err(Superseded);
        }
        self.producers = producers;
        self.log_start = self
            .log_start
            .max(listed_start)
            .max(stored_start.min(log_end));
        self.log_end = log_end;
        self.high_watermark = log_end;
        self.needs_recovery = false;
        Ok(())
    }

    /// The readable range for a read at `offset`: (log start, high watermark).
    pub fn readable(&self, offset: i64) -> Result<(i64, i64), LogError> {
        if offset < self.log_start || offset > self.high_watermark {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start: self.log_start,
                high_watermark: self.high_watermark,
            });
        }
        Ok((self.log_start, self.high_watermark))
    }

    /// Raises the log start offset (retention, DeleteRecords), never past
    /// the high watermark.
    pub fn advance_log_start(&mut self, offset: i64) {
        if offset > self.log_start {
            self.log_start = offset.min(self.high_watermark.max(self.log_start));
        }
    }

    /// Gives the idempotent-producer table the time, so it forgets producers
    /// idle for `expiration_ms`.
    pub fn tick_producers(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        self.producers.tick(now_ms, expiration_ms)
    }

    /// Idempotent producers this partition remembers.
    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }

    /// Marks the log deleted: everything waiting fails.
    pub fn close(&mut self) {
        self.deleted = true;
        for w in self.waiters.drain(..) {
            let _ = w.done.send(Err(LogError::Deleted));
        }
        self.pending.clear();
        self.pending_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partitions::producer_state::SequenceError;

    const EPOCH: i32 = 4;

    fn not_leader() -> LogError {
        LogError::NotLeader("not the leader".into())
    }

    fn limits() -> Limits {
        Limits {
            partition_bytes: 1 << 20,
            broker_bytes: 0,
            broker_limit: 1 << 30,
            producers: 0,
            producer_limit: usize::MAX,
        }
    }

    /// A valid v2 batch of `count` records; `producer`: (id, epoch, base sequence).
    fn batch(count: i32, producer: Option<(i64, i16, i32)>) -> (BatchHeader, Bytes) {
        let mut b = vec![0u8; 61];
        b.extend_from_slice(&[7u8; 20]);
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b[16] = 2;
        b[23..27].copy_from_slice(&(count - 1).to_be_bytes());
        let (id, epoch, seq) = producer.unwrap_or((-1, -1, -1));
        b[43..51].copy_from_slice(&id.to_be_bytes());
        b[51..53].copy_from_slice(&epoch.to_be_bytes());
        b[53..57].copy_from_slice(&seq.to_be_bytes());
        b[57..61].copy_from_slice(&count.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        let bytes = Bytes::from(b);
        (batch::validate(&bytes).unwrap(), bytes)
    }

    /// A log led at `EPOCH` and recovered at `end`.
    fn led_log(end: i64) -> LogCore {
        let mut log = LogCore::new(not_leader());
        log.follow_leadership(Some(EPOCH));
        let ticket = log.begin_recovery().unwrap().unwrap();
        log.recovered(ticket, 0, end, 0, ProducerStateTable::default())
            .unwrap();
        log
    }

    fn append(log: &mut LogCore, b: &(BatchHeader, Bytes)) -> (Appended, Durable) {
        log.append(std::slice::from_ref(b), EPOCH, None, limits())
            .unwrap()
    }

    fn answer(rx: &mut Durable) -> Option<Result<(), LogError>> {
        rx.try_recv().ok()
    }

    #[test]
    fn nothing_is_acknowledged_or_readable_before_its_upload_is_stored() {
        let mut log = led_log(10);
        let (appended, mut durable) = append(&mut log, &batch(3, None));
        assert_eq!(appended.base_offset, 10);
        assert_eq!(answer(&mut durable), None, "acknowledged while pending");
        assert!(log.readable(11).is_err(), "pending offsets are readable");
        let upload = log.take_upload(Some(i64::MAX), 1).unwrap();
        assert_eq!(upload.batches.len(), 1);
        assert_eq!(upload.epoch, EPOCH);
        assert_eq!(answer(&mut durable), None, "acknowledged while uploading");
        match log.upload_finished(upload.id, UploadResult::Stored, true) {
            AfterUpload::Durable { high_watermark, .. } => assert_eq!(high_watermark, 13),
            other => panic!("{other:?}"),
        }
        assert_eq!(answer(&mut durable), Some(Ok(())));
        assert_eq!(log.readable(12), Ok((0, 13)));
    }

    #[test]
    fn a_failed_upload_fails_everything_unacknowledged_and_forces_recovery() {
        let mut log = led_log(0);
        let (_, mut first) = append(&mut log, &batch(2, None));
        let upload = log.take_upload(Some(i64::MAX), 1).unwrap();
        // Appended while the upload was in flight: numbered after what fails.
        let (_, mut second) = append(&mut log, &batch(2, None));
        let failure = LogError::StorageUnavailable("PUT failed".into());
        assert!(matches!(
            log.upload_finished(upload.id, UploadResult::Failed(failure.clone()), true),
            AfterUpload::Abandoned(_)
        ));
        assert_eq!(answer(&mut first), Some(Err(failure.clone())));
        assert_eq!(answer(&mut second), Some(Err(failure)));
        assert_eq!(log.high_watermark(), 0);
        assert!(log.needs_recovery());
        // No offset is handed out before the log end is learnt again.
        assert!(log
            .append(&[batch(1, None)], EPOCH, None, limits())
            .is_err());
        // The failed upload landed after all: recovery adopts it.
        let ticket = log.begin_recovery().unwrap().unwrap();
        log.recovered(ticket, 0, 2, 0, ProducerStateTable::default())
            .unwrap();
        assert_eq!(append(&mut log, &batch(1, None)).0.base_offset, 2);
    }

    #[test]
    fn an_upload_that_completes_after_a_leadership_change_is_not_acknowledged() {
        for new_epoch in [None, Some(EPOCH + 1)] {
            let mut log = led_log(5);
            let (_, mut durable) = append(&mut log, &batch(1, None));
            let upload = log.take_upload(Some(i64::MAX), 1).unwrap();
            // The upload in flight decides its own producers' fate...
            log.follow_leadership(new_epoch);
            assert_eq!(answer(&mut durable), None);
            // ...and a zombie's stored upload is not acknowledged.
            assert!(matches!(
                log.upload_finished(upload.id, UploadResult::Stored, true),
                AfterUpload::Abandoned(LogError::NotLeader(_))
            ));
            assert_eq!(answer(&mut durable), Some(Err(not_leader())));
            assert_eq!(log.high_watermark(), 5);
            assert!(log.needs_recovery());
        }
    }

    #[test]
    fn a_stored_upload_is_not_acknowledged_without_a_valid_session() {
        let mut log = led_log(0);
        let (_, mut durable) = append(&mut log, &batch(1, None));
        let upload = log.take_upload(Some(i64::MAX), 1).unwrap();
        assert!(matches!(
            log.upload_finished(upload.id, UploadResult::Stored, false),
            AfterUpload::Abandoned(_)
        ));
        assert_eq!(answer(&mut durable), Some(Err(not_leader())));
        // And nothing is uploaded once the session has no deadline.
        let mut log = led_log(0);
        let (_, mut durable) = append(&mut log, &batch(1, None));
        assert!(log.take_upload(None, 1).is_none());
        assert_eq!(answer(&mut durable), Some(Err(not_leader())));
        assert!(log.quiet());
    }

    #[test]
    fn a_leadership_change_fails_what_was_pending_but_not_what_is_uploading() {
        let mut log = led_log(0);
        let (_, mut uploading) = append(&mut log, &batch(1, None));
        let _upload = log.take_upload(Some(i64::MAX), 1).unwrap();
        let (_, mut pending) = append(&mut log, &batch(1, None));
        assert_eq!(log.follow_leadership(Some(EPOCH + 1)), Some(Some(EPOCH)));
        assert_eq!(answer(&mut pending), Some(Err(not_leader())));
        assert_eq!(answer(&mut uploading), None);
        assert!(!log.has_pending());
        assert_eq!(log.follow_leadership(Some(EPOCH + 1)), None, "no change");
    }

    #[test]
    fn a_recovery_that_raced_a_leadership_change_is_discarded() {
        let mut log = LogCore::new(not_leader());
        log.follow_leadership(Some(EPOCH));
        let ticket = log.begin_recovery().unwrap().unwrap();
        log.follow_leadership(None);
        log.follow_leadership(Some(EPOCH + 2));
        assert!(log
            .recovered(ticket, 0, 100, 0, ProducerStateTable::default())
            .is_err());
        assert!(log.needs_recovery());
        let fresh = log.begin_recovery().unwrap().unwrap();
        log.recovered(fresh, 0, 120, 0, ProducerStateTable::default())
            .unwrap();
        assert_eq!(log.high_watermark(), 120);
        assert_eq!(log.begin_recovery(), Ok(None));
    }

    #[test]
    fn appends_are_refused_unless_led_at_their_epoch() {
        let mut log = led_log(0);
        assert_eq!(
            log.append(&[batch(1, None)], EPOCH - 1, None, limits())
                .unwrap_err(),
            Refusal::Log(not_leader())
        );
        log.close();
        assert_eq!(
            log.append(&[batch(1, None)], EPOCH, None, limits())
                .unwrap_err(),
            Refusal::Log(LogError::Deleted)
        );
    }

    #[test]
    fn a_retried_batch_gets_its_original_offsets_once_they_are_durable() {
        let mut log = led_log(0);
        let first = batch(3, Some((7, 0, 0)));
        let (appended, mut durable) = append(&mut log, &first);
        assert_eq!(appended.base_offset, 0);
        // The retry arrives while the original is still uploading.
        let upload = log.take_upload(Some(i64::MAX), 1).unwrap();
        let (retry, mut retry_durable) = append(&mut log, &first);
        assert_eq!(retry.base_offset, 0, "a retry is not numbered again");
        assert_eq!(answer(&mut retry_durable), None, "answered before durable");
        log.upload_finished(upload.id, UploadResult::Stored, true);
        assert_eq!(answer(&mut durable), Some(Ok(())));
        assert_eq!(answer(&mut retry_durable), Some(Ok(())));
        // A retry of durable data is answered at once, nothing is appended.
        let (again, mut again_durable) = append(&mut log, &first);
        assert_eq!(again.base_offset, 0);
        assert_eq!(answer(&mut again_durable), Some(Ok(())));
        assert!(!log.has_pending());
        // A gap in the sequence is refused.
        let skipped = batch(1, Some((7, 0, 5)));
        assert!(matches!(
            log.append(&[skipped], EPOCH, None, limits()).unwrap_err(),
            Refusal::Log(LogError::Sequence(SequenceError::OutOfOrder { .. }))
        ));
    }

    #[test]
    fn at_the_producer_limit_only_producers_new_to_the_partition_are_refused() {
        let mut log = led_log(0);
        log.append(&[batch(1, Some((7, 0, 0)))], EPOCH, None, limits())
            .unwrap();
        let full = Limits {
            producers: 10,
            producer_limit: 10,
            ..limits()
        };
        // A producer the partition knows goes on writing...
        log.append(&[batch(1, Some((7, 0, 1)))], EPOCH, None, full)
            .unwrap();
        // ...and so do writers that are not idempotent.
        log.append(&[batch(1, None)], EPOCH, None, full).unwrap();
        assert_eq!(
            log.append(&[batch(1, Some((8, 0, 0)))], EPOCH, None, full)
                .unwrap_err(),
            Refusal::Producers { remembered: 10 }
        );
        assert_eq!(log.producer_count(), 1);
    }

    #[test]
    fn appends_past_the_unacknowledged_limits_are_refused_retriably() {
        let mut log = led_log(0);
        let b = batch(1, None);
        let size = b.1.len();
        let tight = Limits {
            partition_bytes: size,
            ..limits()
        };
        // The first append always fits, however large.
        log.append(std::slice::from_ref(&b), EPOCH, None, tight)
            .unwrap();
        assert!(matches!(
            log.append(std::slice::from_ref(&b), EPOCH, None, tight),
            Err(Refusal::Backlog {
                scope: "partition",
                ..
            })
        ));
        let broker_full = Limits {
            broker_bytes: 1000,
            broker_limit: 1000,
            producers: 0,
            producer_limit: usize::MAX,
            ..limits()
        };
        assert!(matches!(
            log.append(&[b], EPOCH, None, broker_full),
            Err(Refusal::Backlog {
                scope: "broker",
                ..
            })
        ));
    }

    #[test]
    fn closing_fails_every_waiter_and_ends_uploads_quietly() {
        let mut log = led_log(0);
        let (_, mut uploading) = append(&mut log, &batch(1, None));
        let upload = log.take_upload(Some(i64::MAX), 1).unwrap();
        let (_, mut pending) = append(&mut log, &batch(1, None));
        log.close();
        assert_eq!(answer(&mut uploading), Some(Err(LogError::Deleted)));
        assert_eq!(answer(&mut pending), Some(Err(LogError::Deleted)));
        assert!(matches!(
            log.upload_finished(upload.id, UploadResult::Stored, true),
            AfterUpload::Closed
        ));
        assert_eq!(log.high_watermark(), 0);
    }

    #[test]
    fn the_log_start_never_passes_the_high_watermark() {
        let mut log = led_log(10);
        log.advance_log_start(50);
        assert_eq!(log.log_start(), 10);
        log.advance_log_start(5);
        assert_eq!(log.log_start(), 10, "never lowered");
        assert!(log.readable(9).is_err());
    }

    #[test]
    fn uploads_in_flight_together_are_acknowledged_in_the_order_taken() {
        let mut log = led_log(0);
        let (_, mut first) = append(&mut log, &batch(2, None));
        let a = log.take_upload(Some(i64::MAX), 4).unwrap();
        let (_, mut second) = append(&mut log, &batch(3, None));
        let b = log.take_upload(Some(i64::MAX), 4).unwrap();
        assert!(
            log.take_upload(Some(i64::MAX), 2).is_none(),
            "nothing pending, or the limit reached"
        );
        // The later one ends first: it waits for the earlier one.
        assert!(matches!(
            log.upload_finished(b.id, UploadResult::Stored, true),
            AfterUpload::Waiting
        ));
        assert_eq!(
            answer(&mut second),
            None,
            "acknowledged before an earlier upload ended"
        );
        assert_eq!(log.high_watermark(), 0);
        match log.upload_finished(a.id, UploadResult::Stored, true) {
            AfterUpload::Durable {
                chunks,
                high_watermark,
                then_abandoned: None,
            } => {
                assert_eq!(high_watermark, 5);
                assert_eq!(chunks.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(answer(&mut first), Some(Ok(())));
        assert_eq!(answer(&mut second), Some(Ok(())));
    }

    #[test]
    fn a_failed_upload_disregards_every_later_one_even_if_it_was_stored() {
        let mut log = led_log(0);
        let (_, mut first) = append(&mut log, &batch(2, None));
        let a = log.take_upload(Some(i64::MAX), 4).unwrap();
        let (_, mut second) = append(&mut log, &batch(3, None));
        let b = log.take_upload(Some(i64::MAX), 4).unwrap();
        let (_, mut third) = append(&mut log, &batch(1, None));
        let c = log.take_upload(Some(i64::MAX), 4).unwrap();
        assert!(matches!(
            log.upload_finished(b.id, UploadResult::Stored, true),
            AfterUpload::Waiting
        ));
        let failure = LogError::StorageUnavailable("PUT failed".into());
        assert!(matches!(
            log.upload_finished(a.id, UploadResult::Failed(failure.clone()), true),
            AfterUpload::Abandoned(_)
        ));
        for w in [&mut first, &mut second, &mut third] {
            assert_eq!(answer(w), Some(Err(failure.clone())));
        }
        assert_eq!(
            log.high_watermark(),
            0,
            "stored after a failed upload, yet acknowledged"
        );
        assert!(
            log.uploading(),
            "the last upload is still in flight: recovery waits for it"
        );
        assert!(matches!(
            log.upload_finished(c.id, UploadResult::Stored, true),
            AfterUpload::Closed
        ));
        assert!(!log.uploading());
        assert!(log.needs_recovery());
    }

    #[test]
    fn an_upload_that_ended_before_an_earlier_failure_is_let_go_with_it() {
        let mut log = led_log(0);
        append(&mut log, &batch(2, None));
        let a = log.take_upload(Some(i64::MAX), 4).unwrap();
        append(&mut log, &batch(3, None));
        let b = log.take_upload(Some(i64::MAX), 4).unwrap();
        assert!(matches!(
            log.upload_finished(b.id, UploadResult::Stored, true),
            AfterUpload::Waiting
        ));
        let failure = LogError::StorageUnavailable("PUT failed".into());
        log.upload_finished(a.id, UploadResult::Failed(failure), true);
        assert!(
            !log.uploading(),
            "an upload that had ended before the failure is still counted in flight: recovery would wait for ever"
        );
    }

    #[test]
    fn uploads_stored_before_a_later_failure_stay_acknowledged() {
        let mut log = led_log(0);
        let (_, mut first) = append(&mut log, &batch(2, None));
        let a = log.take_upload(Some(i64::MAX), 4).unwrap();
        let (_, mut second) = append(&mut log, &batch(3, None));
        let b = log.take_upload(Some(i64::MAX), 4).unwrap();
        let failure = LogError::StorageUnavailable("PUT failed".into());
        assert!(matches!(
            log.upload_finished(b.id, UploadResult::Failed(failure.clone()), true),
            AfterUpload::Waiting
        ));
        match log.upload_finished(a.id, UploadResult::Stored, true) {
            AfterUpload::Durable {
                high_watermark: 2,
                then_abandoned: Some(_),
                ..
            } => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(answer(&mut first), Some(Ok(())));
        assert_eq!(answer(&mut second), Some(Err(failure)));
        assert!(log.needs_recovery());
    }
}
