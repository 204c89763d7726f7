//! Daemon idle cost: ten idle sessions (the fake agent sleeping) under one `mpm daemon`.
//!
//! Measures the daemon's resident memory (goal < 30 MB) and its CPU over a window (goal < 0.1% of
//! one core, default window 60 s; `MPM_BENCH_SECS` changes it), against baselines taken in the same
//! run: the same daemon with no session, and one idle fake agent. Also the round trip of a `status`
//! request. Sessions run on the PTY backend with the full supervisor (detection, governor).
//!
//! Run: `cargo bench --bench daemon` (release build).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mpm::daemon::client::Client;
use mpm::protocol::{ClientMsg, RunSpec, ServerMsg};

const SESSIONS: usize = 10;

struct Kill(Child, Vec<u32>);
impl Drop for Kill {
    fn drop(&mut self) {
        for p in &self.1 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(*p as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_mb(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some((_, rest)) = s.rsplit_once(')') else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the name: state is index 0; utime and stime are fields 14 and 15 of the line.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn ticks_per_sec() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64
}

fn start_daemon(dir: &Path) -> Kill {
    let sock = dir.join("mpm.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_mpm"))
        .args(["daemon", "--socket"])
        .arg(&sock)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("XDG_STATE_HOME", dir.join("xdg-state"))
        .env("XDG_CONFIG_HOME", dir.join("xdg-config"))
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start daemon");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Client::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "daemon did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    Kill(child, Vec::new())
}

fn main() {
    // `cargo test --all-targets` runs bench binaries without `--bench`: a quick smoke run then.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let secs: u64 = std::env::var("MPM_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke { 2 } else { 60 });
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/fake_agent.py");
    let mut d = start_daemon(dir.path());
    let pid = d.0.id();
    let sock = dir.path().join("mpm.sock");
    std::thread::sleep(Duration::from_millis(500));
    let rss_empty = rss_mb(pid);

    let mut c = Client::connect(&sock).expect("connect");
    for _ in 0..SESSIONS {
        match c
            .request(&ClientMsg::Run(RunSpec {
                argv: vec![
                    "python3".into(),
                    agent.display().to_string(),
                    "sleep:0".into(),
                ],
                cwd: dir.path().display().to_string(),
                env: vec![],
                cols: 120,
                rows: 40,
                flags: Default::default(),
                client: None,
            }))
            .expect("run")
        {
            ServerMsg::Spawned { pid, .. } => d.1.push(pid),
            m => panic!("{m:?}"),
        }
    }
    // Status round trip (also makes the daemon touch every session once).
    let mut lat = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let r = c.request(&ClientMsg::Status).expect("status");
        lat.push(t.elapsed());
        assert!(matches!(r, ServerMsg::Status(s) if s.sessions.len() == SESSIONS));
    }
    lat.sort();
    drop(c);
    std::thread::sleep(Duration::from_millis(500));

    let agent_pid = d.1[0];
    let (d0, a0, t0) = (cpu_ticks(pid), cpu_ticks(agent_pid), Instant::now());
    std::thread::sleep(Duration::from_secs(secs));
    let (d1, a1, el) = (cpu_ticks(pid), cpu_ticks(agent_pid), t0.elapsed());
    let hz = ticks_per_sec();
    let daemon_cpu = (d1 - d0) as f64 / hz / el.as_secs_f64() * 100.0;
    let agent_cpu = (a1 - a0) as f64 / hz / el.as_secs_f64() * 100.0;
    let rss_full = rss_mb(pid);
    let agent_rss = rss_mb(agent_pid);
    let res = 100.0 / hz / el.as_secs_f64();

    println!(
        "daemon bench: {SESSIONS} idle sessions (PTY backend with the supervisor, fake agent sleep:0), {secs} s window"
    );
    println!("  daemon RSS, no sessions (baseline): {rss_empty:.1} MB");
    println!(
        "  daemon RSS, {SESSIONS} sessions:           {rss_full:.1} MB  (x{:.2} of baseline; goal < 30 MB: {})",
        rss_full / rss_empty.max(0.001),
        if rss_full < 30.0 { "met" } else { "MISSED" }
    );
    println!("  one idle fake agent RSS (python):   {agent_rss:.1} MB");
    println!(
        "  daemon CPU over {secs} s:              {daemon_cpu:.4}% of a core ({} ticks; resolution {res:.4}%; goal < 0.1%: {})",
        d1 - d0,
        if daemon_cpu < 0.1 { "met" } else { "MISSED" }
    );
    println!("  one idle fake agent CPU (baseline): {agent_cpu:.4}% of a core");
    println!(
        "  status round trip: median {:?}, p99 {:?} (200 requests)",
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100]
    );
}
