//! `cargo bench --bench dispatch`: dispatch latency, from the moment a delegation's block is
//! complete to the sub-agent's exec (issue 13), against a same-run baseline.
//!
//! Measured path: `mpm run --no-daemon` supervises a main agent (a small Python script on mpm's
//! PTY) that prints `Engineer Agent: bench task I`, waits 100 ms (the screen now holds a
//! provisional detection), notes the time, and prints a line below it: the text drawn below makes
//! the block complete (`detect::finality`), so no quiet timer is involved. The delegation then goes
//! tap → screen pipeline → finality → dispatcher → executor → spawn; the sub-agent's argv is
//! `sh -c 'date +%s%N'` appending its start time to a file. Latency = sub-agent start - mark.
//! `MPM_BENCH_DELEGATIONS` delegations (default 100), 250 ms apart so that they do not queue.
//!
//! Baseline: the same argv spawned directly by this process (`std::process::Command`), time from
//! just before the spawn to the same start stamp: what starting `sh` + `date` costs by itself.
//!
//! Exact path (hooks + transcript): a stand-in `claude` (a Python script named `claude`, so mpm
//! treats it as claude: `--session-id`, `--settings` with mpm's hooks, `MPM_HOOK_SOCKET`) runs `n`
//! turns the way claude ends one: `UserPromptSubmit` hook, a prose row on screen (no delegation
//! there), then notes the time, appends the assistant message with `stop_reason: end_turn` to its
//! transcript (`$HOME/.claude/projects/<cwd>/<session-id>.jsonl`) and runs the registered Stop
//! hook command (through a shell, JSON with `last_assistant_message` on stdin) with
//! `**Engineer Agent**: hook task I`. Latency = sub-agent start - that mark: the hook's own
//! `mpm hook` process start, the hook socket, the dispatcher, the executor and the spawn.
//!
//! Not measured here: the quiet path (the block is the last thing drawn: `pty::QUIET`, 3 s, by
//! design).

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn mpm() -> &'static str {
    env!("CARGO_BIN_EXE_mpm")
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// `path`'s lines `KEY NANOS` as a map.
fn stamps(path: &std::path::Path) -> HashMap<String, u128> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.trim().to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(name: &str, mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&ms, 0.5), percentile(&ms, 0.99));
    println!(
        "{name:<40} n={:<4} p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
        ms.len(),
        p50,
        p99,
        ms.last().copied().unwrap_or(f64::NAN)
    );
    (p50, p99)
}

fn main() {
    let n: usize = std::env::var("MPM_BENCH_DELEGATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let dir = tempfile::tempdir().expect("tempdir");
    let starts = dir.path().join("starts");
    let marks = dir.path().join("marks");
    let sub = format!(
        "printf '%s %s\\n' \"$1\" \"$(date +%s%N)\" >> '{}'",
        starts.display()
    );

    // Baseline: the same argv, spawned directly.
    let base_starts = dir.path().join("base_starts");
    let base_sub = sub.replace(&*starts.to_string_lossy(), &base_starts.to_string_lossy());
    let mut base_marks = HashMap::new();
    for i in 0..n {
        let key = format!("bench task {i}");
        let t0 = now_ns();
        let status = Command::new("/bin/sh")
            .args(["-c", &base_sub, "sh", &key])
            .stdin(Stdio::null())
            .status()
            .expect("spawn sh");
        assert!(status.success());
        base_marks.insert(key, t0);
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = stamps(&base_starts);
    let base: Vec<f64> = base_marks
        .iter()
        .filter_map(|(k, t0)| got.get(k).map(|t1| (*t1 as f64 - *t0 as f64) / 1e6))
        .collect();

    // Through mpm.
    let script = dir.path().join("main_agent.py");
    std::fs::write(
        &script,
        format!(
            r#"import sys, time
marks = open({marks:?}, "a")
for i in range({n}):
    sys.stdout.write("Engineer Agent: bench task %d\n" % i); sys.stdout.flush()
    time.sleep(0.1)
    t = time.time_ns()
    sys.stdout.write("done %d\n" % i); sys.stdout.flush()
    marks.write("bench task %d %d\n" % (i, t)); marks.flush()
    time.sleep(0.15)
time.sleep(3)
"#,
            marks = marks.display().to_string(),
        ),
    )
    .expect("script");
    let cfg = dir.path().join("mpm.yaml");
    let argv = serde_json::to_string(&["/bin/sh", "-c", &sub, "sh", "{task}"]).expect("json");
    std::fs::write(
        &cfg,
        format!(
            "executor: {{rate_per_minute: 0, max_parallel: 8}}\nagents:\n  engineer: {{argv: {argv}}}\n"
        ),
    )
    .expect("config");
    let out = Command::new(mpm())
        .args([
            "--config",
            &cfg.to_string_lossy(),
            "run",
            "--no-daemon",
            "--",
        ])
        .args(["python3", &script.to_string_lossy()])
        .env("XDG_CONFIG_HOME", dir.path().join("xdg"))
        .env("XDG_STATE_HOME", dir.path().join("state"))
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .env("XDG_RUNTIME_DIR", dir.path().join("run"))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("mpm run");
    if !out.status.success() {
        eprintln!("mpm run: {}", String::from_utf8_lossy(&out.stderr));
    }
    let (m, s) = (stamps(&marks), stamps(&starts));
    let lat: Vec<f64> = m
        .iter()
        .filter_map(|(k, t0)| s.get(k).map(|t1| (*t1 as f64 - *t0 as f64) / 1e6))
        .collect();
    let missing = n - lat.len();
    let dup = std::fs::read_to_string(&starts)
        .unwrap_or_default()
        .lines()
        .count()
        .saturating_sub(s.len());
    println!("dispatch latency, {n} delegations (block complete -> sub-agent start):");
    let (b50, b99) = summary("baseline: direct spawn of the same argv", base);
    let (p50, p99) = summary("mpm run: text below -> exec", lat);
    println!(
        "ratio vs baseline: p50 {:.1}x, p99 {:.1}x; missing {missing}, run twice {dup}",
        p50 / b50,
        p99 / b99
    );
    println!(
        "goal p50 < 100 ms: {}; p99 < 250 ms: {}",
        if p50 < 100.0 { "met" } else { "NOT met" },
        if p99 < 250.0 { "met" } else { "NOT met" }
    );

    // Through claude's Stop hook (and transcript), with a stand-in claude.
    let (lat, missing, dup) = hook_path(dir.path(), n, &sub);
    let (h50, h99) = summary("mpm run: Stop hook final text -> exec", lat);
    println!(
        "ratio vs baseline: p50 {:.1}x, p99 {:.1}x; missing {missing}, run twice {dup}",
        h50 / b50,
        h99 / b99
    );
    println!(
        "goal p50 < 100 ms: {}; p99 < 250 ms: {}",
        if h50 < 100.0 { "met" } else { "NOT met" },
        if h99 < 250.0 { "met" } else { "NOT met" }
    );
}

/// The stand-in claude of the exact path (see the module doc).
const FAKE_CLAUDE: &str = r#"#!/usr/bin/env python3
import json, os, subprocess, sys, time
args = sys.argv[1:]
n, marks = int(os.environ["BENCH_N"]), open(os.environ["BENCH_MARKS"], "a")
settings = json.load(open(args[args.index("--settings") + 1]))
sid = args[args.index("--session-id") + 1]
cwd = os.getcwd()
proj = "".join(c if c.isascii() and c.isalnum() else "-" for c in cwd)
tdir = os.path.join(os.environ["HOME"], ".claude", "projects", proj)
os.makedirs(tdir, exist_ok=True)
transcript = open(os.path.join(tdir, sid + ".jsonl"), "a")
def hook(event, payload):
    cmd = settings["hooks"][event][0]["hooks"][0]["command"]
    subprocess.run(cmd, shell=True, input=json.dumps(payload).encode(), capture_output=True, timeout=60)
for i in range(n):
    hook("UserPromptSubmit", {"prompt": "turn %d" % i})
    sys.stdout.write("● Working on turn %d.\r\n" % i); sys.stdout.flush()
    time.sleep(0.05)
    final = "**Engineer Agent**: hook task %d" % i
    t = time.time_ns()
    marks.write("hook task %d %d\n" % (i, t)); marks.flush()
    msg = {"type": "assistant", "sessionId": sid, "cwd": cwd, "message": {"role": "assistant",
           "content": [{"type": "text", "text": final}], "stop_reason": "end_turn"}}
    transcript.write(json.dumps(msg) + "\n"); transcript.flush()
    hook("Stop", {"stop_hook_active": False, "session_id": sid, "last_assistant_message": final})
    time.sleep(0.1)
"#;

/// The exact path: (latencies in ms, missing, run twice).
fn hook_path(dir: &std::path::Path, n: usize, sub: &str) -> (Vec<f64>, usize, usize) {
    use std::os::unix::fs::PermissionsExt;
    let dir = dir.join("hook");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    let starts = dir.join("starts");
    let marks = dir.join("marks");
    let sub = sub.replace(
        &*dir
            .parent()
            .expect("parent")
            .join("starts")
            .to_string_lossy(),
        &starts.to_string_lossy(),
    );
    let claude = bin.join("claude");
    std::fs::write(&claude, FAKE_CLAUDE).expect("fake claude");
    std::fs::set_permissions(&claude, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let cfg = dir.join("mpm.yaml");
    let argv = serde_json::to_string(&["/bin/sh", "-c", &sub, "sh", "{task}"]).expect("json");
    std::fs::write(
        &cfg,
        format!(
            "executor: {{rate_per_minute: 0, max_parallel: 8}}\nagents:\n  engineer: {{argv: {argv}}}\n"
        ),
    )
    .expect("config");
    let out = Command::new(mpm())
        .args([
            "--config",
            &cfg.to_string_lossy(),
            "run",
            "--no-daemon",
            "--",
        ])
        .arg(&claude)
        .env("BENCH_N", n.to_string())
        .env("BENCH_MARKS", &marks)
        .env("HOME", dir.join("home"))
        .env("XDG_CONFIG_HOME", dir.join("xdg"))
        .env("XDG_STATE_HOME", dir.join("state"))
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_RUNTIME_DIR", dir.join("run"))
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .expect("mpm run");
    if !out.status.success() {
        eprintln!(
            "mpm run (hook path): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (m, s) = (stamps(&marks), stamps(&starts));
    let lat: Vec<f64> = m
        .iter()
        .filter_map(|(k, t0)| s.get(k).map(|t1| (*t1 as f64 - *t0 as f64) / 1e6))
        .collect();
    let dup = std::fs::read_to_string(&starts)
        .unwrap_or_default()
        .lines()
        .count()
        .saturating_sub(s.len());
    (lat.clone(), n - lat.len(), dup)
}
