//! What a periodic partition job (merging, cleaning) learnt in earlier
//! rounds, so that a partition it found with nothing to do costs nothing,
//! not even a listing, until it is written again: the high watermark a
//! round last saw, since when, and when the job last found nothing to do.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::partitions::log::PartitionLog;

struct Quiet {
    high_watermark: i64,
    /// When a round first saw this high watermark.
    since: Instant,
    /// When the job last found nothing to do.
    idle_at: Option<Instant>,
}

#[derive(Default)]
pub struct QuietPartitions {
    partitions: HashMap<(String, i32), Quiet>,
    seen: HashSet<(String, i32)>,
}

impl QuietPartitions {
    /// Notes `log`'s high watermark in this round and says whether the job
    /// may skip it: it found nothing to do at least `settle` after the last
    /// write (so every write had time to become workable) and, with
    /// `recheck`, less than that long ago.
    pub fn skip(
        &mut self,
        log: &PartitionLog,
        high_watermark: i64,
        settle: Duration,
        recheck: Option<Duration>,
    ) -> bool {
        let key = (log.topic.clone(), log.partition);
        self.seen.insert(key.clone());
        let now = Instant::now();
        let quiet = self.partitions.entry(key).or_insert(Quiet {
            high_watermark,
            since: now,
            idle_at: None,
        });
        if quiet.high_watermark != high_watermark {
            *quiet = Quiet {
                high_watermark,
                since: now,
                idle_at: None,
            };
        }
        quiet.idle_at.is_some_and(|idle_at| {
            idle_at.duration_since(quiet.since) > settle
                && recheck.is_none_or(|recheck| idle_at.elapsed() < recheck)
        })
    }

    /// What the job, asked at `asked_at` (before it listed anything), found
    /// in `log` this round: nothing to do, or work.
    pub fn found(&mut self, log: &PartitionLog, nothing_to_do: bool, asked_at: Instant) {
        if let Some(quiet) = self.partitions.get_mut(&(log.topic.clone(), log.partition)) {
            quiet.idle_at = nothing_to_do.then_some(asked_at);
        }
    }

    /// Ends a round: partitions it did not see (not led, or gone) are
    /// forgotten, so they are checked afresh once led again.
    pub fn end_round(&mut self) {
        let seen = std::mem::take(&mut self.seen);
        self.partitions.retain(|key, _| seen.contains(key));
    }
}
