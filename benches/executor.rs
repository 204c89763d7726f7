//! Executor throughput: 1000 delegations of `/bin/true` at parallelism 4 through mpm's executor
//! against `xargs -P4` over the same commands, in one run. Goal: at most 1.2x xargs' wall time.
//!
//! Run: `cargo bench --bench executor` (optionally `-- ROUNDS N P PARALLELISM`). Prints each round and the
//! median ratio.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mpm::config::{AgentConfig, Config, SessionExitPolicy};
use mpm::events::{Bus, Context, Detection, TextSource};
use mpm::executor::Executor;

fn executor_round(n: usize, p: usize, dir: &std::path::Path) -> Duration {
    let mut cfg = Config::default();
    cfg.executor.max_parallel = p;
    cfg.executor.queue_capacity = n;
    cfg.executor.rate_per_minute = 0;
    cfg.agents.insert(
        "true".into(),
        AgentConfig {
            argv: vec!["/bin/true".into(), "{task}".into()],
            ..AgentConfig::default()
        },
    );
    let out = dir.join(format!("run-{}", mpm::events::new_id()));
    let bus = Bus::new(Context::new());
    let start = Instant::now();
    let handle = Executor::start(&cfg, bus, out).expect("executor");
    for i in 0..n {
        handle.submit(&Detection::delegation(
            "true",
            &i.to_string(),
            "bench",
            TextSource::Text,
        ));
    }
    let summaries = handle.shutdown(SessionExitPolicy::Wait);
    let took = start.elapsed();
    let ok = summaries
        .iter()
        .filter(|s| s.status.as_str() == "success")
        .count();
    assert_eq!(ok, n, "every delegation succeeds");
    took
}

fn xargs_round(n: usize, p: usize) -> Duration {
    let input: String = (0..n).map(|i| format!("{i}\n")).collect();
    let start = Instant::now();
    let mut child = Command::new("xargs")
        .args([format!("-P{p}").as_str(), "-n1", "/bin/true"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("xargs");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input.as_bytes()).expect("write");
    }
    let status = child.wait().expect("wait");
    assert!(status.success());
    start.elapsed()
}

/// CPU seconds (user + system) used so far by this process and by its reaped children.
fn cpu_seconds() -> f64 {
    let secs = |who| {
        // SAFETY: getrusage fills a plain struct we own.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut ru) };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    };
    secs(libc::RUSAGE_SELF) + secs(libc::RUSAGE_CHILDREN)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --all-targets` runs bench binaries without `--bench`: a quick smoke run then.
    let smoke = !args.iter().any(|a| a == "--bench");
    let rounds = args
        .iter()
        .position(|a| a == "ROUNDS")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(if smoke { 1 } else { 5usize });
    let n = if smoke { 50 } else { 1000 };
    // Parallelism (default 4, the goal's); `P 1` shows per-delegation latency.
    let p = args
        .iter()
        .position(|a| a == "P")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(4usize);
    let dir = tempfile::tempdir().expect("tempdir");
    // Warm-up: page cache, binaries.
    let _ = xargs_round(50, p);
    let _ = executor_round(50, p, dir.path());
    let (mut ex, mut xa, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut exc, mut xac) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        let c0 = cpu_seconds();
        let x = xargs_round(n, p).as_secs_f64();
        let c1 = cpu_seconds();
        let e = executor_round(n, p, dir.path()).as_secs_f64();
        let c2 = cpu_seconds();
        println!(
            "round {r}: executor {e:.3}s (cpu {:.3}s)  xargs -P{p} {x:.3}s (cpu {:.3}s)  ratio {:.2}",
            c2 - c1,
            c1 - c0,
            e / x
        );
        ex.push(e);
        xa.push(x);
        ratios.push(e / x);
        exc.push(c2 - c1);
        xac.push(c1 - c0);
    }
    println!(
        "cpu (self + children, user + sys): executor median {:.3}s, xargs median {:.3}s",
        median(exc),
        median(xac)
    );
    println!(
        "executor: {n} x /bin/true at parallelism {p}: median {:.3}s ({:.0} delegations/s)",
        median(ex.clone()),
        n as f64 / median(ex)
    );
    println!("xargs -P{p} -n1 /bin/true: median {:.3}s", median(xa));
    println!(
        "median ratio executor/xargs: {:.2} (goal <= 1.20)",
        median(ratios)
    );
}
