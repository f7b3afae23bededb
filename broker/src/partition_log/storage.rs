//! What a partition log needs of object storage, as one typed trait: the
//! flusher client implements it (production and dev mode, where the flusher
//! runs in-process behind the same socket), and tests put faults behind it.

use async_trait::async_trait;
use bytes::Bytes;
use kafscale_flusher::protocol::{ProducerBatch, RemoteError};
use kafscale_flusher::protocol::{Recovered, Written};
use kafscale_flusher::FlusherClient;

#[async_trait]
pub trait SegmentStorage: Send + Sync + 'static {
    /// Stores the batches as one segment, create-once, landing before
    /// `not_after_ms` or not at all.
    async fn write_segment(
        &self,
        topic: String,
        partition: i32,
        not_after_ms: i64,
        batches: Vec<Bytes>,
    ) -> Result<Written, RemoteError>;
    /// Whole batches from the one holding `offset`, at most `max_bytes` but
    /// at least one when there is one.
    async fn read_range(
        &self,
        topic: String,
        partition: i32,
        offset: i64,
        max_bytes: u32,
    ) -> Result<Bytes, RemoteError>;
    /// The partition's bounds as its segments say.
    async fn recover(&self, topic: String, partition: i32) -> Result<Recovered, RemoteError>;
    /// Producer fields of the idempotent batches in the newest segments.
    async fn producer_batches(
        &self,
        topic: String,
        partition: i32,
        max_bytes: u64,
    ) -> Result<Vec<ProducerBatch>, RemoteError>;
}

#[async_trait]
impl SegmentStorage for FlusherClient {
    async fn write_segment(
        &self,
        topic: String,
        partition: i32,
        not_after_ms: i64,
        batches: Vec<Bytes>,
    ) -> Result<Written, RemoteError> {
        FlusherClient::write_segment(self, topic, partition, not_after_ms, batches).await
    }
    async fn read_range(
        &self,
        topic: String,
        partition: i32,
        offset: i64,
        max_bytes: u32,
    ) -> Result<Bytes, RemoteError> {
        FlusherClient::read_range(self, topic, partition, offset, max_bytes).await
    }
    async fn recover(&self, topic: String, partition: i32) -> Result<Recovered, RemoteError> {
        FlusherClient::recover(self, topic, partition).await
    }
    async fn producer_batches(
        &self,
        topic: String,
        partition: i32,
        max_bytes: u64,
    ) -> Result<Vec<ProducerBatch>, RemoteError> {
        FlusherClient::producer_batches(self, topic, partition, max_bytes).await
    }
}
