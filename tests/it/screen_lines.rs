//! Live detection and `mpm scan` agree on long lines and on rows that only look wrapped
//! (issue 12 item 7): a row that fills the width followed by a hard newline is not a wrap, and a
//! delegation of 20,000 characters is detected whole, by `mpm scan` and live under `mpm run`.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

/// `mpm scan --input raw --cols C -` over `input`: the detections.
fn scan(cols: u16, input: &[u8]) -> Vec<Value> {
    let env = TestEnv::new();
    let mut child = env
        .command(&["scan", "--input", "raw", "--cols", &cols.to_string(), "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    let mut stdin = child.stdin.take().unwrap_or_else(|| panic!("stdin"));
    let data = input.to_vec();
    let w = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait: {e}"));
    let _ = w.join();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Panics with the first difference (the strings are too long to print whole).
fn assert_same(got: &str, want: &str, what: &str) {
    if got != want {
        let at = got
            .bytes()
            .zip(want.bytes())
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        let show = |s: &str| {
            s.get(at.saturating_sub(20)..(at + 20).min(s.len()))
                .unwrap_or("")
                .to_string()
        };
        panic!(
            "{what}: {} vs {} bytes, first difference at {at}: {:?} vs {:?}",
            got.len(),
            want.len(),
            show(got),
            show(want)
        );
    }
}

fn field<'a>(d: &'a Value, k: &str) -> &'a str {
    d.get(k).and_then(Value::as_str).unwrap_or("")
}

/// `printf 'word %.0s' {1..19}; echo word; echo "Engineer Agent: implement the parser"`, as a
/// program writes it (bare LF) and as a terminal's onlcr delivers it (CR LF).
#[test]
fn a_full_row_then_a_hard_newline_is_not_a_wrap() {
    let text = format!(
        "{}word\nEngineer Agent: implement the parser\n",
        "word ".repeat(19)
    );
    for input in [text.clone(), text.replace('\n', "\r\n")] {
        let d = scan(100, input.as_bytes());
        let delegations: Vec<_> = d
            .iter()
            .filter(|d| field(d, "category") == "delegation")
            .collect();
        assert_eq!(delegations.len(), 1, "{d:?}");
        assert_eq!(field(delegations[0], "task"), "implement the parser");
        assert_eq!(field(delegations[0], "agent"), "engineer");
    }
}

/// Two markdown lines that merely fill the width stay two tickets.
#[test]
fn two_lines_that_fill_the_width_stay_two() {
    let todo = format!(
        "  TODO (High Priority): {}",
        "rewrite the parser ".repeat(3).trim_end()
    );
    assert!(todo.len() >= 74, "{}", todo.len());
    let input = format!("{todo}\r\n  FIXME (P2): handle empty input\r\n");
    let d = scan(80, input.as_bytes());
    let titles: Vec<&str> = d.iter().map(|d| field(d, "title")).collect();
    assert_eq!(titles.len(), 2, "{d:?}");
    assert!(titles[1].contains("handle empty input"), "{titles:?}");
    assert!(!titles[0].contains("FIXME"), "{titles:?}");
}

/// The 20,000-character task, numbered words so that a cut or a gap shows.
fn long_task() -> String {
    let mut t = String::from("implement");
    let mut k = 0;
    while t.len() < 20_000 {
        k += 1;
        t.push_str(&format!(" step{k}"));
    }
    t
}

#[test]
fn a_twenty_thousand_character_delegation_in_scan() {
    let task = long_task();
    let input = format!("Engineer Agent: {task}\r\nDone.\r\n");
    for cols in [60u16, 100, 132] {
        let d = scan(cols, input.as_bytes());
        assert_eq!(d.len(), 1, "{cols} columns: {} detections", d.len());
        assert_same(field(&d[0], "task"), &task, &format!("{cols} columns"));
        assert_eq!(d[0].get("final"), Some(&Value::Bool(true)));
    }
}

#[test]
fn a_twenty_thousand_character_delegation_live() {
    let env = TestEnv::new();
    let events = env.path("events.jsonl");
    let task = long_task();
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
            "printf 'Engineer Agent: %s\\n' \"$TASK\"; printf 'Done.\\n'",
        ],
    );
    spawn.cols = 100;
    spawn.rows = 30;
    spawn.env.push(("TASK".into(), task.clone()));
    let mut p = spawn.start();
    let _guard = KillOnDrop(vec![p.pid()]);
    let status = p.wait();
    assert!(status.success(), "{status:?}");
    let mut found = Vec::new();
    wait_until(Duration::from_secs(10), || {
        found = std::fs::read_to_string(&events)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| field(e, "kind") == "detection")
            .collect();
        !found.is_empty()
    });
    assert_eq!(found.len(), 1, "{} detections", found.len());
    assert_same(field(&found[0], "task"), &task, "live");
}
