//! One supervised agent session in the user's terminal: the in-terminal relay built on
//! [`PtySession`].
//!
//! [`run_in_terminal`] resolves the command (so "not found" is reported before the terminal is
//! touched), starts the orphan watchdog, registers the signal thread, puts stdin into raw mode
//! (when it is a terminal), spawns the agent on a PTY of the user's size, and relays:
//! stdin → PTY on a thread of its own, PTY → stdout on the session's reader thread. It emits
//! `session.started` and `session.exited` on the bus and returns the [`SessionOutcome`].
//!
//! The terminal is restored on every exit path: the raw-mode guard on return and on error, the
//! panic hook, and the signal thread (SIGTERM/SIGHUP/SIGINT/SIGQUIT to mpm restore at once, stop
//! the tree — SIGTERM, grace, SIGKILL; a second such signal kills at once — and make mpm exit
//! 128+N). When stdout goes away (a closed pipe, a hung-up terminal) the session ends as if mpm had
//! got SIGPIPE (141) or SIGHUP (129), like any writer in a pipeline.
//!
//! The terminal summary (one line per delegation, `run.summary`) belongs after this returns, when
//! the terminal is the user's again: see `cli::run::after_session`.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use crate::config::Rlimits;
use crate::events::{Bus, EventBody};
use crate::pty::record::Recorder;
use crate::pty::signals::{SESSION_SIGNALS, SignalThread};
use crate::pty::terminal::{self, RawModeGuard};
use crate::pty::watchdog::Watchdog;
use crate::pty::{OutputConsumer, OutputSink, PtyConfig, PtyError, PtySession, WinSize};

/// Rewrites the agent's argv just before the spawn.
pub type ArgvHook = Box<dyn FnOnce(&mut Vec<String>) + Send>;

/// Everything [`run_in_terminal`] needs.
pub struct SessionOptions {
    /// The agent's argv.
    pub command: Vec<String>,
    /// Added to the inherited environment (the profile's `env`).
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    /// The PTY size; `None` = the user's terminal size (or `COLUMNS`/`LINES`, or 80x24).
    pub size: Option<WinSize>,
    /// SIGTERM-to-SIGKILL grace when the tree is stopped (`run.grace_secs`).
    pub grace: Duration,
    /// Applied with setrlimit in the child (`limits.rlimits`).
    pub rlimits: Option<Rlimits>,
    /// Write an asciicast v2 recording here.
    pub record: Option<PathBuf>,
    /// The text pipeline; fed through the bounded tap on its own thread.
    pub consumer: Option<Box<dyn OutputConsumer>>,
    /// The tap's capacity (`run.tap_capacity_bytes`).
    pub tap_capacity_bytes: usize,
    /// Where `session.started` / `session.exited` go.
    pub bus: Bus,
    /// Called with the final argv just before the spawn (e.g. to add `--session-id <uuid>`).
    pub argv_hook: Option<ArgvHook>,
    /// Called with the agent's pid right after the spawn (e.g. to register it with the governor).
    pub on_spawn: Option<Box<dyn FnOnce(i32) + Send>>,
    /// The resource governor's mode, reported in `session.started`.
    pub governor_mode: Option<String>,
    /// Called after the child is gone and before `session.exited` is emitted (e.g. so the
    /// governor's `resource.limit` for this tree comes first).
    pub before_exit: Option<Box<dyn FnOnce() + Send>>,
    /// The `mpm` binary to start as the orphan watchdog (`mpm __watchdog`, see `pty::watchdog`);
    /// `None` = no watchdog. `mpm run` passes its own executable.
    pub watchdog_exe: Option<PathBuf>,
    /// Result delivery (`feedback`): gets a writer into the PTY and the user's keystrokes.
    pub pty_port: Option<Arc<crate::feedback::port::PtyPort>>,
}

impl SessionOptions {
    /// Options with the defaults of `run` config for `command`.
    pub fn new(command: Vec<String>, bus: Bus) -> Self {
        SessionOptions {
            command,
            env: Vec::new(),
            cwd: None,
            size: None,
            grace: Duration::from_secs(3),
            rlimits: None,
            record: None,
            consumer: None,
            tap_capacity_bytes: 8 << 20,
            bus,
            argv_hook: None,
            on_spawn: None,
            governor_mode: None,
            before_exit: None,
            watchdog_exe: None,
            pty_port: None,
        }
    }
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionOutcome {
    pub pid: i32,
    /// The child's exit code, or `None` when a signal killed it.
    pub exit_code: Option<i32>,
    /// The signal that killed the child.
    pub signal: Option<i32>,
    /// What mpm should exit with: the child's status (128+N for signal N), or 128+N when mpm
    /// itself was told to stop by signal N.
    pub status: i32,
    /// A signal to mpm (SIGTERM, SIGHUP, SIGINT, SIGQUIT) that ended the session.
    pub stopped_by: Option<i32>,
    pub duration: Duration,
    pub tap_overrun_bytes: u64,
}

/// Errors before the session could start (after a start, everything ends in a [`SessionOutcome`]).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Spawn(#[from] PtyError),
    #[error("cannot set up the terminal: {0}")]
    Terminal(#[source] io::Error),
    #[error("cannot create the recording {path}: {source}")]
    Record {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl SessionError {
    /// 127 command not found, 126 not executable, 1 otherwise.
    pub fn exit_status(&self) -> i32 {
        match self {
            SessionError::Spawn(e) => e.exit_status(),
            _ => 1,
        }
    }
}

/// The user's stdout as an [`OutputSink`]: a plain blocking `write` per chunk. When stdout goes
/// away (a closed pipe: `mpm run -- cmd | head`; a hung-up terminal) the session is ended the way
/// the shell would end a writer: as if mpm got SIGPIPE (or SIGHUP).
struct StdoutSink {
    ctl: crossbeam_channel::Sender<i32>,
}

impl OutputSink for StdoutSink {
    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        // SAFETY: fd 1 stays open for the life of the process.
        let fd = unsafe { BorrowedFd::borrow_raw(1) };
        let r = crate::pty::fdio::write_all(fd, chunk);
        if let Err(e) = &r {
            let sig = if e.raw_os_error() == Some(libc::EPIPE) {
                libc::SIGPIPE
            } else {
                libc::SIGHUP
            };
            // Negative: "as if signalled", from the output side (never escalates to SIGKILL).
            let _ = self.ctl.send(-sig);
        }
        r
    }
}

/// Run `opts.command` under a PTY in this terminal until it exits. See the module docs.
pub fn run_in_terminal(mut opts: SessionOptions) -> Result<SessionOutcome, SessionError> {
    let mut argv = std::mem::take(&mut opts.command);
    if let Some(hook) = opts.argv_hook.take() {
        hook(&mut argv);
    }
    // Not found / not executable: say so before the terminal is touched.
    let child_path = opts
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| std::ffi::OsString::from(v))
        .or_else(|| std::env::var_os("PATH"));
    crate::pty::resolve_command(
        argv.first().map(String::as_str).unwrap_or(""),
        child_path.as_deref(),
    )?;

    let size = opts.size.unwrap_or_else(terminal::user_size);
    let recorder = match &opts.record {
        Some(p) => Some(Recorder::create(p, size).map_err(|e| SessionError::Record {
            path: p.display().to_string(),
            source: e,
        })?),
        None => None,
    };
    let mut watchdog = match &opts.watchdog_exe {
        Some(exe) => match Watchdog::spawn(exe, opts.grace) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, exe = %exe.display(), "cannot start the orphan watchdog");
                None
            }
        },
        None => None,
    };

    // Signals first (so a SIGTERM during setup cannot leave a raw terminal), then raw mode.
    let (ctl_tx, ctl_rx) = crossbeam_channel::unbounded::<i32>();
    let session_slot: Arc<std::sync::OnceLock<Arc<PtySession>>> = Arc::default();
    let stdout_sink = StdoutSink {
        ctl: ctl_tx.clone(),
    };
    let signals = {
        let slot = session_slot.clone();
        SignalThread::start(&SESSION_SIGNALS, move |sig| {
            if sig == libc::SIGWINCH {
                if let (Some(s), Some(size)) = (slot.get(), tty_size())
                    && let Err(e) = s.resize(size)
                {
                    tracing::warn!(error = %e, "cannot resize the pty");
                }
            } else {
                // Give the user their terminal back at once; the tree stop may take the grace.
                terminal::restore();
                let _ = ctl_tx.send(sig);
            }
        })
        .map_err(SessionError::Terminal)?
    };
    let termios = terminal::stdin_termios();
    let stdin_is_tty = termios.is_some();
    let raw = RawModeGuard::enter().map_err(SessionError::Terminal)?;

    let pty = PtySession::spawn(PtyConfig {
        argv: argv.clone(),
        env: opts.env,
        cwd: opts.cwd,
        size,
        termios,
        rlimits: opts.rlimits,
        grace: opts.grace,
        output: Box::new(stdout_sink),
        consumer: opts.consumer,
        tap_capacity_bytes: opts.tap_capacity_bytes,
        recorder,
    })?;
    let start = Instant::now();
    let pty = Arc::new(pty);
    let _ = session_slot.set(pty.clone());
    let pid = pty.pid();
    if let Some(w) = &mut watchdog
        && let Err(e) = w.arm(pid)
    {
        tracing::warn!(error = %e, "cannot arm the orphan watchdog");
    }
    tracing::info!(pid, command = ?argv, cols = size.cols, rows = size.rows, "session started");
    opts.bus.emit(EventBody::SessionStarted {
        command: argv,
        pid: pid as u32,
        cols: size.cols,
        rows: size.rows,
        governor_mode: opts.governor_mode.take(),
    });
    if let Some(f) = opts.on_spawn.take() {
        f(pid);
    }
    // A resize between reading the size and the spawn would otherwise be lost.
    if let Some(s) = tty_size()
        && let Err(e) = pty.resize(s)
    {
        tracing::debug!(error = %e, "cannot resize the pty");
    }

    if let Some(port) = &opts.pty_port {
        let p = pty.clone();
        port.connect(Box::new(move |b| p.write_input(b)));
    }
    let stdin_pump = start_stdin_thread(pty.clone(), stdin_is_tty, opts.pty_port.clone());

    let stopped_by = AtomicI32::new(0);
    let exit = loop {
        crossbeam_channel::select! {
            recv(pty.exit_channel()) -> exit => {
                break match exit {
                    Ok(e) => pty.complete(e),
                    Err(_) => pty.wait(),
                };
            }
            recv(ctl_rx) -> sig => {
                let Ok(sig) = sig else { continue };
                let (sig, from_output) = (sig.abs(), sig < 0);
                if stopped_by.load(Ordering::Relaxed) != 0 && !from_output {
                    // Asked twice: no more grace.
                    tracing::info!(pid, signal = sig, "mpm signalled again: killing the agent tree");
                    pty.kill_now();
                } else if stopped_by.load(Ordering::Relaxed) == 0 {
                    terminal::restore();
                    stopped_by.store(sig, Ordering::Relaxed);
                    tracing::info!(pid, signal = sig, "mpm signalled: stopping the agent tree");
                    let p = pty.clone();
                    let grace = opts.grace;
                    let _ = std::thread::Builder::new()
                        .name("mpm-stop".into())
                        .spawn(move || p.stop(grace));
                }
            }
        }
    };
    drop(stdin_pump);
    if let Some(port) = &opts.pty_port {
        port.disconnect();
    }
    drop(raw);
    terminal::restore();
    signals.close();
    if let Some(mut w) = watchdog {
        // The waiter already stopped the tree; the root's pid may be reused from now on.
        w.disarm();
    }

    let duration = start.elapsed();
    let stopped_by = Some(stopped_by.load(Ordering::Relaxed)).filter(|s| *s != 0);
    let outcome = SessionOutcome {
        pid,
        exit_code: exit.code(),
        signal: exit.signal(),
        status: stopped_by.map_or(exit.shell_status(), |s| 128 + s),
        stopped_by,
        duration,
        tap_overrun_bytes: exit.tap_overrun_bytes,
    };
    if exit.tap_overrun_bytes > 0 {
        tracing::warn!(
            bytes = exit.tap_overrun_bytes,
            "the text pipeline fell behind: output bytes skipped for detection"
        );
    }
    tracing::info!(pid, status = outcome.status, ?stopped_by, "session exited");
    if let Some(hook) = opts.before_exit.take() {
        hook();
    }
    opts.bus.emit(EventBody::SessionExited {
        exit_code: outcome.exit_code,
        signal: outcome.signal,
        duration_ms: duration.as_millis() as u64,
        tap_overrun_bytes: exit.tap_overrun_bytes,
    });
    Ok(outcome)
}

/// The user's terminal size now (stdin, stdout or stderr), if any of them is a terminal.
fn tty_size() -> Option<WinSize> {
    (0..=2).find_map(|fd| {
        // SAFETY: borrowed only for the ioctl.
        terminal::window_size(unsafe { BorrowedFd::borrow_raw(fd) })
    })
}

/// The stdin-to-agent copier. Dropping it stops the thread at its next wake-up without consuming
/// more input, so keystrokes typed after the session (while delegations finish, say) stay with the
/// user's shell.
struct StdinPump {
    _stop: OwnedFd,
}

/// Copy stdin to the agent on a thread. A terminal is copied as it is (raw mode: Ctrl-C, Ctrl-Z
/// and Ctrl-\ are bytes). From a pipe or file, EOF is delivered as the PTY's EOF character; see
/// [`eof_bytes`]. The thread blocks in `poll` on stdin and a stop pipe (no timeout).
fn start_stdin_thread(
    pty: Arc<PtySession>,
    is_tty: bool,
    port: Option<Arc<crate::feedback::port::PtyPort>>,
) -> Option<StdinPump> {
    let (stop_r, stop_w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "cannot create the stdin stop pipe");
            return None;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("mpm-stdin".into())
        .spawn(move || pump_stdin(&pty, is_tty, &stop_r, port.as_deref()));
    match spawned {
        Ok(_) => Some(StdinPump { _stop: stop_w }),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the stdin thread");
            None
        }
    }
}

fn pump_stdin(
    pty: &PtySession,
    is_tty: bool,
    stop: &OwnedFd,
    port: Option<&crate::feedback::port::PtyPort>,
) {
    use std::os::fd::AsRawFd;
    let mut buf = vec![0u8; 16 * 1024];
    let mut last: Option<u8> = None;
    loop {
        let mut fds = [
            libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds; infinite timeout (a blocking wait, not a polling loop).
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if rc < 0 {
            if nix::errno::Errno::last() == nix::errno::Errno::EINTR {
                continue;
            }
            return;
        }
        if fds[1].revents != 0 {
            return; // the session is over
        }
        // SAFETY: fd 0 stays open for the life of the process.
        let stdin = unsafe { BorrowedFd::borrow_raw(0) };
        let n = match nix::unistd::read(stdin, &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "stdin read failed");
                break;
            }
        };
        last = Some(buf[n - 1]);
        if let Some(p) = port {
            p.typed(&buf[..n]);
        }
        if pty.write_input(&buf[..n]).is_err() {
            return; // the agent is gone
        }
    }
    if is_tty {
        return;
    }
    match pty.termios() {
        Ok(t) => {
            let bytes = eof_bytes(&t, last);
            if let Err(e) = pty.write_input(&bytes) {
                tracing::debug!(error = %e, "cannot deliver EOF to the agent");
            }
        }
        Err(e) => tracing::debug!(error = %e, "cannot read the pty's termios"),
    }
}

/// What to write to the PTY when piped stdin ends. In canonical mode the EOF character ends the
/// pending line without a newline, and gives the reader EOF only at the start of a line: so after
/// input that did not end in a newline it is sent twice (the first flushes the partial line, the
/// second is the EOF). In non-canonical mode it is just a byte and is sent once.
pub fn eof_bytes(termios: &nix::sys::termios::Termios, last: Option<u8>) -> Vec<u8> {
    use nix::sys::termios::{LocalFlags, SpecialCharacterIndices};
    let veof = termios.control_chars[SpecialCharacterIndices::VEOF as usize];
    let veof = if veof == 0 { 4 } else { veof };
    let canonical = termios.local_flags.contains(LocalFlags::ICANON);
    let eol = termios.control_chars[SpecialCharacterIndices::VEOL as usize];
    let at_line_start = match last {
        None => true,
        Some(b) => b == b'\n' || b == veof || (eol != 0 && b == eol),
    };
    if canonical && !at_line_start {
        vec![veof, veof]
    } else {
        vec![veof]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::termios::{LocalFlags, SpecialCharacterIndices};

    fn termios(canonical: bool) -> nix::sys::termios::Termios {
        // A real PTY's settings, then adjusted.
        let master = nix::pty::posix_openpt(nix::fcntl::OFlag::O_RDWR).unwrap();
        nix::pty::grantpt(&master).unwrap();
        nix::pty::unlockpt(&master).unwrap();
        let mut t = nix::sys::termios::tcgetattr(&master).unwrap();
        t.control_chars[SpecialCharacterIndices::VEOF as usize] = 4;
        t.local_flags.set(LocalFlags::ICANON, canonical);
        t
    }

    #[test]
    fn eof_after_a_partial_line_is_sent_twice_in_canonical_mode() {
        let t = termios(true);
        assert_eq!(eof_bytes(&t, None), vec![4]);
        assert_eq!(eof_bytes(&t, Some(b'\n')), vec![4]);
        assert_eq!(eof_bytes(&t, Some(b'x')), vec![4, 4]);
        let raw = termios(false);
        assert_eq!(eof_bytes(&raw, Some(b'x')), vec![4]);
    }
}
