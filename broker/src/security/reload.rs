//! Settings built from files that change underneath a running broker:
//! certificates cert-manager renews, a JWKS document an identity provider
//! rotates. The files are read again every interval; when their bytes
//! changed the value is rebuilt, and a build that fails (say, a certificate
//! already replaced while its key is not yet) keeps the previous value and
//! is tried again at the next change.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The current value; readers take a cheap snapshot.
pub struct Reloadable<T> {
    current: RwLock<Arc<T>>,
}

impl<T> Reloadable<T> {
    pub fn get(&self) -> Arc<T> {
        match self.current.read() {
            Ok(v) => v.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, value: T) {
        let value = Arc::new(value);
        match self.current.write() {
            Ok(mut v) => *v = value,
            Err(poisoned) => *poisoned.into_inner() = value,
        }
    }
}

fn read_all(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>, String> {
    paths
        .iter()
        .map(|p| std::fs::read(p).map_err(|e| format!("reading {}: {e}", p.display())))
        .collect()
}

/// Builds the value from `paths` now (an error here is a startup error) and
/// keeps rebuilding it as they change, for as long as the broker runs.
pub fn watch<T, B>(
    what: &'static str,
    paths: Vec<PathBuf>,
    interval: Duration,
    build: B,
) -> Result<Arc<Reloadable<T>>, String>
where
    T: Send + Sync + 'static,
    B: Fn(&[Vec<u8>]) -> Result<T, String> + Send + 'static,
{
    let mut seen = read_all(&paths)?;
    let first = build(&seen).map_err(|e| format!("{what}: {e}"))?;
    let cell = Arc::new(Reloadable {
        current: RwLock::new(Arc::new(first)),
    });
    let weak = Arc::downgrade(&cell);
    tokio::spawn(async move {
        let mut failed_on: Option<Vec<Vec<u8>>> = None;
        loop {
            tokio::time::sleep(interval).await;
            let Some(cell) = weak.upgrade() else { return };
            let contents = match read_all(&paths) {
                Ok(c) => c,
                // Mid-rotation a file can be missing for a moment.
                Err(e) => {
                    tracing::debug!(what, error = %e, "cannot read files to reload");
                    continue;
                }
            };
            if contents == seen || failed_on.as_ref() == Some(&contents) {
                continue;
            }
            match build(&contents) {
                Ok(value) => {
                    cell.set(value);
                    seen = contents;
                    failed_on = None;
                    tracing::info!(what, files = ?paths, "reloaded");
                }
                Err(e) => {
                    tracing::warn!(what, files = ?paths, error = %e, "changed files do not load; keeping the previous ones");
                    failed_on = Some(contents);
                }
            }
        }
    });
    Ok(cell)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn changes_are_picked_up_and_bad_ones_keep_the_previous_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n");
        std::fs::write(&path, "1").unwrap();
        let parse = |files: &[Vec<u8>]| {
            std::str::from_utf8(&files[0])
                .ok()
                .and_then(|s| s.parse::<u32>().ok())
                .ok_or_else(|| "not a number".to_string())
        };
        let cell = watch(
            "number",
            vec![path.clone()],
            Duration::from_millis(20),
            parse,
        )
        .unwrap();
        assert_eq!(*cell.get(), 1);
        let settle = || tokio::time::sleep(Duration::from_millis(150));
        std::fs::write(&path, "2").unwrap();
        settle().await;
        assert_eq!(*cell.get(), 2);
        std::fs::write(&path, "garbage").unwrap();
        settle().await;
        assert_eq!(*cell.get(), 2, "a file that does not load changes nothing");
        std::fs::remove_file(&path).unwrap();
        settle().await;
        std::fs::write(&path, "3").unwrap();
        settle().await;
        assert_eq!(*cell.get(), 3);

        std::fs::write(&path, "x").unwrap();
        assert!(watch("number", vec![path], Duration::from_secs(1), parse)
            .err()
            .unwrap()
            .contains("not a number"));
        assert!(watch(
            "number",
            vec![dir.path().join("missing")],
            Duration::from_secs(1),
            parse
        )
        .is_err());
    }
}
