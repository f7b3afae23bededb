//! Producer ids for idempotent producers, reserved from the metadata store in
//! blocks so that no two brokers (or restarts) ever hand out the same id.

use std::ops::Range;

use kafscale_metadata::{MetadataError, MetadataStore};
use tokio::sync::Mutex;

const BLOCK: i64 = 1000;

pub struct ProducerIdAllocator {
    metadata: MetadataStore,
    block: Mutex<Range<i64>>,
}

impl ProducerIdAllocator {
    pub fn new(metadata: MetadataStore) -> Self {
        Self {
            metadata,
            block: Mutex::new(0..0),
        }
    }

    pub async fn next(&self) -> Result<i64, MetadataError> {
        let mut block = self.block.lock().await;
        if block.is_empty() {
            *block = self.metadata.allocate_producer_ids(BLOCK).await?;
        }
        let id = block.start;
        block.start += 1;
        Ok(id)
    }
}
