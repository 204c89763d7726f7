//! The recorded interactive captures of the other agent CLIs (`fixtures/captures/<cli>_<cols>.raw`,
//! recorded by `fixtures/record_clis.sh` from the pinned codex, gemini, opencode and aider against
//! `fixtures/fake_llm.py` with `scenarios/clis.json`) through the real binary:
//! `mpm scan --profile <cli> --cols <cols>` must give exactly the reply's detections, each once and
//! whole (precision 1.0): 4 delegations (one on the reply's first line behind the CLI's reply
//! marker, one long that wraps, `Task(QA: test fib() with …)`, one more), 2 tickets, the reply's
//! error line, and the CLI's own display of the scripted API error.
//!
//! The streamed rows are drawn half-written (down to mid-word) by every one of these CLIs: a
//! detection must stay provisional until the turn ends, so no prefix of a line ever shows up.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn captures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/captures")
}

/// One detection: category, agent or ticket type, task/title/text, pattern id.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    cat: String,
    who: String,
    what: String,
    pattern: String,
}

fn scan(profile: &str, cols: u16, file: &str) -> Vec<Row> {
    let path = captures_dir().join(file);
    assert!(path.exists(), "capture missing: {}", path.display());
    let out = Command::new(env!("CARGO_BIN_EXE_mpm"))
        .args([
            "scan",
            "--input",
            "raw",
            "--rows",
            "30",
            "--profile",
            profile,
        ])
        .args(["--cols", &cols.to_string()])
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
            let (cat, who, what) = crate::common::scan_row(&v);
            Row {
                cat,
                who,
                what,
                pattern: v["pattern"].as_str().unwrap_or("").to_string(),
            }
        })
        .collect()
}

const RESEARCH: &str = "compare the iterative, matrix power and fast doubling algorithms for very \
     large n, measure their time and memory on n up to one million, and recommend one in \
     docs/fib.md with a short table";

/// The reply's detections, the same for every CLI (the error display comes after).
fn reply_rows() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        (
            "delegation",
            "engineer",
            "implement fib(n) in fib.py with memoisation and a guard for negative n",
        ),
        ("delegation", "research", RESEARCH),
        (
            "delegation",
            "qa",
            "test fib() with n = 0, 1, 2, 10 and a negative n",
        ),
        (
            "delegation",
            "documentation",
            "describe fib() and its limits in the README",
        ),
        (
            "ticket",
            "TODO",
            "cache fib() results between calls in a bounded LRU",
        ),
        (
            "ticket",
            "BUG",
            "fib(-1) never returns on the recursive path",
        ),
        (
            "error",
            "",
            "Error: RecursionError: maximum recursion depth exceeded in fib.py",
        ),
    ]
}

/// Every row of `want` exactly once, in order, and nothing else; then the CLI's error display.
fn check(profile: &str, cols: u16, error_pattern: &str, error_text: &str) {
    check_file(
        profile,
        cols,
        &format!("{profile}_{cols}.raw"),
        error_pattern,
        error_text,
    );
}

/// [`check`] on a capture named `file`.
fn check_file(profile: &str, cols: u16, file: &str, error_pattern: &str, error_text: &str) {
    let got = scan(profile, cols, file);
    let want = reply_rows();
    let shown: Vec<String> = got
        .iter()
        .map(|r| format!("{}|{}|{}|{}", r.cat, r.who, r.what, r.pattern))
        .collect();
    assert_eq!(
        got.len(),
        want.len() + 1,
        "{file}: precision/recall off, got:\n{}",
        shown.join("\n")
    );
    for (i, (cat, who, what)) in want.iter().enumerate() {
        let r = &got[i];
        assert_eq!(
            (r.cat.as_str(), r.who.as_str(), r.what.as_str()),
            (*cat, *who, *what),
            "{file}: row {i}, got:\n{}",
            shown.join("\n")
        );
    }
    let e = &got[want.len()];
    assert_eq!(e.cat, "error", "{file}: {}", shown.join("\n"));
    assert_eq!(e.pattern, error_pattern, "{file}: {}", shown.join("\n"));
    assert_eq!(e.what, error_text, "{file}");
}

const CODEX_ERROR: &str = r#"{"error": {"message": "fake_llm: scripted invalid request", "type": "invalid_request_error", "param": null, "code": null}}"#;
const GEMINI_ERROR: &str = r#"[API Error: {"error":{"code":400,"message":"fake_llm: scripted invalid request","status":"invalid_request_error"}}]"#;

#[test]
fn codex_100_columns() {
    check("codex", 100, "codex.error-display", CODEX_ERROR);
}

#[test]
fn codex_60_columns() {
    check("codex", 60, "codex.error-display", CODEX_ERROR);
}

#[test]
fn gemini_100_columns() {
    check("gemini", 100, "gemini.api-error", GEMINI_ERROR);
}

#[test]
fn gemini_60_columns() {
    check("gemini", 60, "gemini.api-error", GEMINI_ERROR);
}

#[test]
fn unknown_profile_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_mpm"))
        .args(["scan", "--profile", "nosuchcli", "-"])
        .env("XDG_CONFIG_HOME", "/nonexistent-mpm-test")
        .output()
        .unwrap_or_else(|e| panic!("running mpm: {e}"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nosuchcli") && err.contains("codex"), "{err}");
}

const AIDER_ERROR: &str =
    "litellm.BadRequestError: OpenAIException - fake_llm: scripted invalid request";

#[test]
fn aider_100_columns() {
    check("aider", 100, "error-exception-line", AIDER_ERROR);
}

#[test]
fn aider_60_columns() {
    check("aider", 60, "error-exception-line", AIDER_ERROR);
}

/// The reply's `TODO: …` and `BUG: …` lines are one markdown paragraph, which rich's markdown
/// renderer joins into one line (`… bounded LRU BUG: fib(-1) …`: one ticket swallowing the other).
/// aider 0.86.2's own renderer keeps them on rows of their own (a blank row between), so each is a
/// ticket of its own, once, at both widths; no row of the capture has both.
#[test]
fn aider_soft_wrapped_tickets_stay_apart() {
    for cols in [100u16, 60] {
        let file = format!("aider_{cols}.raw");
        let bytes = std::fs::read(captures_dir().join(&file)).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("LRU BUG:"),
            "{file}: aider joined the tickets"
        );
        let tickets: Vec<Row> = scan("aider", cols, &file)
            .into_iter()
            .filter(|r| r.cat == "ticket")
            .collect();
        let want = [
            ("TODO", "cache fib() results between calls in a bounded LRU"),
            ("BUG", "fib(-1) never returns on the recursive path"),
        ];
        assert_eq!(tickets.len(), want.len(), "{file}: {tickets:#?}");
        for (r, (who, what)) in tickets.iter().zip(want) {
            assert_eq!((r.who.as_str(), r.what.as_str()), (who, what), "{file}");
        }
    }
}

const OPENCODE_ERROR: &str = "fake_llm: scripted invalid request";

/// opencode 1.18.33 (opentui, cell diffs on the alternate screen): it wraps a long line after
/// punctuation inside a word (`docs/fib.` / `md` at 100 columns) and carries a space that does not
/// fit to the next row (` and recommend` one column further in at 60), which its table's `wrap`
/// rules join; its API error is a red-barred box (the user's box is blue), found by its colour.
#[test]
fn opencode_100_columns() {
    check("opencode", 100, "opencode.api-error", OPENCODE_ERROR);
}

#[test]
fn opencode_60_columns() {
    check("opencode", 60, "opencode.api-error", OPENCODE_ERROR);
}

/// With `COLORTERM=truecolor` opencode draws in 24-bit colour: the error box's bar is `#e06c75`
/// (`opencode_100_truecolor_error`: only "break the api", recorded as fixtures/README.md says).
#[test]
fn opencode_api_error_in_truecolor() {
    let got = scan("opencode", 100, "opencode_100_truecolor_error.raw");
    let want = Row {
        cat: "error".into(),
        who: String::new(),
        what: OPENCODE_ERROR.into(),
        pattern: "opencode.api-error".into(),
    };
    assert_eq!(got, vec![want]);
}
