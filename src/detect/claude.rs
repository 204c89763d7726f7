//! The claude-specific text sources: the session transcript (JSONL) and `--output-format stream-json`.
//!
//! Claude appends every finished message to
//! `$HOME/.claude/projects/<cwd, each non-alphanumeric char as '-'>/<session-id>.jsonl`; assistant
//! entries carry the model's exact markdown, which is cleaner than the screen. `mpm run` pins the file
//! name by adding `--session-id <uuid>` ([`prepare_args`]) and follows it with a [`TranscriptTailer`].

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

/// One piece of agent output found in a transcript or stream-json line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// Assistant text: markdown, possibly many lines.
    Text(String),
    /// An `Agent`/`Task` tool call: a delegation claude runs itself.
    AgentTool {
        /// The call's `description` (the task).
        description: String,
        /// The call's `subagent_type` (the agent), when given.
        subagent_type: Option<String>,
    },
    /// A synthetic API-error message (`isApiErrorMessage`).
    ApiError(String),
    /// The text of a tool result that failed (`is_error`) or shows a failure (a traceback, failing
    /// tests): a failing Bash call's output exists only here in the fullscreen renderer.
    ToolError(String),
}

/// The most text of one tool result read for errors (a result can be megabytes; failures print
/// their summary at the end, so the tail is kept).
const MAX_TOOL_TEXT: usize = 64 * 1024;

/// Does a successful tool result's text still show a failure? A Python traceback, or a test
/// runner's failure summary.
fn shows_failure(text: &str) -> bool {
    text.contains("Traceback (most recent call last):")
        || text.contains("test result: FAILED")
        || text.lines().any(|l| {
            let l = l.trim_start();
            l.starts_with("FAILED ") || (l.starts_with("=") && l.contains(" failed"))
        })
}

/// The text of a `tool_result` block's `content` (a string or text blocks), its tail at most
/// [`MAX_TOOL_TEXT`] bytes.
fn tool_result_text(content: Option<&Value>) -> String {
    let mut t = String::new();
    match content {
        Some(Value::String(s)) => t.push_str(s),
        Some(Value::Array(parts)) => {
            for p in parts {
                if let Some(x) = p.get("text").and_then(Value::as_str) {
                    if !t.is_empty() {
                        t.push('\n');
                    }
                    t.push_str(x);
                }
            }
        }
        _ => {}
    }
    if t.len() > MAX_TOOL_TEXT {
        let mut cut = t.len() - MAX_TOOL_TEXT;
        while !t.is_char_boundary(cut) {
            cut += 1;
        }
        t.drain(..cut);
    }
    t
}

/// Failed tool results in a `user` line's content.
fn tool_errors(content: &Value, out: &mut Vec<Item>) {
    let Value::Array(blocks) = content else {
        return;
    };
    for b in blocks {
        if b.get("type").and_then(Value::as_str) != Some("tool_result") {
            continue;
        }
        let text = tool_result_text(b.get("content"));
        let is_error = b.get("is_error").and_then(Value::as_bool) == Some(true);
        if !text.trim().is_empty() && (is_error || shows_failure(&text)) {
            out.push(Item::ToolError(text));
        }
    }
}

/// The claude argv after mpm's additions, and the session whose transcript to follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaudeArgs {
    /// The arguments to pass (without the program name).
    pub args: Vec<String>,
    /// The session id whose transcript to tail; `None` when it cannot be known (`--continue`, `--resume`
    /// without an id, `--fork-session`, `--no-session-persistence`).
    pub session_id: Option<String>,
    /// True when the transcript already exists (a resumed session): tail it from its current end.
    pub resumed: bool,
}

/// The value of `--flag value` or `--flag=value` in `args`.
fn flag_value(args: &[String], names: &[&str]) -> Option<Option<String>> {
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            return None;
        }
        for n in names {
            if a == n {
                let v = args.get(i + 1).filter(|v| !v.starts_with('-')).cloned();
                return Some(v);
            }
            if let Some(v) = a.strip_prefix(n).and_then(|r| r.strip_prefix('=')) {
                return Some(Some(v.to_string()));
            }
        }
        i += 1;
    }
    None
}

fn has_flag(args: &[String], names: &[&str]) -> bool {
    args.iter()
        .take_while(|a| *a != "--")
        .any(|a| names.contains(&a.as_str()))
}

/// Add `--session-id <uuid>` to claude's arguments unless the user chose a session: `--session-id X`
/// is kept and followed; `--resume X`/`-r X` follows X from its current end; `--continue`/`-c`,
/// `--resume` without an id and `--fork-session` leave the argv alone and disable the transcript
/// source (the id is not known up front); so does `--no-session-persistence`.
pub fn prepare_args(args: &[String]) -> ClaudeArgs {
    let unknown = ClaudeArgs {
        args: args.to_vec(),
        session_id: None,
        resumed: false,
    };
    if has_flag(args, &["--no-session-persistence"]) {
        return unknown;
    }
    if let Some(v) = flag_value(args, &["--session-id"]) {
        return ClaudeArgs {
            args: args.to_vec(),
            session_id: v,
            resumed: false,
        };
    }
    if has_flag(args, &["--fork-session", "--continue", "-c"]) {
        return unknown;
    }
    if let Some(v) = flag_value(args, &["--resume", "-r"]) {
        return ClaudeArgs {
            args: args.to_vec(),
            resumed: v.is_some(),
            session_id: v,
        };
    }
    let id = crate::events::new_id();
    let mut out = Vec::with_capacity(args.len() + 2);
    // Before a `--` separator, if any, so claude still reads it as a flag.
    let sep = args.iter().position(|a| a == "--").unwrap_or(args.len());
    out.extend_from_slice(&args[..sep]);
    out.push("--session-id".into());
    out.push(id.clone());
    out.extend_from_slice(&args[sep..]);
    ClaudeArgs {
        args: out,
        session_id: Some(id),
        resumed: false,
    }
}

/// Claude's project folder name for `cwd`: every character that is not an ASCII letter or digit
/// becomes `-` (one per UTF-16 unit, as claude's JavaScript does).
pub(crate) fn project_dir_name(cwd: &Path) -> String {
    cwd.to_string_lossy()
        .chars()
        .flat_map(|c| {
            let n = if c.is_ascii_alphanumeric() {
                0
            } else {
                c.len_utf16()
            };
            let keep = if n == 0 { Some(c) } else { None };
            keep.into_iter().chain(std::iter::repeat_n('-', n))
        })
        .collect()
}

/// `$HOME/.claude/projects/<project_dir_name(cwd)>/<session_id>.jsonl`.
pub fn transcript_path(home: &Path, cwd: &Path, session_id: &str) -> PathBuf {
    home.join(".claude")
        .join("projects")
        .join(project_dir_name(cwd))
        .join(format!("{session_id}.jsonl"))
}

fn content_items(content: &Value, api_error: bool, out: &mut Vec<Item>) {
    match content {
        Value::String(s) => out.push(if api_error {
            Item::ApiError(s.clone())
        } else {
            Item::Text(s.clone())
        }),
        Value::Array(blocks) => {
            for b in blocks {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(t) = b.get("text").and_then(Value::as_str) {
                            out.push(if api_error {
                                Item::ApiError(t.to_string())
                            } else {
                                Item::Text(t.to_string())
                            });
                        }
                    }
                    Some("tool_use") => {
                        let name = b.get("name").and_then(Value::as_str).unwrap_or("");
                        if name == "Agent" || name == "Task" {
                            let input = b.get("input");
                            let s = |k: &str| {
                                input
                                    .and_then(|i| i.get(k))
                                    .and_then(Value::as_str)
                                    .map(str::to_string)
                            };
                            if let Some(description) = s("description") {
                                out.push(Item::AgentTool {
                                    description,
                                    subagent_type: s("subagent_type"),
                                });
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// Does this transcript line end the main agent's turn? claude writes each assistant content block
/// as its own line with the message's `stop_reason`: `tool_use` while the turn goes on (a tool call
/// follows), `end_turn` (or `stop_sequence`, `max_tokens`) on the turn's last message. A sub-agent's
/// lines (`isSidechain`, their own files) end nothing here. An API-error message (`isApiErrorMessage`)
/// ends the turn too: claude gives up on it. Cheap for other lines: a substring test before parsing.
pub(crate) fn turn_ended(line: &str) -> bool {
    if !line.contains("\"assistant\"") {
        return false;
    }
    let stop = line.contains("end_turn")
        || line.contains("stop_sequence")
        || line.contains("max_tokens")
        || line.contains("isApiErrorMessage");
    if !stop {
        return false;
    }
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return false;
    };
    if v.get("type").and_then(Value::as_str) != Some("assistant")
        || v.get("isSidechain").and_then(Value::as_bool) == Some(true)
        || v.get("parent_tool_use_id").is_some_and(|p| !p.is_null())
    {
        return false;
    }
    if v.get("isApiErrorMessage").and_then(Value::as_bool) == Some(true) {
        return true;
    }
    matches!(
        v.get("message")
            .and_then(|m| m.get("stop_reason"))
            .and_then(Value::as_str),
        Some("end_turn" | "stop_sequence" | "max_tokens")
    )
}

/// The items of one transcript or stream-json line. Lines that are not JSON, not assistant output, or
/// belong to a sub-agent (`isSidechain`, or a stream line with a `parent_tool_use_id`) give nothing:
/// a sub-agent's own words are not the session's.
pub(crate) fn parse_line(line: &str) -> Vec<Item> {
    let mut out = Vec::new();
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return out;
    };
    if v.get("isSidechain").and_then(Value::as_bool) == Some(true)
        || v.get("parent_tool_use_id").is_some_and(|p| !p.is_null())
    {
        return out;
    }
    match v.get("type").and_then(Value::as_str) {
        Some("assistant") => {
            let api_error = v.get("isApiErrorMessage").and_then(Value::as_bool) == Some(true);
            if let Some(c) = v.get("message").and_then(|m| m.get("content")) {
                content_items(c, api_error, &mut out);
            }
        }
        Some("user") => {
            if let Some(c) = v.get("message").and_then(|m| m.get("content")) {
                tool_errors(c, &mut out);
            }
        }
        Some("result") => {
            // The final text repeats the assistant blocks (de-duplicated later); an error result may
            // carry text no assistant block had.
            if let Some(r) = v.get("result").and_then(Value::as_str) {
                out.push(Item::Text(r.to_string()));
            }
        }
        _ => {}
    }
    out
}

/// Lines of markdown worth matching: fenced code blocks are skipped (a `// TODO` in code is not a
/// ticket).
#[cfg(test)]
pub(crate) fn markdown_lines(text: &str) -> impl Iterator<Item = &str> {
    markdown_lines_with_code(text).filter_map(|(l, code)| (!code).then_some(l))
}

/// Every line of markdown that is not a fence line, with whether it lies inside a fenced code
/// block (for the patterns that ask for code).
pub(crate) fn markdown_lines_with_code(text: &str) -> impl Iterator<Item = (&str, bool)> {
    let mut in_fence = false;
    text.lines().filter_map(move |l| {
        let t = l.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            in_fence = !in_fence;
            return None;
        }
        Some((l, in_fence))
    })
}

/// How often the tailer looks for new transcript lines.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// A transcript line longer than this is skipped (tool results can be huge; assistant text is not).
const MAX_LINE: usize = 16 * 1024 * 1024;

/// Follows a growing transcript file on its own thread and hands each complete line to a callback.
///
/// It polls: every [`POLL_INTERVAL`] it reads whatever was appended (one `read` syscall when nothing
/// changed, i.e. ~10 syscalls a second, no measurable CPU). Polling was chosen over inotify because the
/// file may not exist yet when the session starts (claude creates it with the first message), may be
/// replaced, and the latency budget (a delegation appears when its message completes) is far above
/// 100 ms.
#[derive(Debug)]
pub struct TranscriptTailer {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    sync: TranscriptSync,
}

/// Asks the tailer to read everything already in the file now (see [`TranscriptSync::sync`]).
#[derive(Debug, Clone)]
pub struct TranscriptSync {
    tx: crossbeam_channel::Sender<crossbeam_channel::Sender<()>>,
}

impl TranscriptSync {
    /// Read what the file holds now, handing each complete line to the callback, and return when
    /// that is done (or after `timeout`; false then). The end of a turn uses it so that every
    /// detection of the turn's transcript is in before the turn is closed.
    pub fn sync(&self, timeout: Duration) -> bool {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.tx.send(tx).is_ok() && rx.recv_timeout(timeout).is_ok()
    }
}

impl TranscriptTailer {
    /// Start following `path`. With `from_end`, lines already in the file are skipped. `on_line` is
    /// called on the tailer thread for each complete line.
    pub fn spawn<F>(
        path: PathBuf,
        from_end: bool,
        mut on_line: F,
    ) -> std::io::Result<TranscriptTailer>
    where
        F: FnMut(&str) + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (tx, rx) = crossbeam_channel::unbounded();
        let handle = std::thread::Builder::new()
            .name("mpm-transcript".into())
            .spawn(move || tail_loop(&path, from_end, &flag, &rx, &mut on_line))?;
        Ok(TranscriptTailer {
            stop,
            handle: Some(handle),
            sync: TranscriptSync { tx },
        })
    }

    /// A handle to make the tailer read up to the file's current end on demand.
    pub fn syncer(&self) -> TranscriptSync {
        self.sync.clone()
    }

    /// Read what is left in the file, then stop the thread and wait for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for TranscriptTailer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

pub(crate) fn tail_loop(
    path: &Path,
    from_end: bool,
    stop: &AtomicBool,
    syncs: &crossbeam_channel::Receiver<crossbeam_channel::Sender<()>>,
    on_line: &mut dyn FnMut(&str),
) {
    let mut waiting: Vec<crossbeam_channel::Sender<()>> = Vec::new();
    let mut file: Option<File> = None;
    let mut pos: u64 = 0;
    let mut partial: Vec<u8> = Vec::new();
    let mut skipping = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Read the stop flag first, so the last pass still drains what was written before stop().
        let last = stop.load(Ordering::SeqCst);
        if file.is_none()
            && let Ok(mut f) = File::open(path)
        {
            if from_end {
                pos = f.seek(SeekFrom::End(0)).unwrap_or(0);
            }
            file = Some(f);
        }
        if let Some(f) = file.as_mut() {
            // A shorter file was truncated or replaced: start over.
            if f.metadata().map(|m| m.len() < pos).unwrap_or(false) {
                pos = 0;
                partial.clear();
                let _ = f.seek(SeekFrom::Start(0));
            }
            loop {
                let n = match f.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                pos += n as u64;
                let mut chunk = &buf[..n];
                while let Some(nl) = memchr::memchr(b'\n', chunk) {
                    if !skipping {
                        partial.extend_from_slice(&chunk[..nl]);
                        on_line(&String::from_utf8_lossy(&partial));
                    }
                    partial.clear();
                    skipping = false;
                    chunk = &chunk[nl + 1..];
                }
                if !skipping {
                    partial.extend_from_slice(chunk);
                    if partial.len() > MAX_LINE {
                        tracing::debug!("transcript line over {MAX_LINE} bytes skipped");
                        partial.clear();
                        skipping = true;
                    }
                }
            }
        }
        for w in waiting.drain(..) {
            let _ = w.send(());
        }
        if last {
            return;
        }
        // Sleep until the next poll, or until someone asks for a read now.
        if let Ok(w) = syncs.recv_timeout(POLL_INTERVAL) {
            waiting.push(w);
            waiting.extend(syncs.try_iter());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn adds_a_session_id() {
        let a = prepare_args(&v(&["--model", "sonnet"]));
        let id = a.session_id.clone().unwrap_or_default();
        assert_eq!(a.args, v(&["--model", "sonnet", "--session-id", &id]));
        assert!(uuid::Uuid::parse_str(&id).is_ok());
        assert!(!a.resumed);
        let b = prepare_args(&v(&["-p", "x", "--", "rest"]));
        assert_eq!(b.args[2], "--session-id");
        assert_eq!(b.args[4], "--");
    }

    #[test]
    fn respects_the_users_session_choice() {
        let a = prepare_args(&v(&["--session-id=abc"]));
        assert_eq!(
            (a.args, a.session_id),
            (v(&["--session-id=abc"]), Some("abc".into()))
        );
        let r = prepare_args(&v(&["-r", "abc"]));
        assert_eq!(r.session_id.as_deref(), Some("abc"));
        assert!(r.resumed);
        for args in [
            &["-c"][..],
            &["--resume"][..],
            &["--resume", "x", "--fork-session"][..],
        ] {
            let c = prepare_args(&v(args));
            assert_eq!(c.args, v(args));
            assert_eq!(c.session_id, None, "{args:?}");
        }
    }

    #[test]
    fn project_dir_and_path() {
        assert_eq!(
            project_dir_name(Path::new("/tmp/mpm_cc.work-x")),
            "-tmp-mpm-cc-work-x"
        );
        assert_eq!(
            transcript_path(Path::new("/h"), Path::new("/a b"), "id"),
            PathBuf::from("/h/.claude/projects/-a-b/id.jsonl")
        );
    }

    #[test]
    fn parses_assistant_lines() {
        let line = r#"{"type":"assistant","message":{"content":[{"type":"text","text":"**QA Agent**: test"},{"type":"tool_use","name":"Agent","input":{"description":"Engineer: implement fib","subagent_type":"general-purpose"}},{"type":"tool_use","name":"Bash","input":{"description":"x"}}]}}"#;
        assert_eq!(
            parse_line(line),
            vec![
                Item::Text("**QA Agent**: test".into()),
                Item::AgentTool {
                    description: "Engineer: implement fib".into(),
                    subagent_type: Some("general-purpose".into())
                }
            ]
        );
        let err = r#"{"type":"assistant","isApiErrorMessage":true,"message":{"content":[{"type":"text","text":"API Error: 400 x"}]}}"#;
        assert_eq!(
            parse_line(err),
            vec![Item::ApiError("API Error: 400 x".into())]
        );
        let side = r#"{"type":"assistant","isSidechain":true,"message":{"content":"TODO: x"}}"#;
        assert!(parse_line(side).is_empty());
        assert!(parse_line("not json {").is_empty());
        assert!(parse_line(r#"{"type":"user","message":{"content":"TODO: x"}}"#).is_empty());
    }

    #[test]
    fn failing_tool_results_are_read() {
        let failed = r#"{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t1","is_error":true,"content":"Exit code 1\nTraceback (most recent call last):\n  File \"x.py\", line 1\nModuleNotFoundError: No module named 'fib'"}]}}"#;
        match parse_line(failed).as_slice() {
            [Item::ToolError(t)] => assert!(t.ends_with("No module named 'fib'"), "{t}"),
            other => panic!("{other:?}"),
        }
        let tests = r#"{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t2","content":[{"type":"text","text":"collected 3 items\nFAILED tests/test_fib.py::test_neg - ValueError\n===== 1 failed, 2 passed ====="}]}]}}"#;
        assert!(matches!(parse_line(tests).as_slice(), [Item::ToolError(_)]));
        // A successful result, even one that mentions errors in code it read, is not a failure.
        let ok = r#"{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t3","content":"raise ValueError('n < 0')\nError: handled"}]}}"#;
        assert!(parse_line(ok).is_empty());
    }

    #[test]
    fn fenced_code_is_skipped() {
        let l: Vec<&str> = markdown_lines("a\n```\n// TODO: x\n```\nb").collect();
        assert_eq!(l, ["a", "b"]);
    }

    #[test]
    fn the_turn_ends_at_the_main_agents_end_turn_message() {
        // A real claude 2.1.331 transcript (`claude -p` against fake_llm.py, scenario subagent.json):
        // text + Agent call, Bash call (both `tool_use`), then the final text (`end_turn`).
        let text = include_str!("../../fixtures/transcripts/tool_turn.jsonl");
        let ends: Vec<usize> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| turn_ended(l))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(ends, [text.lines().count() - 1]);
        let table = [
            (
                r#"{"type":"assistant","message":{"stop_reason":"end_turn","content":[]}}"#,
                true,
            ),
            (
                r#"{"type":"assistant","message":{"stop_reason":"tool_use","content":[]}}"#,
                false,
            ),
            (
                r#"{"type":"assistant","message":{"stop_reason":null,"content":[{"type":"text","text":"end_turn"}]}}"#,
                false,
            ),
            (
                r#"{"type":"assistant","isSidechain":true,"message":{"stop_reason":"end_turn"}}"#,
                false,
            ),
            (
                r#"{"type":"assistant","parent_tool_use_id":"t1","message":{"stop_reason":"end_turn"}}"#,
                false,
            ),
            (
                r#"{"type":"assistant","isApiErrorMessage":true,"message":{"content":[]}}"#,
                true,
            ),
            (
                r#"{"type":"user","message":{"content":"end_turn \"assistant\""}}"#,
                false,
            ),
            ("not json end_turn \"assistant\"", false),
        ];
        for (line, want) in table {
            assert_eq!(turn_ended(line), want, "{line}");
        }
    }

    #[test]
    fn tailer_follows_a_growing_file() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("t.jsonl");
        let (tx, rx) = crossbeam_channel::unbounded();
        let t = TranscriptTailer::spawn(path.clone(), false, move |l| {
            let _ = tx.send(l.to_string());
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let mut f = File::create(&path).unwrap_or_else(|e| panic!("{e}"));
        f.write_all(b"one\ntw").unwrap_or_else(|e| panic!("{e}"));
        f.flush().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)).ok().as_deref(),
            Some("one")
        );
        f.write_all(b"o\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)).ok().as_deref(),
            Some("two")
        );
        f.write_all(b"three\n").unwrap_or_else(|e| panic!("{e}"));
        // A sync returns once the line written before it was handed over.
        assert!(t.syncer().sync(Duration::from_secs(10)));
        assert_eq!(rx.try_recv().ok().as_deref(), Some("three"));
        f.write_all(b"four\n").unwrap_or_else(|e| panic!("{e}"));
        t.stop();
        // stop() drains what was written before it.
        assert_eq!(rx.try_recv().ok().as_deref(), Some("four"));
    }
}
