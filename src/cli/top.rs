//! `mpm top`: the live dashboard (see `crate::top`).

use std::time::Duration;

use clap::Args;

use super::GlobalArgs;
use super::client::SocketArg;

#[derive(Debug, Args)]
pub(crate) struct TopArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
}

pub(super) fn top(g: &GlobalArgs, a: TopArgs) -> anyhow::Result<i32> {
    let cfg = super::load_config(g, crate::config::Overrides::default())?.config;
    let refresh = Duration::try_from_secs_f64(a.interval.clamp(0.1, 60.0))
        .map_err(|e| super::UsageError(format!("--interval: {e}")))?;
    crate::top::run(crate::top::TopOptions {
        db: super::delegations::state_dir(&cfg).join("mpm.db"),
        socket: a.socket.path(g)?,
        exe: std::env::current_exe()?,
        refresh,
    })?;
    Ok(0)
}
