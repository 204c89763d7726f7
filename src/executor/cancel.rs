//! A user's cancel of one running delegation from another process (`mpm top`'s `c`).
//!
//! The canceller leaves a marker named by the delegation id in `$XDG_RUNTIME_DIR/mpm/cancel/`,
//! then sends SIGTERM to the delegation's process group. The executor that runs it takes the
//! marker when the attempt ends: the delegation then ends `cancelled` ("cancelled by the user"),
//! not `failed`/`killed`, and is not retried. A marker for a delegation that already ended is
//! removed by the next canceller's sweep of stale markers (older than an hour).

use std::path::PathBuf;
use std::time::Duration;

/// The reason a user-cancelled delegation ends with.
pub(crate) const REASON: &str = "cancelled by the user";

/// Markers older than this belong to delegations that ended long ago.
const STALE: Duration = Duration::from_secs(3600);

fn dir() -> PathBuf {
    crate::config::paths::runtime_dir().join("cancel")
}

/// A delegation id as a file name: only `[A-Za-z0-9_-]`, so nothing escapes the folder.
fn marker(id: &str) -> Option<PathBuf> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    ok.then(|| dir().join(id))
}

/// Record that the user cancels delegation `id` (call before signalling its process group).
pub(crate) fn request(id: &str) -> std::io::Result<()> {
    let path = marker(id).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a delegation id")
    })?;
    let d = dir();
    crate::config::paths::create_private_dir(&d)?;
    if let Ok(entries) = std::fs::read_dir(&d) {
        for e in entries.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE);
            if old {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    crate::config::paths::private_file()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .map(drop)
}

/// True when the user asked to cancel `id` (the marker stays).
pub(crate) fn requested(id: &str) -> bool {
    marker(id).is_some_and(|p| p.exists())
}

/// True when the user asked to cancel `id`; the marker is removed.
pub(crate) fn take(id: &str) -> bool {
    marker(id).is_some_and(|p| std::fs::remove_file(p).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_are_not_plain_names_are_refused() {
        assert!(marker("../etc/passwd").is_none());
        assert!(marker("").is_none());
        assert!(marker("a/b").is_none());
        assert!(marker("0b6f4f1e-2c4b-4c1e-9a43-6a1d3c2b1a00").is_some());
    }
}
