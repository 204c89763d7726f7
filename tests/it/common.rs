//! A small PTY test harness: runs the real `mpm` binary as a session leader on a fresh PTY (its
//! controlling terminal, like a user's), collects everything it writes to the terminal, and kills
//! the whole process tree on drop even when a test fails.
#![allow(dead_code)]

use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::fcntl::{OFlag, open};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::stat::Mode;
use nix::sys::termios::{Termios, tcgetattr};
use nix::unistd::Pid;

/// Generous deadlines: a condition is awaited, never slept for; the deadline only bounds a failure.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

pub(crate) fn mpm_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mpm")
}

pub(crate) fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn fake_agent() -> String {
    repo_root()
        .join("fixtures/fake_agent.py")
        .display()
        .to_string()
}

/// Which host runs `mpm run`'s session: this process (no daemon answers) or a daemon the test
/// started (`mpm daemon --socket ... --state-dir ...`, found through `MPM_SOCKET`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostKind {
    InProcess,
    Daemon,
}

/// A daemon started by a test: SIGTERM (it stops its sessions) and, if need be, SIGKILL on drop.
pub(crate) struct DaemonGuard {
    pub child: Child,
    pub socket: PathBuf,
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = kill(pid, Signal::SIGTERM);
            let gone = wait_until(DEADLINE, || self.child.try_wait().ok().flatten().is_some());
            if !gone {
                let _ = killpg(pid, Signal::SIGKILL);
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// An isolated environment for mpm: XDG folders in a temp dir (logs, config), short grace; with
/// [`HostKind::Daemon`], a daemon of its own that `mpm run` finds.
pub(crate) struct TestEnv {
    /// Dropped first: the daemon stops its sessions before the folder goes.
    pub daemon: Option<DaemonGuard>,
    pub dir: tempfile::TempDir,
}

impl TestEnv {
    pub(crate) fn new() -> Self {
        TestEnv {
            daemon: None,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// An environment whose `mpm run` is hosted by `host`.
    pub(crate) fn for_host(host: HostKind) -> Self {
        let mut env = TestEnv::new();
        if host == HostKind::Daemon {
            let socket = env.path("daemon.sock");
            let mut c = env.command(&[
                "daemon",
                "--socket",
                socket.to_str().expect("utf-8 path"),
                "--state-dir",
                env.path("daemon-state").to_str().expect("utf-8 path"),
            ]);
            c.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0);
            let child = c.spawn().expect("spawn mpm daemon");
            let guard = DaemonGuard {
                child,
                socket: socket.clone(),
            };
            assert!(
                wait_until(DEADLINE, || std::os::unix::net::UnixStream::connect(
                    &socket
                )
                .is_ok()),
                "the daemon never listened on {}",
                socket.display()
            );
            env.daemon = Some(guard);
        }
        env
    }

    /// The host this environment's `mpm run` uses.
    pub(crate) fn host(&self) -> HostKind {
        if self.daemon.is_some() {
            HostKind::Daemon
        } else {
            HostKind::InProcess
        }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn vars(&self) -> Vec<(String, String)> {
        let d = self.dir.path();
        let mut v = vec![
            (
                "XDG_STATE_HOME".into(),
                d.join("state").display().to_string(),
            ),
            (
                "XDG_CONFIG_HOME".into(),
                d.join("config").display().to_string(),
            ),
            (
                "XDG_RUNTIME_DIR".into(),
                d.join("run").display().to_string(),
            ),
            ("MPM_RUN__GRACE_SECS".into(), "0.5".into()),
        ];
        if let Some(d) = &self.daemon {
            v.push(("MPM_SOCKET".into(), d.socket.display().to_string()));
        }
        v
    }

    /// `mpm` with this environment (no terminal).
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(mpm_bin());
        clear_mpm_vars(&mut c);
        c.args(args)
            .envs(self.vars())
            .env_remove("COLUMNS")
            .env_remove("LINES")
            .current_dir(repo_root());
        c
    }
}

/// Drop the developer's own `MPM_*` settings from a child's environment (tests set their own),
/// and `CI`: it tells the suite to fail instead of skipping, but the agents under test read it too
/// (gemini 0.61.0 under `CI=true` refuses its interactive UI and waits for a prompt on stdin).
pub(crate) fn clear_mpm_vars(c: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MPM_") {
            c.env_remove(k);
        }
    }
    c.env_remove("CI");
}

/// The lines of a JSON-lines events file (`--events-file`), parsed; unparsable lines skipped.
pub(crate) fn read_events(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Wait for `cond` with a deadline; true when it held.
pub(crate) fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// A live (non-zombie) process.
pub(crate) fn alive(pid: i32) -> bool {
    mpm::process::read_stat(pid).is_some_and(|s| s.state != 'Z')
}

/// Read a pid written by the fake agent (`pid:FILE`, `grandchild:FILE`).
pub(crate) fn read_pid(path: &Path) -> i32 {
    assert!(
        wait_until(DEADLINE, || path.exists()),
        "{} never appeared",
        path.display()
    );
    let mut text = String::new();
    assert!(wait_until(DEADLINE, || {
        text = std::fs::read_to_string(path).unwrap_or_default();
        text.trim().parse::<i32>().is_ok()
    }));
    text.trim().parse().unwrap()
}

/// The termios fields that matter, comparable.
pub(crate) fn termios_key(t: &Termios) -> String {
    format!(
        "{:?} {:?} {:?} {:?} {:?}",
        t.input_flags, t.output_flags, t.control_flags, t.local_flags, t.control_chars
    )
}

/// `mpm` running on a PTY of its own.
pub(crate) struct PtyProc {
    pub master: Arc<OwnedFd>,
    /// The terminal's line settings before mpm started.
    pub initial_termios: Termios,
    pub child: Child,
    output: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

pub(crate) struct Spawn<'a> {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cols: u16,
    pub rows: u16,
    /// Where mpm's stdout goes instead of the PTY.
    pub stdout: Option<Stdio>,
    pub cwd: Option<&'a Path>,
    /// Drain the terminal slowly: at most this many bytes per read, then this pause (a slow
    /// terminal; `None`: as fast as it comes).
    pub slow_reader: Option<(usize, Duration)>,
}

impl<'a> Spawn<'a> {
    pub(crate) fn new(env: &TestEnv, args: &[&str]) -> Self {
        Spawn {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env.vars(),
            cols: 80,
            rows: 24,
            stdout: None,
            cwd: None,
            slow_reader: None,
        }
    }

    pub(crate) fn start(self) -> PtyProc {
        let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let name = ptsname_r(&master).unwrap();
        let slave = open(
            Path::new(&name),
            OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        let master = unsafe { OwnedFd::from_raw_fd(master.into_raw_fd()) };
        set_size(&master, self.cols, self.rows);
        let initial_termios = tcgetattr(master.as_fd()).expect("tcgetattr");
        let mut cmd = Command::new(mpm_bin());
        clear_mpm_vars(&mut cmd);
        cmd.args(&self.args)
            .envs(self.env)
            .env("TERM", "xterm-256color")
            .current_dir(self.cwd.map(Path::to_path_buf).unwrap_or_else(repo_root))
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(
                self.stdout
                    .unwrap_or_else(|| Stdio::from(slave.try_clone().unwrap())),
            )
            .stderr(Stdio::from(slave.try_clone().unwrap()));
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn mpm");
        drop(cmd);
        drop(slave);
        let master = Arc::new(master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let master = master.clone();
            let output = output.clone();
            let (cap, pause) = self.slow_reader.unwrap_or((65536, Duration::ZERO));
            std::thread::spawn(move || {
                let mut buf = vec![0u8; cap.clamp(1, 65536)];
                loop {
                    match nix::unistd::read(master.as_fd(), &mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            output.lock().unwrap().extend_from_slice(&buf[..n]);
                            if !pause.is_zero() {
                                std::thread::sleep(pause);
                            }
                        }
                        Err(nix::errno::Errno::EINTR) => continue,
                        Err(_) => break,
                    }
                }
            })
        };
        PtyProc {
            master,
            initial_termios,
            child,
            output,
            reader: Some(reader),
            status: None,
        }
    }
}

fn set_size(fd: &impl AsFd, cols: u16, rows: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    assert_eq!(
        unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCSWINSZ, &ws) },
        0
    );
}

impl PtyProc {
    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Everything mpm wrote to the terminal so far, as bytes.
    pub(crate) fn bytes(&self) -> Vec<u8> {
        self.output.lock().unwrap().clone()
    }

    /// Everything mpm wrote to the terminal so far, lossily as text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Wait until the terminal output contains `needle`; panics with the output otherwise.
    pub(crate) fn expect(&self, needle: &str) {
        if !wait_until(DEADLINE, || self.text().contains(needle)) {
            panic!(
                "timed out waiting for {needle:?}; terminal so far:\n{}",
                self.text()
            );
        }
    }

    /// Type bytes into the terminal.
    pub(crate) fn send(&self, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = nix::unistd::write(self.master.as_fd(), rest).expect("write to pty");
            rest = &rest[n..];
        }
    }

    /// Resize the terminal (the kernel sends SIGWINCH to mpm).
    pub(crate) fn resize(&self, cols: u16, rows: u16) {
        set_size(&*self.master, cols, rows);
    }

    /// The terminal's current line settings (as mpm left them).
    pub(crate) fn termios(&self) -> Termios {
        tcgetattr(self.master.as_fd()).expect("tcgetattr")
    }

    pub(crate) fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid()), sig).expect("signal mpm");
    }

    /// Wait for mpm to exit; panics after the deadline.
    pub(crate) fn wait(&mut self) -> ExitStatus {
        self.wait_within(DEADLINE)
    }

    /// Wait for mpm to exit; panics after `deadline` (for sessions that move a lot of data on a
    /// machine that may be busy: the deadline only bounds a failure).
    pub(crate) fn wait_within(&mut self, deadline: Duration) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        let mut status = None;
        let ok = wait_until(deadline, || {
            status = self.child.try_wait().expect("try_wait");
            status.is_some()
        });
        assert!(ok, "mpm did not exit; terminal:\n{}", self.text());
        self.status = status;
        status.unwrap()
    }

    /// Wait for exit and for the terminal reader to see the last byte.
    pub(crate) fn wait_output(&mut self) -> ExitStatus {
        let s = self.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        s
    }
}

impl Drop for PtyProc {
    fn drop(&mut self) {
        let pid = self.pid();
        if self.status.is_none() && self.child.try_wait().ok().flatten().is_none() {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // Anything of the tree that survived (the test failed half-way): gone now.
        mpm::process::stop_tree(pid, Duration::from_millis(100));
    }
}

/// A test that runs once per host: `both_hosts!(name);` after `fn name(host: HostKind)` makes
/// `name::in_process` and `name::daemon`.
#[macro_export]
macro_rules! both_hosts {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn in_process() {
                    super::$name($crate::common::HostKind::InProcess)
                }
                #[test]
                fn daemon() {
                    super::$name($crate::common::HostKind::Daemon)
                }
            }
        )*
    };
}

/// Kill these pids on drop (processes a test created indirectly, e.g. grandchildren).
pub(crate) struct KillOnDrop(pub Vec<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &p in &self.0 {
            if alive(p) {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
        }
    }
}

/// Run `mpm` (arguments and environment added by `configure`) and measure its own peak RSS in KB.
///
/// A small Python parent forks and execs `mpm` and reports `ru_maxrss` from `wait4`: a child spawned
/// straight from this (large, multi-threaded) test binary shares its address space until exec, and
/// the kernel carries that address space's peak into the child's `ru_maxrss`. The `MAXRSS` line is
/// taken out of the returned stderr.
pub(crate) fn mpm_with_peak_rss(
    configure: impl FnOnce(&mut std::process::Command),
) -> (std::process::Output, i64) {
    const MEASURE: &str = "import os, sys\n\
pid = os.fork()\n\
if pid == 0:\n    os.execv(sys.argv[1], sys.argv[1:])\n\
_, st, ru = os.wait4(pid, 0)\n\
sys.stderr.write('MAXRSS %d\\n' % ru.ru_maxrss)\n\
sys.exit(os.waitstatus_to_exitcode(st))\n";
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-c", MEASURE, env!("CARGO_BIN_EXE_mpm")])
        .stdin(std::process::Stdio::null());
    configure(&mut cmd);
    let mut out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn python3: {e}"));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let rss = err
        .lines()
        .find_map(|l| l.strip_prefix("MAXRSS "))
        .and_then(|n| n.trim().parse::<i64>().ok())
        .unwrap_or_else(|| panic!("no MAXRSS line in {err}"));
    out.stderr = err
        .lines()
        .filter(|l| !l.starts_with("MAXRSS "))
        .flat_map(|l| [l, "\n"])
        .collect::<String>()
        .into_bytes();
    (out, rss)
}

/// What a detection line of `mpm scan --json` says, as the capture tables compare it:
/// (category, who: the agent or else the ticket type, what: the task, else the title, else the
/// text).
pub(crate) fn scan_row(v: &serde_json::Value) -> (String, String, String) {
    let s = |k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let who = if s("agent").is_empty() {
        s("ticket_type")
    } else {
        s("agent")
    };
    let what = [s("task"), s("title"), s("text")]
        .into_iter()
        .find(|x| !x.is_empty())
        .unwrap_or_default();
    (s("category"), who, what)
}
