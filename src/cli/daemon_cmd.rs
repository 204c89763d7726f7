//! `mpm daemon` and `mpm service install`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::GlobalArgs;
use super::output::{errln, outln};
use crate::config::{Overrides, paths};
use crate::daemon::{Daemon, DaemonOptions, SessionBackend};

#[derive(Debug, Args)]
pub(crate) struct DaemonArgs {
    /// Socket path (default `$MPM_SOCKET`, then `$XDG_RUNTIME_DIR/mpm/mpm.sock`).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// State folder: database and session output (default `$XDG_STATE_HOME/mpm`).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ServiceCommand {
    /// Write the systemd user unit to `~/.config/systemd/user/mpm.service`.
    Install(ServiceInstallArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ServiceInstallArgs {
    /// Overwrite an existing unit file.
    #[arg(long)]
    pub force: bool,
}

/// The unit file shipped in the repository; `service install` fills in the binary path.
pub(super) const UNIT_TEMPLATE: &str = include_str!("../../systemd/mpm.service");

/// The session backend the daemon hosts sessions with: PTY sessions with the full supervisor.
/// `max_parallel` bounds the sub-agents of all its sessions together.
fn backend(patterns: &[PathBuf], state_dir: &Path, max_parallel: usize) -> Arc<dyn SessionBackend> {
    Arc::new(
        crate::daemon::pty_backend::PtyBackend::new(patterns.to_vec(), state_dir.to_path_buf())
            .with_max_parallel(max_parallel),
    )
}

/// The daemon socket (daemon and clients alike): `--socket`, `MPM_SOCKET`, `daemon.socket`, then
/// the default `$XDG_RUNTIME_DIR/mpm/mpm.sock`.
pub(super) fn daemon_socket(flag: Option<&Path>, configured: Option<&Path>) -> PathBuf {
    if flag.is_none()
        && std::env::var_os("MPM_SOCKET").is_none_or(|v| v.is_empty())
        && let Some(c) = configured
    {
        return c.to_path_buf();
    }
    paths::socket(flag)
}

pub(super) fn daemon(g: &GlobalArgs, a: DaemonArgs) -> anyhow::Result<i32> {
    crate::daemon::limit_malloc_arenas();
    let cfg = super::load_config(g, Overrides::default())?.config;
    if let Err(msg) = crate::logging::init(&cfg.log, g.log_stderr) {
        errln!("mpm: {msg}");
    }
    let socket = daemon_socket(a.socket.as_deref(), cfg.daemon.socket.as_deref());
    let state_dir = a
        .state_dir
        .or(cfg.daemon.state_dir.clone())
        .unwrap_or_else(paths::state_dir);
    let mut opts = DaemonOptions::new(socket.clone(), state_dir.clone());
    opts.private_dir = socket.parent() == Some(paths::runtime_dir().as_path());
    opts.max_frame_bytes = cfg.daemon.max_frame_bytes.max(4096);
    opts.retention_days = cfg.daemon.retention_days;
    opts.stop_grace = Duration::from_secs_f64(cfg.daemon.stop_grace_secs.clamp(0.0, 3600.0));
    opts.backend = backend(&g.patterns, &state_dir, cfg.executor.max_parallel);
    opts.handle_signals = true;
    let d = Daemon::bind(opts).context("cannot start the daemon")?;
    d.run().context("daemon failed")?;
    Ok(0)
}

/// The unit text with `ExecStart` pointing at `exe`.
pub(super) fn unit_for(exe: &Path) -> String {
    UNIT_TEMPLATE
        .lines()
        .map(|l| {
            if l.starts_with("ExecStart=") {
                format!(
                    "ExecStart={} daemon",
                    systemd_quote(&exe.display().to_string())
                )
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Quote a path for a unit file command line when it needs it (spaces, quotes, `%`, `$`, `\`).
fn systemd_quote(s: &str) -> String {
    let s = s.replace('%', "%%").replace('$', "$$");
    if s.chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\\' || c == '\'')
    {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s
    }
}

pub(super) fn service(_g: &GlobalArgs, c: ServiceCommand) -> anyhow::Result<i32> {
    let ServiceCommand::Install(a) = c;
    let exe = std::env::current_exe().context("cannot find this executable's path")?;
    let dir = paths::config_dir()
        .parent()
        .map(|p| p.join("systemd/user"))
        .context("no configuration folder")?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("mpm.service");
    let text = unit_for(&exe);
    if path.exists() && !a.force && std::fs::read_to_string(&path).ok().as_deref() != Some(&text) {
        return Err(super::UsageError(format!(
            "{} exists and differs; use --force to overwrite",
            path.display()
        ))
        .into());
    }
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    let user = std::env::var("USER").unwrap_or_else(|_| "$USER".into());
    outln!("wrote {}", path.display())?;
    outln!("start it now and at every login:")?;
    outln!("  systemctl --user daemon-reload && systemctl --user enable --now mpm")?;
    outln!("user services stop at logout; to keep sessions running after you log out:")?;
    outln!("  loginctl enable-linger {user}")?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_points_at_the_binary_and_keeps_the_rest() {
        let u = unit_for(Path::new("/opt/my tools/mpm"));
        assert!(
            u.contains("ExecStart=\"/opt/my tools/mpm\" daemon\n"),
            "{u}"
        );
        for line in [
            "Type=notify",
            "KillMode=control-group",
            "Restart=on-failure",
            "Delegate=yes",
        ] {
            assert!(u.lines().any(|l| l == line), "missing {line}");
        }
        assert_eq!(u.matches("ExecStart=").count(), 1);
    }
}
