//! The daemon's real backend: each hosted session is a [`PtySession`] wrapped by the same
//! [`Supervisor`] `mpm run` uses in-process (pattern engine, screen pipeline, claude transcript,
//! executor, governor), so a session behaves the same whether a terminal or the daemon owns it.
//!
//! Output goes to a broadcast sink that keeps a vt100 screen model of the session: an attaching
//! client gets the bytes that redraw the current screen and, atomically under the same lock, a
//! subscription to every later chunk.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};

use super::backend::{Attachment, HostedSession, SessionBackend, SpawnError, SpawnRequest};
use crate::config::{self, Config, Overrides, paths};
use crate::events::EventBody;
use crate::governor::Governor;
use crate::patterns::Engine;
use crate::pty::{OutputSink, PtyConfig, PtySession, WinSize};
use crate::supervisor::{Supervisor, SupervisorOptions};

/// Output chunks an attached client may fall behind by before its stream is dropped.
const SUBSCRIBER_BACKLOG: usize = 4096;

/// Hosts sessions on PTYs with the full supervisor. Sessions share one governor (one sampler
/// thread) and one compiled engine per pattern set, so an idle session costs little more than its
/// agent.
pub struct PtyBackend {
    patterns: Vec<PathBuf>,
    state_dir: PathBuf,
    governor: Mutex<Option<Arc<Governor>>>,
    engines: Mutex<Vec<(String, Arc<Engine>)>>,
}

/// Compiled engines kept for reuse (distinct pattern sets; the oldest is dropped first).
const ENGINE_CACHE: usize = 8;

impl PtyBackend {
    /// `patterns`: the daemon's own `--patterns`; `state_dir` holds each session's delegation
    /// output under `sessions/<id>/`.
    pub fn new(patterns: Vec<PathBuf>, state_dir: PathBuf) -> Self {
        PtyBackend {
            patterns,
            state_dir,
            governor: Mutex::new(None),
            engines: Mutex::new(Vec::new()),
        }
    }

    /// The shared governor, started with the first session's `limits` (interval, cgroup mode).
    fn governor(&self, cfg: &Config) -> Result<Arc<Governor>, SpawnError> {
        let mut g = self.governor.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(g) = g.as_ref() {
            return Ok(g.clone());
        }
        let grace = Duration::from_secs_f64(cfg.run.grace_secs.clamp(0.0, 3600.0));
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
        let files = [
            paths::config_dir().join("config.yaml"),
            req.cwd.join(".mpm/config.yaml"),
        ];
        config::load_from(&files, std::env::vars(), &ov)
            .map(|l| l.config)
            .map_err(|e| SpawnError::Other(e.to_string()))
    }
}

struct Screen {
    parser: vt100::Parser,
    subscribers: Vec<Sender<Arc<[u8]>>>,
    closed: bool,
}

/// The PTY's output: into the screen model and to every attached client.
struct BroadcastSink(Arc<Mutex<Screen>>);

impl OutputSink for BroadcastSink {
    fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        let chunk: Arc<[u8]> = chunk.into();
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        s.parser.process(&chunk);
        s.subscribers.retain(|tx| match tx.try_send(chunk.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        });
        Ok(())
    }
}

struct PtyHosted {
    id: String,
    pty: Arc<PtySession>,
    screen: Arc<Mutex<Screen>>,
    grace: Duration,
    exit: Mutex<Option<Option<i32>>>,
    exited: Condvar,
    /// The agent's published state (the supervisor's dispatcher writes it).
    agent_state: crate::supervisor::StateMirror,
}

impl SessionBackend for PtyBackend {
    fn spawn(&self, req: SpawnRequest) -> Result<Arc<dyn HostedSession>, SpawnError> {
        if req.argv.is_empty() {
            return Err(SpawnError::EmptyCommand);
        }
        let cfg = &self.config_for(&req)?;
        let mut patterns = self.patterns.clone();
        let project_patterns = req.cwd.join(".mpm/patterns");
        if project_patterns.is_dir() && req.cwd != std::env::current_dir().unwrap_or_default() {
            patterns.insert(0, project_patterns);
        }
        patterns.extend(req.flags.patterns.iter().map(PathBuf::from));
        let (cols, rows) = (req.cols.max(1), req.rows.max(1));
        let mut sup = Supervisor::start(SupervisorOptions {
            config: cfg,
            patterns: &patterns,
            bus: req.events.clone(),
            output_dir: self.state_dir.join("sessions").join(&req.id),
            cols,
            rows,
            cwd: req.cwd.clone(),
            engine: self.engine_for(cfg, &patterns)?,
            governor: Some(self.governor(cfg)?),
        })
        .map_err(|e| SpawnError::Other(e.to_string()))?;
        let transcript = cfg.active_profile().map(|p| p.transcript).unwrap_or(false);
        let argv = sup.prepare_argv(req.argv.clone(), transcript);
        let grace = Duration::from_secs_f64(cfg.run.grace_secs.clamp(0.0, 3600.0));
        let screen = Arc::new(Mutex::new(Screen {
            parser: vt100::Parser::new(rows, cols, 0),
            subscribers: Vec::new(),
            closed: false,
        }));
        let mut env = req.env.clone();
        env.retain(|(k, _)| k != "NOTIFY_SOCKET");
        env.extend(sup.child_env());
        let pty = PtySession::spawn(PtyConfig {
            argv: argv.clone(),
            env,
            cwd: Some(req.cwd.clone()),
            size: WinSize { cols, rows },
            termios: None,
            rlimits: Some(cfg.limits.rlimits.clone()),
            grace,
            output: Box::new(BroadcastSink(screen.clone())),
            consumer: sup.consumer(),
            tap_capacity_bytes: cfg.run.tap_capacity_bytes,
            recorder: None,
        })
        .map_err(|e| SpawnError::Start {
            program: argv[0].clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let pty = Arc::new(pty);
        let pid = pty.pid();
        (sup.on_spawn())(pid);
        let started = Instant::now();
        req.events.emit(EventBody::SessionStarted {
            command: argv,
            pid: pid as u32,
            cols,
            rows,
            governor_mode: sup.governor_mode(),
        });
        let hosted = Arc::new(PtyHosted {
            agent_state: sup.state_mirror(),
            id: req.id.clone(),
            pty: pty.clone(),
            screen,
            grace,
            exit: Mutex::new(None),
            exited: Condvar::new(),
        });
        let h = hosted.clone();
        let bus = req.events.clone();
        std::thread::Builder::new()
            .name("mpm-hosted-wait".into())
            .spawn(move || {
                let exit = h.pty.wait();
                (sup.before_exit())();
                let summaries = sup.finish();
                for s in summaries {
                    tracing::info!(session = %h.id, agent = %s.agent, status = s.status.as_str(), "delegation ended");
                }
                // The seam's order: exit event stored, status visible, then streams end.
                bus.emit(EventBody::SessionExited {
                    exit_code: exit.code(),
                    signal: exit.signal(),
                    duration_ms: started.elapsed().as_millis() as u64,
                    tap_overrun_bytes: exit.tap_overrun_bytes,
                });
                *h.exit.lock().unwrap_or_else(|e| e.into_inner()) = Some(Some(exit.shell_status()));
                h.exited.notify_all();
                let mut s = h.screen.lock().unwrap_or_else(|e| e.into_inner());
                s.closed = true;
                s.subscribers.clear();
            })
            .map_err(|e| SpawnError::Other(format!("cannot start the session's waiter: {e}")))?;
        Ok(hosted)
    }
}

impl HostedSession for PtyHosted {
    fn id(&self) -> &str {
        &self.id
    }

    fn agent_state(&self) -> Option<crate::events::SessionState> {
        Some(self.agent_state.get())
    }

    fn pid(&self) -> u32 {
        self.pty.pid() as u32
    }

    fn write_input(&self, bytes: &[u8]) {
        if let Err(e) = self.pty.write_input(bytes) {
            tracing::debug!(session = %self.id, error = %e, "input to an ended session");
        }
    }

    fn resize(&self, cols: u16, rows: u16) {
        let (cols, rows) = (cols.max(1), rows.max(1));
        {
            let mut s = self.screen.lock().unwrap_or_else(|e| e.into_inner());
            s.parser.screen_mut().set_size(rows, cols);
        }
        if let Err(e) = self.pty.resize(WinSize { cols, rows }) {
            tracing::warn!(session = %self.id, error = %e, "cannot resize the pty");
        }
    }

    fn attach(&self) -> Attachment {
        let (tx, rx) = crossbeam_channel::bounded(SUBSCRIBER_BACKLOG);
        let mut s = self.screen.lock().unwrap_or_else(|e| e.into_inner());
        let screen = s.parser.screen();
        let mut snapshot = Vec::new();
        if screen.alternate_screen() {
            snapshot.extend_from_slice(b"\x1b[?1049h");
        }
        snapshot.extend_from_slice(b"\x1b[H\x1b[2J");
        snapshot.extend_from_slice(&screen.state_formatted());
        if !s.closed {
            s.subscribers.push(tx);
        }
        Attachment {
            snapshot,
            output: rx,
        }
    }

    fn stop(&self, grace: Duration) {
        if self.try_wait().is_some() {
            return;
        }
        self.pty
            .stop(if grace.is_zero() { self.grace } else { grace });
        self.wait();
    }

    fn wait(&self) -> Option<i32> {
        let mut exit = self.exit.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(code) = *exit {
                return code;
            }
            exit = self.exited.wait(exit).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn try_wait(&self) -> Option<Option<i32>> {
        *self.exit.lock().unwrap_or_else(|e| e.into_inner())
    }
}
