//! Object storage as the flusher needs it: create-once puts, whole and ranged
//! gets, listings and deletes. S3 in production, a local directory in dev mode.

use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use thiserror::Error;

#[derive(Debug, Clone, Error)]
pub enum StoreError {
    /// A create-once put found the key taken: another writer (for example a
    /// fenced broker's flusher) got there first.
    #[error("object {0} already exists (conditional write refused)")]
    AlreadyExists(String),
    /// A conditional replace found the object changed since it was listed.
    #[error("object {0} changed since it was read (conditional replace refused)")]
    Changed(String),
    #[error("object {0} not found")]
    NotFound(String),
    /// Temporary: worth retrying (5xx, timeouts, connection errors).
    #[error("object store unavailable: {0}")]
    Unavailable(String),
    #[error("object store error: {0}")]
    Other(String),
}

impl StoreError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// When the object was written, in Unix milliseconds (0 if unknown).
    pub last_modified_ms: i64,
    /// Changes whenever the object is rewritten (S3's ETag).
    pub etag: String,
}

#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Writes `body` under `key` only if no object has that key (`If-None-Match: *`).
    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<(), StoreError>;
    /// Writes `body` under `key` over whatever is there; with `expected_etag`,
    /// only if the object still has that ETag (`If-Match`), else `Changed`.
    async fn put_replacing(
        &self,
        key: &str,
        body: Bytes,
        expected_etag: Option<&str>,
    ) -> Result<(), StoreError>;
    async fn get(&self, key: &str) -> Result<Bytes, StoreError>;
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError>;
    /// All objects whose key starts with `prefix`, in lexical key order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError>;
    /// Deletes the given keys; keys that do not exist are not an error.
    async fn delete(&self, keys: &[String]) -> Result<(), StoreError>;
    /// A cheap request that succeeds when the store is reachable (health probe).
    async fn probe(&self) -> Result<(), StoreError>;
    /// A short description for logs ("s3://bucket (endpoint ...)").
    fn describe(&self) -> String;
}

/// Objects as files under a root directory. Create-once is `link(2)`, which
/// refuses an existing name atomically, so it fences like S3's conditional put.
pub struct LocalDirStore {
    root: PathBuf,
}

impl LocalDirStore {
    pub fn new(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(Self { root })
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        if key.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(StoreError::Other(format!("invalid object key {key:?}")));
        }
        Ok(self.root.join(key))
    }
}

fn io_err(key: &str, e: std::io::Error) -> StoreError {
    match e.kind() {
        std::io::ErrorKind::NotFound => StoreError::NotFound(key.to_string()),
        std::io::ErrorKind::AlreadyExists => StoreError::AlreadyExists(key.to_string()),
        _ => StoreError::Other(format!("{key}: {e}")),
    }
}

fn list_dir(root: &Path, dir: &Path, out: &mut Vec<ObjectInfo>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(".tmp-") {
            continue; // a write in progress
        }
        let path = entry.path();
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            // Deleted while listed: not part of the listing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if meta.is_dir() {
            list_dir(root, &path, out)?;
        } else {
            if let Ok(rel) = path.strip_prefix(root) {
                out.push(ObjectInfo {
                    key: rel.to_string_lossy().into_owned(),
                    size: meta.len(),
                    last_modified_ms: modified_ms(&meta),
                    etag: local_etag(&meta),
                });
            }
        }
    }
    Ok(())
}

fn modified_ms(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A local file's stand-in for an ETag: its size, modification time and inode,
/// which a replace (a new file renamed over the name) always changes.
fn local_etag(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!(
        "{:x}-{:x}.{:x}-{:x}",
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ino()
    )
}

/// Makes a directory entry change (a link, rename or new directory) in `dir`
/// durable: without this, power loss can take back a name whose file was
/// synced, and with it an acknowledged segment.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// `create_dir_all`, with every directory it creates made durable in its parent.
fn create_dir_durably(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = vec![dir];
    while let Some(parent) = missing.last().and_then(|d| d.parent()) {
        if parent.as_os_str().is_empty() || parent.is_dir() {
            break;
        }
        missing.push(parent);
    }
    std::fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        if let Some(parent) = created.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Writes `body` to a fresh temporary file beside `path`, synced, and returns its name.
fn write_temp(path: &Path, key: &str, body: &[u8]) -> Result<PathBuf, StoreError> {
    let dir = path
        .parent()
        .ok_or_else(|| StoreError::Other(key.to_string()))?;
    create_dir_durably(dir).map_err(|e| io_err(key, e))?;
    let tmp = dir.join(format!(".tmp-{}", rand_suffix()));
    std::fs::write(&tmp, body).map_err(|e| io_err(key, e))?;
    // fsync before publishing the name: an acknowledged record must survive power loss.
    if let Err(e) = std::fs::File::open(&tmp).and_then(|f| f.sync_all()) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(key, e));
    }
    Ok(tmp)
}

#[async_trait]
impl ObjectStore for LocalDirStore {
    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let key = key.to_string();
        tokio::task::spawn_blocking(move || {
            let tmp = write_temp(&path, &key, &body)?;
            let linked = std::fs::hard_link(&tmp, &path);
            let _ = std::fs::remove_file(&tmp);
            linked.map_err(|e| io_err(&key, e))?;
            // The put is acknowledged only once the new name is durable.
            let dir = path.parent().unwrap_or(Path::new("."));
            sync_dir(dir).map_err(|e| io_err(&key, e))
        })
        .await
        .map_err(|e| StoreError::Other(e.to_string()))?
    }

    async fn put_replacing(
        &self,
        key: &str,
        body: Bytes,
        expected_etag: Option<&str>,
    ) -> Result<(), StoreError> {
        // One process owns a local store (dev mode), so a process-wide lock
        // makes check-then-rename atomic.
        static REPLACE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let path = self.path(key)?;
        let key = key.to_string();
        let expected = expected_etag.map(str::to_string);
        tokio::task::spawn_blocking(move || {
            let tmp = write_temp(&path, &key, &body)?;
            let _guard = REPLACE.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(expected) = expected {
                let current = std::fs::metadata(&path).map(|m| local_etag(&m));
                if current.ok().as_deref() != Some(expected.as_str()) {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(StoreError::Changed(key));
                }
            }
            let renamed = std::fs::rename(&tmp, &path);
            if renamed.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            renamed.map_err(|e| io_err(&key, e))?;
            let dir = path.parent().unwrap_or(Path::new("."));
            sync_dir(dir).map_err(|e| io_err(&key, e))
        })
        .await
        .map_err(|e| StoreError::Other(e.to_string()))?
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let path = self.path(key)?;
        tokio::fs::read(path)
            .await
            .map(Bytes::from)
            .map_err(|e| io_err(key, e))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let path = self.path(key)?;
        let mut f = tokio::fs::File::open(path)
            .await
            .map_err(|e| io_err(key, e))?;
        let len = f.metadata().await.map_err(|e| io_err(key, e))?.len();
        let end = range.end.min(len);
        if range.start >= end {
            return Ok(Bytes::new());
        }
        f.seek(std::io::SeekFrom::Start(range.start))
            .await
            .map_err(|e| io_err(key, e))?;
        let mut buf = vec![0u8; (end - range.start) as usize];
        f.read_exact(&mut buf).await.map_err(|e| io_err(key, e))?;
        Ok(Bytes::from(buf))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || {
            // Walk only the directory part of the prefix, then filter by the rest.
            let dir = match prefix.rfind('/') {
                Some(i) => root.join(&prefix[..i]),
                None => root.clone(),
            };
            let mut out = Vec::new();
            list_dir(&root, &dir, &mut out).map_err(|e| io_err(&prefix, e))?;
            out.retain(|o| o.key.starts_with(&prefix));
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::Other(e.to_string()))?
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        for key in keys {
            match tokio::fs::remove_file(self.path(key)?).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(key, e)),
            }
        }
        Ok(())
    }

    async fn probe(&self) -> Result<(), StoreError> {
        tokio::fs::metadata(&self.root)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", self.root.display())))
    }

    fn describe(&self) -> String {
        format!("local directory {}", self.root.display())
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    /// A local store that counts whole and ranged GETs.
    pub(crate) struct Counting {
        inner: LocalDirStore,
        pub(crate) whole: AtomicUsize,
        pub(crate) ranged: AtomicUsize,
    }

    pub(crate) fn counting() -> (tempfile::TempDir, Arc<Counting>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Counting {
            inner: LocalDirStore::new(dir.path()).unwrap(),
            whole: AtomicUsize::new(0),
            ranged: AtomicUsize::new(0),
        });
        (dir, store)
    }

    #[async_trait]
    impl ObjectStore for Counting {
        async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
            self.inner.put_if_absent(key, body).await
        }
        async fn put_replacing(
            &self,
            key: &str,
            body: Bytes,
            expected_etag: Option<&str>,
        ) -> Result<(), StoreError> {
            self.inner.put_replacing(key, body, expected_etag).await
        }
        async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
            self.whole.fetch_add(1, Ordering::SeqCst);
            self.inner.get(key).await
        }
        async fn get_range(
            &self,
            key: &str,
            range: std::ops::Range<u64>,
        ) -> Result<Bytes, StoreError> {
            self.ranged.fetch_add(1, Ordering::SeqCst);
            self.inner.get_range(key, range).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
            self.inner.list(prefix).await
        }
        async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
            self.inner.delete(keys).await
        }
        async fn probe(&self) -> Result<(), StoreError> {
            Ok(())
        }
        fn describe(&self) -> String {
            "counting".into()
        }
    }

    #[tokio::test]
    async fn local_store_is_create_once_and_lists_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDirStore::new(dir.path()).unwrap();
        store
            .put_if_absent("p/t/0/b", Bytes::from_static(b"2"))
            .await
            .unwrap();
        store
            .put_if_absent("p/t/0/a", Bytes::from_static(b"1"))
            .await
            .unwrap();
        let again = store
            .put_if_absent("p/t/0/a", Bytes::from_static(b"x"))
            .await;
        assert!(matches!(again, Err(StoreError::AlreadyExists(_))));
        assert_eq!(
            store.get("p/t/0/a").await.unwrap(),
            Bytes::from_static(b"1")
        );
        let keys: Vec<_> = store
            .list("p/t/0/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, vec!["p/t/0/a", "p/t/0/b"]);
        store
            .put_if_absent("p/t/0/c", Bytes::from_static(b"hello"))
            .await
            .unwrap();
        assert_eq!(
            store.get_range("p/t/0/c", 1..3).await.unwrap(),
            Bytes::from_static(b"el")
        );
        store
            .delete(&["p/t/0/a".into(), "p/t/0/zz".into()])
            .await
            .unwrap();
        assert!(matches!(
            store.get("p/t/0/a").await,
            Err(StoreError::NotFound(_))
        ));
        assert!(store.get("../etc/passwd").await.is_err());
    }
}
