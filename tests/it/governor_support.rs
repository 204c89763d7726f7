//! Shared helpers for the governor tests: fake-agent trees in their own session that are always
//! killed, and event waits with deadlines.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use mpm::config::{CpuLimits, LimitsConfig, MemoryLimits, Rlimits};
use mpm::events::{Event, EventBody, Resource};
use mpm::governor::ResolvedLimits;

/// The real python interpreter (not a pyenv shim), resolved once.
pub(crate) fn python() -> &'static str {
    static PY: OnceLock<String> = OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    })
}

pub(crate) fn fake_agent() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/fake_agent.py")
}

/// A process tree in its own session; dropping it kills the whole tree and reaps the leader.
pub(crate) struct Tree {
    pub child: Child,
}

impl Tree {
    /// Run `argv` as a session leader (setsid in pre_exec), stdio to /dev/null.
    pub(crate) fn spawn_argv(argv: &[String], pre: Option<mpm::config::Rlimits>) -> Tree {
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: setsid and setrlimit are async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(r) = &pre {
                    mpm::governor::apply_rlimits(r)?;
                }
                Ok(())
            });
        }
        Tree {
            child: cmd.spawn().expect("spawn"),
        }
    }

    /// Run the fake agent with `steps` as a session leader.
    pub(crate) fn fake(steps: &[&str]) -> Tree {
        let mut argv = vec![python().to_string(), fake_agent().display().to_string()];
        argv.extend(steps.iter().map(|s| s.to_string()));
        Self::spawn_argv(&argv, None)
    }

    /// `n` CPU burners (the fake agent's `burn:0`) under one `sh`: on a loaded machine (load 20 on
    /// 2 cores) one burner gets a tenth of a core, below any useful bar; the tree's share grows
    /// with its runnable processes.
    pub(crate) fn burners(n: usize) -> Tree {
        let script = format!(r#"for i in $(seq {n}); do "$0" "$1" burn:0 & done; wait"#);
        let argv = [
            "sh".to_string(),
            "-c".to_string(),
            script,
            python().to_string(),
            fake_agent().display().to_string(),
        ];
        Self::spawn_argv(&argv, None)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        mpm::process::stop_tree(self.child.id() as i32, Duration::from_millis(100));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Limits for tests: warning 60 MB, critical 120 MB, hard 180 MB; CPU off.
pub(crate) fn small_limits() -> ResolvedLimits {
    ResolvedLimits {
        memory: MemoryLimits {
            warning: Some(60),
            critical: Some(120),
            hard: Some(180),
        },
        cpu: CpuLimits {
            warning_percent: None,
            window_secs: 1,
            hard_percent: None,
        },
        rlimits: Rlimits::default(),
    }
}

/// Governor settings with a 100 ms interval and no cgroup.
pub(crate) fn fast_config() -> LimitsConfig {
    LimitsConfig {
        interval_ms: 100,
        cgroup: "off".into(),
        ..LimitsConfig::default()
    }
}

/// The resource figure of a `resource.*` event.
pub(crate) fn resource(e: &Event) -> Option<&Resource> {
    match &e.body {
        EventBody::ResourceWarning(r)
        | EventBody::ResourceCritical(r)
        | EventBody::ResourceLimit(r) => Some(r),
        _ => None,
    }
}

/// Collect `resource.*` events until `stop` says so or the deadline passes.
pub(crate) fn collect_until(
    rx: &crossbeam_channel::Receiver<Arc<Event>>,
    timeout: Duration,
    stop: impl Fn(&Event) -> bool,
) -> Vec<Arc<Event>> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while let Ok(e) = rx.recv_deadline(deadline) {
        if resource(&e).is_none() {
            continue;
        }
        let done = stop(&e);
        out.push(e);
        if done {
            break;
        }
    }
    out
}

/// Poll `cond` until it holds or `timeout` passes.
pub(crate) fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Read a pid written by the fake agent to `path` (it renames into place atomically).
pub(crate) fn read_pid_file(path: &Path, timeout: Duration) -> Option<i32> {
    let mut pid = None;
    wait_for(timeout, || {
        pid = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        pid.is_some()
    });
    pid
}

/// Resident memory of one process in MB (`/proc/<pid>/statm`).
pub(crate) fn own_rss_mb(pid: i32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((pages * mpm::process::procfs::page_size()) as f64 / (1024.0 * 1024.0))
}
