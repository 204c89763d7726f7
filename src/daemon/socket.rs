//! The listening socket: private folder, private socket, stale-socket replacement, single instance.
//!
//! Order of operations, and why it is race-free:
//! 1. The folder is created 0700 (and, for the default runtime folder, checked to be ours and
//!    forced to 0700). A user-chosen `--socket` in an existing folder leaves that folder alone.
//! 2. `<socket>.lock` is `flock`ed exclusively and held for the daemon's life: two daemons starting
//!    at once cannot both decide a socket is stale and replace each other.
//! 3. An existing socket is probed with `connect`: success means a live daemon (we exit); refusal
//!    means a stale one, which is unlinked. A non-socket file at the path is never removed.
//! 4. `socket()`, `bind()`, an explicit `chmod 0600`, and only then `listen()`. Before `listen()`
//!    every `connect()` is refused, so no client can reach the socket while its mode is anything
//!    but 0600. (No `umask`: it is process-wide, and a thread creating a private folder meanwhile
//!    would get a folder without its execute bit.)
//! 5. Every accepted connection's peer uid is checked with `SO_PEERCRED` (see `server`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};

/// Socket setup errors.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("another mpm daemon is already running on {0}")]
    AlreadyRunning(PathBuf),
    #[error("{path} exists and is not a socket; not touching it")]
    NotASocket { path: PathBuf },
    #[error("{path} is owned by uid {owner}, not by us")]
    ForeignDir { path: PathBuf, owner: u32 },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SocketError {
    let path = path.to_path_buf();
    move |source| SocketError::Io { what, path, source }
}

fn nix_err(what: &'static str, path: &Path) -> impl FnOnce(nix::Error) -> SocketError {
    let path = path.to_path_buf();
    move |e| SocketError::Io {
        what,
        path,
        source: io::Error::from(e),
    }
}

/// A bound, listening socket plus the instance lock; unlinks its own socket file on drop.
pub(crate) struct BoundSocket {
    pub listener: UnixListener,
    path: PathBuf,
    /// Device and inode of the socket we created: we only ever unlink that one.
    dev_ino: (u64, u64),
    _lock: Flock<File>,
}

impl BoundSocket {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Remove the socket file if it is still the one we bound.
    pub(crate) fn unlink(&self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path)
            && (m.dev(), m.ino()) == self.dev_ino
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        self.unlink();
    }
}

/// What a connect probe says about an existing socket path.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    Absent,
    Live,
    Stale,
    NotASocket,
}

/// Probe `path`: a daemon answering `connect`, a stale socket file, or nothing.
pub(crate) fn probe(path: &Path) -> Probe {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Err(_) => Probe::Absent,
        Ok(m) if !m.file_type().is_socket() => Probe::NotASocket,
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => Probe::Live,
            Err(_) => Probe::Stale,
        },
    }
}

/// Bind the daemon socket at `path` as described in the module docs. `private_dir`: the parent is
/// mpm's own runtime folder, to be forced to 0700 and checked to be ours.
pub(crate) fn bind(path: &Path, private_dir: bool) -> Result<BoundSocket, SocketError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err("cannot create", dir))?;
    }
    if private_dir {
        let m = std::fs::metadata(dir).map_err(io_err("cannot stat", dir))?;
        let me = nix::unistd::getuid().as_raw();
        if m.uid() != me {
            return Err(SocketError::ForeignDir {
                path: dir.to_path_buf(),
                owner: m.uid(),
            });
        }
        if m.mode() & 0o777 != 0o700 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io_err("cannot chmod", dir))?;
        }
    }

    let lock_path = lock_path(path);
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io_err("cannot open", &lock_path))?;
    let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock)
        .map_err(|_| SocketError::AlreadyRunning(path.to_path_buf()))?;

    match probe(path) {
        Probe::Absent => {}
        Probe::Live => return Err(SocketError::AlreadyRunning(path.to_path_buf())),
        Probe::NotASocket => {
            return Err(SocketError::NotASocket {
                path: path.to_path_buf(),
            });
        }
        Probe::Stale => {
            tracing::info!(path = %path.display(), "replacing stale socket");
            std::fs::remove_file(path).map_err(io_err("cannot remove stale socket", path))?;
        }
    }

    let fd: OwnedFd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(nix_err("cannot create socket", path))?;
    let addr = UnixAddr::new(path).map_err(nix_err("bad socket path", path))?;
    socket::bind(fd.as_raw_fd(), &addr).map_err(nix_err("cannot bind", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err("cannot chmod", path))?;
    let meta = std::fs::symlink_metadata(path).map_err(io_err("cannot stat", path))?;
    socket::listen(
        &fd,
        socket::Backlog::new(64).unwrap_or(socket::Backlog::MAXCONN),
    )
    .map_err(nix_err("cannot listen", path))?;
    Ok(BoundSocket {
        listener: UnixListener::from(fd),
        path: path.to_path_buf(),
        dev_ino: (meta.dev(), meta.ino()),
        _lock: lock,
    })
}

/// The instance lock file next to the socket.
pub(crate) fn lock_path(socket: &Path) -> PathBuf {
    let mut s = socket.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// The uid of the process at the other end of `stream` (`SO_PEERCRED`).
pub(crate) fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    let cred =
        socket::getsockopt(stream, socket::sockopt::PeerCredentials).map_err(io::Error::from)?;
    Ok(cred.uid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_is_private_before_anyone_can_connect() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rt/mpm.sock");
        let b = bind(&path, true).unwrap();
        let dmode = std::fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777;
        let smode = std::fs::symlink_metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(dmode, 0o700);
        assert_eq!(smode, 0o600);
        let c = UnixStream::connect(&path).unwrap();
        assert_eq!(peer_uid(&c).unwrap(), nix::unistd::getuid().as_raw());
        drop(b);
        assert!(!path.exists(), "own socket removed on drop");
    }

    #[test]
    fn live_socket_refuses_second_and_stale_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mpm.sock");
        let first = bind(&path, false).unwrap();
        assert!(matches!(
            bind(&path, false),
            Err(SocketError::AlreadyRunning(_))
        ));
        drop(first);
        // A stale socket: bound by a listener that is gone, file left behind.
        let l = UnixListener::bind(&path).unwrap();
        drop(l);
        assert_eq!(probe(&path), Probe::Stale);
        let b = bind(&path, false).unwrap();
        assert_eq!(probe(&path), Probe::Live);
        drop(b);
        // A live listener without the lock (e.g. another program) is also refused.
        let _l = UnixListener::bind(&path).unwrap();
        assert!(matches!(
            bind(&path, false),
            Err(SocketError::AlreadyRunning(_))
        ));
    }

    #[test]
    fn regular_file_is_never_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mpm.sock");
        std::fs::write(&path, b"precious").unwrap();
        assert!(matches!(
            bind(&path, false),
            Err(SocketError::NotASocket { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    }
}
