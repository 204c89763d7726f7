//! The executor: runs detected delegations as sub-agent processes, in parallel, within bounds.
//!
//! A session starts one [`Executor`] and feeds it `delegation` detections through the returned
//! [`ExecutorHandle`] (`submit` never blocks). In-process, the executor owns a small tokio runtime
//! (up to 4 worker threads, living as long as the executor) driven from one dedicated thread
//! (`mpm-executor`); in a daemon, every session's executor is a task on the daemon's one shared
//! runtime ([`runtime::ExecutorRuntime`], 2 workers). Every child is spawned from a runtime
//! worker, never from a short-lived thread, and callers on plain threads never see tokio.
//!
//! Admission happens synchronously in `submit`, in this order, each failure ending the delegation
//! right away: not a delegation / `handled_by_agent` (ignored: the detection itself is the record)
//! → agent resolution (`on_unknown_agent`; rejected names get `rejected`) → invalid argv template
//! (`rejected`) → dedup (the same agent + task by [`crate::detect::Fingerprint`], already admitted in
//! this session: dropped silently, logged) → circuit breaker open (`rejected`) → queue full
//! (`rejected`) → rate cap (`rejected`; `rate_per_minute: 0` = no cap). A delegation rejected at
//! admission gets only a `delegation.finished` with status `rejected` and a `reason`: it never
//! entered the queue, so no `delegation.queued` precedes it. An admitted one gets `queued`, then
//! `started` (once per attempt, with that attempt's pid), then one `finished`; all share one step id.
//! One that is queued and then refused at start (breaker opened meanwhile) gets `queued` then
//! `finished` `rejected`; one cancelled while queued gets `queued` then `finished` `cancelled`.
//!
//! Scheduling: FIFO, skipping delegations whose agent is at its own `max_parallel`, with at most
//! `executor.max_parallel` running. The timeout applies per attempt. Retries: an exit code in the
//! agent's `retry.transient_exit_codes` is retried after `backoff_ms * 2^(attempt-1)` up to
//! `retry.max_retries` extra attempts. Breaker: failed or timed-out delegations (after retries)
//! count as failures; see [`guards::Breaker`].
//!
//! Output: `<state_dir>/<id>.stdout`, `<id>.stderr` and, when stdout holds the sub-agent's final
//! answer in its profile's headless format ([`headless`]: claude's `result` line, codex's last
//! `agent_message`, ...), `<id>.result.md`; `output_path` points at the result file when there is one,
//! else at the stdout file, else (the sub-agent wrote nothing to stdout: no file) it is null.
//! Each stream's file is created on its first byte. Every delegation that ran also gets a readable
//! `<agent>-<short id>.md` with a header ([`result_file`]), named by `result_path` in
//! `delegation.finished`.
//!
//! Budgets ([`budget`]): after the other admission checks, a delegation is rejected when the
//! session's (or its agent's) token or cost budget is used up, or when it would run deeper than
//! `executor.budgets.max_depth`; each sub-agent gets `MPM_DEPTH` one above this session's.
//!
//! What runs an admitted delegation is a backend ([`backend`]): this process by default (with
//! `isolation: worktree`, in a git worktree per delegation: [`crate::worktree`]), or `mpm worker`
//! processes through NATS JetStream with `executor.backend: nats` ([`nats`]). Admission, scheduling,
//! output files, summaries and events are the same for both.

pub(crate) mod argv;
pub(crate) mod backend;
pub(crate) mod budget;
pub(crate) mod cancel;
pub(crate) mod guards;
pub(crate) mod headless;
pub mod nats;
pub mod progress;
pub(crate) mod registry;
pub mod result_file;
pub(crate) mod run;
pub(crate) mod runtime;
pub(crate) mod slots;
pub(crate) mod spawn;

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Notify, watch};

use crate::config::{Config, SessionExitPolicy};
use crate::events::{Bus, Delegation, DelegationStatus, Detection, Event, EventBody, new_id};

pub use registry::{Agent, AgentRegistry, Resolution};
pub(crate) use runtime::ExecutorRuntime;
pub use slots::Slots;

use guards::{Breaker, BreakerDecision, RateWindow};
use run::AttemptEnd;

/// Summaries kept per session; later ones are counted, not stored (a spamming model cannot grow
/// memory without bound even with rejections).
const MAX_SUMMARIES: usize = 10_000;

/// Errors starting the executor.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The delegation output folder cannot be created.
    #[error("cannot create the delegation output folder {}: {source}", path.display())]
    StateDir {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The executor's runtime cannot start.
    #[error("cannot start the executor runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The backend (e.g. NATS) cannot be set up.
    #[error("executor backend: {0}")]
    Backend(String),
}

/// How one delegation ended, for the line `mpm run` prints after the session.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DelegationSummary {
    /// The delegation's id.
    pub delegation_id: String,
    /// The agent that ran it.
    pub agent: String,
    /// The task.
    pub task: String,
    /// How it ended.
    pub status: DelegationStatus,
    /// The sub-agent's exit code, if it exited.
    pub exit_code: Option<i32>,
    /// From queued to finished.
    pub duration_ms: u64,
    /// The `<id>.result.md` file, else the stdout file; `None` when nothing ran.
    pub output_path: Option<PathBuf>,
    /// Why it ended this way, when there is a reason (rejections, failures).
    pub reason: Option<String>,
    /// Attempts made (0 when it never started).
    pub attempts: u32,
    /// The readable result file (`<agent>-<short id>.md`), when one was written.
    pub result_path: Option<PathBuf>,
}

/// One line per delegation: agent, status, duration, result path (and the reason when there is
/// one). Empty when there were no delegations.
pub fn format_summary(summaries: &[DelegationSummary]) -> String {
    let width = summaries.iter().map(|s| s.agent.len()).max().unwrap_or(0);
    let mut out = String::new();
    for s in summaries {
        let path = s
            .output_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "-".into());
        let _ = write!(
            out,
            "mpm: delegation {:<width$}  {:<9}  {:>7}  {}",
            s.agent,
            s.status.as_str(),
            format!("{:.1}s", s.duration_ms as f64 / 1000.0),
            path,
        );
        if let Some(r) = &s.reason {
            let _ = write!(out, "  ({r})");
        }
        out.push('\n');
    }
    out
}

/// The default output folder of a session: `executor.output_dir` when set (then per session below
/// it), else `$XDG_STATE_HOME/mpm/sessions/<session>/`.
pub fn session_output_dir(cfg: &Config, session: &str) -> PathBuf {
    match &cfg.executor.output_dir {
        Some(dir) => dir.join(session),
        None => crate::config::paths::state_dir()
            .join("sessions")
            .join(session),
    }
}

/// The executor's entry point.
pub struct Executor;

impl Executor {
    /// Start the executor for one session: output goes to `state_dir` (created if missing), events
    /// to `bus`. Spawns the `mpm-executor` thread.
    pub fn start(
        cfg: &Config,
        bus: Bus,
        state_dir: PathBuf,
    ) -> Result<ExecutorHandle, ExecutorError> {
        Self::start_with_slots(cfg, bus, state_dir, None)
    }

    /// [`start`](Self::start), bounded also by `slots` shared with other executors (the daemon's
    /// sessions): a delegation starts only when this executor and `slots` both have room.
    pub fn start_with_slots(
        cfg: &Config,
        bus: Bus,
        state_dir: PathBuf,
        slots: Option<Slots>,
    ) -> Result<ExecutorHandle, ExecutorError> {
        Self::start_on(cfg, bus, state_dir, slots, None)
    }

    /// [`start_with_slots`](Self::start_with_slots) on a shared `runtime` (the daemon's): the
    /// executor is a task there instead of a runtime and thread of its own. `None` builds its own.
    pub(crate) fn start_on(
        cfg: &Config,
        bus: Bus,
        state_dir: PathBuf,
        slots: Option<Slots>,
        runtime: Option<ExecutorRuntime>,
    ) -> Result<ExecutorHandle, ExecutorError> {
        crate::config::paths::create_private_dir(&state_dir).map_err(|source| {
            ExecutorError::StateDir {
                path: state_dir.clone(),
                source,
            }
        })?;
        let ex = &cfg.executor;
        let (cancel, _) = watch::channel(false);
        let shared = Arc::new(ExecutorCore {
            session: bus.context().session.clone(),
            bus,
            registry: AgentRegistry::from_config(cfg),
            state_dir,
            max_parallel: ex.max_parallel.max(1),
            queue_capacity: ex.queue_capacity,
            grace: cfg.run.grace(),
            breaker_failures: ex.breaker_failures,
            breaker_cooldown: Duration::from_secs(ex.breaker_cooldown_secs),
            max_output_bytes: ex.max_output_bytes,
            stall: Duration::from_secs(ex.stall_secs),
            spawn_hook: Mutex::new(None),
            origin: OnceLock::new(),
            budgets: budget::Budgets::new(cfg, budget::own_depth()),
            remote: nats::backend_for(cfg).map_err(ExecutorError::Backend)?,
            worktree: cfg.worktree.clone(),
            state: Mutex::new(Scheduling {
                accepting: true,
                cancelling: false,
                queue: VecDeque::new(),
                reserved: 0,
                running: 0,
                running_by_agent: HashMap::new(),
                seen: HashSet::new(),
                rate: RateWindow::new(ex.rate_per_minute),
                breakers: HashMap::new(),
                summaries: Vec::new(),
                summaries_dropped: 0,
            }),
            wake: Arc::new(Notify::new()),
            slots,
            cancel,
        });
        let for_driver = shared.clone();
        let driver = match runtime {
            Some(rt) => {
                let handle = rt.handle().map_err(ExecutorError::Runtime)?;
                let task = handle.spawn(scheduler(for_driver));
                Driver::Task(handle, task)
            }
            None => {
                // Spawning blocks the spawning thread until the child has exec'd (fork + exec),
                // so spawns run on a few long-lived workers in parallel: one per permitted
                // parallel delegation, at most 4. The workers live as long as the executor, which
                // the sub-agents' parent-death signal relies on (`spawn`).
                let runtime =
                    runtime::build(ex.max_parallel.clamp(1, 4)).map_err(ExecutorError::Runtime)?;
                let thread = std::thread::Builder::new()
                    .name(runtime::WORKER_NAME.into())
                    .spawn(move || runtime.block_on(scheduler(for_driver)))
                    .map_err(ExecutorError::Runtime)?;
                Driver::Thread(thread)
            }
        };
        Ok(ExecutorHandle {
            inner: Arc::new(HandleInner {
                shared,
                driver: Mutex::new(Some(driver)),
            }),
        })
    }
}

/// What runs an executor's scheduler until every delegation has ended.
enum Driver {
    /// Its own runtime, driven from its own thread (in-process).
    Thread(JoinHandle<()>),
    /// A task on a shared runtime (the daemon's).
    Task(tokio::runtime::Handle, tokio::task::JoinHandle<()>),
}

impl Driver {
    /// Wait for the scheduler to end (from a plain thread, never a runtime's).
    fn join(self) {
        let panicked = match self {
            Driver::Thread(t) => t.join().is_err(),
            Driver::Task(handle, task) => handle.block_on(task).is_err(),
        };
        if panicked {
            tracing::error!("executor scheduler panicked");
        }
    }
}

/// The session's handle on its executor. Cheap to clone; `Send + Sync`. When the last clone is
/// dropped without [`ExecutorHandle::shutdown`], running delegations are cancelled.
#[derive(Clone)]
pub struct ExecutorHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    shared: Arc<ExecutorCore>,
    driver: Mutex<Option<Driver>>,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        let pending = lock(&self.driver).is_some();
        if pending {
            self.shared.begin_shutdown(SessionExitPolicy::Cancel);
        }
    }
}

impl ExecutorHandle {
    /// Offer a detection. Non-blocking. Only `delegation` detections not `handled_by_agent` run;
    /// everything else is ignored (already recorded as a detection). The delegation's events hang
    /// off the session's root step.
    pub fn submit(&self, det: &Detection) {
        self.submit_with_parent(det, None);
    }

    /// [`submit`](Self::submit) with an explicit parent step (e.g. the detection event's step id).
    /// Returns the delegation id when the delegation was queued.
    pub fn submit_with_parent(&self, det: &Detection, parent: Option<String>) -> Option<String> {
        self.inner.shared.submit(det, parent)
    }

    /// Offer an event from the bus: a `detection`, with the event's step as the parent of the
    /// delegation's events, or a `detection.dispatch`, with its parent (the detection's step).
    /// Other kinds are ignored.
    pub fn submit_event(&self, event: &Event) -> Option<String> {
        match &event.body {
            EventBody::Detection(det) => self.submit_with_parent(det, Some(event.step_id.clone())),
            EventBody::DetectionDispatch(det) => {
                self.submit_with_parent(det, event.parent_step_id.clone())
            }
            _ => None,
        }
    }

    /// The folder delegation output goes to.
    pub fn output_dir(&self) -> &std::path::Path {
        &self.inner.shared.state_dir
    }

    /// Install the hook called when each sub-agent attempt has started (see [`SpawnHook`]).
    pub fn set_spawn_hook(&self, hook: SpawnHook) {
        *lock(&self.inner.shared.spawn_hook) = Some(hook);
    }

    /// Where local sub-agents start and with what environment; once, before the first submit
    /// (a later call is ignored).
    pub(crate) fn set_origin(&self, origin: SessionOrigin) {
        let _ = self.inner.shared.origin.set(origin);
    }

    /// The agent registry this executor resolves names with.
    pub fn registry(&self) -> &AgentRegistry {
        &self.inner.shared.registry
    }

    /// Summaries of every delegation that has ended so far, in the order they ended.
    pub fn summaries(&self) -> Vec<DelegationSummary> {
        self.inner.shared.state().summaries.clone()
    }

    /// End of session. `Cancel`: queued delegations end `cancelled` and running ones are stopped
    /// (SIGTERM to the group, `run.grace_secs`, SIGKILL). `Wait`: queued and running ones finish
    /// first (each still bounded by its timeout). New submissions are ignored from now on. Blocks
    /// until every delegation has ended; returns all summaries in the order they ended.
    pub fn shutdown(self, policy: SessionExitPolicy) -> Vec<DelegationSummary> {
        let shared = self.inner.shared.clone();
        shared.begin_shutdown(policy);
        let driver = lock(&self.inner.driver).take();
        if let Some(d) = driver {
            d.join();
        }
        let st = shared.state();
        if st.summaries_dropped > 0 {
            tracing::warn!(
                dropped = st.summaries_dropped,
                "delegation summaries beyond the cap were not kept"
            );
        }
        st.summaries.clone()
    }
}

/// One admitted delegation.
struct Job {
    id: String,
    step: String,
    parent: Option<String>,
    agent: Agent,
    task: String,
    /// The half-open breaker's single trial.
    trial: bool,
    /// The shared slot this delegation holds while it runs (daemon); freed when the job is dropped,
    /// after its `delegation.finished`.
    slot: Option<slots::Slot>,
}

impl Job {
    fn delegation(&self) -> Delegation {
        Delegation {
            delegation_id: self.id.clone(),
            agent: self.agent.name.clone(),
            task: self.task.clone(),
        }
    }
}

/// A delegation's end, ready to be recorded and emitted.
struct Ending {
    delegation: Delegation,
    step: String,
    parent: Option<String>,
    status: DelegationStatus,
    exit_code: Option<i32>,
    duration_ms: u64,
    output_path: Option<PathBuf>,
    reason: Option<String>,
    attempts: u32,
    result_path: Option<PathBuf>,
    /// The worker that ran it (remote backends).
    worker: Option<String>,
}

struct Scheduling {
    accepting: bool,
    cancelling: bool,
    queue: VecDeque<Job>,
    /// Slots taken by submissions whose `queued` event is being emitted.
    reserved: usize,
    running: usize,
    running_by_agent: HashMap<String, usize>,
    seen: HashSet<crate::detect::Fingerprint>,
    rate: RateWindow,
    breakers: HashMap<String, Breaker>,
    summaries: Vec<DelegationSummary>,
    summaries_dropped: usize,
}

impl Scheduling {
    fn record(&mut self, e: &Ending) {
        if self.summaries.len() >= MAX_SUMMARIES {
            self.summaries_dropped += 1;
            return;
        }
        self.summaries.push(DelegationSummary {
            delegation_id: e.delegation.delegation_id.clone(),
            agent: e.delegation.agent.clone(),
            task: e.delegation.task.clone(),
            status: e.status,
            exit_code: e.exit_code,
            duration_ms: e.duration_ms,
            output_path: e.output_path.clone(),
            reason: e.reason.clone(),
            attempts: e.attempts,
            result_path: e.result_path.clone(),
        });
    }
}

struct ExecutorCore {
    bus: Bus,
    session: String,
    registry: AgentRegistry,
    state_dir: PathBuf,
    max_parallel: usize,
    queue_capacity: usize,
    grace: Duration,
    breaker_failures: u32,
    breaker_cooldown: Duration,
    /// Bytes kept per output stream of one attempt (`executor.max_output_bytes`).
    max_output_bytes: u64,
    /// `executor.stall_secs`: no output and no CPU for this long is `stalled`.
    stall: Duration,
    state: Mutex<Scheduling>,
    wake: Arc<Notify>,
    /// The daemon's bound shared by every session's executor (`None` in-process).
    slots: Option<Slots>,
    cancel: watch::Sender<bool>,
    spawn_hook: Mutex<Option<SpawnHook>>,
    /// Where and with what environment local sub-agents start (set once, before any submit).
    origin: OnceLock<SessionOrigin>,
    budgets: budget::Budgets,
    /// `None` = the local backend.
    remote: Option<Arc<dyn backend::Backend>>,
    worktree: crate::config::WorktreeConfig,
}

/// Something kept alive while one attempt's process tree runs.
pub type SpawnGuard = Box<dyn Send>;

/// Where the user ran `mpm run`: a local sub-agent starts in that folder with that environment,
/// as the main agent does. In-process both are this process's own; a daemon-hosted session
/// carries its client's (the daemon's own cwd and environment, e.g. systemd's, are not the user's
/// project, API keys or virtualenv). An agent's own `cwd`, an isolated worktree and the agent's
/// `env` still take precedence.
#[derive(Debug, Clone, Default)]
pub(crate) struct SessionOrigin {
    /// The session's working directory.
    pub cwd: Option<PathBuf>,
    /// The client's whole environment; `None`: this process's.
    pub env: Option<Arc<[(String, String)]>>,
}

/// Called with (pid, agent name, delegation id) when a sub-agent started; the guard it returns is
/// dropped when the attempt ends. The session uses it to put the tree under the governor.
pub type SpawnHook = Box<dyn Fn(u32, &str, &str) -> Option<SpawnGuard> + Send + Sync>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ExecutorCore {
    fn state(&self) -> MutexGuard<'_, Scheduling> {
        lock(&self.state)
    }

    fn new_breaker(&self) -> Breaker {
        Breaker::new(self.breaker_failures, self.breaker_cooldown)
    }

    /// Record an ending and emit its `delegation.finished`. Never called with the state lock held:
    /// events go out without it, so a sink that submits cannot deadlock.
    fn finish(&self, e: Ending) {
        self.state().record(&e);
        tracing::info!(
            delegation = %e.delegation.delegation_id,
            agent = %e.delegation.agent,
            status = e.status.as_str(),
            reason = e.reason.as_deref().unwrap_or(""),
            "delegation finished"
        );
        self.bus.emit_step(
            EventBody::DelegationFinished {
                delegation: e.delegation,
                status: e.status,
                exit_code: e.exit_code,
                duration_ms: e.duration_ms,
                output_path: e.output_path.map(|p| p.display().to_string()),
                reason: e.reason,
                worker: e.worker,
                result_path: e.result_path.map(|p| p.display().to_string()),
            },
            e.step,
            e.parent,
        );
    }

    fn reject(&self, delegation: Delegation, parent: Option<String>, reason: String) {
        self.finish(Ending {
            delegation,
            step: new_id(),
            parent,
            status: DelegationStatus::Rejected,
            exit_code: None,
            duration_ms: 0,
            output_path: None,
            reason: Some(reason),
            attempts: 0,
            result_path: None,
            worker: None,
        });
    }

    fn submit(&self, det: &Detection, parent: Option<String>) -> Option<String> {
        if det.category != "delegation" {
            return None;
        }
        if det.handled_by_agent {
            tracing::debug!(agent = ?det.agent, "delegation handled by the agent CLI itself; recorded only");
            return None;
        }
        let (Some(requested), Some(raw_task)) = (&det.agent, &det.task) else {
            tracing::warn!(pattern = %det.pattern, "delegation detection without agent or task");
            return None;
        };
        if !self.state().accepting {
            tracing::debug!("executor shut down; delegation ignored");
            return None;
        }
        let parent = parent.or_else(|| Some(self.bus.context().root_step.clone()));
        let task = argv::clean_task(raw_task);
        let id = new_id();
        let rejected = |agent: &str, reason: String| {
            let d = Delegation {
                delegation_id: id.clone(),
                agent: agent.to_string(),
                task: task.clone(),
            };
            self.reject(d, parent.clone(), reason);
            None
        };
        if task.trim().is_empty() {
            return rejected(requested, "empty task".into());
        }
        let name = match self.registry.resolve(requested) {
            Resolution::Known(n) => n,
            Resolution::Defaulted { requested, agent } => {
                tracing::info!(%requested, %agent, "unknown agent routed to the default agent");
                agent
            }
            Resolution::Rejected { requested, reason } => return rejected(&requested, reason),
        };
        let Some(agent) = self.registry.get(&name).cloned() else {
            return rejected(&name, format!("agent {name} is not in the registry"));
        };
        if let Some(why) = &agent.invalid {
            return rejected(&name, format!("agent {name} cannot run: {why}"));
        }
        if let Some(why) = self.budgets.check(&name) {
            return rejected(&name, why);
        }
        {
            let mut st = self.state();
            let key = guards::dedup_key(&name, &task);
            if st.seen.contains(&key) {
                tracing::info!(agent = %name, task = %task, "duplicate delegation in this session; ignored");
                return None;
            }
            let now = Instant::now();
            let open = st
                .breakers
                .get(&name)
                .and_then(|b| b.open_reason(&name, now));
            let refusal = if let Some(reason) = open {
                Some(reason)
            } else if st.queue.len() + st.reserved >= self.queue_capacity {
                Some(format!(
                    "queue full ({} delegations waiting)",
                    self.queue_capacity
                ))
            } else if !st.rate.try_admit(now) {
                Some("rate cap reached (rate_per_minute)".to_string())
            } else {
                None
            };
            if let Some(reason) = refusal {
                drop(st);
                return rejected(&name, reason);
            }
            st.seen.insert(key);
            st.reserved += 1;
        }
        let job = Job {
            id: id.clone(),
            step: new_id(),
            parent,
            agent,
            task,
            trial: false,
            slot: None,
        };
        self.bus.emit_step(
            EventBody::DelegationQueued(job.delegation()),
            job.step.clone(),
            job.parent.clone(),
        );
        {
            let mut st = self.state();
            st.reserved -= 1;
            st.queue.push_back(job);
        }
        self.wake.notify_one();
        Some(id)
    }

    fn begin_shutdown(&self, policy: SessionExitPolicy) {
        {
            let mut st = self.state();
            st.accepting = false;
            if policy == SessionExitPolicy::Cancel {
                st.cancelling = true;
            }
        }
        if policy == SessionExitPolicy::Cancel {
            self.cancel.send_replace(true);
        }
        self.wake.notify_one();
    }

    /// Take what can start now; returns (jobs to start, endings to emit, all done).
    fn pick(&self) -> (Vec<Job>, Vec<Ending>, bool) {
        let mut st = self.state();
        let mut starts = Vec::new();
        let mut endings = Vec::new();
        if st.cancelling {
            while let Some(job) = st.queue.pop_front() {
                endings.push(queued_ending(
                    job,
                    DelegationStatus::Cancelled,
                    "session ended".into(),
                ));
            }
        }
        let now = Instant::now();
        while st.running < self.max_parallel {
            let st_ref = &*st;
            let pos = st_ref.queue.iter().position(|j| {
                j.agent.max_parallel.is_none_or(|m| {
                    st_ref
                        .running_by_agent
                        .get(&j.agent.name)
                        .copied()
                        .unwrap_or(0)
                        < m.max(1)
                })
            });
            let Some(i) = pos else {
                break;
            };
            // The daemon's shared bound: no free slot there, nothing starts (this executor is
            // woken when one frees up).
            let slot = match &self.slots {
                Some(slots) => match slots.try_take(&self.wake) {
                    Some(slot) => Some(slot),
                    None => break,
                },
                None => None,
            };
            let Some(mut job) = st.queue.remove(i) else {
                break;
            };
            job.slot = slot;
            let breaker_decision = {
                let fresh = self.new_breaker();
                st.breakers
                    .entry(job.agent.name.clone())
                    .or_insert(fresh)
                    .decide(&job.agent.name, now)
            };
            match breaker_decision {
                BreakerDecision::Reject(r) => {
                    endings.push(queued_ending(job, DelegationStatus::Rejected, r));
                    continue;
                }
                BreakerDecision::Trial => job.trial = true,
                BreakerDecision::Run => {}
            }
            st.running += 1;
            *st.running_by_agent
                .entry(job.agent.name.clone())
                .or_insert(0) += 1;
            starts.push(job);
        }
        let done = !st.accepting && st.queue.is_empty() && st.reserved == 0 && st.running == 0;
        (starts, endings, done)
    }
}

fn queued_ending(job: Job, status: DelegationStatus, reason: String) -> Ending {
    Ending {
        delegation: job.delegation(),
        step: job.step,
        parent: job.parent,
        status,
        exit_code: None,
        duration_ms: 0,
        output_path: None,
        reason: Some(reason),
        attempts: 0,
        result_path: None,
        worker: None,
    }
}

/// The scheduler loop: start what fits, sleep until a submission, a finish or a shutdown.
async fn scheduler(shared: Arc<ExecutorCore>) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (starts, endings, done) = shared.pick();
        let picked_any = !starts.is_empty() || !endings.is_empty();
        for e in endings {
            shared.finish(e);
        }
        for job in starts {
            tasks.spawn(run_delegation(shared.clone(), job));
        }
        if done {
            break;
        }
        if picked_any {
            // Endings may have freed nothing, but re-check cheaply before sleeping.
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            _ = shared.wake.notified() => {}
            Some(_) = tasks.join_next() => {}
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// Run one delegation to its end: attempts, retries, output, bookkeeping, `finished`.
async fn run_delegation(shared: Arc<ExecutorCore>, job: Job) {
    let started = Instant::now();
    let mut cancel = shared.cancel.subscribe();
    let id = job.id.clone();
    let stdout_path = shared.state_dir.join(format!("{id}.stdout"));
    let stderr_path = shared.state_dir.join(format!("{id}.stderr"));
    let spec = backend::RunSpec {
        delegation_id: id.clone(),
        session: shared.session.clone(),
        agent: job.agent.clone(),
        task: job.task.clone(),
        stdout_path: stdout_path.clone(),
        stderr_path: stderr_path.clone(),
        grace: shared.grace,
        base_env: shared.origin.get().and_then(|o| o.env.clone()),
        extra_env: vec![(
            budget::DEPTH_VAR.into(),
            shared.budgets.child_depth().to_string(),
        )],
        max_output_bytes: shared.max_output_bytes,
        progress: Some(progress::Monitor {
            sink: {
                let (bus, delegation) = (shared.bus.clone(), job.delegation());
                let (step, parent) = (job.step.clone(), job.parent.clone());
                Arc::new(move |p: progress::Progress| {
                    bus.emit_step(
                        EventBody::DelegationProgress {
                            delegation: delegation.clone(),
                            last_tool: p.last_tool,
                            tokens: p.tokens,
                            elapsed_ms: u64::try_from(p.elapsed.as_millis()).unwrap_or(u64::MAX),
                            stalled: p.stalled,
                        },
                        step.clone(),
                        parent.clone(),
                    );
                })
            },
            stall: shared.stall,
        }),
    };
    let on_start = |pid: u32, worker: Option<&str>| {
        let guard = match (worker, lock(&shared.spawn_hook).as_ref()) {
            (None, Some(hook)) => hook(pid, &job.agent.name, &id),
            _ => None,
        };
        shared.bus.emit_step(
            EventBody::DelegationStarted {
                delegation: job.delegation(),
                pid,
            },
            job.step.clone(),
            job.parent.clone(),
        );
        guard
    };
    let run = match &shared.remote {
        Some(remote) => remote.run(spec, cancel, Box::new(on_start)).await,
        None => run_local(&shared, spec, &mut cancel, on_start).await,
    };
    let (end, attempts) = (run.end, run.attempts);
    // A user's cancel (`mpm top`): the signal it sent is not a failure of the sub-agent.
    let end = match end {
        AttemptEnd::Exited(0) => {
            cancel::take(&id);
            end
        }
        _ if cancel::take(&id) => AttemptEnd::Cancelled,
        end => end,
    };
    let user_cancel = end == AttemptEnd::Cancelled && !*shared.cancel.borrow();
    let (status, exit_code, reason) = match &end {
        AttemptEnd::Exited(0) => (DelegationStatus::Success, Some(0), None),
        AttemptEnd::Exited(c) => (
            DelegationStatus::Failed,
            Some(*c),
            Some(format!("exit status {c}")),
        ),
        AttemptEnd::TimedOut => (
            DelegationStatus::Timeout,
            None,
            Some(format!(
                "timed out after {}s",
                job.agent.timeout().as_secs()
            )),
        ),
        AttemptEnd::Cancelled => (
            DelegationStatus::Cancelled,
            None,
            Some(if user_cancel {
                cancel::REASON.into()
            } else {
                "session ended".into()
            }),
        ),
        AttemptEnd::SpawnFailed(why) => (DelegationStatus::Failed, None, Some(why.clone())),
    };
    let (status, reason) = match run.rejected {
        Some(why) => (DelegationStatus::Rejected, Some(why)),
        None => (status, reason),
    };
    let stdout_len = if attempts > 0 {
        std::fs::metadata(&stdout_path).ok().map(|m| m.len())
    } else {
        None
    };
    let outcome = match stdout_len {
        None | Some(0) => result_file::Outcome::default(),
        // Small outputs are scanned in place; large ones off the scheduler's thread.
        Some(len) if len <= 256 << 10 => headless::read_outcome(&stdout_path, job.agent.output),
        Some(_) => {
            let src = stdout_path.clone();
            let format = job.agent.output;
            tokio::task::spawn_blocking(move || headless::read_outcome(&src, format))
                .await
                .unwrap_or_default()
        }
    };
    shared
        .budgets
        .record(&job.agent.name, outcome.tokens, outcome.cost_usd);
    let output_path = match stdout_len {
        None => None,
        Some(0) => Some(stdout_path.clone()),
        Some(_) => {
            let result_path = shared.state_dir.join(format!("{id}.result.md"));
            let wrote = outcome.result.as_ref().is_some_and(|text| {
                use std::io::Write as _;
                crate::config::paths::private_file()
                    .create(true)
                    .write(true)
                    .truncate(true)
                    .open(&result_path)
                    .and_then(|mut f| f.write_all(text.as_bytes()))
                    .is_ok()
            });
            Some(if wrote {
                result_path
            } else {
                stdout_path.clone()
            })
        }
    };
    let output_path = match &run.worktree {
        Some(o) => backend::record_outcome(&shared.state_dir, &id, output_path.as_deref(), o)
            .or(output_path),
        None => output_path,
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    let result_path = if attempts > 0 {
        let header = result_file::Header {
            agent: &job.agent.name,
            task: &job.task,
            status,
            duration_ms,
            session: &shared.session,
            delegation_id: &id,
            exit_code,
            reason: reason.as_deref(),
            profile: Some(&job.agent.profile),
        };
        match result_file::write(
            &shared.state_dir,
            &header,
            &outcome,
            &stdout_path,
            &stderr_path,
        ) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(delegation = %id, error = %e, "cannot write the result file");
                None
            }
        }
    } else {
        None
    };
    let breaker_outcome = match status {
        DelegationStatus::Success => Some(true),
        DelegationStatus::Failed | DelegationStatus::Timeout => Some(false),
        _ => None,
    };
    {
        let mut st = shared.state();
        st.running = st.running.saturating_sub(1);
        if let Some(n) = st.running_by_agent.get_mut(&job.agent.name) {
            *n = n.saturating_sub(1);
        }
        let fresh = shared.new_breaker();
        st.breakers
            .entry(job.agent.name.clone())
            .or_insert(fresh)
            .record(breaker_outcome, job.trial, Instant::now());
    }
    shared.finish(Ending {
        delegation: job.delegation(),
        step: job.step.clone(),
        parent: job.parent.clone(),
        status,
        exit_code,
        duration_ms,
        output_path,
        reason,
        attempts,
        result_path,
        worker: run.worker,
    });
    shared.wake.notify_one();
}

/// The local backend: this process runs the attempts, in the agent's worktree when isolated.
async fn run_local(
    shared: &ExecutorCore,
    spec: backend::RunSpec,
    cancel: &mut watch::Receiver<bool>,
    mut on_start: impl FnMut(u32, Option<&str>) -> Option<SpawnGuard>,
) -> backend::RunEnd {
    let agent = &spec.agent;
    let wt = match backend::isolate(
        agent,
        &spec.delegation_id,
        {
            let agent = agent.clone();
            let cwd = shared.origin.get().and_then(|o| o.cwd.clone());
            move || backend::local_source(&agent, cwd.as_deref())
        },
        shared
            .worktree
            .dir
            .clone()
            .unwrap_or_else(|| shared.state_dir.join("worktrees")),
        &shared.worktree,
    )
    .await
    {
        Ok(wt) => wt,
        Err(why) => {
            return backend::RunEnd {
                end: AttemptEnd::SpawnFailed(why.clone()),
                attempts: 0,
                worker: None,
                worktree: None,
                rejected: Some(why),
            };
        }
    };
    let cwd = wt
        .as_ref()
        .map(|w| w.path.clone())
        .or_else(|| agent.cwd.clone())
        .or_else(|| shared.origin.get().and_then(|o| o.cwd.clone()));
    let (end, attempts) =
        backend::run_attempts(&spec, cwd, cancel, |pid| on_start(pid, None)).await;
    let worktree = match wt {
        Some(wt) => backend::release(wt, &agent.name, &spec.delegation_id, &shared.worktree).await,
        None => None,
    };
    backend::RunEnd {
        end,
        attempts,
        worker: None,
        worktree,
        rejected: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_has_one_line_per_delegation() {
        let s = |agent: &str, status, path: Option<&str>| DelegationSummary {
            delegation_id: "d".into(),
            agent: agent.into(),
            task: "t".into(),
            status,
            exit_code: None,
            duration_ms: 1234,
            output_path: path.map(PathBuf::from),
            reason: None,
            attempts: 1,
            result_path: None,
        };
        let text = format_summary(&[
            s(
                "engineer",
                DelegationStatus::Success,
                Some("/s/d.result.md"),
            ),
            s("qa", DelegationStatus::Rejected, None),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains("engineer") && lines[0].contains("success"));
        assert!(lines[0].contains("1.2s") && lines[0].ends_with("/s/d.result.md"));
        assert!(lines[1].contains("rejected") && lines[1].ends_with(" -"));
        assert_eq!(format_summary(&[]), "");
    }
}
