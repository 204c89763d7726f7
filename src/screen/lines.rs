//! Rows to logical lines: when a row is read, and how wrapped rows are joined.
//!
//! **When rows are read.** Reads happen at points that are fixed in the byte stream, so the lines a
//! stream yields do not depend on how it was chunked:
//! * [`ReadKind::PassEnd`]: the writer is about to move the cursor up (it will overwrite what it drew)
//!   or a synchronized frame (`CSI ? 2026 l`) ended. TUIs draw top-down, a row at a time, so every row
//!   *above the cursor* is complete; the cursor row may be half drawn and is skipped.
//! * [`ReadKind::All`]: rows are about to be destroyed (ED, alternate screen switch, RIS, resize) or the
//!   stream ended: every row is read.
//! * Rows scrolled out of a region (LF at the bottom, SU, DL) are kept and read with the next read.
//! * [`ReadKind::FeedEnd`]: after each `feed` (a PTY read burst), for latency: rows above the cursor,
//!   except a last line that may still get a continuation row (it is read later).
//!
//! No read happens while a synchronized frame is open. Every row remembers whether its current content
//! was already read (`Row::seen`); only lines with a changed row are passed on, so a redraw that
//! rewrites identical text costs a comparison, not a match. A partial row is never read: it is either
//! the cursor row or below it.
//!
//! **Joining wrapped rows.** Claude wraps paragraphs itself, at word boundaries, to the width minus its
//! two-column margin; continuation rows have the paragraph's text indent and no marker. Row `b`
//! continues row `a` when `a` ended by autowrap, or when all of: both are non-blank; `b` starts at the
//! column where `a`'s text starts (after its indent and a marker such as `● `, `⎿  `, `▎ `, `- `,
//! `1. `); `b` has no marker; and `b`'s first word would not have fitted on `a`
//! (`len(a) + 1 + len(first word of b) > cols - 2`). At most [`MAX_JOIN_ROWS`] rows and
//! [`MAX_LINE_BYTES`] bytes make one line, so binary junk or a 50 MB line cost bounded memory.
//!
//! **Other wrappers.** A CLI whose renderer wraps differently says how in its screen table
//! ([`Rewrap`], e.g. opencode's opentui): a break after punctuation inside a word, a space that did
//! not fit carried to the next row (one column further in), a break at a space only where the space
//! fits. Without one, the rule above holds.
//!
//! **Code.** A line whose non-blank cells are at least [`CODE_SHARE`] drawn in a code colour
//! ([`crate::screen::vt::CODE`]) is marked [`Line::code`]: claude draws a fenced block's lines that
//! way (without the fences), and a prose line with some inline code stays well below the share.

// Rows are boxed on purpose: a scroll rotates the visible rows (pointers, not whole rows).
#![allow(clippy::vec_box)]

use super::vt::{Hook, Row, Screen};

/// Rows joined into one logical line at most (a 60 KB line at 60 columns).
pub(crate) const MAX_JOIN_ROWS: usize = 1024;
/// Bytes of one logical line at most: the engine's own cap. A longer line is cut here and marked
/// [`Line::cut`] (its detections are never final).
pub(crate) const MAX_LINE_BYTES: usize = crate::patterns::MAX_LINE_BYTES;
/// A line is code when at least this share (in percent) of its non-blank cells is drawn as code. A
/// highlighted comment or string line is all or nearly all code; `def f(x: int) -> int:` is about
/// 60 %; prose with one inline `Task(...)` about half: 75 keeps the prose and catches what a
/// delegation-like line in a block looks like (a comment, a string, a bare block's line).
pub(crate) const CODE_SHARE: usize = 75;
/// The longest word the "could still continue" check allows for.
const LONG_WORD: usize = 20;

/// What prompted a read; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadKind {
    /// The end of one chunk of output.
    FeedEnd,
    /// The end of a pass over buffered chunks.
    PassEnd,
    /// Everything (the end of the input).
    All,
    /// Only the scrolled-out rows (too many piled up during one feed).
    History,
}

impl From<Hook> for ReadKind {
    fn from(h: Hook) -> Self {
        match h {
            Hook::PassEnd => ReadKind::PassEnd,
            Hook::BeforeClear => ReadKind::All,
            Hook::HistoryFull => ReadKind::History,
        }
    }
}

/// Decoration markers a TUI puts before a row's text, with the columns they take (marker + gap).
/// The other CLIs' reply and error markers too: codex `• `, gemini `✦ ` and `✕ `, and opencode's box
/// bar `┃ ` (its user and error boxes: a box row never continues the row above it).
const MARKERS: &[&str] = &[
    "● ", "⏺ ", "⎿  ", "⎿ ", "▎ ", "❯ ", "✻ ", "✢ ", "· ", "• ", "✦ ", "✕ ", "┃ ",
];

/// The column where the row's text starts after its indent and marker, and whether it has a marker.
fn text_start(s: &str) -> (usize, bool) {
    let indent = s.len() - s.trim_start_matches(' ').len();
    let rest = &s[indent..];
    // Every marker starts with a non-ASCII symbol; a row of text skips the table.
    if !rest.is_empty() && !rest.as_bytes()[0].is_ascii() {
        for m in MARKERS {
            // A marker alone on its row (`❯` with trailing blanks trimmed) counts too.
            if rest.len() < m.len() && m.starts_with(rest) && m[rest.len()..].trim().is_empty() {
                return (indent + m.chars().count(), true);
            }
            if let Some(r) = rest.strip_prefix(m) {
                let extra = r.len() - r.trim_start_matches([' ', '\u{a0}']).len();
                return (indent + m.chars().count() + extra, true);
            }
        }
    }
    // Markdown list markers kept as text by the renderer: `- `, `* `, `12. `.
    if rest.starts_with("- ") || rest.starts_with("* ") {
        return (indent + 2, true);
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0 && digits < 4 && rest[digits..].starts_with(". ") {
        return (indent + digits + 2, true);
    }
    (indent, false)
}

/// How a CLI's renderer wraps a long line, where it differs from claude's (see [`continues`]).
/// Read from the CLI's screen table (`screen.wrap`, [`crate::detect::cli_screen`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rewrap {
    /// Columns right of the text's last possible column (the wrap edge is `cols - right_margin`).
    pub right_margin: usize,
    /// A space that does not fit at a row's end starts the next row: the next row is one column
    /// further in than the paragraph's text.
    pub carry_space: bool,
    /// The renderer also breaks right after punctuation inside a word (`docs/fib.` / `md`): a row
    /// filled to the edge without room for a space ends inside a word, and the next row is joined
    /// to it without a space.
    pub split_words: bool,
    /// A break at a space needs the space to fit on the row too (`… describe fib() and ` is one
    /// column too wide, so `and` goes to the next row although the word alone would fit).
    pub space_must_fit: bool,
}

/// Whether a row is drawn as code: at least [`CODE_SHARE`] % of its ink in code colours.
fn is_code_row(r: &Row) -> bool {
    let (code, ink) = r.code_cells();
    code > 0 && code * 100 >= ink * CODE_SHARE
}

/// How row `b` joins the row above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Join {
    /// Not a continuation.
    No,
    /// A continuation: one space between (the break was at a space).
    Space,
    /// A continuation of the same word: no space (an autowrap, or a break inside a word).
    Tight,
}

/// Does row `b` continue row `a` (`a_cols` display columns wide; the first row of the line starts
/// at `first_start`)? `starts_line` says whether a row's text is the start of something the engine
/// detects: such a row is a line of its own, not a continuation (two markdown lines that merely
/// fill the width, `TODO (High Priority): …` then `FIXME (P2): …`, stay two).
fn continues(
    a: &Row,
    b: &Row,
    (first_start, first_indent): (usize, usize),
    cols: usize,
    starts_line: &dyn Fn(&str) -> bool,
    rewrap: Option<&Rewrap>,
) -> Join {
    // Scrolled out of a region below the top row: the visible row after it was never below it.
    if a.detached != b.detached {
        return Join::No;
    }
    if a.wrapped {
        return Join::Tight;
    }
    if let Some(w) = rewrap {
        return continues_rewrapped(a, b, (first_start, first_indent), cols, starts_line, w);
    }
    let (at, bt) = (a.cached_text(), b.cached_text());
    let a_cols = a.cached_cols();
    // Rows are right-trimmed: empty means blank. Cheap rejection next: even all of `b` as one word
    // would have fitted on `a`.
    if at.is_empty() || bt.is_empty() || a_cols + 1 + b.cached_cols() <= cols.saturating_sub(2) {
        return Join::No;
    }
    let (b_start, b_marker) = text_start(bt);
    // The text column of the first row (a hanging indent), or, after a list marker, the marker's
    // own column: the screen reader wraps list items without a hanging indent.
    if b_marker || (b_start != first_start && b_start != first_indent) {
        return Join::No;
    }
    let word = bt[b_start.min(bt.len())..]
        .split(' ')
        .next()
        .map_or(0, unicode_width::UnicodeWidthStr::width);
    if a_cols + 1 + word > cols.saturating_sub(2) && !starts_line(bt) {
        Join::Space
    } else {
        Join::No
    }
}

/// Punctuation a renderer that splits words may break after (see [`Rewrap::split_words`]).
const BREAK_AFTER: &[char] = &['.', ',', '/', '-', ';', ':', '!', '?', ')', ']'];

/// [`continues`] for a CLI with its own [`Rewrap`] rules.
fn continues_rewrapped(
    a: &Row,
    b: &Row,
    (first_start, first_indent): (usize, usize),
    cols: usize,
    starts_line: &dyn Fn(&str) -> bool,
    w: &Rewrap,
) -> Join {
    let (at, bt) = (a.cached_text(), b.cached_text());
    let a_cols = a.cached_cols();
    let edge = cols.saturating_sub(w.right_margin);
    if at.is_empty() || bt.is_empty() || a_cols + 1 + b.cached_cols() <= edge {
        return Join::No;
    }
    let (b_start, b_marker) = text_start(bt);
    if b_marker {
        return Join::No;
    }
    // No room left for a space after `a`'s last character.
    let full = a_cols >= edge;
    let join = if w.carry_space && full && b_start == first_start + 1 {
        Join::Space
    } else if b_start != first_start && b_start != first_indent {
        Join::No
    } else if w.split_words && full {
        Join::Tight
    } else {
        let rest = &bt[b_start.min(bt.len())..];
        let (word, more) = rest.split_once(' ').unwrap_or((rest, ""));
        let mut need = unicode_width::UnicodeWidthStr::width(word);
        if w.space_must_fit && !more.trim().is_empty() && !word.ends_with(BREAK_AFTER) {
            need += 1;
        }
        if a_cols + 1 + need > edge {
            Join::Space
        } else {
            Join::No
        }
    };
    if join != Join::No && starts_line(bt.trim_start()) {
        return Join::No;
    }
    join
}

/// Could this row still get a continuation row?
fn may_continue(a: &Row, cols: usize) -> bool {
    a.wrapped || a.cached_cols() + 1 + LONG_WORD > cols.saturating_sub(2)
}

/// Logical lines read off the screen, in order. The line buffers are kept and reused from one
/// read to the next ([`Lines::clear`]), so reading costs no allocation once warm.
#[derive(Debug, Default)]
pub struct Lines {
    bufs: Vec<String>,
    /// Per line: it was cut at [`MAX_LINE_BYTES`] or [`MAX_JOIN_ROWS`].
    cut: Vec<bool>,
    /// Per line: drawn as code (see [`CODE_SHARE`]).
    code: Vec<bool>,
    /// Per line: its first non-blank cell is drawn in an alert colour.
    alert: Vec<bool>,
    len: usize,
}

/// One logical line read off the screen.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    pub text: &'a str,
    /// The line was longer than the reader keeps and was cut: what it says is incomplete.
    pub cut: bool,
    /// The line is drawn as code (a fenced block's line): not the agent's words.
    pub code: bool,
    /// The line starts in an alert colour (a CLI's error display, see
    /// [`crate::screen::Screen::set_alert_colours`]).
    pub alert: bool,
}

/// A buffer bigger than this is dropped at [`Lines::clear`] rather than kept.
const KEEP_LINE_CAPACITY: usize = 4096;

impl Lines {
    /// Empty.
    pub fn new() -> Self {
        Lines::default()
    }

    /// The lines read since the last [`Lines::clear`].
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.bufs[..self.len].iter().map(String::as_str)
    }

    /// The lines read since the last [`Lines::clear`], with what the reader knows about each.
    pub fn lines(&self) -> impl Iterator<Item = Line<'_>> {
        self.bufs[..self.len]
            .iter()
            .zip(self.cut.iter().zip(&self.code))
            .zip(&self.alert)
            .map(|((t, (&cut, &code)), &alert)| Line {
                text: t,
                cut,
                code,
                alert,
            })
    }

    /// How many lines.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No lines.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forget the lines, keeping their buffers (all but the oversized ones).
    pub fn clear(&mut self) {
        for b in &mut self.bufs[..self.len] {
            if b.capacity() > KEEP_LINE_CAPACITY {
                *b = String::new();
            }
        }
        self.len = 0;
    }

    /// A cleared buffer for the next line.
    fn push_new(&mut self) -> &mut String {
        if self.len == self.bufs.len() {
            self.bufs.push(String::new());
            self.cut.push(false);
            self.code.push(false);
            self.alert.push(false);
        }
        self.cut[self.len] = false;
        self.code[self.len] = false;
        self.alert[self.len] = false;
        let b = &mut self.bufs[self.len];
        b.clear();
        self.len += 1;
        b
    }
}

/// Says whether a row's text starts something the engine detects (see [`continues`]).
pub(crate) type StartsLine = Box<dyn Fn(&str) -> bool + Send>;

/// Turns screen rows into logical lines; holds only scratch space and the line-start test.
#[derive(Default)]
pub struct LineReader {
    scratch: Vec<Box<Row>>,
    starts_line: Option<StartsLine>,
    rewrap: Option<Rewrap>,
    /// Per row of the line being grouped (after its first): joined without a space.
    tight: Vec<bool>,
    /// Read a code block's uncoloured rows as code (see [`LineReader::with_code_blocks`]).
    code_blocks: bool,
}

impl std::fmt::Debug for LineReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineReader")
            .field("scratch", &self.scratch.len())
            .finish()
    }
}

impl LineReader {
    /// A reader with nothing read yet.
    pub fn new() -> Self {
        LineReader::default()
    }

    /// A reader that never joins a row that starts something the engine detects to the row above
    /// (see [`continues`]). The test runs only on rows that the width rule would join (rare).
    pub fn with_line_start(starts_line: StartsLine) -> Self {
        LineReader {
            scratch: Vec::new(),
            starts_line: Some(starts_line),
            rewrap: None,
            tight: Vec::new(),
            code_blocks: false,
        }
    }

    /// Join wrapped rows by a CLI's own wrapping rules instead of claude's.
    pub fn set_rewrap(&mut self, rewrap: Option<Rewrap>) {
        self.rewrap = rewrap;
    }

    /// Also read as code a row drawn without colour that sits in a code block: below a line drawn
    /// as code ([`CODE_SHARE`]), at the same indent, with no blank row between (claude draws a
    /// fenced block without its fences, a blank row above and below it, and highlights only some
    /// tokens: in a ```` ```python ```` block `# a comment` is green, the next line `QA Agent: …`
    /// plain). A row with a list marker is never taken along, nor spreads code: a list item that is
    /// all inline code (`- ` then `` `path.py` ``) must not swallow the items below it. Only claude
    /// draws blocks this way; other CLIs' tables leave it off.
    pub fn with_code_blocks(mut self, on: bool) -> Self {
        self.code_blocks = on;
        self
    }

    /// Read the screen as `kind` says and push each new or changed logical line onto `out`.
    pub fn read(&mut self, screen: &mut Screen, kind: ReadKind, out: &mut Lines) {
        let cols = screen.cols();
        let limit = match kind {
            ReadKind::All => screen.rows(),
            ReadKind::History => 0,
            ReadKind::FeedEnd | ReadKind::PassEnd => screen.cursor_row(),
        };
        std::mem::swap(&mut self.scratch, screen.history_mut());
        let mut stop = usize::MAX;
        {
            let vis = screen.rows_mut();
            let limit = limit.min(vis.len());
            let mut rows = Rows {
                hist: &mut self.scratch,
                vis: &mut vis[..limit],
            };
            // Only the rows around a change are grouped: nothing before the blank row above the first
            // changed row (lines never span a blank row), nothing after the line holding the last.
            if let Some((first, last)) = rows.unseen_span() {
                let mut from = first;
                while from > 0 && !rows.text(from - 1).cached_text().is_empty() {
                    from -= 1;
                }
                let never = |_: &str| false;
                let starts_line: &dyn Fn(&str) -> bool = match &self.starts_line {
                    Some(f) => f,
                    None => &never,
                };
                let how = Grouping {
                    cols,
                    starts_line,
                    rewrap: self.rewrap.as_ref(),
                    code_blocks: self.code_blocks,
                };
                stop = assemble(&mut rows, from, last, kind, &how, &mut self.tight, out);
            }
        }
        let mut drained = std::mem::take(&mut self.scratch);
        if stop < drained.len() {
            // The last paragraph may go on in rows still on screen: keep it for the next read.
            let keep = drained.split_off(stop);
            let hist = screen.history_mut();
            let newer = std::mem::replace(hist, keep);
            hist.extend(newer);
        }
        screen.recycle(drained);
    }
}

/// The rows being read: scrolled-out ones first, then the visible ones, without copying.
struct Rows<'a> {
    hist: &'a mut [Box<Row>],
    vis: &'a mut [Box<Row>],
}

impl Rows<'_> {
    fn len(&self) -> usize {
        self.hist.len() + self.vis.len()
    }

    fn get(&self, i: usize) -> &Row {
        if i < self.hist.len() {
            &self.hist[i]
        } else {
            &self.vis[i - self.hist.len()]
        }
    }

    fn get_mut(&mut self, i: usize) -> &mut Row {
        if i < self.hist.len() {
            &mut self.hist[i]
        } else {
            &mut self.vis[i - self.hist.len()]
        }
    }

    /// The first and last row whose content was not read yet.
    fn unseen_span(&self) -> Option<(usize, usize)> {
        let mut it = self.hist.iter().chain(self.vis.iter());
        let first = it.position(|r| !r.seen)?;
        let last = (first..self.len())
            .rev()
            .find(|&i| !self.get(i).seen)
            .unwrap_or(first);
        Some((first, last))
    }

    /// Row `i` with its text built.
    fn text(&mut self, i: usize) -> &Row {
        self.get_mut(i).ensure_text();
        self.get(i)
    }
}

/// Group rows `from..` into logical lines, up to the one that holds row `last`, and emit those with a
/// changed row. Returns the first row of a last line held back as possibly incomplete, or `usize::MAX`.
/// How rows are grouped into lines: the width and the joining rules.
struct Grouping<'a> {
    cols: usize,
    starts_line: &'a dyn Fn(&str) -> bool,
    rewrap: Option<&'a Rewrap>,
    /// Read a code block's uncoloured rows as code ([`LineReader::with_code_blocks`]).
    code_blocks: bool,
}

fn assemble(
    rows: &mut Rows<'_>,
    from: usize,
    last: usize,
    kind: ReadKind,
    how: &Grouping<'_>,
    tight: &mut Vec<bool>,
    out: &mut Lines,
) -> usize {
    let (cols, starts_line, code_blocks) = (how.cols, how.starts_line, how.code_blocks);
    let n = rows.len();
    let nhist = rows.hist.len();
    let mut i = from;
    // The indent of the code block the previous line of this paragraph belongs to (reading starts
    // at the blank row above a change, so the block's coloured lines are passed again).
    let mut block: Option<usize> = None;
    while i < n && i <= last {
        if rows.text(i).cached_text().is_empty() {
            rows.get_mut(i).seen = true;
            block = None;
            i += 1;
            continue;
        }
        let first = rows.get(i).cached_text();
        let (first_start, marked) = text_start(first);
        let first_indent = first.len() - first.trim_start_matches(' ').len();
        let mut j = i;
        // The paragraph goes on past the row cap: the line is cut.
        let mut cut = false;
        tight.clear();
        while j + 1 < n {
            rows.text(j + 1);
            let start = (first_start, first_indent);
            let (a, b) = (rows.get(j), rows.get(j + 1));
            // A code row (claude's colours) does not wrap onto a row without any: a comment that
            // fills the width exactly is followed by the block's next, plain line.
            let leaves_code = how.code_blocks && is_code_row(a) && b.code_cells().0 == 0;
            let join = if leaves_code {
                Join::No
            } else {
                continues(a, b, start, cols, starts_line, how.rewrap)
            };
            if join == Join::No {
                break;
            }
            tight.push(join == Join::Tight);
            if j - i + 1 == MAX_JOIN_ROWS {
                cut = true;
                break;
            }
            j += 1;
        }
        let last = rows.get(j);
        // A read that stops short of the writer may see a paragraph without its last rows: after a
        // read burst (the rows below the cursor are still to come) and when only scrolled-out rows are
        // read (the rest is on screen).
        let incomplete = j + 1 == n
            && match kind {
                ReadKind::FeedEnd => j >= nhist,
                ReadKind::History => true,
                _ => false,
            }
            && may_continue(last, cols);
        if incomplete && j - i + 1 < MAX_JOIN_ROWS {
            return i;
        }
        let unseen = (i..=j).any(|k| !rows.get(k).seen);
        let mut in_block = false;
        if code_blocks || unseen {
            let (code, ink) = (i..=j).fold((0, 0), |(c, n), k| {
                // A row without code counts its characters (blanks too: an over-estimate that only
                // lowers the share) instead of a count the row does not keep.
                let r = rows.get(k);
                let (rc, rn) = r.code_cells();
                (c + rc, n + if rc == 0 { r.cached_chars() } else { rn })
            });
            in_block = code > 0 && code * 100 >= ink * CODE_SHARE;
            if code_blocks {
                if marked {
                    block = None;
                } else if in_block {
                    block = Some(first_indent);
                } else {
                    in_block = block == Some(first_indent);
                    if !in_block {
                        block = None;
                    }
                }
            }
        }
        if unseen {
            let line = out.push_new();
            for k in i..=j {
                let t = rows.get(k).cached_text();
                if k == i || rows.get(k - 1).wrapped {
                    line.push_str(t);
                } else if tight.get(k - i - 1).copied().unwrap_or(false) {
                    line.push_str(t.trim_start());
                } else {
                    line.push(' ');
                    line.push_str(t.trim_start());
                }
                if line.len() > MAX_LINE_BYTES {
                    let mut at = MAX_LINE_BYTES;
                    while !line.is_char_boundary(at) {
                        at -= 1;
                    }
                    line.truncate(at);
                    cut = true;
                    break;
                }
            }
            out.cut[out.len - 1] = cut;
            out.code[out.len - 1] = in_block;
            out.alert[out.len - 1] = rows.get(i).starts_alert();
            for k in i..=j {
                rows.get_mut(k).seen = true;
            }
        }
        i = j + 1;
    }
    usize::MAX
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(cols: u16, rows: u16, input: &[u8]) -> Vec<String> {
        let mut s = Screen::new(cols, rows);
        let mut r = LineReader::new().with_code_blocks(true);
        let mut out = Lines::new();
        s.feed(input, &mut |s, h| r.read(s, h.into(), &mut out));
        r.read(&mut s, ReadKind::All, &mut out);
        out.iter().map(str::to_string).collect()
    }

    /// opencode's (opentui's) wrapping, as its table describes it.
    const OPENTUI: Rewrap = Rewrap {
        right_margin: 2,
        carry_space: true,
        split_words: true,
        space_must_fit: true,
    };

    fn rewrapped(cols: u16, input: &[u8]) -> Vec<String> {
        let mut s = Screen::new(cols, 10);
        let mut r = LineReader::new().with_code_blocks(true);
        r.set_rewrap(Some(OPENTUI));
        let mut out = Lines::new();
        s.feed(input, &mut |s, h| r.read(s, h.into(), &mut out));
        r.read(&mut s, ReadKind::All, &mut out);
        out.iter().map(str::to_string).collect()
    }

    #[test]
    fn opentui_split_inside_a_word_joins_without_a_space() {
        // 20 columns: the edge is 18; `docs/fib.` ends exactly there, `md` goes on below.
        let input = b"\x1b[1;1H   see the docs/fib.\x1b[2;1H   md file\x1b[4;1H";
        assert_eq!(rewrapped(20, input), ["   see the docs/fib.md file"]);
    }

    #[test]
    fn opentui_carried_space_joins_one_column_further_in() {
        let input = b"\x1b[1;1H   one two three four,\x1b[2;1H    and five\x1b[4;1H";
        assert_eq!(rewrapped(23, input), ["   one two three four, and five"]);
    }

    #[test]
    fn opentui_break_where_the_space_would_not_fit() {
        // `and` alone would fit after `it` (edge 18), `and ` would not: opentui wrapped there.
        let input = b"\x1b[1;1H   describe it\x1b[2;1H   and its limits\x1b[4;1H";
        assert_eq!(rewrapped(20, input), ["   describe it and its limits"]);
        // Without the rule the rows stay apart (claude's rule: the word alone would have fitted).
        assert_eq!(
            lines_of(20, 10, input),
            ["   describe it", "   and its limits"]
        );
    }

    #[test]
    fn opentui_short_rows_stay_apart() {
        let input = b"\x1b[1;1H   short one.\x1b[2;1H   Next line\x1b[4;1H";
        assert_eq!(rewrapped(40, input), ["   short one.", "   Next line"]);
    }

    #[test]
    fn every_marker_starts_with_a_non_ascii_symbol() {
        // `text_start` skips the marker table for rows that start with ASCII.
        assert!(MARKERS.iter().all(|m| !m.as_bytes()[0].is_ascii()));
    }

    #[test]
    fn a_lone_marker_row_counts_as_marker() {
        assert_eq!(text_start("  ⎿"), (5, true));
        assert_eq!(text_start("❯"), (2, true));
        assert_eq!(text_start("  ⎿  done"), (5, true));
        assert_eq!(text_start("  plain"), (2, false));
    }

    #[test]
    fn line_buffers_are_reused_after_clear() {
        let mut l = Lines::new();
        l.push_new().push_str("first line");
        l.push_new().push_str("second");
        assert_eq!(l.iter().collect::<Vec<_>>(), ["first line", "second"]);
        l.clear();
        assert!(l.is_empty());
        l.push_new().push('x');
        assert_eq!(l.iter().collect::<Vec<_>>(), ["x"]);
        assert_eq!(l.len(), 1);
    }

    const LONG: &[u8] = b"\x1b[3G\x1b[1mEngineer\x1b[12GAgent\x1b[22m:\x1b[19GThis\x1b[24Gis a deliberately long delegation line to check wrapping, so it keeps\x1b[94Ggoing\r\r\n\
\x1b[3Gwell past the terminal width: implement fib(n) iteratively, add type hints, raise ValueError\x1b[96Gon\r\r\n\
\x1b[3Gnegative input, keep it O(n) time and O(1) space, and report back.\r\r\n\r\n\x1b[3GTODO: next\r\n";

    #[test]
    fn joins_a_wrapped_paragraph() {
        let out = lines_of(100, 30, LONG);
        assert_eq!(
            out[0],
            "  **Engineer Agent**: This is a deliberately long delegation line to check wrapping, so it keeps going \
well past the terminal width: implement fib(n) iteratively, add type hints, raise ValueError on \
negative input, keep it O(n) time and O(1) space, and report back."
        );
        assert_eq!(out[1], "  TODO: next");
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn short_rows_are_not_joined() {
        let out = lines_of(100, 10, b"  TODO: a\r\n  BUG: b\r\n");
        assert_eq!(out, ["  TODO: a", "  BUG: b"]);
    }

    #[test]
    fn marker_rows_are_not_continuations() {
        let long = format!("  {}\r\n  \u{23bf}  done\r\n", "x ".repeat(48));
        let out = lines_of(100, 10, long.as_bytes());
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn list_item_continuation_uses_text_indent() {
        let first = format!("  - TODO: {}\r\n", "word ".repeat(18).trim_end());
        let input = format!("{first}    tail\r\n");
        let out = lines_of(100, 10, input.as_bytes());
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].ends_with("word tail"));
    }

    #[test]
    fn a_list_item_wrapped_without_a_hanging_indent_is_one_line() {
        // The screen reader wraps `1. QA Agent: …` at the width and goes on at column 0.
        let first = format!("1. QA Agent: {}", "word ".repeat(17).trim_end());
        assert!(first.len() > 90);
        let input = format!("{first}\r\ntail of the task\r\n\r\n- TODO: short\r\nnext\r\n");
        let out = lines_of(100, 10, input.as_bytes());
        assert_eq!(
            out,
            [
                format!("{first} tail of the task"),
                "- TODO: short".to_string(),
                "next".to_string()
            ]
        );
    }

    #[test]
    fn feed_end_waits_for_a_possible_continuation() {
        let mut s = Screen::new(100, 30);
        let mut r = LineReader::new().with_code_blocks(true);
        let mut out = Lines::new();
        // First two rows of LONG only.
        let cut = LONG.windows(3).position(|w| w == b"neg").unwrap_or(0) - 4;
        s.feed(&LONG[..cut], &mut |s, h| r.read(s, h.into(), &mut out));
        r.read(&mut s, ReadKind::FeedEnd, &mut out);
        assert!(out.is_empty(), "{out:?}");
        s.feed(&LONG[cut..], &mut |s, h| r.read(s, h.into(), &mut out));
        r.read(&mut s, ReadKind::FeedEnd, &mut out);
        assert_eq!(out.len(), 2);
        assert!(
            out.iter()
                .next()
                .is_some_and(|l| l.ends_with("report back."))
        );
    }

    #[test]
    fn a_flood_keeps_a_paragraph_that_straddles_the_history_cap_whole() {
        // Short lines up to 2 rows below the history cap, a 3-row paragraph, 40 more lines, all in
        // one feed: the history cap is reached while the paragraph's last row is still on screen.
        let mut input = Vec::new();
        for k in 0..super::super::vt::HISTORY_CAP - 2 {
            input.extend_from_slice(format!("line {k}\r\n").as_bytes());
        }
        input.extend_from_slice(&LONG[..LONG.len() - 14]);
        for k in 0..40 {
            input.extend_from_slice(format!("tail {k}\r\n").as_bytes());
        }
        let out = lines_of(100, 5, &input);
        assert!(
            out.iter()
                .any(|l| l.starts_with("  **Engineer Agent**:") && l.ends_with("report back.")),
            "{:?}",
            out.iter()
                .filter(|l| l.contains("Agent"))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            out.iter().filter(|l| l.contains("Engineer Agent")).count(),
            1
        );
    }

    #[test]
    fn joins_by_display_width_so_a_cjk_row_continues() {
        // 2 + 27 wide characters = 56 columns (but 29 characters) at 60 columns: "next" did not fit.
        let first = format!("  {}", "\u{4e2d}".repeat(27));
        let input = format!("{first}\r\n  next words\r\n");
        let out = lines_of(60, 10, input.as_bytes());
        assert_eq!(out, [format!("{first} next words")]);
    }

    #[test]
    fn a_row_that_starts_a_detection_is_not_a_continuation() {
        let lines = |input: &[u8]| {
            let mut s = Screen::new(80, 10);
            let mut r = LineReader::with_line_start(Box::new(|t: &str| {
                t.trim_start().starts_with("FIXME")
            }));
            let mut out = Lines::new();
            s.feed(input, &mut |s, h| r.read(s, h.into(), &mut out));
            r.read(&mut s, ReadKind::All, &mut out);
            out.iter().map(str::to_string).collect::<Vec<_>>()
        };
        let todo = format!("TODO (High Priority): {}", "x".repeat(74 - 22));
        let input = format!("{todo}\r\nFIXME (P2): the second item\r\n");
        assert_eq!(
            lines(input.as_bytes()),
            [todo.clone(), "FIXME (P2): the second item".into()]
        );
        // The same geometry with a row that starts nothing is still joined.
        let input = format!("{todo}\r\nwrapped tail\r\n");
        assert_eq!(lines(input.as_bytes()), [format!("{todo} wrapped tail")]);
    }

    #[test]
    fn a_row_scrolled_out_of_a_lower_region_is_not_joined_to_the_rows_above_it() {
        // Row 0 is a long header outside the region 2..4; the region's top row scrolls out (SU).
        // Both rows fill the width, so the width rule alone would join the scrolled-out row (read
        // first) with the header.
        let head = format!("  {}", "word ".repeat(19).trim_end());
        let region = format!("  {}", "text ".repeat(19).trim_end());
        let input = format!("{head}\x1b[2;4r\x1b[2;1H{region}\x1b[1S\x1b[r\x1b[5;1H");
        let out = lines_of(100, 5, input.as_bytes());
        assert!(out.contains(&head), "{out:?}");
        assert!(out.contains(&region), "{out:?}");
    }

    #[test]
    fn a_twenty_thousand_character_line_is_one_line() {
        let task = "word ".repeat(4000);
        let input = format!("Engineer Agent: {}\r\nafter\r\n", task.trim_end());
        for chunk in [64 * 1024, 4096, 512] {
            let mut s = Screen::new(100, 30);
            let mut r = LineReader::new().with_code_blocks(true);
            let mut out = Lines::new();
            for c in input.as_bytes().chunks(chunk) {
                s.feed(c, &mut |s, h| r.read(s, h.into(), &mut out));
                r.read(&mut s, ReadKind::FeedEnd, &mut out);
            }
            r.read(&mut s, ReadKind::All, &mut out);
            let got: Vec<_> = out.lines().filter(|l| l.text.contains("Agent")).collect();
            assert_eq!(got.len(), 1, "chunk {chunk}");
            assert_eq!(
                got[0].text.len(),
                "Engineer Agent: ".len() + task.trim_end().len()
            );
            assert!(!got[0].cut);
        }
    }

    #[test]
    fn a_line_over_the_cap_is_marked_cut() {
        let input = format!("{}\r\n", "x".repeat(MAX_LINE_BYTES + 10));
        let mut s = Screen::new(100, 30);
        let mut r = LineReader::new().with_code_blocks(true);
        let mut out = Lines::new();
        s.feed(input.as_bytes(), &mut |s, h| r.read(s, h.into(), &mut out));
        r.read(&mut s, ReadKind::All, &mut out);
        let got: Vec<_> = out.lines().collect();
        assert_eq!(got.len(), 1);
        assert!(got[0].cut);
        assert_eq!(got[0].text.len(), MAX_LINE_BYTES);
    }

    /// (what is drawn, is the line code?): claude 2.1.331's renderings (see the `code_blocks`
    /// captures) and prose that must stay prose.
    const CODE_TABLE: &[(&str, bool)] = &[
        // A bare fence: the whole line in 256-colour 153.
        (
            "\x1b[3G\x1b[38;5;153mQA\x1b[6GAgent:\x1b[13Gnever\x1b[39m\r\n",
            true,
        ),
        // A highlighted comment / string: basic colours.
        ("  \x1b[32m# Research Agent: in a comment\x1b[39m\r\n", true),
        (
            "  x = \x1b[31m\"Research Agent: in a string\"\x1b[39m\r\n",
            true,
        ),
        // yaml: `-` default, key cyan, value red.
        (
            "  -\x1b[5G\x1b[36mTODO:\x1b[11G\x1b[31mticket\x1b[18Gin\x1b[21Ga\x1b[23Gyaml\x1b[39m\r\n",
            true,
        ),
        // Plain prose, bold label, claude's own 256-colour chrome.
        ("  QA Agent: plain prose\r\n", false),
        ("  \x1b[1mQA Agent\x1b[22m: bold label\r\n", false),
        ("\x1b[38;5;246m  \u{23bf}  Read 1 file\x1b[39m\r\n", false),
        (
            "\x1b[38;5;231m\u{25cf}\x1b[3G\x1b[39mQA Agent: first line of a reply\r\n",
            false,
        ),
        // Prose with inline code (153) is about half code: prose.
        (
            "  Inline: \x1b[38;5;153mTask(Engineer: implement it)\x1b[39m and then QA Agent: test it\r\n",
            false,
        ),
        // A js line: keywords coloured, names default: under the share.
        (
            "  \x1b[94mEngineer\x1b[39m \x1b[94mAgent\x1b[39m: line \x1b[94min\x1b[39m a js block\r\n",
            false,
        ),
        // Reset by SGR 0 and by another 256 colour.
        ("  \x1b[32m\x1b[0mQA Agent: after a reset\r\n", false),
        (
            "  \x1b[32m\x1b[38;5;246mQA Agent: after a 256 colour\r\n",
            false,
        ),
        // A background colour is not a foreground: `48;5;153` is not code.
        (
            "  \x1b[48;5;153mQA Agent: on a background\x1b[49m\r\n",
            false,
        ),
    ];

    #[test]
    fn lines_drawn_in_code_colours_are_code() {
        for &(input, code) in CODE_TABLE {
            let mut s = Screen::new(100, 10);
            let mut r = LineReader::new().with_code_blocks(true);
            let mut out = Lines::new();
            s.feed(input.as_bytes(), &mut |s, h| r.read(s, h.into(), &mut out));
            r.read(&mut s, ReadKind::All, &mut out);
            let got: Vec<_> = out.lines().collect();
            assert_eq!(got.len(), 1, "{input:?}: {got:?}");
            assert_eq!(got[0].code, code, "{input:?}: {:?}", got[0].text);
        }
    }

    /// claude's python block: a green comment, then a plain line at the same margin; a blank row
    /// ends the block. List items never spread code or catch it.
    #[test]
    fn plain_rows_below_a_code_row_in_one_block_are_code() {
        let read = |input: &str, blocks: bool| {
            let mut s = Screen::new(100, 20);
            let mut r = LineReader::new().with_code_blocks(blocks);
            let mut out = Lines::new();
            s.feed(input.as_bytes(), &mut |s, h| r.read(s, h.into(), &mut out));
            r.read(&mut s, ReadKind::All, &mut out);
            out.lines()
                .map(|l| (l.text.trim().to_string(), l.code))
                .collect::<Vec<_>>()
        };
        let block = "  \x1b[32m# Engineer Agent: a comment\x1b[39m\r\n  QA Agent: plain in the block\r\n  x = 1\r\n\r\n  QA Agent: prose after the block\r\n";
        let got = read(block, true);
        let codes: Vec<bool> = got.iter().map(|l| l.1).collect();
        assert_eq!(codes, [true, true, true, false], "{got:?}");
        // Off (other CLIs): only the coloured row.
        let codes: Vec<bool> = read(block, false).iter().map(|l| l.1).collect();
        assert_eq!(codes, [true, false, false, false]);
        // Another indent ends the block; list items neither spread nor catch it.
        let other = "  \x1b[32m# comment\x1b[39m\r\nQA Agent: at column one\r\n\r\n- \x1b[38;5;153mcache.py\x1b[39m\r\n- QA Agent: a list item\r\n  \x1b[32m# c\x1b[39m\r\n  - QA Agent: an item below code\r\n";
        let codes: Vec<bool> = read(other, true).iter().map(|l| l.1).collect();
        assert_eq!(codes, [true, false, true, false, true, false]);
    }

    /// A code row that fills the width exactly is not continued by a plain row (it is the block's
    /// next line, `QA Agent: …` below a full-width `# comment`), with code blocks on; other CLIs
    /// keep the plain width rule.
    #[test]
    fn a_full_width_code_row_does_not_wrap_onto_a_plain_row() {
        let read = |blocks: bool| {
            let mut s = Screen::new(30, 10);
            let mut r = LineReader::new().with_code_blocks(blocks);
            let mut out = Lines::new();
            let input =
                "  \x1b[32m# a comment filling it all\x1b[39m\r\n  neither must this line\r\n";
            s.feed(input.as_bytes(), &mut |s, h| r.read(s, h.into(), &mut out));
            r.read(&mut s, ReadKind::All, &mut out);
            out.lines()
                .map(|l| (l.text.trim().to_string(), l.code))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            read(true),
            [
                ("# a comment filling it all".to_string(), true),
                ("neither must this line".to_string(), true)
            ]
        );
        assert_eq!(read(false).len(), 1, "{:?}", read(false));
    }

    #[test]
    fn a_wrapped_code_line_is_code_and_its_rows_join() {
        // A bare block's line wider than the screen wraps; both rows are 153.
        let input = format!(
            "\x1b[3G\x1b[38;5;153mQA Agent: {}\x1b[39m\r\n\x1b[3G\x1b[38;5;153mtail words\x1b[39m\r\n",
            "word ".repeat(9).trim_end()
        );
        let mut s = Screen::new(60, 10);
        let mut r = LineReader::new().with_code_blocks(true);
        let mut out = Lines::new();
        s.feed(input.as_bytes(), &mut |s, h| r.read(s, h.into(), &mut out));
        r.read(&mut s, ReadKind::All, &mut out);
        let got: Vec<_> = out.lines().collect();
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].code);
        assert!(
            got[0].text.ends_with("word tail words"),
            "{:?}",
            got[0].text
        );
    }

    #[test]
    fn redrawing_a_code_cell_as_prose_changes_the_line() {
        // The same characters redrawn without colour are new content (the attribute is part of it).
        let mut s = Screen::new(100, 10);
        let mut r = LineReader::new().with_code_blocks(true);
        let mut out = Lines::new();
        let input = "\x1b[38;5;153m  QA Agent: x\x1b[39m\r\n\x1b[H  QA Agent: x\r\n";
        s.feed(input.as_bytes(), &mut |s, h| r.read(s, h.into(), &mut out));
        r.read(&mut s, ReadKind::All, &mut out);
        let got: Vec<_> = out.lines().map(|l| l.code).collect();
        assert_eq!(got, [true, false]);
    }

    #[test]
    fn redraw_of_identical_text_is_not_read_again() {
        let out = lines_of(
            40,
            5,
            b"  TODO: a\r\n\x1b[H  TODO: a\r\n\x1b[H  TODO: b\r\n",
        );
        assert_eq!(out, ["  TODO: a", "  TODO: b"]);
    }
}

#[cfg(test)]
mod dump {
    use super::*;

    #[test]
    #[ignore]
    fn dump_captures() {
        // A debugging aid (`cargo test --lib dump_captures -- --ignored --nocapture`): the lines
        // the reader makes of the repository's recorded captures.
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/captures");
        for name in [
            "fullscreen",
            "classic",
            "screenreader",
            "subagent_classic",
            "print_mode",
        ] {
            let path = format!("{dir}/{name}.raw");
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let mut s = Screen::new(100, 30);
            let mut r = LineReader::new().with_code_blocks(true);
            let mut out = Lines::new();
            s.feed(&bytes, &mut |s, h| r.read(s, h.into(), &mut out));
            r.read(&mut s, ReadKind::All, &mut out);
            println!("===== {name}");
            for l in out.iter() {
                println!("|{l}");
            }
        }
    }

    #[test]
    #[ignore]
    fn dump_cast() {
        // `MPM_DUMP_CAST=classic_80_cache cargo test --lib dump_cast -- --ignored --nocapture`:
        // the lines the reader makes of one `.cast` capture (its output events, at its first size).
        let Ok(name) = std::env::var("MPM_DUMP_CAST") else {
            return;
        };
        let path = format!(
            "{}/fixtures/captures/{name}.cast",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let mut it = text.lines();
        let head: serde_json::Value = serde_json::from_str(it.next().unwrap()).unwrap();
        let (w, h) = (
            head["width"].as_u64().unwrap(),
            head["height"].as_u64().unwrap(),
        );
        let mut s = Screen::new(w as u16, h as u16);
        let mut r = LineReader::new().with_code_blocks(true);
        let mut out = Lines::new();
        for l in it {
            let ev: serde_json::Value = serde_json::from_str(l).unwrap();
            if ev[1] == "o" {
                let n = out.iter().count();
                s.feed(ev[2].as_str().unwrap().as_bytes(), &mut |s, h| {
                    r.read(s, h.into(), &mut out)
                });
                for l in out.iter().skip(n) {
                    println!("{:8.3} |{l}", ev[0].as_f64().unwrap());
                }
            }
        }
    }
}
