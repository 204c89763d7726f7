//! Project configuration is untrusted until the user says otherwise (direnv's and mise's model).
//!
//! A cloned repository's `./.mpm/config.yaml` could otherwise decide what a bare `mpm run`
//! executes (`profiles.<p>.command`) and what delegations run (`agents.<a>.argv`), or slip in an
//! environment (`LD_PRELOAD`) or hooks. So a project file that sets any key of [`DANGEROUS`] is
//! ignored, with a one-line notice, until `mpm trust [PATH]` records the folder with the SHA-256
//! of that file. A changed file needs trust again; `mpm trust --revoke PATH` forgets a folder.
//! A project file that only tunes harmless values (limits, parallelism, patterns) applies as is.
//!
//! The record is `$XDG_STATE_HOME/mpm/trusted.json` (0600 in a 0700 folder): a JSON object from
//! canonical folder path to the file's hex digest. It lives in state, where no project file can
//! reach, and is rewritten atomically (temporary file + rename).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The project configuration file, relative to the project folder.
pub(crate) const PROJECT_FILE: &str = ".mpm/config.yaml";

/// Keys that make a project file need trust (`*` = any name). They choose programs, their argv,
/// their environment or their working folder.
pub(crate) const DANGEROUS: &[&str] = &[
    "profiles.*.command",
    "profiles.*.env",
    "profiles.*.args",
    "profiles.*.headless",
    "agents.*.argv",
    "agents.*.env",
    "agents.*.cwd",
    "hooks",
];

#[derive(Debug, thiserror::Error)]
pub(crate) enum TrustError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a trust record ({message}); remove it to start over", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("{}: no {PROJECT_FILE} to trust", folder.display())]
    NothingToTrust { folder: PathBuf },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrustError + '_ {
    move |source| TrustError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where the trust record lives.
pub(crate) fn record_path() -> PathBuf {
    crate::config::paths::state_dir().join("trusted.json")
}

/// The hex SHA-256 of `bytes`.
pub(crate) fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The trusted folders and the digest of their project file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct TrustRecord {
    pub folders: BTreeMap<String, String>,
}

impl TrustRecord {
    /// Read the record at `path` (empty when there is none).
    pub(crate) fn load(path: &Path) -> Result<TrustRecord, TrustError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(io(path)(e)),
        };
        let folders = serde_json::from_str(&text).map_err(|e| TrustError::Corrupt {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(TrustRecord { folders })
    }

    /// Write the record to `path` atomically, 0600 in a 0700 folder.
    pub(crate) fn save(&self, path: &Path) -> Result<(), TrustError> {
        if let Some(dir) = path.parent() {
            crate::config::paths::create_private_dir(dir).map_err(io(dir))?;
        }
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(&self.folders).unwrap_or_else(|_| "{}".into());
        let mut f = crate::config::paths::private_file()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))
    }

    /// Whether `folder` is trusted with a project file of exactly `bytes`.
    pub(crate) fn allows(&self, folder: &Path, bytes: &[u8]) -> bool {
        self.folders
            .get(&folder.display().to_string())
            .is_some_and(|d| *d == digest(bytes))
    }
}

/// The keys of [`DANGEROUS`] that `layer` (a parsed configuration file) sets, as dotted paths.
pub(crate) fn dangerous_keys(layer: &Value) -> Vec<String> {
    let mut found = Vec::new();
    for pattern in DANGEROUS {
        collect(
            layer,
            &pattern.split('.').collect::<Vec<_>>(),
            String::new(),
            &mut found,
        );
    }
    found
}

fn collect(v: &Value, pattern: &[&str], path: String, out: &mut Vec<String>) {
    let Some((head, rest)) = pattern.split_first() else {
        if !v.is_null() {
            out.push(path);
        }
        return;
    };
    let Some(map) = v.as_object() else { return };
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    if *head == "*" {
        for (k, child) in map {
            collect(child, rest, join(k), out);
        }
    } else if let Some(child) = map.get(*head) {
        collect(child, rest, join(head), out);
    }
}

/// Decide whether the project file at `folder/.mpm/config.yaml` may be loaded. `Ok(None)`: load
/// it (absent, harmless, or trusted with this content). `Ok(Some(notice))`: skip it and say so.
/// A file that does not parse is loaded, so its error is reported with its position as usual.
pub(crate) fn check_project(folder: &Path, record: &Path) -> Result<Option<String>, TrustError> {
    let file = folder.join(PROJECT_FILE);
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&file)(e)),
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return Ok(None);
    };
    let Ok(layer) = serde_saphyr::from_str::<Value>(text) else {
        return Ok(None);
    };
    let keys = dangerous_keys(&layer);
    if keys.is_empty() {
        return Ok(None);
    }
    let canonical = folder.canonicalize().map_err(io(folder))?;
    if TrustRecord::load(record)?.allows(&canonical, &bytes) {
        return Ok(None);
    }
    let known = TrustRecord::load(record)?
        .folders
        .contains_key(&canonical.display().to_string());
    let why = if known {
        "changed since it was trusted"
    } else {
        "not trusted"
    };
    Ok(Some(format!(
        "ignoring {PROJECT_FILE} ({why}; it sets {}): run `mpm trust` to allow it",
        keys.join(", ")
    )))
}

/// Trust `folder`'s project file as it is now. Returns the canonical folder and the digest.
pub(crate) fn trust(folder: &Path, record: &Path) -> Result<(PathBuf, String), TrustError> {
    let canonical = folder.canonicalize().map_err(io(folder))?;
    let file = canonical.join(PROJECT_FILE);
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(TrustError::NothingToTrust { folder: canonical });
        }
        Err(e) => return Err(io(&file)(e)),
    };
    let d = digest(&bytes);
    let mut r = TrustRecord::load(record)?;
    r.folders.insert(canonical.display().to_string(), d.clone());
    r.save(record)?;
    Ok((canonical, d))
}

/// Forget `folder`. Returns whether it was trusted. A folder that no longer exists is matched
/// by its path as given (made absolute).
pub(crate) fn revoke(folder: &Path, record: &Path) -> Result<bool, TrustError> {
    let key = folder
        .canonicalize()
        .or_else(|_| std::path::absolute(folder))
        .map_err(io(folder))?;
    let mut r = TrustRecord::load(record)?;
    let was = r.folders.remove(&key.display().to_string()).is_some();
    if was {
        r.save(record)?;
    }
    Ok(was)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangerous_keys_are_found_by_pattern() {
        let v: Value = serde_saphyr::from_str(
            "profiles:\n  claude:\n    command: [x]\n    screen: true\nagents:\n  qa:\n    timeout_secs: 3\n  eng:\n    argv: [y]\nexecutor:\n  max_parallel: 2\n",
        )
        .unwrap();
        assert_eq!(
            dangerous_keys(&v),
            vec!["profiles.claude.command", "agents.eng.argv"]
        );
        // A profile's added flags and headless form are programs' argv too; choosing a profile
        // (among trusted ones) is not.
        let v: Value = serde_saphyr::from_str(
            "profiles:\n  codex:\n    args: [x]\n    headless: [y, '{task}']\n    headless_output: text\nagents:\n  qa:\n    profile: codex\n",
        )
        .unwrap();
        assert_eq!(
            dangerous_keys(&v),
            vec!["profiles.codex.args", "profiles.codex.headless"]
        );
        let harmless: Value = serde_saphyr::from_str("limits:\n  interval_ms: 100\n").unwrap();
        assert!(dangerous_keys(&harmless).is_empty());
    }

    #[test]
    fn untrusted_then_trusted_then_changed_then_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("p");
        std::fs::create_dir_all(project.join(".mpm")).unwrap();
        let record = dir.path().join("state/trusted.json");
        let file = project.join(PROJECT_FILE);
        std::fs::write(&file, "profiles:\n  claude:\n    command: [evil]\n").unwrap();
        let notice = check_project(&project, &record).unwrap().expect("ignored");
        assert!(notice.contains("not trusted") && notice.contains("profiles.claude.command"));
        trust(&project, &record).unwrap();
        assert_eq!(check_project(&project, &record).unwrap(), None);
        std::fs::write(&file, "profiles:\n  claude:\n    command: [eviler]\n").unwrap();
        let notice = check_project(&project, &record).unwrap().expect("ignored");
        assert!(notice.contains("changed"), "{notice}");
        assert!(revoke(&project, &record).unwrap());
        assert!(TrustRecord::load(&record).unwrap().folders.is_empty());
    }
}
