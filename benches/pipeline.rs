//! The whole text pipeline from raw PTY bytes (VT model + line reader + engine + dedup), against
//! same-run baselines on the same bytes: the `vt100` 0.16 crate's parser alone (a screen model
//! only: no lines, no matching) and our screen model + line reader with the engine stubbed out.
//!
//! Two inputs, fed in 4096-byte reads:
//! * the engine bench's transcript (1% hits) as claude's classic renderer draws it, with the
//!   built-in packs alone, plus 100 and plus 1000 generated patterns: the floors (at least
//!   100 MB/s with built-in + 100; built-in + 1000 within 2x of the built-ins alone);
//! * a dense generated session (one detection in ~8 lines, all distinct): a stress input for the
//!   capture pass and the dedup memory.
//!
//! Run: `cargo bench --bench pipeline` (`MPM_BENCH_MB` sets the size, default 50). Times are thread
//! CPU time, best of 3. Reference figures: BENCHMARKS.md.

use std::sync::Arc;

use mpm::detect::{Dedup, Pipeline};
use mpm::events::{Detection, TextSource};
use mpm::patterns::Engine;

#[path = "common/transcript.rs"]
mod transcript;
use transcript::{env_usize, extra_patterns, render_tui, thread_cpu, transcript};

const CHUNK: usize = 4096;

/// A classic-renderer-like session: bullets, bold agent names, CHA-jumped spaces, coloured code,
/// status-line redraws (erase + cursor up), some synchronized frames; one delegation, ticket or error
/// in every ~8 lines, each with a distinct text.
fn generate(target: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(target + 4096);
    let mut i: u64 = 0;
    while out.len() < target {
        i += 1;
        // A 32-line cycle: 3 lines to detect (a delegation, a ticket, an error), the rest prose, code,
        // tool output, status redraws and a synchronized frame, as a TUI session shows them.
        let line: String = match i % 32 {
            0 => format!("\x1b[38;5;231m\u{25cf}\x1b[3G\x1b[39mI'll coordinate step {i} by delegating to the specialist\x1b[60Gagents.\r\r\n"),
            1 => format!("  \x1b[1mEngineer Agent\x1b[22m: implement feature {i} with tests and docs\x1b[K\r\n"),
            2 | 17 => format!("  Plain prose line number {i} that explains what the agent is doing right now.\r\n"),
            3 | 18 => format!("\x1b[3G\x1b[94mdef\x1b[7G\x1b[33mfib{i}\x1b[39m(n:\x1b[20G\x1b[36mint\x1b[39m)\x1b[25G->\x1b[28G\x1b[36mint\x1b[39m:\r\n"),
            4 | 19 => "\x1b[7G\x1b[94mreturn\x1b[14G\x1b[39ma + b\x1b[K\r\n".to_string(),
            5 | 20 => format!("\x1b[3GThe\x1b[7Gchange\x1b[14Gtouches\x1b[22Gmodule\x1b[29G{i}\x1b[36Gand\x1b[40Gits\x1b[44Gtests.\r\n"),
            6 => format!("\x1b[3GTODO:\x1b[9Gadd\x1b[13Ga\x1b[15Gbenchmark\x1b[25Gfor\x1b[29Gcase\x1b[34G{i}\r\n"),
            7 | 23 => "\x1b[2K\x1b[1A\x1b[2K\x1b[1A\x1b[2K\x1b[G\x1b[38;5;174m\u{2722}\x1b[39m Composing\u{2026}\x1b[K\r\n\x1b[38;5;246m\u{2500}\u{2500}\u{2500}\u{2500}\u{2500}\u{2500}\u{2500}\u{2500}\x1b[39m\r\n".to_string(),
            8 | 24 => format!("  \u{23bf}  Ran tool call {i} in 0.3 s\r\n"),
            9 => "\x1b[?2026h\x1b[2K\x1b[1A\x1b[2K\x1b[G\x1b[38;5;246mstatus: working\x1b[39m\r\n\x1b[?2026l".to_string(),
            10 | 26 => format!("  \x1b[38;5;153mcargo test\x1b[62G\x1b[39mran {i} tests in the workspace\r\n"),
            11 | 27 => format!("\x1b]0;\u{25d0} Claude Code\x07  Another ordinary sentence, {i}, with \x1b[1mbold\x1b[22m and \x1b[3mitalic\x1b[23m words.\r\n"),
            12 => format!("\x1b[3GError:\x1b[10GModuleNotFoundError:\x1b[31GNo\x1b[34Gmodule\x1b[41Gnamed\x1b[47Gm{i}\r\n"),
            13 | 29 => "\r\n".to_string(),
            14 | 30 => format!("\x1b[3G-\x1b[5Gupdated\x1b[13Gsrc/lib{i}.rs\x1b[30Gand\x1b[34Gthe\x1b[38Gdocs\r\n"),
            _ => format!("    let value_{i} = compute(input, {i}).unwrap_or_default();\r\n"),
        };
        out.extend_from_slice(line.as_bytes());
    }
    out
}

fn mbps(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs
}

/// Best of `runs` (thread CPU seconds) and the last result.
fn best_of<F: FnMut() -> usize>(runs: usize, mut f: F) -> (f64, usize) {
    let mut best = f64::MAX;
    let mut last = 0;
    for _ in 0..runs {
        let t = thread_cpu();
        last = std::hint::black_box(f());
        best = best.min(thread_cpu().saturating_sub(t).as_secs_f64());
    }
    (best, last)
}

/// The whole pipeline over `input`: (seconds, detections).
fn run_pipeline(engine: &Arc<Engine>, input: &[u8], rounds: usize) -> (f64, Vec<Detection>) {
    let mut found = Vec::new();
    let (t, _) = best_of(rounds, || {
        let mut p = Pipeline::new(engine.clone(), 100, 30);
        let mut f = Vec::new();
        for c in input.chunks(CHUNK) {
            f.extend(p.feed(c));
        }
        f.extend(p.finish());
        found = f;
        found.len()
    });
    (t, found)
}

/// The baselines on `input`: (vt100 parser alone, our screen + line reader without an engine).
fn baselines(input: &[u8], rounds: usize) -> (f64, f64) {
    struct Null;
    impl mpm::detect::Matcher for Null {
        fn detect(&self, _: &str, _: TextSource) -> Vec<Detection> {
            Vec::new()
        }
    }
    let (t_vt100, _) = best_of(rounds, || {
        let mut p = vt100::Parser::new(30, 100, 0);
        for c in input.chunks(CHUNK) {
            p.process(c);
        }
        usize::from(p.screen().cursor_position().0)
    });
    let (t_lines, _) = best_of(rounds, || {
        let mut p = Pipeline::with_matcher(Arc::new(Null), 100, 30);
        for c in input.chunks(CHUNK) {
            p.feed(c);
        }
        p.finish().len()
    });
    (t_vt100, t_lines)
}

fn engine_with(extra: usize, dir: &std::path::Path) -> Arc<Engine> {
    let file = dir.join(format!("extra{extra}.yaml"));
    std::fs::write(&file, extra_patterns(extra)).expect("write patterns");
    Arc::new(
        Engine::builder()
            .file(&file)
            .build()
            .expect("patterns compile"),
    )
}

fn main() {
    // `cargo test --all-targets` runs bench binaries without `--bench`: a quick smoke run then.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let mb = env_usize("MPM_BENCH_MB", if smoke { 1 } else { 50 });
    let rounds = if smoke { 1 } else { 3 };
    let dir = tempfile::tempdir().expect("temp dir");

    let text = transcript(mb << 20);
    let raw = render_tui(&text);
    let n = raw.len();
    println!(
        "transcript as a TUI draws it: {:.1} MB in {CHUNK}-byte reads\n",
        n as f64 / 1e6
    );
    let (t_vt100, t_lines) = baselines(&raw, rounds);
    println!("| what | MB/s | vs vt100 parser alone |");
    println!("| --- | ---: | ---: |");
    let row = |name: &str, t: f64| {
        println!("| {name} | {:.0} | {:.2}x |", mbps(n, t), t_vt100 / t);
    };
    row("vt100 0.16 parser alone (baseline)", t_vt100);
    row("mpm screen + line reader, engine stubbed out", t_lines);
    let mut t_builtin = f64::NAN;
    for extra in [0, 100, 1000] {
        let engine = engine_with(extra, dir.path());
        let (t, found) = run_pipeline(&engine, &raw, rounds);
        if extra == 0 {
            t_builtin = t;
            check_against_text(&engine, &text, &found);
        }
        let label = match extra {
            0 => "mpm whole pipeline, built-in packs".to_string(),
            k => format!("mpm whole pipeline, built-in + {k} patterns"),
        };
        row(&label, t);
        if extra == 1000 {
            println!(
                "\nbuilt-in + 1000 vs built-in alone: {:.2}x the time per byte",
                t / t_builtin
            );
        }
    }

    let input = generate(if smoke { 1 << 20 } else { mb << 20 });
    let n = input.len();
    println!(
        "\ndense generated session: {:.1} MB in {CHUNK}-byte reads\n",
        n as f64 / 1e6
    );
    let (t_vt100, t_lines) = baselines(&input, rounds);
    let engine = engine_with(0, dir.path());
    let (t_pipe, found) = run_pipeline(&engine, &input, rounds);
    println!("| what | MB/s | vs vt100 parser alone |");
    println!("| --- | ---: | ---: |");
    let row = |name: &str, t: f64| {
        println!("| {name} | {:.0} | {:.2}x |", mbps(n, t), t_vt100 / t);
    };
    row("vt100 0.16 parser alone (baseline)", t_vt100);
    row("mpm screen + line reader, engine stubbed out", t_lines);
    row("mpm whole pipeline, built-in packs", t_pipe);
    println!("\npipeline detections (after dedup): {}", found.len());
}

/// The pipeline finds what the engine finds in the text lines (after a fresh dedup). A rendered
/// `**X Agent**:` is matched by the plain `X Agent:` pattern: compare what was found (the dedup
/// key: category, agent or ticket type, task or title), not which pattern found it.
fn check_against_text(engine: &Engine, text: &str, found: &[Detection]) {
    let dedup = Dedup::new();
    let expected: Vec<_> = text
        .lines()
        .flat_map(|l| engine.detect(l, TextSource::Text))
        .filter(|d| dedup.admit(d))
        .collect();
    let key = |d: &Detection| format!("{:?}", mpm::detect::dedup::key_parts(d));
    let mut got: Vec<String> = found.iter().map(key).collect();
    let mut want: Vec<String> = expected.iter().map(key).collect();
    got.sort();
    want.sort();
    assert_eq!(
        got, want,
        "the pipeline finds what the engine finds in the text"
    );
}
