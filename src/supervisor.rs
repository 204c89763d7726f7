//! The supervisor: assembles one session's components around its PTY child.
//!
//! `mpm run` (in-process) and `mpm daemon` (hosted sessions) both use it, so a session behaves the
//! same either way: the compiled pattern engine, the screen pipeline fed by the output tap, the claude
//! transcript tail sharing the screen's de-duplication, the executor that runs delegations, and the
//! governor watching the agent's tree. Data flows one way: tap → pipeline → `detection` events on the
//! bus → executor; the pass-through never waits on any of it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
}

/// One session's detection, execution and governance. Create before the spawn, hand
/// [`Supervisor::consumer`] and [`Supervisor::on_spawn`] to the PTY session, call
/// [`Supervisor::finish`] after it ended.
pub struct Supervisor {
    bus: Bus,
    engine: Option<Arc<Engine>>,
    dedup: crate::detect::Dedup,
    executor: Option<ExecutorHandle>,
    governor: Option<Arc<Governor>>,
    main_watch: Arc<Mutex<Option<WatchHandle>>>,
    tailer: Option<claude::TranscriptTailer>,
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
        let engine = if cfg.run.detect { Some(build_engine(cfg, o.patterns)?) } else { None };
        let governor = Arc::new(Governor::start(&cfg.limits, grace(cfg))?);
        let executor = if cfg.run.detect && cfg.run.exec {
            let gov = governor.clone();
            let limits_cfg = cfg.clone();
            let bus = o.bus.clone();
            let handle = Executor::start(cfg, o.bus.clone(), o.output_dir)?;
            handle.set_spawn_hook(Box::new(move |pid, agent, delegation_id| {
                let limits = resolve_limits(
                    &limits_cfg.limits,
                    limits_cfg.agents.get(agent).and_then(|a| a.limits.as_ref()),
                );
                let watch = gov.watch(pid, limits, bus.clone(), Some(delegation_id.to_string()));
                Some(Box::new(watch) as crate::executor::SpawnGuard)
            }));
            Some(handle)
        } else {
            None
        };
        Ok(Supervisor {
            bus: o.bus,
            engine,
            dedup: crate::detect::Dedup::new(),
            executor,
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
        self.governor.as_ref().map(|g| g.mode().as_str().to_string())
    }

    /// For a claude command: pin the transcript with `--session-id` (unless the user chose a session)
    /// and start tailing it. Returns the argv to spawn.
    pub fn prepare_argv(&mut self, argv: Vec<String>, transcript: bool) -> Vec<String> {
        let Some(engine) = self.engine.clone() else { return argv };
        if !transcript || !is_claude(&argv) {
            return argv;
        }
        let prepared = claude::prepare_args(&argv[1..]);
        let mut out = vec![argv[0].clone()];
        out.extend(prepared.args);
        if let Some(id) = prepared.session_id {
            let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"));
            let path = claude::transcript_path(&home, &self.cwd, &id);
            let bus = self.bus.clone();
            let executor = self.executor.clone();
            match crate::detect::transcript_tap(engine, self.dedup.clone(), path, prepared.resumed, move |d| {
                publish(&bus, executor.as_ref(), vec![d]);
            }) {
                Ok(t) => self.tailer = Some(t),
                Err(e) => tracing::warn!(error = %e, "cannot tail the claude transcript"),
            }
        }
        out
    }

    /// The screen pipeline for the output tap (None when detection is off).
    pub fn consumer(&self) -> Option<Box<dyn OutputConsumer>> {
        let engine = self.engine.clone()?;
        let pipeline = Pipeline::new(engine, self.cols, self.rows).with_dedup(self.dedup.clone());
        Some(Box::new(ScreenConsumer { pipeline, bus: self.bus.clone(), executor: self.executor.clone() }))
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

    /// True when the governor stopped the main session at its hard limit.
    pub fn main_limit_reached(&self) -> bool {
        self.main_watch.lock().unwrap_or_else(|e| e.into_inner()).as_ref().is_some_and(|w| w.limit_reached())
    }

    /// After the session: read the rest of the transcript, then cancel or await delegations per
    /// `executor.on_session_exit`. Returns one summary per delegation.
    pub fn finish(mut self) -> Vec<DelegationSummary> {
        if let Some(t) = self.tailer.take() {
            t.stop();
        }
        self.main_watch.lock().unwrap_or_else(|e| e.into_inner()).take();
        let summaries = match self.executor.take() {
            Some(x) => x.shutdown(self.exit_policy),
            None => Vec::new(),
        };
        self.governor.take();
        summaries
    }
}

fn grace(cfg: &Config) -> std::time::Duration {
    std::time::Duration::from_secs_f64(cfg.run.grace_secs.clamp(0.0, 3600.0))
}

/// True when argv[0] is the claude CLI.
pub fn is_claude(argv: &[String]) -> bool {
    argv.first()
        .and_then(|p| Path::new(p).file_name())
        .is_some_and(|n| n == "claude")
}

/// Emit detections as events and hand executable delegations to the executor, each with its
/// detection's step as parent.
fn publish(bus: &Bus, executor: Option<&ExecutorHandle>, found: Vec<Detection>) {
    for d in found {
        let is_delegation = d.category == "delegation" && !d.handled_by_agent;
        let ev = bus.emit(EventBody::Detection(d.clone()));
        if is_delegation && let Some(x) = executor {
            x.submit_with_parent(&d, Some(ev.step_id.clone()));
        }
    }
}

/// The screen pipeline as the tap's consumer.
struct ScreenConsumer {
    pipeline: Pipeline,
    bus: Bus,
    executor: Option<ExecutorHandle>,
}

impl OutputConsumer for ScreenConsumer {
    fn feed(&mut self, bytes: &[u8]) {
        let found = self.pipeline.feed(bytes);
        publish(&self.bus, self.executor.as_ref(), found);
    }

    fn resize(&mut self, cols: u16, rows: u16) {
        let found = self.pipeline.resize(cols, rows);
        publish(&self.bus, self.executor.as_ref(), found);
    }

    fn finish(&mut self) {
        let found = self.pipeline.finish();
        publish(&self.bus, self.executor.as_ref(), found);
    }
}
