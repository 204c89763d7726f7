//! Recordings with their sizes: `mpm scan --input cast` replays an asciicast v2 file's output at
//! the recorded sizes (its `"r"` resize events included), and `mpm run --record` writes the resize
//! (`"r"`) events that make such a replay possible (and with `--record-input` the input, `"i"`).

use std::io::Write;
use std::process::Stdio;

use serde_json::Value;

use crate::common::*;

/// `mpm scan <args> FILE`: (exit code, detections, stderr).
fn scan_file(args: &[&str], file: &std::path::Path) -> (Option<i32>, Vec<Value>, String) {
    let env = TestEnv::new();
    let mut all = vec!["scan"];
    all.extend_from_slice(args);
    let path = file.to_str().unwrap_or_default();
    all.push(path);
    let out = env
        .command(&all)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("mpm scan: {e}"));
    let d = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (
        out.status.code(),
        d,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn event(t: f64, code: &str, data: &str) -> String {
    serde_json::json!([t, code, data]).to_string()
}

const TASK: &str =
    "check the whole release candidate build on every supported platform and report back";

/// A reply drawn at 100 columns, a resize to 60x20, and the repaint reflowed to the new width (as
/// claude's classic renderer does on SIGWINCH: erase, then draw the visible rows again).
fn resized_cast() -> String {
    let header = serde_json::json!({"version": 2, "width": 100, "height": 30}).to_string();
    let first = format!("  QA Agent: {TASK}\r\n\r\n");
    let mut repaint = String::from("\x1b[H\x1b[2J");
    // Wrapped at 58 columns by the renderer itself.
    repaint.push_str("  QA Agent: check the whole release candidate build on\r\n");
    repaint.push_str("  every supported platform and report back\r\n\r\n");
    repaint.push_str("  TODO: publish the results\r\n");
    [
        header,
        event(0.1, "o", &first),
        event(0.2, "i", "x"),
        event(0.3, "r", "60x20"),
        event(0.4, "o", &repaint),
    ]
    .join("\n")
        + "\n"
}

#[test]
fn cast_replays_at_the_recorded_sizes() {
    let env = TestEnv::new();
    let path = env.path("resized.cast");
    std::fs::write(&path, resized_cast()).unwrap_or_else(|e| panic!("{e}"));
    let (code, d, err) = scan_file(&["--input", "cast"], &path);
    assert_eq!(code, Some(0), "{err}");
    let got: Vec<(String, String)> = d
        .iter()
        .map(|d| {
            let s = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            (s("category"), s("task") + &s("title"))
        })
        .collect();
    assert_eq!(
        got,
        [
            ("delegation".to_string(), TASK.to_string()),
            ("ticket".to_string(), "publish the results".to_string())
        ]
    );
}

#[test]
fn a_malformed_cast_names_the_file_and_line() {
    let env = TestEnv::new();
    let path = env.path("bad.cast");
    let text = format!(
        "{}\n{}\n[0.2, \"r\", \"wide\"]\n",
        serde_json::json!({"version": 2, "width": 80, "height": 24}),
        event(0.1, "o", "hello\r\n")
    );
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    let (code, _, err) = scan_file(&["--input", "cast"], &path);
    assert_ne!(code, Some(0));
    assert!(err.contains("bad.cast:3"), "{err}");
    assert!(err.contains("COLSxROWS"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// `mpm run --record --record-input` on a real PTY: typed input becomes `"i"` events, a resize an
/// `"r"` event, and `mpm scan --input cast` over the recording finds what the agent printed.
#[test]
fn record_writes_input_and_resize_events_that_scan_replays() {
    let env = TestEnv::new();
    let cast = env.path("session.cast");
    let mut spawn = Spawn::new(
        &env,
        &[
            "run",
            "--no-exec",
            "--record",
            cast.to_str().unwrap_or_default(),
            "--record-input",
            "--",
            "sh",
            "-c",
            "read a; printf 'ready\\n'; read b; printf 'Engineer Agent: %s\\n' \"$b\"",
        ],
    );
    spawn.cols = 80;
    spawn.rows = 24;
    let mut p = spawn.start();
    let _guard = KillOnDrop(vec![p.pid()]);
    p.send(b"go\r");
    p.expect("ready");
    p.resize(60, 20);
    // The resize reached the recording before the next input is typed.
    assert!(
        wait_until(std::time::Duration::from_secs(10), || {
            std::fs::read_to_string(&cast).is_ok_and(|t| t.contains("\"60x20\""))
        }),
        "no resize event"
    );
    p.send(b"write the parser\r");
    let status = p.wait();
    assert!(status.success(), "{status:?}");
    let text = std::fs::read_to_string(&cast).unwrap_or_else(|e| panic!("{e}"));
    let events: Vec<Value> = text
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let of = |code: &str| -> String {
        events
            .iter()
            .filter(|e| e[1] == code)
            .filter_map(|e| e[2].as_str())
            .collect()
    };
    // The first Enter may reach mpm before it put the terminal in raw mode (then as `\n`).
    let input = of("i");
    assert!(
        input.starts_with("go") && input.ends_with("write the parser\r"),
        "{input:?}"
    );
    assert_eq!(of("r"), "60x20");
    assert!(of("o").contains("Engineer Agent: write the parser"));
    let (code, d, err) = scan_file(&["--input", "cast"], &cast);
    assert_eq!(code, Some(0), "{err}");
    let tasks: Vec<&str> = d
        .iter()
        .filter(|d| d["category"] == "delegation")
        .filter_map(|d| d["task"].as_str())
        .collect();
    assert_eq!(tasks, ["write the parser"]);
    let _ = std::io::stderr().flush();
}

/// `QA:` drawn bold is `**QA**:`: a delegation to the registered agent; the same row drawn plain
/// is not one.
#[test]
fn a_bold_alias_is_a_delegation() {
    let env = TestEnv::new();
    let bold = env.path("bold.raw");
    std::fs::write(
        &bold,
        b"  \x1b[1mQA\x1b[22m: run the regression suite\r\n  next\r\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (code, d, err) = scan_file(&["--input", "raw"], &bold);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["agent"], "qa");
    assert_eq!(d[0]["task"], "run the regression suite");
    let plain = env.path("plain.raw");
    std::fs::write(&plain, b"  QA: run the regression suite\r\n  next\r\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let (code, d, err) = scan_file(&["--input", "raw"], &plain);
    assert_eq!(code, Some(0), "{err}");
    assert!(d.is_empty(), "{d:?}");
}
