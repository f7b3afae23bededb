//! Crash points for the end-to-end tests: with `KAFSCALE_CRASH_AT=step` (or
//! `step@n`) in its environment, a process kills itself with SIGKILL the
//! `n`-th time (default: the first) it reaches `step`, which makes every
//! step of an upload or a compaction a place where a test can have it die
//! as `kill -9` would, without racing a timer. Unset (as in production),
//! a crash point is one load of an initialised `OnceLock`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The variable a test sets; read once, at the first crash point reached.
pub const CRASH_AT_ENV: &str = "KAFSCALE_CRASH_AT";

#[derive(Debug, PartialEq, Eq)]
struct CrashAt {
    step: String,
    nth: u64,
}

fn parse(value: &str) -> Option<CrashAt> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    let (step, nth) = match value.rsplit_once('@') {
        Some((step, n)) => (step, n.parse().ok().filter(|&n| n > 0)?),
        None => (value, 1),
    };
    Some(CrashAt {
        step: step.to_string(),
        nth,
    })
}

fn configured() -> Option<&'static CrashAt> {
    static CRASH_AT: OnceLock<Option<CrashAt>> = OnceLock::new();
    CRASH_AT
        .get_or_init(|| {
            let raw = std::env::var(CRASH_AT_ENV).ok()?;
            let parsed = parse(&raw);
            if parsed.is_none() {
                eprintln!("{CRASH_AT_ENV}={raw:?} is not `step` or `step@n` (n ≥ 1); no crash point is armed");
            }
            parsed
        })
        .as_ref()
}

/// Whether any crash point is armed (callers may skip building step names).
pub fn armed() -> bool {
    configured().is_some()
}

/// Kills this process if `step` is the armed crash point and this is its
/// `n`-th arrival.
pub fn reached(step: &str) {
    static ARRIVALS: AtomicU64 = AtomicU64::new(0);
    let Some(at) = configured() else { return };
    if at.step != step || ARRIVALS.fetch_add(1, Ordering::SeqCst) + 1 != at.nth {
        return;
    }
    eprintln!(
        "crash point {step} reached (arrival {}): killing this process",
        at.nth
    );
    // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_point_names_a_step_and_optionally_its_arrival() {
        let at = |step: &str, nth| {
            Some(CrashAt {
                step: step.into(),
                nth,
            })
        };
        assert_eq!(parse("put:intake:after"), at("put:intake:after", 1));
        assert_eq!(parse(" put:intake:after@3 "), at("put:intake:after", 3));
        assert_eq!(parse(""), None);
        assert_eq!(parse("step@0"), None);
        assert_eq!(parse("step@x"), None);
    }
}
