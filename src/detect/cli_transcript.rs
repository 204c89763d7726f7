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
//!   `content` is the exact markdown and ends the turn. mpm starts gemini with `--session-id
//!   <uuid>` (unless the user chose or resumes a session), so the file is found by its name.
//!
//! * **aider**: `.aider.chat.history.md` in the working folder (appended to across sessions, so a
//!   file that exists at the start is read from its end). Markdown: `#### ` lines are the user's,
//!   `> ` lines aider's own (startup, `> Tokens: …` after each reply, errors), the rest the reply
//!   verbatim: each reply is one text item, and `> Tokens:` ends the turn.
//!
//! * **opencode**: no text log; its sessions are in SQLite, `$XDG_DATA_HOME/opencode/opencode.db`
//!   (`~/.local/share/…`), what `opencode export <id>` prints as JSON. Running `opencode export`
//!   at each turn's end would start a 550 MB bun process per turn, so the store is read directly,
//!   read-only ([`OpencodeStore`]): the session is the newest one created since the session
//!   started whose `directory` is the cwd; an assistant `message` whose `data.time.completed` is
//!   set is whole, its `part`s of type `text` are the exact markdown, `data.error` a failed turn,
//!   and a `finish` other than `tool-calls` ends the turn. Checked on opencode 1.18.33 (the schema
//!   is opencode's own: a store it cannot read leaves the screen as the only source).

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
    Opencode,
}

impl Kind {
    /// The transcript kind of a profile, if mpm reads its transcript.
    pub(crate) fn of_profile(profile: &str) -> Option<Kind> {
        match profile {
            "codex" => Some(Kind::Codex),
            "gemini" => Some(Kind::Gemini),
            "aider" => Some(Kind::Aider),
            "opencode" => Some(Kind::Opencode),
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
        Kind::Aider | Kind::Opencode => Vec::new(),
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
    newest(
        &[gemini_chats(home, cwd)?],
        since,
        |n| n.starts_with("session-") && n.ends_with(".jsonl"),
        |_| true,
    )
}

/// gemini's `chats` folder for the project of `cwd`.
fn gemini_chats(home: &Path, cwd: &Path) -> Option<PathBuf> {
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
    Some(gemini.join("tmp").join(project).join("chats"))
}

/// Where `kind`'s transcript of a session in `cwd` started at `since` is, once it exists.
/// The session id gemini runs with: the user's `--session-id`, else a new one that mpm adds to
/// `argv` (gemini-cli 0.61.0 takes `--session-id <uuid>` and names its chat file after it). None
/// when the user resumes a session (`--resume`, `-r`, `--session-file`): its file is then found
/// as the newest.
pub(crate) fn gemini_session_id(argv: &mut Vec<String>) -> Option<String> {
    let mut it = argv.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--session-id" => return it.next().cloned(),
            "--resume" | "-r" | "--session-file" => return None,
            s if s.starts_with("--session-id=") => {
                return Some(s["--session-id=".len()..].to_string());
            }
            s if s.starts_with("--resume=") || s.starts_with("--session-file=") => return None,
            _ => {}
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    argv.splice(1..1, ["--session-id".to_string(), id.clone()]);
    Some(id)
}

/// gemini's chat file of session `id`: `session-<time>-<first 8 of id>.jsonl` in the project's
/// `chats` folder (see [`locate_gemini`] for the project).
pub(crate) fn locate_gemini_session(home: &Path, cwd: &Path, id: &str) -> Option<PathBuf> {
    let short: String = id.chars().take(8).collect();
    let suffix = format!("-{short}.jsonl");
    let chats = gemini_chats(home, cwd)?;
    std::fs::read_dir(chats)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("session-") && n.ends_with(&suffix))
        })
}

pub(crate) fn locate(
    kind: Kind,
    env_home: &Path,
    codex_home: Option<&Path>,
    data_home: Option<&Path>,
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
        Kind::Opencode => {
            let data = data_home
                .filter(|p| p.is_absolute())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| env_home.join(".local/share"));
            Some(data.join("opencode/opencode.db")).filter(|p| p.exists())
        }
    }
}

/// Follows one CLI transcript on a thread: looks for the file until it appears, then tails it.
/// What mpm reads as the exact source of a CLI (by its profile name, as
/// [`crate::detect::cli_screen::profile_of_command`] gives it), for `mpm profiles show`.
pub(crate) fn exact_source(profile: &str) -> Option<&'static str> {
    match profile {
        "claude" => Some("~/.claude/projects/<dir>/<id>.jsonl (mpm adds --session-id), and hooks"),
        "codex" => Some("$CODEX_HOME/sessions/.../rollout-*.jsonl (the newest with this cwd)"),
        "gemini" => {
            Some("~/.gemini/tmp/<project>/chats/session-*-<id>.jsonl (mpm adds --session-id)")
        }
        "aider" => Some(".aider.chat.history.md in the working folder"),
        "opencode" => Some("$XDG_DATA_HOME/opencode/opencode.db (what `opencode export` prints)"),
        _ => None,
    }
}

/// Which opencode session is this one's: created in `cwd` since `since`.
#[derive(Debug, Clone)]
pub(crate) struct OpencodeSession {
    pub(crate) cwd: PathBuf,
    pub(crate) since: SystemTime,
}

/// opencode's SQLite store, read-only, polled: each assistant message once, when it completes.
pub(crate) struct OpencodeStore {
    db: PathBuf,
    cwd: PathBuf,
    since_ms: i64,
    conn: Option<rusqlite::Connection>,
    session: Option<String>,
    done: std::collections::HashSet<String>,
}

impl OpencodeStore {
    pub(crate) fn new(db: PathBuf, cwd: PathBuf, since: SystemTime) -> OpencodeStore {
        let since_ms = since
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        OpencodeStore {
            db,
            cwd,
            since_ms,
            conn: None,
            session: None,
            done: std::collections::HashSet::new(),
        }
    }

    /// The entries of the assistant messages completed since the last poll.
    pub(crate) fn poll(&mut self) -> Vec<Entry> {
        match self.read() {
            Ok(v) => v,
            Err(e) => {
                // Locked, not migrated yet, or a schema this reader does not know: try again later.
                tracing::debug!(error = %e, "reading opencode's store");
                self.conn = None;
                Vec::new()
            }
        }
    }

    fn read(&mut self) -> rusqlite::Result<Vec<Entry>> {
        use rusqlite::OpenFlags;
        if self.conn.is_none() {
            let c = rusqlite::Connection::open_with_flags(
                &self.db,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            c.busy_timeout(Duration::from_millis(200))?;
            self.conn = Some(c);
        }
        let Some(conn) = &self.conn else {
            return Ok(Vec::new());
        };
        if self.session.is_none() {
            let canon = std::fs::canonicalize(&self.cwd).unwrap_or_else(|_| self.cwd.clone());
            let mut q = conn.prepare(
                "SELECT id FROM session WHERE (directory = ?1 OR directory = ?2) \
                 AND parent_id IS NULL AND time_created >= ?3 ORDER BY time_created DESC LIMIT 1",
            )?;
            let mut rows = q.query(rusqlite::params![
                self.cwd.to_string_lossy(),
                canon.to_string_lossy(),
                self.since_ms
            ])?;
            if let Some(r) = rows.next()? {
                self.session = Some(r.get(0)?);
            }
        }
        let Some(session) = &self.session else {
            return Ok(Vec::new());
        };
        let mut q = conn.prepare(
            "SELECT id, data FROM message WHERE session_id = ?1 ORDER BY time_created, id",
        )?;
        let msgs: Vec<(String, String)> = q
            .query_map([session], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut out = Vec::new();
        for (id, data) in msgs {
            if self.done.contains(&id) {
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(&data) else {
                continue;
            };
            if v["role"] != "assistant" {
                self.done.insert(id);
                continue;
            }
            let failed = !v["error"].is_null();
            if v["time"]["completed"].is_null() && !failed {
                continue;
            }
            let mut q = conn.prepare("SELECT data FROM part WHERE message_id = ?1 ORDER BY id")?;
            let parts: Vec<String> = q
                .query_map([&id], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            out.extend(opencode_message(&v, &parts));
            self.done.insert(id);
        }
        Ok(out)
    }
}

/// One completed opencode assistant message (`data`) and its parts' `data`, as entries.
pub(crate) fn opencode_message(data: &Value, parts: &[String]) -> Vec<Entry> {
    let mut out = Vec::new();
    let text: Vec<String> = parts
        .iter()
        .filter_map(|p| serde_json::from_str::<Value>(p).ok())
        .filter(|p| p["type"] == "text" && p["synthetic"] != true)
        .filter_map(|p| p["text"].as_str().map(String::from))
        .collect();
    let text = text.join("\n");
    if !text.trim().is_empty() {
        out.push(Entry::Item(Item::Text(text)));
    }
    let e = &data["error"];
    if !e.is_null() {
        let msg = e["data"]["message"]
            .as_str()
            .or_else(|| e["name"].as_str())
            .unwrap_or("error")
            .trim()
            .to_string();
        out.push(Entry::Item(Item::ApiError(msg)));
        out.push(Entry::TurnEnd);
    } else if data["finish"] != "tool-calls" {
        out.push(Entry::TurnEnd);
    }
    out
}

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
        opencode: OpencodeSession,
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
                if let Kind::Opencode = kind {
                    let mut store = OpencodeStore::new(path, opencode.cwd, opencode.since);
                    loop {
                        let last = flag.load(Ordering::SeqCst);
                        for e in store.poll() {
                            on_entry(e);
                        }
                        if last {
                            return;
                        }
                        std::thread::sleep(LOCATE_POLL);
                    }
                }
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

    /// A store with opencode 1.18.33's tables (the columns read) and one session.
    fn opencode_db(dir: &Path, cwd: &str, created: i64) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(dir.join("opencode.db")).expect("db");
        c.execute_batch(
            "CREATE TABLE session (id TEXT PRIMARY KEY, parent_id TEXT, directory TEXT NOT NULL,
                 time_created INTEGER NOT NULL);
             CREATE TABLE message (id TEXT PRIMARY KEY, session_id TEXT NOT NULL,
                 time_created INTEGER NOT NULL, data TEXT NOT NULL);
             CREATE TABLE part (id TEXT PRIMARY KEY, message_id TEXT NOT NULL,
                 session_id TEXT NOT NULL, data TEXT NOT NULL);",
        )
        .expect("schema");
        c.execute(
            "INSERT INTO session VALUES ('ses_old', NULL, ?1, 1), ('ses_1', NULL, ?1, ?2)",
            rusqlite::params![cwd, created],
        )
        .expect("session");
        c
    }

    #[test]
    fn opencode_store_reads_each_completed_reply_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let cwd = dir.path().to_string_lossy().into_owned();
        let since = SystemTime::UNIX_EPOCH + Duration::from_millis(1_000);
        let c = opencode_db(dir.path(), &cwd, 2_000);
        let mut store = OpencodeStore::new(dir.path().join("opencode.db"), cwd.into(), since);
        assert!(store.poll().is_empty());
        c.execute_batch(
            r#"INSERT INTO message VALUES ('msg_1', 'ses_1', 3000, '{"role":"user"}');
               INSERT INTO part VALUES ('prt_1', 'msg_1', 'ses_1', '{"type":"text","text":"TODO: typed"}');
               INSERT INTO message VALUES ('msg_2', 'ses_1', 3001, '{"role":"assistant","time":{"created":3001}}');
               INSERT INTO part VALUES ('prt_2', 'msg_2', 'ses_1', '{"type":"step-start"}');
               INSERT INTO part VALUES ('prt_3', 'msg_2', 'ses_1', '{"type":"text","text":"Engineer Agent: implement fib"}');"#,
        )
        .expect("rows");
        // Still streaming: nothing yet.
        assert!(store.poll().is_empty());
        c.execute(
            r#"UPDATE message SET data = '{"role":"assistant","time":{"created":3001,"completed":3500},"finish":"stop"}' WHERE id = 'msg_2'"#,
            [],
        )
        .expect("complete");
        assert_eq!(
            store.poll(),
            vec![
                Entry::Item(Item::Text("Engineer Agent: implement fib".into())),
                Entry::TurnEnd
            ]
        );
        assert!(store.poll().is_empty(), "once");
        c.execute_batch(
            r#"INSERT INTO message VALUES ('msg_3', 'ses_1', 4000, '{"role":"assistant","time":{"created":4000},"error":{"name":"APIError","data":{"message":"fake_llm: scripted invalid request"}}}');"#,
        )
        .expect("error");
        assert_eq!(
            store.poll(),
            vec![
                Entry::Item(Item::ApiError("fake_llm: scripted invalid request".into())),
                Entry::TurnEnd
            ]
        );
    }

    #[test]
    fn opencode_store_ignores_other_folders_and_older_sessions() {
        let dir = tempfile::tempdir().expect("tmp");
        let c = opencode_db(dir.path(), "/somewhere/else", 2_000);
        c.execute_batch(
            r#"INSERT INTO message VALUES ('msg_2', 'ses_1', 3001, '{"role":"assistant","time":{"completed":3500},"finish":"stop"}');
               INSERT INTO part VALUES ('prt_3', 'msg_2', 'ses_1', '{"type":"text","text":"TODO: not ours"}');"#,
        )
        .expect("rows");
        let since = SystemTime::UNIX_EPOCH + Duration::from_millis(1_000);
        let db = dir.path().join("opencode.db");
        let mut other = OpencodeStore::new(db.clone(), dir.path().into(), since);
        assert!(other.poll().is_empty());
        let late = SystemTime::UNIX_EPOCH + Duration::from_millis(9_000);
        let mut older = OpencodeStore::new(db, "/somewhere/else".into(), late);
        assert!(older.poll().is_empty());
    }

    #[test]
    fn opencode_tool_steps_do_not_end_the_turn() {
        let data: Value =
            serde_json::from_str(r#"{"role":"assistant","finish":"tool-calls"}"#).expect("json");
        let parts = vec![r#"{"type":"text","text":"looking"}"#.to_string()];
        assert_eq!(
            opencode_message(&data, &parts),
            vec![Entry::Item(Item::Text("looking".into()))]
        );
    }

    #[test]
    fn gemini_gets_a_session_id_unless_the_user_chose_one() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut argv = v(&["gemini", "-m", "x"]);
        let id = gemini_session_id(&mut argv).expect("an id");
        assert_eq!(argv, v(&["gemini", "--session-id", &id, "-m", "x"]));
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        let mut own = v(&[
            "gemini",
            "--session-id",
            "1234abcd-0000-4000-8000-000000000000",
        ]);
        assert_eq!(
            gemini_session_id(&mut own).as_deref(),
            Some("1234abcd-0000-4000-8000-000000000000")
        );
        assert_eq!(own.len(), 3, "nothing added");
        for resumed in [
            &["gemini", "--resume", "latest"][..],
            &["gemini", "-r", "2"],
        ] {
            let mut a = v(resumed);
            assert_eq!(gemini_session_id(&mut a), None);
            assert_eq!(a, v(resumed));
        }
    }

    #[test]
    fn gemini_file_found_by_its_session_id() {
        let dir = tempfile::tempdir().expect("tmp");
        let cwd = dir.path().join("work");
        std::fs::create_dir_all(&cwd).expect("cwd");
        let chats = dir.path().join(".gemini/tmp/work/chats");
        std::fs::create_dir_all(&chats).expect("chats");
        let id = "1234abcd-0000-4000-8000-000000000000";
        assert_eq!(locate_gemini_session(dir.path(), &cwd, id), None);
        // Another session's file, newer: not ours.
        std::fs::write(
            chats.join("session-2026-12-02T10-00-99998888.jsonl"),
            "{}\n",
        )
        .expect("w");
        assert_eq!(locate_gemini_session(dir.path(), &cwd, id), None);
        let ours = chats.join("session-2026-12-02T09-59-1234abcd.jsonl");
        std::fs::write(&ours, "{}\n").expect("w");
        assert_eq!(locate_gemini_session(dir.path(), &cwd, id), Some(ours));
    }
}
