//! Screen cues of the session state: a small YAML table per profile, versioned per CLI version
//! (`src/state/<profile>.yaml`, built in), matched against the de-styled output stream, and the
//! window title (OSC 0/2).
//!
//! [`CueScanner`] reads raw PTY output in any chunking: escape sequences are dropped (a cursor jump,
//! CHA or CUF, reads as a space, since TUIs skip blank cells that way; CUP and newlines as a line
//! break), OSC 0/2 titles are captured, and the cue regexes run over each chunk's text plus a short
//! tail of the previous one, so a cue split across reads is still seen. Cost: one pass over the bytes
//! and one `RegexSet` scan of the chunk's text.

use regex::{Regex, RegexSet};
use serde::Deserialize;

use super::Signal;
use crate::events::SessionState;

/// The built-in claude table.
pub const CLAUDE_YAML: &str = include_str!("claude.yaml");
/// The built-in tables of the other CLIs (their `screen:` sections are read by
/// [`crate::detect::cli_screen`]).
const OTHER_YAML: &[(&str, &str)] = &[
    ("codex", include_str!("codex.yaml")),
    ("gemini", include_str!("gemini.yaml")),
    ("opencode", include_str!("opencode.yaml")),
    ("aider", include_str!("aider.yaml")),
];
/// Characters of the previous chunk's text kept to catch a cue split across reads.
const TAIL_CHARS: usize = 160;
/// The longest OSC string kept (a title).
const MAX_OSC: usize = 512;

#[derive(Debug, Deserialize)]
struct TableFile {
    profile: String,
    #[serde(default)]
    versions: Vec<String>,
    #[serde(default)]
    title: Option<TitleFile>,
    #[serde(default)]
    cues: Vec<CueFile>,
}

#[derive(Debug, Deserialize)]
struct TitleFile {
    idle: String,
    working: String,
    /// The CLI sets its idle title a read before a dialog or a limit it announces: hold an idle
    /// title until the next chunk with text (see [`CueScanner`]'s `held_idle`).
    #[serde(default)]
    hold_idle: bool,
}

#[derive(Debug, Deserialize)]
struct CueFile {
    name: String,
    state: SessionState,
    regex: String,
    #[serde(default)]
    initial_only: bool,
}

/// Errors in a cue table.
#[derive(Debug, thiserror::Error)]
pub enum CueError {
    /// The table is not valid YAML or has the wrong shape.
    #[error("state cue table {name}: {message}")]
    Yaml {
        /// The table's name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A cue's regex does not compile.
    #[error("state cue table {name}: cue {cue:?}: bad regex: {source}")]
    Regex {
        /// The table's name.
        name: String,
        /// The cue.
        cue: String,
        /// The regex error.
        #[source]
        source: regex::Error,
    },
}

/// One profile's compiled cue table.
#[derive(Debug, Clone)]
pub struct CueTable {
    /// The profile it belongs to.
    pub profile: String,
    /// The CLI versions it was checked against.
    pub versions: Vec<String>,
    set: RegexSet,
    cues: Vec<(String, SessionState, bool, Regex)>,
    title: Option<(Regex, Regex)>,
    /// The table's `title.hold_idle`: an idle title may announce a dialog or a limit.
    hold_idle: bool,
}

impl CueTable {
    /// Parse and compile a table; `name` is used in errors.
    pub fn parse(name: &str, yaml: &str) -> Result<CueTable, CueError> {
        let f: TableFile = serde_saphyr::from_str(yaml).map_err(|e| CueError::Yaml {
            name: name.into(),
            message: e.to_string(),
        })?;
        let compile = |cue: &str, re: &str| {
            Regex::new(re).map_err(|source| CueError::Regex {
                name: name.into(),
                cue: cue.into(),
                source,
            })
        };
        let mut cues = Vec::new();
        for c in &f.cues {
            cues.push((
                c.name.clone(),
                c.state,
                c.initial_only,
                compile(&c.name, &c.regex)?,
            ));
        }
        let set = RegexSet::new(f.cues.iter().map(|c| c.regex.as_str())).map_err(|source| {
            CueError::Regex {
                name: name.into(),
                cue: "(set)".into(),
                source,
            }
        })?;
        let title = match &f.title {
            Some(t) => Some((
                compile("title.idle", &t.idle)?,
                compile("title.working", &t.working)?,
            )),
            None => None,
        };
        Ok(CueTable {
            profile: f.profile,
            versions: f.versions,
            set,
            cues,
            title,
            hold_idle: f.title.as_ref().is_some_and(|t| t.hold_idle),
        })
    }

    /// The built-in table of `profile`, if there is one.
    pub fn builtin(profile: &str) -> Option<CueTable> {
        match profile {
            "claude" => CueTable::parse("claude.yaml", CLAUDE_YAML).ok(),
            other => {
                let (_, yaml) = OTHER_YAML.iter().find(|(p, _)| *p == other)?;
                CueTable::parse(&format!("{other}.yaml"), yaml).ok()
            }
        }
    }

    /// The signals in `text` (one per matching cue, first cue of a state wins, in table order),
    /// in the order they appear in the text (by their last match).
    pub fn scan_text(&self, text: &str, starting: bool) -> Vec<Signal> {
        self.scan_fresh(text, 0, starting)
    }

    /// Like [`CueTable::scan_text`], counting only matches that end after byte `fresh` of `text`:
    /// the text before it was scanned with the previous chunk (kept only to catch a cue split
    /// across reads) and must not report its cues again. Signals come in the order of their last
    /// fresh match, so a chunk that shows the spinner and then the end-of-turn row ends idle.
    pub fn scan_fresh(&self, text: &str, fresh: usize, starting: bool) -> Vec<Signal> {
        let mut found: Vec<(usize, SessionState, Signal)> = Vec::new();
        for i in self.set.matches(text).iter() {
            let (name, state, initial_only, re) = &self.cues[i];
            if *initial_only && !starting {
                continue;
            }
            if found.iter().any(|(_, st, _)| st == state) {
                continue;
            }
            // Ordered by the last fresh match; the reset time is the fullest one shown (claude
            // says `resets 4:25pm (UTC)`, then `limit resets 4:25pm` in its status line).
            let mut at = None;
            let mut resets_at: Option<String> = None;
            for c in re
                .captures_iter(text)
                .filter(|c| c.get(0).is_some_and(|m| m.end() > fresh))
            {
                at = c.get(0).map(|m| m.start());
                if let Some(r) = c.name("resets_at").map(|m| m.as_str().trim())
                    && resets_at.as_ref().is_none_or(|k| r.len() > k.len())
                {
                    resets_at = Some(r.to_string());
                }
            }
            let Some(at) = at else {
                continue;
            };
            found.push((
                at,
                *state,
                Signal::Screen {
                    state: *state,
                    cue: name.clone(),
                    resets_at,
                },
            ));
        }
        found.sort_by_key(|(at, _, _)| *at);
        found.into_iter().map(|(_, _, s)| s).collect()
    }

    /// The signal of a window title, if the table knows it.
    pub fn scan_title(&self, title: &str) -> Option<Signal> {
        let (idle, working) = self.title.as_ref()?;
        if working.is_match(title) {
            Some(Signal::Title { working: true })
        } else if idle.is_match(title) {
            Some(Signal::Title { working: false })
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    Text,
    Escape,
    Csi,
    Osc,
    OscEscape,
    /// DCS, APC, PM, SOS: skipped to ST.
    Str,
    StrEscape,
}

/// Reads raw output into cue signals; keeps its place across chunks.
#[derive(Debug)]
pub struct CueScanner {
    table: CueTable,
    esc: Lex,
    csi_final_space: bool,
    osc: Vec<u8>,
    utf8: Vec<u8>,
    text: String,
    tail: String,
    /// An idle title held until the next chunk with text (tables with `title.hold_idle`, claude's):
    /// claude sets its idle title as a permission dialog or a usage-limit message opens, a read
    /// before it draws them; that chunk's `needs_input`/`blocked` cue replaces the idle, so no
    /// moment of `idle` (which ends a turn for the feedback actor) is published in between.
    held_idle: Option<Signal>,
}

impl CueScanner {
    /// A scanner of `table`'s cues.
    pub fn new(table: CueTable) -> CueScanner {
        CueScanner {
            table,
            esc: Lex::Text,
            csi_final_space: false,
            osc: Vec::new(),
            utf8: Vec::new(),
            text: String::new(),
            tail: String::new(),
            held_idle: None,
        }
    }

    fn push_byte(&mut self, b: u8) {
        self.utf8.push(b);
        match std::str::from_utf8(&self.utf8) {
            Ok(s) => {
                self.text.push_str(s);
                self.utf8.clear();
            }
            Err(e) if e.error_len().is_some() || self.utf8.len() >= 4 => self.utf8.clear(),
            Err(_) => {}
        }
    }

    fn title_done(&mut self, titles: &mut Vec<String>) {
        let s = String::from_utf8_lossy(&self.osc);
        if let Some(t) = s.strip_prefix("0;").or_else(|| s.strip_prefix("2;")) {
            titles.push(t.to_string());
        } else if s.starts_with("7501;") {
            // codex's state report (`7501;state=working:app=codex`): read like a title.
            titles.push(s.into_owned());
        }
        self.osc.clear();
    }

    /// One chunk of raw output; `starting` says whether the session is still `starting`.
    pub fn feed(&mut self, bytes: &[u8], starting: bool) -> Vec<Signal> {
        let mut titles = Vec::new();
        self.text.clear();
        self.text.push_str(&self.tail);
        let fresh = self.text.len();
        for &b in bytes {
            match self.esc {
                Lex::Text => match b {
                    0x1b => self.esc = Lex::Escape,
                    b'\r' | b'\n' => self.text.push('\n'),
                    b'\t' => self.text.push(' '),
                    0..=0x1f | 0x7f => {}
                    _ => self.push_byte(b),
                },
                Lex::Escape => {
                    self.esc = match b {
                        b'[' => {
                            self.csi_final_space = false;
                            Lex::Csi
                        }
                        b']' => {
                            self.osc.clear();
                            Lex::Osc
                        }
                        b'P' | b'_' | b'^' | b'X' => Lex::Str,
                        _ => Lex::Text,
                    }
                }
                Lex::Csi => {
                    if (0x40..=0x7e).contains(&b) {
                        match b {
                            b'G' | b'C' => self.text.push(' '),
                            b'H' | b'f' | b'A' | b'B' | b'E' | b'F' | b'd' => self.text.push('\n'),
                            _ => {}
                        }
                        self.esc = Lex::Text;
                    }
                }
                Lex::Osc => match b {
                    0x07 => {
                        self.title_done(&mut titles);
                        self.esc = Lex::Text;
                    }
                    0x1b => self.esc = Lex::OscEscape,
                    _ => {
                        if self.osc.len() < MAX_OSC {
                            self.osc.push(b);
                        }
                    }
                },
                Lex::OscEscape => {
                    self.title_done(&mut titles);
                    self.esc = if b == b'\\' { Lex::Text } else { Lex::Escape };
                }
                Lex::Str => {
                    if b == 0x1b {
                        self.esc = Lex::StrEscape;
                    } else if b == 0x07 {
                        self.esc = Lex::Text;
                    }
                }
                Lex::StrEscape => self.esc = if b == b'\\' { Lex::Text } else { Lex::Str },
            }
        }
        let mut out = self.table.scan_fresh(&self.text, fresh, starting);
        // Keep a tail to catch a cue split across reads (cut at a char boundary).
        let mut cut = self.text.len().saturating_sub(TAIL_CHARS * 4);
        while !self.text.is_char_boundary(cut) {
            cut += 1;
        }
        let has_text = !self.text[fresh..].trim().is_empty();
        self.tail = self.text[cut..].to_string();
        out.extend(titles.iter().filter_map(|t| self.table.scan_title(t)));
        let waits = |s: &Signal| {
            matches!(
                s,
                Signal::Screen {
                    state: SessionState::NeedsInput | SessionState::Blocked,
                    ..
                }
            )
        };
        let announced = out.iter().any(waits);
        if announced {
            // An idle title beside the dialog or limit it announces says nothing more.
            out.retain(|s| !matches!(s, Signal::Title { working: false }));
        }
        // Only a table with `title.hold_idle` (claude's) announces a dialog or a limit by its idle
        // title; the other CLIs' idle titles and OSC states are the turn's end itself.
        let hold = if self.table.hold_idle
            && matches!(out.last(), Some(Signal::Title { working: false }))
        {
            out.pop()
        } else {
            None
        };
        if let Some(held) = self.held_idle.take() {
            if announced {
                // The dialog or limit the idle title announced: it replaces the idle.
            } else if has_text || !out.is_empty() || hold.is_some() {
                out.insert(0, held);
            } else {
                self.held_idle = Some(held);
            }
        }
        if hold.is_some() {
            self.held_idle = hold;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanner() -> CueScanner {
        CueScanner::new(CueTable::builtin("claude").expect("built-in table compiles"))
    }

    fn states(signals: &[Signal]) -> Vec<String> {
        signals
            .iter()
            .map(|s| match s {
                Signal::Screen {
                    state,
                    cue,
                    resets_at,
                } => {
                    format!(
                        "{}:{cue}:{}",
                        state.as_str(),
                        resets_at.as_deref().unwrap_or("")
                    )
                }
                Signal::Title { working } => format!("title:{working}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn claude_cues() {
        let cases: Vec<(&[u8], bool, Vec<&str>)> = vec![
            (
                b"\x1b]0;\xe2\x9c\xb3 Claude Code\x07x",
                true,
                vec![],
            ),
            (
                b"\x1b]0;\xe2\x97\x90 Claude Code\x1b\\",
                false,
                vec!["title:true"],
            ),
            (
                "\u{273b} Thinking\u{2026} (esc\x1b[5Gto interrupt)".as_bytes(),
                false,
                vec!["working:spinner:"],
            ),
            (
                "\u{273b} Cooked for 3s \u{b7} done 12:11 PM".as_bytes(),
                false,
                vec!["idle:turn-done:"],
            ),
            (
                b" Do you want to proceed?\r\n \xe2\x9d\xaf 1. Yes",
                false,
                vec!["needs_input:dialog:"],
            ),
            (
                "Claude usage limit reached. Your limit will reset at 3pm (UTC).".as_bytes(),
                false,
                vec!["blocked:usage-limit:3pm (UTC)"],
            ),
            (
                "You've hit your 5-hour limit \u{b7} resets 4:25pm (UTC)\r\n\u{26a0} Usage limit reached \u{b7} limit resets 4:25pm".as_bytes(),
                false,
                vec!["blocked:usage-limit:4:25pm (UTC)"],
            ),
            (
                "5-hour limit reached \u{2219} resets 4am".as_bytes(),
                false,
                vec!["blocked:usage-limit:4am"],
            ),
            ("\u{276f} ".as_bytes(), true, vec!["idle:prompt:"]),
            ("\u{276f} ".as_bytes(), false, vec![]),
        ];
        for (bytes, starting, want) in cases {
            let mut s = scanner();
            assert_eq!(
                states(&s.feed(bytes, starting)),
                want,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    /// The tail kept for split cues is not scanned again: a spinner seen once is reported once,
    /// and a chunk with the spinner and then the end-of-turn row gives them in that order.
    #[test]
    fn a_cue_is_reported_once_and_in_text_order() {
        let mut s = scanner();
        assert_eq!(
            states(&s.feed(
                "\u{273b} Thinking\u{2026} (esc to interrupt)".as_bytes(),
                false
            )),
            vec!["working:spinner:"]
        );
        assert_eq!(states(&s.feed(b"x", false)), Vec::<String>::new());
        assert_eq!(
            states(&s.feed("\u{273b} Worked for 3s".as_bytes(), false)),
            vec!["idle:turn-done:"]
        );
        let mut s = scanner();
        assert_eq!(
            states(&s.feed(
                "(esc to interrupt)\r\n\u{273b} Worked for 3s\r\n".as_bytes(),
                false
            )),
            vec!["working:spinner:", "idle:turn-done:"]
        );
        assert_eq!(
            states(&s.feed(
                "\u{273b} Baked for 2s\r\n(esc to interrupt)".as_bytes(),
                false
            )),
            vec!["idle:turn-done:", "working:spinner:"]
        );
    }

    #[test]
    fn any_chunking_finds_the_cue() {
        let bytes = "x\x1b]0;\u{2733} Claude Code\x07 Do you want to proceed? \u{273b}".as_bytes();
        for split in 1..bytes.len() {
            let mut s = scanner();
            let mut got = states(&s.feed(&bytes[..split], false));
            got.extend(states(&s.feed(&bytes[split..], false)));
            got.dedup();
            assert!(
                got.contains(&"needs_input:dialog:".to_string()),
                "split {split}: {got:?}"
            );
            // The idle title that announced the dialog is never reported after it.
            let dialog = got.iter().position(|g| g == "needs_input:dialog:").unwrap();
            assert!(
                !got[dialog..].contains(&"title:false".to_string()),
                "split {split}: {got:?}"
            );
        }
    }

    /// claude's idle title comes a read before the dialog or the limit it announces: held until
    /// the next chunk with text, and dropped when that chunk shows the dialog.
    #[test]
    fn an_idle_title_waits_for_the_next_text() {
        let idle_title = b"\x1b]0;\xe2\x9c\xb3 Claude Code\x07";
        let mut s = scanner();
        assert!(s.feed(idle_title, false).is_empty());
        assert!(s.feed(b"\x1b[2A", false).is_empty());
        assert_eq!(
            states(&s.feed(b" Do you want to proceed?", false)),
            vec!["needs_input:dialog:"]
        );
        let mut s = scanner();
        assert!(s.feed(idle_title, false).is_empty());
        assert_eq!(states(&s.feed(b"\r\n> ", false)), vec!["title:false"]);
        let mut s = scanner();
        assert!(s.feed(idle_title, false).is_empty());
        assert_eq!(
            states(&s.feed("You've hit your limit \u{b7} resets 3pm".as_bytes(), false)),
            vec!["blocked:usage-limit:3pm"]
        );
    }

    /// The hold is the table's flag, not the profile's name: only claude's table sets it, and any
    /// table that sets it holds.
    #[test]
    fn the_idle_hold_is_a_table_flag() {
        assert!(CueTable::builtin("claude").expect("claude").hold_idle);
        for p in ["codex", "gemini", "opencode", "aider"] {
            assert!(!CueTable::builtin(p).expect(p).hold_idle, "{p}");
        }
        let yaml =
            "profile: other\ntitle:\n  idle: '^idle'\n  working: '^busy'\n  hold_idle: true\n";
        let mut s = CueScanner::new(CueTable::parse("other.yaml", yaml).expect("table"));
        assert!(s.feed(b"\x1b]0;idle\x07", false).is_empty());
        assert_eq!(states(&s.feed(b"\r\n> ", false)), vec!["title:false"]);
    }

    #[test]
    fn other_cli_cues() {
        let mut codex = CueScanner::new(CueTable::builtin("codex").expect("codex table"));
        assert_eq!(
            states(&codex.feed(b"\x1b]7501;state=working:app=codex\x1b\\", false)),
            ["title:true"]
        );
        assert_eq!(
            states(&codex.feed(b"\x1b]7501;state=done:app=codex\x1b\\", false)),
            ["title:false"]
        );
        let mut gemini = CueScanner::new(CueTable::builtin("gemini").expect("gemini table"));
        assert_eq!(
            states(&gemini.feed("\x1b]0;\u{25c7}  Ready (work)\x07".as_bytes(), false)),
            ["title:false"]
        );
        assert_eq!(
            states(&gemini.feed(
                "\x1b]0;\u{2726}  Working\u{2026} (work)\x07".as_bytes(),
                false
            )),
            ["title:true"]
        );
        assert_eq!(
            states(&codex.feed(b"Would you like to run the following command?\r\n", false)),
            ["needs_input:dialog:"]
        );
        assert_eq!(
            states(&gemini.feed(b"Allow execution of: 'ls'?", false)),
            ["needs_input:dialog:"]
        );
        for p in ["opencode", "aider"] {
            assert!(CueTable::builtin(p).is_some(), "{p}");
        }
    }

    #[test]
    fn bad_tables_are_clear_errors() {
        let e = CueTable::parse(
            "x.yaml",
            "profile: x\ncues:\n  - {name: a, state: idle, regex: '('}",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("x.yaml") && e.contains("cue \"a\""), "{e}");
        let e = CueTable::parse("y.yaml", "profile: [")
            .unwrap_err()
            .to_string();
        assert!(e.contains("y.yaml"), "{e}");
        let e = CueTable::parse(
            "z.yaml",
            "profile: z\ncues:\n  - {name: a, state: sleepy, regex: 'x'}",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("z.yaml"), "{e}");
    }
}
