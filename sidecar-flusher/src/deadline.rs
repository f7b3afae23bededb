//! The clock and the session deadline every mutating store request obeys.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::object_store::StoreError;
use crate::protocol::{ErrorKind, RemoteError};

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs one mutating store request only if it can start before `not_after_ms`
/// and cancels it at that moment: a broker whose session may have ended must
/// not change object storage any later (see `WriteSegment`).
pub async fn before_deadline<T>(
    not_after_ms: i64,
    what: &str,
    request: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, RemoteError> {
    let left = not_after_ms.saturating_sub(now_ms());
    let expired = || RemoteError {
        kind: ErrorKind::Expired,
        message: format!(
            "{what}: the broker's session deadline passed; nothing was written after it"
        ),
    };
    if left <= 0 {
        return Err(expired());
    }
    // The deadline first: a process resumed after a pause past the deadline
    // must not send anything more, not even once.
    let deadline = tokio::time::sleep(Duration::from_millis(left as u64));
    tokio::select! {
        biased;
        _ = deadline => Err(expired()),
        r = request => r.map_err(RemoteError::from),
    }
}
