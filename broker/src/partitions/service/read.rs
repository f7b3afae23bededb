//! Reads for Fetch: durable data only, long-polling on high-watermark
//! changes, within the memory the broker keeps for fetch responses.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::select_all;
use kafscale_storage_format::batch;

use super::{PartitionError, PartitionService};
use crate::kafka::listener_limits::{ResponseHold, FETCH_MIN_GRANT_BYTES};
use crate::metrics::TopicLabels;
use crate::partitions::log::{LogError, PartitionLog, ReadResult};

/// One partition a fetch reads.
pub struct ReadTarget {
    /// The log to read, or why it cannot be read.
    pub log: Result<Arc<PartitionLog>, PartitionError>,
    pub offset: i64,
    pub max_bytes: usize,
}

/// How long and for how much a fetch waits.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    pub max_wait: Duration,
    pub min_bytes: usize,
    /// What the whole response may hold (already capped by the broker).
    pub max_bytes: usize,
}

/// The longest a fetch long-polls, whatever `max_wait_ms` asks: the client
/// just asks again.
pub const MAX_FETCH_WAIT: Duration = Duration::from_secs(30);

/// What a fetch returns for one partition.
pub enum PartitionRead {
    /// The partition was not read: unknown, not authorized, not led.
    Refused(PartitionError),
    Data(ReadResult),
    /// The read failed; the offsets are the log's, where known (-1 if not).
    Failed {
        error: LogError,
        log_start: i64,
        high_watermark: i64,
    },
}

/// Partitions read concurrently: cold reads wait on object storage, so one
/// fetch of many partitions should not wait for them one after another.
const READ_WAVE: usize = 16;

impl PartitionService<'_> {
    /// Reads every target, waiting up to `limits.max_wait` for
    /// `limits.min_bytes`. Memory for the response is reserved for each
    /// read and handed to `hold`, which keeps it until the response is
    /// written; a long poll with nothing read holds none.
    pub async fn read(
        &self,
        targets: &[ReadTarget],
        limits: ReadLimits,
        hold: &ResponseHold,
    ) -> Vec<PartitionRead> {
        let deadline = tokio::time::Instant::now() + limits.max_wait.min(MAX_FETCH_WAIT);
        let mut read_so_far = None;
        let reads = loop {
            // Subscribe before reading so a write that lands in between still wakes us.
            let mut watchers: Vec<_> = targets
                .iter()
                .filter_map(|t| t.log.as_ref().ok().map(|l| l.watch_high_watermark()))
                .collect();
            drop(read_so_far.take());
            let reservation = self
                .broker
                .fetch_memory
                .reserve_up_to(limits.max_bytes, FETCH_MIN_GRANT_BYTES)
                .await;
            let (reads, total, any_error) = read_all(targets, reservation.bytes).await;
            if total >= limits.min_bytes.max(1)
                || any_error
                || watchers.is_empty()
                || tokio::time::Instant::now() >= deadline
            {
                let mut kept = reservation;
                kept.shrink_to(total);
                hold.keep(kept);
                break reads;
            }
            // What was read stays reserved across the wait; the rest goes
            // back now, so an empty long poll holds nothing.
            if total > 0 {
                let mut kept = reservation;
                kept.shrink_to(total);
                read_so_far = Some(kept);
            } else {
                drop(reservation);
            }
            let changed = select_all(watchers.iter_mut().map(|w| Box::pin(w.changed())));
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                // No news by the deadline: answer with what we have (usually nothing).
                if let Some(r) = read_so_far.take() {
                    hold.keep(r);
                }
                break reads;
            }
        };
        self.count_reads(targets, &reads);
        reads
    }

    fn count_reads(&self, targets: &[ReadTarget], reads: &[PartitionRead]) {
        let metrics = &self.broker.metrics;
        for (target, read) in targets.iter().zip(reads) {
            let (Ok(log), PartitionRead::Data(data)) = (&target.log, read) else {
                continue;
            };
            if data.records.is_empty() {
                continue;
            }
            let labels = TopicLabels {
                topic: log.topic.clone(),
            };
            let count: u64 = batch::iter_headers(&data.records)
                .map(|(_, h)| h.records_count.max(0) as u64)
                .sum();
            metrics.fetch_records.get_or_create(&labels).inc_by(count);
            (metrics.fetch_bytes.get_or_create(&labels)).inc_by(data.records.len() as u64);
        }
    }
}

/// One partition's read of at most `budget` bytes (at least one batch unless
/// `budget` is 0 and earlier partitions already filled the response).
async fn read_one(t: &ReadTarget, budget: usize, have_data: bool) -> PartitionRead {
    let log = match &t.log {
        Err(e) => return PartitionRead::Refused(e.clone()),
        Ok(log) => log,
    };
    let result = if budget == 0 && have_data {
        log.offsets().await.map(|(log_start, hw)| ReadResult {
            records: Bytes::new(),
            high_watermark: hw,
            log_start,
        })
    } else {
        log.read(t.offset, budget.max(1)).await
    };
    match result {
        Ok(r) => PartitionRead::Data(r),
        Err(error) => {
            let (log_start, high_watermark) = log.offsets().await.unwrap_or((-1, -1));
            PartitionRead::Failed {
                error,
                log_start,
                high_watermark,
            }
        }
    }
}

/// Reads every target once. Only the first partition with data may exceed the
/// request's `max_bytes` (by returning one whole batch), as in Kafka. Targets
/// are read in waves of partitions whose whole budgets fit in what is left of
/// `max_bytes`, so reading concurrently never reads more than could be sent.
async fn read_all(targets: &[ReadTarget], max_bytes: usize) -> (Vec<PartitionRead>, usize, bool) {
    let mut out = Vec::with_capacity(targets.len());
    let mut total = 0usize;
    let mut any_error = false;
    let mut next = 0;
    while next < targets.len() {
        let remaining = max_bytes.saturating_sub(total);
        let mut end = next + 1;
        let mut planned = targets[next].max_bytes.min(remaining);
        while end < targets.len()
            && end - next < READ_WAVE
            && planned + targets[end].max_bytes <= remaining
        {
            planned += targets[end].max_bytes;
            end += 1;
        }
        let wave = &targets[next..end];
        let results = futures::future::join_all(
            wave.iter()
                .map(|t| read_one(t, remaining.min(t.max_bytes), total > 0)),
        )
        .await;
        for (t, result) in wave.iter().zip(results) {
            let result = match result {
                PartitionRead::Data(mut r) => {
                    let budget = max_bytes.saturating_sub(total).min(t.max_bytes);
                    if total > 0 && r.records.len() > budget {
                        r.records = Bytes::new();
                    }
                    total += r.records.len();
                    PartitionRead::Data(r)
                }
                refused_or_failed => {
                    any_error = true;
                    refused_or_failed
                }
            };
            out.push(result);
        }
        next = end;
    }
    (out, total, any_error)
}
