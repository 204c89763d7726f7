//! One detection per thing said, per session.
//!
//! The key is the category plus the agent (delegations) or ticket type (tickets) plus the task, title
//! or (for other categories) the matched text, each normalised: lower case, whitespace collapsed,
//! leading decoration and trailing punctuation removed. Redraws, resizes, reprints and the same line
//! seen on screen and in the transcript therefore collapse into one detection.
//!
//! A delegation or ticket whose text is a whole-word *prefix* of one already recorded (same category
//! and agent/type) is also a repeat: a narrower terminal shows the wrapped paragraph's first row alone
//! when the wrap width is not known (e.g. `mpm scan` over a capture that was resized), and the
//! screen-reader renderer reprints a live line half-written. The reverse order (prefix first) cannot be
//! retracted; the screen reader only reads complete lines to make it rare.
//!
//! The handle is cheap to clone and shared between the screen pipeline and the transcript tailer.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::events::Detection;

/// Keys kept per session at most; past that the memory is reset (a very long session may then see a
/// repeat of something said long ago).
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Default)]
struct State {
    exact: HashSet<String>,
    /// Normalised texts per `category + agent/type` group, for the prefix rule.
    groups: HashMap<String, BTreeSet<String>>,
}

/// The session's de-duplication memory; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Dedup {
    inner: Arc<Mutex<State>>,
}

/// Lower case, whitespace collapsed, leading decoration and trailing punctuation stripped.
pub fn normalize_key_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for w in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        for c in w.chars() {
            out.extend(c.to_lowercase());
        }
    }
    let start = out
        .char_indices()
        .find(|(_, c)| c.is_alphanumeric() || *c == '[' || *c == '(')
        .map_or(out.len(), |(i, _)| i);
    // The screen reader prints errors as `error: <text>`; `<text>` is what the other sources show.
    let body = &out[start..];
    let body = match body.strip_prefix("error: ") {
        Some(rest) if rest.contains("error") => rest,
        _ => body,
    };
    let trimmed = body.trim_end_matches(|c: char| {
        c.is_whitespace() || matches!(c, '.' | ',' | ';' | ':' | '!' | '?' | '*' | '_' | '`')
    });
    trimmed.to_string()
}

/// `(group, text)` for a detection: the group is category plus agent or ticket type; the text is
/// the normalised task, title or line.
pub fn key_parts(d: &Detection) -> (String, String) {
    let who = d
        .agent
        .as_deref()
        .or(d.ticket_type.as_deref())
        .unwrap_or("");
    let what = d.task.as_deref().or(d.title.as_deref()).unwrap_or(&d.text);
    (
        format!("{}\u{1f}{}", d.category, who.to_lowercase()),
        normalize_key_text(what),
    )
}

/// Is some recorded text `text` followed by a space and more words? O(log n): the candidates sort
/// right after `"<text> "`.
fn extends(set: &BTreeSet<String>, text: &str) -> bool {
    let probe = format!("{text} ");
    set.range::<str, _>((
        std::ops::Bound::Included(probe.as_str()),
        std::ops::Bound::Unbounded,
    ))
    .next()
    .is_some_and(|s| s.starts_with(&probe))
}

impl Dedup {
    pub fn new() -> Self {
        Dedup::default()
    }

    /// True when `d` is new: it is recorded and should be reported. False for a repeat.
    pub fn admit(&self, d: &Detection) -> bool {
        let (group, text) = key_parts(d);
        let key = format!("{group}\u{1f}{text}");
        let mut st = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if st.exact.contains(&key) {
            return false;
        }
        let prefix_rule = d.category == "delegation" || d.category == "ticket";
        if prefix_rule
            && !text.is_empty()
            && st.groups.get(&group).is_some_and(|set| extends(set, &text))
        {
            return false;
        }
        if st.exact.len() >= MAX_KEYS {
            st.exact.clear();
            st.groups.clear();
        }
        st.exact.insert(key);
        if prefix_rule {
            st.groups.entry(group).or_default().insert(text);
        }
        true
    }

    /// Keep only the new detections of `ds`, in order.
    pub fn filter(&self, ds: Vec<Detection>) -> Vec<Detection> {
        ds.into_iter().filter(|d| self.admit(d)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::TextSource;

    fn deleg(agent: &str, task: &str, source: TextSource) -> Detection {
        Detection {
            category: "delegation".into(),
            pattern: "p".into(),
            text: format!("{agent} Agent: {task}"),
            source,
            agent: Some(agent.into()),
            task: Some(task.into()),
            ticket_type: None,
            title: None,
            priority: None,
            handled_by_agent: false,
        }
    }

    #[test]
    fn same_delegation_from_screen_and_transcript_is_one() {
        let d = Dedup::new();
        assert!(d.admit(&deleg("engineer", "Implement  fib.", TextSource::Screen)));
        assert!(!d.admit(&deleg("engineer", "implement fib", TextSource::Transcript)));
        assert!(d.admit(&deleg("qa", "implement fib", TextSource::Transcript)));
    }

    #[test]
    fn word_prefix_of_a_recorded_task_is_a_repeat() {
        let d = Dedup::new();
        assert!(d.admit(&deleg(
            "engineer",
            "a long task that wraps",
            TextSource::Screen
        )));
        assert!(!d.admit(&deleg("engineer", "a long task that", TextSource::Screen)));
        // Not a whole-word prefix: a different task.
        assert!(d.admit(&deleg("engineer", "a long task th", TextSource::Screen)));
    }

    #[test]
    fn clones_share_memory() {
        let a = Dedup::new();
        let b = a.clone();
        assert!(a.admit(&deleg("qa", "x", TextSource::Screen)));
        assert!(!b.admit(&deleg("qa", "x", TextSource::Screen)));
    }

    #[test]
    fn normalisation() {
        assert_eq!(
            normalize_key_text("● API Error: 400  Bad.\n"),
            "api error: 400 bad"
        );
    }
}
