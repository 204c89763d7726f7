//! `mpm daemon`: the long-running supervisor that hosts sessions behind a Unix socket.
//!
//! Threads, not tasks: one accept loop (polling the listener and a wake pipe that SIGTERM/SIGINT and
//! [`DaemonHandle::shutdown`] write to), one thread per connection, and per session one waiter.
//! An idle daemon blocks in `poll`/`recv` everywhere, so it costs no CPU.
//!
//! Shutdown (SIGTERM): stop accepting, `STOPPING=1`, unlink the socket, end every session (graceful
//! stop with `stop_grace`), close every client connection, flush the store, return `Ok` (exit 0).
//!
//! Sessions come from a [`SessionBackend`] (see [`backend`]): the daemon creates the session id and
//! its [`Bus`](crate::events::Bus) (with the store and live followers as sinks) and hands both to
//! the backend in a [`SpawnRequest`]; the backend runs the child, emits the session's events on that
//! bus, and serves input, resize, attach snapshots, stop and wait through [`HostedSession`].
//! The binary hosts sessions with [`pty_backend::PtyBackend`]: the same supervisor as `mpm run`.

pub(crate) mod backend;
pub mod client;
pub(crate) mod notify;
pub(crate) mod pty_backend;
mod server;
pub(crate) mod socket;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use nix::poll::{PollFd, PollFlags, PollTimeout};

pub use backend::{Attachment, HostedSession, SessionBackend, SpawnError, SpawnRequest};

use crate::events::{Event, Sink};
use crate::store::{Store, StoreError};

/// Everything the daemon is configured with.
pub struct DaemonOptions {
    /// The socket's path.
    pub socket: PathBuf,
    /// The socket's folder is mpm's own runtime folder (forced 0700, must be ours).
    pub private_dir: bool,
    /// Where the store (`mpm.db`) and session output live.
    pub state_dir: PathBuf,
    /// The largest frame a client may send.
    pub max_frame_bytes: usize,
    /// Events older than this are deleted from the store.
    pub retention_days: u32,
    /// How long a session gets between SIGTERM and SIGKILL (stop requests and shutdown).
    pub stop_grace: Duration,
    /// Connections from any other uid are refused. Normally our own uid; tests set another.
    pub allowed_uid: u32,
    /// What starts sessions (the real PTY sessions, or a test's).
    pub backend: Arc<dyn SessionBackend>,
    /// Install SIGTERM/SIGINT handlers (the binary does; in-process tests use the handle).
    pub handle_signals: bool,
}

impl DaemonOptions {
    /// Defaults for a socket and state folder: our uid, 1 MiB frames, 30 days, 5 s grace, PTY
    /// sessions with the full supervisor.
    pub fn new(socket: PathBuf, state_dir: PathBuf) -> Self {
        DaemonOptions {
            socket,
            private_dir: false,
            state_dir: state_dir.clone(),
            max_frame_bytes: crate::protocol::DEFAULT_MAX_FRAME,
            retention_days: 30,
            stop_grace: Duration::from_secs(5),
            allowed_uid: nix::unistd::getuid().as_raw(),
            backend: Arc::new(pty_backend::PtyBackend::new(Vec::new(), state_dir.clone())),
            handle_signals: false,
        }
    }
}

/// Daemon errors.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The socket cannot be bound or secured.
    #[error(transparent)]
    Socket(#[from] socket::SocketError),
    /// The store cannot be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Any other I/O failure.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A session the daemon hosts.
pub(crate) struct Hosted {
    pub session: Arc<dyn HostedSession>,
    pub command: Vec<String>,
    pub cwd: String,
    pub started_at: String,
    pub attached: AtomicU32,
    pub bus: crate::events::Bus,
}

/// A live event with its store sequence number, as followers get it.
pub(crate) type Seqd = (i64, Arc<Event>);

/// Store + live fan-out: the one sink every hosted session's bus (and `Publish`) writes to.
pub(crate) struct Fanout {
    pub store: Arc<Store>,
    pub followers: Mutex<Vec<Sender<Seqd>>>,
    /// What `status` reports live, folded from the events as they pass.
    pub live: Mutex<LiveTally>,
}

impl Fanout {
    /// A fan-out into `store` with no followers yet.
    pub(crate) fn new(store: Arc<Store>) -> Self {
        Fanout {
            store,
            followers: Mutex::new(Vec::new()),
            live: Mutex::new(LiveTally::default()),
        }
    }

    /// Store the event, then hand it to followers. Returns the sequence number once durable.
    pub(crate) fn record(&self, ev: &Event) -> Result<i64, StoreError> {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(ev);
        let seq = self.store.append(ev)?;
        let ev = Arc::new(ev.clone());
        self.followers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|tx| tx.send((seq, ev.clone())).is_ok());
        Ok(seq)
    }
}

impl Sink for Fanout {
    fn write(&self, event: &Event) {
        if let Err(e) = self.record(event) {
            tracing::warn!(error = %e, kind = event.kind(), "cannot store event");
        }
    }
}

/// The daemon's live view for `status`, folded from every event it hosts or is sent: so `status`
/// answers from memory, not from the database (which also holds earlier runs' rows).
#[derive(Debug, Default)]
pub(crate) struct LiveTally {
    /// Delegations not finished yet: id → started (false while queued).
    delegations: HashMap<String, bool>,
    /// The governor mode of the latest `session.started` that named one.
    governor_mode: Option<String>,
}

impl LiveTally {
    fn observe(&mut self, ev: &Event) {
        use crate::events::EventBody as B;
        match &ev.body {
            B::DelegationQueued(d) => {
                self.delegations
                    .entry(d.delegation_id.clone())
                    .or_insert(false);
            }
            B::DelegationStarted { delegation, .. } => {
                self.delegations
                    .insert(delegation.delegation_id.clone(), true);
            }
            B::DelegationFinished { delegation, .. } => {
                self.delegations.remove(&delegation.delegation_id);
            }
            B::SessionStarted {
                governor_mode: Some(m),
                ..
            } => self.governor_mode = Some(m.clone()),
            _ => {}
        }
    }

    /// (queued, running) delegations.
    pub(crate) fn delegation_counts(&self) -> (u64, u64) {
        let running = self.delegations.values().filter(|&&r| r).count() as u64;
        (self.delegations.len() as u64 - running, running)
    }

    /// The governor mode sessions report, once one has started.
    pub(crate) fn governor_mode(&self) -> Option<String> {
        self.governor_mode.clone()
    }
}

/// State shared by the accept loop and every connection.
pub(crate) struct Shared {
    pub opts: DaemonOptions,
    pub fanout: Arc<Fanout>,
    /// The fan-out on its own thread: what every hosted session's bus writes to, so no session's
    /// detection waits on SQLite (see [`crate::events::Writer`]).
    pub fanout_writer: Arc<crate::events::Writer>,
    pub sessions: Mutex<HashMap<String, Arc<Hosted>>>,
    pub conns: Mutex<HashMap<u64, UnixStream>>,
    pub next_conn: AtomicU64,
    pub started: Instant,
    pub stopping: AtomicBool,
    /// Connections still in their handshake (see `server::Gate`).
    pub gate: server::Gate,
}

impl Shared {
    pub(crate) fn store(&self) -> &Store {
        &self.fanout.store
    }

    /// The hosted sessions right now (a snapshot: the lock is not held afterwards).
    pub(crate) fn hosted(&self) -> Vec<Arc<Hosted>> {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// Triggers shutdown of a running daemon from another thread (tests, embedding).
#[derive(Clone)]
pub struct DaemonHandle {
    wake: Arc<UnixStream>,
}

impl DaemonHandle {
    /// Ask the daemon to stop its sessions and exit (returns at once).
    pub fn shutdown(&self) {
        let _ = (&*self.wake).write_all(b"x");
    }
}

/// A bound daemon, ready to [`run`](Daemon::run).
pub struct Daemon {
    shared: Arc<Shared>,
    sock: socket::BoundSocket,
    wake_r: UnixStream,
    wake_w: Arc<UnixStream>,
}

impl Daemon {
    /// Open the store (recovering from a crash), bind the socket. Nothing is served yet.
    pub fn bind(opts: DaemonOptions) -> Result<Daemon, DaemonError> {
        let store = Arc::new(Store::open_in(&opts.state_dir)?);
        let rec = store.recover()?;
        if rec != Default::default() {
            tracing::warn!(
                sessions = rec.sessions_ended,
                delegations = rec.delegations_interrupted,
                "previous daemon did not shut down cleanly: marked its sessions ended and its queued delegations interrupted"
            );
        }
        let fanout = Arc::new(Fanout::new(store.clone()));
        // What the dead hosts left: the sessions' recorded roots that still run (the monitor
        // processes) and every process tagged with one of their trees, found now, before anything
        // is signalled; stopped in the background with one `process.reaped` event each. Then the
        // roots' whole trees, in case anything untagged is left in their groups.
        let mut leftovers = crate::process::registry::find_leftovers(&rec.hosts);
        for (session, pid, start) in &rec.roots {
            if !leftovers.iter().any(|l| l.pid as u32 == *pid)
                && let Some(l) = crate::process::registry::root_leftover(*pid, *start, session)
            {
                leftovers.push(l);
            }
        }
        let sink = fanout.clone();
        let (orphans, grace) = (rec.orphans.clone(), opts.stop_grace);
        crate::process::registry::stop_found_in_background(
            leftovers,
            opts.stop_grace,
            move |l, signal| sink.write(&reaped_event(l, signal)),
            move || stop_orphans(&orphans, grace),
        );
        match store.prune(opts.retention_days) {
            Ok(n) if n > 0 => tracing::info!(pruned = n, "pruned old events"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning failed"),
        }
        let sock = socket::bind(&opts.socket, opts.private_dir)?;
        let (wake_r, wake_w) = UnixStream::pair()?;
        wake_r.set_nonblocking(true)?;
        let wake_w = Arc::new(wake_w);
        if opts.handle_signals {
            for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                signal_hook::low_level::pipe::register(sig, wake_w.try_clone()?)?;
            }
        }
        let fanout_writer = crate::events::Writer::spawn("mpm-store", fanout.clone())?;
        Ok(Daemon {
            shared: Arc::new(Shared {
                opts,
                fanout,
                fanout_writer,
                sessions: Mutex::new(HashMap::new()),
                conns: Mutex::new(HashMap::new()),
                next_conn: AtomicU64::new(0),
                started: Instant::now(),
                stopping: AtomicBool::new(false),
                gate: Default::default(),
            }),
            sock,
            wake_r,
            wake_w,
        })
    }

    /// A handle that can stop this daemon from another thread.
    pub fn handle(&self) -> DaemonHandle {
        DaemonHandle {
            wake: self.wake_w.clone(),
        }
    }

    /// The socket it listens on.
    pub fn socket_path(&self) -> &std::path::Path {
        self.sock.path()
    }

    /// Serve until shutdown; then stop sessions, close connections, flush the store.
    pub fn run(self) -> Result<(), DaemonError> {
        if let Err(e) = notify::notify("READY=1") {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
        tracing::info!(socket = %self.sock.path().display(), pid = std::process::id(), "daemon listening");
        // Retention runs hourly while idle.
        let hour = PollTimeout::try_from(3_600_000u32).unwrap_or(PollTimeout::MAX);
        loop {
            let (listen_ready, wake_ready) = {
                let mut fds = [
                    PollFd::new(self.sock.listener.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.wake_r.as_fd(), PollFlags::POLLIN),
                ];
                match nix::poll::poll(&mut fds, hour) {
                    Ok(0) => {
                        let _ = self.shared.store().prune(self.shared.opts.retention_days);
                        continue;
                    }
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(std::io::Error::from(e).into()),
                }
                let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                (ready(&fds[0]), ready(&fds[1]))
            };
            if wake_ready {
                let mut buf = [0u8; 64];
                let _ = (&self.wake_r).read(&mut buf);
                break;
            }
            if listen_ready {
                match self.sock.listener.accept() {
                    Ok((stream, _)) => server::spawn_connection(&self.shared, stream),
                    Err(e) => tracing::warn!(error = %e, "accept failed"),
                }
            }
        }
        self.shutdown();
        Ok(())
    }

    fn shutdown(self) {
        let shared = &self.shared;
        shared.stopping.store(true, Ordering::SeqCst);
        tracing::info!("daemon stopping");
        if let Err(e) = notify::notify("STOPPING=1") {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
        // Stop accepting: nobody can connect once the file is gone and the listener closed.
        self.sock.unlink();
        let sessions = shared.hosted();
        let grace = shared.opts.stop_grace;
        let stoppers: Vec<_> = sessions
            .into_iter()
            .filter(|h| h.session.try_wait().is_none())
            .map(|h| std::thread::spawn(move || h.session.stop(grace)))
            .collect();
        for s in stoppers {
            let _ = s.join();
        }
        for (_, c) in shared
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
        {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        shared
            .fanout
            .followers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        // Sessions' exit events are in; mark anything left as ended by shutdown, then flush.
        for (id, h) in shared
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let code = h.session.try_wait().flatten();
            let _ = shared.store().end_session(id, code, "daemon-shutdown");
        }
        shared.store().shutdown();
        tracing::info!("daemon stopped");
    }
}

/// glibc malloc arenas the daemon may use (see [`limit_malloc_arenas`]).
pub const MALLOC_ARENAS: i32 = 2;

/// Bound glibc's malloc arenas before the daemon starts any thread. By default glibc gives
/// threads up to 8 arenas per core, and a session's short-lived threads (PTY reader and sink,
/// tap consumer, dispatcher, connection, attach pump) land in different ones: each arena keeps a
/// megabyte or so of freed, fragmented memory that `malloc_trim` cannot return while a small live
/// allocation sits above it. Measured (`benches/daemon_sessions.rs`): +7 MB of daemon RSS from 10
/// to 100 sessions with the default, +0.4 MB with two arenas. The daemon's threads mostly block;
/// two arenas are enough to keep the relay's allocations uncontended. An explicit
/// `MALLOC_ARENA_MAX` or `GLIBC_TUNABLES` in the environment wins.
pub fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none()
        && std::env::var_os("GLIBC_TUNABLES").is_none()
    {
        // SAFETY: mallopt only sets an allocator parameter; called before other threads exist.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS) };
    }
}

/// The `process.reaped` event of a leftover process stopped with `signal`, under its session.
fn reaped_event(l: &crate::process::registry::Leftover, signal: i32) -> Event {
    let signal = nix::sys::signal::Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| signal.to_string());
    Event {
        ts: crate::events::now_ts(),
        session: l.session.clone().unwrap_or_default(),
        trace_id: crate::events::new_id(),
        step_id: crate::events::new_id(),
        parent_step_id: None,
        body: crate::events::EventBody::ProcessReaped {
            pid: l.pid as u32,
            comm: l.comm.clone(),
            argv: l.argv.clone(),
            tag: l.tag.clone(),
            signal,
        },
    }
}

/// Stop, in the background, the trees of sessions a crashed daemon left running: only when the
/// pid still belongs to the same process (same start time), never a process that reused the pid.
fn stop_orphans(orphans: &[(u32, u64)], grace: Duration) {
    for pid in still_running(orphans) {
        tracing::warn!(pid, "stopping a session left running by a crashed daemon");
        let _ = std::thread::Builder::new()
            .name("mpm-orphan-stop".into())
            .spawn(move || {
                crate::process::stop_tree(pid as i32, grace);
            });
    }
}

/// The pids among `(pid, start time)` pairs that still name the same process.
fn still_running(orphans: &[(u32, u64)]) -> Vec<u32> {
    orphans
        .iter()
        .filter(|(pid, start)| crate::process::start_time(*pid as i32) == Some(*start))
        .map(|(pid, _)| *pid)
        .collect()
}

/// Resident memory of each root's process tree ([`crate::process::tree_members_in`]: session,
/// group, descendants and tagged escapees), MB, from one scan of /proc however many roots there
/// are. `None` for a root with no live process.
pub(crate) fn trees_rss_mb(roots: &[u32]) -> Vec<Option<f64>> {
    if roots.is_empty() {
        return Vec::new();
    }
    let procs = crate::process::all_processes();
    let pages: std::collections::HashMap<i32, u64> =
        procs.iter().map(|p| (p.pid, p.rss_pages)).collect();
    let page_mb = crate::process::procfs::page_size() as f64 / (1024.0 * 1024.0);
    roots
        .iter()
        .map(|&root| {
            let members = crate::process::tree_members_in(root as i32, &procs);
            (!members.is_empty())
                .then(|| members.iter().filter_map(|p| pages.get(p)).sum::<u64>() as f64 * page_mb)
        })
        .collect()
}

/// This process's resident memory, MB.
pub(crate) fn own_rss_mb() -> f64 {
    crate::process::procfs::rss_bytes(std::process::id() as i32).unwrap_or(0) as f64
        / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_tally_counts_unfinished_delegations_and_the_governor_mode() {
        use crate::events::{Delegation, DelegationStatus, EventBody};
        let ev = |body| Event {
            ts: String::new(),
            session: "s".into(),
            trace_id: String::new(),
            step_id: String::new(),
            parent_step_id: None,
            body,
        };
        let d = |id: &str| Delegation {
            delegation_id: id.into(),
            agent: "engineer".into(),
            task: "t".into(),
        };
        let mut t = LiveTally::default();
        assert_eq!((t.delegation_counts(), t.governor_mode()), ((0, 0), None));
        t.observe(&ev(EventBody::SessionStarted {
            command: vec![],
            pid: 1,
            cols: 80,
            rows: 24,
            governor_mode: Some("polling".into()),
            feedback: None,
        }));
        t.observe(&ev(EventBody::DelegationQueued(d("a"))));
        t.observe(&ev(EventBody::DelegationQueued(d("b"))));
        t.observe(&ev(EventBody::DelegationStarted {
            delegation: d("a"),
            pid: 2,
        }));
        assert_eq!(t.delegation_counts(), (1, 1));
        t.observe(&ev(EventBody::DelegationFinished {
            delegation: d("a"),
            status: DelegationStatus::Success,
            exit_code: Some(0),
            duration_ms: 1,
            output_path: None,
            reason: None,
            worker: None,
            result_path: None,
        }));
        assert_eq!(t.delegation_counts(), (1, 0));
        assert_eq!(t.governor_mode().as_deref(), Some("polling"));
    }

    #[test]
    fn orphans_are_matched_by_pid_and_start_time() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = crate::process::start_time(pid as i32).unwrap();
        let found = still_running(&[(pid, start), (pid, start + 1), (u32::MAX - 1, 5)]);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            found,
            vec![pid],
            "a reused pid (other start time) is never a match"
        );
    }
}
