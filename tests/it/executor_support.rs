//! Shared helpers for the executor integration tests: configs with fake agents, an event collector
//! with deadlines, and a guard that shuts the executor down (cancelling everything) on drop.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mpm::config::{AgentConfig, Config, SessionExitPolicy};
use mpm::events::{Bus, Context, Detection, Event, EventBody, TextSource};
use mpm::executor::{DelegationSummary, Executor, ExecutorHandle};

pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn fake() -> String {
    repo().join("fixtures/fake_agent.py").display().to_string()
}

/// An agent running `python3 fake_agent.py STEPS...` (steps may hold placeholders).
pub(crate) fn fake_agent(steps: &[&str]) -> AgentConfig {
    let mut argv = vec!["python3".to_string(), fake()];
    argv.extend(steps.iter().map(|s| s.to_string()));
    AgentConfig {
        argv,
        ..AgentConfig::default()
    }
}

/// A config with small limits, no rate cap, and the given agents added.
pub(crate) fn config(agents: Vec<(&str, AgentConfig)>) -> Config {
    let mut cfg = Config::default();
    cfg.run.grace_secs = 0.3;
    cfg.executor.rate_per_minute = 0;
    cfg.executor.timeout_secs = 20;
    for (name, a) in agents {
        cfg.agents.insert(name.to_string(), a);
    }
    cfg
}

pub(crate) fn delegation(agent: &str, task: &str) -> Detection {
    Detection::delegation(agent, task, "test", TextSource::Text)
}

/// A running executor plus everything it emitted; shuts down with `cancel` on drop.
pub(crate) struct Harness {
    pub handle: Option<ExecutorHandle>,
    pub rx: crossbeam_channel::Receiver<Arc<Event>>,
    pub events: Vec<Arc<Event>>,
    pub dir: tempfile::TempDir,
}

impl Harness {
    pub(crate) fn start(cfg: &Config) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let bus = Bus::new(Context::new());
        let rx = bus.subscribe();
        let handle = Executor::start(cfg, bus, dir.path().join("out")).expect("executor starts");
        Harness {
            handle: Some(handle),
            rx,
            events: Vec::new(),
            dir,
        }
    }

    pub(crate) fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    pub(crate) fn handle(&self) -> &ExecutorHandle {
        self.handle.as_ref().expect("not shut down")
    }

    pub(crate) fn submit(&self, agent: &str, task: &str) {
        self.handle().submit(&delegation(agent, task));
    }

    /// Receive events until `pred` holds over everything received, or panic at the deadline.
    pub(crate) fn until(&mut self, what: &str, pred: impl Fn(&[Arc<Event>]) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !pred(&self.events) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(ev) => self.events.push(ev),
                Err(_) => panic!(
                    "timed out waiting for {what}; events so far:\n{}",
                    self.dump()
                ),
            }
        }
    }

    pub(crate) fn until_finished(&mut self, n: usize) {
        self.until(&format!("{n} finished"), |evs| {
            count(evs, "delegation.finished") >= n
        });
    }

    /// Drain whatever is already in the channel.
    pub(crate) fn drain(&mut self) {
        while let Ok(ev) = self.rx.try_recv() {
            self.events.push(ev);
        }
    }

    pub(crate) fn dump(&self) -> String {
        self.events
            .iter()
            .map(|e| e.to_json_line())
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub(crate) fn shutdown(&mut self, policy: SessionExitPolicy) -> Vec<DelegationSummary> {
        let s = self.handle.take().expect("once").shutdown(policy);
        self.drain();
        s
    }

    /// The finished event of the delegation whose task is `task`.
    pub(crate) fn finished(&self, task: &str) -> &Event {
        self.events
            .iter()
            .find(|e| matches!(&e.body, EventBody::DelegationFinished { delegation, .. } if delegation.task == task))
            .unwrap_or_else(|| panic!("no finished event for {task:?}:\n{}", self.dump()))
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown(SessionExitPolicy::Cancel);
        }
    }
}

pub(crate) fn count(evs: &[Arc<Event>], kind: &str) -> usize {
    evs.iter().filter(|e| e.kind() == kind).count()
}

/// Status string of a finished event.
pub(crate) fn status(e: &Event) -> &'static str {
    match &e.body {
        EventBody::DelegationFinished { status, .. } => status.as_str(),
        _ => "not-finished",
    }
}

pub(crate) fn reason(e: &Event) -> String {
    match &e.body {
        EventBody::DelegationFinished { reason, .. } => reason.clone().unwrap_or_default(),
        _ => String::new(),
    }
}

pub(crate) fn delegation_id(e: &Event) -> &str {
    match &e.body {
        EventBody::DelegationQueued(d) => &d.delegation_id,
        EventBody::DelegationStarted { delegation, .. } => &delegation.delegation_id,
        EventBody::DelegationFinished { delegation, .. } => &delegation.delegation_id,
        _ => "",
    }
}

pub(crate) fn agent_of(e: &Event) -> &str {
    match &e.body {
        EventBody::DelegationQueued(d) => &d.agent,
        EventBody::DelegationStarted { delegation, .. } => &delegation.agent,
        EventBody::DelegationFinished { delegation, .. } => &delegation.agent,
        _ => "",
    }
}

/// The most delegations running at once, from the emitted order of started/finished events
/// (a retry's extra `started` counts only once per delegation).
pub(crate) fn max_overlap(evs: &[Arc<Event>], agent: Option<&str>) -> usize {
    let mut running = std::collections::HashSet::new();
    let mut max = 0;
    for e in evs
        .iter()
        .filter(|e| agent.is_none_or(|a| agent_of(e) == a))
    {
        match e.kind() {
            "delegation.started" => {
                running.insert(delegation_id(e).to_string());
            }
            "delegation.finished" => {
                running.remove(delegation_id(e));
            }
            _ => {}
        }
        max = max.max(running.len());
    }
    max
}

/// True once `pid` is gone (or a zombie nobody reaped yet).
pub(crate) fn pid_gone(pid: i32) -> bool {
    mpm::process::read_stat(pid).is_none_or(|s| s.state == 'Z')
}

/// Poll until `pid` is gone; false at the deadline.
pub(crate) fn wait_pid_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if pid_gone(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    pid_gone(pid)
}

/// Poll until the file exists and holds a pid.
pub(crate) fn read_pid(path: &Path, timeout: Duration) -> i32 {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "no pid in {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills leftover pids even when a test fails half-way.
pub(crate) struct PidGuard(pub Vec<i32>);

impl Drop for PidGuard {
    fn drop(&mut self) {
        for &p in &self.0 {
            if p > 1 && !pid_gone(p) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// A sub-agent's stream-json script for the progress tests (fake agent steps): a tool call (15
/// tokens), 7 s of silence (sleeping: no CPU), the result (150 tokens), 2 s more.
pub(crate) const STREAM_JSON_STEPS: &[&str] = &[
    "print:working on {task}",
    r#"print:{"type":"system","subtype":"init"}"#,
    r#"print:{"type":"assistant","message":{"id":"m1","content":[{"type":"tool_use","name":"Bash","input":{"command":"ls"}}],"usage":{"input_tokens":10,"output_tokens":5}}}"#,
    "sleep:7",
    r#"print:{"type":"result","result":"done","usage":{"input_tokens":100,"output_tokens":50}}"#,
    "sleep:2",
];

/// The `delegation.progress` events of a [`STREAM_JSON_STEPS`] run with `stall_secs: 2`, as
/// (last tool, tokens, stalled, elapsed ms): in order the tool call, then stalled during the
/// silence, then the result's tokens; at most one a second.
pub(crate) fn assert_stream_json_progress(progress: &[(String, u64, bool, u64)]) {
    let summary: Vec<(String, u64, bool)> = progress
        .iter()
        .map(|(t, n, s, _)| (t.clone(), *n, *s))
        .collect();
    let at = |want: (&str, u64, bool)| {
        summary
            .iter()
            .position(|s| s == &(want.0.to_string(), want.1, want.2))
            .unwrap_or_else(|| panic!("no {want:?} in {summary:?}"))
    };
    let (first, stalled, done) = (
        at(("Bash", 15, false)),
        at(("Bash", 15, true)),
        at(("Bash", 150, false)),
    );
    assert!(first < stalled && stalled < done, "{summary:?}");
    // Throttled: at most one event a second (the run lasts about 10 s).
    assert!(progress.len() <= 12, "{summary:?}");
    assert!(
        progress.windows(2).all(|w| w[1].3 >= w[0].3 + 900),
        "{progress:?}"
    );
}
