//! Executor throughput: 1000 delegations of `/bin/true` at parallelism 4 through mpm's executor
//! against `xargs -P4` over the same commands, in one run. Goal: at most 1.2x xargs' wall time.
//!
//! Run: `cargo bench --bench executor` (optionally `-- ROUNDS N`). Prints each round and the
//! median ratio.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mpm::config::{AgentConfig, Config, SessionExitPolicy};
use mpm::events::{Bus, Context, Detection, TextSource};
use mpm::executor::Executor;

fn executor_round(n: usize, dir: &std::path::Path) -> Duration {
    let mut cfg = Config::default();
    cfg.executor.max_parallel = 4;
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
        handle.submit(&Detection {
            category: "delegation".into(),
            pattern: "bench".into(),
            text: String::new(),
            source: TextSource::Text,
            agent: Some("true".into()),
            task: Some(i.to_string()),
            ticket_type: None,
            title: None,
            priority: None,
            handled_by_agent: false,
        });
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

fn xargs_round(n: usize) -> Duration {
    let input: String = (0..n).map(|i| format!("{i}\n")).collect();
    let start = Instant::now();
    let mut child = Command::new("xargs")
        .args(["-P4", "-n1", "/bin/true"])
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds = args
        .iter()
        .position(|a| a == "ROUNDS")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(5usize);
    let n = 1000;
    let dir = tempfile::tempdir().expect("tempdir");
    // Warm-up: page cache, binaries.
    let _ = xargs_round(50);
    let _ = executor_round(50, dir.path());
    let (mut ex, mut xa, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        let x = xargs_round(n).as_secs_f64();
        let e = executor_round(n, dir.path()).as_secs_f64();
        println!(
            "round {r}: executor {e:.3}s  xargs -P4 {x:.3}s  ratio {:.2}",
            e / x
        );
        ex.push(e);
        xa.push(x);
        ratios.push(e / x);
    }
    println!(
        "executor: {n} x /bin/true at parallelism 4: median {:.3}s ({:.0} delegations/s)",
        median(ex.clone()),
        n as f64 / median(ex)
    );
    println!("xargs -P4 -n1 /bin/true: median {:.3}s", median(xa));
    println!(
        "median ratio executor/xargs: {:.2} (goal <= 1.20)",
        median(ratios)
    );
}
