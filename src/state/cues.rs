//! Screen cues of the session state: a small YAML table per profile, versioned per CLI version
//! (`src/state/<profile>.yaml`, built in), matched against the de-styled output stream, and the
//! window title (OSC 0/2).
//!
//! [`CueScanner`] reads raw PTY output in any chunking: escape sequences are dropped (a cursor jump,
//! CHA or CUF, reads as a space, since TUIs skip blank cells that way; CUP and newlines as a line
//! break), OSC 0/2 titles are captured, and the cue regexes run over each chunk's text plus a short
//! tail of the previous one, so a cue split across reads is still seen. Cost: one pass over the bytes
//! and one regex-set scan (all cues at once, `regex-automata`) of the chunk's text.

use regex_automata::meta::{self, Regex};
use regex_automata::{Input, MatchKind, PatternSet};
use serde::Deserialize;

use super::Signal;
use crate::events::SessionState;

/// The built-in claude table.
pub const CLAUDE_YAML: &str = include_str!("claude.yaml");
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
    #[error("state cue table {name}: {message}")]
    Yaml { name: String, message: String },
    #[error("state cue table {name}: cue {cue:?}: bad regex: {source}")]
    Regex {
        name: String,
        cue: String,
        #[source]
        source: Box<meta::BuildError>,
    },
}

/// One profile's compiled cue table.
#[derive(Debug, Clone)]
pub struct CueTable {
    pub profile: String,
    pub versions: Vec<String>,
    /// Every cue's regex at once, reporting all that match (a regex set).
    set: Regex,
    cues: Vec<(String, SessionState, bool, Regex)>,
    title: Option<(Regex, Regex)>,
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
                source: Box::new(source),
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
        let set = Regex::builder()
            .configure(Regex::config().match_kind(MatchKind::All))
            .build_many(&f.cues.iter().map(|c| c.regex.as_str()).collect::<Vec<_>>())
            .map_err(|source| CueError::Regex {
                name: name.into(),
                cue: "(set)".into(),
                source: Box::new(source),
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
        })
    }

    /// The built-in table of `profile`, if there is one.
    pub fn builtin(profile: &str) -> Option<CueTable> {
        match profile {
            "claude" => CueTable::parse("claude.yaml", CLAUDE_YAML).ok(),
            _ => None,
        }
    }

    /// The signals in `text` (one per matching cue, first cue of a state wins, in table order).
    pub fn scan_text(&self, text: &str, starting: bool) -> Vec<Signal> {
        let mut out: Vec<Signal> = Vec::new();
        let mut matched = PatternSet::new(self.set.pattern_len());
        self.set
            .which_overlapping_matches(&Input::new(text), &mut matched);
        for i in matched.iter() {
            let (name, state, initial_only, re) = &self.cues[i.as_usize()];
            if *initial_only && !starting {
                continue;
            }
            if out
                .iter()
                .any(|s| matches!(s, Signal::Screen { state: st, .. } if st == state))
            {
                continue;
            }
            let mut caps = re.create_captures();
            re.captures(text, &mut caps);
            let resets_at = caps
                .get_group_by_name("resets_at")
                .map(|span| text[span.range()].trim().to_string());
            out.push(Signal::Screen {
                state: *state,
                cue: name.clone(),
                resets_at,
            });
        }
        out
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
}

impl CueScanner {
    pub fn new(table: CueTable) -> CueScanner {
        CueScanner {
            table,
            esc: Lex::Text,
            csi_final_space: false,
            osc: Vec::new(),
            utf8: Vec::new(),
            text: String::new(),
            tail: String::new(),
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
        }
        self.osc.clear();
    }

    /// One chunk of raw output; `starting` says whether the session is still `starting`.
    pub fn feed(&mut self, bytes: &[u8], starting: bool) -> Vec<Signal> {
        let mut titles = Vec::new();
        self.text.clear();
        self.text.push_str(&self.tail);
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
        let mut out = self.table.scan_text(&self.text, starting);
        // Keep a tail to catch a cue split across reads (cut at a char boundary).
        let mut cut = self.text.len().saturating_sub(TAIL_CHARS * 4);
        while !self.text.is_char_boundary(cut) {
            cut += 1;
        }
        self.tail = self.text[cut..].to_string();
        out.extend(titles.iter().filter_map(|t| self.table.scan_title(t)));
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
                b"\x1b]0;\xe2\x9c\xb3 Claude Code\x07",
                true,
                vec!["title:false"],
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
            assert!(
                got.contains(&"title:false".to_string()),
                "split {split}: {got:?}"
            );
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
