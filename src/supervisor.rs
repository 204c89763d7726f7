//! The supervisor: assembles one session's components around its PTY child.
//!
//! `mpm run` (in-process) and `mpm daemon` (hosted sessions) both use it, so a session behaves the
//! same either way: the compiled pattern engine, the screen pipeline fed by the output tap, the claude
//! transcript tail sharing the screen's de-duplication, the executor that runs delegations, and the
//! governor watching the agent's tree, and for claude the hook server (`mpm hook`) and the state
//! cues. Data flows one way: tap / transcript / hooks → the dispatcher thread (the dispatch decision
//! of [`crate::detect::dispatch`] and the session state of [`crate::state`]) → `detection`,
//! `detection.dispatch` and `session.state` events on the bus → the executor, a bus listener
//! ([`ExecutorIntake`]); detection knows nothing of the executor, and the pass-through never waits
//! on any of it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{Config, SessionExitPolicy};
use crate::detect::dispatch::{Action, DispatchCore};
use crate::detect::{Pipeline, claude};
use crate::events::{Bus, Detection, EventBody, SessionState};
use crate::executor::{DelegationSummary, Executor, ExecutorHandle};
use crate::governor::{Governor, WatchHandle, resolve_limits};
use crate::hook::{HookEvent, HookResponder, NoResponse};
use crate::patterns::{Engine, PatternError};
use crate::pty::OutputConsumer;
use crate::state::cues::{CueScanner, CueTable};
use crate::state::{Signal, StateMachine, Transition};

/// Errors assembling a session (before anything runs).
#[derive(Debug, thiserror::Error)]
pub(crate) enum SupervisorError {
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
pub(crate) fn build_engine(cfg: &Config, extra: &[PathBuf]) -> Result<Arc<Engine>, PatternError> {
    let engine = Engine::builder()
        .agents(&cfg.agents)
        .files(crate::patterns::configured_sources(extra))
        .build()?;
    Ok(Arc::new(engine))
}

/// What to assemble.
pub(crate) struct SupervisorOptions<'a> {
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
    /// The working directory of the agent (for claude's transcript path; sub-agents start there).
    pub cwd: PathBuf,
    /// The client's whole environment (a daemon-hosted session); `None`: this process's. Sub-agents
    /// start with it, and the CLIs' transcripts are looked for under its `HOME`.
    pub env: Option<&'a [(String, String)]>,
    /// A compiled engine to share (the daemon shares one per pattern set); `None` builds one.
    pub engine: Option<Arc<Engine>>,
    /// A governor to share (one sampler thread for every session of a daemon); `None` starts one.
    pub governor: Option<Arc<Governor>>,
    /// Running slots shared with other sessions (the daemon's one `executor.max_parallel`);
    /// `None`: this session's executor has only its own bound.
    pub slots: Option<crate::executor::Slots>,
    /// A runtime to run the executor on (the daemon's one); `None`: the executor builds its own.
    pub executor_runtime: Option<crate::executor::ExecutorRuntime>,
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

/// The executor's side of the bus: a listener taking each `detection.dispatch` (once: the bus calls
/// a listener exactly once per event, synchronously, so none is lost or repeated) and submitting it
/// with the `detection` event's step as parent. The executor starts with the first one.
#[derive(Clone)]
struct ExecutorIntake(Arc<Mutex<LazyExecutor>>);

impl ExecutorIntake {
    /// Subscribe a lazily started executor to `bus`.
    fn listen(bus: &Bus, start: StartExecutor) -> ExecutorIntake {
        let intake = ExecutorIntake(Arc::new(Mutex::new(LazyExecutor {
            start: Some(start),
            handle: None,
        })));
        let me = intake.clone();
        bus.listen(Arc::new(move |event| {
            // Only dispatches lock: the executor's own events come back through here.
            if let EventBody::DetectionDispatch(_) = &event.body
                && let Some(x) = me.lock().get()
            {
                x.submit_event(event);
            }
        }));
        intake
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LazyExecutor> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The executor, if a delegation started it; no later dispatch starts one.
    fn take(&self) -> Option<ExecutorHandle> {
        let mut lazy = self.lock();
        lazy.start = None;
        lazy.handle.take()
    }
}

/// One session's detection, execution and governance. Create before the spawn, hand
/// [`Supervisor::consumer`] and [`Supervisor::on_spawn`] to the PTY session, call
/// [`Supervisor::finish`] after it ended.
pub(crate) struct Supervisor {
    bus: Bus,
    engine: Option<Arc<Engine>>,
    dedup: crate::detect::Dedup,
    governor: Option<Arc<Governor>>,
    main_watch: Arc<Mutex<Option<WatchHandle>>>,
    tailer: Option<claude::TranscriptTailer>,
    /// De-duplication among the exact sources (transcript, Stop hook) before the session's.
    exact_dedup: crate::detect::Dedup,
    dispatcher: Option<Dispatcher>,
    /// The executor's subscription to the bus (when delegations run).
    intake: Option<ExecutorIntake>,
    claude_session: Option<String>,
    /// The session state, as published by the dispatcher.
    state: StateMirror,
    last_output: LastOutput,
    /// The profile's screen cues of the state (claude, codex, gemini, ...).
    cue_table: Option<CueTable>,
    /// The CLI's screen knowledge (other CLIs than claude).
    cli_screen: Option<Arc<crate::detect::CliScreen>>,
    /// codex's or gemini's transcript, followed as the exact source.
    cli_tailer: Option<crate::detect::cli_transcript::CliTranscript>,
    /// Claude's hooks: the server, and the environment naming its socket for the child.
    hooks: Option<crate::hook::server::HookServer>,
    /// The session's folder in the runtime dir (`hooks.json`, `hook.sock`), removed with it
    /// (declared after `hooks`, so the socket is gone first).
    hook_dir: Option<SessionDir>,
    hook_env: Vec<(String, String)>,
    responder: Arc<dyn HookResponder>,
    exit_policy: SessionExitPolicy,
    config: Config,
    cols: u16,
    rows: u16,
    cwd: PathBuf,
    /// The client's environment (see [`SupervisorOptions::env`]).
    env: Option<Arc<[(String, String)]>>,
    /// Results back to the main agent; started by `prepare_argv` when delegations run.
    feedback: Option<crate::feedback::Feedback>,
    runs_delegations: bool,
}

impl Supervisor {
    /// Assemble per the config: detection when `run.detect`, execution when also `run.exec`; the
    /// governor always.
    pub(crate) fn start(o: SupervisorOptions<'_>) -> Result<Supervisor, SupervisorError> {
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
            let slots = o.slots;
            let origin = crate::executor::SessionOrigin {
                cwd: Some(o.cwd.clone()),
                env: o.env.map(Arc::from),
            };
            let runtime = o.executor_runtime;
            Some(Box::new(move || {
                let started = Executor::start_on(&cfg, bus.clone(), output_dir, slots, runtime);
                let handle = match started {
                    Ok(h) => h,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the executor: delegations are recorded, not run");
                        return None;
                    }
                };
                handle.set_origin(origin);
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
        let state = StateMirror::default();
        let last_output = LastOutput::new();
        let intake = executor.map(|start| ExecutorIntake::listen(&o.bus, start));
        let dispatcher = match &engine {
            Some(_) => Some(
                Dispatcher::start(o.bus.clone(), state.clone(), last_output.clone())
                    .map_err(SupervisorError::Thread)?,
            ),
            None => None,
        };
        Ok(Supervisor {
            claude_session: None,
            state,
            last_output,
            cue_table: None,
            cli_screen: None,
            cli_tailer: None,
            hooks: None,
            hook_dir: None,
            hook_env: Vec::new(),
            responder: Arc::new(NoResponse),
            dispatcher,
            intake,
            bus: o.bus,
            engine,
            dedup: crate::detect::Dedup::new(),
            governor: Some(governor),
            main_watch: Arc::new(Mutex::new(None)),
            tailer: None,
            exact_dedup: crate::detect::Dedup::new(),
            exit_policy: cfg.executor.on_session_exit,
            config: cfg.clone(),
            cols: o.cols,
            rows: o.rows,
            cwd: o.cwd,
            env: o.env.map(Arc::from),
            feedback: None,
            runs_delegations: detect && exec,
        })
    }

    /// A variable of the agent's environment: the client's for a daemon-hosted session, else
    /// this process's. Empty counts as unset.
    fn agent_var(&self, name: &str) -> Option<std::ffi::OsString> {
        let v = match &self.env {
            Some(env) => env
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into()),
            None => std::env::var_os(name),
        };
        v.filter(|v| !v.is_empty())
    }

    /// The agent's `HOME` (where claude, codex and gemini keep their transcripts).
    fn home(&self) -> PathBuf {
        self.agent_var("HOME")
            .map_or_else(|| PathBuf::from("/"), PathBuf::from)
    }

    /// `cgroup` or `polling`.
    pub(crate) fn governor_mode(&self) -> Option<String> {
        self.governor
            .as_ref()
            .map(|g| g.mode().as_str().to_string())
    }

    /// For a claude command: pin the transcript with `--session-id` (unless the user chose a session)
    /// and start tailing it, and add mpm's hooks with `--settings` (unless the user passed
    /// `--settings`). Returns the argv to spawn; [`Supervisor::child_env`] has the environment to add.
    pub(crate) fn prepare_argv(&mut self, argv: Vec<String>, transcript: bool) -> Vec<String> {
        let argv = crate::feedback::prompt::inject_argv(&self.config, argv);
        if self.runs_delegations && self.feedback.is_none() {
            self.feedback = crate::feedback::start_for(&self.config, &argv, &self.bus);
            // claude's Stop / UserPromptSubmit hooks hand the turn's results back.
            if let Some(h) = self.feedback_handle() {
                self.responder = Arc::new(h);
            }
        }
        let Some(engine) = self.engine.clone() else {
            return argv;
        };
        if !is_claude(&argv) {
            // Another agent CLI: its screen knowledge and state cues, by the command's name.
            if let Some(p) = crate::detect::cli_screen::profile_of_command(&argv) {
                self.cue_table = CueTable::builtin(p);
                self.cli_screen = crate::detect::CliScreen::builtin(p);
                let mut argv = argv;
                if let Some(kind) = crate::detect::cli_transcript::Kind::of_profile(p) {
                    // gemini names its chat file after the session id: pin it, as for claude.
                    let session_id = if kind == crate::detect::cli_transcript::Kind::Gemini {
                        crate::detect::cli_transcript::gemini_session_id(&mut argv)
                    } else {
                        None
                    };
                    self.follow_cli_transcript(kind, engine, session_id);
                }
                return argv;
            }
            return argv;
        }
        self.cue_table = CueTable::builtin("claude");
        let mut out = vec![argv[0].clone()];
        let mut syncer = None;
        if transcript {
            let prepared = claude::prepare_args(&argv[1..]);
            out.extend(prepared.args);
            self.claude_session = prepared.session_id.clone();
            if let Some(id) = prepared.session_id {
                let home = self.home();
                let path = claude::transcript_path(&home, &self.cwd, &id);
                let out = self.dispatcher.as_ref().map(Dispatcher::sender);
                // The transcript needs no screen: a 1x1 model costs nothing.
                let mut p =
                    Pipeline::new(engine.clone(), 1, 1).with_dedup(self.exact_dedup.clone());
                let shared = self.dedup.clone();
                match claude::TranscriptTailer::spawn(path, prepared.resumed, move |line| {
                    let Some(out) = &out else { return };
                    for item in claude::parse_line(line) {
                        if let claude::Item::Text(t) = &item {
                            let _ = out.send(DispatchMsg::ExactText(t.clone()));
                        }
                        for d in p.feed_item(&item, crate::events::TextSource::Transcript) {
                            route_exact(&shared, out, d);
                        }
                    }
                    if claude::turn_ended(line) {
                        let _ = out.send(DispatchMsg::TranscriptTurnEnd);
                    }
                }) {
                    Ok(t) => {
                        syncer = Some(t.syncer());
                        self.tailer = Some(t);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot tail the claude transcript"),
                }
            }
        } else {
            out.extend(argv[1..].iter().cloned());
        }
        self.start_hooks(&mut out, engine, syncer);
        out
    }

    /// Follow codex's, gemini's, aider's or opencode's transcript (found once the CLI writes it) as
    /// the exact source: each reply's markdown through the engine, each turn's end to the
    /// dispatcher. gemini's is found by its `session_id` when mpm pinned one.
    fn follow_cli_transcript(
        &mut self,
        kind: crate::detect::cli_transcript::Kind,
        engine: Arc<Engine>,
        session_id: Option<String>,
    ) {
        let Some(out) = self.dispatcher.as_ref().map(Dispatcher::sender) else {
            return;
        };
        let home = self.home();
        let codex_home = self.agent_var("CODEX_HOME").map(PathBuf::from);
        let data_home = self.agent_var("XDG_DATA_HOME").map(PathBuf::from);
        let cwd = self.cwd.clone();
        // Files written since a little before now (coarse file times).
        let since = std::time::SystemTime::now() - Duration::from_secs(2);
        let locate = move || match &session_id {
            Some(id) => crate::detect::cli_transcript::locate_gemini_session(&home, &cwd, id),
            None => crate::detect::cli_transcript::locate(
                kind,
                &home,
                codex_home.as_deref(),
                data_home.as_deref(),
                &cwd,
                since,
            ),
        };
        // The transcript needs no screen: a 1x1 model costs nothing.
        let mut p = Pipeline::new(engine, 1, 1).with_dedup(self.exact_dedup.clone());
        let shared = self.dedup.clone();
        let mut live = false;
        let on_entry = move |e: crate::detect::cli_transcript::Entry| {
            if !live {
                live = true;
                let _ = out.send(DispatchMsg::ExactLive);
            }
            match e {
                crate::detect::cli_transcript::Entry::Item(item) => {
                    if let claude::Item::Text(t) = &item {
                        let _ = out.send(DispatchMsg::ExactText(t.clone()));
                    }
                    for d in p.feed_item(&item, crate::events::TextSource::Transcript) {
                        route_exact(&shared, &out, d);
                    }
                }
                crate::detect::cli_transcript::Entry::TurnEnd => {
                    let _ = out.send(DispatchMsg::TurnEnded);
                }
            }
        };
        let opencode = crate::detect::cli_transcript::OpencodeSession {
            cwd: self.cwd.clone(),
            since,
        };
        match crate::detect::cli_transcript::CliTranscript::spawn(kind, locate, opencode, on_entry)
        {
            Ok(t) => self.cli_tailer = Some(t),
            Err(e) => tracing::warn!(error = %e, "cannot follow the CLI's transcript"),
        }
    }

    /// Start the hook server and add `--settings <file>` to claude's `args`.
    fn start_hooks(
        &mut self,
        args: &mut Vec<String>,
        engine: Arc<Engine>,
        syncer: Option<crate::detect::TranscriptSync>,
    ) {
        if args
            .iter()
            .take_while(|a| *a != "--")
            .any(|a| a == "--settings" || a.starts_with("--settings="))
        {
            tracing::info!("the user passed --settings: mpm's hooks are not added");
            return;
        }
        let Some(tx) = self.dispatcher.as_ref().map(Dispatcher::sender) else {
            return;
        };
        let exe = match std::env::current_exe() {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "no hooks: cannot find mpm's own executable");
                return;
            }
        };
        let dir = crate::config::paths::runtime_dir()
            .join("sessions")
            .join(&self.bus.context().session);
        let settings = dir.join("hooks.json");
        self.hook_dir = Some(SessionDir(dir.clone()));
        let written = crate::hook::server::private_dir(&dir).and_then(|_| {
            let stop_wait = Duration::from_secs(self.config.orchestration.stop_wait_secs);
            std::fs::write(&settings, crate::hook::settings_json(&exe, stop_wait))
        });
        if let Err(e) = written {
            tracing::warn!(error = %e, path = %settings.display(), "no hooks: cannot write the settings file");
            return;
        }
        let handler = hook_handler(
            tx,
            engine,
            (self.exact_dedup.clone(), self.dedup.clone()),
            syncer,
            self.responder.clone(),
        );
        match crate::hook::server::HookServer::start(dir.join("hook.sock"), handler) {
            Ok(server) => {
                self.hook_env = vec![(
                    crate::hook::SOCKET_ENV.to_string(),
                    server.path().display().to_string(),
                )];
                self.hooks = Some(server);
                let sep = args.iter().position(|a| a == "--").unwrap_or(args.len());
                args.splice(
                    sep..sep,
                    ["--settings".to_string(), settings.display().to_string()],
                );
            }
            Err(e) => tracing::warn!(error = %e, "no hooks: cannot start the hook server"),
        }
    }

    /// Environment to add to the agent's (`MPM_HOOK_SOCKET` when hooks are on).
    pub(crate) fn child_env(&self) -> Vec<(String, String)> {
        self.hook_env.clone()
    }

    /// A reader of the session's state that outlives the supervisor (for `mpm status`).
    pub(crate) fn state_mirror(&self) -> StateMirror {
        self.state.clone()
    }

    /// The claude session id mpm pinned or followed (for `--resume` on a restart).
    pub(crate) fn claude_session(&self) -> Option<&str> {
        self.claude_session.as_deref()
    }

    /// The screen pipeline for the output tap (None when detection is off).
    pub(crate) fn consumer(&self) -> Option<Box<dyn OutputConsumer>> {
        let engine = self.engine.clone()?;
        let out = self.dispatcher.as_ref()?.sender();
        let (dedup, bus) = (self.dedup.clone(), self.bus.clone());
        let cli = self.cli_screen.clone();
        let pipeline = crate::detect::Contained::new(
            self.cols,
            self.rows,
            move |c, r| {
                Pipeline::new(engine.clone(), c, r)
                    .with_dedup(dedup.clone())
                    .with_cli(cli.clone())
            },
            move |incident| {
                bus.emit(incident.event());
            },
        );
        let port = self.pty_port();
        Some(Box::new(ScreenConsumer {
            pipeline,
            out,
            port,
            cues: self.cue_table.clone().map(CueScanner::new),
            state: self.state.clone(),
            last_output: self.last_output.clone(),
        }))
    }

    /// The session's side of result delivery by paste (None when results are not fed back).
    /// How finished results reach the main agent (`Off` when they are not fed back at all).
    pub(crate) fn feedback_mode(&self) -> crate::config::FeedbackMode {
        self.feedback
            .as_ref()
            .map_or(crate::config::FeedbackMode::Off, |f| f.mode())
    }

    pub(crate) fn pty_port(&self) -> Option<Arc<crate::feedback::port::PtyPort>> {
        self.feedback.as_ref().map(|f| f.port())
    }

    /// For the agent CLI's hooks (Stop, UserPromptSubmit): hands over finished results.
    pub(crate) fn feedback_handle(&self) -> Option<crate::feedback::FeedbackHandle> {
        let wait = Duration::from_secs(self.config.orchestration.stop_wait_secs);
        self.feedback.as_ref().map(|f| f.handle(wait))
    }

    /// Called with the agent's pid right after the spawn: the governor watches its tree.
    pub(crate) fn on_spawn(&self) -> Box<dyn FnOnce(i32) + Send> {
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
    pub(crate) fn before_exit(&self) -> Box<dyn FnOnce() + Send> {
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
    pub(crate) fn main_limit_reached(&self) -> bool {
        self.main_watch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|w| w.limit_reached())
    }

    /// After the session: read the rest of the transcript, then cancel or await delegations per
    /// `executor.on_session_exit`. Returns one summary per delegation.
    pub(crate) fn finish(mut self) -> Vec<DelegationSummary> {
        // No more hook calls: the agent is gone.
        self.hooks.take();
        self.hook_dir.take();
        if let Some(t) = self.tailer.take() {
            t.stop();
        }
        if let Some(t) = self.cli_tailer.take() {
            t.stop();
        }
        if let Some(f) = self.feedback.take() {
            f.close();
        }
        if let Some(d) = &self.dispatcher {
            let _ = d.tx.send(DispatchMsg::Signal(Signal::Exited));
        }
        if let Some(d) = self.dispatcher.take() {
            d.close();
        }
        let executor = self.intake.take().and_then(|i| i.take());
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

/// A session's folder in the runtime dir: its hook settings file (and socket) are removed on drop,
/// so nothing of an ended session stays in `$XDG_RUNTIME_DIR/mpm/sessions/`.
struct SessionDir(std::path::PathBuf);

impl Drop for SessionDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0.join("hooks.json"));
        let _ = std::fs::remove_file(self.0.join("hook.sock"));
        let _ = std::fs::remove_dir(&self.0);
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // Without `finish` (an error path): the executor (which holds the bus, whose listener
        // holds it) is dropped here, which cancels what it runs, instead of living on in a cycle.
        if let Some(i) = self.intake.take() {
            drop(i.take());
        }
    }
}

fn grace(cfg: &Config) -> Duration {
    cfg.run.grace()
}

/// True when `argv[0]` is the claude CLI.
pub(crate) fn is_claude(argv: &[String]) -> bool {
    argv.first()
        .and_then(|p| Path::new(p).file_name())
        .is_some_and(|n| n == "claude")
}

/// Emit a detection as an event and, for [`Action::Dispatch`] and [`Action::Submit`], a
/// `detection.dispatch` for whoever runs delegations (the executor listens on the bus), its parent
/// the detection's step. `steps` remembers each waiting delegation's event step (by fingerprint
/// key) for its later submit.
fn publish(bus: &Bus, steps: &mut HashMap<String, String>, action: Action) {
    let (d, event, submit) = match action {
        Action::Publish(d) => (d, true, false),
        Action::Dispatch(d) => (d, true, true),
        Action::Submit(d) => (d, false, true),
    };
    let is_delegation = d.category == "delegation" && !d.handled_by_agent;
    let key = is_delegation.then(|| crate::detect::Fingerprint::of(&d).key());
    let parent = if event {
        let step = bus.emit(EventBody::Detection(d.clone())).step_id.clone();
        if let Some(k) = &key
            && !submit
        {
            // Bounded: a step not claimed by then is only a lost parent link.
            if steps.len() >= 10_000 {
                steps.clear();
            }
            steps.insert(k.clone(), step.clone());
        }
        Some(step)
    } else {
        key.and_then(|k| steps.remove(&k))
    };
    if submit {
        let parent = parent.unwrap_or_else(|| bus.context().root_step.clone());
        bus.emit_step(
            EventBody::DetectionDispatch(d),
            crate::events::new_id(),
            Some(parent),
        );
    }
}

enum DispatchMsg {
    /// A detection from any source.
    Found(Detection),
    /// An observation about the session state.
    Signal(Signal),
    /// An exact source (claude's hooks) is live.
    ExactLive,
    /// Markdown an exact source carried in this turn.
    ExactText(String),
    /// A delegation an exact source carried that the screen already reported.
    Confirm(Detection),
    /// The turn ended and the exact sources were drained.
    TurnEnded,
    /// The transcript shows the end of the main agent's turn (its last message, `end_turn`), after
    /// the turn's text was sent. A state signal; without hooks also the turn's end for dispatch.
    TranscriptTurnEnd,
    Close,
}

/// How long output must be silent before the silence signal (for sessions without hooks).
const SILENCE: Duration = Duration::from_secs(5);

/// The session's dispatcher: one thread owning the dispatch decision ([`DispatchCore`]) and the
/// session state ([`StateMachine`]). Every source sends it messages in arrival
/// order; nothing in the decision reads a clock (the one timer is the silence signal of the state).
struct Dispatcher {
    tx: crossbeam_channel::Sender<DispatchMsg>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The published state, mirrored for readers (`mpm status`, the cue scanner); the dispatcher
/// thread is its only writer.
#[derive(Debug, Clone, Default)]
pub(crate) struct StateMirror(Arc<AtomicU8>);

impl StateMirror {
    const ORDER: [SessionState; 6] = [
        SessionState::Starting,
        SessionState::Working,
        SessionState::Idle,
        SessionState::NeedsInput,
        SessionState::Blocked,
        SessionState::Exited,
    ];

    fn set(&self, s: SessionState) {
        let i = Self::ORDER.iter().position(|x| *x == s).unwrap_or(0);
        self.0.store(i as u8, Ordering::Relaxed);
    }

    /// The session's current state.
    pub(crate) fn get(&self) -> SessionState {
        Self::ORDER[usize::from(self.0.load(Ordering::Relaxed)).min(5)]
    }
}

/// When the last output was read, in ms since `base`: written by the screen consumer, read by the
/// dispatcher's silence check.
#[derive(Debug, Clone)]
struct LastOutput {
    base: Instant,
    ms: Arc<AtomicU64>,
}

impl LastOutput {
    fn new() -> LastOutput {
        LastOutput {
            base: Instant::now(),
            ms: Arc::new(AtomicU64::new(0)),
        }
    }
    fn touch(&self) {
        self.ms
            .store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn silent_for(&self) -> Duration {
        self.base
            .elapsed()
            .saturating_sub(Duration::from_millis(self.ms.load(Ordering::Relaxed)))
    }
}

fn emit_state(bus: &Bus, mirror: &StateMirror, t: Transition) {
    mirror.set(t.state);
    bus.emit(EventBody::SessionState {
        state: t.state,
        previous: t.previous,
        reason: t.reason,
        resets_at: t.resets_at,
    });
}

impl Dispatcher {
    fn start(
        bus: Bus,
        mirror: StateMirror,
        last_output: LastOutput,
    ) -> std::io::Result<Dispatcher> {
        let (tx, rx) = crossbeam_channel::unbounded::<DispatchMsg>();
        let thread = std::thread::Builder::new()
            .name("mpm-dispatch".into())
            .spawn(move || {
                let mut core = DispatchCore::new();
                let mut steps = HashMap::new();
                let mut state = StateMachine::new();
                // Claude's hooks were heard: they end the turns for dispatch.
                let mut hooks_live = false;
                // `starting` is implied by `session.started`: only changes are published.
                mirror.set(state.state());
                loop {
                    let msg = match rx.recv_timeout(SILENCE) {
                        Ok(m) => m,
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                            if last_output.silent_for() >= SILENCE
                                && let Some(t) = state.on(&Signal::Silence)
                            {
                                emit_state(&bus, &mirror, t);
                            }
                            continue;
                        }
                        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                            DispatchMsg::Close
                        }
                    };
                    let actions = match msg {
                        DispatchMsg::Found(d) => core.detection(d),
                        DispatchMsg::Signal(sig) => {
                            if let Some(t) = state.on(&sig) {
                                emit_state(&bus, &mirror, t);
                            }
                            Vec::new()
                        }
                        DispatchMsg::ExactLive => {
                            hooks_live = true;
                            core.exact_live();
                            Vec::new()
                        }
                        DispatchMsg::TranscriptTurnEnd => {
                            if hooks_live {
                                // The Stop hook ends the turn, after draining the transcript, for
                                // the state too: one signal decides, not whichever arrives first.
                                Vec::new()
                            } else {
                                if let Some(t) = state.on(&Signal::TranscriptTurnEnd) {
                                    emit_state(&bus, &mirror, t);
                                }
                                // Without hooks the transcript is the exact source: it carried the
                                // whole turn, so screen delegations from now on wait for its turn
                                // ends and dispatch only what it lacked.
                                core.exact_live();
                                core.turn_ended()
                            }
                        }
                        DispatchMsg::Confirm(d) => core.confirm(&d),
                        DispatchMsg::ExactText(t) => {
                            core.exact_text(&t);
                            Vec::new()
                        }
                        DispatchMsg::TurnEnded => core.turn_ended(),
                        DispatchMsg::Close => {
                            for a in core.close() {
                                publish(&bus, &mut steps, a);
                            }
                            return;
                        }
                    };
                    for a in actions {
                        publish(&bus, &mut steps, a);
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

    /// Dispatch what is left (the end of the last turn) and stop.
    fn close(mut self) {
        let _ = self.tx.send(DispatchMsg::Close);
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("the dispatcher panicked");
        }
    }
}

/// An exact source's detection (already de-duplicated among the exact sources): new to the
/// session, it is a detection; a delegation the screen reported first confirms the screen's copy.
fn route_exact(
    shared: &crate::detect::Dedup,
    tx: &crossbeam_channel::Sender<DispatchMsg>,
    d: Detection,
) {
    if shared.admit(&d) {
        let _ = tx.send(DispatchMsg::Found(d));
    } else if d.category == "delegation" && !d.handled_by_agent {
        let _ = tx.send(DispatchMsg::Confirm(d));
    }
}

/// How long the end of a turn waits for the transcript tailer to catch up at most.
const TRANSCRIPT_SYNC: Duration = Duration::from_secs(2);

/// The session's side of claude's hooks: each call is a state signal; the first makes the hooks the
/// exact source of the dispatch; `Stop` drains the transcript, reads the turn's final message (exact
/// text) and closes the turn before the responder answers.
fn hook_handler(
    tx: crossbeam_channel::Sender<DispatchMsg>,
    engine: Arc<Engine>,
    (exact, shared): (crate::detect::Dedup, crate::detect::Dedup),
    syncer: Option<crate::detect::TranscriptSync>,
    responder: Arc<dyn HookResponder>,
) -> crate::hook::server::Handler {
    // The final message needs no screen: a 1x1 model costs nothing.
    let mut pipeline = Pipeline::new(engine, 1, 1).with_dedup(exact);
    let mut live = false;
    Box::new(move |event: HookEvent| {
        if !live {
            live = true;
            let _ = tx.send(DispatchMsg::ExactLive);
        }
        let permission = matches!(&event, HookEvent::Notification(n) if n.is_permission());
        if let HookEvent::Stop(p) = &event {
            if let Some(s) = &syncer
                && !s.sync(TRANSCRIPT_SYNC)
            {
                tracing::debug!("the transcript tailer did not catch up before the turn's end");
            }
            if let Some(text) = &p.last_assistant_message {
                let _ = tx.send(DispatchMsg::ExactText(text.clone()));
                for d in pipeline.feed_markdown(text, crate::events::TextSource::Transcript) {
                    route_exact(&shared, &tx, d);
                }
            }
            let _ = tx.send(DispatchMsg::TurnEnded);
        }
        let _ = tx.send(DispatchMsg::Signal(Signal::Hook {
            event: event.name().to_string(),
            permission,
        }));
        let answer = crate::hook::response(responder.as_ref(), &event);
        if answer.is_some() && matches!(event, HookEvent::Stop(_)) {
            // The Stop was blocked with results: claude works on them (no UserPromptSubmit comes).
            let _ = tx.send(DispatchMsg::Signal(Signal::Hook {
                event: crate::state::STOP_BLOCKED.to_string(),
                permission: false,
            }));
        }
        answer
    })
}

/// The screen pipeline as the tap's consumer.
struct ScreenConsumer {
    pipeline: crate::detect::Contained,
    out: crossbeam_channel::Sender<DispatchMsg>,
    /// Told about output (idleness, bracketed paste) for result delivery.
    port: Option<Arc<crate::feedback::port::PtyPort>>,
    /// The profile's state cues, when it has a table.
    cues: Option<CueScanner>,
    state: StateMirror,
    last_output: LastOutput,
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
        self.last_output.touch();
        let found = self.pipeline.feed(bytes);
        self.send(found);
        if let Some(c) = self.cues.as_mut() {
            let starting = self.state.get() == SessionState::Starting;
            for sig in c.feed(bytes, starting) {
                let _ = self.out.send(DispatchMsg::Signal(sig));
            }
        }
    }

    fn resize(&mut self, cols: u16, rows: u16) {
        let found = self.pipeline.resize(cols, rows);
        self.send(found);
    }

    fn quiet(&mut self) {
        let found = self.pipeline.quiet();
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
            is_final,
            ..Detection::delegation(agent, task, "p", TextSource::Screen)
        }
    }

    #[test]
    fn dispatcher_publishes_detections_and_states() {
        let bus = Bus::new(crate::events::Context::new());
        let rx = bus.subscribe();
        let mirror = StateMirror::default();
        let d = Dispatcher::start(bus.clone(), mirror.clone(), LastOutput::new()).unwrap();
        let tx = d.sender();
        tx.send(DispatchMsg::Found(delegation("qa", "check it", false)))
            .unwrap();
        tx.send(DispatchMsg::Found(delegation("qa", "check it twice", true)))
            .unwrap();
        tx.send(DispatchMsg::Signal(Signal::Hook {
            event: "UserPromptSubmit".into(),
            permission: false,
        }))
        .unwrap();
        tx.send(DispatchMsg::Signal(Signal::Exited)).unwrap();
        d.close();
        assert_eq!(mirror.get(), SessionState::Exited);
        let got: Vec<String> = rx
            .try_iter()
            .map(|e| match &e.body {
                EventBody::Detection(det) => {
                    format!("{}:{}", det.task.as_deref().unwrap_or(""), det.is_final)
                }
                EventBody::SessionState { state, .. } => state.as_str().to_string(),
                other => other.kind().to_string(),
            })
            .collect();
        assert_eq!(
            got,
            ["check it:false", "check it twice:true", "working", "exited"]
        );
    }

    #[test]
    fn the_transcripts_turn_end_makes_the_session_idle() {
        let bus = Bus::new(crate::events::Context::new());
        let rx = bus.subscribe();
        let mirror = StateMirror::default();
        let d = Dispatcher::start(bus.clone(), mirror.clone(), LastOutput::new()).unwrap();
        let tx = d.sender();
        tx.send(DispatchMsg::Signal(Signal::Title { working: true }))
            .unwrap();
        tx.send(DispatchMsg::TranscriptTurnEnd).unwrap();
        d.close();
        assert_eq!(mirror.get(), SessionState::Idle);
        let got: Vec<String> = rx
            .try_iter()
            .filter_map(|e| match &e.body {
                EventBody::SessionState { state, reason, .. } => {
                    Some(format!("{}:{reason}", state.as_str()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            got.last().map(String::as_str),
            Some("idle:transcript"),
            "{got:?}"
        );
    }

    #[test]
    fn final_delegations_leave_detection_as_one_dispatch_event_each() {
        let bus = Bus::new(crate::events::Context::new());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let for_listener = seen.clone();
        bus.listen(Arc::new(move |e| {
            for_listener.lock().unwrap().push(e.clone())
        }));
        let d = Dispatcher::start(bus.clone(), StateMirror::default(), LastOutput::new()).unwrap();
        let tx = d.sender();
        tx.send(DispatchMsg::Found(delegation("qa", "check it", false)))
            .unwrap();
        tx.send(DispatchMsg::Found(delegation("qa", "check it twice", true)))
            .unwrap();
        d.close();
        let events = seen.lock().unwrap().clone();
        let dispatches: Vec<_> = events
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::DetectionDispatch(det) => Some((e, det)),
                _ => None,
            })
            .collect();
        assert_eq!(dispatches.len(), 1, "only the final delegation runs, once");
        let (ev, det) = dispatches[0];
        assert_eq!(det.task.as_deref(), Some("check it twice"));
        let detection = events
            .iter()
            .find(|e| matches!(&e.body, EventBody::Detection(x) if x.is_final))
            .unwrap();
        assert_eq!(ev.parent_step_id.as_ref(), Some(&detection.step_id));
    }
}
