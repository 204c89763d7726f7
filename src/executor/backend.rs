//! Executor backends: what turns an admitted delegation into a finished one.
//!
//! The executor keeps admission, scheduling, bookkeeping, output files and events whatever runs a
//! delegation; a backend only *runs* it. Two exist:
//! - `local` (the default): [`run_attempts`] here, in this process: argv from the registry,
//!   attempts with retries, timeout, process-group stop, governor hook; with `isolation: worktree`
//!   inside a fresh worktree ([`isolate`] / [`release`]).
//! - `nats`: [`crate::executor::nats::NatsBackend`], which publishes a job to JetStream; an
//!   `mpm worker` elsewhere runs the very same [`run_attempts`] and streams the output back.
//!
//! A remote backend implements [`Backend`]; the executor holds `None` for local (no indirection on
//! the default path).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::watch;

use super::SpawnGuard;
use super::argv;
use super::registry::Agent;
use super::run::{self, AttemptEnd, AttemptSpec};
use crate::config::{Isolation, WorktreeConfig};
use crate::worktree::{self, Outcome, Source, Worktree};

/// One delegation as a backend sees it.
#[derive(Debug, Clone)]
pub(crate) struct RunSpec {
    pub delegation_id: String,
    pub session: String,
    pub agent: Agent,
    pub task: String,
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
    pub grace: Duration,
    /// Added to the agent's environment (e.g. `MPM_DEPTH` for nested sessions' budgets).
    pub extra_env: Vec<(String, String)>,
    /// The whole environment a local attempt starts from (a daemon-hosted session's client's,
    /// [`super::SessionOrigin`]); `None`: this process's. Never sent to a worker.
    pub base_env: Option<std::sync::Arc<[(String, String)]>>,
    /// Bytes kept per output stream (`executor.max_output_bytes`).
    pub max_output_bytes: u64,
    /// `delegation.progress` reporting (None: off). Local runs feed it from their ticker; the NATS
    /// backend from the worker's `progress` messages (a worker's own ticker feeds those).
    pub progress: Option<super::progress::Monitor>,
}

/// How a backend's run ended.
#[derive(Debug, Clone)]
pub(crate) struct RunEnd {
    pub end: AttemptEnd,
    pub attempts: u32,
    /// The worker that ran it (remote backends).
    pub worker: Option<String>,
    pub worktree: Option<Outcome>,
    /// Refused before anything ran (e.g. not a git repository, a worker without the agent).
    pub rejected: Option<String>,
}

/// Called with (pid, worker) when an attempt started; its guard lives as long as the attempt.
pub(crate) type OnStart<'a> = Box<dyn FnMut(u32, Option<&str>) -> Option<SpawnGuard> + Send + 'a>;

/// A backend that runs delegations somewhere else.
pub(crate) trait Backend: Send + Sync {
    /// Run one delegation to its end; `cancel` flips to true when it must stop.
    fn run<'a>(
        &'a self,
        spec: RunSpec,
        cancel: watch::Receiver<bool>,
        on_start: OnStart<'a>,
    ) -> Pin<Box<dyn Future<Output = RunEnd> + Send + 'a>>;
}

/// Run a delegation's attempts here: argv from the agent's template (the task one element),
/// `MPM_*` environment, per-attempt timeout, retries of transient exit codes with backoff.
/// Returns the last attempt's end and the number of attempts.
pub(crate) async fn run_attempts(
    spec: &RunSpec,
    cwd: Option<PathBuf>,
    cancel: &mut watch::Receiver<bool>,
    mut on_start: impl FnMut(u32) -> Option<SpawnGuard>,
) -> (AttemptEnd, u32) {
    let agent = &spec.agent;
    let task = super::AgentRegistry::task_text(agent, &spec.task);
    let values = argv::Values {
        task: &task,
        role: &agent.role,
        agent: &agent.name,
        session: &spec.session,
        delegation_id: &spec.delegation_id,
    };
    let mut attempts = 0u32;
    let argv = match argv::expand(&agent.argv, &values) {
        Err(e) => return (AttemptEnd::SpawnFailed(e.to_string()), 0),
        Ok(a) => a,
    };
    let mut env = agent.env.clone();
    env.insert("MPM_SESSION".into(), spec.session.clone());
    env.insert("MPM_DELEGATION_ID".into(), spec.delegation_id.clone());
    env.insert("MPM_AGENT".into(), agent.name.clone());
    env.extend(spec.extra_env.iter().cloned());
    let attempt = AttemptSpec {
        argv,
        cwd,
        base_env: spec.base_env.clone(),
        env,
        stdout_path: spec.stdout_path.clone(),
        stderr_path: spec.stderr_path.clone(),
        timeout: agent.timeout(),
        grace: spec.grace,
        rlimits: agent.rlimits.clone(),
        max_output_bytes: spec.max_output_bytes,
        progress: spec.progress.clone(),
    };
    let retry = &agent.retry;
    let end = loop {
        if *cancel.borrow() {
            break AttemptEnd::Cancelled;
        }
        attempts += 1;
        // Kept for the attempt's lifetime (e.g. the governor's watch of the tree).
        let mut _guard: Option<SpawnGuard> = None;
        let end = run::run_attempt(&attempt, attempts, cancel, |pid| {
            _guard = on_start(pid);
        })
        .await;
        let transient = matches!(end, AttemptEnd::Exited(c)
            if c != 0 && retry.transient_exit_codes.contains(&c))
            && !super::cancel::requested(&spec.delegation_id);
        if !transient || attempts > retry.max_retries {
            break end;
        }
        let backoff = Duration::from_millis(
            retry
                .backoff_ms
                .saturating_mul(1u64 << (attempts - 1).min(20)),
        );
        tracing::info!(delegation = %spec.delegation_id, attempt = attempts, ?backoff, ?end, "transient failure; retrying");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = run::cancelled(cancel) => break AttemptEnd::Cancelled,
        }
    };
    (end, attempts)
}

/// For an agent with `isolation: worktree`: make its worktree (off the async threads). `Ok(None)`
/// for `isolation: none`; `Err` = reject the delegation with this reason.
pub(crate) async fn isolate(
    agent: &Agent,
    delegation_id: &str,
    source: impl FnOnce() -> Source + Send + 'static,
    root: PathBuf,
    cfg: &WorktreeConfig,
) -> Result<Option<Worktree>, String> {
    if agent.isolation != Isolation::Worktree {
        // Not even the source is looked at: finding it runs git, a process per delegation.
        return Ok(None);
    }
    let (name, id, cfg) = (agent.name.clone(), delegation_id.to_string(), cfg.clone());
    tokio::task::spawn_blocking(move || worktree::prepare(&source(), &root, &name, &id, &cfg))
        .await
        .map_err(|e| format!("worktree preparation panicked: {e}"))?
        .map(Some)
        .map_err(|e| e.to_string())
}

/// The source of a local delegation's worktree: the agent's `cwd`, else `session_cwd` (where the
/// user ran `mpm run`), else this process's directory.
pub(crate) fn local_source(agent: &Agent, session_cwd: Option<&Path>) -> Source {
    let dir = agent
        .cwd
        .clone()
        .or_else(|| session_cwd.map(Path::to_path_buf))
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_else(|| PathBuf::from("."));
    Source {
        repo: dir.clone(),
        base: None,
        include_from: worktree::toplevel(&dir).ok(),
    }
}

/// Finish an isolated delegation's worktree (teardown, commit, record); errors are logged and
/// reported in the outcome's absence.
pub(crate) async fn release(
    wt: Worktree,
    agent: &str,
    delegation_id: &str,
    cfg: &WorktreeConfig,
) -> Option<Outcome> {
    let (agent, id, cfg) = (agent.to_string(), delegation_id.to_string(), cfg.clone());
    let res = tokio::task::spawn_blocking(move || worktree::finish(&wt, &agent, &id, &cfg)).await;
    match res {
        Ok(Ok(o)) => Some(o),
        Ok(Err(e)) => {
            tracing::warn!(delegation = %delegation_id, error = %e, "cannot finish the delegation's worktree");
            None
        }
        Err(e) => {
            tracing::warn!(delegation = %delegation_id, error = %e, "worktree finish panicked");
            None
        }
    }
}

/// Append the worktree section to `<id>.result.md` (creating it from the stdout when the run wrote
/// no result); returns the result file.
pub(crate) fn record_outcome(
    state_dir: &Path,
    delegation_id: &str,
    output_path: Option<&Path>,
    outcome: &Outcome,
) -> Option<PathBuf> {
    let result = state_dir.join(format!("{delegation_id}.result.md"));
    let mut text = match output_path {
        Some(p) if p == result => std::fs::read_to_string(p).unwrap_or_default(),
        _ => String::new(),
    };
    text.push_str(&outcome.markdown());
    match std::fs::write(&result, text) {
        Ok(()) => Some(result),
        Err(e) => {
            tracing::warn!(error = %e, "cannot write the worktree section of the result");
            None
        }
    }
}
