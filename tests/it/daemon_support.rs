//! Shared helpers of the daemon tests: process guards, polling, the fake agent.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// Poll `cond` until it holds or `timeout` passes; panics with `what` on timeout.
pub(crate) fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

pub(crate) fn fake_agent() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/fake_agent.py")
}

/// argv running the fake agent with `steps`.
pub(crate) fn agent_argv(steps: &[&str]) -> Vec<String> {
    let mut v = vec!["python3".to_string(), fake_agent().display().to_string()];
    v.extend(steps.iter().map(|s| s.to_string()));
    v
}

/// Kills, on drop, a process's group and any other process groups registered with it. Every
/// process a test starts goes in one of these, so a failing assertion leaves nothing behind.
pub(crate) struct Guard {
    pub child: Option<Child>,
    pub extra_groups: Vec<i32>,
}

impl Guard {
    pub(crate) fn new(child: Child) -> Guard {
        Guard {
            child: Some(child),
            extra_groups: Vec::new(),
        }
    }

    pub(crate) fn empty() -> Guard {
        Guard {
            child: None,
            extra_groups: Vec::new(),
        }
    }

    pub(crate) fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub(crate) fn track_group(&mut self, pgid: u32) {
        self.extra_groups.push(pgid as i32);
    }

    /// Wait for the main child with a deadline; its exit code (None when killed by a signal).
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut().expect("child");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                return st.code();
            }
            assert!(Instant::now() < deadline, "process did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for g in &self.extra_groups {
            let _ = killpg(Pid::from_raw(*g), Signal::SIGKILL);
        }
        if let Some(c) = self.child.as_mut() {
            let pid = Pid::from_raw(c.id() as i32);
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = kill(pid, Signal::SIGKILL);
            let _ = c.wait();
        }
    }
}

/// A temp home for one daemon: XDG dirs, socket, state.
pub(crate) struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub(crate) fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        for d in ["rt", "state", "config"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        Env { dir }
    }
    pub(crate) fn socket(&self) -> PathBuf {
        self.dir.path().join("rt/mpm.sock")
    }
    pub(crate) fn state(&self) -> PathBuf {
        self.dir.path().join("state/mpm")
    }
    pub(crate) fn db(&self) -> PathBuf {
        self.state().join("mpm.db")
    }

    /// `mpm ARGS` with the XDG dirs pointed here and no inherited socket or notify variables.
    pub(crate) fn mpm(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mpm"));
        c.args(args)
            .env("XDG_RUNTIME_DIR", self.dir.path().join("rt"))
            .env("XDG_STATE_HOME", self.dir.path().join("state"))
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("HOME", self.dir.path())
            .env_remove("MPM_SOCKET")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null());
        c
    }

    /// Start `mpm daemon --socket S --state-dir D` in its own process group, guarded.
    pub(crate) fn start_daemon(&self, notify: Option<&Path>) -> Guard {
        let mut c = self.mpm(&[
            "daemon",
            "--socket",
            self.socket().to_str().expect("utf8"),
            "--state-dir",
            self.state().to_str().expect("utf8"),
        ]);
        c.stdout(Stdio::null()).stderr(Stdio::null());
        if let Some(n) = notify {
            c.env("NOTIFY_SOCKET", n);
        }
        std::os::unix::process::CommandExt::process_group(&mut c, 0);
        let g = Guard::new(c.spawn().expect("spawn daemon"));
        let sock = self.socket();
        wait_for("daemon socket", Duration::from_secs(20), || {
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        });
        g
    }

    /// Run a client command to completion: (exit code, stdout, stderr).
    pub(crate) fn client(&self, args: &[&str]) -> (i32, String, String) {
        let mut full: Vec<&str> = args.to_vec();
        let sock = self.socket();
        let sock = sock.to_str().expect("utf8").to_string();
        full.push("--socket");
        full.push(&sock);
        let out = self.mpm(&full).output().expect("run client");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// Is the process alive (not a zombie)?
pub(crate) fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|st| st != "Z"),
        Err(_) => false,
    }
}
