//! Spawning a sub-agent as a session leader, and reaping it.
//!
//! Every sub-agent must be a session leader (`setsid`): no controlling terminal, so it can never read
//! from or draw on the user's terminal, and its whole tree shares its session id for
//! [`crate::process::stop_tree`]. It is spawned with tokio's `Command` and a `pre_exec` hook that
//! runs between fork and exec: `setsid`, the agent's rlimits, the signals mpm handles back to
//! their defaults, and a parent-death signal (SIGKILL when the spawning thread's process dies: the
//! spawn runs on a worker of the executor's runtime, which lives as long as the executor). stdin
//! is /dev/null; stdout and stderr are the given pipes. tokio reaps the child (its SIGCHLD driver).
//!
//! This replaced a `posix_spawn` FFI with pidfd reaping (8 `unsafe` sites) that was written for a
//! retired throughput ratio; the per-delegation start-up overhead measured after the change is in
//! BENCHMARKS.md (executor section): well under the 5 ms floor.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{ExitStatus, Stdio};

/// What to spawn.
pub(crate) struct SpawnSpec<'a> {
    pub argv: &'a [String],
    /// The whole environment to start from (a daemon-hosted session's client's); `None`: mpm's own.
    pub base_env: Option<&'a [(String, String)]>,
    /// Added to (and overriding) the base environment.
    pub env: &'a BTreeMap<String, String>,
    pub cwd: Option<&'a Path>,
    /// Becomes the child's stdout (fd 1).
    pub stdout: &'a OwnedFd,
    /// Becomes the child's stderr (fd 2).
    pub stderr: &'a OwnedFd,
    /// setrlimit values applied before exec.
    pub rlimits: Option<&'a crate::config::Rlimits>,
}

/// Spawn as a session leader. Must run inside a tokio runtime (on a thread that outlives the
/// child: the parent-death signal follows the spawning thread).
pub(crate) fn spawn_leader(spec: &SpawnSpec<'_>) -> io::Result<Leader> {
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty argv"))?;
    let mut cmd = tokio::process::Command::new(program);
    if let Some(base) = spec.base_env {
        cmd.env_clear().envs(base.iter().map(|(k, v)| (k, v)));
    }
    cmd.args(args)
        .envs(spec.env)
        .stdin(Stdio::null())
        .stdout(spec.stdout.try_clone()?)
        .stderr(spec.stderr.try_clone()?)
        .kill_on_drop(false);
    if let Some(dir) = spec.cwd {
        cmd.current_dir(dir);
    }
    let rlimits = spec.rlimits.cloned();
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the hook runs between fork and exec and only makes async-signal-safe system calls
    // (setsid, setrlimit, signal, prctl, getppid, kill) on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(io::Error::from)?;
            if let Some(r) = &rlimits {
                crate::governor::apply_rlimits(r)?;
            }
            for sig in [
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
                libc::signal(sig, libc::SIG_DFL);
            }
            #[cfg(target_os = "linux")]
            {
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                );
                // mpm died between the fork and the prctl: nobody would send the signal.
                if libc::getppid() != parent {
                    libc::kill(libc::getpid(), libc::SIGKILL);
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("the child exited before its pid was read"))?
        as i32;
    Ok(Leader { pid, child })
}

/// A spawned session leader; tokio reaps it.
pub(crate) struct Leader {
    pid: i32,
    child: tokio::process::Child,
}

impl Leader {
    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// Wait for the leader to exit and reap it. Cancel-safe; after the first success it returns
    /// the same status again.
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn spawned_child_is_a_session_leader_with_redirected_output() {
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
        let (pid, status) = rt().block_on(async {
            let mut leader = spawn_leader(&SpawnSpec {
                base_env: None,
                argv: &argv,
                env: &env,
                cwd: None,
                stdout: &out,
                stderr: &err,
                rlimits: None,
            })
            .unwrap();
            (leader.pid(), leader.wait().await.unwrap())
        });
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
    fn rlimits_are_applied_before_exec_and_a_missing_program_is_an_error() {
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
        let status = rt().block_on(async {
            let missing = vec!["no-such-program-mpm".to_string()];
            let e = spawn_leader(&SpawnSpec {
                base_env: None,
                argv: &missing,
                env: &BTreeMap::new(),
                cwd: None,
                stdout: &out,
                stderr: &err,
                rlimits: None,
            })
            .err()
            .expect("a missing program fails");
            assert_eq!(e.kind(), io::ErrorKind::NotFound);
            let mut leader = spawn_leader(&SpawnSpec {
                base_env: None,
                argv: &argv,
                env: &BTreeMap::new(),
                cwd: None,
                stdout: &out,
                stderr: &err,
                rlimits: Some(&limits),
            })
            .unwrap();
            leader.wait().await.unwrap()
        });
        assert_eq!(status.code(), Some(0));
        let n = std::fs::read_to_string(dir.path().join("o")).unwrap();
        assert_eq!(n.trim(), "77");
    }
}
