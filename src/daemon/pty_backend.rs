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

use std::os::unix::net::UnixStream;
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

/// Output the owner's stream may hold before its client attached: past it the sink waits for the
/// attach (the agent blocks in `write`, as under a terminal that is not read yet), at most
/// [`OWNER_ATTACH_WAIT`].
const OWNER_PENDING_BYTES: usize = 1 << 20;

/// How long a session's output (and its end) waits for its owner's attach before it goes on
/// without it (the client died between `Run` and `Attach`).
const OWNER_ATTACH_WAIT: Duration = Duration::from_secs(10);

/// Output not yet parsed into the redraw model. The model is fed lazily, on an attach or a
/// resize, so the relay does not parse every byte; past this bound the older half is dropped and
/// the model is rebuilt from what is left (plus a repaint asked of the agent, see
/// [`PtyHosted::attach`]).
const REDRAW_RING_BYTES: usize = 512 * 1024;

/// The stream of the client that owns the session (the `mpm run` that started it): the sink
/// writes data frames to its socket itself, blocking (backpressure: a slow reader slows the agent,
/// as a slow terminal does in-process), and from the first byte (no redraw).
enum Owner {
    /// No owner: an older client, or it detached, went away or never attached in time.
    None,
    /// Not attached yet: the output so far, every byte of it (bounded, see [`OWNER_PENDING_BYTES`]).
    Waiting(Vec<u8>),
    /// Attached: the connection's writer.
    Attached(Arc<Mutex<UnixStream>>),
    /// A pipe owner that went away: the next output ends the session as a write into a closed
    /// pipe would.
    PipeGone,
}

/// The owner's stream and the condition the sink (and the session's end) wait on for its attach.
struct OwnerSlot {
    owner: Mutex<Owner>,
    attached: Condvar,
    /// The owner's stdout is not a terminal (no job control; its going away ends the session).
    pipe: bool,
}

impl OwnerSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Owner> {
        self.owner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One chunk to the owner. Blocks while its socket is full (or while it has not attached and
    /// the pending bound is reached). True when the session must end (a pipe owner went away).
    fn write(&self, chunk: &[u8]) -> bool {
        let mut o = self.lock();
        let mut deadline = None;
        loop {
            match &mut *o {
                Owner::None => return false,
                Owner::PipeGone => {
                    *o = Owner::None;
                    return true;
                }
                Owner::Waiting(pending) => {
                    if pending.len() + chunk.len() <= OWNER_PENDING_BYTES || pending.is_empty() {
                        pending.extend_from_slice(chunk);
                        return false;
                    }
                    let until = *deadline.get_or_insert_with(|| Instant::now() + OWNER_ATTACH_WAIT);
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        tracing::warn!(
                            "the session's client did not attach: its output is not kept"
                        );
                        *o = Owner::None;
                        return false;
                    }
                    o = self
                        .attached
                        .wait_timeout(o, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                Owner::Attached(w) => {
                    let ok = {
                        let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
                        crate::protocol::write_data(&mut *w, chunk).is_ok()
                    };
                    if ok {
                        return false;
                    }
                    tracing::info!("the session's client went away");
                    if self.pipe {
                        *o = Owner::None;
                        return true;
                    }
                    *o = Owner::None;
                    return false;
                }
            }
        }
    }

    /// The owner attached on `writer`: what it missed, then every later chunk straight from the
    /// sink. `None` when there is no owner to be (it timed out, or was already attached).
    fn attach(&self, writer: &Arc<Mutex<UnixStream>>) -> Option<()> {
        let mut o = self.lock();
        let Owner::Waiting(pending) = &mut *o else {
            return None;
        };
        let pending = std::mem::take(pending);
        let ok = {
            let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
            pending
                .chunks(64 * 1024)
                .try_for_each(|c| crate::protocol::write_data(&mut *w, c))
                .is_ok()
        };
        *o = if ok {
            Owner::Attached(writer.clone())
        } else if self.pipe {
            Owner::PipeGone
        } else {
            Owner::None
        };
        self.attached.notify_all();
        Some(())
    }

    /// The owner detached or its connection ended.
    fn detach(&self) {
        let mut o = self.lock();
        if matches!(*o, Owner::Attached(_)) {
            *o = if self.pipe {
                Owner::PipeGone
            } else {
                Owner::None
            };
        }
    }

    /// At the session's end: give a client that has not attached yet the time to (its output is
    /// waiting for it), so `mpm run -- echo hi` shows `hi`.
    fn await_attach(&self) {
        let until = Instant::now() + OWNER_ATTACH_WAIT;
        let mut o = self.lock();
        while matches!(*o, Owner::Waiting(_)) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                *o = Owner::None;
                break;
            }
            o = self
                .attached
                .wait_timeout(o, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The session is over: no more writes (a write in progress finishes first).
    fn close(&self) {
        *self.lock() = Owner::None;
        self.attached.notify_all();
    }
}

struct Screen {
    model: crate::screen::Screen,
    /// Output not yet parsed into `model` (see [`REDRAW_RING_BYTES`]).
    unparsed: Vec<u8>,
    /// Output was dropped from `unparsed`: the model is rebuilt from what is left.
    stale: bool,
    size: WinSize,
    /// Watchers (`mpm attach`): lossy, never slowing the agent (see [`SUBSCRIBER_BACKLOG`]).
    subscribers: Vec<Sender<Arc<[u8]>>>,
    /// Attached terminal clients, told when the agent stops itself (Ctrl-Z).
    suspend_subscribers: Vec<Sender<()>>,
    /// The owner's attachment channel: never carries data (the sink writes to its socket), it
    /// disconnects when the session closes, which ends the owner's stream with `SessionEnded`.
    owner_end: Vec<Sender<Arc<[u8]>>>,
    closed: bool,
}

impl Screen {
    /// Keep a chunk for the redraw model (parsed later, see [`Screen::catch_up`]).
    fn keep(&mut self, bytes: &[u8]) {
        if self.unparsed.len() + bytes.len() > REDRAW_RING_BYTES {
            let keep = REDRAW_RING_BYTES / 2;
            if bytes.len() >= keep {
                self.unparsed.clear();
                self.unparsed
                    .extend_from_slice(&bytes[bytes.len() - keep..]);
            } else {
                let drop = self.unparsed.len() + bytes.len() - keep;
                self.unparsed.drain(..drop);
                self.unparsed.extend_from_slice(bytes);
            }
            self.stale = true;
            return;
        }
        self.unparsed.extend_from_slice(bytes);
    }

    /// Parse what the model has not seen yet (on an attach, before a resize).
    fn catch_up(&mut self) {
        if self.stale {
            self.model = crate::screen::Screen::new(self.size.cols, self.size.rows);
            self.stale = false;
        }
        if !self.unparsed.is_empty() {
            self.model.feed(&self.unparsed, &mut |_, _| {});
            self.unparsed.clear();
            self.forget_history();
        }
    }

    fn forget_history(&mut self) {
        if !self.model.history_mut().is_empty() {
            let gone = std::mem::take(self.model.history_mut());
            self.model.recycle(gone);
        }
    }
}

/// The screen model and its subscribers, and the owner's stream.
struct ScreenState {
    screen: Mutex<Screen>,
    owner: OwnerSlot,
}

impl ScreenState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Screen> {
        self.screen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One chunk to the redraw ring, every watcher (never blocking) and the owner (blocking).
    /// True when the session must end (its pipe owner went away).
    fn broadcast(&self, chunk: &[u8]) -> bool {
        {
            let mut s = self.lock();
            if !s.closed {
                s.keep(chunk);
                if !s.subscribers.is_empty() {
                    let shared: Arc<[u8]> = chunk.into();
                    s.subscribers
                        .retain(|tx| match tx.try_send(shared.clone()) {
                            Ok(()) => true,
                            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                                false
                            }
                        });
                }
            }
        }
        self.owner.write(chunk)
    }

    /// The session is over: end every stream and free the screen model.
    fn close(&self) {
        self.owner.close();
        let mut s = self.lock();
        s.closed = true;
        s.subscribers.clear();
        s.suspend_subscribers.clear();
        s.owner_end.clear();
        s.model = crate::screen::Screen::new(1, 1);
        s.unparsed = Vec::new();
    }
}

/// The PTY's output: to the redraw ring, every watcher and the owner's socket. When a pipe owner
/// goes away the session ends as a writer into a closed pipe would.
struct BroadcastSink {
    state: Arc<ScreenState>,
    handle: SessionHandle,
}

impl OutputSink for BroadcastSink {
    fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        if self.state.broadcast(chunk) {
            tracing::info!("the pipe client went away: ending the session");
            self.handle.output_gone(libc::SIGPIPE);
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
        if self
            .state
            .broadcast(format!("\r\n[mpm: {text}]\r\n").as_bytes())
        {
            self.handle.output_gone(libc::SIGPIPE);
        }
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
        let owned = req.client.is_some();
        let state = Arc::new(ScreenState {
            screen: Mutex::new(Screen {
                model: crate::screen::Screen::new(size.cols, size.rows),
                unparsed: Vec::new(),
                stale: false,
                size,
                subscribers: Vec::new(),
                suspend_subscribers: Vec::new(),
                owner_end: Vec::new(),
                closed: false,
            }),
            owner: OwnerSlot {
                owner: Mutex::new(if owned {
                    Owner::Waiting(Vec::new())
                } else {
                    Owner::None
                }),
                attached: Condvar::new(),
                pipe: pipe_out,
            },
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
                // Output the owner has not attached for yet waits for it (bounded).
                h.state.owner.await_attach();
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
            if !s.closed && (s.size.cols, s.size.rows) != (cols, rows) {
                // The resize applies where it happens in the stream: what came before is parsed
                // at the old size.
                if !s.stale {
                    s.catch_up();
                }
                s.size = WinSize { cols, rows };
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

    /// A watcher: the redraw of the current screen, then live output (lossy: dropped when it
    /// falls [`SUBSCRIBER_BACKLOG`] chunks behind, so it never slows the agent nor the owner).
    fn attach(&self) -> Attachment {
        let (tx, rx) = crossbeam_channel::bounded(SUBSCRIBER_BACKLOG);
        let (suspend_tx, suspended) = crossbeam_channel::bounded(1);
        let mut s = self.state.lock();
        let stale = s.stale;
        s.catch_up();
        let snapshot = s.model.redraw();
        if !s.closed {
            s.subscribers.push(tx);
            s.suspend_subscribers.push(suspend_tx);
        }
        drop(s);
        if stale {
            // The model lost older output: ask a full-screen agent to repaint.
            self.handle.repaint();
        }
        Attachment {
            snapshot,
            output: rx,
            suspended,
        }
    }

    /// The session's own client (`mpm run`): every byte from the first, written to its socket by
    /// the sink itself, with backpressure. A second attach of the same connection, or one after
    /// the owner gave up waiting, is a watcher.
    fn attach_owner(&self, writer: &Arc<Mutex<UnixStream>>) -> Attachment {
        let (end_tx, output) = crossbeam_channel::bounded(1);
        let (suspend_tx, suspended) = crossbeam_channel::bounded(1);
        // Registered first, so the end (close) cannot slip between the flush and the registration.
        {
            let mut s = self.state.lock();
            if s.closed {
                drop(s);
                // Ended already: what it wrote still goes out (then `SessionEnded`).
                let _ = self.state.owner.attach(writer);
                return Attachment {
                    snapshot: Vec::new(),
                    output,
                    suspended,
                };
            }
            s.owner_end.push(end_tx);
            if !self.state.owner.pipe {
                s.suspend_subscribers.push(suspend_tx);
            }
        }
        if self.state.owner.attach(writer).is_none() {
            return self.attach();
        }
        Attachment {
            snapshot: Vec::new(),
            output,
            suspended,
        }
    }

    fn detach_owner(&self) {
        self.state.owner.detach();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn screen(cols: u16, rows: u16) -> Screen {
        Screen {
            model: crate::screen::Screen::new(cols, rows),
            unparsed: Vec::new(),
            stale: false,
            size: WinSize { cols, rows },
            subscribers: Vec::new(),
            suspend_subscribers: Vec::new(),
            owner_end: Vec::new(),
            closed: false,
        }
    }

    fn text(s: &Screen) -> String {
        String::from_utf8_lossy(&s.model.redraw()).into_owned()
    }

    /// The model is parsed only when asked (attach, resize), from every byte kept.
    #[test]
    fn the_redraw_model_is_parsed_lazily_and_exactly() {
        let mut s = screen(40, 5);
        s.keep(b"first line\r\nsecond");
        assert!(!text(&s).contains("first line"), "not parsed yet");
        s.catch_up();
        assert!(text(&s).contains("first line"));
        assert!(text(&s).contains("second"));
        assert!(s.unparsed.is_empty() && !s.stale);
    }

    /// Past the ring's bound the older output is dropped: the model is rebuilt from the rest, and
    /// the screen's last state is still right.
    #[test]
    fn past_the_ring_the_model_is_rebuilt_from_the_rest() {
        let mut s = screen(40, 5);
        for i in 0..100_000 {
            s.keep(format!("line {i}\r\n").as_bytes());
        }
        assert!(s.stale);
        assert!(s.unparsed.len() <= REDRAW_RING_BYTES);
        s.keep(b"\x1b[2J\x1b[HLAST SCREEN");
        s.catch_up();
        let t = text(&s);
        assert!(t.contains("LAST SCREEN"), "{t:?}");
        assert!(!t.contains("line 99999"), "{t:?}");
        // One chunk larger than the ring keeps its tail.
        let mut s = screen(40, 5);
        let mut big = vec![b'x'; REDRAW_RING_BYTES * 2];
        big.extend_from_slice(b"\r\nTAIL");
        s.keep(&big);
        s.catch_up();
        assert!(text(&s).contains("TAIL"));
    }
}
