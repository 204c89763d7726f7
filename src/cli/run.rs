//! `mpm run`: one supervised agent session in this terminal, and the hidden `mpm __watchdog`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use super::{GlobalArgs, load_config};
use crate::config::Overrides;
use crate::events::{Bus, Context, EventsFile};
use crate::pty::PtyError;
use crate::session::{SessionError, SessionOptions, SessionOutcome, run_in_terminal};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Append every event of the session to PATH as JSON lines (flushed per event).
    #[arg(long, value_name = "PATH")]
    pub events_file: Option<PathBuf>,
    /// Record the session as an asciicast v2 file (`asciinema play` replays it).
    #[arg(long, value_name = "PATH")]
    pub record: Option<PathBuf>,
    /// Pass-through only: no text pipeline, no detections.
    #[arg(long)]
    pub no_detect: bool,
    /// Detect and record delegations, but never run them.
    #[arg(long)]
    pub no_exec: bool,
    /// Run in this process even when a daemon is running.
    #[arg(long)]
    pub no_daemon: bool,
    /// The agent command and its arguments (default: the profile's command).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct WatchdogArgs {
    /// Session leader whose tree to stop when the parent goes away (normally sent on stdin).
    #[arg(long)]
    pub root: Option<i32>,
    /// Grace period between SIGTERM and SIGKILL, seconds.
    #[arg(long, default_value_t = 3.0)]
    pub grace: f64,
}

pub fn run(g: &GlobalArgs, a: RunArgs) -> anyhow::Result<i32> {
    let mut overrides = Overrides::default();
    if a.no_detect {
        overrides.set("run.detect", false, "--no-detect");
    }
    if a.no_exec {
        overrides.set("run.exec", false, "--no-exec");
    }
    let layered = load_config(g, overrides)?;
    let cfg = &layered.config;
    // Before any session owns the terminal: a log file that cannot be opened is said once, here.
    if let Err(e) = crate::logging::init(&cfg.log, g.log_stderr) {
        eprintln!("mpm: {e} (logs are dropped)");
    }
    let profile = cfg.active_profile()?;
    let command = if a.command.is_empty() {
        profile.command.clone()
    } else {
        a.command.clone()
    };
    if command.is_empty() {
        return Err(super::UsageError(format!(
            "no command: profile {:?} has an empty `command`; set profiles.{}.command or run `mpm run -- CMD`",
            cfg.profile, cfg.profile
        ))
        .into());
    }

    let bus = Bus::new(Context::new());
    if let Some(path) = &a.events_file {
        let sink = EventsFile::open(path)
            .with_context(|| format!("cannot open events file {}", path.display()))?;
        bus.add_sink(Arc::new(sink));
    }

    let mut opts = SessionOptions::new(command.clone(), bus.clone());
    opts.env = profile
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    opts.grace = Duration::from_secs_f64(cfg.run.grace_secs.max(0.0));
    opts.tap_capacity_bytes = cfg.run.tap_capacity_bytes;
    opts.record = a.record.clone();
    opts.rlimits = Some(cfg.limits.rlimits.clone());
    match std::env::current_exe() {
        Ok(exe) => opts.watchdog_exe = Some(exe),
        Err(e) => {
            tracing::warn!(error = %e, "no orphan watchdog: cannot find mpm's own executable")
        }
    }
    // Wiring points for the lead (detection, executor, governor):
    // - `opts.consumer = Some(Box::new(pipeline))` when `cfg.run.detect` (the text pipeline);
    // - `opts.argv_hook` to add `--session-id <uuid>` for claude (transcript tailing);
    // - `opts.on_spawn` to hand the agent's pid to the governor;
    // - executor: subscribe to `bus` before the session, drain per `executor.on_session_exit` after.
    let result = run_in_terminal(opts);
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            bus.close();
            return Ok(report_start_failure(&e, &command, &cfg.profile, &a));
        }
    };
    after_session(&outcome);
    bus.close();
    Ok(outcome.status)
}

/// Where the per-delegation summary lines go once the executor is wired (`run.summary`): the
/// terminal is the user's again here.
fn after_session(_outcome: &SessionOutcome) {}

/// Say why the agent could not start, in one line with the fix, and return the exit status.
fn report_start_failure(e: &SessionError, command: &[String], profile: &str, a: &RunArgs) -> i32 {
    let name = command.first().map(String::as_str).unwrap_or("");
    let hint = if a.command.is_empty() {
        format!("install it, put it on PATH, or set profiles.{profile}.command in the config")
    } else {
        "install it or check the name and PATH".to_string()
    };
    match e {
        SessionError::Spawn(PtyError::NotFound { .. }) => {
            eprintln!("mpm: command not found: {name} ({hint})");
        }
        SessionError::Spawn(PtyError::NotExecutable { path, reason, .. }) => {
            eprintln!("mpm: cannot execute {name} ({path}): {reason}; check its permissions");
        }
        other => eprintln!("mpm: {other}"),
    }
    e.exit_status()
}

/// The hidden `mpm __watchdog` (see `pty::watchdog`): reads pids from stdin until mpm goes away.
pub fn watchdog(a: WatchdogArgs) -> anyhow::Result<i32> {
    let _ = crate::logging::init(&crate::config::LogConfig::default(), false);
    let grace = Duration::from_secs_f64(a.grace.clamp(0.0, 3600.0));
    Ok(crate::pty::watchdog::run(a.root, grace, std::io::stdin()))
}
