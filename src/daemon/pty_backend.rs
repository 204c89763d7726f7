//! The daemon's real backend: each hosted session is the same [`Session`] `mpm run` runs
//! in-process (one assembly path: supervisor, restarts, summary, event order), started with
//! exactly what the client sent (argv, cwd, its whole environment, its resolved configuration).
//! Only the host differs: output goes to a broadcast sink that keeps mpm's own screen model
//! ([`crate::screen::Screen`]) of the session; an attaching client gets the bytes that redraw the
//! current screen ([`crate::screen::Screen::redraw`]: characters, bold, cursor, alternate screen,
//! input modes; colours come back with the agent's next repaint) and, atomically under the same
//! lock, a subscription to every later chunk. A client whose stdout is not a
//! terminal gets, instead, exactly what the PTY produced from the first byte (no redraw), with
//! backpressure.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};

use super::backend::{Attachment, HostedSession, SessionBackend, SpawnError, SpawnRequest};
use crate::config::{self, Config, Overrides, paths};
use crate::governor::Governor;
use crate::patterns::Engine;
use crate::pty::{OutputSink, PtyRun, WinSize};
use crate::session::{Host, Session, SessionError, SessionHandle, SessionSpec, SharedParts};

/// Output chunks an attached client may fall behind by before its stream is dropped.
const SUBSCRIBER_BACKLOG: usize = 4096;

/// Hosts sessions on PTYs with the full supervisor. Sessions share one governor (one sampler
/// thread) and one compiled engine per pattern set, so an idle session costs little more than its
/// agent.
pub(crate) struct PtyBackend {
    patterns: Vec<PathBuf>,
    state_dir: PathBuf,
    governor: Mutex<Option<Arc<Governor>>>,
    engines: Mutex<Vec<(String, Arc<Engine>)>>,
    /// The daemon's bound on running sub-agents across all sessions (`executor.max_parallel` of
    /// the daemon's configuration; unset: of the first session's).
    max_parallel: Option<usize>,
    slots: Mutex<Option<crate::executor::Slots>>,
    /// The one runtime every session's executor runs on (built at the first delegation).
    executor_runtime: crate::executor::ExecutorRuntime,
}

/// Compiled engines kept for reuse (distinct pattern sets; the oldest is dropped first).
const ENGINE_CACHE: usize = 8;

impl PtyBackend {
    /// `patterns`: the daemon's own `--patterns`; `state_dir` holds each session's delegation
    /// output under `sessions/<id>/`.
    pub(crate) fn new(patterns: Vec<PathBuf>, state_dir: PathBuf) -> Self {
        PtyBackend {
            patterns,
            state_dir,
            governor: Mutex::new(None),
            engines: Mutex::new(Vec::new()),
            max_parallel: None,
            slots: Mutex::new(None),
            executor_runtime: crate::executor::ExecutorRuntime::lazy(
                crate::executor::runtime::DAEMON_WORKERS,
            ),
        }
    }

    /// Bound the sub-agents of all sessions together to `max` running at once (the daemon's own
    /// `executor.max_parallel`). Without it, the first session's configuration sets the bound.
    pub(crate) fn with_max_parallel(mut self, max: usize) -> Self {
        self.max_parallel = Some(max);
        self
    }

    /// The running slots every session's executor shares: one `executor.max_parallel` per daemon.
    fn slots(&self, cfg: &Config) -> crate::executor::Slots {
        let mut s = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        s.get_or_insert_with(|| {
            let max = self.max_parallel.unwrap_or(cfg.executor.max_parallel);
            tracing::info!(
                max,
                "sub-agents of all sessions bounded by executor.max_parallel"
            );
            crate::executor::Slots::new(max)
        })
        .clone()
    }

    /// The shared governor, started with the first session's `limits` (interval, cgroup mode).
    fn governor(&self, cfg: &Config) -> Result<Arc<Governor>, SpawnError> {
        let mut g = self.governor.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(g) = g.as_ref() {
            return Ok(g.clone());
        }
        let grace = cfg.run.grace();
        let started =
            Governor::start(&cfg.limits, grace).map_err(|e| SpawnError::Other(e.to_string()))?;
        let started = Arc::new(started);
        *g = Some(started.clone());
        Ok(started)
    }

    /// The engine for this pattern set and agent registry: reused while the files are unchanged
    /// (path, size and modification time are part of the key).
    fn engine_for(
        &self,
        cfg: &Config,
        patterns: &[PathBuf],
    ) -> Result<Option<Arc<Engine>>, SpawnError> {
        if !cfg.run.detect {
            return Ok(None);
        }
        let files = crate::patterns::configured_sources(patterns);
        let mut key = serde_json::to_string(&cfg.agents).unwrap_or_default();
        for f in &files {
            let meta = std::fs::metadata(f).ok();
            let stamp = meta.as_ref().and_then(|m| m.modified().ok());
            key.push_str(&format!(
                "\n{}|{:?}|{:?}",
                f.display(),
                meta.map(|m| m.len()),
                stamp
            ));
        }
        let mut cache = self.engines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, e)) = cache.iter().find(|(k, _)| *k == key) {
            return Ok(Some(e.clone()));
        }
        let engine = crate::supervisor::build_engine(cfg, patterns)
            .map_err(|e| SpawnError::Other(e.to_string()))?;
        if cache.len() >= ENGINE_CACHE {
            cache.remove(0);
        }
        cache.push((key, engine.clone()));
        Ok(Some(engine))
    }

    /// The configuration a client's `mpm run` would have had in-process: the user file, the
    /// project file of the client's working directory, the daemon's environment, then the
    /// client's flags.
    fn config_for(&self, req: &SpawnRequest) -> Result<Config, SpawnError> {
        let f = &req.flags;
        let mut ov = Overrides {
            config_file: f.config.as_ref().map(PathBuf::from),
            ..Overrides::default()
        };
        if let Some(p) = &f.profile {
            ov.set("profile", p.clone(), "--profile");
        }
        if f.no_detect {
            ov.set("run.detect", false, "--no-detect");
        }
        if f.no_exec {
            ov.set("run.exec", false, "--no-exec");
        }
        if let Some(m) = f.mode {
            ov.set("orchestration.mode", m.as_str(), "--mode");
        }
        let files = [
            paths::config_dir().join("config.yaml"),
            req.cwd.join(".mpm/config.yaml"),
        ];
        config::load_from(&files, std::env::vars(), &ov)
            .map(|l| l.config)
            .map_err(|e| SpawnError::Other(e.to_string()))
    }
}

/// How the first attaching client gets the output.
enum FirstClient {
    /// A terminal: a redraw of the current screen, then live output (lossy when it falls behind).
    Terminal,
    /// A pipe, not yet attached: output waits for it (bounded by [`PIPE_ATTACH_WAIT`]).
    PipeWaiting,
    /// A pipe, attached: every byte from the start, no redraw, with backpressure.
    Pipe(Sender<Arc<[u8]>>),
}

/// How long a pipe session's output waits for its client's attach before it goes on without it.
const PIPE_ATTACH_WAIT: Duration = Duration::from_secs(10);

struct Screen {
    model: crate::screen::Screen,
    subscribers: Vec<Sender<Arc<[u8]>>>,
    /// Attached terminal clients, told when the agent stops itself (Ctrl-Z).
    suspend_subscribers: Vec<Sender<()>>,
    first: FirstClient,
    closed: bool,
}

impl Screen {
    /// Output into the model. Rows that scroll out are not kept: only the visible screen is
    /// redrawn for a re-attaching client.
    fn feed(&mut self, bytes: &[u8]) {
        self.model.feed(bytes, &mut |_, _| {});
        self.forget_history();
    }

    fn forget_history(&mut self) {
        if !self.model.history_mut().is_empty() {
            let gone = std::mem::take(self.model.history_mut());
            self.model.recycle(gone);
        }
    }
}

/// The screen model and its subscribers, with the condition a pipe session's output waits on.
struct ScreenState {
    screen: Mutex<Screen>,
    attached: Condvar,
}

impl ScreenState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Screen> {
        self.screen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One chunk into the screen model and to every attached client.
    fn broadcast(&self, chunk: &[u8]) -> Option<Sender<Arc<[u8]>>> {
        let chunk: Arc<[u8]> = chunk.into();
        let mut s = self.lock();
        if matches!(s.first, FirstClient::PipeWaiting) {
            let deadline = Instant::now() + PIPE_ATTACH_WAIT;
            while matches!(s.first, FirstClient::PipeWaiting) {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    tracing::warn!("the pipe client did not attach: its output is not kept");
                    s.first = FirstClient::Terminal;
                    break;
                }
                s = self
                    .attached
                    .wait_timeout(s, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        s.feed(&chunk);
        s.subscribers.retain(|tx| match tx.try_send(chunk.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        });
        match &s.first {
            FirstClient::Pipe(tx) => Some(tx.clone()),
            _ => None,
        }
    }

    /// The session is over: end every stream and free the screen model.
    fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        s.subscribers.clear();
        s.suspend_subscribers.clear();
        s.first = FirstClient::Terminal;
        s.model = crate::screen::Screen::new(1, 1);
        self.attached.notify_all();
    }
}

/// The PTY's output: into the screen model and to every attached client. A pipe client gets every
/// chunk with backpressure (a blocking send outside the lock); when it goes away the session ends
/// as a writer into a closed pipe would.
struct BroadcastSink {
    state: Arc<ScreenState>,
    handle: SessionHandle,
}

impl OutputSink for BroadcastSink {
    fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        if let Some(pipe) = self.state.broadcast(chunk)
            && pipe.send(chunk.into()).is_err()
        {
            let mut s = self.state.lock();
            if matches!(s.first, FirstClient::Pipe(_)) {
                s.first = FirstClient::Terminal;
                drop(s);
                tracing::info!("the pipe client went away: ending the session");
                self.handle.output_gone(libc::SIGPIPE);
            }
        }
        Ok(())
    }
}

/// The daemon host of a [`Session`]: output to the screen model and attached clients.
struct DaemonHost {
    state: Arc<ScreenState>,
    handle: SessionHandle,
    pid: Arc<AtomicI32>,
    started: Option<Sender<Result<i32, SpawnError>>>,
}

impl Host for DaemonHost {
    fn output(&mut self) -> Box<dyn OutputSink> {
        Box::new(BroadcastSink {
            state: self.state.clone(),
            handle: self.handle.clone(),
        })
    }

    fn started(&mut self, pty: &Arc<PtyRun>) {
        self.pid.store(pty.pid(), Ordering::SeqCst);
        if let Some(tx) = self.started.take() {
            let _ = tx.send(Ok(pty.pid()));
        }
    }

    /// Job control through the daemon: the attached terminal clients suspend themselves and send
    /// `Resume` when continued; with none attached, the agent is continued at once (nobody could).
    fn suspended(&mut self, pty: &Arc<PtyRun>) {
        let told = {
            let mut s = self.state.lock();
            s.suspend_subscribers.retain(|tx| tx.try_send(()).is_ok());
            !s.suspend_subscribers.is_empty()
        };
        if !told {
            pty.resume();
        }
    }

    fn notice(&mut self, text: &str) {
        self.state
            .broadcast(format!("\r\n[mpm: {text}]\r\n").as_bytes());
    }
}

struct PtyHosted {
    id: String,
    handle: SessionHandle,
    state: Arc<ScreenState>,
    pid: Arc<AtomicI32>,
    /// The end: status and the delegation summary.
    exit: Mutex<Option<(Option<i32>, Option<String>)>>,
    exited: Condvar,
    /// The agent's published state (the supervisor's dispatcher writes it).
    agent_state: crate::supervisor::StateMirror,
}

/// A start failure as the daemon reports it (127/126 keep their meaning).
fn spawn_error(e: &SessionError, argv0: &str) -> SpawnError {
    let message =
        crate::session::start_failure_message(e, argv0, "install it or check the name and PATH");
    match e.exit_status() {
        status @ (126 | 127) => SpawnError::Command { status, message },
        _ => SpawnError::Other(message),
    }
}

impl SessionBackend for PtyBackend {
    fn spawn(&self, req: SpawnRequest) -> Result<Arc<dyn HostedSession>, SpawnError> {
        if req.argv.is_empty() {
            return Err(SpawnError::EmptyCommand);
        }
        // The client's configuration and environment when it sent them (a current client always
        // does); else the daemon's view (an older client).
        let (cfg, env) = match &req.client {
            Some(c) => {
                let cfg: Config = serde_json::from_value(c.config.clone()).map_err(|e| {
                    SpawnError::Other(format!("the client's configuration is not valid: {e}"))
                })?;
                let env = if c.full_env {
                    req.env.clone()
                } else {
                    std::env::vars().chain(req.env.iter().cloned()).collect()
                };
                (cfg, env)
            }
            None => (
                self.config_for(&req)?,
                std::env::vars().chain(req.env.iter().cloned()).collect(),
            ),
        };
        let pipe_out = req.client.as_ref().is_some_and(|c| !c.stdout_tty);
        let mut patterns = self.patterns.clone();
        let project_patterns = req.cwd.join(".mpm/patterns");
        if project_patterns.is_dir() && req.cwd != std::env::current_dir().unwrap_or_default() {
            patterns.insert(0, project_patterns);
        }
        patterns.extend(req.flags.patterns.iter().map(PathBuf::from));
        let size = WinSize {
            cols: req.cols.clamp(1, MAX_SIDE),
            rows: req.rows.clamp(1, MAX_SIDE),
        };
        let shared = SharedParts {
            engine: self.engine_for(&cfg, &patterns)?,
            governor: Some(self.governor(&cfg)?),
            slots: Some(self.slots(&cfg)),
            executor_runtime: Some(self.executor_runtime.clone()),
        };
        let argv0 = req.argv[0].clone();
        let spec = SessionSpec {
            argv: req.argv.clone(),
            cwd: req.cwd.clone(),
            env: Some(env),
            output_dir: crate::session::delegation_output_dir(&cfg, &self.state_dir, &req.id),
            config: cfg,
            patterns,
            size,
            termios: None,
            record: None,
            record_input: false,
            watchdog_exe: None,
        };
        // Which limit stopped the agent, said in one line on the client's terminal at the end.
        let limit = crate::notify::LimitWatch::attach(&req.events);
        let session = Session::assemble(spec, req.events.clone(), shared)
            .map_err(|e| spawn_error(&e, &argv0))?;
        let handle = session.handle();
        let agent_state = session.state_mirror();
        let state = Arc::new(ScreenState {
            screen: Mutex::new(Screen {
                model: crate::screen::Screen::new(size.cols, size.rows),
                subscribers: Vec::new(),
                suspend_subscribers: Vec::new(),
                first: if pipe_out {
                    FirstClient::PipeWaiting
                } else {
                    FirstClient::Terminal
                },
                closed: false,
            }),
            attached: Condvar::new(),
        });
        let pid = Arc::new(AtomicI32::new(0));
        let hosted = Arc::new(PtyHosted {
            id: req.id.clone(),
            handle: handle.clone(),
            state: state.clone(),
            pid: pid.clone(),
            exit: Mutex::new(None),
            exited: Condvar::new(),
            agent_state,
        });
        let (started_tx, started_rx) = crossbeam_channel::bounded(1);
        let h = hosted.clone();
        std::thread::Builder::new()
            .name("mpm-hosted".into())
            .spawn(move || {
                let mut host = DaemonHost {
                    state,
                    handle,
                    pid,
                    started: Some(started_tx),
                };
                let end = session.run(&mut host);
                if let (Some(tx), Err(e)) = (host.started.take(), &end.result) {
                    let _ = tx.send(Err(spawn_error(e, &argv0)));
                }
                for s in &end.summaries {
                    tracing::info!(session = %h.id, agent = %s.agent, status = s.status.as_str(), "delegation ended");
                }
                // The seam's order: exit event stored, status visible, then streams end.
                let summary = match (limit.line(), end.summary.clone()) {
                    (Some(line), Some(s)) => Some(format!("{line}\n{s}")),
                    (Some(line), None) => Some(format!("{line}\n")),
                    (None, s) => s,
                };
                *h.exit.lock().unwrap_or_else(|e| e.into_inner()) = Some((Some(end.status()), summary));
                h.exited.notify_all();
                h.state.close();
                drop(host);
                // Give the ended session's memory back to the system now (its threads' arenas
                // would otherwise keep it): the daemon's RSS stays flat over many sessions.
                // SAFETY: malloc_trim only walks the allocator's own free lists.
                #[cfg(target_os = "linux")]
                unsafe {
                    libc::malloc_trim(0)
                };
            })
            .map_err(|e| SpawnError::Other(format!("cannot start the session's thread: {e}")))?;
        match started_rx.recv() {
            Ok(Ok(_)) => Ok(hosted),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SpawnError::Other(
                "the session ended before it started".into(),
            )),
        }
    }
}

/// The largest PTY side the daemon accepts (larger requests are clamped: a screen model of
/// 65535x65535 cells would not fit in memory).
const MAX_SIDE: u16 = 4096;

impl HostedSession for PtyHosted {
    fn id(&self) -> &str {
        &self.id
    }

    fn agent_state(&self) -> Option<crate::events::SessionState> {
        Some(self.agent_state.get())
    }

    fn pid(&self) -> u32 {
        self.pid.load(Ordering::SeqCst) as u32
    }

    fn write_input(&self, bytes: &[u8]) {
        if let Err(e) = self.handle.write_input(bytes) {
            tracing::debug!(session = %self.id, error = %e, "input to an ended session");
        }
    }

    fn eof(&self) {
        self.handle.eof();
    }

    fn resize(&self, cols: u16, rows: u16) {
        let (cols, rows) = (cols.clamp(1, MAX_SIDE), rows.clamp(1, MAX_SIDE));
        {
            let mut s = self.state.lock();
            if !s.closed {
                s.model.resize(cols, rows);
                s.forget_history();
            }
        }
        self.handle.resize(WinSize { cols, rows });
    }

    fn resume(&self) {
        self.handle.resume();
    }

    fn signalled(&self, signal: i32) {
        self.handle.signalled(signal);
    }

    fn attach(&self) -> Attachment {
        let (tx, rx) = crossbeam_channel::bounded(SUBSCRIBER_BACKLOG);
        let (suspend_tx, suspended) = crossbeam_channel::bounded(1);
        let mut s = self.state.lock();
        if matches!(s.first, FirstClient::PipeWaiting) {
            // The pipe client: no redraw, every byte from the start.
            s.first = FirstClient::Pipe(tx);
            self.state.attached.notify_all();
            return Attachment {
                snapshot: Vec::new(),
                output: rx,
                suspended,
            };
        }
        let snapshot = s.model.redraw();
        if !s.closed {
            s.subscribers.push(tx);
            s.suspend_subscribers.push(suspend_tx);
        }
        Attachment {
            snapshot,
            output: rx,
            suspended,
        }
    }

    fn stop(&self, grace: Duration) {
        if self.try_wait().is_some() {
            return;
        }
        self.handle
            .stop(if grace.is_zero() { None } else { Some(grace) });
        self.wait();
    }

    fn wait(&self) -> Option<i32> {
        let mut exit = self.exit.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some((code, _)) = &*exit {
                return *code;
            }
            exit = self.exited.wait(exit).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn try_wait(&self) -> Option<Option<i32>> {
        self.exit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(code, _)| *code)
    }

    fn summary(&self) -> Option<String> {
        self.exit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|(_, s)| s.clone())
    }
}
