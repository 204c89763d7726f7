//! The one compact message a finished batch becomes: per delegation the agent, the task
//! (shortened), status, duration, the first lines of the result and the path of the full result;
//! capped in size. Control characters (escape sequences in a sub-agent's output, say) never get
//! in: the message is typed into a terminal program.

use std::fmt::Write as _;

use super::prompt::FEEDBACK_HEADER;

/// One finished delegation as the message tells it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Item {
    pub agent: String,
    pub task: String,
    pub status: String,
    pub duration_ms: u64,
    pub reason: Option<String>,
    pub result_path: Option<String>,
    /// The result text (the result file's body), when there is one.
    pub result: Option<String>,
}

/// Longest task shown.
const TASK_CHARS: usize = 160;
/// Longest quoted result line.
const LINE_CHARS: usize = 200;

/// Printable characters only, newlines and tabs kept as spaces are not: `\n` stays, `\t` becomes
/// a space, every other control character goes.
pub(crate) fn sanitize(text: &str) -> String {
    text.chars()
        .filter_map(|c| match c {
            '\n' => Some('\n'),
            '\t' => Some(' '),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect()
}

fn shorten(text: &str, max: usize) -> String {
    super::summary::fit(&sanitize(text), max)
}

fn render(items: &[Item], lines: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{FEEDBACK_HEADER} you started ({} finished):",
        items.len()
    );
    for (i, it) in items.iter().enumerate() {
        s.push('\n');
        let _ = write!(
            s,
            "{}. {}: {} ({}, {:.1}s",
            i + 1,
            it.agent,
            shorten(&it.task, TASK_CHARS),
            it.status,
            it.duration_ms as f64 / 1000.0
        );
        if let Some(r) = &it.reason {
            let _ = write!(s, ": {}", shorten(r, 120));
        }
        s.push_str(")\n");
        if let Some(p) = &it.result_path {
            let _ = writeln!(s, "   full result: {}", sanitize(p));
        }
        if let Some(text) = &it.result {
            let body = sanitize(text);
            let mut shown = body.lines().filter(|l| !l.trim().is_empty());
            for l in shown.by_ref().take(lines) {
                let _ = writeln!(s, "   > {}", super::summary::fit(l, LINE_CHARS));
            }
            if lines > 0 && shown.next().is_some() {
                s.push_str("   > ...\n");
            }
        }
    }
    s
}

/// The message for a batch, at most `max_bytes` long: fewer quoted lines first, then cut.
pub(crate) fn build(items: &[Item], lines: usize, max_bytes: usize) -> String {
    let max_bytes = max_bytes.max(256);
    let mut n = lines;
    loop {
        let text = render(items, n);
        if text.len() <= max_bytes {
            return text;
        }
        if n == 0 {
            let note = "\n[cut: the rest is in the result files; `mpm delegations list`]\n";
            let keep = super::super::executor::result_file::cut(&text, max_bytes - note.len());
            return format!("{keep}{note}");
        }
        n = if n > 1 { 1 } else { 0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(task: &str, result: &str) -> Item {
        Item {
            agent: "engineer".into(),
            task: task.into(),
            status: "success".into(),
            duration_ms: 1200,
            reason: None,
            result_path: Some("/s/engineer-abcd1234.md".into()),
            result: Some(result.into()),
        }
    }

    #[test]
    fn message_names_each_delegation_and_quotes_its_first_lines() {
        let m = build(
            &[
                item("implement fib", "line 1\n\nline 2\nline 3"),
                item("test fib", "ok\x1b[31m red\x1b[201~"),
            ],
            2,
            4096,
        );
        assert!(m.starts_with("[mpm] Results of the delegations you started (2 finished):"));
        assert!(m.contains("1. engineer: implement fib (success, 1.2s)\n   full result: /s/engineer-abcd1234.md\n   > line 1\n   > line 2\n   > ...\n"), "{m}");
        assert!(m.contains("   > ok[31m red[201~\n"), "{m}");
        assert!(!m.contains('\x1b'), "no escape gets through");
    }

    #[test]
    fn message_is_capped() {
        let big = "word ".repeat(200);
        let items: Vec<Item> = (0..40)
            .map(|i| item(&format!("task {i} {big}"), &big))
            .collect();
        let m = build(&items, 5, 2000);
        assert!(m.len() <= 2000, "{}", m.len());
        assert!(m.ends_with("`mpm delegations list`]\n"));
        let small = build(&items[..3], 5, 4000);
        assert!(
            small.len() <= 4000 && small.contains("3. engineer"),
            "{small}"
        );
    }
}
