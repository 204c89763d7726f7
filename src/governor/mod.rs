//! The resource governor: one sampler thread measures every supervised process tree (the main
//! session and each delegation, root plus all descendants), fires `resource.*` events when
//! thresholds are crossed, and stops a tree that reaches its hard limit.
//!
//! Two modes ([`GovernorMode`]): with a writable delegated cgroup v2 (systemd `Delegate=yes`) each
//! tree gets its own child cgroup with `memory.max`/`cpu.max` from the hard limits, accounting from
//! `memory.current`/`cpu.stat` and `cgroup.kill`; otherwise polling through sysinfo's targeted
//! refresh of the trees' pids, one refresh for every tree per tick (see [`tracker`]). Thresholds and their hysteresis are in [`thresholds`]; spawn-time
//! limits in [`rlimits`]; the main session's restart policy in [`restart`].
//!
//! Wiring:
//! - once per mpm process (or session): `Governor::start(&cfg.limits, grace)`; put
//!   `governor.mode().as_str()` into `session.started`'s `governor_mode` and `mpm status`;
//! - per tree (main session, each delegation): `limits = resolve_limits(&cfg.limits,
//!   agent.limits.as_ref())`; spawn the child as a session leader with
//!   `pre_exec(|| { setsid; apply_rlimits(&limits.rlimits) })`; then
//!   `watch(child_pid, limits, bus, delegation_id)` and keep the [`WatchHandle`] until the child is
//!   reaped;
//! - main session restart: when the child exits and `handle.limit_reached()`, wait for
//!   `handle.wait_ended(grace + 1 s)` (so `resource.limit` precedes `session.exited`), then ask
//!   `RestartPolicy::next_delay(now)`; on `Some(d)` sleep `d` and respawn with
//!   `resume_argv(&argv, claude_session_id)` for claude.

#[cfg(target_os = "linux")]
pub mod cgroup;
pub(crate) mod restart;
pub(crate) mod rlimits;
pub(crate) mod thresholds;
pub mod tracker;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::Serialize;

use crate::config::{self, CpuLimits, LimitsConfig, MemoryLimits, Rlimits};
use crate::events::{Bus, EventBody, Resource, ResourceAction};
use crate::process::{self, StopOutcome};

#[cfg(target_os = "linux")]
pub use cgroup::CgroupProbe;
pub use restart::{RestartPolicy, resume_argv};
pub use rlimits::apply_rlimits;
pub use thresholds::{Level, REARM_FRACTION, ResourceKind};

/// Errors starting the governor.
#[derive(Debug, thiserror::Error)]
pub enum GovernorError {
    /// `limits.cgroup` named a cgroup that cannot host tree cgroups.
    #[error("limits.cgroup: {path}: {reason}")]
    Cgroup {
        /// The cgroup.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// The sampler thread cannot start.
    #[error("cannot start the governor thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// How trees are measured and limited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum GovernorMode {
    /// One child cgroup per tree under `path`.
    Cgroup {
        /// The parent cgroup of the trees' cgroups.
        path: PathBuf,
    },
    /// Polling of each tree's pids (sysinfo's targeted refresh).
    Polling,
}

impl GovernorMode {
    /// `cgroup` or `polling` (for `session.started`'s `governor_mode` and `mpm status`).
    pub fn as_str(&self) -> &'static str {
        match self {
            GovernorMode::Cgroup { .. } => "cgroup",
            GovernorMode::Polling => "polling",
        }
    }
}

/// The limits that apply to one tree: the global `limits` section with an agent's overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedLimits {
    /// Memory thresholds.
    pub memory: MemoryLimits,
    /// CPU thresholds.
    pub cpu: CpuLimits,
    /// setrlimit values applied at spawn.
    pub rlimits: Rlimits,
}

/// The limits for a tree: each section the agent sets (`memory_mb`, `cpu`, `rlimits`) replaces the
/// global one as a whole (a section given in YAML gets the built-in defaults for keys it omits,
/// so an override should spell out every key it cares about).
pub fn resolve_limits(
    global: &LimitsConfig,
    agent: Option<&config::AgentLimits>,
) -> ResolvedLimits {
    let a = agent.cloned().unwrap_or_default();
    ResolvedLimits {
        memory: a.memory_mb.unwrap_or_else(|| global.memory_mb.clone()),
        cpu: a.cpu.unwrap_or_else(|| global.cpu.clone()),
        rlimits: a.rlimits.unwrap_or_else(|| global.rlimits.clone()),
    }
}

/// How a watch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEnd {
    /// Every member exited (or the handle was dropped).
    Exited,
    /// The governor stopped the tree at a hard limit; the action reported in `resource.limit`.
    Limited(ResourceAction),
}

/// Counters of the sampler thread, for `mpm status` and the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GovernorStats {
    /// Ticks that sampled at least one tree.
    pub ticks: u64,
    /// CPU time the sampler thread used so far (`CLOCK_THREAD_CPUTIME_ID`).
    pub cpu: Duration,
    /// Trees being watched.
    pub watched: usize,
}

#[derive(Default)]
struct SamplerCounters {
    ticks: AtomicU64,
    cpu_us: AtomicU64,
    watched: AtomicU64,
}

struct WatchState {
    end: Mutex<Option<WatchEnd>>,
    ended: Condvar,
    /// Set when the hard limit was reached, before the stop begins.
    limited: AtomicBool,
}

impl WatchState {
    fn new() -> Self {
        WatchState {
            end: Mutex::new(None),
            ended: Condvar::new(),
            limited: AtomicBool::new(false),
        }
    }

    fn finish(&self, end: WatchEnd) {
        if let Ok(mut e) = self.end.lock()
            && e.is_none()
        {
            *e = Some(end);
        }
        self.ended.notify_all();
    }
}

/// Keeps a tree watched; dropping it stops watching (the tree itself is not touched).
pub struct WatchHandle {
    id: u64,
    tx: Sender<Command>,
    state: Arc<WatchState>,
    cgroup: Option<PathBuf>,
}

impl WatchHandle {
    /// How the watch ended, once it has (`None` while the tree runs or is being stopped).
    pub fn ended(&self) -> Option<WatchEnd> {
        self.state.end.lock().ok().and_then(|e| *e)
    }

    /// True as soon as the governor decided to stop the tree at a hard limit (before the stop
    /// finishes). The session checks this when its child exits, to tell a governor stop (restart
    /// policy applies) from a normal exit.
    pub fn limit_reached(&self) -> bool {
        self.state.limited.load(Ordering::SeqCst)
    }

    /// Wait up to `timeout` for the watch to end. After a limit, `resource.limit` has been
    /// emitted once this returns `Some(WatchEnd::Limited(_))`: a session that wants its
    /// `session.exited` after `resource.limit` waits here (grace + a margin) when
    /// [`limit_reached`](Self::limit_reached).
    pub fn wait_ended(&self, timeout: Duration) -> Option<WatchEnd> {
        let deadline = Instant::now() + timeout;
        let mut guard = self.state.end.lock().ok()?;
        loop {
            if let Some(e) = *guard {
                return Some(e);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            guard = self.state.ended.wait_timeout(guard, left).ok()?.0;
        }
    }

    /// The tree's own cgroup in cgroup mode.
    pub fn cgroup(&self) -> Option<&std::path::Path> {
        self.cgroup.as_deref()
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Unwatch(self.id));
    }
}

enum Meter {
    Proc(Box<tracker::TreeTracker>),
    Cgroup {
        cg: cgroup::TreeCgroup,
        last_usec: Option<u64>,
        ooms: u64,
    },
}

struct Measure {
    alive: bool,
    rss_bytes: u64,
    cpu_secs: f64,
    oom_killed: bool,
}

impl Meter {
    /// Read the tree. A polled tree's pids were listed by [`tracker::TreeTracker::plan`] and
    /// refreshed through `probe` at this tick already.
    fn measure(&mut self, root: i32, probe: &mut tracker::Probe) -> Measure {
        match self {
            Meter::Proc(t) => {
                let s = t.settle(probe);
                Measure {
                    alive: s.members > 0,
                    rss_bytes: s.rss_bytes,
                    cpu_secs: s.cpu_secs,
                    oom_killed: false,
                }
            }
            Meter::Cgroup {
                cg,
                last_usec,
                ooms,
            } => {
                let alive = cg.procs().iter().any(|&p| is_alive(p)) || is_alive(root);
                let usec = cg.cpu_usage_usec().unwrap_or(0);
                let cpu_secs = last_usec.map_or(0, |l| usec.saturating_sub(l)) as f64 / 1e6;
                *last_usec = Some(usec);
                let o = cg.oom_kills();
                let oom_killed = o > *ooms;
                *ooms = o;
                Measure {
                    alive,
                    rss_bytes: cg.memory_current().unwrap_or(0),
                    cpu_secs,
                    oom_killed,
                }
            }
        }
    }
}

fn is_alive(pid: i32) -> bool {
    process::procfs::is_alive(pid)
}

struct Watched {
    id: u64,
    root: i32,
    meter: Meter,
    eval: thresholds::Evaluator,
    bus: Bus,
    delegation_id: Option<String>,
    state: Arc<WatchState>,
    /// A stopper thread owns the tree now.
    stopping: bool,
}

enum Command {
    Watch(Box<Watched>),
    Unwatch(u64),
    Stop,
}

/// The per-process governor: owns the sampler thread for all watched trees.
pub struct Governor {
    mode: GovernorMode,
    cpu_enabled: bool,
    tx: Sender<Command>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<SamplerCounters>,
    next_id: AtomicU64,
    interval: Duration,
}

impl Governor {
    /// Start the governor with the real cgroupfs (`/sys/fs/cgroup`, `/proc/self/cgroup`).
    /// `grace` is the SIGTERM→SIGKILL delay when a tree is stopped at a hard limit.
    pub fn start(limits: &LimitsConfig, grace: Duration) -> Result<Governor, GovernorError> {
        Self::start_with(limits, grace, &CgroupProbe::system())
    }

    /// Start with an explicit cgroupfs location (tests point it at a fake folder).
    pub fn start_with(
        limits: &LimitsConfig,
        grace: Duration,
        probe: &CgroupProbe,
    ) -> Result<Governor, GovernorError> {
        let (mode, cpu_enabled) = choose_mode(&limits.cgroup, probe)?;
        tracing::info!(mode = mode.as_str(), "governor started");
        let interval = Duration::from_millis(limits.interval_ms.max(10));
        let (tx, rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(SamplerCounters::default());
        let rescan = limits.rescan_ticks;
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("mpm-governor".into())
                .spawn(move || sampler(rx, interval, grace, rescan, shared))
                .map_err(GovernorError::Thread)?
        };
        Ok(Governor {
            mode,
            cpu_enabled,
            tx,
            thread: Some(thread),
            shared,
            next_id: AtomicU64::new(1),
            interval,
        })
    }

    /// How trees are measured and limited (cgroup or polling).
    pub fn mode(&self) -> GovernorMode {
        self.mode.clone()
    }

    /// The sampling interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Counters of the sampler thread.
    pub fn stats(&self) -> GovernorStats {
        GovernorStats {
            ticks: self.shared.ticks.load(Ordering::Relaxed),
            cpu: Duration::from_micros(self.shared.cpu_us.load(Ordering::Relaxed)),
            watched: self.shared.watched.load(Ordering::Relaxed) as usize,
        }
    }

    /// Watch the tree rooted at session leader `root`; events go to `bus`, tagged with
    /// `delegation_id` for delegation trees. In cgroup mode the tree's current members move into a
    /// new child cgroup (falling back to polling for this tree if that fails). The first sample is
    /// taken at the next tick.
    pub fn watch(
        &self,
        root: u32,
        limits: ResolvedLimits,
        bus: Bus,
        delegation_id: Option<String>,
    ) -> WatchHandle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let root = root as i32;
        let mut cgroup_path = None;
        let meter = match &self.mode {
            GovernorMode::Cgroup { path } => match self.make_cgroup(path, id, root, &limits) {
                Ok(cg) => {
                    cgroup_path = Some(cg.path().to_path_buf());
                    Meter::Cgroup {
                        cg,
                        last_usec: None,
                        ooms: 0,
                    }
                }
                Err(e) => {
                    tracing::warn!(root, error = %e, "tree cgroup failed; polling this tree");
                    self.polled(root, &limits)
                }
            },
            // The sampler hands every tree its shared /proc snapshot (see `sampler`).
            GovernorMode::Polling => self.polled(root, &limits),
        };
        let state = Arc::new(WatchState::new());
        let w = Watched {
            id,
            root,
            meter,
            eval: thresholds::Evaluator::new(limits),
            bus,
            delegation_id,
            state: state.clone(),
            stopping: false,
        };
        if self.tx.send(Command::Watch(Box::new(w))).is_err() {
            state.finish(WatchEnd::Exited);
        }
        WatchHandle {
            id,
            tx: self.tx.clone(),
            state,
            cgroup: cgroup_path,
        }
    }

    /// A polled tree's meter. Idle members are refreshed every [`tracker::IDLE_EVERY`]th tick
    /// only when that delay cannot distort a CPU verdict: no CPU threshold, or a window at least
    /// that long (the CPU an idle member used meanwhile is counted late, never lost, and still
    /// falls inside the window it was used in).
    fn polled(&self, root: i32, limits: &ResolvedLimits) -> Meter {
        let cpu = &limits.cpu;
        let checked = cpu.warning_percent.is_some() || cpu.hard_percent.is_some();
        let window = Duration::from_secs(cpu.window_secs);
        let skip_idle = !checked || window >= self.interval * tracker::IDLE_EVERY as u32;
        Meter::Proc(Box::new(
            tracker::TreeTracker::new(root, 0).skip_idle(skip_idle),
        ))
    }

    fn make_cgroup(
        &self,
        parent: &std::path::Path,
        id: u64,
        root: i32,
        limits: &ResolvedLimits,
    ) -> std::io::Result<cgroup::TreeCgroup> {
        let cg = cgroup::TreeCgroup::create(
            parent,
            &format!("mpm-tree-{root}-{id}"),
            limits.memory.hard,
            limits.cpu.hard_percent,
            self.cpu_enabled,
        )?;
        // Root first so that children it forks from now on are born inside.
        let mut pids = vec![root];
        pids.extend(
            process::tree_members(root)
                .into_iter()
                .filter(|&p| p != root),
        );
        for pid in pids {
            if let Err(e) = cg.add(pid)
                && e.raw_os_error() != Some(libc::ESRCH)
            {
                let _ = cg.remove();
                return Err(e);
            }
        }
        Ok(cg)
    }
}

impl Drop for Governor {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn choose_mode(setting: &str, probe: &CgroupProbe) -> Result<(GovernorMode, bool), GovernorError> {
    let setting = setting.trim();
    match setting {
        "off" | "" => Ok((GovernorMode::Polling, false)),
        "auto" => {
            let Some(dir) = cgroup::detect(probe) else {
                tracing::debug!("no writable cgroup v2 with the memory controller; polling");
                return Ok((GovernorMode::Polling, false));
            };
            match cgroup::prepare(&dir) {
                Ok(cpu) => Ok((GovernorMode::Cgroup { path: dir }, cpu)),
                Err(e) => {
                    tracing::info!(path = %dir.display(), error = %e, "cgroup not usable; polling");
                    Ok((GovernorMode::Polling, false))
                }
            }
        }
        path => {
            let dir = PathBuf::from(path);
            let err = |reason: String| GovernorError::Cgroup {
                path: dir.clone(),
                reason,
            };
            if !cgroup::usable(&dir) {
                return Err(err(
                    "not a writable cgroup v2 directory offering the memory controller".into(),
                ));
            }
            let cpu = cgroup::prepare(&dir).map_err(|e| err(e.to_string()))?;
            Ok((GovernorMode::Cgroup { path: dir }, cpu))
        }
    }
}

/// CPU time of the calling thread: the scheduler's exact runtime (`CLOCK_THREAD_CPUTIME_ID`).
/// `getrusage(RUSAGE_THREAD)` splits that runtime by tick samples and reads hundreds of µs off
/// for a thread that runs a millisecond a second.
fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

fn sampler(
    rx: Receiver<Command>,
    interval: Duration,
    grace: Duration,
    rescan: u64,
    shared: Arc<SamplerCounters>,
) {
    let mut trees: Vec<Watched> = Vec::new();
    let mut probe = tracker::Probe::new();
    let mut pids = Vec::new();
    let mut rescan_tick: u64 = 0;
    let mut next = Instant::now() + interval;
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Command::Watch(w)) => {
                trees.push(*w);
                shared.watched.store(trees.len() as u64, Ordering::Relaxed);
                continue;
            }
            Ok(Command::Unwatch(id)) => {
                if let Some(i) = trees.iter().position(|t| t.id == id) {
                    let t = trees.swap_remove(i);
                    t.state.finish(WatchEnd::Exited);
                    release(&t);
                }
                shared.watched.store(trees.len() as u64, Ordering::Relaxed);
                continue;
            }
            Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        // Next tick on the fixed grid; skip missed ticks rather than bunching them.
        next += interval;
        if next <= now {
            next = now + interval;
        }
        if trees.is_empty() {
            continue;
        }
        // One rescan every `rescan` ticks, shared by every polled tree: this process's own
        // children when it is the subreaper of them all, else a full /proc scan.
        rescan_tick += 1;
        let snapshot = (rescan > 0 && rescan_tick.is_multiple_of(rescan)).then(|| {
            let roots: Vec<i32> = trees
                .iter()
                .filter_map(|t| match &t.meter {
                    Meter::Proc(p) => Some(p.root()),
                    Meter::Cgroup { .. } => None,
                })
                .collect();
            if roots.is_empty() {
                return Vec::new(); // cgroup meters read their own cgroup
            }
            process::rescan_snapshot(&roots)
        });
        // One sysinfo refresh for every polled tree's due pids.
        pids.clear();
        for t in &mut trees {
            if let Meter::Proc(p) = &mut t.meter {
                p.plan(snapshot.as_deref(), &mut pids);
            }
        }
        probe.refresh(&pids);
        let mut i = 0;
        while i < trees.len() {
            if tick(&mut trees[i], grace, &mut probe) {
                let t = trees.swap_remove(i);
                if !t.stopping {
                    // Exited on its own; a limited tree is released by its stopper.
                    t.state.finish(WatchEnd::Exited);
                    release(&t);
                }
            } else {
                i += 1;
            }
        }
        let members = trees
            .iter()
            .map(|t| match &t.meter {
                Meter::Proc(p) => p.len(),
                Meter::Cgroup { .. } => 0,
            })
            .sum();
        probe.forget_stale(members);
        shared.watched.store(trees.len() as u64, Ordering::Relaxed);
        shared.ticks.fetch_add(1, Ordering::Relaxed);
        shared
            .cpu_us
            .store(thread_cpu().as_micros() as u64, Ordering::Relaxed);
    }
    for t in trees {
        release(&t);
    }
}

/// Remove the tree's cgroup (best effort: it fails while processes remain).
fn release(t: &Watched) {
    if let Meter::Cgroup { cg, .. } = &t.meter
        && let Err(e) = cg.remove()
    {
        tracing::debug!(path = %cg.path().display(), error = %e, "tree cgroup not removed");
    }
}

/// Sample one tree, emit its crossings, start the stop at a hard limit. True when the tree is done.
fn tick(t: &mut Watched, grace: Duration, probe: &mut tracker::Probe) -> bool {
    let m = t.meter.measure(t.root, probe);
    if !m.alive {
        return true;
    }
    let rss_mb = m.rss_bytes as f64 / (1024.0 * 1024.0);
    let (mut verdicts, cpu_percent) = t.eval.observe(Instant::now(), rss_mb, m.cpu_secs);
    if m.oom_killed && !verdicts.iter().any(|v| v.level == Level::Limit) {
        verdicts.push(thresholds::Verdict {
            level: Level::Limit,
            resource: ResourceKind::Memory,
            threshold: t.eval.limits().memory.hard.unwrap_or(0) as f64,
        });
    }
    let resource = |v: &thresholds::Verdict, action| Resource {
        pid: t.root as u32,
        rss_mb: (rss_mb * 10.0).round() / 10.0,
        cpu_percent: (cpu_percent * 10.0).round() / 10.0,
        threshold: v.threshold,
        action,
        resource: Some(v.resource.as_str().to_string()),
        delegation_id: t.delegation_id.clone(),
    };
    for v in &verdicts {
        match v.level {
            Level::Warning => {
                t.bus.emit(EventBody::ResourceWarning(resource(
                    v,
                    ResourceAction::None,
                )));
            }
            Level::Critical => {
                t.bus.emit(EventBody::ResourceCritical(resource(
                    v,
                    ResourceAction::None,
                )));
            }
            Level::Limit => {
                tracing::warn!(
                    root = t.root,
                    resource = v.resource.as_str(),
                    rss_mb,
                    cpu_percent,
                    threshold = v.threshold,
                    "hard limit reached; stopping the tree"
                );
                let body = resource(v, ResourceAction::Terminate);
                stop_in_background(t, body, m.oom_killed, grace);
                return true;
            }
        }
    }
    false
}

/// Stop the tree off the sampler thread (the grace period must not delay other trees), then emit
/// `resource.limit` with the action that was needed: `terminate` if SIGTERM sufficed, `kill` if
/// SIGKILL (or `cgroup.kill`, or the kernel's OOM killer) was.
fn stop_in_background(t: &mut Watched, mut body: Resource, oom_killed: bool, grace: Duration) {
    let root = t.root;
    let bus = t.bus.clone();
    let state = t.state.clone();
    let fallback_state = t.state.clone();
    t.stopping = true;
    t.state.limited.store(true, Ordering::SeqCst);
    // The stopper owns the cgroup now; the sampler forgets the tree.
    let meter = std::mem::replace(
        &mut t.meter,
        Meter::Proc(Box::new(tracker::TreeTracker::new(root, 0))),
    );
    let run = move || {
        let outcome = process::stop_tree(root, grace);
        let mut action = match outcome {
            StopOutcome::Killed => ResourceAction::Kill,
            StopOutcome::Terminated | StopOutcome::AlreadyGone => ResourceAction::Terminate,
        };
        if oom_killed {
            action = ResourceAction::Kill;
        }
        if let Meter::Cgroup { cg, .. } = &meter {
            // Anything that escaped the session and process group is still in the cgroup.
            if cg.procs().iter().any(|&p| is_alive(p)) {
                let _ = cg.kill();
                action = ResourceAction::Kill;
            }
        }
        body.action = action;
        bus.emit(EventBody::ResourceLimit(body));
        state.finish(WatchEnd::Limited(action));
        if let Meter::Cgroup { cg, .. } = &meter {
            let _ = cg.remove();
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("mpm-governor-stop".into())
        .spawn(run)
    {
        tracing::error!(root, error = %e, "cannot spawn the stopper thread");
        // Fall back to a SIGKILL of the group from here: never leave a tree over its limit.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(root),
            nix::sys::signal::Signal::SIGKILL,
        );
        fallback_state.finish(WatchEnd::Limited(ResourceAction::Kill));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AgentLimits;

    #[test]
    fn agent_sections_replace_global_ones() {
        let global = LimitsConfig::default();
        let r = resolve_limits(&global, None);
        assert_eq!(r.memory.warning, Some(512));
        assert_eq!(r.cpu.window_secs, 60);
        let agent = AgentLimits {
            memory_mb: Some(MemoryLimits {
                warning: Some(60),
                critical: Some(120),
                hard: None,
            }),
            cpu: None,
            rlimits: Some(Rlimits {
                nofile: Some(256),
                ..Rlimits::default()
            }),
        };
        let r = resolve_limits(&global, Some(&agent));
        assert_eq!(r.memory.warning, Some(60));
        assert_eq!(r.memory.hard, None);
        assert_eq!(r.cpu, global.cpu);
        assert_eq!(r.rlimits.nofile, Some(256));
    }

    #[test]
    fn governor_and_handles_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Governor>();
        send_sync::<WatchHandle>();
    }

    #[test]
    fn mode_off_and_auto_without_cgroup_poll() {
        let dir = tempfile::tempdir().unwrap();
        let probe = CgroupProbe {
            fs_root: dir.path().to_path_buf(),
            self_cgroup: "0::/\n".into(),
        };
        assert_eq!(choose_mode("off", &probe).unwrap().0, GovernorMode::Polling);
        assert_eq!(
            choose_mode("auto", &probe).unwrap().0,
            GovernorMode::Polling
        );
        assert!(choose_mode(dir.path().to_str().unwrap(), &probe).is_err());
    }
}
