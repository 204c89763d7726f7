//! The five real-claude captures through the real binary: `mpm scan --input raw --cols 100 --rows 30`
//! gives exactly the detections FINDINGS.md §6 lists, each once.
//!
//! The captures live in `<shared>/realclient/captures`, where `<shared>` is `$MPM_SHARED_DIR` or
//! `../shared` relative to the repository root (CI keeps `shared/` beside the repo).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn captures_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MPM_SHARED_DIR") {
        return PathBuf::from(d).join("realclient/captures");
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // `../shared` beside the repo; a git worktree one level deeper also finds it.
    ["../shared", "../../shared"]
        .iter()
        .map(|rel| root.join(rel).join("realclient/captures"))
        .find(|d| d.is_dir())
        .unwrap_or_else(|| root.join("../shared/realclient/captures"))
}

/// `(category, agent or ticket type, task/title/text, handled_by_agent)` of each detection line.
type Row = (String, String, String, bool);

fn scan(args: &[&str], file: &str) -> Vec<Row> {
    let path = captures_dir().join(file);
    assert!(
        path.exists(),
        "capture missing: {} (set MPM_SHARED_DIR)",
        path.display()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_mpm"))
        .arg("scan")
        .args(args)
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
            for absent in ["session", "trace_id", "step_id"] {
                assert!(v.get(absent).is_none(), "{absent} in {l}");
            }
            let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let who = if s("agent").is_empty() {
                s("ticket_type")
            } else {
                s("agent")
            };
            let what = [s("task"), s("title"), s("text")]
                .into_iter()
                .find(|x| !x.is_empty())
                .unwrap_or_default();
            let handled = v.get("handled_by_agent").and_then(Value::as_bool) == Some(true);
            (s("category"), who, what, handled)
        })
        .collect()
}

fn raw(file: &str) -> Vec<Row> {
    scan(&["--input", "raw", "--cols", "100", "--rows", "30"], file)
}

fn row(cat: &str, who: &str, what: &str) -> Row {
    (cat.into(), who.into(), what.into(), false)
}

const LONG_TASK: &str = "This is a deliberately long delegation line to check wrapping, so it keeps going \
well past the terminal width: implement fib(n) iteratively, add type hints, raise ValueError on negative \
input, keep it O(n) time and O(1) space, and report back.";

/// The delegation exchange (`scenarios/delegation.json`), in order; `api_error` is the text of the
/// API error row, which differs per renderer (`● ` is stripped, the screen reader prefixes `error: `).
fn delegation_exchange(api_error: Option<&str>) -> Vec<Row> {
    let mut v = vec![
        row(
            "delegation",
            "engineer",
            "Create a Python function that computes the nth Fibonacci number iteratively.",
        ),
        row("delegation", "engineer", "implement fibonacci function"),
        row("delegation", "qa", "test the implementation"),
        row("ticket", "TODO", "add a memoization benchmark for large n"),
        row(
            "ticket",
            "BUG",
            "fib(-1) recurses forever instead of raising ValueError",
        ),
        row("ticket", "TICKET", "ENG-42 document the fibonacci API"),
        row(
            "error",
            "",
            "Error: ModuleNotFoundError: No module named 'fibonacci'",
        ),
        row("delegation", "engineer", LONG_TASK),
        row("ticket", "TODO", "a ticket inside a bullet list item"),
        row(
            "delegation",
            "qa",
            "a delegation inside a numbered list item",
        ),
        row(
            "delegation",
            "documentation",
            "a delegation inside a blockquote",
        ),
    ];
    // The last line, "Inline forms: `Task(...)` and *Delegating to Ops Agent: deploy*.", is prose:
    // nothing for it.
    if let Some(e) = api_error {
        v.push(row("error", "", e));
    }
    v
}

const API_ERROR: &str = "API Error: 400 fake server: scripted invalid_request_error for testing";

#[test]
fn fullscreen_capture() {
    assert_eq!(raw("fullscreen.raw"), delegation_exchange(Some(API_ERROR)));
}

#[test]
fn classic_capture() {
    assert_eq!(raw("classic.raw"), delegation_exchange(Some(API_ERROR)));
}

#[test]
fn screenreader_capture() {
    let e = format!("error: {API_ERROR}");
    assert_eq!(raw("screenreader.raw"), delegation_exchange(Some(&e)));
}

/// `claude -p` made one request: the reply, no API error (the scenario's error rule needs a second
/// prompt "trigger api error", which print mode never sends).
#[test]
fn print_mode_capture() {
    assert_eq!(raw("print_mode.raw"), delegation_exchange(None));
}

/// `scenarios/agent_tool.json`, as the classic screen shows it:
/// * "I'll delegate this to an engineer sub-agent." — prose, nothing;
/// * the real `Agent` tool call `● Agent(Engineer: implement fibonacci function)` — a delegation claude
///   runs itself (`handled_by_agent`); the agents panel row `◯ general-purpose  Engineer: …` and
///   `● Agent "Engineer: …" finished` are status, nothing;
/// * the sub-agent's reply (`TODO: add property-based tests for fib`, `BUG: none found so far`) is never
///   on screen (claude collapses it), so nothing;
/// * "The engineer finished. Delegating to QA Agent: test the implementation" — the format appears
///   mid-line after a sentence: prose, nothing;
/// * the Bash call prints `TODO: run the QA suite`, shown as tool output `⎿  TODO: run the QA suite` — a
///   ticket (the `● Bash(echo 'TODO: …')` row mentions it mid-line: nothing);
/// * "**QA Agent**: verify the fibonacci implementation" — a delegation;
/// * "TICKET: ENG-43 follow up on fib edge cases" — a ticket.
#[test]
fn agent_classic_capture() {
    let mut first = row("delegation", "engineer", "implement fibonacci function");
    first.3 = true;
    assert_eq!(
        raw("agent_classic.raw"),
        vec![
            first,
            row("ticket", "TODO", "run the QA suite"),
            row("delegation", "qa", "verify the fibonacci implementation"),
            row("ticket", "TICKET", "ENG-43 follow up on fib edge cases"),
        ]
    );
}

/// Several files are one session: the same exchange twice gives its detections once.
#[test]
fn files_share_one_dedup() {
    let path = captures_dir().join("classic.raw");
    let p = path.to_string_lossy().to_string();
    let twice = scan(&["--input", "raw", &p], "classic.raw");
    assert_eq!(twice, delegation_exchange(Some(API_ERROR)));
}
