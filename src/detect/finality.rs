//! Provisional, then final: when a detection read off the screen may be acted on.
//!
//! A TUI grows a paragraph while the model streams: claude's classic renderer draws it a row at a
//! time, so the screen shows `Engineer Agent: implement the` before it shows the whole task. A
//! detection read off the screen is therefore **provisional** until its block is complete, and
//! becomes **final** when one of these is seen in the byte stream (never a clock):
//! * **text drawn below it**: a later line that is new (never read before in this session), is not
//!   chrome (spinner, prompt box, status bar: [`is_chrome`]) and does not merely grow or repeat a
//!   pending detection's line. TUIs append below; a redraw of older lines is not new text, nor is
//!   the tail of a recent line whose first rows scrolled off the top (the fullscreen renderer
//!   at 60x20 scrolls a wrapped paragraph up by a row while the line below is still streaming: its
//!   last rows, read as a line of their own, are above the pending line, not below it);
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
/// New lines kept for the scrolled-off-tail test (a screenful and then some).
const RECENT: usize = 64;

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
    /// Turn mode: the shorter versions this one replaced (bounded), in case the longest turns out
    /// to have the next line glued on.
    earlier: Vec<(String, Detection)>,
}

/// Earlier versions kept per pending detection in turn mode.
const MAX_EARLIER: usize = 64;

/// The provisional detections of one screen and the memory of lines already read.
#[derive(Debug, Default)]
pub struct Finality {
    pending: Vec<Pending>,
    seen: HashSet<u64>,
    /// Turn mode (CLIs that draw half-streamed rows, [`crate::detect::cli_screen`]): text drawn
    /// below does not complete a block, only the turn's end does, and a later version replaces a
    /// pending one even when the earlier was cut mid-word (`Engineer Agent: impl`).
    turn_mode: bool,
    /// Turn mode: what earlier turns made final (group, text), so a later partial redraw of it
    /// (a CLI reprinting its history, half-drawn) is not a new detection. Bounded.
    done: Vec<(String, String)>,
    /// The last [`RECENT`] new lines, for [`Finality::is_scrolled_tail`].
    recent: std::collections::VecDeque<String>,
}

/// Final detections remembered in turn mode.
const MAX_DONE: usize = 256;

impl Finality {
    /// Nothing pending.
    pub fn new() -> Self {
        Finality::default()
    }

    /// Turn mode: detections become final only at the turn's end ([`Finality::finish`]).
    pub fn turn_mode() -> Self {
        Finality {
            turn_mode: true,
            ..Finality::default()
        }
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
        self.unglue(trimmed);
        // Whether the line is new text matters only to detections already pending (and not in turn
        // mode): without them the recent lines are only recorded, not searched (the search was a
        // fifth of the screen pipeline's time).
        let new_text = !chrome
            && self.remember(trimmed)
            && if self.pending.is_empty() || self.turn_mode {
                self.note_recent(trimmed);
                true
            } else {
                !self.is_scrolled_tail(trimmed)
            };
        let mut grew = false;
        let mut added = Vec::new();
        for mut d in found {
            d.is_final = false;
            let (group, mut text) = super::dedup::key_parts(&d);
            if self.turn_mode && d.task.is_none() && d.title.is_none() {
                // An error's whole line: a half-streamed line may match another pattern of the
                // same category than the whole one (`Error: RecursionEr` / `Error: RecursionError: …`).
                text = fold_line(&d.text);
            }
            if line.cut {
                // Kept out of the pending list: a cut line never becomes final.
                continue;
            }
            let turn_mode = self.turn_mode;
            match self.pending.iter_mut().find(|p| {
                p.group == group
                    && if turn_mode {
                        same_in_turn(&p.text, &text)
                    } else {
                        related(&p.text, &text)
                    }
            }) {
                Some(p) => {
                    if p.text.len() < text.len() {
                        let old_text = std::mem::replace(&mut p.text, text);
                        let old = std::mem::replace(&mut p.d, d);
                        if turn_mode {
                            if p.earlier.len() >= MAX_EARLIER {
                                p.earlier.remove(0);
                            }
                            p.earlier.push((old_text, old));
                        }
                    } else if turn_mode && p.earlier.len() < MAX_EARLIER {
                        p.earlier.push((text, d));
                    }
                    grew = true;
                }
                None => added.push(Pending {
                    group,
                    text,
                    d,
                    earlier: Vec::new(),
                }),
            }
        }
        // New text below the pending detections completes their blocks (not those found in this
        // very line, nor when the line only grows or repeats one of them).
        let done = if new_text && !grew && !self.turn_mode {
            std::mem::take(&mut self.pending)
        } else {
            Vec::new()
        };
        self.pending.extend(added);
        done.into_iter().map(finalize).collect()
    }

    /// The end of input (or of the session): every pending detection is final.
    pub fn finish(&mut self) -> Vec<Detection> {
        if !self.turn_mode {
            return self.pending.drain(..).map(finalize).collect();
        }
        let mut out = Vec::new();
        let pending = std::mem::take(&mut self.pending);
        let starts: Vec<String> = pending.iter().map(|p| fold_line(&p.d.text)).collect();
        for (i, mut p) in pending.into_iter().enumerate() {
            unglue(&mut p, i, &starts);
            if self
                .done
                .iter()
                .any(|(g, t)| *g == p.group && same_in_turn(t, &p.text) && t.len() >= p.text.len())
            {
                continue;
            }
            if self.done.len() >= MAX_DONE {
                self.done.remove(0);
            }
            self.done.push((p.group.clone(), p.text.clone()));
            out.push(finalize(p));
        }
        out
    }

    /// The detections still provisional.
    pub fn pending(&self) -> impl Iterator<Item = &Detection> {
        self.pending.iter().map(|p| &p.d)
    }

    /// A pending detection whose task or title ends with the start of `line` (at least
    /// [`MIN_GLUE`] bytes, from a word boundary) was read with its next row glued on: the screen
    /// reader's half-written next row (`… caching entirely. TODO (High Prior`) looked like a
    /// wrapped continuation until it grew into a line of its own. The glued part is cut off.
    fn unglue(&mut self, line: &str) {
        for p in &mut self.pending {
            let d = &mut p.d;
            let Some(body) = d.task.as_ref().or(d.title.as_ref()) else {
                continue;
            };
            let Some(cut) = glued_at(body, line) else {
                continue;
            };
            let glued = body[cut..].to_string();
            let keep = body[..cut].trim_end().to_string();
            if let Some(t) = d.task.as_mut() {
                *t = keep.clone();
            } else if let Some(t) = d.title.as_mut() {
                *t = keep.clone();
            }
            if let Some(stripped) = d.text.strip_suffix(glued.as_str()) {
                d.text = stripped.trim_end().to_string();
            }
            p.text = super::dedup::key_parts(d).1;
        }
    }

    /// Is `line` the end of a recent line, cut at a word boundary (its first rows scrolled off the
    /// top of the screen), or its start (a shorter redraw)? Remembers `line` among the recent ones
    /// otherwise.
    fn is_scrolled_tail(&mut self, line: &str) -> bool {
        // Every new line is checked against all recent ones: compare the one byte that must match
        // (the last for a tail, the first for a start) before the whole text, which almost always
        // differs there (the full comparisons were a quarter of the pipeline's time).
        let lb = line.as_bytes();
        let (Some(&first), Some(&last)) = (lb.first(), lb.last()) else {
            return false;
        };
        let tail = self.recent.iter().any(|r| {
            let rb = r.as_bytes();
            rb.len() > lb.len()
                && ((rb[rb.len() - 1] == last
                    && r.ends_with(line)
                    && r[..r.len() - line.len()].ends_with(char::is_whitespace))
                    // A redraw of a recent line's shorter state (the reader joined it to a
                    // half-written next row before, and no longer does).
                    || (rb[0] == first
                        && r.starts_with(line)
                        && r[line.len()..].starts_with(char::is_whitespace)))
        });
        if !tail {
            self.note_recent(line);
        }
        tail
    }

    /// Record `line` among the [`RECENT`] new lines, reusing the oldest one's buffer once the ring
    /// is full (no allocation per line).
    fn note_recent(&mut self, line: &str) {
        let mut buf = if self.recent.len() >= RECENT {
            self.recent.pop_front().unwrap_or_default()
        } else {
            String::new()
        };
        buf.clear();
        buf.push_str(line);
        self.recent.push_back(buf);
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

/// Turn mode: a streaming row joined to the row above as its continuation, before it showed what
/// it starts (`TODO: … LRU BUG:` while `BUG: fib(-1) …` streamed): when the longest version of `p`
/// ends with the start of another pending line, take the longest earlier version without it.
fn unglue(p: &mut Pending, me: usize, starts: &[String]) {
    let line = fold_line(&p.d.text);
    let glued_at = line.match_indices(' ').map(|(i, _)| i + 1).find(|&i| {
        let tail = &line[i..];
        tail.len() >= 3
            && starts
                .iter()
                .enumerate()
                .any(|(j, s)| j != me && s.len() > tail.len() && s.starts_with(tail))
    });
    let Some(at) = glued_at else { return };
    let head = line[..at].trim_end();
    if let Some((t, d)) = p
        .earlier
        .iter()
        .filter(|(_, d)| head.starts_with(fold_line(&d.text).as_str()))
        .max_by_key(|(_, d)| d.text.len())
    {
        p.text = t.clone();
        p.d = d.clone();
    }
}

/// Turn mode's identity of a line: lower case, markdown emphasis and code marks dropped, blanks
/// squeezed (a streaming CLI draws `**Research Agent**:` before it renders it bold).
fn fold_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for w in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(
            w.chars()
                .filter(|c| !matches!(c, '*' | '`'))
                .flat_map(char::to_lowercase),
        );
    }
    out
}

/// Turn mode: two versions of one streaming line. One is the other cut anywhere (mid-word:
/// `impl` of `implement`), or both start alike for at least half the shorter one (and 16
/// bytes): a CLI that reflows a paragraph while it streams draws intermediate frames in which the
/// next paragraph's first word stands where the last row of this one was (`… with a Task(`).
fn same_in_turn(a: &str, b: &str) -> bool {
    let common = a
        .char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((i, _), _)| i);
    let shorter = a.len().min(b.len());
    common == shorter || (common >= 16 && common * 2 >= shorter)
}

/// The shortest glued rest [`Finality::unglue`] cuts off.
const MIN_GLUE: usize = 8;

/// Where `body` ends with the start of `line` (a word boundary in `body`, at least [`MIN_GLUE`]
/// bytes, `line` longer than the overlap).
fn glued_at(body: &str, line: &str) -> Option<usize> {
    let max = body.len().min(line.len().saturating_sub(1));
    (MIN_GLUE..=max).rev().find_map(|n| {
        let cut = body.len() - n;
        (body.is_char_boundary(cut)
            && line.is_char_boundary(n)
            && body[..cut].ends_with(char::is_whitespace)
            && body[cut..] == line[..n])
            .then_some(cut)
    })
}

/// One text is the other cut short, or both are equal. Mid-word too: the screen reader prints its
/// live line as the model streams (`Engineer Agent: ad`) and reprints it longer (`… add an LRU`).
fn related(a: &str, b: &str) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    !short.is_empty() && long.starts_with(short)
}

/// The starts of claude's screen-reader status rows.
const SR_STATUS: &[&str] = &[
    "accept edits on (shift+tab",
    "bypass permissions on (shift+tab",
    "plan mode on (shift+tab",
    "auto mode on (shift+tab",
    "effort: ",
    "esc to interrupt",
];

/// A status row only claude's screen-reader renderer draws (its mode line or effort line as flat
/// text; the other renderers start these rows with a glyph): the session is read in that renderer,
/// which draws markdown emphasis as plain text.
pub(crate) fn is_screen_reader_status(trimmed: &str) -> bool {
    SR_STATUS[..5].iter().any(|p| trimmed.starts_with(p))
}

/// The spinner glyphs claude cycles through before a status word (`✻ Crunched…`).
const SPINNER: &[char] = &['✻', '✢', '✳', '✶', '✽', '·', '*', '◐', '◑', '◒', '◓'];

/// Rows a TUI redraws around the reply that are not reply text: a spinner or status word, the
/// prompt box and its borders, the status bar, the user's input row.
pub(crate) fn is_chrome(trimmed: &str) -> bool {
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
    // The screen reader's status rows (flat text, no glyphs): the mode line, the effort line, its
    // `$` prompt, its spinner word (`Computing…`).
    if SR_STATUS.iter().any(|p| trimmed.starts_with(p))
        || trimmed == "$"
        || trimmed.contains("(shift+tab to cycle)")
    {
        return true;
    }
    if let Some(word) = trimmed.strip_suffix('…')
        && !word.is_empty()
        && word.chars().all(char::is_alphabetic)
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
pub(crate) fn is_turn_end(trimmed: &str) -> bool {
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

    /// fullscreen_60_cache: the screen scrolls a wrapped paragraph up by a row while the line
    /// below it streams; the paragraph's last rows, read as a line, are not text below the
    /// pending line.
    #[test]
    fn the_tail_of_a_line_scrolled_off_the_top_is_not_new_text() {
        let mut f = Finality::new();
        f.line(
            line("**Engineer Agent**: add an LRU policy with a configurable capacity"),
            vec![],
        );
        let cut = "Documentation Agent: Once the policy lands, document it,";
        assert!(
            f.line(
                line(cut),
                vec![delegation("Once the policy lands, document it,")]
            )
            .is_empty()
        );
        assert!(
            f.line(line("with a configurable capacity"), vec![])
                .is_empty()
        );
        let whole = "Documentation Agent: Once the policy lands, document it, with an example.";
        assert!(
            f.line(
                line(whole),
                vec![delegation(
                    "Once the policy lands, document it, with an example."
                )]
            )
            .is_empty()
        );
        let done = f.line(line("TODO (P2): the next block"), vec![]);
        assert_eq!(done.len(), 1);
        assert_eq!(
            done[0].task.as_deref(),
            Some("Once the policy lands, document it, with an example.")
        );
    }

    /// screenreader_80_cache: the live line is printed as it streams (`ad`, then `add an LRU`),
    /// the status rows below it are chrome, and a half-written next row joined onto a line is cut
    /// off again when it grows into a line of its own.
    #[test]
    fn screen_reader_live_lines_and_glued_rows() {
        let mut f = Finality::new();
        assert!(
            f.line(line("Engineer Agent: ad"), vec![delegation("ad")])
                .is_empty()
        );
        assert!(
            f.line(
                line("accept edits on (shift+tab to cycle)  ·  esc to interrupt"),
                vec![]
            )
            .is_empty()
        );
        assert!(f.line(line("effort: medium · /effort"), vec![]).is_empty());
        let whole = "add an LRU policy to cache.py. TODO (High Prior";
        assert!(
            f.line(
                line(&format!("Engineer Agent: {whole}")),
                vec![delegation(whole)]
            )
            .is_empty()
        );
        let done = f.line(line("TODO (High Priority): the cache key"), vec![]);
        assert_eq!(done.len(), 1);
        assert_eq!(
            done[0].task.as_deref(),
            Some("add an LRU policy to cache.py.")
        );
        assert_eq!(
            done[0].text,
            "Engineer Agent: add an LRU policy to cache.py."
        );
        // A shorter redraw of a recent line is not new text.
        f.line(line("Engineer Agent: x y"), vec![delegation("x y")]);
        assert!(f.line(line("TODO (High Priority): the"), vec![]).is_empty());
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
    fn turn_mode_waits_for_the_turn_end_and_joins_mid_word_cuts() {
        let mut f = Finality::turn_mode();
        assert!(
            f.line(line("Engineer Agent: impl"), vec![delegation("impl")])
                .is_empty()
        );
        assert!(f.line(line("Next paragraph."), vec![]).is_empty());
        assert!(
            f.line(
                line("Engineer Agent: implement fib"),
                vec![delegation("implement fib")]
            )
            .is_empty()
        );
        let done = f.finish();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].task.as_deref(), Some("implement fib"));
    }

    #[test]
    fn turn_mode_takes_the_longest_of_a_reflowed_line_and_drops_later_partial_redraws() {
        let mut f = Finality::turn_mode();
        let whole = "compare the iterative and matrix algorithms with a short table";
        f.line(
            line("a"),
            vec![delegation(
                "compare the iterative and matrix algorithms with a short tabl",
            )],
        );
        f.line(
            line("b"),
            vec![delegation(
                "compare the iterative and matrix algorithms with a Task(",
            )],
        );
        f.line(line("c"), vec![delegation(whole)]);
        let done = f.finish();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].task.as_deref(), Some(whole));
        // The CLI reprints its history, half-drawn: nothing new.
        f.line(
            line("d"),
            vec![delegation("compare the iterative and matri")],
        );
        assert!(f.finish().is_empty());
        // Another delegation to the same agent is its own.
        f.line(line("e"), vec![delegation("write the docs")]);
        assert_eq!(f.finish().len(), 1);
    }

    #[test]
    fn turn_mode_unglues_the_next_line() {
        let mut f = Finality::turn_mode();
        let ticket = |t: &str, title: &str| Detection {
            category: "ticket".into(),
            ticket_type: Some(t.into()),
            title: Some(title.into()),
            text: format!("{t}: {title}"),
            agent: None,
            task: None,
            ..delegation("x")
        };
        f.line(line("a"), vec![ticket("TODO", "cache it in a bounded LRU")]);
        f.line(
            line("b"),
            vec![ticket("TODO", "cache it in a bounded LRU BUG:")],
        );
        f.line(line("c"), vec![ticket("BUG", "fib(-1) never returns")]);
        let done = f.finish();
        assert_eq!(done.len(), 2);
        assert_eq!(done[0].title.as_deref(), Some("cache it in a bounded LRU"));
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
            "accept edits on (shift+tab to cycle)  ·  esc to interrupt",
            "effort: medium · /effort",
            "$",
            "Computing…",
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
