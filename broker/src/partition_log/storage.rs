//! What a partition log needs of object storage, as one typed trait: the
//! flusher client implements it (production and dev mode, where the flusher
//! runs in-process behind the same socket), and tests put faults behind it.

use async_trait::async_trait;
use bytes::Bytes;
use kafscale_flusher::protocol::{request, LogStorage, Recovered, Written};
use kafscale_flusher::protocol::{ProducerBatch, RemoteError};
use kafscale_flusher::{FlusherClient, PartitionId};

/// One upload of a partition's pending batches.
#[derive(Debug, Clone)]
pub struct UploadRequest {
    pub leader_epoch: i32,
    /// The recovery generation the leader numbers under.
    pub generation: u64,
    /// No write lands after this (Unix ms): the broker's session end plus grace.
    pub not_after_ms: i64,
    pub batches: Vec<Bytes>,
}

#[async_trait]
pub trait SegmentStorage: Send + Sync + 'static {
    /// Stores the batches as one segment, create-once, landing before
    /// `not_after_ms` or not at all.
    async fn write_segment(
        &self,
        at: &PartitionId,
        upload: UploadRequest,
    ) -> Result<Written, RemoteError>;
    /// Stores the batches as one part of the intake object the flusher is
    /// gathering; answers once that object is stored.
    async fn append_intake(
        &self,
        at: &PartitionId,
        upload: UploadRequest,
    ) -> Result<Written, RemoteError>;
    /// Whole batches from the one holding `offset`, at most `max_bytes` but
    /// at least one when there is one.
    async fn read_range(
        &self,
        at: &PartitionId,
        offset: i64,
        max_bytes: u32,
    ) -> Result<Bytes, RemoteError>;
    /// The partition's bounds as its intake parts and segments say.
    /// `generation`: this recovery's (0 on the segment path).
    async fn recover(&self, at: &PartitionId, generation: u64) -> Result<Recovered, RemoteError>;
    /// Producer fields of the idempotent batches in the newest data.
    async fn producer_batches(
        &self,
        at: &PartitionId,
        max_bytes: u64,
    ) -> Result<Vec<ProducerBatch>, RemoteError>;
}

#[async_trait]
impl SegmentStorage for FlusherClient {
    async fn write_segment(
        &self,
        at: &PartitionId,
        upload: UploadRequest,
    ) -> Result<Written, RemoteError> {
        LogStorage::write_segment(
            self,
            request::WriteSegment {
                topic: at.topic.clone(),
                partition: at.partition,
                not_after_ms: upload.not_after_ms,
                batches: upload.batches,
            },
        )
        .await
    }
    async fn append_intake(
        &self,
        at: &PartitionId,
        upload: UploadRequest,
    ) -> Result<Written, RemoteError> {
        LogStorage::append_intake(
            self,
            request::AppendIntake {
                topic: at.topic.clone(),
                topic_id: at.topic_id,
                partition: at.partition,
                leader_epoch: upload.leader_epoch,
                generation: upload.generation,
                not_after_ms: upload.not_after_ms,
                batches: upload.batches,
            },
        )
        .await
    }
    async fn read_range(
        &self,
        at: &PartitionId,
        offset: i64,
        max_bytes: u32,
    ) -> Result<Bytes, RemoteError> {
        let range = LogStorage::read_range(
            self,
            request::ReadRange {
                topic: at.topic.clone(),
                topic_id: at.topic_id,
                partition: at.partition,
                offset,
                max_bytes,
            },
        )
        .await?;
        Ok(range.batches)
    }
    async fn recover(&self, at: &PartitionId, generation: u64) -> Result<Recovered, RemoteError> {
        LogStorage::recover(
            self,
            request::Recover {
                topic: at.topic.clone(),
                topic_id: at.topic_id,
                partition: at.partition,
                generation,
            },
        )
        .await
    }
    async fn producer_batches(
        &self,
        at: &PartitionId,
        max_bytes: u64,
    ) -> Result<Vec<ProducerBatch>, RemoteError> {
        let found = LogStorage::producer_batches(
            self,
            request::ProducerBatches {
                topic: at.topic.clone(),
                topic_id: at.topic_id,
                partition: at.partition,
                max_bytes,
            },
        )
        .await?;
        Ok(found.batches)
    }
}
