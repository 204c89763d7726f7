//! Splitting the input anywhere gives the same detections: the captures fed in one piece, byte by
//! byte, in the recorded read bursts, split in two at many offsets, and at random boundaries.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use mpm::detect::Pipeline;
use mpm::events::Detection;
use mpm::patterns::Engine;
use proptest::prelude::*;

fn captures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/captures")
}

/// The recorded claude captures (`fixtures/record_claude.sh`).
const CAPTURES: [&str; 6] = [
    "fullscreen.raw",
    "classic.raw",
    "classic_resize.raw",
    "screenreader.raw",
    "subagent_classic.raw",
    "print_mode.raw",
];

fn engine() -> Arc<Engine> {
    static E: OnceLock<Arc<Engine>> = OnceLock::new();
    E.get_or_init(|| {
        Arc::new(
            Engine::builder()
                .build()
                .unwrap_or_else(|e| panic!("built-in engine: {e}")),
        )
    })
    .clone()
}

fn capture(name: &str) -> Vec<u8> {
    let p = captures_dir().join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Feed `bytes` cut at `cuts` (sorted offsets), then finish.
fn run(bytes: &[u8], cuts: &[usize]) -> Vec<Detection> {
    let mut p = Pipeline::new(engine(), 100, 30);
    let mut out = Vec::new();
    let mut at = 0;
    for &c in cuts.iter().chain(std::iter::once(&bytes.len())) {
        let c = c.clamp(at, bytes.len());
        out.extend(p.feed(&bytes[at..c]));
        at = c;
    }
    out.extend(p.finish());
    out
}

/// The recorded read bursts: the offsets of the `out N` lines of the `.timing.tsv` (the offset
/// after each read).
fn recorded_cuts(name: &str) -> Vec<usize> {
    let p = captures_dir().join(format!("{name}.timing.tsv"));
    let tsv = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    tsv.lines()
        .filter(|l| l.contains("\tout "))
        .filter_map(|l| l.split('\t').next()?.parse().ok())
        .collect()
}

#[test]
fn byte_by_byte_equals_one_piece() {
    for name in CAPTURES {
        let b = capture(name);
        let whole = run(&b, &[]);
        assert!(!whole.is_empty(), "{name}");
        let every: Vec<usize> = (1..b.len()).collect();
        assert_eq!(run(&b, &every), whole, "{name} byte by byte");
        let bursts = recorded_cuts(name);
        assert!(bursts.len() > 1, "{name}: reads recorded");
        assert_eq!(run(&b, &bursts), whole, "{name} recorded bursts");
    }
}

#[test]
fn two_pieces_at_many_offsets() {
    for name in CAPTURES {
        let b = capture(name);
        let whole = run(&b, &[]);
        // About 150 offsets per capture (a debug-build run costs milliseconds); byte_by_byte_equals_one_piece
        // already puts a boundary at every offset.
        let step = (b.len() / 150).max(1);
        for cut in (1..b.len()).step_by(step) {
            assert_eq!(run(&b, &[cut]), whole, "{name} cut at {cut}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
    #[test]
    fn random_boundaries(which in 0usize..CAPTURES.len(), mut cuts in proptest::collection::vec(0usize..26_000, 0..40)) {
        let b = capture(CAPTURES[which]);
        cuts.sort_unstable();
        prop_assert_eq!(run(&b, &cuts), run(&b, &[]));
    }
}
