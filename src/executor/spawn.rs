//! Spawning a sub-agent as a session leader, fast, and waiting for it without tokio's `Child`.
//!
//! Every sub-agent must be a session leader (`setsid`): no controlling terminal, so it can never read
//! from or draw on the user's terminal, and its whole tree shares its session id for
//! [`crate::process::stop_tree`]. `std`'s `pre_exec(setsid)` forces a full `fork`, which copies
//! mpm's page tables on every spawn (measured: 3-4x the kernel time of `xargs` per `/bin/true`).
//! glibc's `posix_spawn` takes a `vfork`-style path and has `POSIX_SPAWN_SETSID`, so on glibc the
//! child is spawned with it: stdin /dev/null, stdout/stderr to the given files, signal mask and
//! the usual ignored signals reset. Elsewhere, or when the agent has a working directory (glibc's
//! `addchdir_np` is avoided for portability), `std::process::Command` with `pre_exec(setsid)` is used.
//!
//! Waiting uses a pidfd (Linux 5.3+) registered with tokio, then `waitpid`; without pidfd it polls
//! `waitpid(WNOHANG)`.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use tokio::io::unix::AsyncFd;

/// What to spawn.
pub struct SpawnSpec<'a> {
    pub argv: &'a [String],
    /// Added to (and overriding) mpm's own environment.
    pub env: &'a BTreeMap<String, String>,
    pub cwd: Option<&'a Path>,
    /// Becomes the child's stdout (fd 1).
    pub stdout: &'a OwnedFd,
    /// Becomes the child's stderr (fd 2).
    pub stderr: &'a OwnedFd,
    /// setrlimit values applied before exec (forces the fork-based path: posix_spawn has no hook).
    pub rlimits: Option<&'a crate::config::Rlimits>,
}

/// Spawn as a session leader; returns the pid. The caller must reap it ([`Leader::wait`]).
pub fn spawn(spec: &SpawnSpec<'_>) -> io::Result<i32> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if spec.cwd.is_none() && spec.rlimits.is_none() {
        return posix::spawn(spec);
    }
    spawn_std(spec)
}

/// The portable path: `fork` + `setsid` + `exec` through `std`.
fn spawn_std(spec: &SpawnSpec<'_>) -> io::Result<i32> {
    use std::os::unix::process::CommandExt as _;
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty argv"))?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args)
        .envs(spec.env)
        .stdin(std::process::Stdio::null())
        .stdout(spec.stdout.try_clone()?)
        .stderr(spec.stderr.try_clone()?);
    if let Some(dir) = spec.cwd {
        cmd.current_dir(dir);
    }
    let rlimits = spec.rlimits.cloned();
    // SAFETY: setsid and setrlimit are async-signal-safe and touch no memory of the parent
    // (`rlimits` was cloned before the fork).
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(io::Error::from)?;
            if let Some(r) = &rlimits {
                crate::governor::apply_rlimits(r)?;
            }
            Ok(())
        });
    }
    // Dropping a std Child neither kills nor reaps it: `Leader` reaps by pid.
    let child = cmd.spawn()?;
    Ok(child.id() as i32)
}

/// Resolve a bare program name against `PATH` (the agent's, else mpm's), as execvp would.
fn resolve_program(program: &str, path_var: Option<&str>) -> io::Result<PathBuf> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let path = path_var
        .map(std::ffi::OsString::from)
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if let Ok(meta) = std::fs::metadata(&candidate) {
            use std::os::unix::fs::PermissionsExt;
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("{program} not found in PATH"),
    ))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod posix {
    use super::*;
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;

    /// glibc's `POSIX_SPAWN_SETSID` (spawn.h, glibc 2.26+).
    const POSIX_SPAWN_SETSID: libc::c_int = 0x80;

    fn cstring(s: impl Into<Vec<u8>>) -> io::Result<CString> {
        CString::new(s)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in argv or env"))
    }

    fn check(rc: libc::c_int) -> io::Result<()> {
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(rc))
        }
    }

    struct Actions(libc::posix_spawn_file_actions_t);
    impl Drop for Actions {
        fn drop(&mut self) {
            // SAFETY: initialised in `spawn` before this guard exists.
            unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
        }
    }
    struct Attr(libc::posix_spawnattr_t);
    impl Drop for Attr {
        fn drop(&mut self) {
            // SAFETY: initialised in `spawn` before this guard exists.
            unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
        }
    }

    pub fn spawn(spec: &SpawnSpec<'_>) -> io::Result<i32> {
        let (program, _) = spec
            .argv
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty argv"))?;
        let path = resolve_program(program, spec.env.get("PATH").map(String::as_str))?;
        let path_c = cstring(path.as_os_str().as_bytes())?;
        let argv_c: Vec<CString> = spec
            .argv
            .iter()
            .map(|a| cstring(a.as_bytes()))
            .collect::<io::Result<_>>()?;
        let mut env: BTreeMap<Vec<u8>, Vec<u8>> = std::env::vars_os()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        for (k, v) in spec.env {
            env.insert(k.as_bytes().to_vec(), v.as_bytes().to_vec());
        }
        let env_c: Vec<CString> = env
            .into_iter()
            .map(|(mut k, v)| {
                k.push(b'=');
                k.extend_from_slice(&v);
                cstring(k)
            })
            .collect::<io::Result<_>>()?;
        let mut argv_p: Vec<*mut libc::c_char> =
            argv_c.iter().map(|c| c.as_ptr() as *mut _).collect();
        argv_p.push(std::ptr::null_mut());
        let mut env_p: Vec<*mut libc::c_char> =
            env_c.iter().map(|c| c.as_ptr() as *mut _).collect();
        env_p.push(std::ptr::null_mut());
        let devnull = cstring("/dev/null")?;

        // SAFETY: plain libc calls on stack-owned, initialised structures; every pointer passed
        // (paths, argv, envp) outlives the posix_spawn call, and the guards destroy the structures.
        unsafe {
            let mut actions = Actions(std::mem::zeroed());
            check(libc::posix_spawn_file_actions_init(&mut actions.0))?;
            check(libc::posix_spawn_file_actions_addopen(
                &mut actions.0,
                0,
                devnull.as_ptr(),
                libc::O_RDONLY,
                0,
            ))?;
            check(libc::posix_spawn_file_actions_adddup2(
                &mut actions.0,
                spec.stdout.as_raw_fd(),
                1,
            ))?;
            check(libc::posix_spawn_file_actions_adddup2(
                &mut actions.0,
                spec.stderr.as_raw_fd(),
                2,
            ))?;

            let mut attr = Attr(std::mem::zeroed());
            check(libc::posix_spawnattr_init(&mut attr.0))?;
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            check(libc::posix_spawnattr_setsigmask(&mut attr.0, &empty))?;
            let mut defaults: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut defaults);
            for sig in [
                libc::SIGPIPE,
                libc::SIGINT,
                libc::SIGQUIT,
                libc::SIGTERM,
                libc::SIGHUP,
                libc::SIGTSTP,
                libc::SIGTTIN,
                libc::SIGTTOU,
                libc::SIGCHLD,
                libc::SIGUSR1,
                libc::SIGUSR2,
                libc::SIGWINCH,
            ] {
                libc::sigaddset(&mut defaults, sig);
            }
            check(libc::posix_spawnattr_setsigdefault(&mut attr.0, &defaults))?;
            let flags =
                POSIX_SPAWN_SETSID | libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF;
            check(libc::posix_spawnattr_setflags(
                &mut attr.0,
                flags as libc::c_short,
            ))?;

            let mut pid: libc::pid_t = 0;
            check(libc::posix_spawn(
                &mut pid,
                path_c.as_ptr(),
                &actions.0,
                &attr.0,
                argv_p.as_ptr(),
                env_p.as_ptr(),
            ))?;
            Ok(pid)
        }
    }
}

/// A spawned session leader, reaped by pid.
pub struct Leader {
    pid: i32,
    pidfd: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
}

impl Leader {
    /// Watch `pid` (our child). Must run inside the tokio runtime.
    pub fn new(pid: i32) -> Self {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let pidfd = (fd >= 0)
            // SAFETY: `fd` is a fresh descriptor we own.
            .then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
            .and_then(|fd| {
                // SAFETY: the OwnedFd is moved into the AsyncFd, stays open and is the same
                // descriptor for the AsyncFd's whole life.
                unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.ok()
            });
        Leader {
            pid,
            pidfd,
            status: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    fn try_reap(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        let mut raw = 0;
        // SAFETY: waitpid on our own child with a valid out-pointer.
        let rc = unsafe { libc::waitpid(self.pid, &mut raw, libc::WNOHANG) };
        match rc {
            0 => Ok(None),
            r if r == self.pid => {
                let s = ExitStatus::from_raw(raw);
                self.status = Some(s);
                Ok(Some(s))
            }
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// Wait for the leader to exit and reap it. Cancel-safe.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(s) = self.try_reap()? {
                return Ok(s);
            }
            match &self.pidfd {
                Some(fd) => {
                    let mut guard = fd.readable().await?;
                    guard.clear_ready();
                }
                None => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_programs_like_execvp() {
        assert_eq!(
            resolve_program("/bin/sh", None).unwrap(),
            PathBuf::from("/bin/sh")
        );
        let sh = resolve_program("sh", Some("/nonexistent:/bin:/usr/bin")).unwrap();
        assert!(sh.ends_with("sh"));
        assert_eq!(
            resolve_program("no-such-program-mpm", Some("/bin"))
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn spawned_child_is_a_session_leader_with_redirected_output() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = OwnedFd::from(std::fs::File::create(dir.path().join("o")).unwrap());
        let err = OwnedFd::from(std::fs::File::create(dir.path().join("e")).unwrap());
        let argv: Vec<String> = [
            "sh",
            "-c",
            "set -- $(cat /proc/$$/stat); echo $6; echo oops >&2; exit 7",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let env = BTreeMap::from([("MPM_T".to_string(), "1".to_string())]);
        let pid = spawn(&SpawnSpec {
            argv: &argv,
            env: &env,
            cwd: None,
            stdout: &out,
            stderr: &err,
            rlimits: None,
        })
        .unwrap();
        let status = rt.block_on(async { Leader::new(pid).wait().await.unwrap() });
        assert_eq!(status.code(), Some(7));
        let sid: i32 = std::fs::read_to_string(dir.path().join("o"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(sid, pid, "the child leads its own session");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("e")).unwrap(),
            "oops\n"
        );
    }

    #[test]
    fn rlimits_are_applied_before_exec() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = OwnedFd::from(std::fs::File::create(dir.path().join("o")).unwrap());
        let err = OwnedFd::from(std::fs::File::create(dir.path().join("e")).unwrap());
        let argv: Vec<String> = ["sh", "-c", "ulimit -n"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let limits = crate::config::Rlimits {
            nofile: Some(77),
            ..Default::default()
        };
        let pid = spawn(&SpawnSpec {
            argv: &argv,
            env: &BTreeMap::new(),
            cwd: None,
            stdout: &out,
            stderr: &err,
            rlimits: Some(&limits),
        })
        .unwrap();
        let status = rt.block_on(async { Leader::new(pid).wait().await.unwrap() });
        assert_eq!(status.code(), Some(0));
        let n = std::fs::read_to_string(dir.path().join("o")).unwrap();
        assert_eq!(n.trim(), "77");
    }
}
