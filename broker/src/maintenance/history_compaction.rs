//! Keeps the metadata store's history bounded. Every offset commit, group
//! change and log-start move adds a revision to etcd; etcd keeps every old
//! version until it is compacted, and once its database reaches its quota it
//! refuses every write in the cluster. The controller (one broker at a time)
//! compacts, each interval, to the revision it saw one interval earlier, so
//! at least one interval of history stays for watches to resume from (a
//! watch that falls further behind re-reads everything, as after any gap),
//! and defragments a member whose file is mostly free space. Between those,
//! every few seconds it checks what the store holds: past the history budget
//! (a commit storm writes faster than one interval can hold) it compacts to
//! the revision of the previous check and checks again sooner, and on
//! etcd's NOSPACE alarm it compacts to now.

use crate::tasks::BackgroundTasks;
use std::sync::Arc;
use std::time::Duration;

use kafscale_metadata::MetadataStore;
use kafscale_telemetry::prometheus_client::metrics::counter::Counter;

use crate::cluster::ClusterView;

/// How often the controller asks whether the store ran out of space (etcd's
/// NOSPACE alarm, after which it refuses every write until cleared) or holds
/// more than the history budget.
const SPACE_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// The same while the store holds more than the history budget. Each early
/// compaction keeps what was written since the check before, so a storm
/// leaves about two check intervals of its writes in the store: at tens of
/// MiB a second (measured: 36 MiB/s of commit metadata on 2 cores) 2 s
/// checks let etcd reach 195 MiB in use with a 32 MiB budget, close to a
/// 256 MiB quota. Compacting takes etcd a few hundred milliseconds, so the
/// checks do not come faster than this.
const PRESSED_SPACE_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// When to check the space again, after a check that found `history_bytes`.
pub fn next_space_check(history_bytes: Option<u64>, max_history_bytes: u64) -> Duration {
    match history_bytes {
        Some(bytes) if max_history_bytes > 0 && bytes > max_history_bytes => {
            PRESSED_SPACE_CHECK_INTERVAL
        }
        _ => SPACE_CHECK_INTERVAL,
    }
}

/// When the history may go.
#[derive(Debug, Clone, Copy, Default)]
pub struct HistorySettings {
    /// Regular compaction: each interval, to the revision one interval ago
    /// (zero: never, and no space checks either).
    pub interval: Duration,
    /// What the store may hold before history goes early (zero: no limit).
    pub max_history_bytes: u64,
}

/// What the store looked like at one wake-up of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wakeup {
    /// The regular interval.
    Scheduled,
    /// A space check: whether NOSPACE is raised, and what the store holds.
    SpaceCheck {
        out_of_space: bool,
        history_bytes: Option<u64>,
    },
}

/// Revisions seen at earlier wake-ups: history older than them may go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    pub at_last_interval: Option<i64>,
    pub at_last_space_check: Option<i64>,
}

/// The revision to compact to at this wake-up, if any (0: the newest, which
/// the store resolves itself).
pub fn compaction_target(wakeup: Wakeup, seen: Seen, max_history_bytes: u64) -> Option<i64> {
    match wakeup {
        Wakeup::Scheduled => seen.at_last_interval,
        Wakeup::SpaceCheck {
            out_of_space: true, ..
        } => Some(0),
        Wakeup::SpaceCheck {
            history_bytes: Some(bytes),
            ..
        } if max_history_bytes > 0 && bytes > max_history_bytes => seen.at_last_space_check,
        Wakeup::SpaceCheck { .. } => None,
    }
}

/// Runs for the life of the broker; does nothing with a zero interval.
pub fn spawn(
    tasks: &BackgroundTasks,
    view: Arc<ClusterView>,
    metadata: MetadataStore,
    settings: HistorySettings,
    space_alarms_cleared: Counter,
) {
    if settings.interval.is_zero() {
        return;
    }
    tasks.spawn("etcd history compaction", async move {
        let mut tick = tokio::time::interval(settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_check = tokio::time::Instant::now() + SPACE_CHECK_INTERVAL;
        let mut seen = Seen::default();
        loop {
            let scheduled = tokio::select! {
                _ = tick.tick() => true,
                _ = tokio::time::sleep_until(next_check) => false,
            };
            if !scheduled {
                next_check = tokio::time::Instant::now() + SPACE_CHECK_INTERVAL;
            }
            if view.controller() != Some(view.me.id) {
                seen = Seen::default();
                continue;
            }
            let wakeup = if scheduled {
                Wakeup::Scheduled
            } else {
                let history_bytes = metadata.history_bytes().await.unwrap_or(None);
                next_check = tokio::time::Instant::now()
                    + next_space_check(history_bytes, settings.max_history_bytes);
                Wakeup::SpaceCheck {
                    out_of_space: metadata.out_of_space().await.unwrap_or(false),
                    history_bytes,
                }
            };
            if let Some(revision) = compaction_target(wakeup, seen, settings.max_history_bytes) {
                if let Wakeup::SpaceCheck {
                    out_of_space: false,
                    history_bytes: Some(bytes),
                } = wakeup
                {
                    tracing::info!(
                        bytes,
                        budget = settings.max_history_bytes,
                        revision,
                        "the metadata store holds more than its history budget (--metadata-history-max-bytes); compacting early"
                    );
                }
                match metadata.compact_history(revision).await {
                    Ok(report) => {
                        space_alarms_cleared.inc_by(report.space_alarms_cleared as u64);
                        tracing::debug!(revision, defragmented = ?report.defragmented, "metadata history compacted")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, revision, "compacting the metadata store's history failed; will retry")
                    }
                }
            }
            let now = metadata.revision().await.ok();
            if scheduled {
                seen.at_last_interval = now;
            } else {
                seen.at_last_space_check = now;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEEN: Seen = Seen {
        at_last_interval: Some(100),
        at_last_space_check: Some(900),
    };

    fn check(out_of_space: bool, history_bytes: Option<u64>) -> Wakeup {
        Wakeup::SpaceCheck {
            out_of_space,
            history_bytes,
        }
    }

    #[test]
    fn a_store_over_its_budget_is_checked_more_often_until_it_is_back() {
        let max = 32 << 20;
        assert_eq!(
            next_space_check(Some(max + 1), max),
            PRESSED_SPACE_CHECK_INTERVAL
        );
        assert_eq!(next_space_check(Some(max), max), SPACE_CHECK_INTERVAL);
        assert_eq!(next_space_check(None, max), SPACE_CHECK_INTERVAL);
        assert_eq!(next_space_check(Some(u64::MAX), 0), SPACE_CHECK_INTERVAL);
    }

    #[test]
    fn the_interval_keeps_one_interval_of_history() {
        assert_eq!(compaction_target(Wakeup::Scheduled, SEEN, 0), Some(100));
        assert_eq!(
            compaction_target(Wakeup::Scheduled, Seen::default(), 0),
            None,
            "nothing seen yet: nothing old enough"
        );
    }

    #[test]
    fn a_store_over_its_history_budget_keeps_only_since_the_last_check() {
        assert_eq!(
            compaction_target(check(false, Some(600)), SEEN, 500),
            Some(900)
        );
        assert_eq!(compaction_target(check(false, Some(400)), SEEN, 500), None);
        assert_eq!(
            compaction_target(check(false, Some(600)), SEEN, 0),
            None,
            "no budget"
        );
        assert_eq!(
            compaction_target(check(false, None), SEEN, 500),
            None,
            "a store without history"
        );
    }

    #[test]
    fn out_of_space_compacts_everything_at_once() {
        assert_eq!(compaction_target(check(true, Some(1)), SEEN, 500), Some(0));
        assert_eq!(
            compaction_target(check(true, None), Seen::default(), 0),
            Some(0)
        );
    }
}
