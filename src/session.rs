//! One supervised agent session, and the host that puts it in the user's terminal.
//!
//! [`Session`] is the one assembly path of a session, used by `mpm run --no-daemon` and by the
//! daemon alike: [`Session::assemble`] resolves the command (so "not found" = 127 and "not
//! executable" = 126 are known before anything is touched) and starts the [`Supervisor`]
//! (detection, executor, governor); [`Session::run`] spawns the agent on a PTY, emits
//! `session.started` / `session.exited`, restarts it per `limits.restart` when the governor stopped
//! it at its hard limit, and at the end collects the delegation summaries (so `delegation.finished
//! (cancelled)` always comes after `session.exited`). The session owns its PTY; everything else
//! talks to it through a [`SessionHandle`] (input, EOF, resize, stop), so the two hosts differ only
//! in where the terminal's bytes come from and go to ([`Host`]):
//!
//! - in-process ([`run_in_terminal`]): stdout is the sink, stdin is pumped into the handle on its own
//!   thread, raw mode, the signal thread, the orphan watchdog, job control (Ctrl-Z);
//! - the daemon (`daemon::pty_backend`): a broadcast sink with a screen model for attaching
//!   clients, input from whichever client is attached.
//!
//! The terminal is restored on every exit path of the in-process host: the raw-mode guard on
//! return and on error, the panic hook, and the signal thread (SIGTERM/SIGHUP/SIGINT/SIGQUIT to mpm
//! restore at once, stop the tree — SIGTERM, grace, SIGKILL; a second such signal kills at once —
//! and make mpm exit 128+N). When stdout goes away (a closed pipe, a hung-up terminal) the session
//! ends as if mpm had got SIGPIPE (141) or SIGHUP (129), like any writer in a pipeline.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use nix::sys::termios::Termios;

use crate::config::Config;
use crate::events::{Bus, EventBody};
use crate::executor::DelegationSummary;
use crate::governor::{Governor, RestartPolicy, resume_argv};
use crate::patterns::Engine;
use crate::pty::record::Recorder;
use crate::pty::signals::SignalThread;
use crate::pty::terminal::{self, RawModeGuard};
use crate::pty::watchdog::Watchdog;
use crate::pty::{OutputSink, PtyConfig, PtyError, PtyRun, WinSize};
use crate::supervisor::{Supervisor, SupervisorError, SupervisorOptions};

/// What a session runs, as the user asked for it (in-process: this process's view; daemon: the
/// client's, sent in the `run` request).
pub(crate) struct SessionSpec {
    /// The agent's argv (non-empty; the profile's command when the user gave none).
    pub argv: Vec<String>,
    /// The agent's working directory (also the ticket project).
    pub cwd: PathBuf,
    /// `Some`: the agent's whole environment (the daemon passes its client's); `None`: this
    /// process's. The profile's `env` is added on top either way.
    pub env: Option<Vec<(String, String)>>,
    /// The resolved configuration.
    pub config: Config,
    /// `--patterns` files and folders.
    pub patterns: Vec<PathBuf>,
    /// The initial PTY size.
    pub size: WinSize,
    /// Line settings for the PTY (the user's terminal's); `None` = kernel defaults.
    pub termios: Option<Termios>,
    /// Write an asciicast v2 recording here.
    pub record: Option<PathBuf>,
    /// Record typed input in it too (`--record-input`; off by default: input can hold secrets).
    pub record_input: bool,
    /// The `mpm` binary to start as the orphan watchdog (`mpm __watchdog`); `None` = none.
    pub watchdog_exe: Option<PathBuf>,
    /// Where this session's delegation output goes (`executor.output_dir`, default
    /// `<state>/sessions`, joined with the session id).
    pub output_dir: PathBuf,
}

/// Parts a host shares between its sessions (the daemon: one governor, one engine per pattern
/// set). `Default` = the session starts its own.
#[derive(Default)]
pub(crate) struct SharedParts {
    pub engine: Option<Arc<Engine>>,
    pub governor: Option<Arc<Governor>>,
    /// The daemon's running slots: `executor.max_parallel` across all its sessions.
    pub slots: Option<crate::executor::Slots>,
    /// The daemon's one executor runtime, shared by every session's executor.
    pub executor_runtime: Option<crate::executor::ExecutorRuntime>,
}

/// How one run of the agent ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionOutcome {
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

/// How a whole session ended (after every restart), with its delegations.
pub(crate) struct SessionEnd {
    /// The last run's outcome, or why the agent could not start.
    pub result: Result<SessionOutcome, SessionError>,
    /// One per delegation, after `executor.on_session_exit` was applied.
    pub summaries: Vec<DelegationSummary>,
    /// The text for the user's stderr when `run.summary` and there were delegations.
    pub summary: Option<String>,
}

impl SessionEnd {
    /// What mpm exits with: the agent's status, or 127/126/1 when it could not start.
    pub(crate) fn status(&self) -> i32 {
        match &self.result {
            Ok(o) => o.status,
            Err(e) => e.exit_status(),
        }
    }
}

/// Errors before the session could start (after a start, everything ends in a [`SessionOutcome`]).
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error(transparent)]
    Spawn(#[from] PtyError),
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
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
    pub(crate) fn exit_status(&self) -> i32 {
        match self {
            SessionError::Spawn(e) => e.exit_status(),
            _ => 1,
        }
    }
}

/// Find the agent's program on its PATH (`env`'s last `PATH`, else mpm's own when `inherit`), so
/// that "not found" (127) and "not executable" (126) are known before anything starts.
pub(crate) fn resolve_agent(
    argv: &[String],
    env: &[(String, String)],
    inherit: bool,
) -> Result<PathBuf, PtyError> {
    let child_path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| std::ffi::OsString::from(v))
        .or_else(|| inherit.then(|| std::env::var_os("PATH")).flatten());
    crate::pty::resolve_command(
        argv.first().map(String::as_str).unwrap_or(""),
        child_path.as_deref(),
    )
}

/// Where a session's delegation output goes: `executor.output_dir` (default `<state>/sessions`),
/// then the session id.
pub(crate) fn delegation_output_dir(
    cfg: &Config,
    state_dir: &std::path::Path,
    session: &str,
) -> PathBuf {
    cfg.executor
        .output_dir
        .clone()
        .unwrap_or_else(|| state_dir.join("sessions"))
        .join(session)
}

/// Why the agent could not start, in one line with the fix (`hint` says how to provide the
/// command), as both hosts print it.
pub(crate) fn start_failure_message(e: &SessionError, name: &str, hint: &str) -> String {
    match e {
        SessionError::Spawn(PtyError::NotFound { .. }) => {
            format!("command not found: {name} ({hint})")
        }
        SessionError::Spawn(PtyError::NotExecutable { path, reason, .. }) => {
            format!("cannot execute {name} ({path}): {reason}; check its permissions")
        }
        other => other.to_string(),
    }
}

/// Where a session's terminal bytes go and what the host does around each run of the agent.
pub(crate) trait Host {
    /// The sink for one run of the agent (a restart asks again).
    fn output(&mut self) -> Box<dyn OutputSink>;
    /// The agent of one run is running (after `session.started`).
    fn started(&mut self, _pty: &Arc<PtyRun>) {}
    /// The agent of one run is gone (before `session.exited`).
    fn exited(&mut self) {}
    /// The agent stopped itself (Ctrl-Z, a suspend). The in-process host gives the user their
    /// shell back and resumes the agent when it is continued; the default resumes it at once.
    fn suspended(&mut self, pty: &Arc<PtyRun>) {
        pty.resume();
    }
    /// A line for the user (a restart notice).
    fn notice(&mut self, text: &str) {
        crate::cli::output::errln!("mpm: {text}");
    }
}

/// A request to the session's run loop.
enum Ctl {
    /// Stop the tree (SIGTERM, grace, SIGKILL) and do not restart. `signal`: what ended it (a
    /// signal to mpm, 0 for a plain stop); `from_output`: the output side went away (never
    /// escalates); `grace`: `None` = `run.grace_secs`.
    Stop {
        signal: i32,
        from_output: bool,
        grace: Option<Duration>,
    },
}

/// No input byte yet (see [`HandleInner::last_input`]).
const NO_INPUT: u16 = 256;

struct HandleInner {
    /// The PTY of the current run (none between runs and after the end).
    pty: Mutex<Option<Arc<PtyRun>>>,
    ctl: Sender<Ctl>,
    /// The last input byte (for where the EOF character must go), or [`NO_INPUT`].
    last_input: AtomicU16,
    /// Result delivery by paste: told about every byte the user types (never paste mid-typing).
    port: Option<Arc<crate::feedback::port::PtyPort>>,
}

/// Talk to a running [`Session`] from any thread: input, EOF, resize, stop.
#[derive(Clone)]
pub(crate) struct SessionHandle(Arc<HandleInner>);

impl SessionHandle {
    fn pty(&self) -> Option<Arc<PtyRun>> {
        self.0.pty.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Terminal input for the agent (blocks while the PTY's input queue is full). An error when no
    /// agent runs.
    pub(crate) fn write_input(&self, bytes: &[u8]) -> io::Result<()> {
        let Some(last) = bytes.last() else {
            return Ok(());
        };
        let pty = self.pty().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotConnected, "the agent is not running")
        })?;
        self.0.last_input.store(u16::from(*last), Ordering::Relaxed);
        if let Some(port) = &self.0.port {
            port.typed(bytes);
        }
        pty.write_input(bytes)
    }

    /// The input (not a terminal) ended: write the PTY's EOF character, once or twice as the
    /// line discipline needs it (see [`eof_bytes`]).
    pub(crate) fn eof(&self) {
        let Some(pty) = self.pty() else { return };
        let last = u8::try_from(self.0.last_input.load(Ordering::Relaxed)).ok();
        match pty.termios() {
            Ok(t) => {
                if let Err(e) = pty.write_input(&eof_bytes(&t, last)) {
                    tracing::debug!(error = %e, "cannot deliver EOF to the agent");
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot read the pty's termios"),
        }
    }

    /// Resize the PTY (and the screen pipeline).
    pub(crate) fn resize(&self, size: WinSize) {
        if let Some(pty) = self.pty()
            && let Err(e) = pty.resize(size)
        {
            tracing::warn!(error = %e, "cannot resize the pty");
        }
    }

    /// Continue a stopped agent (after a suspend), telling it the window size again so it redraws.
    pub(crate) fn resume(&self) {
        if let Some(pty) = self.pty() {
            if let Err(e) = pty.push_size() {
                tracing::debug!(error = %e, "cannot push the window size");
            }
            pty.resume();
        }
    }

    /// Tell the agent the window size again (SIGWINCH) so a full-screen agent repaints (a
    /// re-attach whose redraw model lost older output).
    pub(crate) fn repaint(&self) {
        if let Some(pty) = self.pty()
            && let Err(e) = pty.push_size()
        {
            tracing::debug!(error = %e, "cannot push the window size");
        }
    }

    /// End the session: stop the tree (`grace`, `None` = `run.grace_secs`) and do not restart.
    pub(crate) fn stop(&self, grace: Option<Duration>) {
        let _ = self.0.ctl.send(Ctl::Stop {
            signal: 0,
            from_output: false,
            grace,
        });
    }

    /// mpm got `signal` (SIGTERM, SIGHUP, ...): stop; a second one kills at once. mpm then exits
    /// 128+`signal`.
    pub(crate) fn signalled(&self, signal: i32) {
        let _ = self.0.ctl.send(Ctl::Stop {
            signal,
            from_output: false,
            grace: None,
        });
    }

    /// The output side went away: end as if mpm got `signal` (SIGPIPE, SIGHUP); never escalates.
    pub(crate) fn output_gone(&self, signal: i32) {
        let _ = self.0.ctl.send(Ctl::Stop {
            signal,
            from_output: true,
            grace: None,
        });
    }
}

/// One agent session: the supervisor assembled around it, and the agent's runs. See the module
/// docs.
pub(crate) struct Session {
    spec: SessionSpec,
    bus: Bus,
    supervisor: Supervisor,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    handle: SessionHandle,
    ctl_rx: Receiver<Ctl>,
    /// Tickets and errors recorded, for the end-of-session summary.
    tally: Arc<crate::feedback::summary::Tally>,
}

impl Session {
    /// Assemble the session: resolve the command on the agent's PATH (127/126 before anything
    /// else happens), start the supervisor (`shared` parts are reused), prepare the argv (claude:
    /// `--session-id`). Nothing is spawned yet.
    pub(crate) fn assemble(
        spec: SessionSpec,
        bus: Bus,
        shared: SharedParts,
    ) -> Result<Session, SessionError> {
        let profile = spec.config.active_profile().ok();
        let mut env = spec.env.clone().unwrap_or_default();
        if let Some(p) = profile {
            env.extend(p.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        env.retain(|(k, _)| k != "NOTIFY_SOCKET");
        resolve_agent(&spec.argv, &env, spec.env.is_none())?;
        let mut supervisor = Supervisor::start(SupervisorOptions {
            config: &spec.config,
            patterns: &spec.patterns,
            bus: bus.clone(),
            output_dir: spec.output_dir.clone(),
            cols: spec.size.cols,
            rows: spec.size.rows,
            cwd: spec.cwd.clone(),
            env: spec.env.as_deref(),
            engine: shared.engine,
            governor: shared.governor,
            slots: shared.slots,
            executor_runtime: shared.executor_runtime,
        })?;
        let transcript = profile.is_some_and(|p| p.transcript);
        let argv = supervisor.prepare_argv(spec.argv.clone(), transcript);
        // The hook socket (`MPM_HOOK_SOCKET`) and whatever else the supervisor gives the agent.
        env.extend(supervisor.child_env());
        // The session id, as sub-agents get it: what a restarted daemon reports a leftover
        // process of this session under (`process.reaped`).
        env.retain(|(k, _)| k != "MPM_SESSION");
        env.push(("MPM_SESSION".into(), bus.context().session.clone()));
        let (ctl, ctl_rx) = crossbeam_channel::unbounded();
        let tally = crate::feedback::summary::Tally::attach(&bus);
        let port = supervisor.pty_port();
        Ok(Session {
            tally,
            spec,
            bus,
            supervisor,
            argv,
            env,
            handle: SessionHandle(Arc::new(HandleInner {
                pty: Mutex::new(None),
                ctl,
                last_input: AtomicU16::new(NO_INPUT),
                port,
            })),
            ctl_rx,
        })
    }

    /// The agent's published state, as the supervisor's dispatcher keeps it (`session.state`).
    pub(crate) fn state_mirror(&self) -> crate::supervisor::StateMirror {
        self.supervisor.state_mirror()
    }

    /// The session's handle (input, EOF, resize, stop from any thread).
    pub(crate) fn handle(&self) -> SessionHandle {
        self.handle.clone()
    }

    /// Set the PTY's line settings before the first run (the in-process host reads the user's
    /// terminal just before raw mode).
    pub(crate) fn set_termios(&mut self, termios: Option<Termios>) {
        self.spec.termios = termios;
    }

    /// Run the agent until it ends (restarting per `limits.restart` when the governor stopped it
    /// at its hard limit), then finish the supervisor. Blocks.
    pub(crate) fn run(mut self, host: &mut dyn Host) -> SessionEnd {
        let cfg = self.spec.config.clone();
        let grace = cfg.run.grace();
        let mut restart = RestartPolicy::new(&cfg.limits.restart);
        let mut recorder = match self.spec.record.clone() {
            Some(p) => match Recorder::create(&p, self.spec.size, self.spec.record_input) {
                Ok(r) => Some(r),
                Err(e) => {
                    return self.end(Err(SessionError::Record {
                        path: p.display().to_string(),
                        source: e,
                    }));
                }
            },
            None => None,
        };
        let mut watchdog = match &self.spec.watchdog_exe {
            Some(exe) => match Watchdog::spawn(exe, grace) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, exe = %exe.display(), "cannot start the orphan watchdog");
                    None
                }
            },
            None => None,
        };
        let mut stopped: Option<i32> = None;
        let result = loop {
            let r = self.run_once(host, grace, recorder.take(), &mut watchdog, &mut stopped);
            let limited = matches!(&r, Ok(o) if o.stopped_by.is_none())
                && stopped.is_none()
                && self.supervisor.main_limit_reached();
            let delay = if limited {
                restart.next_delay(Instant::now())
            } else {
                None
            };
            let Some(delay) = delay else { break r };
            host.notice(&format!(
                "the agent was stopped at its resource limit; restarting in {:.1}s",
                delay.as_secs_f64()
            ));
            // A stop during the delay ends the session instead.
            if self.ctl_rx.recv_timeout(delay).is_ok() {
                break r;
            }
            if let Some(id) = self.supervisor.claude_session() {
                self.argv = resume_argv(&self.argv, id);
            }
        };
        if let Some(mut w) = watchdog {
            // The waiter already stopped the tree; the root's pid may be reused from now on.
            w.disarm();
        }
        self.end(result)
    }

    fn end(self, result: Result<SessionOutcome, SessionError>) -> SessionEnd {
        *self.handle.0.pty.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let show = self.spec.config.run.summary;
        let summaries = self.supervisor.finish();
        // Everything the session emitted is written (events file, store) before the host hears
        // of its end: a user reading the record then finds it whole.
        self.bus.flush();
        // Per delegation its task and result file, fitted to the terminal, and the tallies.
        let summary = show
            .then(|| {
                crate::feedback::summary::format(
                    &summaries,
                    self.tally.tickets(),
                    self.tally.errors(),
                    self.spec.size.cols as usize,
                )
            })
            .filter(|s| !s.is_empty());
        SessionEnd {
            result,
            summaries,
            summary,
        }
    }

    /// One run of the agent.
    fn run_once(
        &mut self,
        host: &mut dyn Host,
        grace: Duration,
        recorder: Option<Recorder>,
        watchdog: &mut Option<Watchdog>,
        stopped: &mut Option<i32>,
    ) -> Result<SessionOutcome, SessionError> {
        let cfg = &self.spec.config;
        let size = self.spec.size;
        let pty = PtyRun::spawn(PtyConfig {
            argv: self.argv.clone(),
            env: self.env.clone(),
            env_clear: self.spec.env.is_some(),
            cwd: Some(self.spec.cwd.clone()),
            size,
            termios: self.spec.termios.clone(),
            rlimits: Some(cfg.limits.rlimits.clone()),
            grace,
            output: host.output(),
            consumer: self.supervisor.consumer(),
            tap_capacity_bytes: cfg.run.tap_capacity_bytes,
            recorder,
            tail_limit_bytes: cfg.run.tail_bytes,
        })?;
        let start = Instant::now();
        let pty = Arc::new(pty);
        let pid = pty.pid();
        *self.handle.0.pty.lock().unwrap_or_else(|e| e.into_inner()) = Some(pty.clone());
        if let Some(w) = watchdog
            && let Err(e) = w.arm(pid)
        {
            tracing::warn!(error = %e, "cannot arm the orphan watchdog");
        }
        tracing::info!(pid, command = ?self.argv, cols = size.cols, rows = size.rows, "session started");
        self.bus.emit(EventBody::SessionStarted {
            command: self.argv.clone(),
            pid: pid as u32,
            cols: size.cols,
            rows: size.rows,
            governor_mode: self.supervisor.governor_mode(),
            feedback: Some(self.supervisor.feedback_mode().as_str().into()),
        });
        (self.supervisor.on_spawn())(pid);
        // Finished results may be pasted into this run's PTY (feedback `on-idle`).
        if let Some(port) = self.supervisor.pty_port() {
            let p = pty.clone();
            port.connect(Box::new(move |b| p.write_input(b)));
        }
        host.started(&pty);

        let exit = loop {
            crossbeam_channel::select! {
                recv(pty.exit_channel()) -> exit => {
                    break match exit {
                        Ok(e) => pty.complete(e),
                        Err(_) => pty.wait(),
                    };
                }
                recv(pty.stop_channel()) -> _ => {
                    tracing::info!(pid, "the agent stopped (job control)");
                    host.suspended(&pty);
                }
                recv(self.ctl_rx) -> ctl => {
                    let Ok(Ctl::Stop { signal, from_output, grace: g }) = ctl else { continue };
                    if stopped.is_some() && !from_output {
                        // Asked twice: no more grace.
                        tracing::info!(pid, signal, "stopped again: killing the agent tree");
                        pty.kill_now();
                    } else if stopped.is_none() {
                        *stopped = Some(signal);
                        tracing::info!(pid, signal, "stopping the agent tree");
                        let p = pty.clone();
                        let g = g.unwrap_or(grace);
                        let _ = std::thread::Builder::new()
                            .name("mpm-stop".into())
                            .spawn(move || p.stop(g));
                    }
                }
            }
        };
        *self.handle.0.pty.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Some(port) = self.supervisor.pty_port() {
            port.disconnect();
        }
        host.exited();
        let duration = start.elapsed();
        let stopped_by = stopped.filter(|s| *s != 0);
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
        (self.supervisor.before_exit())();
        self.bus.emit(EventBody::SessionExited {
            exit_code: outcome.exit_code,
            signal: outcome.signal,
            duration_ms: duration.as_millis() as u64,
            tap_overrun_bytes: exit.tap_overrun_bytes,
        });
        Ok(outcome)
    }
}

/// The user's stdout as an [`OutputSink`]: a plain blocking `write` per chunk. When stdout goes
/// away (a closed pipe: `mpm run -- cmd | head`; a hung-up terminal) the session is ended the way
/// the shell would end a writer: as if mpm got SIGPIPE (or SIGHUP).
struct StdoutSink {
    handle: SessionHandle,
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
            self.handle.output_gone(sig);
        }
        r
    }
}

/// The in-process host: this process's stdin, stdout and terminal.
struct TerminalHost {
    handle: SessionHandle,
    stdin_is_tty: bool,
    pump: Option<StdinPump>,
    /// Raw mode on the user's terminal (re-entered after a suspend).
    raw: Option<RawModeGuard>,
}

impl Host for TerminalHost {
    fn output(&mut self) -> Box<dyn OutputSink> {
        Box::new(StdoutSink {
            handle: self.handle.clone(),
        })
    }

    fn started(&mut self, pty: &Arc<PtyRun>) {
        // A resize between reading the size and the spawn would otherwise be lost.
        if let Some(s) = tty_size()
            && let Err(e) = pty.resize(s)
        {
            tracing::debug!(error = %e, "cannot resize the pty");
        }
        if self.pump.is_none() {
            self.pump = start_stdin_thread(self.handle.clone(), self.stdin_is_tty);
        }
    }

    /// Job control as sudo's `use_pty` does it: the user's terminal back to its modes, stop mpm
    /// (the shell shows its prompt); once continued (`fg`), raw mode again, the window size pushed
    /// (the agent redraws), and the agent continued.
    fn suspended(&mut self, pty: &Arc<PtyRun>) {
        if !self.stdin_is_tty {
            // No terminal, no job control: nobody could `fg` a stopped mpm. Carry on.
            tracing::info!("the agent stopped without a terminal: continuing it");
            pty.resume();
            return;
        }
        self.raw = None;
        terminal::restore();
        tracing::info!("suspending mpm with the agent");
        // SIGSTOP rather than SIGTSTP: the kernel drops SIGTSTP in an orphaned process group.
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
        // Continued.
        match RawModeGuard::enter() {
            Ok(r) => self.raw = r,
            Err(e) => tracing::warn!(error = %e, "cannot re-enter raw mode"),
        }
        if let Some(size) = tty_size() {
            self.handle.resize(size);
        }
        if let Err(e) = pty.push_size() {
            tracing::debug!(error = %e, "cannot push the window size");
        }
        pty.resume();
    }
}

/// Run `session` in this terminal until it ends (the in-process host). See the module docs.
pub(crate) fn run_in_terminal(mut session: Session) -> SessionEnd {
    let handle = session.handle();
    // Signals first (so a SIGTERM during setup cannot leave a raw terminal), then raw mode.
    let signals = {
        let handle = handle.clone();
        SignalThread::start(&crate::pty::signals::SESSION_SIGNALS, move |sig| {
            if sig == libc::SIGWINCH {
                if let Some(size) = tty_size() {
                    handle.resize(size);
                }
            } else {
                // Give the user their terminal back at once; the tree stop may take the grace.
                terminal::restore();
                handle.signalled(sig);
            }
        })
    };
    let signals = match signals {
        Ok(s) => s,
        Err(e) => return session.end(Err(SessionError::Terminal(e))),
    };
    let termios = terminal::stdin_termios();
    let stdin_is_tty = termios.is_some();
    session.set_termios(termios);
    let raw = match RawModeGuard::enter() {
        Ok(r) => r,
        Err(e) => return session.end(Err(SessionError::Terminal(e))),
    };
    let mut host = TerminalHost {
        handle,
        stdin_is_tty,
        pump: None,
        raw,
    };
    // `mpm status` asks the session itself: its live endpoint lives as long as the session.
    let live = crate::live::LiveEndpoint::start(
        &session.bus,
        session.argv.clone(),
        &session.spec.cwd,
        session.state_mirror(),
    )
    .map_err(|e| tracing::warn!(error = %e, "no live status endpoint"))
    .ok();
    let end = session.run(&mut host);
    drop(live);
    drop(host.pump.take());
    drop(host.raw.take());
    terminal::restore();
    signals.close();
    end
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
fn start_stdin_thread(handle: SessionHandle, is_tty: bool) -> Option<StdinPump> {
    let (stop_r, stop_w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "cannot create the stdin stop pipe");
            return None;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("mpm-stdin".into())
        .spawn(move || pump_stdin(&handle, is_tty, &stop_r));
    match spawned {
        Ok(_) => Some(StdinPump { _stop: stop_w }),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the stdin thread");
            None
        }
    }
}

fn pump_stdin(handle: &SessionHandle, is_tty: bool, stop: &OwnedFd) {
    use std::os::fd::AsRawFd;
    let mut buf = vec![0u8; 16 * 1024];
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
        if handle.write_input(&buf[..n]).is_err() {
            return; // the agent is gone
        }
    }
    if !is_tty {
        handle.eof();
    }
}

/// What to write to the PTY when piped stdin ends. In canonical mode the EOF character ends the
/// pending line without a newline, and gives the reader EOF only at the start of a line: so after
/// input that did not end in a newline it is sent twice (the first flushes the partial line, the
/// second is the EOF). In non-canonical mode it is just a byte and is sent once.
pub(crate) fn eof_bytes(termios: &nix::sys::termios::Termios, last: Option<u8>) -> Vec<u8> {
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
