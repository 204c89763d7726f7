//! `cargo bench --bench daemon_sessions`: the daemon's resident memory, open descriptors and
//! threads after 10, 100 and N short sessions (default N = 100; `MPM_BENCH_SESSIONS=1000` for
//! issue 12's figure), each a real `mpm run -- true` client hosted by the daemon. The figures are
//! the differences between the points of the same run: an ended session must be freed at once.
//!
//! `cargo test --all-targets` runs this binary without `--bench`: then 3 vs 6 sessions (a smoke run)
//! unless `MPM_BENCH_SESSIONS` says otherwise.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.0.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_mb(pid: u32) -> f64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("MPM_BENCH_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke { 6 } else { 100 });
    let first = if smoke && n <= 6 { 3 } else { 10 };
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("mpm.sock");
    let mpm = env!("CARGO_BIN_EXE_mpm");
    let vars = [
        ("XDG_STATE_HOME", dir.path().join("xdg-state")),
        ("XDG_CONFIG_HOME", dir.path().join("xdg-config")),
        ("XDG_RUNTIME_DIR", dir.path().join("run")),
        ("MPM_SOCKET", sock.clone()),
    ];
    let daemon = Command::new(mpm)
        .args(["daemon", "--socket"])
        .arg(&sock)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start daemon");
    let d = Kill(daemon);
    let pid = d.0.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "daemon did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    let run = |count: usize| {
        for _ in 0..count {
            let st = Command::new(mpm)
                .args(["run", "--", "true"])
                .envs(vars.iter().map(|(k, v)| (k, v)))
                .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status()
                .expect("mpm run");
            assert!(st.success());
        }
        // Let the last session's threads finish after its client returned.
        std::thread::sleep(Duration::from_secs(1));
    };
    // Checkpoints: 10, 100 (when N > 100), N.
    let mut points = vec![first];
    if n > 100 && first < 100 {
        points.push(100);
    }
    if n > first {
        points.push(n);
    }
    let mut done = 0;
    let mut rows: Vec<(usize, f64, usize, usize)> = Vec::new();
    let mut per_session = Duration::ZERO;
    for &p in &points {
        let start = Instant::now();
        run(p - done);
        if done > 0 {
            per_session = start.elapsed() / (p - done) as u32;
        }
        done = p;
        let row = (p, rss_mb(pid), fds(pid), threads(pid));
        println!(
            "daemon after {:>5} sessions: {:>6.1} MB RSS, {} fds, {} threads",
            row.0, row.1, row.2, row.3
        );
        rows.push(row);
    }
    let a = rows[0];
    for b in &rows[1..] {
        println!(
            "{} -> {} sessions: {:+.1} MB, {:+} fds, {:+} threads",
            a.0,
            b.0,
            b.1 - a.1,
            b.2 as i64 - a.2 as i64,
            b.3 as i64 - a.3 as i64
        );
    }
    println!(
        "{:.0} ms per `mpm run -- true` (last stretch)",
        per_session.as_secs_f64() * 1000.0
    );
}
