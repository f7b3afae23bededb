//! Before a leader acknowledges an intake part: the check that no
//! partition was taken from this broker without this broker knowing.
//!
//! An intake object has a key of its own, so, unlike a segment's
//! create-once key, its PUT cannot collide with a new leader's write. What
//! keeps an acknowledged record from being overridden instead: the
//! controller marks `leaderships/{broker}` in every transaction that takes a
//! partition from the broker, and a leader acknowledges a part stored before
//! a check only if the check's linearizable read of that mark finds the
//! view up to date, and the view still has the partition led by this broker
//! at the epoch of the upload. A new leader reads the log end only after
//! the move, so the part is in what it recovers (docs/intake-objects.md).
//!
//! Checks are shared: every part stored before a check began is covered by
//! it, so one read serves all partitions of an intake object.

use std::sync::{Arc, Mutex};

use kafscale_metadata::{MetadataError, MetadataStore};

use crate::cluster::ClusterView;

#[derive(Default)]
struct Rounds {
    /// Checks started so far.
    started: u64,
    /// The number and outcome of the last check that ended.
    last: Option<(u64, Result<(), String>)>,
    /// The mark's revision the view is known to include.
    applied_mark: i64,
}

pub struct LeadershipCheck {
    view: Arc<ClusterView>,
    metadata: MetadataStore,
    rounds: Mutex<Rounds>,
    /// One check at a time; callers that arrive meanwhile share the next.
    running: tokio::sync::Mutex<()>,
}

impl LeadershipCheck {
    pub fn new(view: Arc<ClusterView>, metadata: MetadataStore) -> Self {
        Self {
            view,
            metadata,
            rounds: Mutex::new(Rounds::default()),
            running: tokio::sync::Mutex::new(()),
        }
    }

    fn rounds(&self) -> std::sync::MutexGuard<'_, Rounds> {
        self.rounds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns once a check that started after this call found the view
    /// holding every partition taken from this broker until then; from then
    /// on the view's leadership decides for anything stored before the call.
    /// An error (etcd unreachable) means: do not acknowledge.
    pub async fn confirm(&self) -> Result<(), String> {
        let asked_at = self.rounds().started;
        let _one_at_a_time = self.running.lock().await;
        let (number, applied_mark) = {
            let mut r = self.rounds();
            if let Some((done, outcome)) = &r.last {
                if *done > asked_at {
                    return outcome.clone();
                }
            }
            r.started += 1;
            (r.started, r.applied_mark)
        };
        let outcome = self
            .check(applied_mark)
            .await
            .map_err(|e| format!("checking leadership in the metadata store failed: {e}"));
        let mut r = self.rounds();
        if let Ok(mark) = &outcome {
            r.applied_mark = r.applied_mark.max(*mark);
        }
        let outcome = outcome.map(|_| ());
        r.last = Some((number, outcome.clone()));
        outcome
    }

    async fn check(&self, applied_mark: i64) -> Result<i64, MetadataError> {
        let mark = self
            .metadata
            .partitions_taken_revision(self.view.me.id)
            .await?;
        if mark > applied_mark {
            // Something was taken since the view was last known complete:
            // read every record afresh (this read starts after the mark's).
            self.view.refresh_partitions().await?;
        }
        Ok(mark)
    }
}
