//! The fault-injecting store of the end-to-end tests: it hands every write
//! and delete to the real store and passes a crash point
//! (`kafscale_telemetry::crash_points`) before and after it, named
//! `{put|delete}:{intake|segment|index|other}:{before|after}`, plus
//! `delete:{class}:partial` after only the first key of a multi-key delete.
//! With `KAFSCALE_CRASH_AT` naming one of them the flusher dies exactly
//! there: e.g. `put:intake:after@3` is the third intake object stored but
//! never answered, `put:segment:after` a compacted segment without its index
//! and with its parts still in intake. The flusher wraps its store in it
//! only when a crash point is armed.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use kafscale_telemetry::crash_points;

use crate::intake::INTAKE_DIR;
use crate::object_store::{ObjectInfo, ObjectStore, StoreError};

pub struct CrashingStore {
    inner: Arc<dyn ObjectStore>,
}

impl CrashingStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner }
    }
}

/// What kind of object a key names, for the crash point's name.
fn class(key: &str) -> &'static str {
    if key.split('/').any(|part| part == INTAKE_DIR) {
        "intake"
    } else if key.ends_with(".kfs") {
        "segment"
    } else if key.ends_with(".index") {
        "index"
    } else {
        "other"
    }
}

fn pass(op: &str, key: &str, when: &str) {
    crash_points::reached(&format!("{op}:{}:{when}", class(key)));
}

#[async_trait]
impl ObjectStore for CrashingStore {
    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        pass("put", key, "before");
        let result = self.inner.put_if_absent(key, body).await;
        if result.is_ok() {
            pass("put", key, "after");
        }
        result
    }

    async fn put_replacing(
        &self,
        key: &str,
        body: Bytes,
        expected_etag: Option<&str>,
    ) -> Result<(), StoreError> {
        pass("put", key, "before");
        let result = self.inner.put_replacing(key, body, expected_etag).await;
        if result.is_ok() {
            pass("put", key, "after");
        }
        result
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.inner.get(key).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        self.inner.get_range(key, range).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        self.inner.list(prefix).await
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        let Some(first) = keys.first() else {
            return self.inner.delete(keys).await;
        };
        pass("delete", first, "before");
        if keys.len() > 1 {
            self.inner.delete(&keys[..1]).await?;
            pass("delete", first, "partial");
        }
        self.inner.delete(keys).await?;
        pass("delete", first, "after");
        Ok(())
    }

    async fn probe(&self) -> Result<(), StoreError> {
        self.inner.probe().await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::class;

    #[test]
    fn crash_points_are_named_by_the_kind_of_object() {
        assert_eq!(class("c/!intake/0001-00-0000000001.kfi"), "intake");
        assert_eq!(class("c/t/0/segment-00000000000000000000.kfs"), "segment");
        assert_eq!(class("c/t/0/segment-00000000000000000000.index"), "index");
        assert_eq!(class("c/!fencing-check"), "other");
    }
}
