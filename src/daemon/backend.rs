//! The seam between the daemon and whatever runs a session.
//!
//! The daemon owns the socket, the registry, the store and the attach streams; a [`SessionBackend`]
//! owns the child. The backend the binary uses is [`super::pty_backend::PtyBackend`]: PTY sessions
//! with the same supervisor as `mpm run`.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;

use crate::events::Bus;

/// Everything a backend needs to start one session.
#[derive(Clone)]
pub struct SpawnRequest {
    /// The session id the daemon chose; the bus context carries the same id.
    pub id: String,
    /// The agent's argv.
    pub argv: Vec<String>,
    /// Its working directory.
    pub cwd: std::path::PathBuf,
    /// Extra environment on top of the daemon's own (which has `NOTIFY_SOCKET` removed by the
    /// backend: children must never talk to systemd as if they were the daemon).
    pub env: Vec<(String, String)>,
    /// The terminal's width.
    pub cols: u16,
    /// The terminal's height.
    pub rows: u16,
    /// `mpm run` flags (no-detect, no-exec, profile, config, patterns); the daemon has already
    /// added the `events_file` sink to `events` when one was asked for.
    pub flags: crate::protocol::RunFlags,
    /// The client's resolved configuration, whole environment and terminal kind (`None`: an older
    /// client).
    pub client: Option<crate::protocol::RunClient>,
    /// The session's event bus (store and followers are already sinks of it). The backend emits
    /// `session.started` once the child runs and `session.exited` when it is gone, plus whatever its
    /// pipeline detects.
    pub events: Bus,
}

/// Why a spawn failed.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// No argv.
    #[error("empty command")]
    EmptyCommand,
    /// The process could not be started.
    #[error("cannot start {program}: {source}")]
    Start {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// The command cannot run: not found (127) or not executable (126), as a shell says it.
    #[error("{message}")]
    Command {
        /// 127 or 126.
        status: i32,
        /// The shell-style message.
        message: String,
    },
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl SpawnError {
    /// The protocol error code: `command_not_found` (exit 127), `not_executable` (exit 126), else
    /// `spawn_failed`.
    pub fn code(&self) -> crate::protocol::ErrorCode {
        use crate::protocol::ErrorCode;
        match self {
            SpawnError::Command { status: 127, .. } => ErrorCode::CommandNotFound,
            SpawnError::Command { status: 126, .. } => ErrorCode::NotExecutable,
            _ => ErrorCode::SpawnFailed,
        }
    }
}

/// What an attaching client gets, taken atomically: the bytes that redraw the current screen, and
/// every output chunk produced after that snapshot (none lost, none duplicated).
pub struct Attachment {
    /// The bytes that redraw the current screen.
    pub snapshot: Vec<u8>,
    /// Output chunks. Disconnected when the session has ended, and only after
    /// [`HostedSession::try_wait`] returns `Some` and `session.exited` was emitted; or earlier when
    /// the backend drops a receiver that fell too far behind (the daemon then ends that attach
    /// stream with a `too_slow` error; the client re-attaches and gets a fresh redraw).
    pub output: Receiver<Arc<[u8]>>,
    /// Yields when the agent stopped itself (Ctrl-Z) while this terminal client is attached: the
    /// daemon tells the client (`Suspended`), which answers `Resume` once the user continues it.
    pub suspended: Receiver<()>,
}

/// Starts sessions. Implemented by the lead with the real PTY session at merge time.
pub trait SessionBackend: Send + Sync {
    /// Start one session.
    fn spawn(&self, req: SpawnRequest) -> Result<Arc<dyn HostedSession>, SpawnError>;
}

/// One running session as the daemon sees it. Every method is callable from any thread.
pub trait HostedSession: Send + Sync {
    /// The session's id.
    fn id(&self) -> &str;
    /// The agent's pid.
    fn pid(&self) -> u32;
    /// Terminal input (keystrokes) from an attached client.
    fn write_input(&self, bytes: &[u8]);
    /// The attached terminal's size changed.
    fn resize(&self, cols: u16, rows: u16);
    /// Snapshot + live output, atomically (see [`Attachment`]).
    fn attach(&self) -> Attachment;
    /// The attach of the client that started the session (`mpm run`, on the connection that sent
    /// `Run`). A backend that tells owner from watchers writes the session's output to `writer`
    /// itself, from the first byte and with backpressure; the returned attachment then carries no
    /// data and disconnects at the end. The daemon has already sent `Attached`. Default: a watcher.
    fn attach_owner(
        &self,
        _writer: &Arc<std::sync::Mutex<std::os::unix::net::UnixStream>>,
    ) -> Attachment {
        self.attach()
    }
    /// The owner's attach stream ended (detach, or its connection closed).
    fn detach_owner(&self) {}
    /// End the session gracefully: SIGTERM to its tree, `grace`, then SIGKILL. Blocks until gone.
    fn stop(&self, grace: Duration);
    /// Block until the session has exited; its status (exit code, or 128+N for signal N).
    fn wait(&self) -> Option<i32>;
    /// The status if it has exited, without blocking.
    fn try_wait(&self) -> Option<Option<i32>>;
    /// The client's (non-terminal) input ended: deliver the terminal's EOF character once.
    fn eof(&self) {}
    /// The attached client was continued after a suspend: continue the agent.
    fn resume(&self) {}
    /// The attached (non-terminal) client got `signal`: stop the session as an in-process
    /// `mpm run` would on that signal (status 128+`signal`). Does not block.
    fn signalled(&self, _signal: i32) {}
    /// The end-of-session delegation summary, once the session has ended (and `run.summary`).
    fn summary(&self) -> Option<String> {
        None
    }
    /// The agent's published state (`session.state`), when the host tracks it.
    fn agent_state(&self) -> Option<crate::events::SessionState> {
        None
    }
}

/// What the daemon keeps of a session once it has ended: its id, pid, status, summary and last
/// agent state, for `status` and for a late `attach` (which gets `SessionEnded`). The live
/// session (its handle, screen state, channels and bus) is dropped when it ends, so a daemon that
/// has hosted a thousand sessions holds a few hundred bytes for each, not the session itself.
pub(crate) struct EndedSession {
    id: String,
    pid: u32,
    status: Option<i32>,
    summary: Option<String>,
    agent_state: Option<crate::events::SessionState>,
}

impl EndedSession {
    /// The record of `s`, which has ended (`try_wait` is `Some`).
    pub(crate) fn of(s: &dyn HostedSession) -> EndedSession {
        EndedSession {
            id: s.id().to_string(),
            pid: s.pid(),
            status: s.try_wait().flatten(),
            summary: s.summary(),
            agent_state: s.agent_state(),
        }
    }
}

impl HostedSession for EndedSession {
    fn id(&self) -> &str {
        &self.id
    }
    fn pid(&self) -> u32 {
        self.pid
    }
    fn write_input(&self, _bytes: &[u8]) {}
    fn resize(&self, _cols: u16, _rows: u16) {}
    fn attach(&self) -> Attachment {
        // Both channels disconnected: the stream ends at once.
        Attachment {
            snapshot: Vec::new(),
            output: crossbeam_channel::bounded(0).1,
            suspended: crossbeam_channel::bounded(0).1,
        }
    }
    fn stop(&self, _grace: Duration) {}
    fn wait(&self) -> Option<i32> {
        self.status
    }
    fn try_wait(&self) -> Option<Option<i32>> {
        Some(self.status)
    }
    fn summary(&self) -> Option<String> {
        self.summary.clone()
    }
    fn agent_state(&self) -> Option<crate::events::SessionState> {
        self.agent_state
    }
}
