//! One identity for "the same thing said".
//!
//! Every source (screen, transcript, hook, stream), the session's de-duplication memory, the
//! dispatcher, the executor's duplicate check and the store's ticket key use the fingerprint defined
//! here, so a delegation drawn on screen (`implement fib` with the inline code drawn without its
//! backticks, `QA:` drawn bold) and the same delegation in the transcript (`` `fib` ``, `**QA**:`)
//! are one thing.
//!
//! [`normalize`] folds, in one pass:
//! * markdown: emphasis markers (`*`, `**`, `_`/`__` at a word edge, `~~`), inline code backticks, and
//!   backslash escapes (`\*` is `*`, then dropped like any marker);
//! * width: full-width ASCII forms (`Ａ`, `：`) become ASCII, the ideographic space a space;
//! * whitespace: every run of whitespace (including a soft wrap) is one space, none at the ends;
//! * case: lower case;
//! * decoration: anything before the first letter, digit, `[` or `(` (bullets, `● `, `> `), and
//!   trailing punctuation.
//!
//! Cost: one allocation and one pass over the text (the fold of a typical 80-byte task is ~1 µs).

use crate::events::Detection;

/// Separates the parts of a fingerprint (a control character no normalised text contains).
pub(crate) const SEP: char = '\u{1f}';

/// The fingerprint of one thing said: `group` (category plus agent or ticket type, lower case) and
/// `text` (the [`normalize`]d task, title or line).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint {
    /// Category plus agent or ticket type, lower case.
    pub group: String,
    /// The normalised task, title or line.
    pub text: String,
}

impl Fingerprint {
    /// The fingerprint of a detection.
    pub fn of(d: &Detection) -> Fingerprint {
        let who = d
            .agent
            .as_deref()
            .or(d.ticket_type.as_deref())
            .unwrap_or("");
        let what = d.task.as_deref().or(d.title.as_deref()).unwrap_or(&d.text);
        let mut group = String::with_capacity(d.category.len() + who.len() + 1);
        group.push_str(&d.category);
        group.push(SEP);
        crate::patterns::push_lowercase(who.trim(), &mut group);
        Fingerprint {
            group,
            text: normalize(what),
        }
    }

    /// The fingerprint of a delegation to `agent` with `task` (the executor's duplicate check).
    pub fn delegation(agent: &str, task: &str) -> Fingerprint {
        let mut group = String::from("delegation");
        group.push(SEP);
        crate::patterns::push_lowercase(agent.trim(), &mut group);
        Fingerprint {
            group,
            text: normalize(task),
        }
    }

    /// True when `self` is `other` cut short at a word boundary (same group): a provisional,
    /// shorter version of the same thing.
    pub fn is_cut_of(&self, other: &Fingerprint) -> bool {
        self.group == other.group && is_word_prefix(&self.text, &other.text)
    }

    /// The whole key as one string: `group SEP text`.
    pub fn key(&self) -> String {
        let mut k = String::with_capacity(self.group.len() + 1 + self.text.len());
        k.push_str(&self.group);
        k.push(SEP);
        k.push_str(&self.text);
        k
    }
}

/// True when the normalised `short` is the normalised `long` cut at a word boundary (and shorter).
pub(crate) fn is_word_prefix(short: &str, long: &str) -> bool {
    !short.is_empty()
        && long.len() > short.len()
        && long.starts_with(short)
        && long[short.len()..].starts_with(|c: char| c == ' ' || c.is_ascii_punctuation())
}

/// The normalised text of `s` (see the module doc).
pub(crate) fn normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_normalized(s, &mut out);
    out
}

/// A full-width ASCII form as ASCII; the ideographic space as a space; others unchanged.
fn narrow(c: char) -> char {
    match c {
        '\u{3000}' => ' ',
        '\u{ff01}'..='\u{ff5e}' => char::from_u32(c as u32 - 0xfee0).unwrap_or(c),
        _ => c,
    }
}

/// Is `c` a markdown marker that decides style, not content, at this position? `*`, `` ` `` and
/// `~` always (their doubling and pairing only decide the style); `_` only at a word edge
/// (`snake_case` keeps it).
fn is_marker(prev: Option<char>, c: char, next: Option<char>) -> bool {
    match c {
        '*' | '`' | '~' => true,
        '_' => {
            let word = |x: Option<char>| x.is_some_and(|x| x.is_alphanumeric());
            !(word(prev) && word(next))
        }
        _ => false,
    }
}

/// [`normalize`] of `s`, appended to `out`.
pub(crate) fn push_normalized(s: &str, out: &mut String) {
    let base = out.len();
    let chars: Vec<char> = s.chars().map(narrow).collect();
    let mut pending_space = false;
    let mut started = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let prev = i.checked_sub(1).map(|j| chars[j]);
        let next = chars.get(i + 1).copied();
        i += 1;
        let c = if c == '\\' && next.is_some_and(|n| n.is_ascii_punctuation()) {
            // An escape: the next character is literal text unless it is a marker anyway.
            i += 1;
            match next {
                Some('*' | '`' | '~' | '_') => continue,
                Some(n) => n,
                None => continue,
            }
        } else if is_marker(prev, c, next) {
            continue;
        } else {
            c
        };
        if c.is_whitespace() {
            pending_space = started;
            continue;
        }
        if !started {
            // Leading decoration: bullets, `● `, `> `, list punctuation.
            if !(c.is_alphanumeric() || c == '[' || c == '(') {
                continue;
            }
            started = true;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        for l in c.to_lowercase() {
            out.push(l);
        }
    }
    // The screen reader prints errors as `error: <text>`; `<text>` is what the other sources show.
    if out[base..].starts_with("error: ") && out[base + 7..].contains("error") {
        out.drain(base..base + 7);
    }
    let keep = out[base..]
        .trim_end_matches(|c: char| {
            c.is_whitespace() || matches!(c, '.' | ',' | ';' | ':' | '!' | '?')
        })
        .len();
    out.truncate(base + keep);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::TextSource;

    fn deleg(agent: &str, task: &str, source: TextSource) -> Detection {
        Detection::delegation(agent, task, "p", source)
    }

    #[test]
    fn normalisation_table() {
        let cases = [
            ("● API Error: 400  Bad.\n", "api error: 400 bad"),
            ("  ÜBER  Straße!! ", "über straße"),
            ("error: TypeError: x", "typeerror: x"),
            ("error: disk full", "error: disk full"),
            ("**", ""),
            ("", ""),
            ("[QA] Write TESTS...", "[qa] write tests"),
            ("implement `fib(n)` **now**", "implement fib(n) now"),
            ("implement fib(n) now", "implement fib(n) now"),
            ("use snake_case names", "use snake_case names"),
            ("_emphasis_ and __strong__", "emphasis and strong"),
            ("~~old~~ new", "old new"),
            (r"escape \*stars\* and \[x\]", "escape stars and [x]"),
            ("full-width ＦＩＸ：　ｉｔ", "full-width fix: it"),
            ("wrapped\n   across   rows", "wrapped across rows"),
            ("> quoted task", "quoted task"),
            ("1. numbered", "1. numbered"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input), want, "input {input:?}");
        }
    }

    #[test]
    fn screen_and_transcript_forms_share_a_fingerprint() {
        let screen = deleg("Engineer", "implement fib(n) in fib.py", TextSource::Screen);
        let transcript = deleg(
            "engineer",
            "implement `fib(n)` in **fib.py**.",
            TextSource::Transcript,
        );
        assert_eq!(Fingerprint::of(&screen), Fingerprint::of(&transcript));
        assert_eq!(
            Fingerprint::of(&screen),
            Fingerprint::delegation("engineer", "Implement  fib(n) in fib.py")
        );
        assert_ne!(
            Fingerprint::of(&screen),
            Fingerprint::delegation("qa", "implement fib(n) in fib.py")
        );
    }

    #[test]
    fn cut_versions() {
        let long = Fingerprint::delegation("qa", "test the api and the cli");
        let cut = Fingerprint::delegation("qa", "test the api");
        assert!(cut.is_cut_of(&long));
        assert!(!long.is_cut_of(&cut));
        assert!(!long.is_cut_of(&long));
        // Not at a word boundary: another task.
        assert!(!Fingerprint::delegation("qa", "test the ap").is_cut_of(&long));
        // Another agent.
        assert!(!Fingerprint::delegation("engineer", "test the api").is_cut_of(&long));
    }
}
