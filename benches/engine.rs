//! Pattern-engine throughput per line on a generated agent transcript (text lines), with the
//! built-in packs alone and with 100 and 1000 extra patterns, against a same-run baseline: a plain
//! `regex::RegexSet` line loop (`is_match` per line) over the same patterns (up to 100 extra; on
//! the first 2000 lines: it runs at about 1 MB/s).
//!
//! `cargo bench --bench engine` (`MPM_BENCH_MB` sets the transcript size, default 50). Figures are
//! thread CPU time, best of 3. The whole pipeline from raw PTY bytes is `cargo bench --bench
//! pipeline`. Reference figures: BENCHMARKS.md.

use std::fmt::Write as _;
use std::time::Duration;

use mpm::events::TextSource;
use mpm::patterns::Engine;

#[path = "common/transcript.rs"]
#[allow(dead_code)]
mod transcript;
use transcript::{env_usize, extra_patterns, thread_cpu, transcript};

/// Best of `reps` runs of `f` (thread CPU seconds) and its last result.
fn best_of(reps: usize, mut f: impl FnMut() -> usize) -> (f64, usize) {
    let mut best = Duration::MAX;
    let mut last = 0;
    for _ in 0..reps {
        let t = thread_cpu();
        last = std::hint::black_box(f());
        best = best.min(thread_cpu().saturating_sub(t));
    }
    (best.as_secs_f64(), last)
}

/// Every regex of an engine, for the baseline, with word boundaries made ASCII as mpm makes them
/// (a Unicode `\b` keeps the `regex` crate off its lazy DFA on non-ASCII lines: 100x slower).
fn regexes(engine: &Engine) -> Vec<String> {
    engine
        .patterns()
        .iter()
        .filter(|p| p.enabled)
        .map(|p| p.regex.replace(r"\b", r"(?-u:\b)"))
        .collect()
}

fn main() {
    // `cargo test --all-targets` runs bench binaries without `--bench`: a quick smoke run then.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let mb = env_usize("MPM_BENCH_MB", if smoke { 1 } else { 50 });
    let reps = if smoke { 1 } else { 3 };
    let text = transcript(mb << 20);
    let lines: Vec<&str> = text.split('\n').collect();
    let mb = text.len() as f64 / 1e6;
    println!(
        "transcript: {mb:.1} MB, {} lines (generated, deterministic)\n",
        lines.len()
    );
    // The baseline runs on the first 2000 lines only: the RegexSet falls back to its NFA
    // simulation on these patterns (about 1 MB/s), so the whole transcript would take minutes.
    let sample = &lines[..lines.len().min(2000)];
    let sample_mb = sample.iter().map(|l| l.len() + 1).sum::<usize>() as f64 / 1e6;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut table = String::from(
        "| patterns | mpm engine MB/s | RegexSet loop MB/s | mpm / RegexSet | detections | build ms |\n| --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let mut builtin_mbs = f64::NAN;
    for (label, extra) in [
        ("built-in packs", 0),
        ("built-in + 100", 100),
        ("built-in + 1000", 1000),
    ] {
        let file = dir.path().join(format!("extra{extra}.yaml"));
        std::fs::write(&file, extra_patterns(extra)).expect("write patterns");
        let started = std::time::Instant::now();
        let engine = Engine::builder()
            .file(&file)
            .build()
            .expect("patterns compile");
        let build_ms = started.elapsed().as_millis();
        let (t_mpm, found) = best_of(reps, || {
            lines
                .iter()
                .map(|l| engine.detect(l, TextSource::Text).len())
                .sum()
        });
        // With 1000 patterns the RegexSet's lazy DFA gives up and its NFA fallback takes minutes:
        // the baseline is measured up to 100.
        let set_mbs = if extra <= 100 {
            let set = regex::RegexSet::new(regexes(&engine)).expect("RegexSet");
            let (t, _) = best_of(reps, || sample.iter().filter(|l| set.is_match(l)).count());
            sample_mb / t
        } else {
            f64::NAN
        };
        if extra == 0 {
            builtin_mbs = mb / t_mpm;
        }
        let _ = writeln!(
            table,
            "| {label} | {:.0} | {:.1} | {:.0}x | {found} | {build_ms} |",
            mb / t_mpm,
            set_mbs,
            (mb / t_mpm) / set_mbs
        );
        if extra == 1000 {
            let _ = writeln!(
                table,
                "\nbuilt-in + 1000 vs built-in alone: {:.2}x the time per byte",
                builtin_mbs / (mb / t_mpm)
            );
        }
    }
    print!("{table}");
}
