//! The whole text pipeline from raw PTY bytes (VT model + line reader + engine + dedup) on a dense
//! generated 50 MB session with ANSI codes — a stress input: one line in eleven is a detection and
//! every one is distinct, so the engine's capture pass and the dedup memory work on every eleventh
//! line — against baselines in the same run:
//! * the `vt100` 0.16 crate's parser alone (screen model only, no lines, no matching);
//! * our screen model alone;
//! * a naive "strip escapes, split lines, run the engine" loop (what FINDINGS.md §3.2 shows to be wrong,
//!   as a speed reference).
//!
//! The figure (the engine bench's transcript, 1% hits, as a TUI draws it) is measured by
//! `cargo bench --bench engine`, in the same run as the engine and Python figures.
//!
//! It also measures the screen models' correctness on the real captures: at every recorded read
//! burst, the rows of our model and of vt100 0.16 are compared.
//!
//! Run: `cargo bench --bench pipeline` (release); the captures are `fixtures/captures/`.
//! `MPM_BENCH_RANDOM=1` feeds pseudo-random bytes instead (what the `run`
//! bench pipes through `cat`); `MPM_BENCH_PHASE=pipeline|screen` runs one phase alone, for a profiler.
//! Times are thread CPU time, best of 3.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use mpm::detect::Pipeline;
use mpm::events::TextSource;
use mpm::patterns::Engine;
use mpm::screen::Screen;

#[path = "common/transcript.rs"]
#[allow(dead_code)]
mod transcript;
use transcript::thread_cpu;

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

/// Best of `runs` (thread CPU time: the machine is shared, so wall time would mostly measure the
/// neighbours, as in the engine bench).
fn best_of<F: FnMut() -> usize>(runs: usize, mut f: F) -> (f64, usize) {
    let mut best = f64::MAX;
    let mut last = 0;
    for _ in 0..runs {
        let t = thread_cpu();
        last = f();
        best = best.min(thread_cpu().saturating_sub(t).as_secs_f64());
    }
    (best, last)
}

fn strip_escapes(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == 0x1b && i + 1 < bytes.len() && bytes[i + 1] == b'[' {
            i += 2;
            while i < bytes.len() && !(0x40..0x7f).contains(&bytes[i]) {
                i += 1;
            }
            i += 1;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// The recorded claude captures in the repository (`fixtures/record_claude.sh`).
fn captures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/captures")
}

/// At every recorded read burst, compare our rows with vt100's. Returns (snapshots, mismatches).
fn compare_with_vt100(bytes: &[u8], cuts: &[usize]) -> (usize, usize, Option<String>) {
    let mut ours = Screen::new(100, 30);
    let mut theirs = vt100::Parser::new(30, 100, 0);
    let (mut snaps, mut bad) = (0, 0);
    let mut first_diff = None;
    let mut at = 0;
    for &c in cuts.iter().chain(std::iter::once(&bytes.len())) {
        let c = c.clamp(at, bytes.len());
        ours.feed(&bytes[at..c], &mut |_, _| {});
        theirs.process(&bytes[at..c]);
        at = c;
        snaps += 1;
        let a: String = ours
            .contents()
            .lines()
            .map(|r| format!("{}\n", r.trim_end()))
            .collect();
        let b: String = theirs
            .screen()
            .rows(0, 100)
            .map(|r| format!("{}\n", r.trim_end()))
            .collect();
        if a != b {
            bad += 1;
            if first_diff.is_none() {
                let d = a
                    .lines()
                    .zip(b.lines())
                    .find(|(x, y)| x != y)
                    .map(|(x, y)| format!("ours   |{x}|\n      vt100  |{y}|"));
                first_diff = d;
            }
        }
    }
    (snaps, bad, first_diff)
}

fn main() {
    let engine = Arc::new(Engine::builder().build().expect("built-in engine"));
    // `cargo test --all-targets` runs bench binaries without `--bench`: a quick smoke run then.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let input = generate(if smoke { 1 << 20 } else { 50 << 20 });
    let rounds = if smoke { 1 } else { 3 };
    let n = input.len();
    println!(
        "input: {:.1} MB generated session, fed in {CHUNK}-byte reads\n",
        n as f64 / 1e6
    );

    // `MPM_BENCH_PHASE=pipeline|lines|screen` runs one phase alone (for profiling).
    let phase = std::env::var("MPM_BENCH_PHASE").ok();
    let random = std::env::var_os("MPM_BENCH_RANDOM").is_some();
    let input = if random {
        // What `cargo bench --bench run` pipes through `cat`: pseudo-random bytes.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..input.len())
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    } else {
        input
    };
    let n = input.len();
    if let Some(p) = phase.as_deref() {
        let t = Instant::now();
        for _ in 0..rounds {
            let mut p2 = Pipeline::new(engine.clone(), 100, 30);
            let mut s = Screen::new(100, 30);
            for c in input.chunks(CHUNK) {
                match p {
                    "pipeline" => drop(p2.feed(c)),
                    _ => s.feed(c, &mut |_, _| {}),
                }
            }
        }
        println!(
            "{p}: {:.0} MB/s",
            mbps(n * rounds, t.elapsed().as_secs_f64())
        );
        return;
    }
    let (t_pipe, found) = best_of(rounds, || {
        let mut p = Pipeline::new(engine.clone(), 100, 30);
        let mut found = 0;
        for c in input.chunks(CHUNK) {
            found += p.feed(c).len();
        }
        found + p.finish().len()
    });
    struct Null;
    impl mpm::detect::Matcher for Null {
        fn detect(&self, _: &str, _: TextSource) -> Vec<mpm::events::Detection> {
            Vec::new()
        }
    }
    let (t_lines, _) = best_of(rounds, || {
        let mut p = Pipeline::with_matcher(Arc::new(Null), 100, 30);
        for c in input.chunks(CHUNK) {
            p.feed(c);
        }
        p.finish().len()
    });
    let (t_screen, _) = best_of(rounds, || {
        let mut s = Screen::new(100, 30);
        for c in input.chunks(CHUNK) {
            s.feed(c, &mut |_, _| {});
        }
        s.cursor_row()
    });
    let (t_vt100, _) = best_of(rounds, || {
        let mut p = vt100::Parser::new(30, 100, 0);
        for c in input.chunks(CHUNK) {
            p.process(c);
        }
        usize::from(p.screen().cursor_position().0)
    });
    let (t_naive, naive_found) = best_of(rounds, || {
        let text = strip_escapes(&input);
        let mut found = 0;
        for line in text.split(|&b| b == b'\n') {
            found += engine.detect_bytes(line, TextSource::Text).len();
        }
        found
    });
    println!("| what | MB/s | vs mpm pipeline |");
    println!("| --- | ---: | ---: |");
    let row = |name: &str, t: f64| {
        println!("| {name} | {:.0} | {:.2}x |", mbps(n, t), t_pipe / t);
    };
    row("mpm pipeline: screen + lines + engine + dedup", t_pipe);
    row(
        "mpm screen model + line reader (engine stubbed out)",
        t_lines,
    );
    row("mpm screen model alone", t_screen);
    row("vt100 0.16 parser alone (no lines, no engine)", t_vt100);
    row("naive strip + split + engine (wrong on real TUIs)", t_naive);
    println!(
        "\npipeline detections (after dedup): {found}; naive loop matches (no dedup): {naive_found}"
    );

    if smoke {
        // The capture comparison is minutes in a debug build; tests/scan_split.rs covers splits.
        return;
    }
    let dir = captures_dir();
    println!("\nScreen rows vs vt100 0.16 at every recorded read burst (100x30):\n");
    println!("| capture | snapshots | differing | first difference |");
    println!("| --- | ---: | ---: | --- |");
    for name in [
        "fullscreen",
        "classic",
        "classic_resize",
        "screenreader",
        "subagent_classic",
        "print_mode",
    ] {
        let Ok(bytes) = std::fs::read(dir.join(format!("{name}.raw"))) else {
            continue;
        };
        let tsv =
            std::fs::read_to_string(dir.join(format!("{name}.raw.timing.tsv"))).unwrap_or_default();
        let cuts: Vec<usize> = tsv
            .lines()
            .filter(|l| l.contains("\tout "))
            .filter_map(|l| l.split('\t').next()?.parse().ok())
            .collect();
        let (s, b, d) = compare_with_vt100(&bytes, &cuts);
        println!(
            "| {name} (recorded reads) | {s} | {b} | {} |",
            d.unwrap_or_default().replace('\n', " ")
        );
        // Two pieces, cut at every offset: does the final screen equal the one-piece screen?
        let (mut ours_bad, mut vt_bad) = (0, 0);
        let whole_ours = {
            let mut o = Screen::new(100, 30);
            o.feed(&bytes, &mut |_, _| {});
            o.contents()
        };
        let whole_vt = {
            let mut v = vt100::Parser::new(30, 100, 0);
            v.process(&bytes);
            v.screen().contents()
        };
        for cut in 1..bytes.len() {
            let mut o = Screen::new(100, 30);
            o.feed(&bytes[..cut], &mut |_, _| {});
            o.feed(&bytes[cut..], &mut |_, _| {});
            ours_bad += usize::from(o.contents() != whole_ours);
            let mut v = vt100::Parser::new(30, 100, 0);
            v.process(&bytes[..cut]);
            v.process(&bytes[cut..]);
            vt_bad += usize::from(v.screen().contents() != whole_vt);
        }
        println!(
            "| {name} (two pieces, every cut: final screen differs, ours / vt100) | {} | {ours_bad} / {vt_bad} | |",
            bytes.len() - 1
        );
        let every: Vec<usize> = (1..bytes.len()).collect();
        let (s1, b1, d1) = compare_with_vt100(&bytes, &every);
        println!(
            "| {name} (every byte) | {s1} | {b1} | {} |",
            d1.unwrap_or_default().replace('\n', " ")
        );
    }
}
