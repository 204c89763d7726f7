//! The daemon socket protocol: length-prefixed frames carrying JSON messages or raw terminal bytes.
//!
//! Wire format of one frame: a `u32` big-endian length `N` (of what follows), then `N` bytes of
//! payload whose first byte is the frame type: [`TAG_JSON`] (a UTF-8 JSON [`ClientMsg`] or
//! [`ServerMsg`]) or [`TAG_DATA`] (raw terminal bytes: input from an attached client, output to it).
//! The length is checked against a cap *before* anything is allocated, so a hostile or broken peer
//! cannot make the daemon reserve memory it does not send.
//!
//! A connection starts with a handshake: the client sends [`ClientMsg::Hello`] with its
//! [`PROTOCOL_VERSION`]; the server answers [`ServerMsg::Hello`] or [`ServerMsg::Error`] (code
//! `version`) and closes. Then requests and replies alternate, except for `Events { follow }` and
//! `Attach`, which turn the connection into a stream (see the variants).

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::events::Event;

/// Bumped on any incompatible change of the messages below.
pub const PROTOCOL_VERSION: u32 = 1;

/// Frame type byte: JSON message.
pub const TAG_JSON: u8 = b'J';
/// Frame type byte: raw terminal bytes.
pub const TAG_DATA: u8 = b'D';

/// Default frame size cap (`daemon.max_frame_bytes`).
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// What can go wrong reading or decoding a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection (at a frame boundary).
    #[error("connection closed")]
    Closed,
    /// A frame's length header is over the cap.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// A frame of length 0 (no type byte).
    #[error("empty frame")]
    Empty,
    /// A frame type byte that is neither a message nor data.
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// A message frame that is not a valid JSON message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Reading or writing the socket failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A JSON message (not yet parsed into a message type).
    Json(Vec<u8>),
    /// Raw terminal bytes.
    Data(Vec<u8>),
}

impl Frame {
    /// A JSON frame of `msg`.
    pub fn json<T: Serialize>(msg: &T) -> Frame {
        // Serialising our own plain message types cannot fail.
        Frame::Json(serde_json::to_vec(msg).unwrap_or_else(|_| b"{}".to_vec()))
    }

    /// Parse a JSON frame as `T`; data frames are an error.
    pub fn parse<T: for<'de> Deserialize<'de>>(&self) -> Result<T, FrameError> {
        match self {
            Frame::Json(b) => {
                serde_json::from_slice(b).map_err(|e| FrameError::Malformed(e.to_string()))
            }
            Frame::Data(_) => Err(FrameError::Malformed("expected a message, got data".into())),
        }
    }

    /// The frame as it goes on the wire (length prefix included).
    pub fn encode(&self) -> Vec<u8> {
        let (tag, body) = match self {
            Frame::Json(b) => (TAG_JSON, b),
            Frame::Data(b) => (TAG_DATA, b),
        };
        let len = (body.len() + 1) as u32;
        let mut out = Vec::with_capacity(body.len() + 5);
        out.extend_from_slice(&len.to_be_bytes());
        out.push(tag);
        out.extend_from_slice(body);
        out
    }
}

/// Write one frame and flush.
pub fn write_frame(w: &mut impl Write, frame: &Frame) -> io::Result<()> {
    w.write_all(&frame.encode())?;
    w.flush()
}

/// Write one data frame of `bytes` (the relay's hot path: header and payload in one `writev`,
/// no copy of the payload, without building a [`Frame`] first).
pub fn write_data(w: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    let mut head = [0u8; 5];
    head[..4].copy_from_slice(&((bytes.len() + 1) as u32).to_be_bytes());
    head[4] = TAG_DATA;
    let mut bufs = [io::IoSlice::new(&head), io::IoSlice::new(bytes)];
    let mut left = &mut bufs[..];
    while !left.is_empty() {
        match w.write_vectored(left) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut left, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    w.flush()
}

/// Read one frame, refusing any whose announced length exceeds `max` before allocating for it.
/// `Closed` means a clean end of stream at a frame boundary.
pub fn read_frame(r: &mut impl Read, max: usize) -> Result<Frame, FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(FrameError::Io(e)),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max.saturating_add(1) {
        return Err(FrameError::TooLarge { len, max });
    }
    // The type byte apart, so the body is read in place (no shift of the whole payload).
    let mut tag = [0u8; 1];
    r.read_exact(&mut tag)?;
    let mut buf = vec![0u8; len - 1];
    r.read_exact(&mut buf)?;
    match tag[0] {
        TAG_JSON => Ok(Frame::Json(buf)),
        TAG_DATA => Ok(Frame::Data(buf)),
        t => Err(FrameError::UnknownType(t)),
    }
}

/// Decode a payload (the bytes after the length prefix).
pub fn decode_payload(mut buf: Vec<u8>) -> Result<Frame, FrameError> {
    let Some(&tag) = buf.first() else {
        return Err(FrameError::Empty);
    };
    buf.remove(0);
    match tag {
        TAG_JSON => Ok(Frame::Json(buf)),
        TAG_DATA => Ok(Frame::Data(buf)),
        t => Err(FrameError::UnknownType(t)),
    }
}

/// Decode as many whole frames as `bytes` holds; returns them and the count of bytes consumed.
/// Stops at the first error (returned with the frames decoded before it). Used by tests and fuzzing.
pub fn decode_all(bytes: &[u8], max: usize) -> (Vec<Frame>, Result<usize, FrameError>) {
    let mut cur = io::Cursor::new(bytes);
    let mut frames = Vec::new();
    loop {
        let pos = cur.position() as usize;
        if pos == bytes.len() {
            return (frames, Ok(pos));
        }
        match read_frame(&mut cur, max) {
            Ok(f) => frames.push(f),
            Err(e) => return (frames, Err(e)),
        }
    }
}

/// A request to spawn a session under the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// The agent's argv.
    pub argv: Vec<String>,
    /// Working directory (also the ticket project).
    pub cwd: String,
    /// Extra environment for the child, on top of the daemon's.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// The terminal's width.
    #[serde(default = "default_cols")]
    pub cols: u16,
    /// The terminal's height.
    #[serde(default = "default_rows")]
    pub rows: u16,
    /// The `mpm run` flags that shape the session (passed through to the backend).
    #[serde(default)]
    pub flags: RunFlags,
    /// What the client resolved and what its terminal is (`None`: an older client; then `env` is
    /// added to the daemon's environment and the daemon loads the configuration itself).
    #[serde(default)]
    pub client: Option<RunClient>,
}

/// The client's side of a daemon-hosted `mpm run`: the daemon starts the agent with exactly this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunClient {
    /// The configuration the client resolved (files, its `MPM_*` variables, its flags), as JSON.
    pub config: serde_json::Value,
    /// `RunSpec::env` is the client's whole environment (it replaces the daemon's).
    pub full_env: bool,
    /// Whether the client's stdin is a terminal (else: input is forwarded and EOF delivered once).
    pub stdin_tty: bool,
    /// Whether the client's stdout is a terminal (else: exactly the PTY's output, no redraw).
    pub stdout_tty: bool,
}

impl Eq for RunClient {}

/// `mpm run` options a daemon-hosted session honours like an in-process one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunFlags {
    /// `--no-detect`: pass-through only.
    pub no_detect: bool,
    /// `--no-exec`: detect but never run delegations.
    pub no_exec: bool,
    /// `--mode`: the orchestration mode (a current client also sends it inside its resolved
    /// configuration; this is for a daemon that resolves the configuration itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<crate::config::OrchestrationMode>,
    /// `--profile NAME`.
    pub profile: Option<String>,
    /// `--config PATH` (absolute).
    pub config: Option<String>,
    /// `--patterns PATH`... (absolute).
    pub patterns: Vec<String>,
    /// `--events-file PATH` (absolute): the daemon appends the session's events there too.
    pub events_file: Option<String>,
}

fn default_cols() -> u16 {
    80
}
fn default_rows() -> u16 {
    24
}

/// Filter for the events request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFilter {
    /// Only this session.
    #[serde(default)]
    pub session: Option<String>,
    /// Only kinds starting with this prefix (`delegation` matches `delegation.finished`).
    #[serde(default)]
    pub kind: Option<String>,
    /// Only events stored after this sequence number.
    #[serde(default)]
    pub after_seq: Option<i64>,
    /// Only events at or after this RFC 3339 timestamp.
    #[serde(default)]
    pub since: Option<String>,
    /// At most this many backlog events (the latest ones).
    #[serde(default)]
    pub limit: Option<u32>,
}

impl EventFilter {
    /// Whether a live event passes the session and kind filters.
    pub fn matches(&self, ev: &Event) -> bool {
        self.session.as_ref().is_none_or(|s| *s == ev.session)
            && self
                .kind
                .as_ref()
                .is_none_or(|k| ev.kind().starts_with(k.as_str()))
            && self
                .since
                .as_ref()
                .is_none_or(|s| ev.ts.as_str() >= s.as_str())
    }
}

/// Client to server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// First message of every connection.
    Hello {
        /// The client's protocol version.
        protocol: u32,
        /// The client's name and version (for logs).
        client: String,
    },
    /// Sessions, delegations, resources, governor mode.
    Status,
    /// Stored events matching the filter, as `Event` messages, then `EndOfEvents` (the connection
    /// then takes more requests); with `follow`, then every new matching event until the client
    /// closes the connection.
    Events {
        /// Which events.
        #[serde(default)]
        filter: EventFilter,
        /// After the stored ones, every new one until the client closes.
        #[serde(default)]
        follow: bool,
    },
    /// Stored tickets.
    TicketsList {
        /// Only this project's (default: the client's working directory).
        #[serde(default)]
        project: Option<String>,
        /// Every project's.
        #[serde(default)]
        all: bool,
    },
    /// One ticket with its history.
    TicketShow {
        /// The ticket's id.
        id: i64,
    },
    /// Mark a ticket closed.
    TicketClose {
        /// The ticket's id.
        id: i64,
    },
    /// End a session gracefully (SIGTERM, grace, SIGKILL); the reply comes once it is gone.
    Stop {
        /// The session's id (or a unique prefix).
        session: String,
    },
    /// Spawn a session through the daemon's backend.
    Run(RunSpec),
    /// Attach to a session's terminal. After `Attached`, the server sends a data frame that redraws
    /// the current screen, then output as data frames; the client sends input as data frames and
    /// `Resize`/`Detach` messages. `SessionEnded` closes the stream.
    Attach {
        /// The session's id (or a unique prefix).
        session: String,
        /// The client terminal's width, to resize the session to.
        #[serde(default)]
        cols: Option<u16>,
        /// The client terminal's height.
        #[serde(default)]
        rows: Option<u16>,
    },
    /// While attached: the terminal's new size.
    Resize {
        /// The new width.
        cols: u16,
        /// The new height.
        rows: u16,
    },
    /// While attached: leave the session running and end the stream.
    Detach,
    /// While attached: the client was continued after a `Suspended` (`fg`): continue the agent.
    Resume,
    /// While attached: the client's (non-terminal) input ended; the agent gets the terminal's EOF
    /// character once. The stream stays open for the output.
    Eof,
    /// While attached: the client (`mpm run` whose stdin is not a terminal) got `signal` (SIGTERM,
    /// SIGHUP, SIGINT): end the session as an in-process `mpm run` would (SIGTERM, grace, SIGKILL
    /// of the tree; a second one kills at once); its status becomes 128+`signal`. The stream stays
    /// open until `SessionEnded`.
    Signal {
        /// The signal's number.
        signal: i32,
    },
    /// Record an event in the store and pass it to followers (hooks, in-process sessions reporting
    /// to a daemon). Acknowledged with `Ok` once durably written.
    Publish {
        /// The event.
        event: Box<Event>,
    },
}

/// One hosted session as `Status` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The session id.
    pub id: String,
    /// The agent's pid.
    pub pid: u32,
    /// The agent's argv.
    pub command: Vec<String>,
    /// Its working directory.
    pub cwd: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// `running` or `ended`.
    pub state: HostedState,
    /// The agent's exit code, once it exited.
    pub exit_code: Option<i32>,
    /// Clients attached to its terminal now.
    pub attached: u32,
    /// Resident memory of the session's process tree, MB (when running).
    pub rss_mb: Option<f64>,
    /// The agent's state (`starting`, `working`, `idle`, `needs_input`, `blocked`, `exited`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_state: Option<crate::events::SessionState>,
}

/// A stored ticket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ticket {
    /// The ticket's id.
    pub id: i64,
    /// The project (a folder) it was seen in.
    pub project: String,
    /// `todo`, `bug`, `feature`, ... (the detection's category or type).
    pub ticket_type: String,
    /// The title, as detected.
    pub title: String,
    /// The priority, when one was given.
    pub priority: Option<String>,
    /// The session that first saw it.
    pub source_session: String,
    /// When it was first seen (RFC 3339).
    pub first_seen: String,
    /// When it was last seen.
    pub last_seen: String,
    /// How many times it was seen.
    pub seen_count: i64,
    /// `open` or `closed`.
    pub status: String,
}

/// Daemon status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The daemon's pid.
    pub daemon_pid: u32,
    /// mpm's version.
    pub version: String,
    /// The socket's path.
    pub socket: String,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// The hosted sessions (running, and recently ended).
    pub sessions: Vec<SessionInfo>,
    /// Delegations waiting for a slot.
    pub delegations_queued: u64,
    /// Delegations running now.
    pub delegations_running: u64,
    /// `cgroup`, `polling`, or `none` when no governor reports.
    pub governor_mode: String,
    /// The daemon's own resident memory, MB.
    pub daemon_rss_mb: f64,
    /// Events in the store.
    pub events_stored: u64,
}

/// Whether a session's agent still runs (`running`) or has exited (`ended`), on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostedState {
    /// The agent runs.
    Running,
    /// The agent has exited.
    Ended,
    /// The store says it runs, but nothing hosts it any more: its `mpm` was killed before it could
    /// record the end (no live endpoint answers, no daemon hosts it, and its agent is gone).
    Lost,
}

impl HostedState {
    /// `running` or `ended`.
    pub fn as_str(self) -> &'static str {
        match self {
            HostedState::Running => "running",
            HostedState::Ended => "ended",
            HostedState::Lost => "lost",
        }
    }
}

impl std::fmt::Display for HostedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl PartialEq<&str> for HostedState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Server to client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// The answer to the client's `Hello`.
    Hello {
        /// The daemon's protocol version.
        protocol: u32,
        /// The daemon's pid.
        daemon_pid: u32,
        /// mpm's version.
        version: String,
    },
    /// A request failed; `code` says why (see [`ErrorCode`]).
    Error {
        /// The error code.
        code: ErrorCode,
        /// What went wrong, for the user.
        message: String,
    },
    /// The request was done.
    Ok,
    /// The daemon's status.
    Status(Box<StatusReport>),
    /// One stored or followed event.
    Event {
        /// The event's sequence number in the store.
        seq: i64,
        /// The event.
        event: Box<Event>,
    },
    /// The end of the stored events (`follow` goes on after it).
    EndOfEvents,
    /// Stored tickets.
    Tickets {
        /// The tickets.
        tickets: Vec<Ticket>,
    },
    /// One ticket.
    Ticket {
        /// The ticket.
        ticket: Ticket,
    },
    /// The session is gone.
    Stopped {
        /// The session's id.
        session: String,
        /// The agent's exit code, if it exited.
        exit_code: Option<i32>,
    },
    /// The session was spawned.
    Spawned {
        /// The session's id.
        session: String,
        /// The agent's pid.
        pid: u32,
    },
    /// The client is attached.
    Attached {
        /// The session's id.
        session: String,
    },
    /// The attached session ended (stream closes after this).
    SessionEnded {
        /// The session's id.
        session: String,
        /// The agent's exit code, if it exited.
        exit_code: Option<i32>,
        /// The end-of-session delegation summary (`run.summary`), for the client's stderr.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        summary: Option<String>,
    },
    /// The stream ended because of a detach.
    Detached,
    /// While attached: the agent stopped itself (Ctrl-Z): the client gives the user their shell
    /// back (restores its terminal, stops itself) and sends `Resume` once continued.
    Suspended,
}

/// Largest terminal a client may ask for: bigger than any real screen, small enough that the
/// screen model (cells x bytes per cell) stays in the tens of MB.
pub const MAX_COLS: u16 = 2000;
/// See [`MAX_COLS`].
pub const MAX_ROWS: u16 = 1000;
/// Most argv elements plus environment entries a `run` request may carry.
pub const MAX_ARGS: usize = 16_384;
/// Most bytes of argv plus environment a `run` request may carry (the kernel's own `ARG_MAX` is
/// 2 MiB by default; exec would fail beyond it anyway).
pub const MAX_ARG_BYTES: usize = 2 << 20;

/// Whether a window size is one a session can be given (each side 1 to the maximum).
pub fn window_ok(cols: u16, rows: u16) -> bool {
    (1..=MAX_COLS).contains(&cols) && (1..=MAX_ROWS).contains(&rows)
}

impl ClientMsg {
    /// Check the sizes a request carries before anything acts on it: a request out of bounds is
    /// answered with an error (`invalid`), never an abort (a 65535x65535 screen would be 4 G cells).
    pub fn validate(&self) -> Result<(), String> {
        let window = |cols: u16, rows: u16| {
            if window_ok(cols, rows) {
                Ok(())
            } else {
                Err(format!(
                    "window {cols}x{rows} out of range (1x1 to {MAX_COLS}x{MAX_ROWS})"
                ))
            }
        };
        match self {
            ClientMsg::Run(spec) => {
                window(spec.cols, spec.rows)?;
                if spec.argv.is_empty() || spec.argv[0].is_empty() {
                    return Err("empty argv".into());
                }
                let count = spec.argv.len() + spec.env.len();
                if count > MAX_ARGS {
                    return Err(format!(
                        "{count} argv and environment entries (at most {MAX_ARGS})"
                    ));
                }
                let bytes: usize = spec.argv.iter().map(|a| a.len() + 1).sum::<usize>()
                    + spec
                        .env
                        .iter()
                        .map(|(k, v)| k.len() + v.len() + 2)
                        .sum::<usize>();
                if bytes > MAX_ARG_BYTES {
                    return Err(format!(
                        "{bytes} bytes of argv and environment (at most {MAX_ARG_BYTES})"
                    ));
                }
                if spec.argv.iter().any(|a| a.contains('\0')) {
                    return Err("a NUL byte in argv".into());
                }
                if let Some((k, _)) = spec.env.iter().find(|(k, v)| {
                    k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0')
                }) {
                    return Err(format!("invalid environment variable name {k:?}"));
                }
                Ok(())
            }
            ClientMsg::Attach {
                cols: Some(c),
                rows: Some(r),
                ..
            } => window(*c, *r),
            ClientMsg::Resize { cols, rows } => window(*cols, *rows),
            _ => Ok(()),
        }
    }
}

impl ServerMsg {
    /// An `Error` reply with `code` and `message`.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> ServerMsg {
        ServerMsg::Error {
            code,
            message: message.into(),
        }
    }
}

/// Why the daemon refused a request: the `code` of [`ServerMsg::Error`], a snake_case string on
/// the wire. A code this build does not know (a newer daemon's) is kept as [`ErrorCode::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The peer is another user, or its credentials cannot be checked.
    Forbidden,
    /// The client speaks another protocol version.
    Version,
    /// The frame is not a valid message.
    Malformed,
    /// The frame is larger than the daemon accepts.
    TooLarge,
    /// A well-formed frame with an unknown request type.
    UnknownRequest,
    /// A request that makes no sense now (a second hello, input while not attached, ...).
    Unexpected,
    /// A request with invalid arguments.
    Invalid,
    /// No such session (or ticket, or delegation).
    NotFound,
    /// The session could not be started.
    SpawnFailed,
    /// The command was not found on the agent's PATH (the shell's 127).
    CommandNotFound,
    /// The command is not executable (the shell's 126).
    NotExecutable,
    /// An attached client fell behind the session's output; it should attach again.
    TooSlow,
    /// The connection limit is reached.
    Busy,
    /// The daemon failed (store error, ...).
    Internal,
    /// A code this build does not know.
    Other(String),
}

impl ErrorCode {
    const KNOWN: [ErrorCode; 14] = [
        ErrorCode::Forbidden,
        ErrorCode::Version,
        ErrorCode::Malformed,
        ErrorCode::TooLarge,
        ErrorCode::UnknownRequest,
        ErrorCode::Unexpected,
        ErrorCode::Invalid,
        ErrorCode::NotFound,
        ErrorCode::SpawnFailed,
        ErrorCode::CommandNotFound,
        ErrorCode::NotExecutable,
        ErrorCode::TooSlow,
        ErrorCode::Busy,
        ErrorCode::Internal,
    ];

    /// The wire string.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Version => "version",
            ErrorCode::Malformed => "malformed",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::UnknownRequest => "unknown_request",
            ErrorCode::Unexpected => "unexpected",
            ErrorCode::Invalid => "invalid",
            ErrorCode::NotFound => "not_found",
            ErrorCode::SpawnFailed => "spawn_failed",
            ErrorCode::CommandNotFound => "command_not_found",
            ErrorCode::NotExecutable => "not_executable",
            ErrorCode::TooSlow => "too_slow",
            ErrorCode::Busy => "busy",
            ErrorCode::Internal => "internal",
            ErrorCode::Other(s) => s,
        }
    }

    /// The code for a wire string (unknown strings become [`ErrorCode::Other`]).
    pub fn parse(s: &str) -> ErrorCode {
        Self::KNOWN
            .into_iter()
            .find(|c| c.as_str() == s)
            .unwrap_or_else(|| ErrorCode::Other(s.to_string()))
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for ErrorCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(ErrorCode::parse(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn error_codes_keep_their_wire_strings() {
        for c in ErrorCode::KNOWN {
            assert_eq!(ErrorCode::parse(c.as_str()), c);
        }
        let m: ServerMsg =
            serde_json::from_str(r#"{"type":"error","code":"not_found","message":"m"}"#).unwrap();
        assert_eq!(m, ServerMsg::error(ErrorCode::NotFound, "m"));
        let m = ServerMsg::error(ErrorCode::TooSlow, "m");
        assert!(
            serde_json::to_string(&m)
                .unwrap()
                .contains(r#""code":"too_slow""#)
        );
        let newer: ServerMsg =
            serde_json::from_str(r#"{"type":"error","code":"from_the_future","message":""}"#)
                .unwrap();
        assert!(
            matches!(newer, ServerMsg::Error { code: ErrorCode::Other(ref s), .. } if s == "from_the_future")
        );
    }

    #[test]
    fn round_trip_frames() {
        let frames = vec![
            Frame::json(&ClientMsg::Status),
            Frame::Data(b"\x1b[2Jhello".to_vec()),
            Frame::json(&ServerMsg::error(ErrorCode::Internal, "y")),
        ];
        let mut wire = Vec::new();
        for f in &frames {
            write_frame(&mut wire, f).unwrap();
        }
        let (back, rest) = decode_all(&wire, DEFAULT_MAX_FRAME);
        assert_eq!(rest.unwrap(), wire.len());
        assert_eq!(back, frames);
        assert_eq!(back[0].parse::<ClientMsg>().unwrap(), ClientMsg::Status);
    }

    #[test]
    fn oversized_is_rejected_from_the_header_alone() {
        // Announces 4 GiB and sends nothing more: must be refused without reading or allocating.
        let wire = u32::MAX.to_be_bytes();
        let err = read_frame(&mut &wire[..], 1024).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn unknown_request_type_is_malformed_not_a_panic() {
        let f = Frame::Json(br#"{"type":"explode"}"#.to_vec());
        assert!(matches!(
            f.parse::<ClientMsg>(),
            Err(FrameError::Malformed(_))
        ));
        let (_, r) = decode_all(&[0, 0, 0, 1, b'X'], 100);
        assert!(matches!(r, Err(FrameError::UnknownType(b'X'))));
        let (_, r) = decode_all(&[0, 0, 0, 0], 100);
        assert!(matches!(r, Err(FrameError::Empty)));
        let (_, r) = decode_all(&[0, 0, 0, 9, b'J', b'{'], 100);
        assert!(matches!(r, Err(FrameError::Io(_))), "truncated body");
    }

    /// A reader that fails the test if asked for more than `limit` bytes in one go: proves the
    /// decoder never sizes a buffer from an over-cap header.
    struct Stingy<'a> {
        data: &'a [u8],
        limit: usize,
    }
    impl Read for Stingy<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            assert!(buf.len() <= self.limit, "asked for {} bytes", buf.len());
            let n = buf.len().min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Random bytes never panic the decoder, and whatever decodes never parses into a panic.
        #[test]
        fn fuzz_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let (frames, _) = decode_all(&bytes, 256);
            for f in frames {
                let _ = f.parse::<ClientMsg>();
                let _ = f.parse::<ServerMsg>();
            }
        }

        /// A header over the cap is refused before the body is read or allocated.
        #[test]
        fn fuzz_oversized_rejected_before_allocation(len in 258u32.., tail in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut wire = len.to_be_bytes().to_vec();
            wire.extend_from_slice(&tail);
            let mut r = Stingy { data: &wire, limit: 257 };
            let err = read_frame(&mut r, 256).unwrap_err();
            prop_assert!(matches!(err, FrameError::TooLarge { .. }), "not too large: {}", err);
        }

        /// Valid JSON-ish frames with random message bodies: decoding is total.
        #[test]
        fn fuzz_json_bodies(body in ".{0,200}") {
            let f = Frame::Json(body.into_bytes());
            let wire = f.encode();
            let (frames, r) = decode_all(&wire, DEFAULT_MAX_FRAME);
            prop_assert!(r.is_ok());
            let _ = frames[0].parse::<ClientMsg>();
        }
    }
}
