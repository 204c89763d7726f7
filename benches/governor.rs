//! Governor benchmark: the cost of one tree sample (mpm's `TreeTracker`: sysinfo's targeted
//! refresh plus the children files) against full refreshes (sysinfo all processes, `refresh_all`,
//! mpm's full /proc scan) and against `ps` run once per sample, and the sampler thread's CPU use at
//! a 1 s interval over a 20-process tree.
//!
//! Run: `cargo bench --bench governor` (`MPM_BENCH_SECS` sets the sampler phase, default 20 s).

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mpm::config::LimitsConfig;
use mpm::events::{Bus, Context};
use mpm::governor::{
    Governor, resolve_limits,
    tracker::{Probe, TreeTracker},
};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// The 20-process tree: `sh` plus 19 `sleep`s, in its own session; killed on drop.
struct Tree(std::process::Child);

impl Drop for Tree {
    fn drop(&mut self) {
        mpm::process::stop_tree(self.0.id() as i32, Duration::from_millis(200));
        let _ = self.0.wait();
    }
}

fn spawn_tree(n: usize) -> Tree {
    let script = format!("for i in $(seq {}); do sleep 100000 & done; wait", n - 1);
    // Spawned as mpm spawns its trees: tagged, registered, this process their subreaper.
    let tag = mpm::process::registry::new_tag();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script])
        .env(
            mpm::process::registry::TREE_VAR,
            mpm::process::registry::env_value(&tag),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let tree = Tree(cmd.spawn().expect("spawn sh"));
    mpm::process::registry::register(tree.0.id() as i32, &tag);
    let deadline = Instant::now() + Duration::from_secs(10);
    while mpm::process::tree_members(tree.0.id() as i32).len() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    tree
}

/// Mean CPU time of this thread per run of `f` over `iters` runs (after 3 warm-up runs), and
/// the mean wall time. CPU time is what the sampler costs; wall time also counts waiting for a
/// core on a busy machine.
fn time<F: FnMut()>(iters: u32, mut f: F) -> (Duration, Duration) {
    for _ in 0..3 {
        f();
    }
    let (c, t) = (thread_cpu(), Instant::now());
    for _ in 0..iters {
        f();
    }
    ((thread_cpu() - c) / iters, t.elapsed() / iters)
}

/// This thread's exact CPU time (`getrusage(RUSAGE_THREAD)` is off by hundreds of µs here).
fn thread_cpu() -> Duration {
    // SAFETY: clock_gettime fills the zeroed struct we own.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn process_cpu() -> Duration {
    // SAFETY: getrusage fills the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU per run (the reaped `ps` child's, plus this thread's spawning and reading) and wall time
/// of `ps -o rss=,cputime= -s <sid>`: what a shell script sampling the tree would pay.
fn time_ps(iters: u32, sid: i32) -> (Duration, Duration) {
    let run = || {
        let out = Command::new("ps")
            .args(["-o", "rss=,cputime=", "-s", &sid.to_string()])
            .output()
            .expect("ps");
        std::hint::black_box(out.stdout.len());
    };
    run();
    let (c, k, t) = (thread_cpu(), children_cpu(), Instant::now());
    for _ in 0..iters {
        run();
    }
    (
        ((thread_cpu() - c) + (children_cpu() - k)) / iters,
        t.elapsed() / iters,
    )
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    const N: usize = 20;
    let tree = spawn_tree(N);
    let root = tree.0.id() as i32;
    let members = mpm::process::tree_members(root);
    let system_procs = mpm::process::all_processes().len();
    println!(
        "tree: {} processes (root {root}); {system_procs} processes on the machine",
        members.len()
    );
    assert_eq!(members.len(), N, "tree did not reach {N} processes");

    let iters = 300;
    let mut probe = Probe::new();
    let mut tracker = TreeTracker::new(root, 0);
    tracker.sample(&mut probe);
    let mpm_targeted = time(iters, || {
        std::hint::black_box(tracker.sample(&mut probe));
    });
    let mut idle = TreeTracker::new(root, 0).skip_idle(true);
    idle.sample(&mut probe);
    let mpm_idle = time(iters, || {
        std::hint::black_box(idle.sample(&mut probe));
    });
    let mut rescanning = TreeTracker::new(root, 1);
    let mpm_rescan = time(iters, || {
        std::hint::black_box(rescanning.sample(&mut probe));
    });
    let mpm_scan = time(iters, || {
        std::hint::black_box(mpm::process::tree_members(root));
    });
    let rescan_own = time(iters, || {
        std::hint::black_box(mpm::process::rescan_snapshot(&[root]));
    });
    // The children walk is skipped while no pid was allocated: count how often it ran.
    let reads0 = tracker.children_reads();
    let walked = time(iters, || {
        std::hint::black_box(tracker.sample(&mut probe));
    });
    let walks = (tracker.children_reads() - reads0) as f64 / (N as f64 * (iters + 3) as f64);

    let pids: Vec<Pid> = members.iter().map(|&p| Pid::from_u32(p as u32)).collect();
    // As mpm asks: memory and CPU, not the thread list.
    let kind = ProcessRefreshKind::nothing()
        .with_memory()
        .with_cpu()
        .without_tasks();
    let mut sys = System::new();
    sys.refresh_processes_specifics(ProcessesToUpdate::Some(&pids), true, kind);
    let sys_targeted = time(iters, || {
        std::hint::black_box(sys.refresh_processes_specifics(
            ProcessesToUpdate::Some(&pids),
            true,
            kind,
        ));
    });
    let mut sys_all = System::new();
    let sys_full = time(iters / 3, || {
        std::hint::black_box(sys_all.refresh_processes_specifics(
            ProcessesToUpdate::All,
            true,
            kind,
        ));
    });
    let mut sys_every = System::new_all();
    let sys_refresh_all = time(iters / 10, || sys_every.refresh_all());
    let ps = time_ps(iters / 10, root);

    println!("\none refresh of the tree, CPU time (wall time) per refresh, mean of {iters} runs:");
    let rows = [
        (
            "mpm TreeTracker (sysinfo targeted; children walk when pids moved)",
            mpm_targeted,
        ),
        (
            "mpm TreeTracker, idle members every 4th sample (skip_idle)",
            mpm_idle,
        ),
        (
            "sysinfo targeted alone (Some(20 pids), memory+cpu)",
            sys_targeted,
        ),
        (
            "mpm TreeTracker + rescan (own children) + children walk",
            mpm_rescan,
        ),
        ("  the rescan alone (process::rescan_snapshot)", rescan_own),
        ("  TreeTracker again (hot)", walked),
        ("mpm full /proc scan (process::tree_members)", mpm_scan),
        ("sysinfo all processes (memory+cpu)", sys_full),
        ("sysinfo refresh_all", sys_refresh_all),
        ("ps -o rss=,cputime= -s SID (child + spawn)", ps),
    ];
    for (name, (cpu, wall)) in rows {
        println!("  {name:<60} {:>9.1} us  ({:>9.1} us)", us(cpu), us(wall));
    }
    println!(
        "  TreeTracker walked the children in {:.0}% of its last samples (skipped while no newborn process can be a member)",
        walks * 100.0
    );
    let r = |x: (Duration, Duration)| us(x.0) / us(mpm_targeted.0);
    println!(
        "  CPU ratios vs mpm TreeTracker: ps {:.1}x, mpm full scan {:.1}x, \
         sysinfo all processes {:.1}x, sysinfo refresh_all {:.1}x",
        r(ps),
        r(mpm_scan),
        r(sys_full),
        r(sys_refresh_all),
    );

    // The sampler thread at the default 1 s interval. The Systems above keep `stat` files open
    // out of the process's budget (`KEEP_OPEN_MAX`): free them, as a daemon has no such others.
    drop((sys, sys_all, sys_every, probe));
    // `cargo test --all-targets` runs bench binaries without `--bench`: a quick smoke run then.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let secs: u64 = std::env::var("MPM_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if smoke { 2 } else { 20 });
    let cfg = LimitsConfig {
        cgroup: "off".into(),
        ..LimitsConfig::default()
    };
    // The same with a 1 s CPU window: every member is refreshed at every tick (as for a tree
    // whose members all run), since an idle member's late CPU could distort so short a window.
    let mut every = cfg.clone();
    every.cpu.window_secs = 1;
    let baseline_pct = sys_full.0.as_secs_f64() * 100.0; // one all-process refresh per second
    let ps_pct = ps.0.as_secs_f64() * 100.0; // one `ps` per second
    for (what, cfg) in [
        ("default limits (idle members every 4th tick)", &cfg),
        ("cpu.window_secs 1 (every member every tick)", &every),
    ] {
        let gov = Governor::start(cfg, Duration::from_secs(1)).expect("governor");
        let bus = Bus::new(Context::new());
        let h = gov.watch(root as u32, resolve_limits(cfg, None), bus, None);
        // Start measuring after the first ticks (the first does the initial full scan, the
        // second finds every member idle).
        while gov.stats().ticks < 2 {
            std::thread::sleep(Duration::from_millis(50));
        }
        let (s0, p0, t0) = (gov.stats(), process_cpu(), Instant::now());
        std::thread::sleep(Duration::from_secs(secs));
        let (s1, p1, wall) = (gov.stats(), process_cpu(), t0.elapsed());
        drop(h);
        drop(gov);
        let thread_cpu = s1.cpu - s0.cpu;
        let ticks = s1.ticks - s0.ticks;
        let pct = thread_cpu.as_secs_f64() / wall.as_secs_f64() * 100.0;
        let proc_pct = (p1 - p0).as_secs_f64() / wall.as_secs_f64() * 100.0;
        let per_tick = thread_cpu / ticks.max(1) as u32;
        println!(
            "\nsampler thread over {:.1} s at 1 s interval, {N}-process tree of sleeps, {what}, {ticks} ticks:",
            wall.as_secs_f64()
        );
        println!(
            "  thread CPU {:.3} ms = {pct:.4}% of a core (goal < 0.1%); {:.1} us per tick",
            thread_cpu.as_secs_f64() * 1e3,
            us(per_tick)
        );
        println!(
            "  whole bench process meanwhile (getrusage RUSAGE_SELF): {proc_pct:.4}% of a core"
        );
        println!(
            "  baseline: a sysinfo all-process refresh every second would cost {baseline_pct:.4}% of a core ({:.1}x)",
            baseline_pct / pct.max(1e-9)
        );
        println!(
            "  baseline: `ps` once a second would cost {ps_pct:.4}% of a core ({:.1}x)",
            ps_pct / pct.max(1e-9)
        );
    }
}
