//! Transcripts of the other agent CLIs as exact sources: codex's rollout JSONL and gemini's chat
//! JSONL, read like claude's transcript ([`super::claude`]'s tail loop) and turned into the same
//! [`Item`]s, plus the end of each turn.
//!
//! Both files are written when a message **completes**, never while it streams, so they carry each
//! reply whole: the transcript is the source of truth for dispatch and the screen the turn-aware
//! fallback. Where each lives (checked on codex-cli 0.171.0 and gemini-cli 0.61.0):
//! * **codex**: `$CODEX_HOME/sessions/YYYY/MM/DD/rollout-<time>-<uuid>.jsonl` (`CODEX_HOME` defaults
//!   to `~/.codex`). No flag chooses the session id, so the file is the newest rollout written
//!   since the session started whose first line (`session_meta`) has the session's `cwd`. Lines:
//!   `response_item` with `payload.type: message`, `role: assistant`, `content[].output_text` (the
//!   exact markdown); `event_msg` `task_complete` ends the turn; `event_msg` `error` is a failed turn.
//! * **gemini**: `~/.gemini/tmp/<project>/chats/session-<time>-<first 8 of the session id>.jsonl`,
//!   `<project>` from `~/.gemini/projects.json` (the cwd's basename by default): the newest written
//!   since the session started. Lines: a header, `{"$set": …}` updates, messages
//!   `{"type": "user" | "gemini" | "error" | "info", "content": …}`; a `gemini` message's
//!   `content` is the exact markdown and ends the turn.
//!
//! * **aider**: `.aider.chat.history.md` in the working folder (appended to across sessions, so a
//!   file that exists at the start is read from its end). Markdown: `#### ` lines are the user's,
//!   `> ` lines aider's own (startup, `> Tokens: …` after each reply, errors), the rest the reply
//!   verbatim: each reply is one text item, and `> Tokens:` ends the turn.
//!
//! opencode's SQLite store (`opencode export`) is not read: the screen is its only source (see
//! fixtures/README.md).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::claude::Item;

/// How often the transcript's location is looked for until it appears (it is created with the
/// session's first message).
const LOCATE_POLL: Duration = Duration::from_millis(300);

/// The CLIs whose transcript is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Codex,
    Gemini,
    Aider,
}

impl Kind {
    /// The transcript kind of a profile, if mpm reads its transcript.
    pub(crate) fn of_profile(profile: &str) -> Option<Kind> {
        match profile {
            "codex" => Some(Kind::Codex),
            "gemini" => Some(Kind::Gemini),
            "aider" => Some(Kind::Aider),
            _ => None,
        }
    }
}

/// What one transcript line says.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Entry {
    Item(Item),
    /// The turn is over (codex `task_complete`, a gemini reply).
    TurnEnd,
}

/// One line of `kind`'s JSONL transcript (codex, gemini).
pub(crate) fn parse_line(kind: Kind, line: &str) -> Vec<Entry> {
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return Vec::new();
    };
    match kind {
        Kind::Codex => codex_line(&v),
        Kind::Gemini => gemini_line(&v),
        Kind::Aider => Vec::new(),
    }
}

/// aider's chat history, read line by line: the reply's lines are gathered until aider's next own
/// line (`> …`) or the user's (`#### …`).
#[derive(Debug, Default)]
pub(crate) struct AiderHistory {
    reply: Vec<String>,
}

impl AiderHistory {
    pub(crate) fn line(&mut self, line: &str) -> Vec<Entry> {
        let l = line.trim_end_matches('\r');
        let aiders = l.starts_with("> ") || l == ">";
        if !aiders && !l.starts_with("#### ") {
            self.reply.push(l.to_string());
            return Vec::new();
        }
        let mut out = Vec::new();
        let text = std::mem::take(&mut self.reply).join("\n");
        if !text.trim().is_empty() {
            out.push(Entry::Item(Item::Text(text)));
        }
        if l.starts_with("> Tokens:") {
            out.push(Entry::TurnEnd);
        }
        out
    }
}

fn codex_line(v: &Value) -> Vec<Entry> {
    let p = &v["payload"];
    match (v["type"].as_str(), p["type"].as_str()) {
        (Some("response_item"), Some("message")) if p["role"] == "assistant" => {
            let text: Vec<&str> = p["content"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["type"] == "output_text")
                .filter_map(|c| c["text"].as_str())
                .collect();
            if text.is_empty() {
                Vec::new()
            } else {
                vec![Entry::Item(Item::Text(text.join("\n")))]
            }
        }
        (Some("event_msg"), Some("task_complete")) => vec![Entry::TurnEnd],
        (Some("event_msg"), Some("error")) => {
            let msg = p["message"].as_str().unwrap_or("").trim();
            let mut out = Vec::new();
            if !msg.is_empty() {
                out.push(Entry::Item(Item::ApiError(msg.to_string())));
            }
            out.push(Entry::TurnEnd);
            out
        }
        _ => Vec::new(),
    }
}

fn gemini_line(v: &Value) -> Vec<Entry> {
    let text = |c: &Value| -> String {
        match c {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join(""),
            _ => String::new(),
        }
    };
    match v["type"].as_str() {
        Some("gemini") => {
            let t = text(&v["content"]);
            let mut out = Vec::new();
            if !t.trim().is_empty() {
                out.push(Entry::Item(Item::Text(t)));
            }
            out.push(Entry::TurnEnd);
            out
        }
        Some("error") => {
            let t = text(&v["content"]);
            let mut out = Vec::new();
            if !t.trim().is_empty() {
                out.push(Entry::Item(Item::ApiError(t)));
            }
            out.push(Entry::TurnEnd);
            out
        }
        _ => Vec::new(),
    }
}

fn modified_since(p: &Path, since: SystemTime) -> Option<SystemTime> {
    let m = std::fs::metadata(p).ok()?.modified().ok()?;
    (m >= since).then_some(m)
}

/// The newest file in `dirs` whose name passes `name_ok`, written since `since`, that `accept`s.
fn newest(
    dirs: &[PathBuf],
    since: SystemTime,
    name_ok: impl Fn(&str) -> bool,
    accept: impl Fn(&Path) -> bool,
) -> Option<PathBuf> {
    let mut best: Option<(SystemTime, PathBuf)> = None;
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let name_fits = p.file_name().and_then(|n| n.to_str()).is_some_and(&name_ok);
            if !name_fits {
                continue;
            }
            let Some(m) = modified_since(&p, since) else {
                continue;
            };
            if best.as_ref().is_some_and(|(b, _)| *b >= m) || !accept(&p) {
                continue;
            }
            best = Some((m, p));
        }
    }
    best.map(|(_, p)| p)
}

/// The sub-directories of `dir` (names sorted, newest last).
fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

/// codex: the newest rollout under `codex_home/sessions` written since `since` whose
/// `session_meta.cwd` is `cwd`.
pub(crate) fn locate_codex(codex_home: &Path, cwd: &Path, since: SystemTime) -> Option<PathBuf> {
    // sessions/YYYY/MM/DD: the last two days are enough (a session that crosses midnight).
    let mut days = Vec::new();
    for y in subdirs(&codex_home.join("sessions")).iter().rev().take(2) {
        for m in subdirs(y).iter().rev().take(2) {
            days.extend(subdirs(m).into_iter().rev().take(2));
        }
    }
    let want = std::fs::canonicalize(cwd).unwrap_or_else(|_| cwd.to_path_buf());
    newest(
        &days,
        since,
        |n| n.starts_with("rollout-") && n.ends_with(".jsonl"),
        |p| {
            let Ok(f) = std::fs::File::open(p) else {
                return false;
            };
            let mut first = String::new();
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(f), &mut first);
            let Ok(v) = serde_json::from_str::<Value>(&first) else {
                return false;
            };
            v["payload"]["cwd"]
                .as_str()
                .map(|c| std::fs::canonicalize(c).unwrap_or_else(|_| PathBuf::from(c)))
                .is_some_and(|c| c == want)
        },
    )
}

/// gemini: the newest chat file of `cwd`'s project under `home/.gemini/tmp` written since `since`.
pub(crate) fn locate_gemini(home: &Path, cwd: &Path, since: SystemTime) -> Option<PathBuf> {
    let gemini = home.join(".gemini");
    let key = std::fs::canonicalize(cwd).unwrap_or_else(|_| cwd.to_path_buf());
    let project = std::fs::read_to_string(gemini.join("projects.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        .and_then(|v| {
            let p = &v["projects"];
            p[key.to_string_lossy().as_ref()]
                .as_str()
                .or_else(|| p[cwd.to_string_lossy().as_ref()].as_str())
                .map(String::from)
        })
        .or_else(|| key.file_name().map(|n| n.to_string_lossy().into_owned()))?;
    newest(
        &[gemini.join("tmp").join(project).join("chats")],
        since,
        |n| n.starts_with("session-") && n.ends_with(".jsonl"),
        |_| true,
    )
}

/// Where `kind`'s transcript of a session in `cwd` started at `since` is, once it exists.
pub(crate) fn locate(
    kind: Kind,
    env_home: &Path,
    codex_home: Option<&Path>,
    cwd: &Path,
    since: SystemTime,
) -> Option<PathBuf> {
    match kind {
        Kind::Codex => {
            let ch = codex_home.map_or_else(|| env_home.join(".codex"), Path::to_path_buf);
            locate_codex(&ch, cwd, since)
        }
        Kind::Gemini => locate_gemini(env_home, cwd, since),
        Kind::Aider => Some(cwd.join(".aider.chat.history.md")),
    }
}

/// Follows one CLI transcript on a thread: looks for the file until it appears, then tails it.
pub(crate) struct CliTranscript {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for CliTranscript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CliTranscript").finish_non_exhaustive()
    }
}

impl CliTranscript {
    /// Start looking with `locate` (called every [`LOCATE_POLL`] until it gives a path), then call
    /// `on_entry` for each entry of each complete line, on the thread.
    pub(crate) fn spawn<L, F>(
        kind: Kind,
        locate: L,
        mut on_entry: F,
    ) -> std::io::Result<CliTranscript>
    where
        L: Fn() -> Option<PathBuf> + Send + 'static,
        F: FnMut(Entry) + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("mpm-cli-transcript".into())
            .spawn(move || {
                let path = loop {
                    // Read the flag first: a last look still finds a file written before stop().
                    let last = flag.load(Ordering::SeqCst);
                    if let Some(p) = locate() {
                        break p;
                    }
                    if last {
                        return;
                    }
                    std::thread::sleep(LOCATE_POLL);
                };
                tracing::debug!(path = %path.display(), "following the CLI's transcript");
                let (_keep, syncs) = crossbeam_channel::unbounded();
                // aider appends to one history file across sessions: only what this one adds.
                let from_end = kind == Kind::Aider && path.exists();
                let mut aider = AiderHistory::default();
                super::claude::tail_loop(&path, from_end, &flag, &syncs, &mut |line| {
                    let entries = match kind {
                        Kind::Aider => aider.line(line),
                        _ => parse_line(kind, line),
                    };
                    for e in entries {
                        on_entry(e);
                    }
                });
            })?;
        Ok(CliTranscript {
            stop,
            handle: Some(handle),
        })
    }

    /// Read what is left, then stop the thread and wait for it.
    pub(crate) fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for CliTranscript {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codex_lines() {
        let msg = r#"{"type":"response_item","payload":{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Engineer Agent: implement fib"}]}}"#;
        assert_eq!(
            parse_line(Kind::Codex, msg),
            vec![Entry::Item(Item::Text(
                "Engineer Agent: implement fib".into()
            ))]
        );
        let user = r#"{"type":"response_item","payload":{"type":"message","role":"user","content":[{"type":"input_text","text":"TODO: typed"}]}}"#;
        assert!(parse_line(Kind::Codex, user).is_empty());
        let done =
            r#"{"type":"event_msg","payload":{"type":"task_complete","last_agent_message":"x"}}"#;
        assert_eq!(parse_line(Kind::Codex, done), vec![Entry::TurnEnd]);
        assert!(parse_line(Kind::Codex, "not json").is_empty());
    }

    #[test]
    fn gemini_lines() {
        let msg = r#"{"id":"a","type":"gemini","content":"**QA Agent**: test it"}"#;
        assert_eq!(
            parse_line(Kind::Gemini, msg),
            vec![
                Entry::Item(Item::Text("**QA Agent**: test it".into())),
                Entry::TurnEnd
            ]
        );
        let user = r#"{"id":"b","type":"user","content":[{"text":"TODO: typed"}]}"#;
        assert!(parse_line(Kind::Gemini, user).is_empty());
        assert!(parse_line(Kind::Gemini, r#"{"$set":{"lastUpdated":"x"}}"#).is_empty());
    }

    #[test]
    fn aider_history() {
        let mut h = AiderHistory::default();
        let mut got = Vec::new();
        for l in [
            "> Aider v0.86.2",
            "",
            "#### plan fib",
            "",
            "Engineer Agent: implement fib",
            "",
            "TODO: cache it",
            "",
            "> Tokens: 593 sent, 166 received.",
        ] {
            got.extend(h.line(l));
        }
        assert_eq!(
            got,
            vec![
                Entry::Item(Item::Text(
                    "\nEngineer Agent: implement fib\n\nTODO: cache it\n".into()
                )),
                Entry::TurnEnd
            ]
        );
    }

    #[test]
    fn locates_the_sessions_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let cwd = dir.path().join("work");
        std::fs::create_dir_all(&cwd).unwrap_or_else(|e| panic!("{e}"));
        let since = SystemTime::now() - Duration::from_secs(5);
        // codex: the rollout of this cwd, not another folder's.
        let day = dir.path().join("codex/sessions/2026/12/02");
        std::fs::create_dir_all(&day).unwrap_or_else(|e| panic!("{e}"));
        let meta = |c: &Path| {
            format!(
                "{{\"type\":\"session_meta\",\"payload\":{{\"cwd\":{:?}}}}}\n",
                c.display().to_string()
            )
        };
        std::fs::write(day.join("rollout-a.jsonl"), meta(&cwd)).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(day.join("rollout-b.jsonl"), meta(Path::new("/elsewhere")))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            locate_codex(&dir.path().join("codex"), &cwd, since),
            Some(day.join("rollout-a.jsonl"))
        );
        // Written before the session: not this session's.
        let later = SystemTime::now() + Duration::from_secs(60);
        assert_eq!(locate_codex(&dir.path().join("codex"), &cwd, later), None);
        // gemini: the project named in projects.json.
        let home = dir.path().join("home");
        let chats = home.join(".gemini/tmp/proj/chats");
        std::fs::create_dir_all(&chats).unwrap_or_else(|e| panic!("{e}"));
        let canon = std::fs::canonicalize(&cwd).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            home.join(".gemini/projects.json"),
            format!(
                "{{\"projects\":{{{:?}:\"proj\"}}}}",
                canon.display().to_string()
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(chats.join("session-x.jsonl"), "{}\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            locate_gemini(&home, &cwd, since),
            Some(chats.join("session-x.jsonl"))
        );
    }
}
