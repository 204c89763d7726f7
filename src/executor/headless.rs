//! Reading a sub-agent's headless output, per profile format ([`HeadlessOutput`]): the final
//! answer (for `<id>.result.md` and the result file) and the tokens and cost it reports (for the
//! budgets, [`super::budget`]).
//!
//! One pass over the stdout file, line by line; JSON is parsed only on lines that look like the
//! events a format's reader needs. Formats (checked on the pinned versions; samples in
//! `fixtures/headless/`, `*_tool.jsonl` with a tool call between two texts):
//! - claude stream-json / json: [`result_file::read_outcome`].
//! - codex `exec --json`: `item.completed` with `item.type == "agent_message"` (the last one is the
//!   answer; an `error` item is a warning), `turn.completed.usage` summed (input + output tokens;
//!   cached and reasoning tokens are parts of those, not extra).
//! - gemini `-o stream-json`: assistant `message` events (`delta: true` appends, else replaces),
//!   reset by a `tool_use`/`tool_result` so the answer is the text after the last tool call;
//!   `result.stats.total_tokens`.
//! - opencode `run --format json`: `text` events' `part.text`, reset at each `step_start` (the
//!   answer is the last step's text); `step_finish.part.tokens.total` and `part.cost` summed.
//! - aider `--no-pretty`: plain text: the banner (from `Aider v…` to the first empty line) is
//!   skipped, the answer runs to the last `Tokens: N sent, M received.` line, whose figures
//!   (`2.4k`, `1.2M`) are the usage; `Cost: $X message` the cost.
//! - text: no answer (the result file shows the head of stdout), no usage.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde_json::Value;

use super::result_file::{self, Outcome};
use crate::config::HeadlessOutput;

/// Read `stdout_path` in the given format. A missing or unreadable file gives an empty outcome.
pub(crate) fn read_outcome(stdout_path: &Path, format: HeadlessOutput) -> Outcome {
    match format {
        HeadlessOutput::Claude => result_file::read_outcome(stdout_path),
        HeadlessOutput::Text => Outcome::default(),
        _ => match File::open(stdout_path) {
            Ok(f) => parse(BufReader::with_capacity(64 << 10, f), format),
            Err(_) => Outcome::default(),
        },
    }
}

/// Parse headless output of a format other than claude's from a reader.
pub(crate) fn parse(reader: impl BufRead, format: HeadlessOutput) -> Outcome {
    match format {
        HeadlessOutput::Codex => codex(json_lines(reader)),
        HeadlessOutput::Gemini => gemini(json_lines(reader)),
        HeadlessOutput::Opencode => opencode(json_lines(reader)),
        HeadlessOutput::Aider => aider(reader),
        HeadlessOutput::Claude | HeadlessOutput::Text => Outcome::default(),
    }
}

/// The JSON objects among the lines (other lines, e.g. warnings on stdout, are skipped).
fn json_lines(reader: impl BufRead) -> impl Iterator<Item = Value> {
    reader
        .split(b'\n')
        .map_while(Result::ok)
        .filter_map(|line| {
            let t = line.trim_ascii();
            if t.starts_with(b"{") {
                serde_json::from_slice(t).ok()
            } else {
                None
            }
        })
}

fn kind(v: &Value) -> Option<&str> {
    v.get("type").and_then(Value::as_str)
}

fn u64_at(v: &Value, path: &[&str]) -> Option<u64> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_u64()
}

fn codex(events: impl Iterator<Item = Value>) -> Outcome {
    let mut out = Outcome::default();
    for v in events {
        match kind(&v) {
            Some("item.completed") => {
                let item = &v["item"];
                if item.get("type").and_then(Value::as_str) == Some("agent_message")
                    && let Some(t) = item.get("text").and_then(Value::as_str)
                {
                    out.result = Some(t.to_string());
                }
            }
            Some("turn.completed") => {
                let u = &v["usage"];
                let n = ["input_tokens", "output_tokens"]
                    .iter()
                    .filter_map(|k| u.get(*k).and_then(Value::as_u64))
                    .sum::<u64>();
                out.tokens = out.tokens.saturating_add(n);
            }
            _ => {}
        }
    }
    out
}

fn gemini(events: impl Iterator<Item = Value>) -> Outcome {
    let mut out = Outcome::default();
    let mut text: Option<String> = None;
    for v in events {
        match kind(&v) {
            Some("message") if v.get("role").and_then(Value::as_str) == Some("assistant") => {
                let part = v.get("content").and_then(Value::as_str).unwrap_or("");
                let delta = v.get("delta").and_then(Value::as_bool).unwrap_or(false);
                match (&mut text, delta) {
                    (Some(t), true) => t.push_str(part),
                    _ => text = Some(part.to_string()),
                }
            }
            Some("tool_use") | Some("tool_result") => text = None,
            Some("result") => {
                if let Some(n) = u64_at(&v, &["stats", "total_tokens"]) {
                    out.tokens = n;
                } else {
                    out.tokens = ["input_tokens", "output_tokens"]
                        .iter()
                        .filter_map(|k| u64_at(&v, &["stats", k]))
                        .sum();
                }
            }
            _ => {}
        }
    }
    out.result = text;
    out
}

fn opencode(events: impl Iterator<Item = Value>) -> Outcome {
    let mut out = Outcome::default();
    let mut step_text: Option<String> = None;
    let mut last_text: Option<String> = None;
    let mut cost = 0.0f64;
    let mut any_cost = false;
    for v in events {
        match kind(&v) {
            Some("step_start") => step_text = None,
            Some("text") => {
                if let Some(t) = v["part"].get("text").and_then(Value::as_str) {
                    let s = step_text.get_or_insert_with(String::new);
                    if !s.is_empty() {
                        s.push('\n');
                    }
                    s.push_str(t);
                    last_text = step_text.clone();
                }
            }
            Some("step_finish") => {
                let tokens = &v["part"]["tokens"];
                let n = tokens
                    .get("total")
                    .and_then(Value::as_u64)
                    .unwrap_or_else(|| {
                        ["input", "output", "reasoning"]
                            .iter()
                            .filter_map(|k| tokens.get(*k).and_then(Value::as_u64))
                            .sum()
                    });
                out.tokens = out.tokens.saturating_add(n);
                if let Some(c) = v["part"].get("cost").and_then(Value::as_f64) {
                    cost += c;
                    any_cost = true;
                }
            }
            _ => {}
        }
    }
    out.result = last_text;
    out.cost_usd = Some(cost).filter(|c| any_cost && *c > 0.0);
    out
}

/// `2.4k` → 2400, `1.2M` → 1 200 000, `14` → 14.
fn aider_count(s: &str) -> Option<u64> {
    let s = s.trim().trim_end_matches(',');
    let (num, mult) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1e3),
        'm' | 'M' => (&s[..s.len() - 1], 1e6),
        _ => (s, 1.0),
    };
    let n: f64 = num.parse().ok()?;
    (n.is_finite() && n >= 0.0).then(|| (n * mult).round() as u64)
}

/// `Tokens: 2.4k sent, 14 received. Cost: $0.0062 message, $0.0062 session.` → (2414, 0.0062).
fn aider_tokens_line(line: &str) -> Option<(u64, Option<f64>)> {
    let rest = line.strip_prefix("Tokens: ")?;
    let mut tokens = 0u64;
    let words: Vec<&str> = rest.split_whitespace().collect();
    for pair in words.windows(2) {
        if matches!(pair[1].trim_end_matches([',', '.']), "sent" | "received") {
            tokens = tokens.saturating_add(aider_count(pair[0])?);
        }
    }
    // The cost figures contain dots: read them from the original text.
    let cost = rest
        .split("Cost: $")
        .nth(1)
        .and_then(|c| c.split_whitespace().next())
        .and_then(|c| c.parse::<f64>().ok());
    Some((tokens, cost))
}

fn aider(reader: impl BufRead) -> Outcome {
    let lines: Vec<String> = reader
        .split(b'\n')
        .map_while(Result::ok)
        .map(|l| {
            String::from_utf8_lossy(&l)
                .trim_end_matches('\r')
                .to_string()
        })
        .collect();
    let mut out = Outcome::default();
    // Usage: every `Tokens:` line (one per model call).
    let mut last_tokens = None;
    for (i, l) in lines.iter().enumerate() {
        if let Some((n, cost)) = aider_tokens_line(l) {
            out.tokens = out.tokens.saturating_add(n);
            if let Some(c) = cost {
                out.cost_usd = Some(out.cost_usd.unwrap_or(0.0) + c);
            }
            last_tokens = Some(i);
        }
    }
    // The answer: after the banner, up to the last `Tokens:` line.
    let start = lines
        .iter()
        .position(|l| l.starts_with("Aider v"))
        .map(|b| {
            lines[b..]
                .iter()
                .position(|l| l.trim().is_empty())
                .map_or(lines.len(), |e| b + e + 1)
        })
        .unwrap_or(0);
    let end = last_tokens.unwrap_or(lines.len()).max(start);
    let text = lines[start..end].join("\n");
    let text = text.trim_matches('\n');
    if !text.trim().is_empty() {
        out.result = Some(text.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/headless")
            .join(name)
    }

    const REPLY: &str = "fib(10) = 55. All 3 tests pass.";

    #[test]
    fn codex_exec_json_recorded() {
        let o = read_outcome(&fixture("codex.jsonl"), HeadlessOutput::Codex);
        assert_eq!(o.result.as_deref(), Some(REPLY));
        assert_eq!(o.tokens, 150, "120 input + 30 output");
        assert_eq!(o.cost_usd, None);
    }

    #[test]
    fn codex_last_message_wins_and_turns_add_up() {
        let src = concat!(
            "{\"type\":\"item.completed\",\"item\":{\"type\":\"agent_message\",\"text\":\"first\"}}\n",
            "{\"type\":\"item.completed\",\"item\":{\"type\":\"error\",\"message\":\"warn\"}}\n",
            "{\"type\":\"turn.completed\",\"usage\":{\"input_tokens\":10,\"cached_input_tokens\":5,\"output_tokens\":2}}\n",
            "not json\n",
            "{\"type\":\"item.completed\",\"item\":{\"type\":\"agent_message\",\"text\":\"second\"}}\n",
            "{\"type\":\"turn.completed\",\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}\n",
        );
        let o = parse(src.as_bytes(), HeadlessOutput::Codex);
        assert_eq!(o.result.as_deref(), Some("second"));
        assert_eq!(o.tokens, 14);
    }

    #[test]
    fn gemini_stream_json_recorded() {
        let o = read_outcome(&fixture("gemini.jsonl"), HeadlessOutput::Gemini);
        assert_eq!(o.result.as_deref(), Some(REPLY));
        assert_eq!(o.tokens, 304, "stats.total_tokens (router call included)");
    }

    #[test]
    fn gemini_answer_is_the_text_after_the_last_tool_call() {
        let src = concat!(
            "{\"type\":\"message\",\"role\":\"user\",\"content\":\"task\"}\n",
            "{\"type\":\"message\",\"role\":\"assistant\",\"content\":\"Let me \",\"delta\":true}\n",
            "{\"type\":\"message\",\"role\":\"assistant\",\"content\":\"look.\",\"delta\":true}\n",
            "{\"type\":\"tool_use\",\"tool_name\":\"read_file\"}\n",
            "{\"type\":\"tool_result\",\"status\":\"success\"}\n",
            "{\"type\":\"message\",\"role\":\"assistant\",\"content\":\"Done: \",\"delta\":true}\n",
            "{\"type\":\"message\",\"role\":\"assistant\",\"content\":\"ok\",\"delta\":true}\n",
            "{\"type\":\"result\",\"status\":\"success\",\"stats\":{\"input_tokens\":7,\"output_tokens\":3}}\n",
        );
        let o = parse(src.as_bytes(), HeadlessOutput::Gemini);
        assert_eq!(o.result.as_deref(), Some("Done: ok"));
        assert_eq!(o.tokens, 10);
    }

    #[test]
    fn opencode_json_recorded() {
        let o = read_outcome(&fixture("opencode.jsonl"), HeadlessOutput::Opencode);
        assert_eq!(o.result.as_deref(), Some(REPLY));
        assert_eq!(o.tokens, 150);
        assert_eq!(o.cost_usd, None, "cost 0 is no cost");
    }

    #[test]
    fn opencode_answer_is_the_last_steps_text_and_steps_add_up() {
        let src = concat!(
            "{\"type\":\"step_start\",\"part\":{}}\n",
            "{\"type\":\"text\",\"part\":{\"text\":\"I will run it.\"}}\n",
            "{\"type\":\"tool_use\",\"part\":{\"tool\":\"bash\"}}\n",
            "{\"type\":\"step_finish\",\"part\":{\"tokens\":{\"total\":100},\"cost\":0.01}}\n",
            "{\"type\":\"step_start\",\"part\":{}}\n",
            "{\"type\":\"text\",\"part\":{\"text\":\"It passed.\"}}\n",
            "{\"type\":\"step_finish\",\"part\":{\"tokens\":{\"input\":40,\"output\":2},\"cost\":0.02}}\n",
        );
        let o = parse(src.as_bytes(), HeadlessOutput::Opencode);
        assert_eq!(o.result.as_deref(), Some("It passed."));
        assert_eq!(o.tokens, 142);
        assert!((o.cost_usd.unwrap() - 0.03).abs() < 1e-9);
    }

    #[test]
    fn aider_no_pretty_recorded() {
        let o = read_outcome(&fixture("aider.txt"), HeadlessOutput::Aider);
        assert_eq!(o.result.as_deref(), Some(REPLY));
        assert_eq!(o.tokens, 2414, "2.4k sent + 14 received");
        assert_eq!(o.cost_usd, Some(0.0062));
    }

    #[test]
    fn aider_counts_and_multiline_answers() {
        assert_eq!(aider_count("2.4k"), Some(2400));
        assert_eq!(aider_count("1.25M"), Some(1_250_000));
        assert_eq!(aider_count("14"), Some(14));
        assert_eq!(aider_count("x"), None);
        let src =
            "Aider v0.86.2\nMain model: m\n\nline one\n\nline two\nTokens: 1k sent, 2 received.\n";
        let o = parse(src.as_bytes(), HeadlessOutput::Aider);
        assert_eq!(o.result.as_deref(), Some("line one\n\nline two"));
        assert_eq!(o.tokens, 1002);
        assert_eq!(o.cost_usd, None);
        // No banner, no usage line: the whole text is the answer.
        let o = parse("just text\n".as_bytes(), HeadlessOutput::Aider);
        assert_eq!(o.result.as_deref(), Some("just text"));
        assert_eq!(o.tokens, 0);
    }

    /// Recorded with a tool call: the text before it ("Let me look.") is not the answer.
    const AFTER_TOOL: &str = "The folder holds notes.txt.";

    #[test]
    fn codex_with_a_command_recorded() {
        let o = read_outcome(&fixture("codex_tool.jsonl"), HeadlessOutput::Codex);
        assert_eq!(o.result.as_deref(), Some(AFTER_TOOL));
        assert_eq!(
            o.tokens, 315,
            "one turn: 300 input + 15 output over both calls"
        );
    }

    #[test]
    fn gemini_with_a_tool_call_recorded() {
        let o = read_outcome(&fixture("gemini_tool.jsonl"), HeadlessOutput::Gemini);
        assert_eq!(o.result.as_deref(), Some(AFTER_TOOL));
        assert_eq!(o.tokens, 471);
    }

    #[test]
    fn opencode_with_a_tool_call_recorded() {
        let o = read_outcome(&fixture("opencode_tool.jsonl"), HeadlessOutput::Opencode);
        assert_eq!(o.result.as_deref(), Some(AFTER_TOOL));
        assert_eq!(o.tokens, 315, "two steps: 105 + 210");
    }

    #[test]
    fn text_and_missing_files_give_nothing() {
        assert_eq!(
            read_outcome(&fixture("aider.txt"), HeadlessOutput::Text),
            Outcome::default()
        );
        assert_eq!(
            read_outcome(&fixture("missing"), HeadlessOutput::Codex),
            Outcome::default()
        );
    }
}
