//! Logging setup: `tracing` to a file under `$XDG_STATE_HOME/mpm/` (never into a terminal a session
//! owns), or to stderr when asked (`--log-stderr`, or `MPM_LOG_STDERR=1`, or `JOURNAL_STREAM` set, as
//! under systemd where stderr is the journal). The filter comes from `MPM_LOG`, else the config.

use std::path::PathBuf;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, paths};

/// Where logs go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LogTarget {
    Stderr,
    File(PathBuf),
}

/// Decide where logs go for this process.
pub(crate) fn target(cfg: &LogConfig, stderr_flag: bool) -> LogTarget {
    let env_stderr = std::env::var("MPM_LOG_STDERR").is_ok_and(|v| v == "1" || v == "true");
    if stderr_flag || env_stderr || std::env::var_os("JOURNAL_STREAM").is_some() {
        return LogTarget::Stderr;
    }
    LogTarget::File(
        cfg.file
            .clone()
            .unwrap_or_else(|| paths::state_dir().join("mpm.log")),
    )
}

/// Install the global subscriber. Failing to open the log file is not fatal: logs are dropped and
/// the reason is returned so the caller can say so once, before any session owns the terminal.
pub(crate) fn init(cfg: &LogConfig, stderr_flag: bool) -> Result<LogTarget, String> {
    let filter = std::env::var("MPM_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(&cfg.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let target = target(cfg, stderr_flag);
    match &target {
        LogTarget::Stderr => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .try_init();
        }
        LogTarget::File(path) => {
            if let Some(dir) = path.parent() {
                let _ = crate::config::paths::create_private_dir(dir);
            }
            let _ = crate::config::paths::make_private(path);
            let file = crate::config::paths::private_file()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open log file {}: {e}", path.display()))?;
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(Mutex::new(file))
                .with_ansi(false)
                .try_init();
        }
    }
    Ok(target)
}
