//! One detection per thing said, per session.
//!
//! The key is the detection's [`Fingerprint`] (see [`crate::detect::identity`]): category plus agent
//! or ticket type plus the task, title or line, folded for markdown, width, whitespace and case.
//! Redraws, resizes, reprints and the same line seen on screen and in the transcript therefore
//! collapse into one detection.
//!
//! A delegation or ticket whose text is a whole-word *prefix* of one already recorded (same category
//! and agent/type) is also a repeat: a narrower terminal shows the wrapped paragraph's first row alone
//! when the wrap width is not known (e.g. `mpm scan` over a capture that was resized), and the
//! screen-reader renderer reprints a live line half-written. The reverse order (prefix first) is the
//! dispatcher's business: a provisional detection is replaced by its longer version there.
//!
//! The handle is cheap to clone and shared between the screen pipeline and the transcript tailer.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use foldhash::fast::RandomState;

use crate::detect::identity::Fingerprint;
use crate::events::Detection;

/// Keys kept per session at most; past that the memory is reset (a very long session may then see a
/// repeat of something said long ago).
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Default)]
struct Memory {
    /// Whole keys: `category SEP agent-or-type SEP text`. Hashed with a per-process random seed
    /// (foldhash): the texts come from a model, and SipHash cost a tenth of a dense pipeline.
    exact: HashSet<String, RandomState>,
    /// Normalised texts per `category SEP agent/type` group, for the prefix rule.
    groups: HashMap<String, BTreeSet<String>, RandomState>,
}

/// The session's de-duplication memory; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Dedup {
    inner: Arc<Mutex<Memory>>,
}

/// The identity's text normalisation ([`crate::detect::identity::normalize`]).
pub fn normalize_key_text(s: &str) -> String {
    crate::detect::identity::normalize(s)
}

/// `(group, text)` for a detection: its [`Fingerprint`]'s parts.
pub fn key_parts(d: &Detection) -> (String, String) {
    let f = Fingerprint::of(d);
    (f.group, f.text)
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
    /// Nothing seen yet.
    pub fn new() -> Self {
        Dedup::default()
    }

    /// True when `d` is new: it is recorded and should be reported. False for a repeat.
    pub fn admit(&self, d: &Detection) -> bool {
        let f = Fingerprint::of(d);
        let key = f.key();
        let (group, text) = (f.group.as_str(), f.text.as_str());
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
        Detection::delegation(agent, task, "p", source)
    }

    #[test]
    fn same_delegation_from_screen_and_transcript_is_one() {
        let d = Dedup::new();
        assert!(d.admit(&deleg("engineer", "Implement  fib.", TextSource::Screen)));
        assert!(!d.admit(&deleg("engineer", "implement fib", TextSource::Transcript)));
        assert!(d.admit(&deleg("qa", "implement fib", TextSource::Transcript)));
    }

    #[test]
    fn inline_code_and_emphasis_do_not_make_another_delegation() {
        let d = Dedup::new();
        assert!(d.admit(&deleg(
            "engineer",
            "implement fib(n) in fib.py",
            TextSource::Screen
        )));
        assert!(!d.admit(&deleg(
            "Engineer",
            "implement `fib(n)` in **fib.py**.",
            TextSource::Transcript
        )));
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
