//! The `nats` backend against the local one, in one run: a real nats-server (JetStream, temp
//! folder, loopback) and two real `mpm worker` processes with `--max-parallel 2` each.
//!
//! 1. Throughput: N (default 1000) delegations of `/bin/true`, 4 at once, through NATS (2 workers x 2)
//!    vs the local backend (`max_parallel: 4`); overhead per delegation = (nats - local) / N.
//! 2. Latency, one delegation at a time (S samples, default 200): from `submit` to the sub-agent's
//!    exec, as the sub-agent itself reads the clock (`sh -c 'date +%s%N'`): an upper bound on
//!    publish-to-exec (submit → publish is in-process). Same measure on the local backend as the
//!    baseline. Prints p50/p99 of both.
//!
//! Run: `cargo bench --bench nats` (optionally `-- N S`). Needs `nats-server` (apt install
//! nats-server); without it the bench says SKIPPED.

use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mpm::config::{AgentConfig, BackendKind, Config, SessionExitPolicy};
use mpm::events::{Bus, Context, Detection, Event, TextSource};
use mpm::executor::Executor;

struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.0.wait();
    }
}

fn nats_server() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn agents_json(latency_file: &Path) -> serde_json::Value {
    serde_json::json!({
        "true": {"argv": ["/bin/true", "{task}"]},
        "clock": {"argv": ["sh", "-c",
            format!("date +%s%N >> {}", latency_file.display()), "sh", "{task}"]},
    })
}

fn start_worker(dir: &Path, url: &str, name: &str, latency_file: &Path) -> Group {
    let cfg = dir.join(format!("{name}.yaml"));
    let body = serde_json::json!({"agents": agents_json(latency_file)});
    std::fs::write(&cfg, body.to_string()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mpm"))
        .args([
            "worker",
            "--nats",
            url,
            "--agents",
            "true,clock",
            "--max-parallel",
            "2",
        ])
        .args(["--name", name, "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(dir.join(name))
        .env("XDG_STATE_HOME", dir.join("xdg"))
        .env("XDG_CONFIG_HOME", dir.join("xdg"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("mpm worker");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("ready") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("worker ready");
    Group(child)
}

fn config(backend: BackendKind, url: &str, latency_file: &Path, n: usize) -> Config {
    let mut cfg = Config::default();
    cfg.executor.max_parallel = 4;
    cfg.executor.queue_capacity = n;
    cfg.executor.rate_per_minute = 0;
    cfg.executor.backend = backend;
    cfg.executor.nats.url = url.to_string();
    let agents: serde_json::Map<String, serde_json::Value> =
        serde_json::from_value(agents_json(latency_file)).unwrap();
    for (name, a) in agents {
        cfg.agents
            .insert(name, serde_json::from_value::<AgentConfig>(a).unwrap());
    }
    cfg
}

fn detection(agent: &str, task: String) -> Detection {
    Detection {
        category: "delegation".into(),
        pattern: "bench".into(),
        text: String::new(),
        source: TextSource::Text,
        agent: Some(agent.into()),
        task: Some(task),
        ticket_type: None,
        title: None,
        priority: None,
        handled_by_agent: false,
        is_final: true,
    }
}

fn throughput(cfg: &Config, dir: &Path, n: usize) -> Duration {
    let out = dir.join(format!("out-{}", mpm::events::new_id()));
    let start = Instant::now();
    let handle = Executor::start(cfg, Bus::new(Context::new()), out).expect("executor");
    for i in 0..n {
        handle.submit(&detection("true", i.to_string()));
    }
    let summaries = handle.shutdown(SessionExitPolicy::Wait);
    let took = start.elapsed();
    let ok = summaries
        .iter()
        .filter(|s| s.status.as_str() == "success")
        .count();
    assert_eq!(ok, n, "every delegation succeeds: {:?}", summaries.last());
    took
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Submit-to-exec latencies (ms), one delegation at a time.
fn latencies(cfg: &Config, dir: &Path, latency_file: &Path, samples: usize) -> Vec<f64> {
    let _ = std::fs::remove_file(latency_file);
    let bus = Bus::new(Context::new());
    let rx = bus.subscribe();
    let out = dir.join(format!("out-{}", mpm::events::new_id()));
    let handle = Executor::start(cfg, bus, out).expect("executor");
    let mut sent = Vec::with_capacity(samples);
    for i in 0..samples {
        sent.push(now_ns());
        handle.submit(&detection("clock", format!("sample {i}")));
        loop {
            let ev: Arc<Event> = rx.recv_timeout(Duration::from_secs(30)).expect("event");
            if ev.kind() == "delegation.finished" {
                break;
            }
        }
    }
    handle.shutdown(SessionExitPolicy::Wait);
    let text = std::fs::read_to_string(latency_file).unwrap();
    let execs: Vec<u128> = text.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(execs.len(), samples);
    let mut ms: Vec<f64> = sent
        .iter()
        .zip(&execs)
        .map(|(s, e)| (*e as f64 - *s as f64) / 1e6)
        .collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    ms
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(1000);
    let samples = args.get(1).copied().unwrap_or(200);
    let Some(bin) = nats_server() else {
        println!("SKIPPED: nats-server not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = Group(
        Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path().join("js"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("nats-server"),
    );
    let addr = format!("127.0.0.1:{port}");
    wait_for("nats-server", || {
        std::net::TcpStream::connect(&addr).is_ok()
    });
    let url = format!("nats://{addr}");
    let clock = dir.path().join("clock.txt");
    let _w1 = start_worker(dir.path(), &url, "w1", &clock);
    let _w2 = start_worker(dir.path(), &url, "w2", &clock);

    let local_cfg = config(BackendKind::Local, &url, &clock, n);
    let nats_cfg = config(BackendKind::Nats, &url, &clock, n);
    // Warm-up (connections, consumers, page cache).
    throughput(&nats_cfg, dir.path(), 20);
    throughput(&local_cfg, dir.path(), 20);

    let local = throughput(&local_cfg, dir.path(), n);
    let nats = throughput(&nats_cfg, dir.path(), n);
    println!(
        "throughput: {n} x /bin/true, 4 at once: local {:.2}s ({:.0}/s), nats 2 workers x 2 {:.2}s ({:.0}/s); ratio {:.2}x; overhead {:.2} ms/delegation",
        local.as_secs_f64(),
        n as f64 / local.as_secs_f64(),
        nats.as_secs_f64(),
        n as f64 / nats.as_secs_f64(),
        nats.as_secs_f64() / local.as_secs_f64(),
        (nats.as_secs_f64() - local.as_secs_f64()) * 1000.0 / n as f64,
    );
    let l = latencies(&local_cfg, dir.path(), &clock, samples);
    let r = latencies(&nats_cfg, dir.path(), &clock, samples);
    println!(
        "submit-to-exec, {samples} sequential: local p50 {:.2} ms p99 {:.2} ms; nats p50 {:.2} ms p99 {:.2} ms; p50 ratio {:.2}x",
        pct(&l, 0.5),
        pct(&l, 0.99),
        pct(&r, 0.5),
        pct(&r, 0.99),
        pct(&r, 0.5) / pct(&l, 0.5),
    );
}
