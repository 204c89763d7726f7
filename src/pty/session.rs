//! [`PtyRun`]: one spawn of the agent on a PTY (a session has one per restart), independent of any
//! user terminal.
//!
//! Threads:
//! - reader: blocking `read` on the master; each chunk goes to the [`OutputSink`] (blocking: a
//!   slow terminal slows the agent, as it would without mpm), to the recorder, and to the tap
//!   (never blocking). Ends at EIO/EOF, i.e. when no process holds the slave any more.
//! - waiter: waits for the child to exit *without reaping it* (`waitid(WNOWAIT)`, so its pid cannot
//!   be reused while mpm still signals its group), lets the reader drain the master — bounded: it
//!   gives up when no byte arrived for [`DRAIN_IDLE`] or after [`DRAIN_MAX`], because a grandchild
//!   may hold the slave open forever — then stops whatever is left of the tree
//!   (`process::stop_tree`: SIGTERM, grace, SIGKILL), which also closes the slave so the reader
//!   sees EIO, reaps the child and publishes the [`PtyExit`].

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use nix::errno::Errno;
use nix::sys::termios::{Termios, tcgetattr};

use super::fdio::{wait_fd, write_all};
use super::record::Recorder;
use super::spawn::{PtyError, SpawnSpec, WinSize, set_winsize, spawn_on_pty};
use super::tap::{OutputConsumer, Tap};
use crate::config::Rlimits;

/// After the child exits, stop waiting for more output once none arrived for this long while the
/// reader was waiting for it (time spent writing to a slow sink does not count).
pub(super) const DRAIN_IDLE: Duration = Duration::from_millis(300);
/// After the child exits, stop waiting for more output after this long in any case (a grandchild
/// that keeps writing).
pub const DRAIN_MAX: Duration = Duration::from_secs(5);
/// After the leftover tree was stopped, wait at most this long for the reader to finish.
const DRAIN_AFTER_STOP: Duration = Duration::from_secs(1);

/// Where the session's output goes (the user's terminal, a daemon client). Called on the reader
/// thread; blocking is allowed and slows the agent down, like a slow terminal would.
pub trait OutputSink: Send {
    /// Write the whole chunk. An error stops further writes to this sink (the session goes on).
    fn write(&mut self, chunk: &[u8]) -> io::Result<()>;
}

/// A sink that drops everything (for sessions nobody watches).
impl OutputSink for io::Sink {
    fn write(&mut self, _chunk: &[u8]) -> io::Result<()> {
        Ok(())
    }
}

/// How to start a [`PtyRun`].
pub struct PtyConfig {
    /// The final argv (`argv[0]` is resolved on the child's PATH).
    pub argv: Vec<String>,
    /// Added to the inherited environment (or, with `env_clear`, the whole environment).
    pub env: Vec<(String, String)>,
    /// Start from an empty environment instead of mpm's (a daemon passes its client's).
    pub env_clear: bool,
    /// Working directory (`None`: mpm's).
    pub cwd: Option<PathBuf>,
    /// The PTY's initial size.
    pub size: WinSize,
    /// Line settings for the PTY (the user's terminal's); `None` = kernel defaults.
    pub termios: Option<Termios>,
    /// setrlimit values applied in the child before exec.
    pub rlimits: Option<Rlimits>,
    /// SIGTERM-to-SIGKILL grace when the tree is stopped.
    pub grace: Duration,
    /// Where output goes.
    pub output: Box<dyn OutputSink>,
    /// The text pipeline, fed through the bounded tap.
    pub consumer: Option<Box<dyn OutputConsumer>>,
    /// The tap's capacity in bytes (`run.tap_capacity_bytes`).
    pub tap_capacity_bytes: usize,
    /// An asciicast recorder.
    pub recorder: Option<Recorder>,
    /// After the child exited, output the sink has not taken yet is held up to this many bytes
    /// (the rest is counted as dropped), so a stalled reader loses no tail (`run.tail_bytes`).
    pub tail_limit_bytes: usize,
}

/// How a session's child ended.
#[derive(Debug, Clone, Copy)]
pub struct PtyExit {
    /// The child's wait status.
    pub status: ExitStatus,
    /// Output bytes dropped for the consumer (the sink got them all).
    pub tap_overrun_bytes: u64,
    /// Output bytes read from the PTY.
    pub output_bytes: u64,
    /// False when the reader had not reached EOF when mpm gave up waiting (a process outside the
    /// tree holds the slave).
    pub drained: bool,
    /// Output read after the child exited that did not fit the tail bound (`run.tail_bytes`)
    /// while the sink was behind: counted, not delivered.
    pub tail_dropped_bytes: u64,
}

impl PtyExit {
    /// The exit code, when the child exited.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
    /// The signal that killed the child, when one did.
    pub fn signal(&self) -> Option<i32> {
        self.status.signal()
    }
    /// The shell convention: the code, or 128+N for signal N.
    pub fn shell_status(&self) -> i32 {
        crate::process::shell_status(self.status)
    }
}

/// One child on a PTY: input, resize, stop and wait. Share it with `Arc`.
pub struct PtyRun {
    pid: i32,
    master: Arc<OwnedFd>,
    size: Mutex<WinSize>,
    grace: Duration,
    tap: Option<Tap>,
    recorder: Option<Arc<Mutex<Recorder>>>,
    /// True once the child was reaped; stop() must not signal a pid that may be reused.
    reaped: Arc<Mutex<bool>>,
    /// Set just before the child is reaped, readable without waiting for a stop in progress.
    reaping: Arc<AtomicBool>,
    exit_rx: Receiver<PtyExit>,
    stop_rx: Receiver<()>,
    exit: Mutex<Option<PtyExit>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl PtyRun {
    /// Spawn the child and start the reader, waiter and (with a consumer) tap threads.
    pub fn spawn(cfg: PtyConfig) -> Result<PtyRun, PtyError> {
        // The tap first: a failure after the child exists would have to kill it.
        let (tap, tap_thread) = match cfg.consumer {
            Some(c) => {
                let (tap, h) = Tap::start(c, cfg.tap_capacity_bytes)
                    .map_err(|e| PtyError::sys("start tap thread", e))?;
                (Some(tap), Some(h))
            }
            None => (None, None),
        };
        let spawned = spawn_on_pty(&SpawnSpec {
            argv: &cfg.argv,
            env: &cfg.env,
            env_clear: cfg.env_clear,
            cwd: cfg.cwd.as_deref(),
            size: cfg.size,
            termios: cfg.termios.as_ref(),
            rlimits: cfg.rlimits.as_ref(),
        })?;
        let pid = spawned.child.id() as i32;
        let master = Arc::new(spawned.master);
        let mut threads = Vec::new();
        let recorder = cfg.recorder.map(|r| Arc::new(Mutex::new(r)));
        let bytes = Arc::new(AtomicU64::new(0));
        let reading = Arc::new(AtomicBool::new(false));
        let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
        // The child has exited: from now on the reader reads the tail whatever the sink does.
        let (exited_tx, exited_rx) = crossbeam_channel::bounded::<()>(0);
        let dropped = Arc::new(AtomicU64::new(0));

        // The sink on a thread of its own: a small queue keeps the backpressure of a slow sink
        // while the child runs (a slow terminal slows the agent, as without mpm).
        let (chunks_tx, chunks_rx) = crossbeam_channel::bounded::<Vec<u8>>(SINK_QUEUE_CHUNKS);
        let writer = {
            let mut sink = cfg.output;
            std::thread::Builder::new()
                .name("mpm-pty-write".into())
                .spawn(move || {
                    let mut batch = Vec::new();
                    for chunk in chunks_rx.iter() {
                        let chunk = coalesce(chunk, &chunks_rx, &mut batch);
                        if let Err(e) = sink.write(chunk) {
                            tracing::warn!(error = %e, "output sink failed; output now goes to the tap only");
                            // Keep receiving so the reader never blocks on a dead sink.
                            for _ in chunks_rx.iter() {}
                            return;
                        }
                    }
                })
                .map_err(|e| abandon(pid, PtyError::sys("start writer thread", e)))?
        };
        threads.push(writer);

        let reader = {
            let master = master.clone();
            let tap = tap.clone();
            let recorder = recorder.clone();
            let bytes = bytes.clone();
            let reading = reading.clone();
            let dropped = dropped.clone();
            let tail_limit = cfg.tail_limit_bytes;
            std::thread::Builder::new()
                .name("mpm-pty-read".into())
                .spawn(move || {
                    let progress = Progress {
                        bytes: &bytes,
                        reading: &reading,
                    };
                    let mut out = Outbox {
                        tx: chunks_tx,
                        exited: exited_rx,
                        after_exit: false,
                        tail: std::collections::VecDeque::new(),
                        tail_bytes: 0,
                        tail_limit,
                        dropped: &dropped,
                    };
                    read_loop(
                        &master,
                        &mut out,
                        tap.as_ref(),
                        recorder.as_deref(),
                        progress,
                    );
                    if let Some(t) = &tap {
                        t.end();
                    }
                    drop(done_tx);
                    // Read side done; now hand the held tail to the sink at its pace.
                    out.flush();
                })
                .map_err(|e| abandon(pid, PtyError::sys("start reader thread", e)))?
        };
        threads.push(reader);
        if let Some(h) = tap_thread {
            threads.push(h);
        }

        let reaped = Arc::new(Mutex::new(false));
        let reaping = Arc::new(AtomicBool::new(false));
        let (exit_tx, exit_rx) = crossbeam_channel::bounded(1);
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        let waiter = {
            let reaped = reaped.clone();
            let reaping = reaping.clone();
            let tap = tap.clone();
            let grace = cfg.grace;
            let mut child = spawned.child;
            std::thread::Builder::new()
                .name("mpm-pty-wait".into())
                .spawn(move || {
                    wait_exited(pid, &stop_tx);
                    drop(exited_tx);
                    let drained = drain(&done_rx, &bytes, &reading);
                    let outcome = {
                        let mut reaped = reaped.lock().unwrap_or_else(|e| e.into_inner());
                        let outcome = crate::process::stop_tree(pid, grace);
                        reaping.store(true, Ordering::SeqCst);
                        let status = loop {
                            match child.wait() {
                                Ok(s) => break s,
                                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                                Err(e) => {
                                    tracing::error!(pid, error = %e, "cannot reap the agent");
                                    break ExitStatus::from_raw(1 << 8);
                                }
                            }
                        };
                        *reaped = true;
                        (outcome, status)
                    };
                    let drained = drained
                        || matches!(
                            done_rx.recv_timeout(DRAIN_AFTER_STOP),
                            Err(RecvTimeoutError::Disconnected)
                        );
                    if !drained {
                        tracing::warn!(pid, "pty output not drained: the slave is still held open");
                    }
                    tracing::debug!(pid, stop = ?outcome.0, "agent tree stopped after exit");
                    let tail_dropped_bytes = dropped.load(Ordering::Relaxed);
                    if tail_dropped_bytes > 0 {
                        tracing::warn!(
                            pid,
                            bytes = tail_dropped_bytes,
                            "output tail over the bound dropped"
                        );
                    }
                    let _ = exit_tx.send(PtyExit {
                        tail_dropped_bytes,
                        status: outcome.1,
                        tap_overrun_bytes: tap.as_ref().map_or(0, Tap::overrun_bytes),
                        output_bytes: bytes.load(Ordering::Relaxed),
                        drained,
                    });
                })
                .map_err(|e| abandon(pid, PtyError::sys("start waiter thread", e)))?
        };
        threads.push(waiter);

        Ok(PtyRun {
            pid,
            master,
            size: Mutex::new(cfg.size),
            grace: cfg.grace,
            tap,
            recorder,
            reaped,
            reaping,
            exit_rx,
            stop_rx,
            exit: Mutex::new(None),
            threads: Mutex::new(threads),
        })
    }

    /// The child's pid (also its session id and process group id).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The current PTY size.
    pub fn size(&self) -> WinSize {
        *self.size.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Write bytes to the agent's input (blocks while the PTY's input queue is full); the recorder
    /// hears of them too.
    pub fn write_input(&self, bytes: &[u8]) -> io::Result<()> {
        if let Some(r) = &self.recorder
            && let Err(e) = r.lock().unwrap_or_else(|e| e.into_inner()).input(bytes)
        {
            tracing::warn!(error = %e, "cannot write the recording");
        }
        write_all(self.master.as_fd(), bytes)
    }

    /// The PTY's current line settings (the slave's, as the agent set them).
    pub fn termios(&self) -> io::Result<Termios> {
        Ok(tcgetattr(self.master.as_fd())?)
    }

    /// Resize the PTY; the kernel sends SIGWINCH to the agent's foreground process group. The
    /// consumer and the recorder hear of it too. A no-op when the size is unchanged.
    pub fn resize(&self, size: WinSize) -> io::Result<()> {
        {
            let mut cur = self.size.lock().unwrap_or_else(|e| e.into_inner());
            if *cur == size {
                return Ok(());
            }
            *cur = size;
        }
        set_winsize(self.master.as_fd(), size)?;
        if let Some(t) = &self.tap {
            t.resize(size.cols, size.rows);
        }
        if let Some(r) = &self.recorder {
            let mut r = r.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = r.resize(size) {
                tracing::warn!(error = %e, "cannot write the recording");
            }
        }
        Ok(())
    }

    /// Stop the whole tree: SIGTERM to the group and every member, `grace`, then SIGKILL.
    /// Blocking. Does nothing once the child has been reaped.
    pub fn stop(&self, grace: Duration) {
        let reaped = self.reaped.lock().unwrap_or_else(|e| e.into_inner());
        if !*reaped {
            crate::process::stop_tree(self.pid, grace);
        }
    }

    /// SIGKILL the whole tree now, without waiting for a [`stop`] in progress (a second Ctrl-C or
    /// SIGTERM while the grace period runs). Does nothing once the child is being reaped.
    ///
    /// [`stop`]: PtyRun::stop
    pub fn kill_now(&self) {
        if !self.reaping.load(Ordering::SeqCst) {
            crate::process::signal_tree(self.pid, nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// The configured grace period.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// A channel that yields the exit once (for `select!` with other events). Prefer [`wait`].
    ///
    /// [`wait`]: PtyRun::wait
    pub fn exit_channel(&self) -> &Receiver<PtyExit> {
        &self.exit_rx
    }

    /// Yields once each time the agent stopped (Ctrl-Z, a suspend): the host then suspends itself
    /// or [`resume`](PtyRun::resume)s the agent.
    pub fn stop_channel(&self) -> &Receiver<()> {
        &self.stop_rx
    }

    /// Continue a stopped agent: SIGCONT to the session's monitor, which gives the terminal back to
    /// the agent and continues its group. Nothing once the child is reaped.
    pub fn resume(&self) {
        let reaped = self.reaped.lock().unwrap_or_else(|e| e.into_inner());
        if !*reaped {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid),
                nix::sys::signal::Signal::SIGCONT,
            );
        }
    }

    /// Tell the agent's group the window size again (SIGWINCH), even when it did not change (after
    /// a resume, so a full-screen agent redraws).
    pub fn push_size(&self) -> io::Result<()> {
        let size = self.size();
        set_winsize(self.master.as_fd(), size)?;
        // SAFETY: TIOCGPGRP writes one pid_t.
        let mut pgrp: libc::pid_t = 0;
        if unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCGPGRP, &mut pgrp) } == 0
            && pgrp > 0
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(-pgrp),
                nix::sys::signal::Signal::SIGWINCH,
            );
        }
        Ok(())
    }

    /// Block until the child exited, its output was drained and the tree is gone. Also joins the
    /// consumer (so every detection has been made) when the output was fully drained.
    pub fn wait(&self) -> PtyExit {
        let mut slot = self.exit.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = *slot {
            return e;
        }
        let exit = self.exit_rx.recv().unwrap_or(PtyExit {
            tail_dropped_bytes: 0,
            status: ExitStatus::from_raw(1 << 8),
            tap_overrun_bytes: 0,
            output_bytes: 0,
            drained: false,
        });
        self.finish_threads(&exit);
        *slot = Some(exit);
        exit
    }

    /// Record a received exit (from [`exit_channel`]) and join the threads; returns it.
    ///
    /// [`exit_channel`]: PtyRun::exit_channel
    pub fn complete(&self, exit: PtyExit) -> PtyExit {
        let mut slot = self.exit.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            self.finish_threads(&exit);
            *slot = Some(exit);
        }
        exit
    }

    fn finish_threads(&self, exit: &PtyExit) {
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        if exit.drained {
            for t in threads {
                let _ = t.join();
            }
        }
        if let Some(r) = &self.recorder {
            let mut r = r.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = r.finish() {
                tracing::warn!(error = %e, "cannot finish the recording");
            }
        }
    }
}

impl Drop for PtyRun {
    /// A session dropped before its child was reaped stops the tree (off-thread, with the grace),
    /// so no caller can leak an agent by forgetting to `stop`/`wait`.
    fn drop(&mut self) {
        let reaped = self.reaped.clone();
        let (pid, grace) = (self.pid, self.grace);
        if *reaped.lock().unwrap_or_else(|e| e.into_inner()) {
            return;
        }
        let _ = std::thread::Builder::new()
            .name("mpm-pty-drop".into())
            .spawn(move || {
                let reaped = reaped.lock().unwrap_or_else(|e| e.into_inner());
                if !*reaped {
                    crate::process::stop_tree(pid, grace);
                }
            });
    }
}

/// Setup failed after the child was spawned: kill its tree (it stays an unreaped zombie, so its pid
/// cannot be reused meanwhile) and pass the error on.
fn abandon(pid: i32, e: PtyError) -> PtyError {
    crate::process::stop_tree(pid, Duration::ZERO);
    e
}

/// Block until `pid` has exited, leaving it a zombie (not reaped).
fn wait_exited(pid: i32, stops: &crossbeam_channel::Sender<()>) {
    loop {
        // SAFETY: waitid writes one siginfo_t to a valid pointer.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WSTOPPED | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            if info.si_code == libc::CLD_STOPPED || info.si_code == libc::CLD_TRAPPED {
                // The agent stopped (job control, see `spawn::split_monitor`): consume the report
                // (the exit stays for the reaper) and tell the host.
                // SAFETY: as above.
                let _ = unsafe {
                    libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WSTOPPED)
                };
                let _ = stops.try_send(());
                continue;
            }
            return;
        }
        if Errno::last() != Errno::EINTR {
            return;
        }
    }
}

/// Let the reader drain what the child left in the PTY; true when it reached EOF.
fn drain(done: &Receiver<()>, bytes: &AtomicU64, reading: &AtomicBool) -> bool {
    let start = Instant::now();
    let mut last = bytes.load(Ordering::Relaxed);
    loop {
        match done.recv_timeout(DRAIN_IDLE) {
            Err(RecvTimeoutError::Disconnected) | Ok(()) => return true,
            Err(RecvTimeoutError::Timeout) => {
                let now = bytes.load(Ordering::Relaxed);
                let idle = now == last && reading.load(Ordering::Relaxed);
                if idle || start.elapsed() >= DRAIN_MAX {
                    return false;
                }
                last = now;
            }
        }
    }
}

/// What the reader publishes for the drain decision.
struct Progress<'a> {
    bytes: &'a AtomicU64,
    /// True while blocked in `read` (waiting for output), false while handing a chunk on.
    reading: &'a AtomicBool,
}

/// Chunks queued for the sink's thread while the child runs (64 KiB each at most; a PTY read
/// gives 4 KiB at most under a flood).
const SINK_QUEUE_CHUNKS: usize = 16;

/// What the sink writes at once at most: chunks already queued behind `first` are joined up to
/// this, so a flood of 4 KiB reads becomes fewer, larger writes (fewer wake-ups of the terminal's
/// reader, or of a daemon client).
const SINK_BATCH_BYTES: usize = 64 * 1024;

/// `first`, joined with the chunks queued behind it (up to [`SINK_BATCH_BYTES`]) in `batch`.
fn coalesce<'a>(
    first: Vec<u8>,
    rx: &crossbeam_channel::Receiver<Vec<u8>>,
    batch: &'a mut Vec<u8>,
) -> &'a [u8] {
    batch.clear();
    batch.extend_from_slice(&first);
    while batch.len() < SINK_BATCH_BYTES {
        match rx.try_recv() {
            Ok(next) => batch.extend_from_slice(&next),
            Err(_) => break,
        }
    }
    batch
}

/// The reader's side of the sink queue. While the child runs a send blocks (backpressure); once it
/// has exited, what the sink has not taken is held in `tail` (bounded) so the reader drains the PTY
/// whatever the sink does.
struct Outbox<'a> {
    tx: crossbeam_channel::Sender<Vec<u8>>,
    exited: Receiver<()>,
    after_exit: bool,
    tail: std::collections::VecDeque<Vec<u8>>,
    tail_bytes: usize,
    tail_limit: usize,
    dropped: &'a AtomicU64,
}

impl Outbox<'_> {
    fn push(&mut self, chunk: &[u8]) {
        if !self.after_exit {
            crossbeam_channel::select! {
                send(self.tx, chunk.to_vec()) -> r => {
                    let _ = r;
                    return;
                }
                recv(self.exited) -> _ => self.after_exit = true,
            }
        }
        // Keep the order: the held tail goes first.
        while let Some(front) = self.tail.pop_front() {
            let len = front.len();
            match self.tx.try_send(front) {
                Ok(()) => self.tail_bytes -= len,
                Err(crossbeam_channel::TrySendError::Full(c))
                | Err(crossbeam_channel::TrySendError::Disconnected(c)) => {
                    self.tail.push_front(c);
                    break;
                }
            }
        }
        if self.tail.is_empty() && self.tx.try_send(chunk.to_vec()).is_ok() {
            return;
        }
        if self.tail_bytes + chunk.len() <= self.tail_limit {
            self.tail_bytes += chunk.len();
            self.tail.push_back(chunk.to_vec());
        } else {
            self.dropped
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
    }

    /// Hand the held tail to the sink (blocking at its pace), then end its stream.
    fn flush(self) {
        for chunk in self.tail {
            if self.tx.send(chunk).is_err() {
                break;
            }
        }
    }
}

fn read_loop(
    master: &OwnedFd,
    sink: &mut Outbox<'_>,
    tap: Option<&Tap>,
    recorder: Option<&Mutex<Recorder>>,
    progress: Progress<'_>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut record_ok = true;
    loop {
        progress.reading.store(true, Ordering::Relaxed);
        let r = nix::unistd::read(master.as_fd(), &mut buf);
        progress.reading.store(false, Ordering::Relaxed);
        let n = match r {
            Ok(0) | Err(Errno::EIO) => return,
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => {
                wait_fd(master.as_raw_fd(), libc::POLLIN);
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "pty read failed");
                return;
            }
        };
        // A PTY read gives 4 KiB at most: take what else is ready now (never waiting) so that a
        // flood goes on as fewer, larger chunks (fewer wake-ups of the sink and the tap).
        let (n, ended) = gather(master, &mut buf, n);
        let chunk = &buf[..n];
        progress.bytes.fetch_add(n as u64, Ordering::Relaxed);
        sink.push(chunk);
        if record_ok && let Some(r) = recorder {
            let mut r = r.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = r.output(chunk) {
                tracing::warn!(error = %e, "cannot write the recording; recording stopped");
                record_ok = false;
            }
        }
        if let Some(t) = tap {
            t.push(chunk);
        }
        if ended {
            return;
        }
    }
}

/// Read more into `buf` after its first `n` bytes while the master has output ready right now
/// (poll with a zero timeout). Returns the bytes held and whether the PTY's output ended.
fn gather(master: &OwnedFd, buf: &mut [u8], mut n: usize) -> (usize, bool) {
    const ROOM: usize = 4096;
    while buf.len() - n >= ROOM {
        let mut p = libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; zero timeout.
        if unsafe { libc::poll(&mut p, 1, 0) } != 1 {
            break;
        }
        match nix::unistd::read(master.as_fd(), &mut buf[n..]) {
            Ok(0) | Err(Errno::EIO) => return (n, true),
            Ok(m) => n += m,
            Err(Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    (n, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl OutputSink for Shared {
        fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
            self.0.lock().unwrap().extend_from_slice(chunk);
            Ok(())
        }
    }

    impl OutputConsumer for Shared {
        fn feed(&mut self, bytes: &[u8]) {
            self.0.lock().unwrap().extend_from_slice(bytes);
        }
    }

    fn config(argv: &[&str], out: Shared, tap: Shared) -> PtyConfig {
        PtyConfig {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![("MPM_TEST_VAR".into(), "v1".into())],
            env_clear: false,
            cwd: None,
            size: WinSize { cols: 77, rows: 11 },
            termios: None,
            rlimits: None,
            grace: Duration::from_millis(200),
            output: Box::new(out),
            consumer: Some(Box::new(tap)),
            tap_capacity_bytes: 1 << 20,
            recorder: None,
            tail_limit_bytes: 1 << 20,
        }
    }

    /// The socket-less API the daemon builds on: input, size, env, output sink and tap, exit.
    #[test]
    fn input_output_size_and_exit_without_a_terminal() {
        let (out, tap) = (Shared::default(), Shared::default());
        let script = "stty size; echo $MPM_TEST_VAR; read x; echo got-$x; exit 7";
        let s = PtyRun::spawn(config(&["sh", "-c", script], out.clone(), tap.clone())).unwrap();
        assert!(s.pid() > 1);
        s.write_input(b"hello\n").unwrap();
        let exit = s.wait();
        assert_eq!(exit.code(), Some(7));
        assert!(exit.drained);
        let text = String::from_utf8_lossy(&out.0.lock().unwrap()).into_owned();
        assert!(text.contains("11 77\r\n"), "{text:?}");
        assert!(text.contains("v1\r\n"), "{text:?}");
        assert!(text.contains("got-hello\r\n"), "{text:?}");
        // The consumer got every byte too (joined by `wait`).
        assert_eq!(*tap.0.lock().unwrap(), *out.0.lock().unwrap());
        assert_eq!(exit.output_bytes as usize, out.0.lock().unwrap().len());
    }

    #[test]
    fn stop_ends_a_child_that_ignores_sigterm() {
        let (out, tap) = (Shared::default(), Shared::default());
        let s = PtyRun::spawn(config(
            &[
                "sh",
                "-c",
                "trap '' TERM HUP; echo up; while :; do sleep 1; done",
            ],
            out.clone(),
            tap,
        ))
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !String::from_utf8_lossy(&out.0.lock().unwrap()).contains("up") {
            assert!(Instant::now() < deadline, "child never started");
            std::thread::sleep(Duration::from_millis(5));
        }
        s.stop(Duration::from_millis(100));
        let exit = s.wait();
        assert_eq!(exit.signal(), Some(9));
        assert!(crate::process::tree_members(s.pid()).is_empty());
    }
}
