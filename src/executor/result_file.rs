//! The readable result of one delegation: `<agent>-<short id>.md` in the session's output folder,
//! and what a sub-agent's stream-json said about its own usage.
//!
//! The file starts with a header a person (and the main agent, which gets its path in the feedback
//! message) can read without context: agent, task, status, duration, session, delegation id; then
//! the sub-agent's answer: the stream-json/json `result` text when there is one, else the head of
//! its stdout, else its stderr tail or the reason it ended. The body is capped
//! ([`MAX_BODY_BYTES`]): the raw `<id>.stdout` next to it always has everything.
//!
//! Cost: one pass over the stdout file (read line by line, JSON parsed only on lines that mention
//! `"result"` or `"usage"`); the executor runs it off the scheduler thread for large outputs.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader, Read as _};
use std::path::{Path, PathBuf};

use crate::events::DelegationStatus;

/// Largest body copied into the result file.
pub const MAX_BODY_BYTES: usize = 64 << 10;

/// What a sub-agent's stdout said about its answer and its usage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// The last `{"type":"result","result":...}` text.
    pub result: Option<String>,
    /// Tokens used (input + output + cache creation + cache read) as the result line's `usage`
    /// reports them, else summed over assistant messages.
    pub tokens: u64,
    /// `total_cost_usd` of the result line, when reported.
    pub cost_usd: Option<f64>,
}

/// Tokens of one stream-json `usage` object.
pub fn usage_tokens(usage: &serde_json::Value) -> u64 {
    [
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    ]
    .iter()
    .filter_map(|k| usage.get(*k).and_then(|v| v.as_u64()))
    .sum()
}

/// Read `stdout_path` (stream-json or json output; anything else is ignored) once.
pub fn read_outcome(stdout_path: &Path) -> Outcome {
    let Ok(file) = File::open(stdout_path) else {
        return Outcome::default();
    };
    let mut reader = BufReader::with_capacity(64 << 10, file);
    let result_key = memchr::memmem::Finder::new(b"\"result\"");
    let usage_key = memchr::memmem::Finder::new(b"\"usage\"");
    let mut line = Vec::new();
    let mut out = Outcome::default();
    let mut result_tokens = None;
    let mut message_tokens = 0u64;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let trimmed = line.trim_ascii();
        if !trimmed.starts_with(b"{")
            || (result_key.find(trimmed).is_none() && usage_key.find(trimmed).is_none())
        {
            continue;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(trimmed) else {
            continue;
        };
        match v.get("type").and_then(|t| t.as_str()) {
            Some("result") => {
                if let Some(text) = v.get("result").and_then(|r| r.as_str()) {
                    out.result = Some(text.to_string());
                }
                if let Some(u) = v.get("usage") {
                    result_tokens = Some(usage_tokens(u));
                }
                if let Some(c) = v.get("total_cost_usd").and_then(|c| c.as_f64()) {
                    out.cost_usd = Some(c);
                }
            }
            Some("assistant") => {
                if let Some(u) = v.get("message").and_then(|m| m.get("usage")) {
                    message_tokens = message_tokens.saturating_add(usage_tokens(u));
                }
            }
            _ => {}
        }
    }
    out.tokens = result_tokens.unwrap_or(message_tokens);
    out
}

/// `<agent>-<first 8 characters of the id>.md`; the agent name is reduced to `[A-Za-z0-9_-]`.
pub fn file_name(agent: &str, delegation_id: &str) -> String {
    let agent: String = agent
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let short: String = delegation_id
        .chars()
        .filter(|c| *c != '-')
        .take(8)
        .collect();
    format!("{agent}-{short}.md")
}

/// What goes into the header.
pub struct Header<'a> {
    /// The agent.
    pub agent: &'a str,
    /// The task.
    pub task: &'a str,
    /// How it ended.
    pub status: DelegationStatus,
    /// From queued to finished.
    pub duration_ms: u64,
    /// The session that delegated it.
    pub session: &'a str,
    /// The delegation's id.
    pub delegation_id: &'a str,
    /// The sub-agent's exit code, if it exited.
    pub exit_code: Option<i32>,
    /// Why it ended this way, when there is a reason.
    pub reason: Option<&'a str>,
    /// The agent CLI profile the sub-agent ran with.
    pub profile: Option<&'a str>,
}

/// The header: a markdown title and one `key: value` line each (the task on one line).
pub fn header_text(h: &Header<'_>) -> String {
    header_with_usage(h, &Outcome::default())
}

/// The header, with the tokens and cost the sub-agent reported (when it reported any).
pub fn header_with_usage(h: &Header<'_>, outcome: &Outcome) -> String {
    let mut s = String::new();
    let task = h.task.split_whitespace().collect::<Vec<_>>().join(" ");
    let _ = writeln!(s, "# mpm delegation: {}", h.agent);
    s.push('\n');
    let _ = writeln!(s, "- agent: {}", h.agent);
    if let Some(p) = h.profile {
        let _ = writeln!(s, "- profile: {p}");
    }
    let _ = writeln!(s, "- task: {task}");
    let _ = writeln!(s, "- status: {}", h.status.as_str());
    let _ = writeln!(s, "- duration: {:.1}s", h.duration_ms as f64 / 1000.0);
    let _ = writeln!(s, "- session: {}", h.session);
    let _ = writeln!(s, "- delegation: {}", h.delegation_id);
    if let Some(c) = h.exit_code {
        let _ = writeln!(s, "- exit code: {c}");
    }
    if let Some(r) = h.reason {
        let _ = writeln!(s, "- reason: {r}");
    }
    if outcome.tokens > 0 {
        let _ = writeln!(s, "- tokens: {}", outcome.tokens);
    }
    if let Some(c) = outcome.cost_usd {
        let _ = writeln!(s, "- cost: ${c:.4}");
    }
    s.push_str("\n---\n\n");
    s
}

/// The first `max` bytes of a file (cut at a character boundary), and whether it was longer.
fn head(path: &Path, max: usize) -> Option<(String, bool)> {
    let file = File::open(path).ok()?;
    let mut buf = Vec::new();
    file.take(max as u64 + 1).read_to_end(&mut buf).ok()?;
    let longer = buf.len() > max;
    buf.truncate(max);
    let text = String::from_utf8_lossy(&buf).into_owned();
    Some((text, longer))
}

/// Cut `text` to at most `max` bytes at a character boundary.
pub fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Write the result file into `dir`; returns its path. The body is the result text, else the head
/// of stdout, else the head of stderr, else a note that the sub-agent wrote nothing.
pub fn write(
    dir: &Path,
    h: &Header<'_>,
    outcome: &Outcome,
    stdout: &Path,
    stderr: &Path,
) -> std::io::Result<PathBuf> {
    let path = dir.join(file_name(h.agent, h.delegation_id));
    let mut text = header_with_usage(h, outcome);
    let body = match &outcome.result {
        Some(r) => Some((cut(r, MAX_BODY_BYTES).to_string(), r.len() > MAX_BODY_BYTES)),
        None => head(stdout, MAX_BODY_BYTES)
            .filter(|(t, _)| !t.trim().is_empty())
            .or_else(|| {
                head(stderr, MAX_BODY_BYTES)
                    .filter(|(t, _)| !t.trim().is_empty())
                    .map(|(t, l)| (format!("(stderr)\n{t}"), l))
            }),
    };
    match body {
        Some((t, longer)) => {
            text.push_str(&t);
            if !t.ends_with('\n') {
                text.push('\n');
            }
            if longer {
                let _ = writeln!(
                    text,
                    "\n[cut at {MAX_BODY_BYTES} bytes; the full output is in {}]",
                    stdout.display()
                );
            }
        }
        None => text.push_str("(the sub-agent wrote no output)\n"),
    }
    // Private like every state file: a result may quote the repository's secrets.
    std::io::Write::write_all(
        &mut crate::config::paths::private_file()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)?,
        text.as_bytes(),
    )?;
    Ok(path)
}

/// The body of a result file (what follows the header), for the feedback message.
pub fn body_of(text: &str) -> &str {
    match text.find("\n---\n\n") {
        Some(i) => &text[i + 6..],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_reads_result_usage_and_cost() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.stdout");
        std::fs::write(
            &p,
            concat!(
                "{\"type\":\"system\",\"subtype\":\"init\"}\n",
                "{\"type\":\"assistant\",\"message\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":7}}}\n",
                "{\"type\":\"result\",\"result\":\"done\",\"usage\":{\"input_tokens\":100,\"output_tokens\":20,\"cache_read_input_tokens\":3},\"total_cost_usd\":0.25}\n",
            ),
        )
        .unwrap();
        let o = read_outcome(&p);
        assert_eq!(o.result.as_deref(), Some("done"));
        assert_eq!(o.tokens, 123);
        assert_eq!(o.cost_usd, Some(0.25));
    }

    #[test]
    fn outcome_without_result_sums_assistant_usage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.stdout");
        std::fs::write(
            &p,
            "{\"type\":\"assistant\",\"message\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":7}}}\n\
             {\"type\":\"assistant\",\"message\":{\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}\nplain\n",
        )
        .unwrap();
        let o = read_outcome(&p);
        assert_eq!(o.result, None);
        assert_eq!(o.tokens, 14);
        assert_eq!(
            read_outcome(&dir.path().join("missing")),
            Outcome::default()
        );
    }

    #[test]
    fn file_name_is_agent_and_short_id() {
        assert_eq!(
            file_name("qa", "1234abcd-ef00-4000-8000-000000000000"),
            "qa-1234abcd.md"
        );
        assert_eq!(file_name("a/b c", "12-34-5678-9"), "a_b_c-12345678.md");
    }

    #[test]
    fn file_starts_with_header_then_body() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("d.stdout");
        std::fs::write(&out, "plain answer\n").unwrap();
        let h = Header {
            agent: "engineer",
            task: "implement\n fib",
            status: DelegationStatus::Success,
            duration_ms: 1500,
            session: "s1",
            delegation_id: "abcdef12-0000",
            exit_code: Some(0),
            reason: None,
            profile: Some("claude"),
        };
        let p = write(
            dir.path(),
            &h,
            &Outcome {
                result: None,
                tokens: 150,
                cost_usd: None,
            },
            &out,
            &dir.path().join("e"),
        )
        .unwrap();
        assert_eq!(p, dir.path().join("engineer-abcdef12.md"));
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("# mpm delegation: engineer\n"), "{text}");
        for line in [
            "- agent: engineer",
            "- task: implement fib",
            "- status: success",
            "- duration: 1.5s",
            "- session: s1",
            "- profile: claude",
            "- tokens: 150",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert_eq!(body_of(&text), "plain answer\n");
        assert_eq!(cut("héllo", 2), "h");
    }
}
