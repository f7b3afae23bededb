//! The start-up check that the object store honours conditional writes.
//!
//! Fencing rests on them: a segment key is written with `If-None-Match: *`,
//! so a stale broker's upload fails instead of replacing an acknowledged
//! segment, and merges replace objects with `If-Match`. A store that ignores
//! these headers (some S3-compatible servers, or an old version of one)
//! answers success and overwrites. The flusher must refuse to run on it.

use bytes::Bytes;

use crate::object_store::{ObjectStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The store does not fence: the flusher must not run on it.
    #[error("{0}")]
    NotFencing(String),
    /// The check could not be made (store unreachable, permissions): retry.
    #[error("the conditional-write check could not run: {0}")]
    Unavailable(StoreError),
}

/// Writes a probe object under `prefix` and checks that a second create-once
/// write and a replace with a wrong ETag are both refused; removes the probe.
pub async fn check_conditional_writes(
    store: &dyn ObjectStore,
    prefix: &str,
    nonce: u64,
) -> Result<(), CheckError> {
    let key = format!("{prefix}/_kafscale/conditional-write-check/{nonce:016x}");
    let result = probe(store, &key).await;
    // Best effort: a leftover probe object is harmless (nothing reads it).
    let _ = store.delete(std::slice::from_ref(&key)).await;
    result
}

async fn probe(store: &dyn ObjectStore, key: &str) -> Result<(), CheckError> {
    let describe = store.describe();
    store
        .put_if_absent(key, Bytes::from_static(b"first"))
        .await
        .map_err(CheckError::Unavailable)?;
    match store
        .put_if_absent(key, Bytes::from_static(b"second"))
        .await
    {
        Err(StoreError::AlreadyExists(_)) => {}
        Ok(()) => {
            return Err(CheckError::NotFencing(format!(
                "{describe} overwrote an existing object although the write carried `If-None-Match: *`; \
                 Kafscale fences stale brokers with that condition, so on this store an acknowledged segment could be overwritten. \
                 Use a store that implements conditional PUT (AWS S3 does, as do current MinIO releases)"
            )))
        }
        Err(e) => return Err(CheckError::Unavailable(e)),
    }
    match store
        .put_replacing(key, Bytes::from_static(b"third"), Some("\"kafscale-wrong-etag\""))
        .await
    {
        Err(StoreError::Changed(_)) => Ok(()),
        Ok(()) => Err(CheckError::NotFencing(format!(
            "{describe} replaced an object although the write carried `If-Match` with an ETag the object does not have; \
             segment merging relies on that condition, so on this store a merge could replace data it never read. \
             Use a store that supports conditional writes"
        ))),
        Err(e) => Err(CheckError::Unavailable(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object_store::{LocalDirStore, ObjectInfo};
    use async_trait::async_trait;

    /// A store that writes unconditionally, as a store ignoring the headers does.
    struct Careless(LocalDirStore);

    #[async_trait]
    impl ObjectStore for Careless {
        async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
            self.0.put_replacing(key, body, None).await
        }
        async fn put_replacing(
            &self,
            key: &str,
            body: Bytes,
            _expected_etag: Option<&str>,
        ) -> Result<(), StoreError> {
            self.0.put_replacing(key, body, None).await
        }
        async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
            self.0.get(key).await
        }
        async fn get_range(
            &self,
            key: &str,
            range: std::ops::Range<u64>,
        ) -> Result<Bytes, StoreError> {
            self.0.get_range(key, range).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
            self.0.list(prefix).await
        }
        async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
            self.0.delete(keys).await
        }
        async fn probe(&self) -> Result<(), StoreError> {
            Ok(())
        }
        fn describe(&self) -> String {
            "careless store".into()
        }
    }

    #[tokio::test]
    async fn a_store_that_fences_passes_and_one_that_overwrites_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let honest = LocalDirStore::new(dir.path()).unwrap();
        check_conditional_writes(&honest, "p", 1).await.unwrap();
        assert!(
            honest.list("p/").await.unwrap().is_empty(),
            "the probe object is removed"
        );
        let careless = Careless(LocalDirStore::new(dir.path()).unwrap());
        match check_conditional_writes(&careless, "p", 2).await {
            Err(CheckError::NotFencing(why)) => assert!(why.contains("If-None-Match"), "{why}"),
            other => panic!("a store that overwrites passed the check: {other:?}"),
        }
    }
}
