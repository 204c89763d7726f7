//! Provisional, then final, on the screen: a paragraph that a TUI draws a row at a time while the
//! model streams gives one final detection with its whole text, however the bytes are split, and
//! `mpm run` (live, with pauses between frames) gives the same as the pipeline over the same bytes.

use std::sync::Arc;
use std::time::Duration;

use mpm::detect::Pipeline;
use mpm::events::Detection;
use mpm::patterns::Engine;
use proptest::prelude::*;
use serde_json::Value;

use crate::common::*;

const COLS: u16 = 60;
const TASK: &str = "implement the streaming parser for the configuration files, add tests for \
every malformed input you can think of, keep the public interface unchanged and report back";

/// Words wrapped to `width` columns.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut rows = vec![String::new()];
    for w in text.split(' ') {
        let last = rows.last_mut().map_or(0, |r| r.len());
        if last > 0 && last + 1 + w.len() > width {
            rows.push(String::new());
        }
        if let Some(r) = rows.last_mut() {
            if !r.is_empty() {
                r.push(' ');
            }
            r.push_str(w);
        }
    }
    rows
}

/// Frames as claude's classic renderer draws a streamed reply: the live region (the paragraph so
/// far, a blank row, the spinner) is erased and redrawn one row longer each time, then the next
/// paragraph, then the end-of-turn row.
fn frames() -> Vec<Vec<u8>> {
    let rows = wrap(&format!("Engineer Agent: {TASK}"), usize::from(COLS) - 4);
    let mut out = Vec::new();
    let mut drawn = 0usize;
    for k in 1..=rows.len() {
        let mut f = String::new();
        if drawn > 0 {
            f.push_str(&format!("\r\x1b[{drawn}A\x1b[J"));
        }
        for r in &rows[..k] {
            f.push_str(&format!("  {r}\r\n"));
        }
        f.push_str(&format!("\r\n\u{2736} Transmuting\u{2026} ({k}s)\r\n"));
        drawn = k + 2;
        out.push(f.into_bytes());
    }
    let mut last = format!("\r\x1b[{drawn}A\x1b[J");
    for r in &rows {
        last.push_str(&format!("  {r}\r\n"));
    }
    last.push_str("\r\n  TODO: document the parser\r\n\r\n\u{273b} Crunched for 3s\r\n");
    out.push(last.into_bytes());
    out
}

fn engine() -> Arc<Engine> {
    static ENGINE: std::sync::OnceLock<Arc<Engine>> = std::sync::OnceLock::new();
    ENGINE
        .get_or_init(|| Arc::new(Engine::builder().build().unwrap_or_else(|e| panic!("{e}"))))
        .clone()
}

/// (category, agent or ticket type, task or title) of each final detection.
fn summary(d: &[Detection]) -> Vec<(String, String, String)> {
    d.iter()
        .map(|d| {
            assert!(d.is_final);
            (
                d.category.clone(),
                d.agent
                    .clone()
                    .or(d.ticket_type.clone())
                    .unwrap_or_default(),
                d.task.clone().or(d.title.clone()).unwrap_or_default(),
            )
        })
        .collect()
}

fn run_chunks(chunks: &[&[u8]]) -> Vec<Detection> {
    let mut p = Pipeline::new(engine(), COLS, 20);
    let mut out = Vec::new();
    for c in chunks {
        out.extend(p.feed(c));
    }
    out.extend(p.finish());
    out
}

fn expected() -> Vec<(String, String, String)> {
    vec![
        ("delegation".into(), "engineer".into(), TASK.into()),
        ("ticket".into(), "TODO".into(), "document the parser".into()),
    ]
}

#[test]
fn frame_by_frame_gives_one_whole_delegation() {
    let f = frames();
    let chunks: Vec<&[u8]> = f.iter().map(Vec::as_slice).collect();
    assert_eq!(summary(&run_chunks(&chunks)), expected());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// Split anywhere: the same final detections.
    #[test]
    fn any_split_gives_the_same_final_detections(cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..24)) {
        let all: Vec<u8> = frames().concat();
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(all.len())).collect();
        at.sort_unstable();
        at.dedup();
        let mut chunks = Vec::new();
        let mut from = 0;
        for a in at {
            chunks.push(&all[from..a]);
            from = a;
        }
        chunks.push(&all[from..]);
        prop_assert_eq!(summary(&run_chunks(&chunks)), expected());
    }
}

/// Live: the same frames written by a child with pauses between them (a realistic stream), under
/// `mpm run` on a 60-column terminal: one delegation event, final, with the whole task.
#[test]
fn live_with_pauses_gives_the_same_detections() {
    let env = TestEnv::new();
    let dir = env.path("frames");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    for (k, f) in frames().iter().enumerate() {
        std::fs::write(dir.join(format!("f{k:03}")), f).unwrap_or_else(|e| panic!("{e}"));
    }
    let events = env.path("events.jsonl");
    let mut spawn = Spawn::new(
        &env,
        &[
            "run",
            "--no-exec",
            "--events-file",
            events.to_str().unwrap_or_default(),
            "--",
            "sh",
            "-c",
            "stty -onlcr; for f in \"$FRAMES\"/f*; do cat \"$f\"; sleep 0.05; done",
        ],
    );
    spawn.cols = COLS;
    spawn.rows = 20;
    spawn.env.push(("FRAMES".into(), dir.display().to_string()));
    let mut p = spawn.start();
    let _guard = KillOnDrop(vec![p.pid()]);
    let status = p.wait();
    assert!(status.success(), "{status:?}");
    let mut found: Vec<Value> = Vec::new();
    wait_until(Duration::from_secs(10), || {
        found = std::fs::read_to_string(&events)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e.get("kind").and_then(Value::as_str) == Some("detection"))
            .collect();
        found.len() >= 2
    });
    let got: Vec<(String, String, String)> = found
        .iter()
        .map(|e| {
            let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            assert_eq!(e.get("final"), Some(&Value::Bool(true)));
            (
                s("category"),
                s("agent") + &s("ticket_type"),
                s("task") + &s("title"),
            )
        })
        .collect();
    assert_eq!(got, expected());
}
