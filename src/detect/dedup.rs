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

use foldhash::fast::RandomState;

use crate::events::Detection;

/// Keys kept per session at most; past that the memory is reset (a very long session may then see a
/// repeat of something said long ago).
const MAX_KEYS: usize = 100_000;

/// Separates the parts of a key (a control character no normalised text contains).
const SEP: char = '\u{1f}';

#[derive(Debug, Default)]
struct State {
    /// Whole keys: `category SEP agent-or-type SEP text`. Hashed with a per-process random seed
    /// (foldhash): the texts come from a model, and SipHash cost a tenth of a dense pipeline.
    exact: HashSet<String, RandomState>,
    /// Normalised texts per `category SEP agent/type` group, for the prefix rule.
    groups: HashMap<String, BTreeSet<String>, RandomState>,
}

/// The session's de-duplication memory; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Dedup {
    inner: Arc<Mutex<State>>,
}

/// Lower case, whitespace collapsed, leading decoration and trailing punctuation stripped.
pub fn normalize_key_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_key_text(s, &mut out);
    out
}

/// [`normalize_key_text`] of `s`, appended to `out`.
fn push_key_text(s: &str, out: &mut String) {
    let base = out.len();
    crate::patterns::push_lower_words(s, out);
    let body = &out[base..];
    let start = body
        .char_indices()
        .find(|(_, c)| c.is_alphanumeric() || *c == '[' || *c == '(')
        .map_or(body.len(), |(i, _)| i);
    let mut body = &body[start..];
    // The screen reader prints errors as `error: <text>`; `<text>` is what the other sources show.
    if let Some(rest) = body.strip_prefix("error: ")
        && rest.contains("error")
    {
        body = rest;
    }
    let trimmed = body.trim_end_matches(|c: char| {
        c.is_whitespace() || matches!(c, '.' | ',' | ';' | ':' | '!' | '?' | '*' | '_' | '`')
    });
    // Offsets of the kept text inside `out`.
    let from = trimmed.as_ptr() as usize - out.as_ptr() as usize;
    let to = from + trimmed.len();
    out.truncate(to);
    out.drain(base..from);
}

/// Write the key of `d` into `key` (cleared first): `group SEP text`. Returns the group's length.
fn write_key(d: &Detection, key: &mut String) -> usize {
    key.clear();
    let who = d
        .agent
        .as_deref()
        .or(d.ticket_type.as_deref())
        .unwrap_or("");
    let what = d.task.as_deref().or(d.title.as_deref()).unwrap_or(&d.text);
    key.push_str(&d.category);
    key.push(SEP);
    crate::patterns::push_lowercase(who, key);
    let group_len = key.len();
    key.push(SEP);
    push_key_text(what, key);
    group_len
}

/// `(group, text)` for a detection: the group is category plus agent or ticket type; the text is
/// the normalised task, title or line.
pub fn key_parts(d: &Detection) -> (String, String) {
    let mut key = String::new();
    let group_len = write_key(d, &mut key);
    let text = key[group_len + SEP.len_utf8()..].to_string();
    key.truncate(group_len);
    (key, text)
}

/// Is some recorded text `text` followed by a space and more words? O(log n): the candidates sort
/// right after `"<text> "`.
fn extends(set: &BTreeSet<String>, text: &str) -> bool {
    let mut probe = String::with_capacity(text.len() + 1);
    probe.push_str(text);
    probe.push(' ');
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
        let mut key = String::with_capacity(64 + d.text.len());
        let group_len = write_key(d, &mut key);
        let (group, text) = (&key[..group_len], &key[group_len + SEP.len_utf8()..]);
        let mut st = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if st.exact.contains(key.as_str()) {
            return false;
        }
        let prefix_rule = d.category == "delegation" || d.category == "ticket";
        if prefix_rule
            && !text.is_empty()
            && st.groups.get(group).is_some_and(|set| extends(set, text))
        {
            return false;
        }
        if st.exact.len() >= MAX_KEYS {
            st.exact.clear();
            st.groups.clear();
        }
        if prefix_rule {
            match st.groups.get_mut(group) {
                Some(set) => {
                    set.insert(text.to_string());
                }
                None => {
                    st.groups
                        .insert(group.to_string(), BTreeSet::from([text.to_string()]));
                }
            }
        }
        st.exact.insert(key);
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
            is_final: true,
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
        let cases = [
            ("● API Error: 400  Bad.\n", "api error: 400 bad"),
            ("  ÜBER  Straße!! ", "über straße"),
            ("error: TypeError: x", "typeerror: x"),
            ("error: disk full", "error: disk full"),
            ("**", ""),
            ("", ""),
            ("[QA] Write TESTS...", "[qa] write tests"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_key_text(input), want, "input {input:?}");
        }
    }

    #[test]
    fn key_parts_split_group_and_text() {
        let d = deleg("Engineer", "Implement  Fib.", TextSource::Screen);
        assert_eq!(
            key_parts(&d),
            (
                "delegation\u{1f}engineer".to_string(),
                "implement fib".to_string()
            )
        );
    }
}
