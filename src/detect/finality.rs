//! Provisional, then final: when a detection read off the screen may be acted on.
//!
//! A TUI grows a paragraph while the model streams: claude's classic renderer draws it a row at a
//! time, so the screen shows `Engineer Agent: implement the` before it shows the whole task. A
//! detection read off the screen is therefore **provisional** until its block is complete, and
//! becomes **final** when one of these is seen in the byte stream (never a clock):
//! * **text drawn below it**: a later line that is new (never read before in this session), is not
//!   chrome (spinner, prompt box, status bar: [`is_chrome`]) and does not merely grow or repeat a
//!   pending detection's line. TUIs append below; a redraw of older lines is not new text;
//! * **the turn ended**: claude's end-of-turn row (`✻ Crunched for 0s · done 12:11 PM`,
//!   [`is_turn_end`]);
//! * **the end of input** ([`Finality::finish`]).
//!
//! A later, longer version of a pending detection (same category and agent or ticket type, its
//! text a whole-word extension) replaces it; a shorter or equal one is a redraw and is dropped. A
//! detection from a line the reader had to cut is never final. The same bytes, however chunked and
//! however delayed, give the same final detections, so `mpm scan` and `mpm run` agree.
//!
//! Cost: one hash-set lookup per line read, plus a scan of the pending list (a handful) per
//! detection.

use std::collections::HashSet;
use std::hash::BuildHasher;

use foldhash::fast::FixedState;

use crate::events::Detection;

/// Lines remembered for the "new text" test; past this the memory restarts (a very old line drawn
/// again may then count as new text once).
const MAX_SEEN: usize = 100_000;

/// What the screen source knows about one logical line.
#[derive(Debug, Clone, Copy)]
pub struct LineInfo<'a> {
    pub text: &'a str,
    /// The reader cut the line (too long): its detections are never final.
    pub cut: bool,
}

#[derive(Debug)]
struct Pending {
    group: String,
    text: String,
    d: Detection,
}

/// The provisional detections of one screen and the memory of lines already read.
#[derive(Debug, Default)]
pub struct Finality {
    pending: Vec<Pending>,
    seen: HashSet<u64>,
}

impl Finality {
    pub fn new() -> Self {
        Finality::default()
    }

    /// One line read off the screen and what the engine found in it. Returns the detections that
    /// became final (in the order they were first seen).
    pub fn line(&mut self, line: LineInfo<'_>, found: Vec<Detection>) -> Vec<Detection> {
        let trimmed = line.text.trim();
        if trimmed.is_empty() {
            return Vec::new();
        }
        if is_turn_end(trimmed) {
            return self.finish();
        }
        let chrome = is_chrome(trimmed);
        let new_text = !chrome && self.remember(trimmed);
        let mut grew = false;
        let mut added = Vec::new();
        for mut d in found {
            d.is_final = false;
            let (group, text) = super::dedup::key_parts(&d);
            if line.cut {
                // Kept out of the pending list: a cut line never becomes final.
                continue;
            }
            match self
                .pending
                .iter_mut()
                .find(|p| p.group == group && related(&p.text, &text))
            {
                Some(p) => {
                    if p.text.len() < text.len() {
                        p.text = text;
                        p.d = d;
                    }
                    grew = true;
                }
                None => added.push(Pending { group, text, d }),
            }
        }
        // New text below the pending detections completes their blocks (not those found in this
        // very line, nor when the line only grows or repeats one of them).
        let done = if new_text && !grew {
            std::mem::take(&mut self.pending)
        } else {
            Vec::new()
        };
        self.pending.extend(added);
        done.into_iter().map(finalize).collect()
    }

    /// The end of input (or of the session): every pending detection is final.
    pub fn finish(&mut self) -> Vec<Detection> {
        self.pending.drain(..).map(finalize).collect()
    }

    /// The detections still provisional.
    pub fn pending(&self) -> impl Iterator<Item = &Detection> {
        self.pending.iter().map(|p| &p.d)
    }

    /// Record `line` as read; true when it was not read before.
    fn remember(&mut self, line: &str) -> bool {
        if self.seen.len() >= MAX_SEEN {
            self.seen.clear();
        }
        self.seen
            .insert(FixedState::with_seed(0x6d70_6d00).hash_one(line))
    }
}

fn finalize(p: Pending) -> Detection {
    let mut d = p.d;
    d.is_final = true;
    d
}

/// One text is the other cut anywhere, or both are equal. A row drawn while the model streams is
/// cut mid-word as often as not (the screen reader's live line `Security Agent: check that c`, then
/// `… check that client ids …`), so the cut need not fall at a word boundary.
fn related(a: &str, b: &str) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    !short.is_empty() && long.starts_with(short)
}

/// The spinner glyphs claude cycles through before a status word (`✻ Crunched…`).
const SPINNER: &[char] = &['✻', '✢', '✳', '✶', '✽', '·', '*', '◐', '◑', '◒', '◓'];

/// Rows a TUI redraws around the reply that are not reply text: a spinner or status word, the
/// prompt box and its borders, the status bar, the user's input row.
pub fn is_chrome(trimmed: &str) -> bool {
    let Some(first) = trimmed.chars().next() else {
        return true;
    };
    // Box drawing (borders, separators), block elements (the logo), the prompt, the mode bar.
    if ('\u{2500}'..='\u{259f}').contains(&first) || matches!(first, '❯' | '⏵' | '›') {
        return true;
    }
    if trimmed.starts_with("? for shortcuts") || trimmed.starts_with("you: ") {
        return true;
    }
    // The screen reader's status lines below its live region, and its `$` marker row.
    if trimmed == "$"
        || trimmed.starts_with("accept edits on (shift+tab")
        || trimmed.contains("(shift+tab to cycle)")
        || (trimmed.starts_with("effort: ") && trimmed.ends_with("/effort"))
    {
        return true;
    }
    // `✶ Transmuting…`, `* Wibbling… (3s · ↓ 2 tokens)`: a glyph, one word, an ellipsis.
    if SPINNER.contains(&first) {
        let rest = trimmed[first.len_utf8()..].trim_start();
        let word_end = rest
            .find(|c: char| !c.is_alphabetic())
            .unwrap_or(rest.len());
        return word_end > 0 && rest[word_end..].starts_with('…');
    }
    false
}

/// claude's end-of-turn row: `✻ Crunched for 0s · done 12:11 PM`, `✻ Cooked for 1m 3s`.
pub fn is_turn_end(trimmed: &str) -> bool {
    let Some(rest) = trimmed.strip_prefix('✻') else {
        return false;
    };
    let rest = rest.trim_start();
    let word_end = rest
        .find(|c: char| !c.is_alphabetic())
        .unwrap_or(rest.len());
    word_end > 2
        && rest[..word_end].ends_with("ed")
        && rest[word_end..].starts_with(" for ")
        && rest[word_end + 5..].starts_with(|c: char| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::TextSource;

    fn delegation(task: &str) -> Detection {
        Detection {
            category: "delegation".into(),
            pattern: "p".into(),
            text: format!("Engineer Agent: {task}"),
            source: TextSource::Screen,
            agent: Some("engineer".into()),
            task: Some(task.into()),
            ticket_type: None,
            title: None,
            priority: None,
            handled_by_agent: false,
            is_final: true,
        }
    }

    fn line(text: &str) -> LineInfo<'_> {
        LineInfo { text, cut: false }
    }

    #[test]
    fn growing_line_is_final_only_after_new_text_below() {
        let mut f = Finality::new();
        let a = "Engineer Agent: implement the";
        assert!(
            f.line(line(a), vec![delegation("implement the")])
                .is_empty()
        );
        assert!(f.line(line("✶ Transmuting…"), vec![]).is_empty());
        let b = "Engineer Agent: implement the parser";
        assert!(
            f.line(line(b), vec![delegation("implement the parser")])
                .is_empty()
        );
        // A redraw of the shorter state changes nothing.
        assert!(
            f.line(line(a), vec![delegation("implement the")])
                .is_empty()
        );
        let done = f.line(line("Next paragraph."), vec![]);
        assert_eq!(done.len(), 1);
        assert!(done[0].is_final);
        assert_eq!(done[0].task.as_deref(), Some("implement the parser"));
        assert!(f.finish().is_empty());
    }

    #[test]
    fn a_line_streamed_mid_word_is_one_detection() {
        // The screen reader's live line: cut mid-word, status lines below it, then grown in place.
        let mut f = Finality::new();
        let mut done = f.line(
            line("1. Security Agent: check that c"),
            vec![delegation("check that c")],
        );
        for status in [
            "accept edits on (shift+tab to cycle)  ·  esc to interrupt",
            "effort: medium · /effort",
            "$",
        ] {
            assert!(is_chrome(status), "{status}");
            done.extend(f.line(line(status), vec![]));
        }
        done.extend(f.line(
            line("1. Security Agent: check that client ids cannot be spoofed"),
            vec![delegation("check that client ids cannot be spoofed")],
        ));
        assert!(done.is_empty(), "{done:?}");
        done.extend(f.line(line("Engineer Agent: Once the te"), vec![]));
        assert_eq!(done.len(), 1, "{done:?}");
        assert_eq!(
            done[0].task.as_deref(),
            Some("check that client ids cannot be spoofed")
        );
    }

    #[test]
    fn turn_end_and_finish_complete_blocks() {
        let mut f = Finality::new();
        f.line(line("Engineer Agent: a"), vec![delegation("a")]);
        let done = f.line(line("✻ Crunched for 0s · done 12:11 PM"), vec![]);
        assert_eq!(done.len(), 1);
        f.line(line("Engineer Agent: b"), vec![delegation("b")]);
        assert_eq!(f.finish().len(), 1);
    }

    #[test]
    fn a_cut_line_is_never_final() {
        let mut f = Finality::new();
        let got = f.line(
            LineInfo {
                text: "Engineer Agent: x",
                cut: true,
            },
            vec![delegation("x")],
        );
        assert!(got.is_empty());
        assert!(f.finish().is_empty());
    }

    #[test]
    fn chrome_and_turn_end_rows() {
        for c in [
            "✶ Transmuting…",
            "✻ Transmuting… (0s · ↓ 2 tokens)",
            "* Wibbling…",
            "────────",
            "❯ please",
            "⏵⏵ auto mode on (shift+tab to cycle)",
            "? for shortcuts",
        ] {
            assert!(is_chrome(c), "{c}");
        }
        for t in ["TODO: x", "● I'll coordinate", "· a list item", "* an item"] {
            assert!(!is_chrome(t), "{t}");
        }
        assert!(is_turn_end("✻ Crunched for 0s · done 12:11 PM"));
        assert!(is_turn_end("✻ Cooked for 1m 3s"));
        assert!(!is_turn_end("✻ Transmuting… (0s · ↓ 2 tokens)"));
    }
}
