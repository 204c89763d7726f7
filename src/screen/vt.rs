//! A small VT screen model: just enough of xterm to recover the text an agent TUI draws.
//!
//! Why our own model: detection needs hooks that off-the-shelf emulators do not expose — a read of
//! the rows *before* the writer moves up to overwrite them, before a clear, at the end of a
//! synchronized frame, and every row that scrolls out of a region — plus a per-row "changed since
//! read" flag and a UTF-8 decoder that survives chunk boundaries (vte 0.15, under vt100 0.16, drops
//! the character after a split UTF-8 sequence: alacritty/vte#159). Colours and attributes are
//! ignored except two per-cell flags: bold (SGR 1/22): a bold run right before a `:` is read as
//! markdown emphasis (`**QA**:`), the label form claude draws without its asterisks; and code (a
//! foreground colour claude uses only for code, see [`CODE`]): a line drawn mostly as code is a
//! fenced block's line, not something the agent said (`Row::code_cells`).
//!
//! Implemented: printing with autowrap (and a per-row `wrapped` flag), CR/LF/BS/HT, CUU/CUD/CUF/CUB,
//! CNL/CPL, CHA/HPA/VPA/CUP, ED/EL/ECH/ICH/DCH/IL/DL, DECSTBM with SU/SD/IND/RI, DECSC/DECRC and
//! SCOSC/SCORC, DECAWM, the alternate screen (47/1047/1049), synchronized output (2026) and RIS.
//! Tracked for [`Screen::redraw`] only (they change no cell): cursor visibility (25), application
//! cursor keys (1) and keypad (`ESC =`/`ESC >`), mouse reporting (9, 1000, 1002, 1003) and its
//! encodings (1005, 1006, 1015), focus events (1004) and bracketed paste (2004).
//! Ignored (parsed and dropped): SGR and every other CSI with a private marker or intermediates (kitty
//! keyboard `CSI < u`, `CSI > 5 u`, `CSI ? u`, `CSI > 4;2 m`, `CSI > 0 q`, `CSI ? n $ p`), OSC, DCS,
//! SOS/PM/APC, charset designations, SI/SO. Nothing is stored for ignored strings, so an endless OSC
//! costs no memory.

// Rows are boxed on purpose: a scroll rotates the visible rows (pointers, not whole rows).
#![allow(clippy::vec_box)]

use unicode_width::UnicodeWidthChar;

/// Marks the second column of a wide character.
const WIDE_TAIL: char = '\0';
/// Cell attribute: drawn bold (SGR 1).
pub(crate) const BOLD: u8 = 1;
/// Cell attribute: drawn in a colour claude 2.1.331 uses only for code: a basic ANSI foreground
/// (SGR 30–37, 90–97: its syntax highlighter's palette; its own chrome is all 256-colour) or
/// 256-colour 153 (fenced blocks without a language, and inline code). Checked on recordings: a
/// ```` ```python ```` block draws keywords, strings and comments in basic colours (names and
/// punctuation stay default), a bare ```` ``` ```` block is all 153, and a ```` ```text ```` block is
/// drawn without any colour (indistinguishable from prose; only the transcript and hooks know it).
pub(crate) const CODE: u8 = 2;
/// Cell attribute: drawn in one of the screen's alert colours ([`Screen::set_alert_colours`]),
/// the colour a CLI draws its own error displays in (opencode's red `┃` box).
pub(crate) const ALERT: u8 = 4;
/// The 256-colour index claude draws unhighlighted code in.
const CODE_256: u16 = 153;
/// At most this many CSI parameters are kept; more are dropped.
const MAX_PARAMS: usize = 16;
/// The model is at most this wide: a bigger terminal is modelled at this width (what lies to the
/// right is dropped), so a hostile or absurd size (65535x65535 would be 17 GB of cells) costs at
/// most `MAX_COLS * MAX_ROWS` cells (about 10 MB).
pub(crate) const MAX_COLS: u16 = 2000;
/// The model is at most this tall; see [`MAX_COLS`].
pub(crate) const MAX_ROWS: u16 = 1000;

/// Modes kept for a redraw (bits of `Screen::modes`): the cursor hidden (`?25l`), the keypad in
/// application mode (`ESC =`), and the DEC private modes of [`REDRAW_MODES`].
const HIDE_CURSOR: u32 = 1;
const APP_KEYPAD: u32 = 1 << 1;
/// DEC private modes that change how the client's terminal encodes input or reports events, with
/// their bit: a re-attaching client must be put back in them or the agent misreads its keys.
const REDRAW_MODES: [(u16, u32); 9] = [
    (1, 1 << 2),     // application cursor keys
    (9, 1 << 3),     // X10 mouse
    (1000, 1 << 4),  // mouse press/release
    (1002, 1 << 5),  // mouse button motion
    (1003, 1 << 6),  // mouse any motion
    (1004, 1 << 7),  // focus events
    (1005, 1 << 8),  // UTF-8 mouse encoding
    (1006, 1 << 9),  // SGR mouse encoding
    (1015, 1 << 10), // urxvt mouse encoding
];
/// Bracketed paste (`?2004`).
const BRACKETED_PASTE: u32 = 1 << 11;

/// `cols` x `rows` clamped to the model's bounds (each at least 1).
fn clamp_size(cols: u16, rows: u16) -> (usize, usize) {
    (
        usize::from(cols.clamp(1, MAX_COLS)),
        usize::from(rows.clamp(1, MAX_ROWS)),
    )
}

/// A foreground colour as SGR sets it: `38;5;n` or `38;2;r;g;b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fg {
    /// A 256-colour palette index.
    Indexed(u16),
    /// A 24-bit colour.
    Rgb(u16, u16, u16),
}

/// One screen row: characters only, plus bookkeeping for the line reader.
#[derive(Debug, Clone)]
pub struct Row {
    cells: Vec<char>,
    /// Per cell: [`BOLD`] and [`CODE`] flags (claude draws `**X**:` as bold `X:`, code in colour).
    attr: Vec<u8>,
    /// The row ended by autowrap: its text continues on the next row.
    pub wrapped: bool,
    /// True once the line reader has taken the current content; any change clears it.
    pub seen: bool,
    /// The row's text, rebuilt lazily after a change (the buffer is reused).
    text: String,
    /// `text` matches the cells.
    text_valid: bool,
    /// Characters in `text`.
    text_chars: usize,
    /// Display columns of `text` (a wide character counts two): the row's drawn width.
    text_cols: usize,
    /// Non-blank cells of `text` drawn as [`CODE`] (counted only when there is one).
    code_cells: usize,
    /// Non-blank cells of `text` (counted only when `code_cells` is not zero).
    ink_cells: usize,
    /// The row scrolled out of a region that does not start at the top row: the rows above the
    /// region were not above it, so it continues none of them and none of them continue it.
    pub detached: bool,
}

impl Row {
    fn blank(cols: usize) -> Row {
        Row {
            cells: vec![' '; cols],
            attr: vec![0; cols],
            wrapped: false,
            seen: true,
            text: String::new(),
            text_valid: true,
            text_chars: 0,
            text_cols: 0,
            code_cells: 0,
            ink_cells: 0,
            detached: false,
        }
    }

    fn reset(&mut self, cols: usize) {
        self.cells.clear();
        self.cells.resize(cols, ' ');
        self.attr.clear();
        self.attr.resize(cols, 0);
        self.wrapped = false;
        self.seen = true;
        self.text.clear();
        self.text_valid = true;
        self.text_chars = 0;
        self.text_cols = 0;
        self.code_cells = 0;
        self.ink_cells = 0;
        self.detached = false;
    }

    #[inline]
    fn touch(&mut self) {
        self.seen = false;
        self.text_valid = false;
    }

    /// The row's text, trailing blanks removed, wide-character tails skipped.
    pub fn text(&mut self) -> &str {
        self.ensure_text();
        &self.text
    }

    /// The text built by [`Row::text`] or [`Row::ensure_text`] (stale if neither ran since the last
    /// change).
    pub fn cached_text(&self) -> &str {
        &self.text
    }

    /// The number of characters of [`Row::cached_text`].
    pub fn cached_chars(&self) -> usize {
        self.text_chars
    }

    /// The display width of [`Row::cached_text`] (columns up to its last non-blank cell).
    pub fn cached_cols(&self) -> usize {
        self.text_cols
    }

    /// Rebuild the cached text if a change made it stale.
    pub fn ensure_text(&mut self) {
        if !self.text_valid {
            // A row that wrapped keeps its trailing blanks: a space in the last column separates
            // two words of the joined line.
            let end = if self.wrapped {
                self.cells.len()
            } else {
                trimmed_len(&self.cells)
            };
            self.text_cols = end;
            let cells = &self.cells[..end];
            self.text.clear();
            // Almost every row is plain ASCII (no wide-character tails, which follow a non-ASCII
            // head): copy it as bytes in one go instead of encoding char by char.
            // (A max over the whole row vectorises; `all` would stop early and not.)
            let max = cells.iter().map(|&c| u32::from(c).wrapping_sub(1)).max();
            let any_attr = self.attr[..end].iter().fold(0, |a, &b| a | b);
            self.code_cells = 0;
            self.ink_cells = 0;
            if any_attr & CODE != 0 {
                for (&c, &a) in cells.iter().zip(&self.attr[..end]) {
                    let ink = !matches!(c, ' ' | WIDE_TAIL | '\u{a0}');
                    self.ink_cells += usize::from(ink);
                    self.code_cells += usize::from(ink && a & CODE != 0);
                }
            }
            if any_attr & BOLD != 0 {
                self.text_chars = 0;
                push_marked(&self.cells[..end], &self.attr[..end], &mut self.text);
                self.text_chars = self.text.chars().count();
            } else if max.is_none_or(|m| m < 0x7f) {
                let mut bytes = std::mem::take(&mut self.text).into_bytes();
                bytes.extend(cells.iter().map(|&c| c as u8));
                self.text = String::from_utf8(bytes)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                self.text_chars = cells.len();
            } else {
                self.text_chars = 0;
                for &c in cells {
                    if c != WIDE_TAIL {
                        self.text.push(c);
                        self.text_chars += 1;
                    }
                }
            }
            self.text_valid = true;
        }
    }

    /// Non-blank cells of [`Row::cached_text`] drawn as [`CODE`], and all its non-blank cells (both
    /// zero when no cell is code).
    pub fn code_cells(&self) -> (usize, usize) {
        (self.code_cells, self.ink_cells)
    }

    /// True when the row's first non-blank cell is drawn in an alert colour ([`ALERT`]).
    pub fn starts_alert(&self) -> bool {
        self.cells
            .iter()
            .position(|&c| !matches!(c, ' ' | WIDE_TAIL | '\u{a0}'))
            .is_some_and(|i| self.attr[i] & ALERT != 0)
    }

    /// True when every cell is blank.
    pub fn is_blank(&mut self) -> bool {
        self.text().is_empty()
    }
}

/// Append the cells' text, with a bold run that ends right before a `:` marked as markdown
/// emphasis (`**QA**:`): the label form the engine recognises for registered agents. Other bold
/// text is left plain (claude draws tool names and headings bold too).
fn push_marked(cells: &[char], attr: &[u8], out: &mut String) {
    let bold = |i: usize| attr[i] & BOLD != 0;
    let mut i = 0;
    while i < cells.len() {
        if bold(i) && cells[i] != ' ' {
            // A run of bold cells, through the blanks between them (a TUI jumps over spaces with
            // cursor moves, so they keep whatever attribute they had).
            let start = i;
            while i < cells.len() && (bold(i) || matches!(cells[i], ' ' | WIDE_TAIL)) {
                i += 1;
            }
            // The run without its trailing blanks.
            let mut end = i;
            while end > start && matches!(cells[end - 1], ' ' | WIDE_TAIL) {
                end -= 1;
            }
            let label = cells.get(end) == Some(&':');
            if label {
                out.push_str("**");
            }
            out.extend(cells[start..end].iter().filter(|&&c| c != WIDE_TAIL));
            if label {
                out.push_str("**");
            }
            out.extend(cells[end..i].iter().filter(|&&c| c != WIDE_TAIL));
            continue;
        }
        if cells[i] != WIDE_TAIL {
            out.push(cells[i]);
        }
        i += 1;
    }
}

/// The number of cells up to the last one that is not blank.
fn trimmed_len(cells: &[char]) -> usize {
    let blank = |c: char| c == ' ' || c == WIDE_TAIL;
    let mut end = cells.len();
    // Eight cells at a time while all are blank (a branch-free fold that vectorises), then one by one.
    while end >= 8
        && cells[end - 8..end]
            .iter()
            .fold(true, |all, &c| all & blank(c))
    {
        end -= 8;
    }
    while end > 0 && blank(cells[end - 1]) {
        end -= 1;
    }
    end
}

/// Cut or pad a row's cells to `cols`; a wide character cut in half by a narrower row is blanked.
fn fit_cells(cells: &mut Vec<char>, attr: &mut Vec<u8>, cols: usize) {
    let cut_head = cells.len() > cols && cells[cols] == WIDE_TAIL;
    cells.resize(cols, ' ');
    attr.resize(cols, 0);
    if cut_head {
        cells[cols - 1] = ' ';
    }
}

/// Why the screen asks its observer to read rows now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// The writer finished a pass: it is about to move the cursor up, or a synchronized frame ended.
    /// Rows above the cursor are complete.
    PassEnd,
    /// Rows are about to be destroyed (erase display, alternate screen switch, reset): read them all.
    BeforeClear,
    /// Scrolled-out rows are piling up; drain them.
    HistoryFull,
}

/// Saved cursor state (DECSC).
#[derive(Debug, Clone, Copy, Default)]
struct Saved {
    x: usize,
    y: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParserState {
    Ground,
    Esc,
    /// ESC followed by intermediates (charset designation and the like); ends at a final byte.
    EscInter,
    Csi,
    /// OSC: until BEL or ST.
    Osc,
    /// DCS, SOS, PM, APC: until ST.
    Str,
    /// ESC seen inside an OSC or string: `\` ends it.
    StrEsc,
}

/// The screen: a grid of rows, the cursor, modes and the escape-sequence parser state.
#[derive(Debug)]
pub struct Screen {
    cols: usize,
    nrows: usize,
    /// Boxed: a scroll rotates the visible rows, and moving 30 pointers is much cheaper than moving
    /// 30 rows (a tenth of the pipeline's time when rows were kept inline).
    rows: Vec<Box<Row>>,
    /// The main screen's rows while the alternate screen is shown.
    main_saved: Option<(Vec<Box<Row>>, Saved)>,
    x: usize,
    y: usize,
    pending_wrap: bool,
    autowrap: bool,
    /// The pen: [`BOLD`] and [`CODE`] as set by SGR; printed cells get it.
    attr: u8,
    /// Input and cursor modes kept for [`Screen::redraw`] (see [`REDRAW_MODES`]).
    modes: u32,
    top: usize,
    bottom: usize,
    saved: Saved,
    sync: bool,
    state: ParserState,
    params: [u16; MAX_PARAMS],
    nparams: usize,
    cur_param: Option<u32>,
    private: u8,
    intermediate: bool,
    utf8: [u8; 4],
    utf8_len: usize,
    utf8_need: usize,
    /// Rows that scrolled out of a region, oldest first, waiting for the line reader.
    history: Vec<Box<Row>>,
    /// Recycled rows.
    pool: Vec<Box<Row>>,
    /// Foreground colours whose cells get [`ALERT`].
    alert: Vec<Fg>,
}

/// Scrolled-out rows kept before the observer is asked to drain them; above the longest line the
/// reader joins ([`crate::screen::lines::MAX_JOIN_ROWS`]) so that a paragraph it holds back is kept.
pub(crate) const HISTORY_CAP: usize = 2 * super::lines::MAX_JOIN_ROWS;

impl Screen {
    /// A blank screen of `cols` x `rows` (each at least 1, at most [`MAX_COLS`] x [`MAX_ROWS`]).
    pub fn new(cols: u16, rows: u16) -> Screen {
        let (cols, nrows) = clamp_size(cols, rows);
        Screen {
            cols,
            nrows,
            rows: (0..nrows).map(|_| Box::new(Row::blank(cols))).collect(),
            main_saved: None,
            x: 0,
            y: 0,
            pending_wrap: false,
            autowrap: true,
            attr: 0,
            modes: 0,
            top: 0,
            bottom: nrows - 1,
            saved: Saved::default(),
            sync: false,
            state: ParserState::Ground,
            params: [0; MAX_PARAMS],
            nparams: 0,
            cur_param: None,
            private: 0,
            intermediate: false,
            utf8: [0; 4],
            utf8_len: 0,
            utf8_need: 0,
            history: Vec::new(),
            pool: Vec::new(),
            alert: Vec::new(),
        }
    }

    /// Mark cells drawn in these foreground colours as [`ALERT`] (a CLI's error colour).
    pub fn set_alert_colours(&mut self, colours: Vec<Fg>) {
        self.alert = colours;
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.nrows
    }

    /// The cursor's row (0-based).
    pub fn cursor_row(&self) -> usize {
        self.y
    }

    /// The cursor's column (0-based).
    pub fn cursor_col(&self) -> usize {
        self.x
    }

    /// True while a synchronized-output frame (`CSI ? 2026 h`) is open.
    pub fn in_sync(&self) -> bool {
        self.sync
    }

    /// True while the alternate screen is shown.
    pub fn in_alt(&self) -> bool {
        self.main_saved.is_some()
    }

    /// True while the cursor is shown (`CSI ? 25 h`, the default).
    pub fn cursor_visible(&self) -> bool {
        self.modes & HIDE_CURSOR == 0
    }

    /// Whether DEC private mode `mode` is set, among those a redraw restores (1, 9, 1000, 1002,
    /// 1003, 1004, 1005, 1006, 1015, 2004; 7 and 25 too).
    pub fn dec_mode_set(&self, mode: u16) -> bool {
        match mode {
            7 => self.autowrap,
            25 => self.cursor_visible(),
            2004 => self.modes & BRACKETED_PASTE != 0,
            _ => REDRAW_MODES
                .iter()
                .any(|&(m, bit)| m == mode && self.modes & bit != 0),
        }
    }

    /// The bytes that draw this screen on a terminal from any state: the alternate screen when
    /// shown, every row's characters (bold kept; colours are not modelled), the scroll region, the
    /// input modes ([`REDRAW_MODES`], keypad, bracketed paste), autowrap, cursor visibility and
    /// position. What a client re-attaching to a daemon session is sent first. Feeding the result
    /// to a blank screen of the same size yields the same rows, cursor and modes.
    pub fn redraw(&self) -> Vec<u8> {
        use std::io::Write as _;
        let mut out = Vec::with_capacity(self.nrows * (self.cols / 2 + 8) + 64);
        out.extend_from_slice(b"\x1b[0m");
        if self.in_alt() {
            out.extend_from_slice(b"\x1b[?1049h");
        }
        out.extend_from_slice(b"\x1b[?7h\x1b[r\x1b[H\x1b[2J");
        let mut buf = [0u8; 4];
        for (y, row) in self.rows.iter().enumerate() {
            let end = trimmed_len(&row.cells);
            if end == 0 {
                continue;
            }
            let _ = write!(out, "\x1b[{}H", y + 1);
            let mut bold = false;
            for x in 0..end {
                let c = row.cells[x];
                if c == WIDE_TAIL {
                    continue;
                }
                let b = row.attr[x] & BOLD != 0;
                if b != bold {
                    bold = b;
                    out.extend_from_slice(if bold { b"\x1b[1m" } else { b"\x1b[22m" });
                }
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
            if bold {
                out.extend_from_slice(b"\x1b[22m");
            }
        }
        if (self.top, self.bottom) != (0, self.nrows - 1) {
            let _ = write!(out, "\x1b[{};{}r", self.top + 1, self.bottom + 1);
        }
        // Every mode set or reset: the client's terminal may come in any state.
        for &(mode, bit) in &REDRAW_MODES {
            let on = if self.modes & bit != 0 { 'h' } else { 'l' };
            let _ = write!(out, "\x1b[?{mode}{on}");
        }
        out.extend_from_slice(if self.modes & BRACKETED_PASTE != 0 {
            b"\x1b[?2004h"
        } else {
            b"\x1b[?2004l"
        });
        out.extend_from_slice(if self.modes & APP_KEYPAD != 0 {
            b"\x1b="
        } else {
            b"\x1b>"
        });
        if !self.autowrap {
            out.extend_from_slice(b"\x1b[?7l");
        }
        if self.attr & BOLD != 0 {
            out.extend_from_slice(b"\x1b[1m");
        }
        let _ = write!(out, "\x1b[{};{}H", self.y + 1, self.x + 1);
        out.extend_from_slice(if self.cursor_visible() {
            b"\x1b[?25h"
        } else {
            b"\x1b[?25l"
        });
        out
    }

    /// Mutable access to row `i` of the visible screen.
    pub fn row_mut(&mut self, i: usize) -> Option<&mut Row> {
        self.rows.get_mut(i).map(|r| &mut **r)
    }

    /// The visible rows.
    pub fn rows_mut(&mut self) -> &mut [Box<Row>] {
        &mut self.rows
    }

    /// Rows that scrolled out since the last drain, oldest first.
    pub fn history_mut(&mut self) -> &mut Vec<Box<Row>> {
        &mut self.history
    }

    /// Return drained history rows for reuse.
    pub fn recycle(&mut self, rows: impl IntoIterator<Item = Box<Row>>) {
        for r in rows {
            if self.pool.len() < 64 {
                self.pool.push(r);
            }
        }
    }

    /// The visible screen as text, one line per row (trailing blanks trimmed); for tests and debugging.
    pub fn contents(&mut self) -> String {
        let mut out = String::new();
        for r in &mut self.rows {
            out.push_str(r.text());
            out.push('\n');
        }
        out
    }

    /// Change the size. Rows are not reflowed; when the screen gets shorter, rows above the cursor
    /// scroll out so that the cursor row stays visible (as xterm does).
    pub fn resize(&mut self, cols: u16, rows: u16) {
        let (cols, nrows) = clamp_size(cols, rows);
        for r in &mut self.rows {
            if r.cells.len() != cols {
                fit_cells(&mut r.cells, &mut r.attr, cols);
                // The caller read every row before resizing: a row cut short by a narrower screen is
                // not new text (reading it again would yield a truncated line).
                r.text_valid = false;
            }
        }
        if nrows < self.nrows {
            let excess = self.nrows - nrows;
            let shift = (self.y + 1).saturating_sub(nrows).min(excess);
            for r in self.rows.drain(..shift) {
                self.history.push(r);
            }
            self.rows.truncate(nrows);
            self.y -= shift;
        } else {
            while self.rows.len() < nrows {
                self.rows.push(Box::new(Row::blank(cols)));
            }
        }
        if let Some((main, saved)) = &mut self.main_saved {
            for r in main.iter_mut() {
                fit_cells(&mut r.cells, &mut r.attr, cols);
                r.text_valid = false;
            }
            main.resize_with(nrows, || Box::new(Row::blank(cols)));
            saved.x = saved.x.min(cols - 1);
            saved.y = saved.y.min(nrows - 1);
        }
        self.cols = cols;
        self.nrows = nrows;
        self.top = 0;
        self.bottom = nrows - 1;
        self.x = self.x.min(cols - 1);
        self.y = self.y.min(nrows - 1);
        self.pending_wrap = false;
        self.saved.x = self.saved.x.min(cols - 1);
        self.saved.y = self.saved.y.min(nrows - 1);
    }

    /// Feed bytes; `obs` is called at the read points described by [`Hook`]. A UTF-8 sequence split
    /// across calls is kept and completed by the next call.
    pub fn feed<F: FnMut(&mut Screen, Hook)>(&mut self, bytes: &[u8], obs: &mut F) {
        let mut i = 0;
        let n = bytes.len();
        while i < n {
            if self.state == ParserState::Ground && self.utf8_need == 0 {
                // Fast path: a run of printable ASCII.
                let start = i;
                while i < n && (0x20..0x7f).contains(&bytes[i]) {
                    i += 1;
                }
                if i > start {
                    self.print_ascii(&bytes[start..i], obs);
                    continue;
                }
                // Fast path: a whole CSI sequence inside this chunk.
                if bytes[i] == 0x1b
                    && let Some(next) = self.fast_csi(bytes, i, obs)
                {
                    i = next;
                    continue;
                }
            }
            let b = bytes[i];
            i += 1;
            self.byte(b, obs);
        }
    }

    /// Parse and run the CSI sequence at `bytes[at]` (ESC) when it is complete and plain; returns the
    /// index after it, or `None` to let the byte-wise parser handle it (split or unusual sequences).
    fn fast_csi<F: FnMut(&mut Screen, Hook)>(
        &mut self,
        bytes: &[u8],
        at: usize,
        obs: &mut F,
    ) -> Option<usize> {
        if bytes.get(at + 1) != Some(&b'[') {
            return None;
        }
        let mut i = at + 2;
        self.nparams = 0;
        self.cur_param = None;
        self.private = 0;
        self.intermediate = false;
        if let Some(&p @ b'<'..=b'?') = bytes.get(i) {
            self.private = p;
            i += 1;
        }
        while i < bytes.len() {
            let b = bytes[i];
            match b {
                b'0'..=b'9' => self.push_digit(b),
                b';' | b':' => self.push_param(),
                0x20..=0x2f => self.intermediate = true,
                0x40..=0x7e => {
                    self.push_param();
                    self.csi_dispatch(b, obs);
                    return Some(i + 1);
                }
                // Controls inside, a late private marker, or anything odd: the slow path decides.
                _ => return None,
            }
            i += 1;
        }
        None
    }

    fn print_ascii<F: FnMut(&mut Screen, Hook)>(&mut self, mut run: &[u8], obs: &mut F) {
        while !run.is_empty() {
            if self.pending_wrap || self.x >= self.cols {
                self.wrap(obs);
            }
            let (x, cols) = (self.x, self.cols);
            let n = run.len().min(cols - x);
            let row = &mut self.rows[self.y];
            // Half of a wide character at either edge of the written span becomes blank.
            let left_tail = row.cells[x] == WIDE_TAIL && x > 0;
            let right_tail = x + n < cols && row.cells[x + n] == WIDE_TAIL;
            // Branch-free so that it vectorises: compare and store every cell.
            let mut changed = false;
            for (cell, &b) in row.cells[x..x + n].iter_mut().zip(&run[..n]) {
                let c = char::from(b);
                changed |= *cell != c;
                *cell = c;
            }
            let attr = self.attr;
            for cell in &mut row.attr[x..x + n] {
                changed |= *cell != attr;
                *cell = attr;
            }
            if changed {
                if left_tail {
                    row.cells[x - 1] = ' ';
                }
                if right_tail {
                    row.cells[x + n] = ' ';
                }
                row.touch();
            }
            run = &run[n..];
            if x + n >= cols {
                self.x = cols - 1;
                if self.autowrap {
                    self.pending_wrap = true;
                } else {
                    // No autowrap: the rest overwrites the last column; only its last byte remains.
                    if let Some(&last) = run.last() {
                        let row = &mut self.rows[self.y];
                        if row.cells[cols - 1] != char::from(last) {
                            row.cells[cols - 1] = char::from(last);
                            row.attr[cols - 1] = self.attr;
                            row.touch();
                        }
                    }
                    run = &[];
                }
            } else {
                self.x = x + n;
            }
        }
    }

    fn byte<F: FnMut(&mut Screen, Hook)>(&mut self, b: u8, obs: &mut F) {
        // Strings swallow everything (incl. UTF-8) until their terminator.
        match self.state {
            ParserState::Osc => {
                match b {
                    0x07 => self.state = ParserState::Ground,
                    0x1b => self.state = ParserState::StrEsc,
                    0x18 | 0x1a => self.state = ParserState::Ground,
                    _ => {}
                }
                return;
            }
            ParserState::Str => {
                match b {
                    0x1b => self.state = ParserState::StrEsc,
                    0x18 | 0x1a => self.state = ParserState::Ground,
                    _ => {}
                }
                return;
            }
            ParserState::StrEsc => {
                // ST (`ESC \`) ends the string; any other escape aborts it and starts anew.
                if b == b'\\' {
                    self.state = ParserState::Ground;
                } else {
                    self.state = ParserState::Esc;
                    self.byte(b, obs);
                }
                return;
            }
            _ => {}
        }
        if b < 0x20 {
            if b == 0x1b {
                self.utf8_need = 0;
                self.state = ParserState::Esc;
                return;
            }
            if b == 0x18 || b == 0x1a {
                self.state = ParserState::Ground;
                return;
            }
            self.control(b, obs);
            return;
        }
        match self.state {
            ParserState::Ground => self.ground(b, obs),
            ParserState::Esc => self.esc(b, obs),
            ParserState::EscInter => {
                if (0x30..0x7f).contains(&b) {
                    self.state = ParserState::Ground;
                }
            }
            ParserState::Csi => self.csi_byte(b, obs),
            ParserState::Osc | ParserState::Str | ParserState::StrEsc => {}
        }
    }

    fn ground<F: FnMut(&mut Screen, Hook)>(&mut self, b: u8, obs: &mut F) {
        if b < 0x80 {
            if self.utf8_need > 0 {
                self.utf8_need = 0;
                self.print(char::REPLACEMENT_CHARACTER, obs);
            }
            if b != 0x7f {
                self.print(char::from(b), obs);
            }
            return;
        }
        if self.utf8_need > 0 && (0x80..0xc0).contains(&b) {
            self.utf8[self.utf8_len] = b;
            self.utf8_len += 1;
            if self.utf8_len == self.utf8_need {
                self.utf8_need = 0;
                let c = std::str::from_utf8(&self.utf8[..self.utf8_len])
                    .ok()
                    .and_then(|s| s.chars().next())
                    .unwrap_or(char::REPLACEMENT_CHARACTER);
                self.print(c, obs);
            }
            return;
        }
        if self.utf8_need > 0 {
            self.utf8_need = 0;
            self.print(char::REPLACEMENT_CHARACTER, obs);
        }
        let need = match b {
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => 0,
        };
        if need == 0 {
            self.print(char::REPLACEMENT_CHARACTER, obs);
        } else {
            self.utf8[0] = b;
            self.utf8_len = 1;
            self.utf8_need = need;
        }
    }

    fn print<F: FnMut(&mut Screen, Hook)>(&mut self, c: char, obs: &mut F) {
        let w = match c.width() {
            Some(0) | None => return, // combining marks and controls: dropped
            Some(w) => w.min(2),
        };
        if self.pending_wrap || self.x + w > self.cols {
            if w > self.cols {
                return;
            }
            if self.autowrap {
                self.wrap(obs);
            } else {
                // No autowrap: the character overwrites the last cell(s) of the row.
                self.pending_wrap = false;
                self.x = self.cols - w;
            }
        }
        let row = &mut self.rows[self.y];
        if w == 1 && row.cells[self.x] == c && row.attr[self.x] == self.attr {
            // Unchanged cell: nothing to re-read.
        } else {
            Self::put(row, self.x, c, w, self.cols, self.attr);
        }
        if self.x + w >= self.cols {
            self.x = self.cols - 1;
            self.pending_wrap = self.autowrap;
        } else {
            self.x += w;
        }
    }

    fn put(row: &mut Row, x: usize, c: char, w: usize, cols: usize, attr: u8) {
        // Overwriting half of a wide character blanks the other half.
        if row.cells[x] == WIDE_TAIL && x > 0 {
            row.cells[x - 1] = ' ';
        }
        row.cells[x] = c;
        row.attr[x] = attr;
        if w == 2 && x + 1 < cols {
            row.cells[x + 1] = WIDE_TAIL;
        } else if x + 1 < cols && row.cells[x + 1] == WIDE_TAIL {
            row.cells[x + 1] = ' ';
        }
        row.touch();
    }

    /// Autowrap: the row continues on the next one.
    fn wrap<F: FnMut(&mut Screen, Hook)>(&mut self, obs: &mut F) {
        self.pending_wrap = false;
        if !self.autowrap {
            self.x = self.cols - 1;
            return;
        }
        let row = &mut self.rows[self.y];
        if !row.wrapped {
            row.wrapped = true;
            row.touch();
        }
        self.x = 0;
        self.linefeed(obs);
    }

    fn linefeed<F: FnMut(&mut Screen, Hook)>(&mut self, obs: &mut F) {
        if self.y == self.bottom {
            self.scroll_up(1, obs);
        } else if self.y + 1 < self.nrows {
            self.y += 1;
        }
    }

    fn control<F: FnMut(&mut Screen, Hook)>(&mut self, b: u8, obs: &mut F) {
        match b {
            0x08 => {
                self.pending_wrap = false;
                self.x = self.x.saturating_sub(1);
            }
            0x09 => {
                self.pending_wrap = false;
                self.x = ((self.x / 8 + 1) * 8).min(self.cols - 1);
            }
            0x0a..=0x0c => {
                self.pending_wrap = false;
                self.linefeed(obs);
            }
            0x0d => {
                self.pending_wrap = false;
                self.x = 0;
            }
            _ => {}
        }
    }

    fn esc<F: FnMut(&mut Screen, Hook)>(&mut self, b: u8, obs: &mut F) {
        self.state = ParserState::Ground;
        match b {
            b'[' => {
                self.state = ParserState::Csi;
                self.nparams = 0;
                self.cur_param = None;
                self.private = 0;
                self.intermediate = false;
            }
            b']' => self.state = ParserState::Osc,
            b'P' | b'X' | b'^' | b'_' => self.state = ParserState::Str,
            0x20..=0x2f => self.state = ParserState::EscInter,
            b'7' => self.decsc(),
            b'8' => self.decrc(obs),
            b'D' => {
                self.pending_wrap = false;
                self.linefeed(obs);
            }
            b'E' => {
                self.pending_wrap = false;
                self.x = 0;
                self.linefeed(obs);
            }
            b'M' => {
                self.pending_wrap = false;
                if self.y == self.top {
                    self.scroll_down(1);
                } else {
                    self.move_to(self.x, self.y.saturating_sub(1), obs);
                }
            }
            b'c' => self.reset(obs),
            b'=' => self.modes |= APP_KEYPAD,
            b'>' => self.modes &= !APP_KEYPAD,
            _ => {}
        }
    }

    /// One decimal digit of the current CSI parameter (clamped, never overflows).
    fn push_digit(&mut self, b: u8) {
        let d = u32::from(b - b'0');
        self.cur_param = Some(
            self.cur_param
                .unwrap_or(0)
                .saturating_mul(10)
                .saturating_add(d)
                .min(65535),
        );
    }

    fn csi_byte<F: FnMut(&mut Screen, Hook)>(&mut self, b: u8, obs: &mut F) {
        match b {
            b'0'..=b'9' => self.push_digit(b),
            b';' | b':' => self.push_param(),
            b'<'..=b'?' => {
                if self.nparams == 0 && self.cur_param.is_none() {
                    self.private = b;
                } else {
                    self.intermediate = true;
                }
            }
            0x20..=0x2f => self.intermediate = true,
            0x40..=0x7e => {
                self.push_param();
                self.state = ParserState::Ground;
                self.csi_dispatch(b, obs);
            }
            _ => self.state = ParserState::Ground,
        }
    }

    fn push_param(&mut self) {
        if self.nparams < MAX_PARAMS {
            // Fits: the value was clamped to 65535 while parsing.
            self.params[self.nparams] = self.cur_param.unwrap_or(0) as u16;
            self.nparams += 1;
        }
        self.cur_param = None;
    }

    /// Parameter `i`, with 0 or missing meaning `default`.
    fn p(&self, i: usize, default: usize) -> usize {
        if i < self.nparams && self.params[i] != 0 {
            usize::from(self.params[i])
        } else {
            default
        }
    }

    fn csi_dispatch<F: FnMut(&mut Screen, Hook)>(&mut self, f: u8, obs: &mut F) {
        if self.intermediate {
            return;
        }
        if self.private == b'?' {
            if f == b'h' || f == b'l' {
                for i in 0..self.nparams {
                    self.dec_mode(self.params[i], f == b'h', obs);
                }
            }
            return;
        }
        if self.private != 0 {
            return;
        }
        let n = self.p(0, 1);
        match f {
            b'A' => {
                let stop = if self.y >= self.top { self.top } else { 0 };
                let y = self.y.saturating_sub(n).max(stop);
                self.move_to(self.x, y, obs);
            }
            b'B' | b'e' => {
                let stop = if self.y <= self.bottom {
                    self.bottom
                } else {
                    self.nrows - 1
                };
                self.move_to(self.x, (self.y + n).min(stop), obs);
            }
            b'C' | b'a' => self.move_to(self.x + n, self.y, obs),
            b'D' => self.move_to(self.x.saturating_sub(n), self.y, obs),
            b'E' => {
                let y = (self.y + n).min(self.bottom.max(self.y));
                self.move_to(0, y, obs);
            }
            b'F' => {
                let y = self.y.saturating_sub(n).max(self.top.min(self.y));
                self.move_to(0, y, obs);
            }
            b'G' | b'`' => self.move_to(n - 1, self.y, obs),
            b'd' => self.move_to(self.x, n - 1, obs),
            b'H' | b'f' => {
                let (r, c) = (self.p(0, 1), self.p(1, 1));
                self.move_to(c - 1, r - 1, obs);
            }
            b'J' => self.erase_display(self.p(0, 0), obs),
            b'K' => self.erase_line(self.p(0, 0)),
            b'X' => {
                let end = (self.x + n).min(self.cols);
                self.fill(self.y, self.x, end);
            }
            b'@' => self.insert_chars(n),
            b'P' => self.delete_chars(n),
            b'L' => self.insert_lines(n),
            b'M' => self.delete_lines(n, obs),
            b'S' => self.scroll_up(n, obs),
            b'T' => self.scroll_down(n),
            b'r' => {
                let top = self.p(0, 1) - 1;
                let bottom = self.p(1, self.nrows).min(self.nrows) - 1;
                if top < bottom {
                    self.top = top;
                    self.bottom = bottom;
                    self.move_to(0, 0, obs);
                }
            }
            b'm' => self.sgr(),
            b's' if self.nparams <= 1 => self.decsc(),
            b'u' if self.nparams <= 1 => self.decrc(obs),
            _ => {}
        }
    }

    /// SGR: bold (1 on; 0, 21 and 22 off) and whether the foreground is a code colour ([`CODE`]: set
    /// by 30–37, 90–97 and `38;5;153`, cleared by 0, 39 and any other foreground); colour parameters
    /// with their arguments (`38;5;n`, `38;2;r;g;b`, same for 48 and 58) are skipped so that their
    /// numbers are not read as attributes.
    fn sgr(&mut self) {
        if self.nparams == 0 {
            self.attr = 0;
            return;
        }
        let mut i = 0;
        while i < self.nparams {
            match self.params[i] {
                0 => self.attr = 0,
                21 | 22 => self.attr &= !BOLD,
                1 => self.attr |= BOLD,
                30..=37 | 90..=97 => self.attr = (self.attr | CODE) & !ALERT,
                39 => self.attr &= !(CODE | ALERT),
                38 | 48 | 58 => {
                    let kind = (i + 1 < self.nparams).then(|| self.params[i + 1]);
                    if self.params[i] == 38 {
                        let code = kind == Some(5)
                            && i + 2 < self.nparams
                            && self.params[i + 2] == CODE_256;
                        if code {
                            self.attr |= CODE;
                        } else {
                            self.attr &= !CODE;
                        }
                        if !self.alert.is_empty() {
                            let p = |k: usize| self.params.get(i + k).copied().unwrap_or(0);
                            let fg = match kind {
                                Some(5) => Some(Fg::Indexed(p(2))),
                                Some(2) => Some(Fg::Rgb(p(2), p(3), p(4))),
                                _ => None,
                            };
                            if fg.is_some_and(|f| self.alert.contains(&f)) {
                                self.attr |= ALERT;
                            } else {
                                self.attr &= !ALERT;
                            }
                        }
                    }
                    i += match kind {
                        Some(5) => 2,
                        Some(2) => 4,
                        _ => 0,
                    };
                }
                _ => {}
            }
            i += 1;
        }
    }

    fn dec_mode<F: FnMut(&mut Screen, Hook)>(&mut self, mode: u16, on: bool, obs: &mut F) {
        match mode {
            7 => self.autowrap = on,
            2026 => {
                if on {
                    self.sync = true;
                } else if self.sync {
                    self.sync = false;
                    obs(self, Hook::PassEnd);
                }
            }
            47 | 1047 | 1049 => {
                if on == self.in_alt() {
                    return;
                }
                self.read_all(obs);
                if on {
                    if mode == 1049 {
                        self.decsc();
                    }
                    let cols = self.cols;
                    let alt: Vec<Box<Row>> = (0..self.nrows)
                        .map(|_| Box::new(Row::blank(cols)))
                        .collect();
                    let main = std::mem::replace(&mut self.rows, alt);
                    self.main_saved = Some((main, self.saved));
                } else if let Some((main, saved)) = self.main_saved.take() {
                    self.rows = main;
                    self.saved = saved;
                    if mode == 1049 {
                        self.decrc(&mut |_: &mut Screen, _| {});
                    }
                }
                self.pending_wrap = false;
            }
            25 => self.set_mode(HIDE_CURSOR, !on),
            2004 => self.set_mode(BRACKETED_PASTE, on),
            _ => {
                if let Some(&(_, bit)) = REDRAW_MODES.iter().find(|(m, _)| *m == mode) {
                    self.set_mode(bit, on);
                }
            }
        }
    }

    fn set_mode(&mut self, bit: u32, on: bool) {
        if on {
            self.modes |= bit;
        } else {
            self.modes &= !bit;
        }
    }

    /// Ask the observer to read every row (before they are destroyed), unless a frame is open.
    fn read_all<F: FnMut(&mut Screen, Hook)>(&mut self, obs: &mut F) {
        if !self.sync {
            obs(self, Hook::BeforeClear);
        }
    }

    /// Move the cursor; moving up ends a pass, so the observer reads first.
    fn move_to<F: FnMut(&mut Screen, Hook)>(&mut self, x: usize, y: usize, obs: &mut F) {
        let y = y.min(self.nrows - 1);
        if y < self.y && !self.sync {
            obs(self, Hook::PassEnd);
        }
        self.x = x.min(self.cols - 1);
        self.y = y;
        self.pending_wrap = false;
    }

    fn decsc(&mut self) {
        self.saved = Saved {
            x: self.x,
            y: self.y,
        };
    }

    fn decrc<F: FnMut(&mut Screen, Hook)>(&mut self, obs: &mut F) {
        let s = self.saved;
        self.move_to(s.x, s.y, obs);
    }

    fn reset<F: FnMut(&mut Screen, Hook)>(&mut self, obs: &mut F) {
        self.read_all(obs);
        let cols = self.cols;
        if let Some((main, _)) = self.main_saved.take() {
            self.rows = main;
        }
        for r in &mut self.rows {
            r.reset(cols);
        }
        self.x = 0;
        self.y = 0;
        self.pending_wrap = false;
        self.autowrap = true;
        self.attr = 0;
        self.modes = 0;
        self.top = 0;
        self.bottom = self.nrows - 1;
        self.saved = Saved::default();
        self.sync = false;
    }

    fn fill(&mut self, y: usize, from: usize, to: usize) {
        let row = &mut self.rows[y];
        let to = to.min(self.cols);
        if from >= to {
            return;
        }
        if from > 0 && row.cells[from] == WIDE_TAIL {
            row.cells[from - 1] = ' ';
        }
        if to < self.cols && row.cells[to] == WIDE_TAIL {
            row.cells[to] = ' ';
        }
        row.attr[from..to].fill(0);
        if row.cells[from..to].iter().any(|&c| c != ' ') {
            row.cells[from..to].fill(' ');
            row.touch();
        }
        if to == self.cols && row.wrapped {
            row.wrapped = false;
            row.touch();
        }
    }

    fn erase_line(&mut self, mode: usize) {
        let (from, to) = match mode {
            0 => (self.x, self.cols),
            1 => (0, self.x + 1),
            _ => (0, self.cols),
        };
        self.fill(self.y, from, to);
    }

    fn erase_display<F: FnMut(&mut Screen, Hook)>(&mut self, mode: usize, obs: &mut F) {
        let (first, last) = match mode {
            0 => (self.y + 1, self.nrows),
            1 => (0, self.y),
            _ => (0, self.nrows),
        };
        let any = (first..last).any(|y| {
            let r = &self.rows[y];
            r.cells.iter().any(|&c| c != ' ')
        });
        if any {
            self.read_all(obs);
        }
        match mode {
            0 => self.erase_line(0),
            1 => self.erase_line(1),
            _ => self.fill(self.y, 0, self.cols),
        }
        for y in first..last {
            self.fill(y, 0, self.cols);
        }
    }

    fn insert_chars(&mut self, n: usize) {
        let (x, cols) = (self.x, self.cols);
        let row = &mut self.rows[self.y];
        let n = n.min(cols - x);
        row.cells[x..].rotate_right(n);
        row.cells[x..x + n].fill(' ');
        row.attr[x..].rotate_right(n);
        row.attr[x..x + n].fill(0);
        row.touch();
    }

    fn delete_chars(&mut self, n: usize) {
        let (x, cols) = (self.x, self.cols);
        let row = &mut self.rows[self.y];
        let n = n.min(cols - x);
        row.cells[x..].rotate_left(n);
        row.cells[cols - n..].fill(' ');
        row.attr[x..].rotate_left(n);
        row.attr[cols - n..].fill(0);
        row.touch();
    }

    fn fresh_row(&mut self) -> Box<Row> {
        let cols = self.cols;
        match self.pool.pop() {
            Some(mut r) => {
                r.reset(cols);
                r
            }
            None => Box::new(Row::blank(cols)),
        }
    }

    /// Scroll the region up by `n`: its top rows leave (to the history), blank rows enter at the bottom.
    fn scroll_up<F: FnMut(&mut Screen, Hook)>(&mut self, n: usize, obs: &mut F) {
        let (top, bottom) = (self.top, self.bottom);
        let n = n.min(bottom - top + 1);
        for k in 0..n {
            let blank = self.fresh_row();
            let mut old = std::mem::replace(&mut self.rows[top + k], blank);
            old.detached = top > 0;
            self.history.push(old);
        }
        self.rows[top..=bottom].rotate_left(n);
        if self.history.len() >= HISTORY_CAP {
            obs(self, Hook::HistoryFull);
            // An observer that does not drain: keep the newest rows only (bounded memory).
            if self.history.len() >= HISTORY_CAP {
                let old: Vec<Box<Row>> = self.history.drain(..HISTORY_CAP / 2).collect();
                self.recycle(old);
            }
        }
    }

    /// Scroll the region down by `n`: its bottom rows are lost, blank rows enter at the top.
    fn scroll_down(&mut self, n: usize) {
        let (top, bottom) = (self.top, self.bottom);
        let n = n.min(bottom - top + 1);
        self.rows[top..=bottom].rotate_right(n);
        for k in 0..n {
            let blank = self.fresh_row();
            let old = std::mem::replace(&mut self.rows[top + k], blank);
            self.recycle([old]);
        }
    }

    fn insert_lines(&mut self, n: usize) {
        if self.y < self.top || self.y > self.bottom {
            return;
        }
        let (top, bottom) = (self.top, self.bottom);
        self.top = self.y;
        self.scroll_down(n);
        self.top = top;
        self.bottom = bottom;
        self.x = 0;
    }

    fn delete_lines<F: FnMut(&mut Screen, Hook)>(&mut self, n: usize, obs: &mut F) {
        if self.y < self.top || self.y > self.bottom {
            return;
        }
        let top = self.top;
        self.top = self.y;
        self.scroll_up(n, obs);
        self.top = top;
        self.x = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bold_label_is_marked_as_emphasis() {
        let out = render(
            40,
            2,
            b"  \x1b[1mQA\x1b[22m: test it\r\n\x1b[38;5;1mred\x1b[1mAgent\x1b[0m(x)",
        );
        assert_eq!(out, "  **QA**: test it\nredAgent(x)\n");
        // Colour arguments are not attributes: `38;5;1` is not bold.
        assert_eq!(render(20, 1, b"\x1b[38;5;1mQA\x1b[39m: x"), "QA: x\n");
        assert_eq!(
            render(20, 1, b"\x1b[1;38;2;1;1;1mQA\x1b[m: x"),
            "**QA**: x\n"
        );
    }

    fn render(cols: u16, rows: u16, input: &[u8]) -> String {
        let mut s = Screen::new(cols, rows);
        s.feed(input, &mut |_, _| {});
        s.contents()
    }

    #[test]
    fn cha_jumps_become_spaces() {
        let out = render(40, 3, b"\x1b[3GTODO:\x1b[9Gadd\x1b[13Ga");
        assert_eq!(out.lines().next(), Some("  TODO: add a"));
    }

    #[test]
    fn utf8_split_across_feeds_keeps_the_next_char() {
        let bytes = "\u{25cf} Agent".as_bytes();
        for cut in 0..bytes.len() {
            let mut s = Screen::new(20, 2);
            s.feed(&bytes[..cut], &mut |_, _| {});
            s.feed(&bytes[cut..], &mut |_, _| {});
            assert_eq!(
                s.contents().lines().next(),
                Some("\u{25cf} Agent"),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn ignored_sequences_print_nothing() {
        let out = render(
            40,
            2,
            b"\x1b[<u\x1b[>5u\x1b[?u\x1b[>4;2m\x1b[>0q\x1b[?2026$p\x1b]0;title\x07\x1bP+q\x1b\\\x0fok",
        );
        assert_eq!(out.lines().next(), Some("ok"));
    }

    #[test]
    fn scroll_region_su_moves_rows_to_history() {
        let mut s = Screen::new(10, 4);
        s.feed(b"a\r\nb\r\nc\r\nd\x1b[2;4r\x1b[2S\x1b[r", &mut |_, _| {});
        assert_eq!(s.contents(), "a\nd\n\n\n");
        let hist: Vec<String> = s
            .history_mut()
            .iter_mut()
            .map(|r| r.text().to_string())
            .collect();
        assert_eq!(hist, ["b", "c"]);
    }

    /// What a redraw must reproduce: rows (bold marked), cursor, modes, alternate screen.
    fn state(s: &mut Screen) -> String {
        let mut rows = String::new();
        for r in s.rows_mut() {
            r.ensure_text();
            let bold: String = r
                .attr
                .iter()
                .map(|&a| if a & BOLD != 0 { 'b' } else { '.' })
                .collect();
            rows.push_str(&format!(
                "{}|{}\n",
                r.cached_text(),
                bold.trim_end_matches('.')
            ));
        }
        let modes: Vec<u16> = [1, 7, 9, 25, 1000, 1002, 1003, 1004, 1005, 1006, 1015, 2004]
            .into_iter()
            .filter(|&m| s.dec_mode_set(m))
            .collect();
        format!(
            "{rows}cursor {},{} alt {} modes {modes:?} keypad {} region {}-{} bold {}",
            s.cursor_row(),
            s.cursor_col(),
            s.in_alt(),
            s.modes & APP_KEYPAD != 0,
            s.top,
            s.bottom,
            s.attr & BOLD != 0
        )
    }

    #[test]
    fn a_redraw_reproduces_the_screen_on_a_blank_one() {
        let cases: [&[u8]; 5] = [
            b"plain\r\nsecond line\x1b[3;5Hthere",
            "wide \u{4e2d}\u{6587} and \x1b[1mbold\x1b[22m text\r\n\x1b[1mstill".as_bytes(),
            b"main\x1b[?1049h\x1b[?25l\x1b[?1h\x1b=\x1b[?2004h\x1b[?1000h\x1b[?1006h\x1b[5;10Halt",
            b"\x1b[2;4r\x1b[?7l\x1b[?1004h\x1b[4;1Hxyz\x1b[1;1H",
            b"\x1b[?25l\x1b[?1049h\x1b[?1049l\x1b[?1002h\x1b[?1002l\x1bc after reset",
        ];
        for input in cases {
            let mut a = Screen::new(30, 6);
            a.feed(input, &mut |_, _| {});
            let mut b = Screen::new(30, 6);
            // From a screen in another state: the redraw sets everything it needs.
            b.feed(b"junk\x1b[?2004h\x1b[?7l\x1b[1m", &mut |_, _| {});
            b.feed(&a.redraw(), &mut |_, _| {});
            assert_eq!(
                state(&mut b),
                state(&mut a),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn alt_screen_restores_main() {
        let out = render(10, 3, b"main\x1b[?1049h\x1b[2J\x1b[Halt\x1b[?1049l");
        assert_eq!(out.lines().next(), Some("main"));
    }

    #[test]
    fn autowrap_marks_row_wrapped() {
        let mut s = Screen::new(4, 3);
        s.feed(b"abcdef", &mut |_, _| {});
        assert!(s.row_mut(0).is_some_and(|r| r.wrapped));
        assert_eq!(s.contents(), "abcd\nef\n\n");
    }

    #[test]
    fn ascii_runs_wrap_and_respect_wide_chars() {
        assert_eq!(render(4, 3, b"abcdefghij"), "abcd\nefgh\nij\n");
        assert_eq!(render(4, 2, b"\x1b[?7labcdefg"), "abcg\n\n");
        // Overwriting half of a wide character blanks the other half (both here).
        assert_eq!(
            render(6, 1, "\u{4e2d}\u{6587}\x1b[2Gxy".as_bytes()),
            " xy\n"
        );
    }

    #[test]
    fn csi_split_anywhere_equals_whole() {
        let input = b"ab\x1b[3;5Hcd\x1b[?1049h\x1b[2J\x1b[Hx\x1b[?1049l\x1b[1;2r\x1b[2S\x1b[>4;2mz";
        let whole = render(10, 5, input);
        for cut in 0..input.len() {
            let mut s = Screen::new(10, 5);
            s.feed(&input[..cut], &mut |_, _| {});
            s.feed(&input[cut..], &mut |_, _| {});
            assert_eq!(s.contents(), whole, "cut {cut}");
        }
    }

    proptest::proptest! {
        /// Any bytes, any sizes, resizes in between: no panic, the cursor stays on the screen.
        #[test]
        fn never_panics(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::sample::select(
                vec![0x1bu8, b'[', b'?', b';', b'1', b'0', b'9', b'H', b'A', b'J', b'K', b'S', b'T', b'r',
                     b'h', b'l', b'L', b'M', b'P', b'@', b'X', b'7', b'8', b'M', b'c', b'\n', b'\r',
                     0x08, 0x09, b'x', 0xe2, 0x97, 0x8f, 0xe4, 0xb8, 0xad, 0xff, b']', 0x07]), 0..64), 0..32),
            sizes in proptest::collection::vec((1u16..12, 1u16..8), 1..4),
        ) {
            let (c0, r0) = sizes[0];
            let mut s = Screen::new(c0, r0);
            for (k, chunk) in chunks.iter().enumerate() {
                s.feed(chunk, &mut |s, _| {
                    let _ = s.contents();
                    s.history_mut().clear();
                });
                if let Some(&(c, r)) = sizes.get(k % 4)
                    && k % 5 == 4
                {
                    s.resize(c, r);
                }
                proptest::prop_assert!(s.cursor_row() < s.rows() && s.cursor_col() < s.cols());
            }
        }
    }

    #[test]
    fn moving_up_ends_a_pass() {
        let mut s = Screen::new(10, 3);
        let mut hooks = Vec::new();
        s.feed(
            b"a\r\nb\x1b[H\x1b[?2026hx\x1b[Hy\x1b[?2026l",
            &mut |_, h| hooks.push(h),
        );
        assert_eq!(hooks, [Hook::PassEnd, Hook::PassEnd]);
    }
}
