//! The supervisor: assembles one session's components around its PTY child.
//!
//! `mpm run` (in-process) and `mpm daemon` (hosted sessions) both use it, so a session behaves the
//! same either way: the compiled pattern engine, the screen pipeline fed by the output tap, the claude
//! transcript tail sharing the screen's de-duplication, the executor that runs delegations, and the
//! governor watching the agent's tree. Data flows one way: tap → pipeline → `detection` events on the
//! bus → executor; the pass-through never waits on any of it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
}

impl Supervisor {
    /// Assemble per the config: detection when `run.detect`, execution when also `run.exec`; the
    /// governor always.
    pub fn start(o: SupervisorOptions<'_>) -> Result<Supervisor, SupervisorError> {
        let cfg = o.config;
        let engine = match (cfg.run.detect, o.engine) {
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
        let executor: Option<StartExecutor> = if cfg.run.detect && cfg.run.exec {
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
        let pipeline = Pipeline::new(engine, self.cols, self.rows).with_dedup(self.dedup.clone());
        let out = self.dispatcher.as_ref()?.sender();
        Some(Box::new(ScreenConsumer { pipeline, out }))
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
/// detection's step as parent. Only final detections dispatch (a provisional one may still grow);
/// the screen pipeline hands over final ones only, the transcript's are final as read.
fn publish(bus: &Bus, executor: &mut LazyExecutor, d: Detection) {
    if !d.is_final {
        return;
    }
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

/// Publishes detections from every source on one thread, in arrival order. No clock decides what a
/// detection says: the screen pipeline only hands over detections whose block is complete
/// ([`crate::detect::finality`]), so a wrapped delegation runs once, with its whole task, and
/// `mpm scan` over the same bytes gives the same detections.
struct Dispatcher {
    tx: crossbeam_channel::Sender<DispatchMsg>,
    thread: Option<std::thread::JoinHandle<Option<ExecutorHandle>>>,
}

impl Dispatcher {
    fn start(bus: Bus, mut executor: LazyExecutor) -> std::io::Result<Dispatcher> {
        let (tx, rx) = crossbeam_channel::unbounded::<DispatchMsg>();
        let thread = std::thread::Builder::new()
            .name("mpm-dispatch".into())
            .spawn(move || {
                while let Ok(DispatchMsg::Found(d)) = rx.recv() {
                    publish(&bus, &mut executor, d);
                }
                executor.handle
            })?;
        Ok(Dispatcher {
            tx,
            thread: Some(thread),
        })
    }

    fn sender(&self) -> crossbeam_channel::Sender<DispatchMsg> {
        self.tx.clone()
    }

    /// Publish everything sent so far and stop; returns the executor if one was started.
    fn close(mut self) -> Option<ExecutorHandle> {
        let _ = self.tx.send(DispatchMsg::Close);
        self.thread.take().and_then(|t| t.join().ok().flatten())
    }
}

/// The screen pipeline as the tap's consumer.
struct ScreenConsumer {
    pipeline: Pipeline,
    out: crossbeam_channel::Sender<DispatchMsg>,
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

    fn delegation(agent: &str, task: &str, is_final: bool) -> Detection {
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
            is_final,
        }
    }

    #[test]
    fn dispatcher_publishes_final_detections_in_order_and_drops_provisional_ones() {
        let bus = Bus::new(crate::events::Context::new());
        let rx = bus.subscribe();
        let lazy = LazyExecutor {
            start: None,
            handle: None,
        };
        let d = Dispatcher::start(bus.clone(), lazy).unwrap();
        let tx = d.sender();
        tx.send(DispatchMsg::Found(delegation("qa", "check it", false)))
            .unwrap();
        tx.send(DispatchMsg::Found(delegation("qa", "check it twice", true)))
            .unwrap();
        tx.send(DispatchMsg::Found(delegation("qa", "and again", true)))
            .unwrap();
        d.close();
        let got: Vec<_> = rx
            .try_iter()
            .map(|e| match &e.body {
                EventBody::Detection(det) => det.task.clone().unwrap_or_default(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got, ["check it twice", "and again"]);
    }
}
