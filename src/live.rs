//! The live status endpoint of an in-process session, and the reader `mpm status` uses.
//!
//! A daemon answers `status` from its own session table; a session run in-process (`mpm run
//! --no-daemon`, or no daemon running) has nobody to ask but the session itself. So each
//! in-process session serves a small Unix socket, `$XDG_RUNTIME_DIR/mpm/live/<mpm pid>-<session
//! id>.sock` (mode 0600, in a 0700 folder; a peer of another uid is refused), answering one request
//! per connection with its live state: session id, pid, command, the state machine's state,
//! unfinished delegations, governor mode. The wire is the daemon protocol's framing
//! ([`crate::protocol`]: a length-prefixed JSON frame each way, `{"type":"status"}` in,
//! [`LiveSession`] out). The socket is removed when the session ends; one left by a session that
//! was SIGKILLed refuses connections and its owner pid is gone, and the reader removes it.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::events::{Event, EventBody, SessionState, Sink};
use crate::protocol::{Frame, read_frame, write_frame};

/// How long either side waits for the other's frame.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest frame either side accepts.
const MAX_FRAME: usize = 64 * 1024;

/// One in-process session's live state, as its endpoint answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveSession {
    /// The session id.
    pub id: String,
    /// The agent's pid (0 before it started).
    pub pid: u32,
    /// The pid of the mpm process hosting the session.
    pub mpm_pid: u32,
    /// The agent's argv.
    pub command: Vec<String>,
    /// Its working directory.
    pub cwd: String,
    /// When it started (RFC 3339; empty before `session.started`).
    pub started_at: String,
    /// The state machine's state now.
    pub agent_state: SessionState,
    /// Delegations waiting for a slot.
    pub delegations_queued: u64,
    /// Delegations running now.
    pub delegations_running: u64,
    /// `cgroup` or `polling`, once the session reported one.
    pub governor_mode: Option<String>,
}

/// The folder of the live sockets.
pub fn dir() -> PathBuf {
    crate::config::paths::runtime_dir().join("live")
}

/// What the endpoint knows, folded from the session's events (a bus sink) plus the state mirror.
struct View {
    id: String,
    cwd: String,
    command: Vec<String>,
    state: crate::supervisor::StateMirror,
    inner: Mutex<Folded>,
}

#[derive(Default)]
struct Folded {
    pid: u32,
    started_at: String,
    command: Option<Vec<String>>,
    governor_mode: Option<String>,
    /// Unfinished delegations: id → started (false while queued).
    delegations: HashMap<String, bool>,
    exited: bool,
}

impl View {
    fn snapshot(&self) -> LiveSession {
        let f = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let running = f.delegations.values().filter(|&&r| r).count() as u64;
        LiveSession {
            id: self.id.clone(),
            pid: f.pid,
            mpm_pid: std::process::id(),
            command: f.command.clone().unwrap_or_else(|| self.command.clone()),
            cwd: self.cwd.clone(),
            started_at: f.started_at.clone(),
            agent_state: if f.exited {
                SessionState::Exited
            } else {
                self.state.get()
            },
            delegations_queued: f.delegations.len() as u64 - running,
            delegations_running: running,
            governor_mode: f.governor_mode.clone(),
        }
    }
}

struct ViewSink(Arc<View>);

impl Sink for ViewSink {
    fn write(&self, ev: &Event) {
        let mut f = self.0.inner.lock().unwrap_or_else(|e| e.into_inner());
        match &ev.body {
            EventBody::SessionStarted {
                command,
                pid,
                governor_mode,
                ..
            } => {
                f.pid = *pid;
                f.exited = false;
                if f.started_at.is_empty() {
                    f.started_at = ev.ts.clone();
                }
                f.command = Some(command.clone());
                if governor_mode.is_some() {
                    f.governor_mode = governor_mode.clone();
                }
            }
            EventBody::SessionExited { .. } => f.exited = true,
            EventBody::DelegationQueued(d) => {
                f.delegations
                    .entry(d.delegation_id.clone())
                    .or_insert(false);
            }
            EventBody::DelegationStarted { delegation, .. } => {
                f.delegations.insert(delegation.delegation_id.clone(), true);
            }
            EventBody::DelegationFinished { delegation, .. } => {
                f.delegations.remove(&delegation.delegation_id);
            }
            _ => {}
        }
    }
}

/// A running endpoint; dropping it stops the thread and removes the socket.
pub(crate) struct LiveEndpoint {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LiveEndpoint {
    /// Serve the live state of the session on `bus` (its events are folded from now on).
    pub(crate) fn start(
        bus: &crate::events::Bus,
        command: Vec<String>,
        cwd: &Path,
        state: crate::supervisor::StateMirror,
    ) -> io::Result<LiveEndpoint> {
        let id = bus.context().session.clone();
        let view = Arc::new(View {
            id: id.clone(),
            cwd: cwd.display().to_string(),
            command,
            state,
            inner: Mutex::new(Folded::default()),
        });
        bus.add_sink(Arc::new(ViewSink(view.clone())));
        let dir = dir();
        crate::hook::server::private_dir(&dir)?;
        let path = dir.join(format!("{}-{id}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("mpm-live".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if flag.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Ok(s) = conn
                        && let Err(e) = serve(&s, &view)
                    {
                        tracing::debug!(error = %e, "live status request dropped");
                    }
                }
            })?;
        Ok(LiveEndpoint {
            path,
            stop,
            thread: Some(thread),
        })
    }

    /// The socket's path.
    #[allow(dead_code)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LiveEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.path); // wake the accept loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The request: `{"type":"status"}`.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Request {
    Status,
}

fn serve(s: &UnixStream, view: &View) -> io::Result<()> {
    let peer = nix::sys::socket::getsockopt(s, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(io::Error::from)?;
    if peer.uid() != nix::unistd::geteuid().as_raw() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "peer of another uid",
        ));
    }
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut r = s;
    let req = read_frame(&mut r, MAX_FRAME).map_err(io::Error::other)?;
    let Request::Status = req.parse::<Request>().map_err(io::Error::other)?;
    let mut w = s;
    write_frame(&mut w, &Frame::json(&view.snapshot()))
}

/// Ask one endpoint for its state.
pub fn query(path: &Path) -> io::Result<LiveSession> {
    let s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut w = &s;
    write_frame(&mut w, &Frame::json(&Request::Status))?;
    let mut r = &s;
    let f = read_frame(&mut r, MAX_FRAME).map_err(io::Error::other)?;
    f.parse::<LiveSession>().map_err(io::Error::other)
}

/// The live state of every in-process session of this user that answers. A socket whose
/// session is gone (it refuses connections and the mpm pid in its name is dead) is removed; one
/// that does not answer in time is skipped.
pub fn query_all() -> Vec<LiveSession> {
    let Ok(entries) = std::fs::read_dir(dir()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".sock") else {
            continue;
        };
        if !e.file_type().is_ok_and(|t| t.is_socket()) {
            continue;
        }
        match query(&path) {
            Ok(s) => out.push(s),
            Err(err) => {
                let owner = stem
                    .split_once('-')
                    .and_then(|(pid, _)| pid.parse::<i32>().ok());
                let refused = matches!(
                    err.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
                );
                if refused && owner.is_none_or(|p| !crate::process::procfs::is_alive(p)) {
                    tracing::debug!(path = %path.display(), "removing a stale live socket");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }
    out.sort_by(|a, b| a.started_at.cmp(&b.started_at));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_form() {
        let f = Frame::json(&Request::Status);
        assert_eq!(f, Frame::Json(br#"{"type":"status"}"#.to_vec()));
    }
}
