//! Background retention: deletes whole old segments by `retention.ms` and
//! `retention.bytes`, advancing each partition's log start offset first, so a
//! crash between the two steps leaves extra objects, never a wrong log start.

use std::sync::Arc;

use crate::maintenance::Maintenance;
use crate::partitions::log::PartitionLog;
use crate::tasks::BackgroundTasks;
use kafscale_flusher_protocol::{request, Deleted};

/// Persists a new log start, applies it to the log, then deletes the segments
/// below it (best effort: leftovers are retried on the next pass). The log
/// start never passes `high_watermark`: object storage may hold parts above
/// it that were never acknowledged (a failed upload's, a zombie's), and a
/// stored log start above the acknowledged records would hide them from
/// every later leader.
pub async fn advance_log_start(
    maintenance: &Maintenance,
    log: &PartitionLog,
    offset: i64,
    high_watermark: i64,
) -> Result<i64, kafscale_metadata::MetadataError> {
    let offset = offset.min(high_watermark);
    let stored = maintenance
        .metadata
        .advance_log_start(&log.topic, log.partition, offset)
        .await?;
    log.advance_log_start(stored);
    delete_segments_below(maintenance, log, stored).await;
    Ok(stored)
}

async fn delete_segments_below(maintenance: &Maintenance, log: &PartitionLog, offset: i64) {
    // A delete decided before a merge must not land after it: the merged
    // object takes the key of a segment the delete may have chosen.
    // Skipped (and retried by a later retention pass) while this broker may
    // not maintain the partition yet; the log start already hides the data.
    let min_age_ms = maintenance.settings.merge.min_age.as_millis() as i64;
    let step = maintenance
        .step(log, |not_after_ms| {
            maintenance
                .storage
                .delete_segments_below(request::DeleteSegmentsBelow {
                    topic: log.topic.clone(),
                    partition: log.partition,
                    offset,
                    min_age_ms,
                    not_after_ms,
                })
        })
        .await;
    let Some(result) = step else { return };
    match result {
        Ok(Deleted { objects }) if objects > 0 => {
            tracing::info!(topic = %log.topic, partition = log.partition, log_start = offset, segments = objects, "deleted segments below the log start");
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(topic = %log.topic, partition = log.partition, error = %e, "deleting old segments failed; will retry")
        }
    }
}

/// One retention pass over every partition this broker leads (only a
/// partition's leader enforces its retention).
pub async fn enforce_once(maintenance: &Maintenance) {
    for topic in maintenance.topics.all() {
        // The flusher's request says "no limit" with -1, as Kafka's configs do.
        let ms = topic.config.applied_retention_ms().unwrap_or(-1);
        let bytes = topic.config.applied_retention_bytes().unwrap_or(-1);
        for log in &topic.partitions {
            if log.lead().is_none() {
                continue;
            }
            let Ok((log_start, high_watermark)) = log.offsets().await else {
                continue;
            };
            let point = maintenance
                .storage
                .retention_point(request::RetentionPoint {
                    topic: log.topic.clone(),
                    topic_id: log.topic_id,
                    partition: log.partition,
                    retention_ms: ms,
                    retention_bytes: bytes,
                    compacted: u8::from(topic.config.cleanup.compact),
                })
                .await
                .map(|p| p.offset);
            match point {
                Ok(offset) if offset > log_start => {
                    if let Err(e) =
                        advance_log_start(maintenance, log, offset, high_watermark).await
                    {
                        tracing::warn!(topic = %log.topic, partition = log.partition, error = %e, "retention could not store the new log start");
                    }
                }
                // Segments left behind by an earlier pass or a DeleteRecords.
                Ok(_) if log_start > 0 => delete_segments_below(maintenance, log, log_start).await,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(topic = %log.topic, partition = log.partition, error = %e, "retention check failed")
                }
            }
        }
    }
}

pub fn spawn(maintenance: Arc<Maintenance>, tasks: &BackgroundTasks) {
    let interval = maintenance.settings.retention_check_interval;
    tasks.spawn("retention", async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            enforce_once(&maintenance).await;
        }
    });
}
