//! `mpm scan` over the non-raw sources and over bad input: transcript and stream-json lines, invalid
//! UTF-8, binary junk and a 50 MB line (bounded memory, no false detections, no crash).

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

/// Run `mpm scan <args> -` with `input` on stdin; (exit code, detections, max RSS of the child in KB).
// The child is reaped with wait4 (for its own rusage) before anything can fail.
#[allow(clippy::zombie_processes)]
fn scan_stdin(args: &[&str], input: &[u8]) -> (i32, Vec<Value>, i64) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mpm"))
        .arg("scan")
        .args(args)
        .arg("-")
        .env("XDG_CONFIG_HOME", "/nonexistent-mpm-test")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    let mut stdin = child.stdin.take().unwrap_or_else(|| panic!("no stdin"));
    let mut stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut v);
        v
    });
    // wait4 gives this child's own peak RSS (RUSAGE_CHILDREN would mix in other tests' children).
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: wait4 only writes the status and rusage we pass; the child is ours and not yet reaped.
    let rss = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::wait4(pid, &mut status, 0, &mut ru);
        ru.ru_maxrss
    };
    let _ = writer.join();
    let stdout_bytes = reader.join().unwrap_or_default();
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    let dets = String::from_utf8_lossy(&stdout_bytes)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (code, dets, rss)
}

#[test]
fn claude_jsonl_transcript() {
    let input = concat!(
        r#"{"type":"user","message":{"content":"TODO: not from the agent"}}"#,
        "\n",
        r#"{"type":"assistant","message":{"content":[{"type":"text","text":"Plan:\n\n**Engineer Agent**: implement fib\n\n```\n// TODO: in code\n```\nTODO: write docs"},{"type":"tool_use","name":"Agent","input":{"description":"QA: test fib","prompt":"x","subagent_type":"general-purpose"}}]}}"#,
        "\n",
        r#"{"type":"assistant","isSidechain":true,"message":{"content":[{"type":"text","text":"BUG: sub-agent text"}]}}"#,
        "\n",
        r#"{"type":"assistant","isApiErrorMessage":true,"message":{"content":[{"type":"text","text":"API Error: 400 bad request"}]}}"#,
        "\n",
        "not json at all\n",
        r#"{"type":"assistant","message":{"content":[{"type":"text","text":"**Engineer Agent**: implement fib."}]}}"#,
    );
    let (code, d, _) = scan_stdin(&["--input", "claude-jsonl"], input.as_bytes());
    assert_eq!(code, 0);
    let summary: Vec<(String, String, bool, String)> = d
        .iter()
        .map(|v| {
            let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let handled = v.get("handled_by_agent").and_then(Value::as_bool) == Some(true);
            (s("category"), s("task") + &s("title"), handled, s("source"))
        })
        .collect();
    let t = |c: &str, w: &str, h: bool| (c.to_string(), w.to_string(), h, "transcript".to_string());
    assert_eq!(
        summary,
        vec![
            t("delegation", "implement fib", false),
            t("ticket", "write docs", false),
            t("delegation", "test fib", true),
            t("error", "", false),
        ]
    );
}

#[test]
fn stream_json_lines() {
    let input = concat!(
        r#"{"type":"system","subtype":"init","tools":["Bash"]}"#,
        "\n",
        r#"{"type":"assistant","message":{"content":[{"type":"text","text":"Delegating to QA Agent: test it"}]},"parent_tool_use_id":null}"#,
        "\n",
        r#"{"type":"assistant","message":{"content":[{"type":"text","text":"TODO: sub-agent"}]},"parent_tool_use_id":"toolu_1"}"#,
        "\n",
        r#"{"type":"result","subtype":"success","result":"Delegating to QA Agent: test it"}"#,
        "\n",
    );
    let (code, d, _) = scan_stdin(&["--input", "stream-json"], input.as_bytes());
    assert_eq!(code, 0);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["agent"], "qa");
    assert_eq!(d[0]["source"], "stream");
}

#[test]
fn text_lines() {
    let (code, d, _) = scan_stdin(
        &["--input", "text"],
        b"TODO: one\r\nprose mentions TODO: inline\nTODO: one\n\xff\xfe junk\nFIXME: two",
    );
    assert_eq!(code, 0);
    let titles: Vec<&str> = d.iter().filter_map(|v| v["title"].as_str()).collect();
    assert_eq!(titles, ["one", "two"]);
}

/// Deterministic junk: every byte value, escape-sequence fragments, invalid UTF-8.
fn junk(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    let frags: [&[u8]; 6] = [
        b"\x1b[",
        b"\x1b]0;",
        b"\xe2\x97",
        b"\x1bP",
        b"\r\n",
        b"\x1b[?2026h",
    ];
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        if x.is_multiple_of(11) {
            out.extend_from_slice(frags[(x as usize / 11) % frags.len()]);
        } else {
            out.push(x as u8);
        }
    }
    out
}

#[test]
fn binary_junk_gives_nothing_in_every_mode() {
    let j = junk(2 * 1024 * 1024);
    for mode in ["raw", "text", "claude-jsonl", "stream-json"] {
        let (code, d, _) = scan_stdin(&["--input", mode], &j);
        assert_eq!(code, 0, "{mode}");
        assert!(d.is_empty(), "{mode}: {d:?}");
    }
}

/// Run `mpm scan --input MODE FILE`; (detections, the child's own peak RSS in KB).
fn scan_file_rss(mode: &str, path: &std::path::Path) -> (Vec<Value>, i64) {
    let (out, rss) = crate::common::mpm_with_peak_rss(|c| {
        c.args(["scan", "--input", mode])
            .arg(path)
            .env("XDG_CONFIG_HOME", "/nonexistent-mpm-test");
    });
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{mode}: {:?} {err}", out.status);
    let dets = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (dets, rss)
}

#[test]
fn a_50_mb_line_costs_bounded_memory() {
    // 50 MB without a newline, then a real ticket. Holding the line would take 50 MB more than
    // `mpm scan` of an empty file (its baseline, measured the same way in the same run). (Raw mode
    // gets 20 MB: a debug build replays it at a few MB/s.)
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let empty = dir.path().join("empty.in");
    std::fs::write(&empty, b"").unwrap_or_else(|e| panic!("{e}"));
    for (mode, mb) in [("text", 50), ("raw", 20)] {
        let path = dir.path().join(format!("{mode}.in"));
        let mut f = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}"));
        let block = vec![b'x'; 1024 * 1024];
        for _ in 0..mb {
            f.write_all(&block).unwrap_or_else(|e| panic!("{e}"));
        }
        f.write_all(b"\nTODO: after the long line\n")
            .unwrap_or_else(|e| panic!("{e}"));
        drop(f);
        let (_, base_kb) = scan_file_rss(mode, &empty);
        let (d, rss_kb) = scan_file_rss(mode, &path);
        let titles: Vec<&str> = d.iter().filter_map(|v| v["title"].as_str()).collect();
        assert_eq!(titles, ["after the long line"], "{mode}");
        assert_eq!(d.len(), 1, "{mode}");
        assert!(
            rss_kb < base_kb + 15 * 1024,
            "{mode}: max RSS {rss_kb} KB, empty input {base_kb} KB"
        );
    }
}

#[test]
fn patterns_flag_adds_a_pack_and_bad_packs_exit_2() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pack = dir.path().join("deploy.yaml");
    std::fs::write(
        &pack,
        "version: 1\npatterns:\n  - id: deploy-line\n    category: deploy\n    regex: '^DEPLOY: (?P<title>.+)'\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let p = pack.to_string_lossy().to_string();
    let (code, d, _) = scan_stdin(
        &["--patterns", &p, "--input", "text"],
        b"DEPLOY: prod\nTODO: x\n",
    );
    assert_eq!(code, 0);
    let cats: Vec<&str> = d.iter().filter_map(|v| v["category"].as_str()).collect();
    assert_eq!(cats, ["deploy", "ticket"]);

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "version: 1\npatterns:\n  - id: x\n    category: c\n    regex: '('\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let b = bad.to_string_lossy().to_string();
    let (code, d, _) = scan_stdin(&["--patterns", &b, "--input", "text"], b"TODO: x\n");
    assert_eq!(code, 2);
    assert!(d.is_empty());
}
