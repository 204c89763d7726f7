//! Spawning a child on a fresh PTY: command resolution (so "not found" and "not executable" are
//! reported before the terminal is touched), PTY allocation with close-on-exec fds, and the
//! pre-exec hook (new session, controlling terminal, default signals, rlimits, fd hygiene).

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::fcntl::{OFlag, open};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::stat::Mode;
use nix::sys::termios::{SetArg, Termios, tcsetattr};

use crate::config::Rlimits;

/// A terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WinSize {
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
}

impl Default for WinSize {
    fn default() -> Self {
        WinSize { cols: 80, rows: 24 }
    }
}

/// Errors from spawning a PTY session.
#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    /// The command is not on PATH (or the given path does not exist). Exit status 127.
    #[error("command not found: {command}")]
    NotFound {
        /// The command as given.
        command: String,
    },
    /// The command exists but cannot be executed. Exit status 126.
    #[error("cannot execute {command} ({path}): {reason}")]
    NotExecutable {
        /// The command as given.
        command: String,
        /// The file found for it.
        path: String,
        /// Why it cannot run.
        reason: String,
    },
    /// The command line is empty.
    #[error("no command to run")]
    EmptyCommand,
    /// A system call failed while setting the session up.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

impl PtyError {
    /// The shell's exit status convention for this error: 127 not found, 126 not executable, else 1.
    pub fn exit_status(&self) -> i32 {
        match self {
            PtyError::NotFound { .. } => 127,
            PtyError::NotExecutable { .. } => 126,
            _ => 1,
        }
    }

    pub(crate) fn sys(what: &'static str, e: impl Into<std::io::Error>) -> Self {
        PtyError::Sys {
            what,
            source: e.into(),
        }
    }
}

fn is_executable_file(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.is_dir() {
        return Err("is a directory".into());
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err("permission denied (not executable)".into());
    }
    // The mode bits can say yes while the mount or the ACL says no.
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).map_err(|e| e.desc().to_string())
}

/// Find the program `argv0` the way `execvp` would: a name with a `/` is taken as a path, anything
/// else is searched in `path_var` (the child's PATH). A match that exists but cannot be executed is
/// remembered and reported as [`PtyError::NotExecutable`] when nothing better is found, as shells do.
pub fn resolve_command(argv0: &str, path_var: Option<&OsStr>) -> Result<PathBuf, PtyError> {
    if argv0.is_empty() {
        return Err(PtyError::EmptyCommand);
    }
    let not_exec = |path: &Path, reason: String| PtyError::NotExecutable {
        command: argv0.to_string(),
        path: path.display().to_string(),
        reason,
    };
    if argv0.contains('/') {
        let path = PathBuf::from(argv0);
        if !path.exists() {
            return Err(PtyError::NotFound {
                command: argv0.to_string(),
            });
        }
        return is_executable_file(&path)
            .map(|_| path.clone())
            .map_err(|r| not_exec(&path, r));
    }
    let default_path = OsString::from("/usr/local/bin:/usr/bin:/bin");
    let path_var = path_var.unwrap_or(&default_path);
    let mut first_bad: Option<PtyError> = None;
    for dir in std::env::split_paths(path_var) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let candidate = dir.join(argv0);
        if !candidate.exists() {
            continue;
        }
        match is_executable_file(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(reason) => {
                if first_bad.is_none() && !candidate.is_dir() {
                    first_bad = Some(not_exec(&candidate, reason));
                }
            }
        }
    }
    Err(first_bad.unwrap_or_else(|| PtyError::NotFound {
        command: argv0.to_string(),
    }))
}

/// What to spawn and how.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpawnSpec<'a> {
    pub argv: &'a [String],
    /// Added to (or replacing in) the inherited environment.
    pub env: &'a [(String, String)],
    /// Start from an empty environment: `env` is the whole of it.
    pub env_clear: bool,
    pub cwd: Option<&'a Path>,
    pub size: WinSize,
    /// Line settings for the new PTY (the user's terminal's, so the child sees the same erase and
    /// interrupt characters); `None` keeps the kernel defaults.
    pub termios: Option<&'a Termios>,
    pub rlimits: Option<&'a Rlimits>,
}

/// A child running on a PTY, and the master side.
pub(crate) struct Spawned {
    pub child: Child,
    pub master: OwnedFd,
}

/// Allocate a PTY pair with both ends close-on-exec from the first instant.
fn open_pty() -> Result<(OwnedFd, OwnedFd), PtyError> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| PtyError::sys("posix_openpt", e))?;
    grantpt(&master).map_err(|e| PtyError::sys("grantpt", e))?;
    unlockpt(&master).map_err(|e| PtyError::sys("unlockpt", e))?;
    let name = ptsname_r(&master).map_err(|e| PtyError::sys("ptsname", e))?;
    let slave = open(
        Path::new(&name),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| PtyError::sys("open pty slave", e))?;
    // SAFETY: `into_raw_fd` hands over sole ownership of a valid, open descriptor.
    let master = unsafe { OwnedFd::from_raw_fd(master.into_raw_fd()) };
    Ok((master, slave))
}

/// Set the window size of a terminal (either side of a PTY).
pub(crate) fn set_winsize(fd: impl AsFd, size: WinSize) -> std::io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from a valid pointer.
    let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// (resource, soft=hard value) pairs to apply in the child, computed before the fork so the
/// pre-exec hook only makes the async-signal-safe `setrlimit` call. Values never exceed the current
/// hard limit (raising it would fail for an unprivileged user).
fn rlimit_plan(r: &Rlimits) -> Vec<(libc::__rlimit_resource_t, libc::rlim_t)> {
    let mut plan = Vec::new();
    let mb = 1024 * 1024;
    let items = [
        (libc::RLIMIT_NOFILE, r.nofile),
        (libc::RLIMIT_CORE, r.core_mb.map(|v| v.saturating_mul(mb))),
        (
            libc::RLIMIT_AS,
            r.address_space_mb.map(|v| v.saturating_mul(mb)),
        ),
    ];
    for (res, value) in items {
        let Some(value) = value else { continue };
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one `rlimit` to a valid pointer.
        let hard = if unsafe { libc::getrlimit(res, &mut cur) } == 0 {
            cur.rlim_max
        } else {
            libc::RLIM_INFINITY
        };
        plan.push((res, (value as libc::rlim_t).min(hard)));
    }
    plan
}

/// Spawn `spec.argv` on a new PTY. The child is a session leader whose controlling terminal is the
/// PTY slave (stdin, stdout and stderr), with default signal dispositions and an empty signal mask.
pub(crate) fn spawn_on_pty(spec: &SpawnSpec<'_>) -> Result<Spawned, PtyError> {
    let argv0 = spec.argv.first().ok_or(PtyError::EmptyCommand)?;
    let child_path = spec
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| OsString::from(v))
        .or_else(|| {
            if spec.env_clear {
                None
            } else {
                std::env::var_os("PATH")
            }
        });
    let program = resolve_command(argv0, child_path.as_deref())?;

    let (master, slave) = open_pty()?;
    if let Some(t) = spec.termios {
        tcsetattr(&slave, SetArg::TCSANOW, t).map_err(|e| PtyError::sys("tcsetattr", e))?;
    }
    set_winsize(&slave, spec.size).map_err(|e| PtyError::sys("TIOCSWINSZ", e))?;

    let stdio = |what| -> Result<Stdio, PtyError> {
        Ok(Stdio::from(
            slave.try_clone().map_err(|e| PtyError::sys(what, e))?,
        ))
    };
    let mut cmd = Command::new(&program);
    cmd.arg0(argv0)
        .args(&spec.argv[1..])
        .stdin(stdio("dup pty slave")?)
        .stdout(stdio("dup pty slave")?)
        .stderr(stdio("dup pty slave")?);
    if spec.env_clear {
        cmd.env_clear();
    }
    for (k, v) in spec.env {
        cmd.env(k, v);
    }
    if let Some(dir) = spec.cwd {
        cmd.current_dir(dir);
    }
    let plan = spec.rlimits.map(rlimit_plan).unwrap_or_default();
    // SAFETY: the hook runs between fork and exec and only makes async-signal-safe system calls
    // (setsid, ioctl, signal, setrlimit, close_range) on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // std has already dup2'ed the slave onto 0, 1 and 2.
            if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for sig in [
                libc::SIGHUP,
                libc::SIGINT,
                libc::SIGQUIT,
                libc::SIGTERM,
                libc::SIGPIPE,
                libc::SIGCHLD,
                libc::SIGWINCH,
                libc::SIGTSTP,
                libc::SIGTTIN,
                libc::SIGTTOU,
                libc::SIGALRM,
                libc::SIGUSR1,
                libc::SIGUSR2,
            ] {
                libc::signal(sig, libc::SIG_DFL);
            }
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            for &(res, value) in &plan {
                let lim = libc::rlimit {
                    rlim_cur: value,
                    rlim_max: value,
                };
                if libc::setrlimit(res, &lim) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Fd hygiene: whatever mpm inherited without close-on-exec stays out of the agent.
            // ENOSYS on old kernels is harmless: then only mpm's own (CLOEXEC) fds are protected.
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            // Job control: the agent must not be a session leader (its process group would be
            // orphaned and the kernel would drop the terminal's SIGTSTP), so this process stays
            // as the session's monitor and the agent runs as its child in a group of its own.
            split_monitor()
        });
    }
    // The tree's tag (`process::registry`): members that leave the session are still found.
    let tag = crate::process::registry::new_tag();
    cmd.env(
        crate::process::registry::TREE_VAR,
        crate::process::registry::env_value(&tag),
    );
    let child = cmd.spawn().map_err(|e| exec_error(argv0, &program, e))?;
    crate::process::registry::register(child.id() as i32, &tag);
    drop(cmd); // closes the parent's copies of the slave
    drop(slave);
    Ok(Spawned { child, master })
}

/// The agent's pid, for the monitor's signal handler (set once, in the monitor only).
static MONITOR_AGENT: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// The monitor's handler: pass the signal (SIGTERM, SIGHUP, SIGINT, SIGQUIT) on to the agent's group.
extern "C" fn forward_to_agent(sig: libc::c_int) {
    let agent = MONITOR_AGENT.load(std::sync::atomic::Ordering::Relaxed);
    if agent > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(-agent, sig) };
    }
}

/// In the forked child (the new session's leader, the PTY its controlling terminal): fork the
/// agent into a process group of its own, in the foreground of the PTY, and return `Ok` in the
/// agent (which then execs). The leader never returns: it becomes the session's monitor, as
/// sudo's `use_pty` monitor does — it waits for the agent; when the agent stops (Ctrl-Z, a
/// suspend), it stops itself so that mpm sees it, and when continued it gives the terminal back
/// to the agent and continues it; when the agent ends it ends the same way (code or signal), so
/// mpm sees the agent's status. Signals that end sessions are passed on to the agent.
///
/// Only async-signal-safe calls: this runs between fork and exec in a multi-threaded program.
fn split_monitor() -> std::io::Result<()> {
    // SAFETY: plain system calls on local data; see the function docs.
    unsafe {
        let mut sync = [0 as libc::c_int; 2];
        if libc::pipe2(sync.as_mut_ptr(), libc::O_CLOEXEC) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let agent = libc::fork();
        if agent < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if agent == 0 {
            // The agent: its own group; wait until the monitor made it the foreground group.
            libc::close(sync[1]);
            libc::setpgid(0, 0);
            let mut b = 0u8;
            while libc::read(sync[0], (&mut b as *mut u8).cast(), 1) < 0
                && *libc::__errno_location() == libc::EINTR
            {}
            libc::close(sync[0]);
            return Ok(());
        }
        // The monitor.
        libc::setpgid(agent, agent);
        libc::signal(libc::SIGTTOU, libc::SIG_IGN);
        libc::signal(libc::SIGTTIN, libc::SIG_IGN);
        libc::signal(libc::SIGTSTP, libc::SIG_IGN);
        libc::tcsetpgrp(0, agent);
        libc::close(sync[0]);
        libc::close(sync[1]);
        MONITOR_AGENT.store(agent, std::sync::atomic::Ordering::Relaxed);
        for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT, libc::SIGQUIT] {
            libc::signal(sig, forward_to_agent as *const () as libc::sighandler_t);
        }
        // Keep only the terminal on 0 (for tcsetpgrp); std's exec-error pipe must close here.
        libc::close(1);
        libc::close(2);
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        loop {
            let mut status = 0;
            let r = libc::waitpid(agent, &mut status, libc::WUNTRACED);
            if r < 0 {
                if *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                libc::_exit(1);
            }
            if libc::WIFSTOPPED(status) {
                libc::kill(libc::getpid(), libc::SIGSTOP);
                // Continued (mpm's host resumed us): the terminal's foreground is the agent again.
                libc::tcsetpgrp(0, agent);
                libc::kill(-agent, libc::SIGCONT);
                continue;
            }
            if libc::WIFEXITED(status) {
                libc::_exit(libc::WEXITSTATUS(status));
            }
            if libc::WIFSIGNALED(status) {
                let sig = libc::WTERMSIG(status);
                // End the same way, without a core dump of this copy of mpm.
                let none = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::setrlimit(libc::RLIMIT_CORE, &none);
                libc::signal(sig, libc::SIG_DFL);
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, sig);
                libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                libc::kill(libc::getpid(), sig);
                libc::_exit(128 + sig);
            }
        }
    }
}

/// Map an exec failure to the shell's convention: the file was found before the fork, so any
/// failure now (bad interpreter, wrong format, permission) means "cannot execute".
fn exec_error(argv0: &str, program: &Path, e: std::io::Error) -> PtyError {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::EACCES) | Some(libc::ENOEXEC) | Some(libc::EISDIR)
        | Some(libc::ETXTBSY) | Some(libc::ENOTDIR) => PtyError::NotExecutable {
            command: argv0.to_string(),
            path: program.display().to_string(),
            reason: if e.raw_os_error() == Some(libc::ENOENT) {
                "bad interpreter (no such file or directory)".into()
            } else {
                e.to_string()
            },
        },
        _ => PtyError::sys("spawn", e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_on_path_and_reports_127_and_126() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("tool");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "x").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let path = dir.path().as_os_str();
        assert_eq!(resolve_command("tool", Some(path)).unwrap(), exe);
        let e = resolve_command("nope-xyz", Some(path)).unwrap_err();
        assert_eq!(e.exit_status(), 127, "{e}");
        let e = resolve_command("plain", Some(path)).unwrap_err();
        assert_eq!(e.exit_status(), 126, "{e}");
        let e = resolve_command(plain.to_str().unwrap(), None).unwrap_err();
        assert_eq!(e.exit_status(), 126, "{e}");
        let e = resolve_command("/nonexistent/x", None).unwrap_err();
        assert_eq!(e.exit_status(), 127, "{e}");
        let e = resolve_command(dir.path().to_str().unwrap(), None).unwrap_err();
        assert_eq!(e.exit_status(), 126, "{e}");
    }
}
