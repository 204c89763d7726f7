//! Pattern-engine throughput on a generated 50 MB agent transcript (text lines), against a Python
//! `re` line loop over the same patterns (the peer's approach), in one run.
//!
//! `cargo bench --bench engine` (set `MPM_BENCH_MB` to change the transcript size). Prints MB/s
//! for the built-in packs, then with 100 and 1000 extra generated patterns, the Python figures on a
//! prefix of the same transcript, and the ratios. Notes and figures: BENCHMARKS.md.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use mpm::events::TextSource;
use mpm::patterns::Engine;

/// A tiny deterministic PRNG (xorshift64*), so the transcript is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

const WORDS: &[&str] = &[
    "the",
    "function",
    "returns",
    "value",
    "we",
    "should",
    "test",
    "agent",
    "implementation",
    "fibonacci",
    "iteratively",
    "memoization",
    "cache",
    "module",
    "error",
    "handling",
    "input",
    "negative",
    "raise",
    "type",
    "hints",
    "review",
    "changes",
    "branch",
    "commit",
    "deploy",
    "task",
    "result",
    "check",
    "edge",
    "cases",
    "performance",
    "large",
    "n",
    "benchmark",
    "documentation",
    "update",
    "README",
    "tests",
    "pass",
    "failing",
    "build",
    "release",
    "config",
    "file",
    "path",
    "now",
    "then",
    "and",
    "or",
    "with",
    "without",
    "for",
    "in",
    "of",
    "to",
    "a",
    "an",
    "is",
    "it",
];

const CODE: &[&str] = &[
    "    def fib(n: int) -> int:",
    "        if n < 0:",
    "            raise ValueError(\"n must be >= 0\")",
    "        a, b = 0, 1",
    "        for _ in range(n):",
    "            a, b = b, a + b",
    "        return a",
    "    let mut cache = HashMap::new();",
    "    // TODO: this is a code comment, not a ticket",
    "    # FIXME: a python comment",
    "+    assert_eq!(fib(10), 55);",
    "-    assert_eq!(fib(10), 56);",
    "  ⎿  Read 42 lines (ctrl+o to expand)",
    "  ⎿  $ cargo test --lib",
];

const HITS: &[&str] = &[
    "**Engineer Agent**: Create a Python function that computes the nth Fibonacci number iteratively.",
    "  Engineer Agent: add type hints to fib and raise ValueError on negative input",
    "Task(Engineer: implement fibonacci function)",
    "Delegating to QA Agent: test the implementation",
    "1. **QA Agent**: a delegation inside a numbered list item",
    "> Delegating to Documentation Agent: document the fibonacci API",
    "● Agent(Engineer: implement fibonacci function)",
    "TODO: add a memoization benchmark for large n",
    "- TODO: a ticket inside a bullet list item",
    "BUG: fib(-1) recurses forever instead of raising ValueError",
    "TICKET: ENG-42 document the fibonacci API",
    "TODO (High Priority): [QA] write tests for negative input",
    "Error: ModuleNotFoundError: No module named 'fibonacci'",
    "● API Error: 400 fake server: scripted invalid_request_error",
    "thread 'main' panicked at src/main.rs:2:5:",
    "FAILED tests/test_fib.py::test_negative - ValueError",
    "REVIEW16: double-check the overflow handling",
];

const NEAR_MISSES: &[&str] = &[
    "**Context**: the user wants a fibonacci function",
    "**Summary**: all delegated work is done",
    "Inline forms: `Task(Engineer: implement fibonacci function)` and *Delegating to Ops Agent: deploy*.",
    "The QA agent will run the suite after the engineer agent finishes.",
    "debug: value of n is 10",
    "I'll coordinate this by delegating to the specialist agents.",
];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A realistic mix: mostly prose and code, 10% blank lines, 1% hits (delegations, tickets, errors)
/// and 1% near misses by default (`MPM_BENCH_HITS_PERMILLE`, `MPM_BENCH_NEAR_PERMILLE`).
fn transcript(bytes: usize) -> String {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out = String::with_capacity(bytes + 256);
    // Per mille: hits and near misses (lines that pass a prefilter but are not detections).
    let hits: usize = env_usize("MPM_BENCH_HITS_PERMILLE", 10);
    let near: usize = env_usize("MPM_BENCH_NEAR_PERMILLE", 10);
    while out.len() < bytes {
        let roll = rng.below(1000);
        match roll {
            r if r < hits => out.push_str(rng.pick(HITS)),
            r if r < hits + near => out.push_str(rng.pick(NEAR_MISSES)),
            r if r < 100 + hits + near => {}
            r if r < 280 + hits + near => out.push_str(rng.pick(CODE)),
            _ => {
                let prefix = rng.pick(&["", "", "", "  ", "● ", "- ", "1. ", "  "]);
                out.push_str(prefix);
                let n = 6 + rng.below(22);
                for i in 0..n {
                    if i > 0 {
                        out.push(' ');
                    }
                    let w = rng.pick(WORDS);
                    if i == 0 {
                        let mut c = w.chars();
                        if let Some(f) = c.next() {
                            out.extend(f.to_uppercase());
                            out.push_str(c.as_str());
                        }
                    } else {
                        out.push_str(w);
                    }
                }
                out.push('.');
            }
        }
        out.push('\n');
    }
    out
}

/// `n` extra patterns: 70% line-anchored custom ticket keywords, 30% floating component alarms.
fn extra_patterns(n: usize) -> String {
    const KW: &[&str] = &[
        "REVIEW", "SECURITY", "PERF", "DEPLOY", "DOCS", "CHORE", "REFACTOR", "SPIKE",
    ];
    let mut y = String::from("version: 1\npatterns:\n");
    for i in 0..n {
        if i % 10 < 7 {
            let kw = format!("{}{}", KW[i % KW.len()], i);
            let _ = write!(
                y,
                "  - id: extra-{i}\n    category: ticket\n    regex: '^(?P<ticket_type>{kw})(?:\\s*\\((?P<priority>[^)]*)\\))?:\\s*(?P<title>\\S.*)'\n"
            );
        } else {
            let _ = write!(
                y,
                "  - id: extra-{i}\n    category: alarm\n    regex: '\\b(?P<component>svc{i}-[a-z]+)\\b.*\\b(?:crashed|OOM killed)\\b'\n    literals: ['svc{i}-']\n"
            );
        }
    }
    y
}

struct Run {
    mb_s: f64,
    detections: usize,
    lines: usize,
}

/// Best of `reps` passes of `detect_text` over the whole transcript (thread CPU time).
fn measure_bulk(engine: &Engine, text: &str, reps: usize) -> (f64, usize) {
    let mut best = Duration::MAX;
    let mut detections = 0;
    for _ in 0..reps {
        let t = thread_cpu();
        detections = std::hint::black_box(engine.detect_text(text, TextSource::Text).len());
        best = best.min(thread_cpu().saturating_sub(t));
    }
    (text.len() as f64 / 1e6 / best.as_secs_f64(), detections)
}

/// CPU time of this thread: the machine is shared, so wall time would mostly measure the neighbours.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Best of `reps` passes of `detect` over every line (thread CPU time). The lines are split
/// before the clock starts, as the Python baseline reads its lines before timing: both sides time
/// the matching loop alone (the split's own speed is printed as "line split only").
fn measure(engine: &Engine, text: &str, reps: usize) -> Run {
    let mut best = Duration::MAX;
    let mut detections = 0;
    let mut lines = 0;
    let split: Vec<&str> = text.split('\n').collect();
    for _ in 0..reps {
        let t = thread_cpu();
        let (mut d, mut l) = (0, 0);
        for line in &split {
            d += engine.detect(line, TextSource::Text).len();
            l += 1;
        }
        best = best.min(thread_cpu().saturating_sub(t));
        detections = std::hint::black_box(d);
        lines = l;
    }
    Run {
        mb_s: text.len() as f64 / 1e6 / best.as_secs_f64(),
        detections,
        lines,
    }
}

/// The Python `re` loop over the same patterns on the first `max_bytes` of the transcript.
fn python(
    engine: &Engine,
    transcript: &Path,
    dir: &Path,
    max_bytes: usize,
) -> Option<(f64, serde_json::Value)> {
    let specs: Vec<serde_json::Value> = engine
        .patterns()
        .iter()
        .filter(|p| p.enabled)
        .map(|p| serde_json::json!({"id": p.id, "category": p.category, "regex": p.regex}))
        .collect();
    let pats = dir.join(format!("patterns-{}.json", specs.len()));
    std::fs::write(&pats, serde_json::to_string(&specs).ok()?).ok()?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/engine_baseline.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&pats)
        .arg(transcript)
        .arg(max_bytes.to_string())
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "python baseline failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let mb_s = v["bytes"].as_f64()? / 1e6 / v["seconds"].as_f64()?;
    Some((mb_s, v))
}

fn main() {
    // `cargo test --all-targets` runs bench binaries without `--bench`: a quick smoke run then.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let mb = env_usize("MPM_BENCH_MB", if smoke { 1 } else { 50 });
    let text = transcript(mb << 20);
    let dir = tempfile::tempdir().expect("temp dir");
    let transcript_path = dir.path().join("transcript.txt");
    std::fs::write(&transcript_path, &text).expect("write transcript");
    println!(
        "transcript: {:.1} MB, {} lines (generated, deterministic)",
        text.len() as f64 / 1e6,
        text.lines().count()
    );

    // Line splitting alone: the floor.
    let t = thread_cpu();
    let n = text.split('\n').map(|l| l.len()).sum::<usize>();
    std::hint::black_box(n);
    println!(
        "line split only:                 {:>8.0} MB/s (thread CPU time, as all figures)",
        text.len() as f64 / 1e6 / thread_cpu().saturating_sub(t).as_secs_f64()
    );

    // (label, extra patterns, python sample bytes)
    let configs: &[(&str, usize, usize)] = &[
        ("built-in packs", 0, 4 << 20),
        ("built-in + 100 extra", 100, 1 << 20),
        ("built-in + 1000 extra", 1000, 256 << 10),
    ];
    println!(
        "{:<24} {:>8} {:>10} {:>10} {:>11} {:>11} {:>9} {:>9}",
        "engine",
        "patterns",
        "line MB/s",
        "bulk MB/s",
        "detections",
        "python MB/s",
        "line/py",
        "bulk/py"
    );
    let only: Option<usize> = std::env::var("MPM_BENCH_ONLY")
        .ok()
        .and_then(|v| v.parse().ok());
    let skip_python = smoke || std::env::var_os("MPM_BENCH_NO_PYTHON").is_some();
    for (label, extra, py_bytes) in configs {
        if only.is_some_and(|o| o != *extra) {
            continue;
        }
        let mut builder = Engine::builder();
        if *extra > 0 {
            let p = dir.path().join(format!("extra-{extra}.yaml"));
            std::fs::write(&p, extra_patterns(*extra)).expect("write patterns");
            builder = builder.file(p);
        }
        let t = Instant::now();
        let engine = builder.build().expect("patterns compile");
        let build = t.elapsed();
        let run = measure(&engine, &text, 3);
        let (bulk_mb_s, bulk_detections) = measure_bulk(&engine, &text, 3);
        assert_eq!(
            bulk_detections, run.detections,
            "detect_text and detect agree"
        );
        let active = engine.patterns().iter().filter(|p| p.enabled).count();
        let py = if skip_python {
            None
        } else {
            python(&engine, &transcript_path, dir.path(), *py_bytes)
        };
        let (py_s, ratio, bulk_ratio) = match &py {
            Some((p, _)) => (
                format!("{p:.2}"),
                format!("{:.0}x", run.mb_s / p),
                format!("{:.0}x", bulk_mb_s / p),
            ),
            None => ("n/a".into(), "n/a".into(), "n/a".into()),
        };
        println!(
            "{label:<24} {active:>8} {:>10.0} {bulk_mb_s:>10.0} {:>11} {py_s:>11} {ratio:>9} {bulk_ratio:>9}   (build {:.0} ms, {} lines)",
            run.mb_s,
            run.detections,
            build.as_secs_f64() * 1e3,
            run.lines
        );
        if let Some((_, v)) = py {
            println!("    python sample: {v}");
        }
    }
}
