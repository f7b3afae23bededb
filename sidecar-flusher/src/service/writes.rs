//! Segment uploads: one create-once PUT per `WriteSegment`, the `.index`
//! after it.

use bytes::Bytes;

use super::{before_deadline, now_ms, remote, FlusherService};
use crate::batch;
use crate::protocol::{ErrorKind, RemoteError, Written};
use crate::segment;

impl FlusherService {
    pub(super) async fn write_segment(
        &self,
        topic: &str,
        partition: i32,
        not_after_ms: i64,
        batches: Vec<Bytes>,
    ) -> Result<Written, RemoteError> {
        for b in &batches {
            batch::validate(b).map_err(|e| remote(ErrorKind::BadRequest, e.to_string()))?;
        }
        let seg = segment::encode(&batches, now_ms(), self.settings.index_interval)
            .map_err(super::corrupt)?;
        let p = &self.settings.prefix;
        let key = segment::segment_key(p, topic, partition, seg.base_offset);
        let body = seg.kfs_bytes();
        let size = body.len() as u64;
        let put = before_deadline(
            not_after_ms,
            &key,
            self.store.put_if_absent(&key, body.clone()),
        )
        .await;
        match put {
            Ok(()) => {}
            // A retried PUT whose first attempt landed finds its own bytes: success.
            Err(e) if e.kind == ErrorKind::Conflict && self.same_object(&key, &body).await => {}
            Err(e) => return Err(e),
        }
        self.metrics.segments_written.inc();
        self.metrics.segment_bytes.observe(size as f64);
        // The .kfs is the durability point; producers need not wait for the
        // index. It goes up after the .kfs (never before: a fenced writer's
        // index must not take the key of the winner's), and as it only speeds
        // up range reads, which fall back to scanning, a failure is logged.
        let index_key = segment::index_key(p, topic, partition, seg.base_offset);
        let store = self.store.clone();
        let in_flight = self.index_uploads.clone().read_owned().await;
        let index = seg.index.clone();
        tokio::spawn(async move {
            let _in_flight = in_flight;
            let put = store.put_if_absent(&index_key, index);
            if let Err(e) = before_deadline(not_after_ms, &index_key, put).await {
                tracing::warn!(key = %index_key, error = %e, "index upload failed; reads of this segment will scan");
            }
        });
        self.remember_written(topic, partition, &seg, key, size);
        Ok(Written {
            base_offset: seg.base_offset,
            last_offset: seg.last_offset,
            object_bytes: size,
        })
    }

    pub(super) async fn same_object(&self, key: &str, body: &Bytes) -> bool {
        match self.store.get(key).await {
            Ok(existing) => existing == *body,
            Err(_) => false,
        }
    }
}
