//! `mpm worker --nats URL [--agents A,B] [--max-parallel N]`: run delegations pulled from NATS
//! JetStream (see [`crate::worker`]).

use std::path::PathBuf;

use clap::Args;

use super::{GlobalArgs, load_config};
use crate::config::Overrides;
use crate::worker::{self, WorkerOptions};

#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// NATS server URL (default `executor.nats.url`).
    #[arg(long, value_name = "URL", env = "MPM_NATS_URL")]
    pub nats: Option<String>,
    /// Agents of this worker's registry to serve (default: all valid ones).
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    pub agents: Vec<String>,
    /// Delegations running at once on this worker (default `executor.max_parallel`).
    #[arg(long, value_name = "N")]
    pub max_parallel: Option<usize>,
    /// Name shown in events as `worker` (default `<hostname>-<pid>`).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Output, mirrors and worktrees (default `$XDG_STATE_HOME/mpm/worker`).
    #[arg(long, value_name = "PATH")]
    pub state_dir: Option<PathBuf>,
}

pub(super) fn worker(g: &GlobalArgs, a: WorkerArgs) -> anyhow::Result<i32> {
    let cfg = load_config(g, Overrides::default())?.config;
    if let Err(msg) = crate::logging::init(&cfg.log, g.log_stderr) {
        eprintln!("mpm: {msg}");
    }
    let mut opts = WorkerOptions::from_config(&cfg);
    if let Some(url) = a.nats {
        opts.nats.url = url;
    }
    opts.agents = a.agents;
    if let Some(n) = a.max_parallel {
        anyhow::ensure!(n > 0, "--max-parallel must be at least 1");
        opts.max_parallel = n;
    }
    if let Some(n) = a.name {
        opts.name = n;
    }
    if let Some(d) = a.state_dir {
        opts.state_dir = d;
    }
    // Sub-agents outlive a SIGKILLed worker unless another process stops them: the same orphan
    // watchdog as `mpm run` hears of every tree this worker starts (the process registry) and
    // stops those still registered when the worker is gone, however it went.
    crate::process::registry::become_subreaper();
    let _watchdog = match std::env::current_exe() {
        Ok(exe) => crate::pty::watchdog::Watchdog::spawn(&exe, cfg.run.grace())
            .map_err(|e| tracing::warn!(error = %e, "no orphan watchdog: sub-agents may outlive a killed worker"))
            .ok(),
        Err(e) => {
            tracing::warn!(error = %e, "no orphan watchdog: cannot find mpm's own executable");
            None
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.max_parallel.clamp(1, 4))
        .enable_all()
        .thread_name("mpm-worker")
        .build()?;
    let name = opts.name.clone();
    runtime.block_on(async move {
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            let term = async {
                match term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = term => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            stop_tx.send_replace(true);
        });
        worker::run(cfg, opts, stop, |agents| {
            eprintln!("mpm worker {name} ready: agents {}", agents.join(","));
        })
        .await
    })?;
    Ok(0)
}
