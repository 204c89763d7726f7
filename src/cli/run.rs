//! `mpm run`: one supervised agent session in this terminal. (Owned by the pty/session work.)

use std::path::PathBuf;

use clap::Args;

use super::GlobalArgs;

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
    /// Session leader whose tree to stop when the parent goes away.
    #[arg(long)]
    pub root: i32,
    /// Grace period between SIGTERM and SIGKILL, seconds.
    #[arg(long, default_value_t = 3.0)]
    pub grace: f64,
}

pub fn run(_g: &GlobalArgs, _a: RunArgs) -> anyhow::Result<i32> {
    anyhow::bail!("mpm run is not built yet")
}

pub fn watchdog(_a: WatchdogArgs) -> anyhow::Result<i32> {
    anyhow::bail!("not built yet")
}
