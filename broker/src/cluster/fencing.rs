//! The deadlines that fence a broker out of object storage once it may no
//! longer be the leader, and the timing rules between them, in one place.
//!
//! * A **write lease**: an upload started now must land before this broker's
//!   session end plus the upload grace; the flusher cancels it at that moment.
//! * A **maintenance lease**: one merge or delete step of a partition must end
//!   before the session ends and within half a session timeout, and starts
//!   only once this broker has led the partition for a full session timeout,
//!   so an old leader's last step is over before a new leader's first.
//!
//! The rule between them: a merge or retention delete touches only segments
//! older than the merge age, and a fenced broker's late upload lands at most
//! the upload grace after its session ended. With the merge age longer than
//! the grace by more than the clock skew between the store and the brokers,
//! a late upload can never recreate a key a merge or delete freed. Flags that
//! break a rule are refused at start ([`check_timing`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cluster::ClusterView;

/// The largest clock difference assumed between object storage (whose
/// timestamps date segments) and the brokers (whose clocks end uploads).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_millis(500);

/// Until when (Unix ms) an upload started now may land; `None` without a
/// valid session (nothing may be uploaded then: a new leader may be writing).
pub fn write_deadline(cluster: &ClusterView, upload_grace: Duration) -> Option<i64> {
    let session_end = cluster.session_deadline_ms()?;
    Some(session_end.saturating_add(i64::try_from(upload_grace.as_millis()).unwrap_or(i64::MAX)))
}

/// The latest an upload started at `now_ms` may land when its caller waits
/// `wait` for the answer: early enough that the flusher has failed it, and
/// cancelled its PUT, before the caller stops waiting (a quarter of the wait,
/// at most 5 s, is left for that). An upload given up on is then never
/// stored behind the recovery that follows.
pub fn wait_deadline(now_ms: i64, wait: Duration) -> i64 {
    let margin = (wait / 4).min(Duration::from_secs(5));
    now_ms.saturating_add(i64::try_from((wait - margin).as_millis()).unwrap_or(i64::MAX))
}

/// Until when (Unix ms) one maintenance step may run, for a broker that has
/// led the partition for `led_for`; `None` when it must not maintain it now.
pub fn maintenance_deadline(
    cluster: &ClusterView,
    session_timeout: Duration,
    led_for: Option<Duration>,
) -> Option<i64> {
    if led_for.is_none_or(|d| d < session_timeout) {
        return None;
    }
    let session_end = cluster.session_deadline_ms()?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_millis();
    let soon = i64::try_from(now_ms + session_timeout.as_millis() / 2).ok()?;
    Some(session_end.min(soon))
}

/// The timing settings the fencing rules relate.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub session_timeout: Duration,
    pub merge_min_age: Duration,
    pub upload_grace: Duration,
    /// How long the broker waits for one flusher answer (an upload included).
    pub flusher_timeout: Duration,
    /// How long a new leader waits for a live old leader's hand-over.
    pub handover_wait: Duration,
}

/// Refuses settings that break a fencing rule, saying which and why.
pub fn check_timing(t: &Timing) -> Result<(), String> {
    if t.merge_min_age < t.upload_grace + MAX_CLOCK_SKEW {
        return Err(format!(
            "--merge-min-age-ms ({} ms) must exceed the upload grace ({} ms, half of it) by at least the assumed clock skew ({} ms): \
             otherwise a fenced broker's late upload could recreate a segment key that a merge or retention just deleted",
            t.merge_min_age.as_millis(),
            t.upload_grace.as_millis(),
            MAX_CLOCK_SKEW.as_millis()
        ));
    }
    if t.handover_wait < t.flusher_timeout.min(t.session_timeout + t.upload_grace) {
        return Err(format!(
            "the hand-over wait ({} ms) must cover an upload in flight, which runs until the flusher answers (--flusher-timeout-ms {} ms) \
             or its deadline passes (session plus upload grace, {} ms): otherwise a new leader could read the log end before the old leader's last upload lands",
            t.handover_wait.as_millis(),
            t.flusher_timeout.as_millis(),
            (t.session_timeout + t.upload_grace).as_millis()
        ));
    }
    if t.handover_wait < t.session_timeout + MAX_CLOCK_SKEW {
        return Err(format!(
            "the hand-over wait ({} ms) must outlast a session ({} ms, --session-timeout-ms) by the assumed clock skew ({} ms): \
             a leader cut off from etcd acknowledges intake parts while its session lasts, so a new leader must not read the log end before it ends",
            t.handover_wait.as_millis(),
            t.session_timeout.as_millis(),
            MAX_CLOCK_SKEW.as_millis()
        ));
    }
    if t.flusher_timeout < Duration::from_secs(1) {
        return Err(format!(
            "--flusher-timeout-ms ({} ms) is shorter than one object-storage PUT may take; every slow upload would fail. Use at least 1000",
            t.flusher_timeout.as_millis()
        ));
    }
    Ok(())
}

/// The hand-over wait that satisfies [`check_timing`]: as long as an upload
/// in flight can run, and at least a session and the clock skew.
pub fn handover_wait(
    session_timeout: Duration,
    upload_grace: Duration,
    flusher_timeout: Duration,
) -> Duration {
    flusher_timeout
        .min(session_timeout + upload_grace)
        .max(session_timeout + MAX_CLOCK_SKEW)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(session_ms: u64, min_age_ms: u64, flusher_ms: u64) -> Timing {
        let session_timeout = Duration::from_millis(session_ms);
        let merge_min_age = Duration::from_millis(min_age_ms);
        let upload_grace = merge_min_age / 2;
        let flusher_timeout = Duration::from_millis(flusher_ms);
        Timing {
            session_timeout,
            merge_min_age,
            upload_grace,
            flusher_timeout,
            handover_wait: handover_wait(session_timeout, upload_grace, flusher_timeout),
        }
    }

    #[test]
    fn an_upload_ends_before_its_caller_stops_waiting() {
        assert_eq!(wait_deadline(1_000, Duration::from_secs(30)), 26_000);
        assert_eq!(wait_deadline(1_000, Duration::from_secs(1)), 1_750);
    }

    #[test]
    fn defaults_and_test_settings_pass_and_each_broken_rule_is_named() {
        assert!(
            check_timing(&timing(6_000, 60_000, 30_000)).is_ok(),
            "defaults"
        );
        assert!(
            check_timing(&timing(2_000, 1_000, 30_000)).is_ok(),
            "the e2e suite's"
        );
        let err = check_timing(&timing(6_000, 800, 30_000)).unwrap_err();
        assert!(err.contains("--merge-min-age-ms"), "{err}");
        let err = check_timing(&timing(6_000, 60_000, 200)).unwrap_err();
        assert!(err.contains("--flusher-timeout-ms"), "{err}");
        let short_wait = Timing {
            handover_wait: Duration::from_millis(100),
            ..timing(6_000, 60_000, 30_000)
        };
        assert!(check_timing(&short_wait).unwrap_err().contains("hand-over"));
        let within_a_session = Timing {
            handover_wait: Duration::from_millis(6_200),
            flusher_timeout: Duration::from_millis(6_000),
            ..timing(6_000, 60_000, 30_000)
        };
        assert!(check_timing(&within_a_session)
            .unwrap_err()
            .contains("outlast a session"));
    }
}
