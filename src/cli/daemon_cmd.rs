//! `mpm daemon` and `mpm service install`. (Owned by the daemon work.)

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::GlobalArgs;

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Socket path (default `$MPM_SOCKET`, then `$XDG_RUNTIME_DIR/mpm/mpm.sock`).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// State folder: database and session output (default `$XDG_STATE_HOME/mpm`).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Write the systemd user unit to `~/.config/systemd/user/mpm.service`.
    Install,
}

pub fn daemon(_g: &GlobalArgs, _a: DaemonArgs) -> anyhow::Result<i32> {
    anyhow::bail!("mpm daemon is not built yet")
}

pub fn service(_g: &GlobalArgs, _c: ServiceCommand) -> anyhow::Result<i32> {
    anyhow::bail!("mpm service is not built yet")
}
