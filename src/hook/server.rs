//! The session side of the hook channel: a Unix socket (mode 0600, in a 0700 directory of the
//! runtime dir) served by one thread.
//!
//! Each connection carries one hook call ([`super`] has the protocol). Calls are served one at a time,
//! in arrival order, so the session sees claude's events in order; a client that stalls is cut off
//! after [`READ_TIMEOUT`]. The handler runs on the server thread and returns the hook's stdout.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{HookError, HookEvent};

/// How long the server waits for a client's request line.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest request accepted (the client's stdin bound plus the envelope).
const MAX_REQUEST: u64 = super::client::MAX_INPUT + 4096;

/// Handles one hook call; returns the stdout to give claude (empty: nothing).
pub type Handler = Box<dyn FnMut(HookEvent) -> Option<String> + Send>;

/// A running hook server; dropping it stops the thread and removes the socket.
pub struct HookServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for HookServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookServer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Create `dir` (and parents) with mode 0700.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

impl HookServer {
    /// Listen on `path` (a stale socket there is replaced) and serve calls with `handler`.
    pub fn start(path: PathBuf, mut handler: Handler) -> Result<HookServer, HookError> {
        let err = |source| HookError::Socket {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            private_dir(dir).map_err(err)?;
        }
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(err)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("mpm-hooks".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if flag.load(Ordering::SeqCst) {
                        return;
                    }
                    match conn {
                        Ok(s) => {
                            if let Err(e) = serve(s, &mut handler) {
                                tracing::debug!(error = %e, "hook call dropped");
                            }
                        }
                        Err(e) => tracing::debug!(error = %e, "hook accept failed"),
                    }
                }
            })
            .map_err(err)?;
        Ok(HookServer {
            path,
            stop,
            thread: Some(thread),
        })
    }

    /// The socket path (for `MPM_HOOK_SOCKET`).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn serve(s: UnixStream, handler: &mut Handler) -> std::io::Result<()> {
    s.set_read_timeout(Some(READ_TIMEOUT))?;
    s.set_write_timeout(Some(READ_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new((&s).take(MAX_REQUEST)).read_line(&mut line)?;
    let v: serde_json::Value = serde_json::from_str(&line)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let name = v.get("event").and_then(|e| e.as_str()).unwrap_or("");
    let payload = v.get("payload").cloned().unwrap_or_default();
    let event = HookEvent::parse(name, &payload);
    let out = handler(event).unwrap_or_default();
    let mut reply = serde_json::json!({ "stdout": out }).to_string();
    reply.push('\n');
    (&s).write_all(reply.as_bytes())
}

impl Drop for HookServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn round_trip_in_order_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s").join("hook.sock");
        let (tx, rx) = crossbeam_channel::unbounded();
        let handler: Handler = Box::new(move |e: HookEvent| {
            let name = e.name().to_string();
            let _ = tx.send(e);
            (name == "Stop").then(|| "{\"decision\":\"block\"}".to_string())
        });
        let server = HookServer::start(path.clone(), handler).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777,
            0o700
        );
        let p = serde_json::json!({"prompt": "hi"});
        assert_eq!(
            super::super::client::ask(&path, "UserPromptSubmit", &p).unwrap(),
            ""
        );
        let s = serde_json::json!({"last_assistant_message": "done"});
        assert_eq!(
            super::super::client::ask(&path, "Stop", &s).unwrap(),
            "{\"decision\":\"block\"}"
        );
        let got: Vec<String> = rx.try_iter().map(|e| e.name().to_string()).collect();
        assert_eq!(got, ["UserPromptSubmit", "Stop"]);
        drop(server);
        assert!(!path.exists());
        assert!(super::super::client::ask(&path, "Stop", &s).is_err());
    }

    #[test]
    fn garbage_does_not_stop_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hook.sock");
        let handler: Handler = Box::new(|_| Some("ok".into()));
        let _server = HookServer::start(path.clone(), handler).unwrap();
        {
            let mut s = UnixStream::connect(&path).unwrap();
            s.write_all(b"not json\n").unwrap();
            let mut r = String::new();
            let _ = s.read_to_string(&mut r);
            assert_eq!(r, "");
        }
        assert_eq!(
            super::super::client::ask(&path, "Stop", &serde_json::Value::Null).unwrap(),
            "ok"
        );
    }
}
