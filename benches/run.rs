//! `cargo bench --bench run`: `mpm run` against `script` (util-linux) in the same run, both under an
//! outer PTY that this program drains, as a terminal would.
//!
//! 1. Throughput: `cat` of a 256 MiB file (in /dev/shm) through `mpm run --` vs `script -qec`,
//!    with a direct `cat` on the outer PTY as the raw-drain reference. Median of 3, interleaved.
//! 2. Keystroke echo latency: one byte typed into the outer PTY until its echo (made by the inner
//!    PTY's line discipline under `cat`) comes back out; p50/p99 over 2000 keystrokes (`MPM_BENCH_KEYS`).
//! 3. Idle CPU: `mpm run -- sleep S` (S = 10, scaled to 60 s), user+system time of mpm and its
//!    children from `wait4`, minus the fixed cost of `mpm run -- true`.
//!
//! Environment knobs: `MPM_BENCH_MIB` (default 256), `MPM_BENCH_SLEEP` (default 10).

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

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
        ("TERM".into(), "xterm-256color".into()),
    ]
}

fn throughput(label: &str, program: &str, args: &[&str], env: &[(String, String)]) -> (f64, u64) {
    let start = Instant::now();
    let mut o = spawn_outer(program, args, env);
    let n = drain(&o.master);
    let _ = o.child.wait();
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "  {label:<8} {:>7.1} MiB/s ({n} bytes, {secs:.2} s)",
        n as f64 / secs / (1 << 20) as f64
    );
    (secs, n)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Type one byte at a time into the outer PTY and time its echo.
fn latency(program: &str, args: &[&str], env: &[(String, String)], n: usize) -> (f64, f64) {
    let mut o = spawn_outer(program, args, env);
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("READY") {
        let k = nix::unistd::read(o.master.as_fd(), &mut buf).unwrap();
        seen.extend_from_slice(&buf[..k]);
    }
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        // Stay under the canonical line limit (4095): end the line now and then, and wait for
        // cat's copy of it too.
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
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let _ = o.child.kill();
    let _ = o.child.wait();
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
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
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (tv(ru.ru_utime) + tv(ru.ru_stime), wall)
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
    let data = dir.path().join("data.bin");
    {
        // Pseudo-random bytes (xorshift), newlines included: the PTY's ONLCR applies to all three.
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

    println!("== throughput: {mib} MiB through an outer PTY (median of 3) ==");
    let (mut raw, mut via_mpm, mut via_script) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        raw.push(throughput("raw cat", "cat", &[&data_s], &env).0);
        via_mpm.push(throughput("mpm", mpm(), &["run", "--", "cat", &data_s], &env).0);
        via_script.push(
            throughput(
                "script",
                "script",
                &["-qec", &script_cmd, "/dev/null"],
                &env,
            )
            .0,
        );
    }
    let mb = mib as f64;
    let (r, m, s) = (median(raw), median(via_mpm), median(via_script));
    println!("raw cat : {:>7.1} MiB/s", mb / r);
    println!("mpm     : {:>7.1} MiB/s", mb / m);
    println!("script  : {:>7.1} MiB/s", mb / s);
    println!(
        "mpm/script throughput ratio: {:.3} (goal >= 0.95); mpm/raw: {:.3}",
        s / m,
        r / m
    );

    println!("== keystroke echo latency ({keys} keys) ==");
    let ready_cat = "echo READY; exec cat";
    let (mp50, mp99) = latency(mpm(), &["run", "--", "sh", "-c", ready_cat], &env, keys);
    let (sp50, sp99) = latency(
        "script",
        &["-qec", &format!("sh -c '{ready_cat}'"), "/dev/null"],
        &env,
        keys,
    );
    println!("mpm     : p50 {mp50:>6.1} us  p99 {mp99:>6.1} us");
    println!("script  : p50 {sp50:>6.1} us  p99 {sp99:>6.1} us");
    println!("mpm/script p50 ratio: {:.2}", mp50 / sp50);

    println!("== idle CPU: mpm run -- sleep {sleep_s} (scaled to 60 s) ==");
    let (cpu_true, _) = cpu_of(mpm(), &["run", "--", "true"], &env);
    let (cpu_sleep, wall) = cpu_of(mpm(), &["run", "--", "sleep", &sleep_s.to_string()], &env);
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
        "idle cost: {:.5} s CPU per 60 s = {:.4}% of a core (goal < 0.1%); whole run incl. start-up: {:.4}% of a core over 60 s",
        idle / sleep_s as f64 * 60.0,
        idle / sleep_s as f64 * 100.0,
        (cpu_true + idle / sleep_s as f64 * 60.0) / 60.0 * 100.0
    );
}
