//! The screen-reader renderer (issue 13): its live line is streamed mid-word, followed by status
//! lines, grown in place, erased and reprinted; list items wrap without a hanging indent. Over the
//! recorded `fixtures/captures/screenreader.raw`, `mpm scan` must give every detection once, whole:
//! no cut copy (a strict prefix of another detection of the same kind), no status line glued on.

use std::process::Command;

use serde_json::Value;

#[test]
fn screen_reader_live_lines_give_each_detection_once_and_whole() {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/captures/screenreader.raw");
    let out = Command::new(env!("CARGO_BIN_EXE_mpm"))
        .args(["scan", "--input", "raw", "--cols", "100", "--rows", "30"])
        .arg(&path)
        .env("XDG_CONFIG_HOME", "/nonexistent-mpm-test")
        .output()
        .unwrap_or_else(|e| panic!("running mpm: {e}"));
    assert!(out.status.success());
    let rows: Vec<(String, String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let what = [s("task"), s("title"), s("text")]
                .into_iter()
                .find(|x| !x.is_empty())
                .unwrap_or_default();
            (s("category"), s("agent") + &s("ticket_type"), what)
        })
        .collect();
    for (i, a) in rows.iter().enumerate() {
        assert!(!a.2.contains("shift+tab"), "status line glued on: {a:?}");
        for (j, b) in rows.iter().enumerate() {
            if i != j && a.0 == b.0 && a.1 == b.1 {
                assert!(
                    !b.2.starts_with(&a.2),
                    "{a:?} is a cut or a copy of {b:?}\nall: {rows:#?}"
                );
            }
        }
    }
    let tasks: Vec<&str> = rows
        .iter()
        .filter(|r| r.0 == "delegation")
        .map(|r| r.2.as_str())
        .collect();
    assert!(
        tasks.contains(&"check that client ids cannot be spoofed through X-Forwarded-For"),
        "{tasks:?}"
    );
    assert!(
        tasks.iter().any(|t| t.starts_with("Once the tests pass")
            && t.ends_with("and keep the defaults documented.")),
        "{tasks:?}"
    );
}
