//! The seam between the daemon and whatever runs a session.
//!
//! The daemon owns the socket, the registry, the store and the attach streams; a [`SessionBackend`]
//! owns the child. The real backend is the PTY session (`session`/`pty`, wired at merge time); until
//! then [`PipeBackend`] runs the child on plain pipes (no PTY, no detection) so that the daemon's
//! socket API, attach streaming, stop and status work end to end.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::events::{Bus, EventBody};

/// Everything a backend needs to start one session.
#[derive(Clone)]
pub struct SpawnRequest {
    /// The session id the daemon chose; the bus context carries the same id.
    pub id: String,
    pub argv: Vec<String>,
    pub cwd: std::path::PathBuf,
    /// Extra environment on top of the daemon's own (which has `NOTIFY_SOCKET` removed by the
    /// backend: children must never talk to systemd as if they were the daemon).
    pub env: Vec<(String, String)>,
    pub cols: u16,
    pub rows: u16,
    /// `mpm run` flags (no-detect, no-exec, profile, config, patterns); the daemon has already
    /// added the `events_file` sink to `events` when one was asked for.
    pub flags: crate::protocol::RunFlags,
    /// The session's event bus (store and followers are already sinks of it). The backend emits
    /// `session.started` once the child runs and `session.exited` when it is gone, plus whatever its
    /// pipeline detects.
    pub events: Bus,
}

/// Why a spawn failed.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("empty command")]
    EmptyCommand,
    #[error("cannot start {program}: {source}")]
    Start {
        program: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// What an attaching client gets, taken atomically: the bytes that redraw the current screen, and
/// every output chunk produced after that snapshot (none lost, none duplicated).
pub struct Attachment {
    pub snapshot: Vec<u8>,
    /// Output chunks. Disconnected when the session has ended, and only after
    /// [`HostedSession::try_wait`] returns `Some` and `session.exited` was emitted; or earlier when
    /// the backend drops a receiver that fell too far behind (the daemon then ends that attach
    /// stream with a `too_slow` error; the client re-attaches and gets a fresh redraw).
    pub output: Receiver<Arc<[u8]>>,
}

/// Starts sessions. Implemented by the lead with the real PTY session at merge time.
pub trait SessionBackend: Send + Sync {
    fn spawn(&self, req: SpawnRequest) -> Result<Arc<dyn HostedSession>, SpawnError>;
}

/// One running session as the daemon sees it. Every method is callable from any thread.
pub trait HostedSession: Send + Sync {
    fn id(&self) -> &str;
    fn pid(&self) -> u32;
    /// Terminal input (keystrokes) from an attached client.
    fn write_input(&self, bytes: &[u8]);
    /// The attached terminal's size changed.
    fn resize(&self, cols: u16, rows: u16);
    /// Snapshot + live output, atomically (see [`Attachment`]).
    fn attach(&self) -> Attachment;
    /// End the session gracefully: SIGTERM to its tree, `grace`, then SIGKILL. Blocks until gone.
    fn stop(&self, grace: Duration);
    /// Block until the session has exited; its status (exit code, or 128+N for signal N).
    fn wait(&self) -> Option<i32>;
    /// The status if it has exited, without blocking.
    fn try_wait(&self) -> Option<Option<i32>>;
}

/// Interim backend: the child on pipes (stdout and stderr merged into one output stream, `\n`
/// shown as `\r\n` as a tty would), a vt100 screen model for attach redraws, no PTY and no
/// detection. Replace with the PTY session.
#[derive(Default)]
pub struct PipeBackend;

struct PipeOut {
    parser: vt100::Parser,
    subscribers: Vec<Sender<Arc<[u8]>>>,
    closed: bool,
}

struct PipeSession {
    id: String,
    pid: u32,
    stdin: Mutex<Option<ChildStdin>>,
    out: Mutex<PipeOut>,
    exit: Mutex<Option<Option<i32>>>,
    exited: Condvar,
}

/// Output chunks an attached client may fall behind by before it is dropped.
const SUBSCRIBER_BACKLOG: usize = 4096;

impl SessionBackend for PipeBackend {
    fn spawn(&self, req: SpawnRequest) -> Result<Arc<dyn HostedSession>, SpawnError> {
        let program = req.argv.first().ok_or(SpawnError::EmptyCommand)?;
        let mut cmd = Command::new(program);
        cmd.args(&req.argv[1..])
            .current_dir(&req.cwd)
            .env_remove("NOTIFY_SOCKET")
            .envs(req.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().map_err(|source| SpawnError::Start {
            program: program.clone(),
            source,
        })?;
        let pid = child.id();
        let session = Arc::new(PipeSession {
            id: req.id.clone(),
            pid,
            stdin: Mutex::new(child.stdin.take()),
            out: Mutex::new(PipeOut {
                parser: vt100::Parser::new(req.rows.max(1), req.cols.max(1), 0),
                subscribers: Vec::new(),
                closed: false,
            }),
            exit: Mutex::new(None),
            exited: Condvar::new(),
        });
        req.events.emit(EventBody::SessionStarted {
            command: req.argv.clone(),
            pid,
            cols: req.cols,
            rows: req.rows,
            governor_mode: None,
        });
        let readers: Vec<std::thread::JoinHandle<()>> = [
            child
                .stdout
                .take()
                .map(|r| Box::new(r) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|r| Box::new(r) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        .map(|r| {
            let s = session.clone();
            std::thread::spawn(move || s.pump(r))
        })
        .collect();
        let s = session.clone();
        let bus = req.events.clone();
        let started = Instant::now();
        std::thread::spawn(move || s.reap(child, readers, bus, started));
        Ok(session)
    }
}

impl PipeSession {
    fn pump(&self, mut r: Box<dyn Read + Send>) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut chunk = Vec::with_capacity(n + 16);
            for &b in &buf[..n] {
                if b == b'\n' {
                    chunk.push(b'\r');
                }
                chunk.push(b);
            }
            let chunk: Arc<[u8]> = chunk.into();
            let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
            out.parser.process(&chunk);
            out.subscribers.retain(|tx| {
                !matches!(
                    tx.try_send(chunk.clone()),
                    Err(TrySendError::Full(_) | TrySendError::Disconnected(_))
                )
            });
        }
    }

    fn reap(
        &self,
        mut child: Child,
        readers: Vec<std::thread::JoinHandle<()>>,
        bus: Bus,
        started: Instant,
    ) {
        let status = child.wait();
        for r in readers {
            let _ = r.join();
        }
        let (code, exit_code, signal) = match status {
            Ok(st) => {
                use std::os::unix::process::ExitStatusExt;
                (
                    Some(crate::process::shell_status(st)),
                    st.code(),
                    st.signal(),
                )
            }
            Err(_) => (None, None, None),
        };
        // Order matters (the seam's contract): the exit event is stored, then the status is
        // visible, and only then do attached output streams end.
        bus.emit(EventBody::SessionExited {
            exit_code,
            signal,
            duration_ms: started.elapsed().as_millis() as u64,
            tap_overrun_bytes: 0,
        });
        *self.exit.lock().unwrap_or_else(|e| e.into_inner()) = Some(code);
        self.exited.notify_all();
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        out.closed = true;
        out.subscribers.clear();
    }
}

impl HostedSession for PipeSession {
    fn id(&self) -> &str {
        &self.id
    }

    fn pid(&self) -> u32 {
        self.pid
    }

    fn write_input(&self, bytes: &[u8]) {
        let mut stdin = self.stdin.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = stdin.as_mut() {
            // A pipe has no line discipline: map the terminal's Enter (CR) to LF, and ^D to EOF.
            if bytes == [4] {
                *stdin = None;
                return;
            }
            let mapped: Vec<u8> = bytes
                .iter()
                .map(|&b| if b == b'\r' { b'\n' } else { b })
                .collect();
            if w.write_all(&mapped).and_then(|_| w.flush()).is_err() {
                *stdin = None;
            }
        }
    }

    fn resize(&self, cols: u16, rows: u16) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        out.parser.screen_mut().set_size(rows.max(1), cols.max(1));
    }

    fn attach(&self) -> Attachment {
        let (tx, rx) = crossbeam_channel::bounded(SUBSCRIBER_BACKLOG);
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let mut snapshot = b"\x1b[H\x1b[2J".to_vec();
        snapshot.extend_from_slice(&out.parser.screen().state_formatted());
        if !out.closed {
            out.subscribers.push(tx);
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
        crate::process::stop_tree(self.pid as i32, grace);
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
