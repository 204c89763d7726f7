//! `mpm run`: one supervised agent session in this terminal, and the hidden `mpm __watchdog`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use super::output::{err, errln};
use super::{GlobalArgs, load_config};
use crate::config::Overrides;
use crate::config::paths;
use crate::events::{Bus, Context, EventsFile};
use crate::protocol::{RunClient, RunFlags, RunSpec};
use crate::session::{Session, SessionError, SessionSpec, SharedParts, run_in_terminal};
use crate::store::Store;

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Append every event of the session to PATH as JSON lines (flushed per event).
    #[arg(long, value_name = "PATH")]
    pub events_file: Option<PathBuf>,
    /// Record the session's output as an asciicast v2 file (`asciinema play` replays it).
    #[arg(long, value_name = "PATH")]
    pub record: Option<PathBuf>,
    /// Record what is typed to the agent in the `--record` file too (`"i"` events). Off by
    /// default: typed input can hold secrets, such as a password typed at a prompt.
    #[arg(long, requires = "record")]
    pub record_input: bool,
    /// Pass-through only: no text pipeline, no detections.
    #[arg(long)]
    pub no_detect: bool,
    /// Detect and record delegations, but never run them.
    #[arg(long)]
    pub no_exec: bool,
    /// Orchestration mode: intercept (default), inject (also teach the agent the protocol),
    /// observe (= --no-exec), passthrough (= --no-detect).
    #[arg(long, value_name = "MODE")]
    pub mode: Option<crate::config::OrchestrationMode>,
    /// Run in this process even when a daemon is running.
    #[arg(long)]
    pub no_daemon: bool,
    /// The keys that detach from a daemon-hosted session: `ctrl-X` or a character, comma-separated
    /// (default `run.detach_keys`, `ctrl-]`); typed twice, the agent gets them.
    #[arg(long, value_name = "KEYS")]
    pub detach_keys: Option<String>,
    /// The agent command and its arguments (default: the profile's command).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct WatchdogArgs {
    /// Session leader whose tree to stop when the parent goes away (normally sent on stdin).
    #[arg(long)]
    pub root: Option<i32>,
    /// Grace period between SIGTERM and SIGKILL, seconds.
    #[arg(long, default_value_t = 3.0)]
    pub grace: f64,
}

pub(super) fn run(g: &GlobalArgs, a: RunArgs) -> anyhow::Result<i32> {
    let mut overrides = Overrides::default();
    if a.no_detect {
        overrides.set("run.detect", false, "--no-detect");
    }
    if a.no_exec {
        overrides.set("run.exec", false, "--no-exec");
    }
    if let Some(m) = a.mode {
        overrides.set("orchestration.mode", m.as_str(), "--mode");
    }
    if let Some(k) = &a.detach_keys {
        overrides.set("run.detach_keys", k.clone(), "--detach-keys");
    }
    let layered = load_config(g, overrides)?;
    let cfg = &layered.config;
    // Before any session owns the terminal: a log file that cannot be opened is said once, here.
    if let Err(e) = crate::logging::init(&cfg.log, g.log_stderr) {
        errln!("mpm: {e} (logs are dropped)");
    }
    let profile = cfg.active_profile()?;
    let command = if a.command.is_empty() {
        // The profile's own command gets the flags mpm adds for it (codex: `--no-daemon`).
        profile.session_command()
    } else {
        cfg.with_profile_args(&a.command)
    };
    if command.is_empty() {
        return Err(super::UsageError(format!(
            "no command: profile {:?} has an empty `command`; set profiles.{}.command or run `mpm run -- CMD`",
            cfg.profile, cfg.profile
        ))
        .into());
    }

    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let keys = super::client::detach_keys(&cfg.run.detach_keys, a.detach_keys.is_some())?;
    // Not found / not executable: said here, the same way for both hosts, before anything starts.
    let profile_env: Vec<(String, String)> = profile
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Err(e) = crate::session::resolve_agent(&command, &profile_env, true) {
        return Ok(report_start_failure(
            &SessionError::Spawn(e),
            &command,
            &cfg.profile,
            &a,
        ));
    }
    // With a daemon running, the daemon hosts the session (so it survives a closed terminal) and
    // this process is its terminal. `--record` needs the bytes here, so it stays in-process.
    if !a.no_daemon && a.record.is_none() {
        let socket = super::daemon_cmd::daemon_socket(None, cfg.daemon.socket.as_deref());
        match crate::daemon::client::Client::connect(&socket) {
            Ok(client) => {
                let spec = daemon_spec(g, &a, &command, &cwd, cfg)?;
                return super::client::run_in_daemon(client, spec, &keys);
            }
            Err(e) => {
                tracing::debug!(error = %e, socket = %socket.display(), "no daemon; running in-process")
            }
        }
    }

    let bus = Bus::new(Context::new());
    if let Some(path) = &a.events_file {
        let sink = EventsFile::open(path)
            .with_context(|| format!("cannot open events file {}", path.display()))?;
        bus.add_writer("mpm-events-file", Arc::new(sink));
    }
    // User hooks on events (argv, event JSON on stdin) and notifications in this terminal.
    let event_hooks = crate::event_hooks::EventHooks::start(&bus, &cfg.hooks);
    let notifier =
        crate::notify::Notifier::start(&bus, &cfg.notify, crate::notify::stderr_terminal());
    // In-process sessions write to the daemon's store too, so `mpm tickets` sees them later.
    let state_dir = cfg
        .daemon
        .state_dir
        .clone()
        .unwrap_or_else(paths::state_dir);
    match Store::open_in(&state_dir) {
        Ok(store) => {
            if let Err(e) = Arc::new(store).add_to_bus(&bus, &command, &cwd.display().to_string()) {
                tracing::warn!(error = %e, "cannot record the session in the store");
            }
        }
        Err(e) => tracing::warn!(error = %e, "no store: events go to the events file only"),
    }
    let output_dir = crate::session::delegation_output_dir(cfg, &state_dir, &bus.context().session);
    let watchdog_exe = match std::env::current_exe() {
        Ok(exe) => Some(exe),
        Err(e) => {
            tracing::warn!(error = %e, "no orphan watchdog: cannot find mpm's own executable");
            None
        }
    };
    let spec = SessionSpec {
        argv: command.clone(),
        cwd: cwd.clone(),
        env: None,
        config: cfg.clone(),
        patterns: g.patterns.clone(),
        size: crate::pty::terminal::user_size(),
        termios: None,
        record: a.record.clone(),
        record_input: a.record_input,
        watchdog_exe,
        output_dir,
    };
    let end = match Session::assemble(spec, bus.clone(), SharedParts::default()) {
        Ok(session) => run_in_terminal(session),
        Err(e) => {
            bus.close();
            return Ok(report_start_failure(&e, &command, &cfg.profile, &a));
        }
    };
    bus.close();
    let notifier_line = notifier.main_limit_line();
    notifier.join();
    if let Some(h) = event_hooks {
        h.join();
    }
    if let Some(line) = notifier_line {
        // Which limit stopped the agent, and the figure, in one line on the user's terminal.
        errln!("{line}");
    }
    if let Err(e) = &end.result {
        return Ok(report_start_failure(e, &command, &cfg.profile, &a));
    }
    if let Some(text) = &end.summary {
        // The terminal is the user's again: one line per delegation.
        err!("{text}");
    }
    Ok(end.status())
}

/// The daemon's view of this `mpm run`: argv, absolute paths, this process's whole environment,
/// the configuration resolved here (files, `MPM_*` variables, flags) and what stdin and stdout are.
fn daemon_spec(
    g: &GlobalArgs,
    a: &RunArgs,
    command: &[String],
    cwd: &std::path::Path,
    cfg: &crate::config::Config,
) -> anyhow::Result<RunSpec> {
    use std::os::fd::AsFd as _;
    let abs = |p: &PathBuf| cwd.join(p).display().to_string();
    let size = crate::pty::terminal::user_size();
    let env = std::env::vars_os()
        .filter_map(|(k, v)| match (k.into_string(), v.into_string()) {
            (Ok(k), Ok(v)) => Some((k, v)),
            (k, _) => {
                tracing::warn!(variable = ?k, "not passed to the daemon: not UTF-8");
                None
            }
        })
        .collect();
    let config = serde_json::to_value(cfg).context("cannot encode the configuration")?;
    Ok(RunSpec {
        argv: command.to_vec(),
        cwd: cwd.display().to_string(),
        env,
        cols: size.cols,
        rows: size.rows,
        flags: RunFlags {
            no_detect: a.no_detect || a.mode == Some(crate::config::OrchestrationMode::Passthrough),
            no_exec: a.no_exec || a.mode == Some(crate::config::OrchestrationMode::Observe),
            mode: a.mode,
            profile: g.profile.clone(),
            config: g.config.as_ref().map(abs),
            patterns: g.patterns.iter().map(abs).collect(),
            events_file: a.events_file.as_ref().map(abs),
        },
        client: Some(RunClient {
            config,
            full_env: true,
            stdin_tty: crate::pty::terminal::is_tty(std::io::stdin().as_fd()),
            stdout_tty: crate::pty::terminal::is_tty(std::io::stdout().as_fd()),
        }),
    })
}

/// Say why the agent could not start, in one line with the fix, and return the exit status.
fn report_start_failure(e: &SessionError, command: &[String], profile: &str, a: &RunArgs) -> i32 {
    let name = command.first().map(String::as_str).unwrap_or("");
    let hint = if a.command.is_empty() {
        format!("install it, put it on PATH, or set profiles.{profile}.command in the config")
    } else {
        "install it or check the name and PATH".to_string()
    };
    errln!(
        "mpm: {}",
        crate::session::start_failure_message(e, name, &hint)
    );
    e.exit_status()
}

/// The hidden `mpm __watchdog` (see `pty::watchdog`): reads pids from stdin until mpm goes away.
pub(super) fn watchdog(a: WatchdogArgs) -> anyhow::Result<i32> {
    let _ = crate::logging::init(&crate::config::LogConfig::default(), false);
    let grace = Duration::from_secs_f64(a.grace.clamp(0.0, 3600.0));
    Ok(crate::pty::watchdog::run(a.root, grace, std::io::stdin()))
}
