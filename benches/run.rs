//! `cargo bench --bench run`: `mpm run` in both hosts against `script` (util-linux) in the same run,
//! all under an outer PTY that this program drains, as a terminal would. The two hosts: in-process
//! (`mpm run --no-daemon`) and through a daemon (`mpm daemon` started by this program, its socket in
//! a temporary `XDG_RUNTIME_DIR`; `mpm run` is then its client, and the relay is client ⇄ socket ⇄
//! daemon ⇄ agent PTY).
//!
//! 1. Throughput: `cat` of a 256 MiB file (in /dev/shm) through each host vs `script -qec`,
//!    with a direct `cat` on the outer PTY as the raw-drain reference; interleaved rounds, best
//!    and median wall time, and the CPU time of relay + cat (wait4; the daemon's own CPU is read
//!    from /proc and added), which a busy machine disturbs far less than wall time.
//! 2. Keystroke echo latency: one byte typed into the outer PTY until its echo (made by the inner
//!    PTY's line discipline under `cat`) comes back out; p50/p99 over 2000 keystrokes (`MPM_BENCH_KEYS`),
//!    each host and script in turn, in interleaved blocks so that a burst of foreign load hits all.
//! 3. Idle CPU: `mpm run --no-daemon -- sleep S` (S = 10, scaled to 60 s), user+system time of mpm
//!    and its children from `wait4`, minus the fixed cost of `mpm run --no-daemon -- true`.
//!
//! Environment knobs: `MPM_BENCH_MIB` (default 256), `MPM_BENCH_SLEEP` (default 10),
//! `MPM_BENCH_KEYS` (2000), `MPM_BENCH_ROUNDS` (3), `MPM_BENCH_ONLY` (`throughput`, `latency` or
//! `idle`: one part only).

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{OFlag, open};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::stat::Mode;

fn mpm() -> &'static str {
    env!("CARGO_BIN_EXE_mpm")
}

/// A command running as session leader on a fresh outer PTY (120x40).
struct Outer {
    master: OwnedFd,
    child: Child,
}

fn spawn_outer(program: &str, args: &[&str], env: &[(String, String)]) -> Outer {
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
    let ws = libc::winsize {
        ws_row: 40,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(env.iter().cloned())
        .env_remove("MPM_SOCKET")
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave.try_clone().unwrap()));
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY as _, 0);
            Ok(())
        });
    }
    let child = cmd.spawn().expect("spawn");
    drop(cmd);
    drop(slave);
    Outer { master, child }
}

/// Read the outer master until EIO; returns bytes read.
fn drain(master: &OwnedFd) -> u64 {
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        match nix::unistd::read(master.as_fd(), &mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n as u64,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return total,
        }
    }
}

fn env_vars(dir: &Path) -> Vec<(String, String)> {
    vec![
        (
            "XDG_STATE_HOME".into(),
            dir.join("state").display().to_string(),
        ),
        (
            "XDG_CONFIG_HOME".into(),
            dir.join("config").display().to_string(),
        ),
        // This run's own daemon socket (`$XDG_RUNTIME_DIR/mpm/mpm.sock`): never a user's daemon.
        (
            "XDG_RUNTIME_DIR".into(),
            dir.join("run").display().to_string(),
        ),
        ("TERM".into(), "xterm-256color".into()),
    ]
}

/// Wall seconds and CPU seconds (the relay plus its reaped children, from wait4) of one run.
/// `daemon`: the daemon hosting this run, whose CPU (its own and its reaped agent's) is added.
fn throughput(
    label: &str,
    program: &str,
    args: &[&str],
    env: &[(String, String)],
    daemon: Option<&Daemon>,
) -> (f64, f64, u64) {
    let daemon_cpu0 = daemon.map_or(0.0, Daemon::cpu);
    let start = Instant::now();
    let o = spawn_outer(program, args, env);
    let pid = o.child.id() as i32;
    let n = drain(&o.master);
    let mut status = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let secs = start.elapsed().as_secs_f64();
    let daemon_cpu = match daemon {
        // The agent is reaped by the daemon a moment after the client returns.
        Some(d) => {
            std::thread::sleep(Duration::from_millis(300));
            d.cpu() - daemon_cpu0
        }
        None => 0.0,
    };
    let cpu = tv(ru.ru_utime) + tv(ru.ru_stime) + daemon_cpu;
    eprintln!(
        "  {label:<10} {:>7.1} MiB/s ({n} bytes, {secs:.2} s wall, {cpu:.2} s CPU)",
        n as f64 / secs / (1 << 20) as f64
    );
    (secs, cpu, n)
}

fn tv(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Type one byte at a time into each outer PTY in turn and time its echo: key `i` goes to path
/// `i % paths`, so every path sees the same moments of foreign load. Returns (p50, p99) per path.
fn latency(paths: &[(&str, Vec<&str>)], env: &[(String, String)], n: usize) -> Vec<(f64, f64)> {
    let mut outers: Vec<Outer> = paths
        .iter()
        .map(|(program, args)| spawn_outer(program, args, env))
        .collect();
    let mut buf = [0u8; 4096];
    for o in &outers {
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains("READY") {
            let k = nix::unistd::read(o.master.as_fd(), &mut buf).unwrap();
            assert!(k > 0, "the session ended before READY");
            seen.extend_from_slice(&buf[..k]);
        }
    }
    let mut samples = vec![Vec::with_capacity(n); outers.len()];
    for i in 0..n {
        for (o, s) in outers.iter().zip(samples.iter_mut()) {
            // Stay under the canonical line limit (4095): end the line now and then, and wait
            // for cat's copy of it too.
            if i % 1000 == 999 {
                nix::unistd::write(o.master.as_fd(), b"\r").unwrap();
                let mut got = 0;
                while got < 1002 {
                    got += nix::unistd::read(o.master.as_fd(), &mut buf).unwrap();
                }
            }
            let t = Instant::now();
            nix::unistd::write(o.master.as_fd(), b"a").unwrap();
            let mut got = false;
            while !got {
                let k = nix::unistd::read(o.master.as_fd(), &mut buf).unwrap();
                got = buf[..k].contains(&b'a');
            }
            s.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    for o in &mut outers {
        let _ = o.child.kill();
        let _ = o.child.wait();
    }
    samples
        .into_iter()
        .map(|mut s| {
            s.sort_by(|a, b| a.partial_cmp(b).unwrap());
            (percentile(&s, 0.5), percentile(&s, 0.99))
        })
        .collect()
}

/// `mpm daemon` on a socket in this run's own `XDG_RUNTIME_DIR` (so `mpm run` with the same
/// environment is its client); stopped (SIGTERM, then SIGKILL) when dropped.
struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(env: &[(String, String)], runtime: &Path) -> Daemon {
        let mut cmd = Command::new(mpm());
        cmd.arg("daemon")
            .envs(env.iter().cloned())
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // In its own session, as systemd starts it (and so in its own scheduler autogroup, like
        // `script` and the in-process `mpm run` under their outer PTYs).
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start mpm daemon");
        let d = Daemon { child };
        let sock = runtime.join("mpm/mpm.sock");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            assert!(Instant::now() < deadline, "the daemon did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    /// The daemon's CPU so far, its reaped children's included (utime, stime, cutime, cstime
    /// of /proc/<pid>/stat), in seconds.
    fn cpu(&self) -> f64 {
        let s =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let Some((_, rest)) = s.rsplit_once(')') else {
            return 0.0;
        };
        let f: Vec<u64> = rest
            .split_whitespace()
            .skip(11)
            .take(4)
            .filter_map(|v| v.parse().ok())
            .collect();
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as f64;
        f.iter().sum::<u64>() as f64 / ticks
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// CPU seconds (user+system) of a command and its reaped children, from wait4.
fn cpu_of(program: &str, args: &[&str], env: &[(String, String)]) -> (f64, f64) {
    let start = Instant::now();
    let o = spawn_outer(program, args, env);
    let pid = o.child.id() as i32;
    let reader = {
        let m = o.master.try_clone().unwrap();
        std::thread::spawn(move || drain(&m))
    };
    let mut status = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall = start.elapsed().as_secs_f64();
    drop(o.master);
    let _ = reader.join();
    (tv(ru.ru_utime) + tv(ru.ru_stime), wall)
}

/// CPU time of every thread of `pid` so far, in ns (`/proc/<pid>/task/*/schedstat`, nanosecond
/// resolution where `/proc/<pid>/stat` counts 10 ms ticks).
fn threads_cpu_ns(pid: i32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Steady-state CPU of `mpm run -- sleep S`: mpm's own threads, from 2 s after the start (start-up
/// done) to 1 s before the end, so neither start-up nor exit is in it. (fraction of a core, window s)
fn steady_cpu(args: &[&str], env: &[(String, String)], secs: u64) -> (f64, f64) {
    let o = spawn_outer(mpm(), args, env);
    let pid = o.child.id() as i32;
    let reader = {
        let m = o.master.try_clone().unwrap();
        std::thread::spawn(move || drain(&m))
    };
    std::thread::sleep(Duration::from_secs(2));
    let (c0, t0) = (threads_cpu_ns(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(secs.saturating_sub(3)));
    let (c1, window) = (threads_cpu_ns(pid), t0.elapsed().as_secs_f64());
    let mut status = 0;
    unsafe { libc::waitpid(pid, &mut status, 0) };
    drop(o.master);
    let _ = reader.join();
    (c1.saturating_sub(c0) as f64 / 1e9 / window, window)
}

fn main() {
    // `cargo test --all-targets` runs this binary without `--bench`: a quick smoke run then, so
    // the benchmark keeps working without costing the test suite minutes.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let knob = |name: &str, full: u64, quick: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if smoke { quick } else { full })
    };
    let mib = knob("MPM_BENCH_MIB", 256, 2) as usize;
    let sleep_s = knob("MPM_BENCH_SLEEP", 10, 1);
    let keys = knob("MPM_BENCH_KEYS", 2000, 50) as usize;
    let rounds = knob("MPM_BENCH_ROUNDS", 3, 1) as usize;
    let only = std::env::var("MPM_BENCH_ONLY").unwrap_or_default();
    let part = |name: &str| only.is_empty() || only == name;
    let base = if Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    let dir = tempfile::Builder::new()
        .prefix("mpm-bench")
        .tempdir_in(base)
        .unwrap();
    let env = env_vars(dir.path());
    let runtime = dir.path().join("run");
    std::fs::create_dir_all(&runtime).unwrap();
    let mut daemon = Daemon::start(&env, &runtime);
    println!(
        "daemon: pid {} (socket in {})",
        daemon.child.id(),
        runtime.display()
    );

    if part("throughput") {
        let data = dir.path().join("data.bin");
        {
            // Pseudo-random bytes (xorshift), newlines included: the PTY's ONLCR applies to all.
            let mut f = std::io::BufWriter::new(std::fs::File::create(&data).unwrap());
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
            let mut block = vec![0u8; 1 << 20];
            for _ in 0..mib {
                for b in block.chunks_mut(8) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
                }
                f.write_all(&block).unwrap();
            }
        }
        let data_s = data.display().to_string();
        let script_cmd = format!("cat {data_s}");

        println!("== throughput: {mib} MiB through an outer PTY ({rounds} interleaved rounds) ==");
        let (mut raw, mut inproc, mut hosted, mut via_script) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut incomplete = 0;
        for _ in 0..rounds {
            let r = throughput("raw cat", "cat", &[&data_s], &env, None);
            let expected = r.2;
            raw.push((r.0, r.1));
            let r = throughput(
                "script",
                "script",
                &["-qec", &script_cmd, "/dev/null"],
                &env,
                None,
            );
            via_script.push((r.0, r.1));
            let r = throughput(
                "daemon",
                mpm(),
                &["run", "--", "cat", &data_s],
                &env,
                Some(&daemon),
            );
            if r.2 >= expected {
                hosted.push((r.0, r.1));
            } else {
                // Bytes missing: the daemon dropped its terminal client ("too_slow": it fell a
                // whole backlog behind; the session goes on without it), or output made before
                // the client attached came as a redraw of the screen instead. Not a throughput
                // figure: counted, and the daemon restarted so that an orphaned session costs the
                // next runs nothing.
                println!(
                    "  daemon     INCOMPLETE: {} of {expected} bytes (client dropped, or early output redrawn)",
                    r.2
                );
                incomplete += 1;
                drop(daemon);
                daemon = Daemon::start(&env, &runtime);
            }
            let r = throughput(
                "in-process",
                mpm(),
                &["run", "--no-daemon", "--", "cat", &data_s],
                &env,
                None,
            );
            inproc.push((r.0, r.1));
        }
        let mb = mib as f64;
        let wall = |v: &[(f64, f64)]| v.iter().map(|x| x.0).collect::<Vec<_>>();
        let cpu = |v: &[(f64, f64)]| median(v.iter().map(|x| x.1).collect());
        let (s_best, s_med) = (min(&wall(&via_script)), median(wall(&via_script)));
        println!(
            "raw cat    : best {:>7.1} MiB/s, CPU {:.2} s",
            mb / min(&wall(&raw)),
            cpu(&raw)
        );
        println!(
            "script     : best {:>7.1} MiB/s, median {:>7.1} MiB/s, CPU {:.2} s (script + cat)",
            mb / s_best,
            mb / s_med,
            cpu(&via_script)
        );
        println!("daemon runs dropped by the daemon (incomplete): {incomplete} of {rounds}");
        for (label, v, what) in [
            ("daemon", &hosted, "client + daemon + cat"),
            ("in-process", &inproc, "mpm + cat"),
        ] {
            if v.is_empty() {
                println!("{label:<11}: no complete run");
                continue;
            }
            let (best, med) = (min(&wall(v)), median(wall(v)));
            println!(
                "{label:<11}: best {:>7.1} MiB/s, median {:>7.1} MiB/s, CPU {:.2} s ({what}); vs script: best {:.3}, median {:.3}, CPU {:.3}",
                mb / best,
                mb / med,
                cpu(v),
                s_best / best,
                s_med / med,
                cpu(v) / cpu(&via_script),
            );
        }
        println!("(goals: daemon >= 0.8x script, in-process >= 0.95x script)");
    }

    if part("latency") {
        println!("== keystroke echo latency ({keys} keys per path, interleaved) ==");
        let ready_cat = "echo READY; exec cat";
        let script_cmd = format!("sh -c '{ready_cat}'");
        let paths: Vec<(&str, Vec<&str>)> = vec![
            ("script", vec!["-qec", &script_cmd, "/dev/null"]),
            (mpm(), vec!["run", "--", "sh", "-c", ready_cat]),
            (
                mpm(),
                vec!["run", "--no-daemon", "--", "sh", "-c", ready_cat],
            ),
        ];
        let got = latency(&paths, &env, keys);
        let (sp50, sp99) = got[0];
        println!("script     : p50 {sp50:>7.1} us  p99 {sp99:>7.1} us");
        for (label, (p50, p99)) in [("daemon", got[1]), ("in-process", got[2])] {
            println!(
                "{label:<11}: p50 {p50:>7.1} us  p99 {p99:>7.1} us  (vs script: p50 {:+.1} us, p99 {:+.1} us; ratio p50 {:.2}, p99 {:.2})",
                p50 - sp50,
                p99 - sp99,
                p50 / sp50,
                p99 / sp99
            );
        }
        println!("(goal: daemon p99 within 100 us of script's)");
    }
    drop(daemon);

    if part("idle") {
        println!("== idle CPU: mpm run --no-daemon -- sleep {sleep_s} (scaled to 60 s) ==");
        let (cpu_true, _) = cpu_of(mpm(), &["run", "--no-daemon", "--", "true"], &env);
        let sleep_arg = sleep_s.to_string();
        let sleep_args = ["run", "--no-daemon", "--", "sleep", &sleep_arg];
        let (cpu_sleep, wall) = cpu_of(mpm(), &sleep_args, &env);
        let idle = (cpu_sleep - cpu_true).max(0.0);
        println!(
            "mpm run -- true      : {:.4} s CPU (start-up and exit)",
            cpu_true
        );
        println!(
            "mpm run -- sleep {sleep_s}  : {:.4} s CPU over {wall:.2} s",
            cpu_sleep
        );
        println!(
            "difference, scaled: {:.5} s CPU per 60 s = {:.4}% of a core (start-up variance dominates it: read the steady state); whole run incl. start-up: {:.4}% of a core over 60 s",
            idle / sleep_s as f64 * 60.0,
            idle / sleep_s as f64 * 100.0,
            (cpu_true + idle / sleep_s as f64 * 60.0) / 60.0 * 100.0
        );
        if sleep_s >= 5 {
            // The difference above subtracts two start-ups (~50 ms each, mostly compiling the
            // pattern engine) and swings with them; this one reads the idle threads alone.
            let (frac, window) = steady_cpu(&sleep_args, &env, sleep_s);
            println!(
                "steady state (mpm's threads, {window:.1} s window after start-up): {:.4}% of a core (goal < 0.1%)",
                frac * 100.0
            );
        }
    }
}
