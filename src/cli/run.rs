//! `mpm run`: one supervised agent session in this terminal, and the hidden `mpm __watchdog`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use super::{GlobalArgs, load_config};
use crate::config::Overrides;
use crate::config::paths;
use crate::events::{Bus, Context, EventsFile};
use crate::governor::{RestartPolicy, resume_argv};
use crate::protocol::{RunFlags, RunSpec};
use crate::pty::PtyError;
use crate::session::{SessionError, SessionOptions, run_in_terminal};
use crate::store::Store;
use crate::supervisor::{Supervisor, SupervisorOptions};

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

    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    // With a daemon running, the daemon hosts the session (so it survives a closed terminal) and
    // this process is its terminal. `--record` needs the bytes here, so it stays in-process.
    if !a.no_daemon && a.record.is_none() {
        let socket = super::daemon_cmd::daemon_socket(None, cfg.daemon.socket.as_deref());
        match crate::daemon::client::Client::connect(&socket) {
            Ok(client) => {
                let spec = daemon_spec(g, &a, &command, &cwd, profile)?;
                return super::client::run_in_daemon(client, spec);
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
        bus.add_sink(Arc::new(sink));
    }
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

    let (cols, rows) = {
        let size = crate::pty::terminal::user_size();
        (size.cols, size.rows)
    };
    let output_dir = cfg
        .executor
        .output_dir
        .clone()
        .unwrap_or_else(|| state_dir.join("sessions"))
        .join(&bus.context().session);
    let mut supervisor = Supervisor::start(SupervisorOptions {
        config: cfg,
        patterns: &g.patterns,
        bus: bus.clone(),
        output_dir,
        cols,
        rows,
        cwd: cwd.clone(),
        engine: None,
        governor: None,
    })?;
    let command = supervisor.prepare_argv(command, profile.transcript);

    // The main session runs once, or again after the governor stopped it at its hard limit when
    // `limits.restart.enabled` (claude continues its conversation with `--resume <id>`).
    let mut restart = RestartPolicy::new(&cfg.limits.restart);
    let mut command = command;
    let result = loop {
        let mut opts = SessionOptions::new(command.clone(), bus.clone());
        opts.env = profile
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        opts.env.extend(supervisor.child_env());
        opts.grace = Duration::from_secs_f64(cfg.run.grace_secs.max(0.0));
        opts.tap_capacity_bytes = cfg.run.tap_capacity_bytes;
        opts.record = a.record.clone();
        opts.rlimits = Some(cfg.limits.rlimits.clone());
        opts.consumer = supervisor.consumer();
        opts.on_spawn = Some(supervisor.on_spawn());
        opts.before_exit = Some(supervisor.before_exit());
        opts.governor_mode = supervisor.governor_mode();
        match std::env::current_exe() {
            Ok(exe) => opts.watchdog_exe = Some(exe),
            Err(e) => {
                tracing::warn!(error = %e, "no orphan watchdog: cannot find mpm's own executable")
            }
        }
        let result = run_in_terminal(opts);
        let limited =
            matches!(&result, Ok(o) if o.stopped_by.is_none()) && supervisor.main_limit_reached();
        let delay = if limited {
            restart.next_delay(std::time::Instant::now())
        } else {
            None
        };
        match delay {
            Some(delay) => {
                eprintln!(
                    "mpm: the agent was stopped at its resource limit; restarting in {:.1}s",
                    delay.as_secs_f64()
                );
                std::thread::sleep(delay);
                if let Some(id) = supervisor.claude_session() {
                    command = resume_argv(&command, id);
                }
            }
            None => break result,
        }
    };
    let summaries = supervisor.finish();
    bus.close();
    let outcome = match result {
        Ok(o) => o,
        Err(e) => return Ok(report_start_failure(&e, &command, &cfg.profile, &a)),
    };
    if cfg.run.summary && !summaries.is_empty() {
        // The terminal is the user's again: one line per delegation.
        eprint!("{}", crate::executor::format_summary(&summaries));
    }
    Ok(outcome.status)
}

/// The daemon's view of this `mpm run`: argv, absolute paths, the profile's environment.
fn daemon_spec(
    g: &GlobalArgs,
    a: &RunArgs,
    command: &[String],
    cwd: &std::path::Path,
    profile: &crate::config::Profile,
) -> anyhow::Result<RunSpec> {
    let abs = |p: &PathBuf| cwd.join(p).display().to_string();
    let size = crate::pty::terminal::user_size();
    Ok(RunSpec {
        argv: command.to_vec(),
        cwd: cwd.display().to_string(),
        env: profile
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        cols: size.cols,
        rows: size.rows,
        flags: RunFlags {
            no_detect: a.no_detect,
            no_exec: a.no_exec,
            profile: g.profile.clone(),
            config: g.config.as_ref().map(abs),
            patterns: g.patterns.iter().map(abs).collect(),
            events_file: a.events_file.as_ref().map(abs),
        },
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
