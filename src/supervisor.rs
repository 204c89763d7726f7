//! The supervisor: assembles one session's components around its PTY child.
//!
//! `mpm run` (in-process) and `mpm daemon` (hosted sessions) both use it, so a session behaves the
//! same either way: the compiled pattern engine, the screen pipeline fed by the output tap, the claude
//! transcript tail sharing the screen's de-duplication, the executor that runs delegations, and the
//! governor watching the agent's tree. Data flows one way: tap → pipeline → `detection` events on the
//! bus → executor; the pass-through never waits on any of it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{Config, SessionExitPolicy};
use crate::detect::{Pipeline, claude};
use crate::events::{Bus, Detection, EventBody};
use crate::executor::{DelegationSummary, Executor, ExecutorHandle};
use crate::governor::{Governor, WatchHandle, resolve_limits};
use crate::patterns::{Engine, PatternError};
use crate::pty::OutputConsumer;

/// Errors assembling a session (before anything runs).
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(transparent)]
    Patterns(#[from] PatternError),
    #[error(transparent)]
    Executor(#[from] crate::executor::ExecutorError),
    #[error(transparent)]
    Governor(#[from] crate::governor::GovernorError),
    #[error("cannot start the detection dispatcher: {0}")]
    Thread(#[source] std::io::Error),
}

/// Build the engine from the built-in packs, the configured pattern folders and `extra` files, with
/// the agent registry's names.
pub fn build_engine(cfg: &Config, extra: &[PathBuf]) -> Result<Arc<Engine>, PatternError> {
    let engine = Engine::builder()
        .agents(&cfg.agents)
        .files(crate::patterns::configured_sources(extra))
        .build()?;
    Ok(Arc::new(engine))
}

/// What to assemble.
pub struct SupervisorOptions<'a> {
    pub config: &'a Config,
    /// `--patterns` files.
    pub patterns: &'a [PathBuf],
    /// The session's event bus.
    pub bus: Bus,
    /// Where delegation output goes (default `<state>/sessions/<session>/`).
    pub output_dir: PathBuf,
    /// The initial PTY size (the screen model's size).
    pub cols: u16,
    pub rows: u16,
    /// The working directory of the agent (for claude's transcript path).
    pub cwd: PathBuf,
    /// A compiled engine to share (the daemon shares one per pattern set); `None` builds one.
    pub engine: Option<Arc<Engine>>,
    /// A governor to share (one sampler thread for every session of a daemon); `None` starts one.
    pub governor: Option<Arc<Governor>>,
}

/// Starts the session's executor when the first delegation needs it.
type StartExecutor = Box<dyn FnOnce() -> Option<ExecutorHandle> + Send>;

/// The executor, started on first use.
struct LazyExecutor {
    start: Option<StartExecutor>,
    handle: Option<ExecutorHandle>,
}

impl LazyExecutor {
    fn get(&mut self) -> Option<&ExecutorHandle> {
        if let Some(start) = self.start.take() {
            self.handle = start();
        }
        self.handle.as_ref()
    }
}

/// One session's detection, execution and governance. Create before the spawn, hand
/// [`Supervisor::consumer`] and [`Supervisor::on_spawn`] to the PTY session, call
/// [`Supervisor::finish`] after it ended.
pub struct Supervisor {
    bus: Bus,
    engine: Option<Arc<Engine>>,
    dedup: crate::detect::Dedup,
    governor: Option<Arc<Governor>>,
    main_watch: Arc<Mutex<Option<WatchHandle>>>,
    tailer: Option<claude::TranscriptTailer>,
    dispatcher: Option<Dispatcher>,
    claude_session: Option<String>,
    exit_policy: SessionExitPolicy,
    config: Config,
    cols: u16,
    rows: u16,
    cwd: PathBuf,
    /// Results back to the main agent; started by `prepare_argv` when delegations run.
    feedback: Option<crate::feedback::Feedback>,
    runs_delegations: bool,
}

impl Supervisor {
    /// Assemble per the config: detection when `run.detect`, execution when also `run.exec`; the
    /// governor always.
    pub fn start(o: SupervisorOptions<'_>) -> Result<Supervisor, SupervisorError> {
        let cfg = o.config;
        // `orchestration.mode`: observe never runs, passthrough never detects.
        let (detect, exec) = cfg.orchestration.detect_exec(cfg.run.detect, cfg.run.exec);
        let engine = match (detect, o.engine) {
            (false, _) => None,
            (true, Some(shared)) => Some(shared),
            (true, None) => Some(build_engine(cfg, o.patterns)?),
        };
        let governor = match o.governor {
            Some(shared) => shared,
            None => Arc::new(Governor::start(&cfg.limits, grace(cfg))?),
        };
        // The executor (a runtime and its threads) starts with the first delegation: an idle
        // session costs none of it.
        let executor: Option<StartExecutor> = if detect && exec {
            let gov = governor.clone();
            let cfg = cfg.clone();
            let bus = o.bus.clone();
            let output_dir = o.output_dir;
            Some(Box::new(move || {
                let handle = match Executor::start(&cfg, bus.clone(), output_dir) {
                    Ok(h) => h,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the executor: delegations are recorded, not run");
                        return None;
                    }
                };
                handle.set_spawn_hook(Box::new(move |pid, agent, delegation_id| {
                    let limits = resolve_limits(
                        &cfg.limits,
                        cfg.agents.get(agent).and_then(|a| a.limits.as_ref()),
                    );
                    let watch =
                        gov.watch(pid, limits, bus.clone(), Some(delegation_id.to_string()));
                    Some(Box::new(watch) as crate::executor::SpawnGuard)
                }));
                Some(handle)
            }))
        } else {
            None
        };
        let dispatcher = match &engine {
            Some(_) => Some(
                Dispatcher::start(
                    o.bus.clone(),
                    LazyExecutor {
                        start: executor,
                        handle: None,
                    },
                    Duration::from_millis(cfg.run.settle_ms),
                )
                .map_err(SupervisorError::Thread)?,
            ),
            None => None,
        };
        Ok(Supervisor {
            claude_session: None,
            dispatcher,
            bus: o.bus,
            engine,
            dedup: crate::detect::Dedup::new(),
            governor: Some(governor),
            main_watch: Arc::new(Mutex::new(None)),
            tailer: None,
            exit_policy: cfg.executor.on_session_exit,
            config: cfg.clone(),
            cols: o.cols,
            rows: o.rows,
            cwd: o.cwd,
            feedback: None,
            runs_delegations: detect && exec,
        })
    }

    /// `cgroup` or `polling`.
    pub fn governor_mode(&self) -> Option<String> {
        self.governor
            .as_ref()
            .map(|g| g.mode().as_str().to_string())
    }

    /// For a claude command: pin the transcript with `--session-id` (unless the user chose a session)
    /// and start tailing it. Returns the argv to spawn.
    pub fn prepare_argv(&mut self, argv: Vec<String>, transcript: bool) -> Vec<String> {
        let argv = crate::feedback::prompt::inject_argv(&self.config, argv);
        if self.runs_delegations && self.feedback.is_none() {
            self.feedback = crate::feedback::start_for(&self.config, &argv, &self.bus);
        }
        let Some(engine) = self.engine.clone() else {
            return argv;
        };
        if !transcript || !is_claude(&argv) {
            return argv;
        }
        let prepared = claude::prepare_args(&argv[1..]);
        let mut out = vec![argv[0].clone()];
        out.extend(prepared.args);
        self.claude_session = prepared.session_id.clone();
        if let Some(id) = prepared.session_id {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/"));
            let path = claude::transcript_path(&home, &self.cwd, &id);
            let out = self.dispatcher.as_ref().map(Dispatcher::sender);
            match crate::detect::transcript_tap(
                engine,
                self.dedup.clone(),
                path,
                prepared.resumed,
                move |d| {
                    if let Some(out) = &out {
                        let _ = out.send(DispatchMsg::Found(d));
                    }
                },
            ) {
                Ok(t) => self.tailer = Some(t),
                Err(e) => tracing::warn!(error = %e, "cannot tail the claude transcript"),
            }
        }
        out
    }

    /// The claude session id mpm pinned or followed (for `--resume` on a restart).
    pub fn claude_session(&self) -> Option<&str> {
        self.claude_session.as_deref()
    }

    /// The screen pipeline for the output tap (None when detection is off).
    pub fn consumer(&self) -> Option<Box<dyn OutputConsumer>> {
        let engine = self.engine.clone()?;
        let out = self.dispatcher.as_ref()?.sender();
        let (dedup, bus) = (self.dedup.clone(), self.bus.clone());
        let pipeline = crate::detect::Contained::new(
            self.cols,
            self.rows,
            move |c, r| Pipeline::new(engine.clone(), c, r).with_dedup(dedup.clone()),
            move |incident| {
                bus.emit(incident.event());
            },
        );
        let port = self.pty_port();
        Some(Box::new(ScreenConsumer {
            pipeline,
            out,
            port,
        }))
    }

    /// The session's side of result delivery by paste (None when results are not fed back).
    pub fn pty_port(&self) -> Option<Arc<crate::feedback::port::PtyPort>> {
        self.feedback.as_ref().map(|f| f.port())
    }

    /// For the agent CLI's hooks (Stop, UserPromptSubmit): hands over finished results.
    pub fn feedback_handle(&self) -> Option<crate::feedback::FeedbackHandle> {
        let wait = Duration::from_secs(self.config.orchestration.stop_wait_secs);
        self.feedback.as_ref().map(|f| f.handle(wait))
    }

    /// Called with the agent's pid right after the spawn: the governor watches its tree.
    pub fn on_spawn(&self) -> Box<dyn FnOnce(i32) + Send> {
        let governor = self.governor.clone();
        let slot = self.main_watch.clone();
        let bus = self.bus.clone();
        let limits = resolve_limits(&self.config.limits, None);
        Box::new(move |pid| {
            if let Some(g) = governor {
                let handle = g.watch(pid as u32, limits, bus, None);
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
            }
        })
    }

    /// Called before `session.exited`: when the governor is stopping the main tree at its limit,
    /// wait (bounded) until it has, so `resource.limit` precedes `session.exited`.
    pub fn before_exit(&self) -> Box<dyn FnOnce() + Send> {
        let slot = self.main_watch.clone();
        let wait = grace(&self.config) + Duration::from_secs(1);
        Box::new(move || {
            let guard = slot.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(w) = guard.as_ref().filter(|w| w.limit_reached()) {
                w.wait_ended(wait);
            }
        })
    }

    /// True when the governor stopped the main session at its hard limit.
    pub fn main_limit_reached(&self) -> bool {
        self.main_watch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|w| w.limit_reached())
    }

    /// After the session: read the rest of the transcript, then cancel or await delegations per
    /// `executor.on_session_exit`. Returns one summary per delegation.
    pub fn finish(mut self) -> Vec<DelegationSummary> {
        if let Some(t) = self.tailer.take() {
            t.stop();
        }
        if let Some(f) = self.feedback.take() {
            f.close();
        }
        let executor = self.dispatcher.take().and_then(Dispatcher::close);
        self.main_watch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let summaries = match executor {
            Some(x) => x.shutdown(self.exit_policy),
            None => Vec::new(),
        };
        self.governor.take();
        summaries
    }
}

fn grace(cfg: &Config) -> Duration {
    Duration::from_secs_f64(cfg.run.grace_secs.clamp(0.0, 3600.0))
}

/// True when `argv[0]` is the claude CLI.
pub fn is_claude(argv: &[String]) -> bool {
    argv.first()
        .and_then(|p| Path::new(p).file_name())
        .is_some_and(|n| n == "claude")
}

/// Emit detections as events and hand executable delegations to the executor, each with its
/// detection's step as parent.
fn publish(bus: &Bus, executor: &mut LazyExecutor, d: Detection) {
    let is_delegation = d.category == "delegation" && !d.handled_by_agent;
    let ev = bus.emit(EventBody::Detection(d.clone()));
    if is_delegation && let Some(x) = executor.get() {
        x.submit_with_parent(&d, Some(ev.step_id.clone()));
    }
}

enum DispatchMsg {
    Found(Detection),
    Close,
}

/// Holds each detection for a short settle window before it is published. A TUI grows a
/// paragraph row by row while the model streams, so the screen can show a wrapped delegation
/// before its last row exists; the settle window lets the complete line replace its prefix, so
/// one thing said gives one detection and one delegation runs with the whole task.
///
/// Rule: a held detection whose text (task, title, or line) is a whole-word prefix of a newer one
/// of the same category and agent/ticket type is replaced by the newer one (which is held from the
/// older one's deadline); a newer one that is a prefix of a held one is dropped. Everything else is
/// published when its window ends, in arrival order, and all held detections are published on close.
struct Dispatcher {
    tx: crossbeam_channel::Sender<DispatchMsg>,
    thread: Option<std::thread::JoinHandle<Option<ExecutorHandle>>>,
}

struct Held {
    due: Instant,
    group: String,
    text: String,
    d: Detection,
}

impl Dispatcher {
    fn start(
        bus: Bus,
        mut executor: LazyExecutor,
        settle: Duration,
    ) -> std::io::Result<Dispatcher> {
        let (tx, rx) = crossbeam_channel::unbounded::<DispatchMsg>();
        let thread = std::thread::Builder::new()
            .name("mpm-dispatch".into())
            .spawn(move || {
                let mut held: Vec<Held> = Vec::new();
                loop {
                    let msg = match held.first() {
                        Some(h) => rx.recv_deadline(h.due),
                        None => rx
                            .recv()
                            .map_err(|_| crossbeam_channel::RecvTimeoutError::Disconnected),
                    };
                    match msg {
                        Ok(DispatchMsg::Found(d)) => hold(&mut held, d, settle),
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                        Ok(DispatchMsg::Close)
                        | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                            for h in held.drain(..) {
                                publish(&bus, &mut executor, h.d);
                            }
                            return executor.handle;
                        }
                    }
                    let now = Instant::now();
                    while held.first().is_some_and(|h| h.due <= now) {
                        let h = held.remove(0);
                        publish(&bus, &mut executor, h.d);
                    }
                }
            })?;
        Ok(Dispatcher {
            tx,
            thread: Some(thread),
        })
    }

    fn sender(&self) -> crossbeam_channel::Sender<DispatchMsg> {
        self.tx.clone()
    }

    /// Publish everything still held and stop; returns the executor if one was started.
    fn close(mut self) -> Option<ExecutorHandle> {
        let _ = self.tx.send(DispatchMsg::Close);
        self.thread.take().and_then(|t| t.join().ok().flatten())
    }
}

/// True when `short` is `long` cut at a word boundary.
fn word_prefix(short: &str, long: &str) -> bool {
    long.len() > short.len()
        && long.starts_with(short)
        && long[short.len()..].starts_with(|c: char| c.is_whitespace() || c.is_ascii_punctuation())
}

fn hold(held: &mut Vec<Held>, d: Detection, settle: Duration) {
    let (group, text) = crate::detect::dedup::key_parts(&d);
    for h in held.iter_mut() {
        if h.group != group {
            continue;
        }
        if word_prefix(&h.text, &text) {
            h.text = text;
            h.d = d;
            return;
        }
        if word_prefix(&text, &h.text) || h.text == text {
            return;
        }
    }
    held.push(Held {
        due: Instant::now() + settle,
        group,
        text,
        d,
    });
}

/// The screen pipeline as the tap's consumer.
struct ScreenConsumer {
    pipeline: crate::detect::Contained,
    out: crossbeam_channel::Sender<DispatchMsg>,
    /// Told about output (idleness, bracketed paste) for result delivery.
    port: Option<Arc<crate::feedback::port::PtyPort>>,
}

impl ScreenConsumer {
    fn send(&self, found: Vec<Detection>) {
        for d in found {
            let _ = self.out.send(DispatchMsg::Found(d));
        }
    }
}

impl OutputConsumer for ScreenConsumer {
    fn feed(&mut self, bytes: &[u8]) {
        if let Some(p) = &self.port {
            p.output(bytes);
        }
        let found = self.pipeline.feed(bytes);
        self.send(found);
    }

    fn resize(&mut self, cols: u16, rows: u16) {
        let found = self.pipeline.resize(cols, rows);
        self.send(found);
    }

    fn finish(&mut self) {
        let found = self.pipeline.finish();
        self.send(found);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::TextSource;

    fn delegation(agent: &str, task: &str) -> Detection {
        Detection {
            category: "delegation".into(),
            pattern: "p".into(),
            text: format!("{agent} Agent: {task}"),
            source: TextSource::Screen,
            agent: Some(agent.into()),
            task: Some(task.into()),
            ticket_type: None,
            title: None,
            priority: None,
            handled_by_agent: false,
            is_final: true,
        }
    }

    fn tasks(held: &[Held]) -> Vec<&str> {
        held.iter().map(|h| h.d.task.as_deref().unwrap()).collect()
    }

    #[test]
    fn a_longer_line_replaces_its_held_prefix() {
        let mut held = Vec::new();
        let settle = Duration::from_secs(1);
        hold(
            &mut held,
            delegation("engineer", "implement fib(n) iteratively, add"),
            settle,
        );
        hold(
            &mut held,
            delegation("engineer", "implement fib(n) iteratively, add type hints."),
            settle,
        );
        assert_eq!(
            tasks(&held),
            ["implement fib(n) iteratively, add type hints."]
        );
        // The prefix seen again (a redraw) does not come back.
        hold(
            &mut held,
            delegation("engineer", "implement fib(n)"),
            settle,
        );
        assert_eq!(held.len(), 1);
    }

    #[test]
    fn different_agents_words_and_categories_stay_apart() {
        let mut held = Vec::new();
        let settle = Duration::from_secs(1);
        hold(&mut held, delegation("engineer", "test the api"), settle);
        hold(&mut held, delegation("qa", "test the api and more"), settle);
        hold(&mut held, delegation("engineer", "test the apis"), settle);
        assert_eq!(
            tasks(&held),
            ["test the api", "test the api and more", "test the apis"]
        );
    }

    #[test]
    fn dispatcher_publishes_everything_held_on_close() {
        let bus = Bus::new(crate::events::Context::new());
        let rx = bus.subscribe();
        let lazy = LazyExecutor {
            start: None,
            handle: None,
        };
        let d = Dispatcher::start(bus.clone(), lazy, Duration::from_secs(3600)).unwrap();
        let tx = d.sender();
        tx.send(DispatchMsg::Found(delegation("qa", "check it")))
            .unwrap();
        tx.send(DispatchMsg::Found(delegation("qa", "check it twice")))
            .unwrap();
        d.close();
        let got: Vec<_> = rx.try_iter().collect();
        assert_eq!(got.len(), 1);
        match &got[0].body {
            EventBody::Detection(det) => assert_eq!(det.task.as_deref(), Some("check it twice")),
            other => panic!("{other:?}"),
        }
    }
}
