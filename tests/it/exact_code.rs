//! Code blocks are not detections (issue 13): claude draws a fenced block's lines without the
//! fences, in code colours, so the screen source marks a line drawn mostly in code colours as code
//! and only patterns with `in_code: true` may fire on it.
//!
//! Captures `fixtures/captures/code_blocks_*.raw` (claude 2.1.331, `scenarios/code_blocks.json` at
//! 240 characters a second; classic and fullscreen at 100x30, classic at 60x20): a bare block with a
//! delegation and a ticket line, a `yaml` block with a ticket, a `diff` block with a delegation,
//! then a real delegation and a real ticket in prose. A `text` or `python` block's plain lines are
//! drawn without any colour (see `fixtures/README.md`): the screen cannot tell them from prose, so
//! the capture holds only the forms it can.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn capture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/captures")
        .join(name)
}

/// `mpm scan` over a capture: (category, agent or ticket type, task or title) per detection.
fn scan(name: &str, cols: u16, rows: u16, extra: &[&str]) -> Vec<(String, String, String)> {
    let path = capture(name);
    assert!(path.exists(), "capture missing: {}", path.display());
    let out = Command::new(env!("CARGO_BIN_EXE_mpm"))
        .args(["scan", "--input", "raw", "--cols", &cols.to_string()])
        .args(["--rows", &rows.to_string()])
        .args(extra)
        .arg(&path)
        .env("XDG_CONFIG_HOME", "/nonexistent-mpm-test")
        .output()
        .unwrap_or_else(|e| panic!("running mpm: {e}"));
    assert!(
        out.status.success(),
        "mpm scan failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let who = if s("agent").is_empty() {
                s("ticket_type")
            } else {
                s("agent")
            };
            let what = if s("task").is_empty() {
                s("title")
            } else {
                s("task")
            };
            (s("category"), who, what)
        })
        .collect()
}

fn expected() -> Vec<(String, String, String)> {
    [
        (
            "delegation",
            "engineer",
            "rename the retry_budget setting to retry_limit everywhere and keep the old name as an alias",
        ),
        (
            "delegation",
            "qa",
            "check that the old setting name still loads",
        ),
        ("ticket", "TODO", "drop the alias in the next major release"),
    ]
    .into_iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect()
}

#[test]
fn code_block_lines_on_screen_are_not_detections() {
    for (name, cols, rows) in [
        ("code_blocks_classic.raw", 100, 30),
        ("code_blocks_fullscreen.raw", 100, 30),
        ("code_blocks_classic60.raw", 60, 20),
    ] {
        assert_eq!(scan(name, cols, rows, &[]), expected(), "{name}");
    }
}

#[test]
fn a_pattern_with_in_code_fires_on_code_lines() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("code.yaml");
    std::fs::write(
        &file,
        "patterns:\n  - id: example-in-code\n    category: example\n    in_code: true\n    \
         regex: '^(?P<agent>QA) Agent:\\s+(?P<task>this bare block.*)'\n    literals: [' Agent:']\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let file = file.to_string_lossy().into_owned();
    let got = scan("code_blocks_classic60.raw", 60, 20, &["--patterns", &file]);
    let mut want = expected();
    want.insert(
        1,
        (
            "example".into(),
            "qa".into(),
            "this bare block line is an example in a code block and must never run as a delegation"
                .into(),
        ),
    );
    assert_eq!(got, want);
}
