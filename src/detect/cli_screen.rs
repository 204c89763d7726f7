//! Per-CLI screen knowledge for the agent CLIs other than claude (codex, gemini, opencode, aider):
//! what on their screens is the model's reply, what is the user's input or the CLI's chrome, how
//! each shows its own errors, and what says that a turn is over.
//!
//! Each CLI has a built-in table, `src/state/<profile>.yaml` (section `screen:`, next to the state
//! cues of [`crate::state::cues`]), checked against the recordings in `fixtures/captures/<cli>_*`:
//! * `reply_markers`: what the CLI draws before a reply's first row (codex `• `, gemini `✦ `); it is
//!   stripped, so a delegation on a reply's first line is found;
//! * `user_rows`, `chrome`: rows that are not the agent's words (the echoed prompt, the input box,
//!   status and hint rows): never matched;
//! * `errors`: the CLI's own error displays (codex `■ {"error": …}`, gemini `✕ [API Error: …]`),
//!   each an `error` detection with the pattern id `<profile>.<name>`;
//! * `alert_colours` (SGR foregrounds, `38;5;168`) and `errors` with `alert: true`: an error display
//!   that only its colour tells from the user's own rows (opencode draws both in a `┃` box; the
//!   error's bar is red), matched only on lines whose first cell is drawn in one of those colours;
//! * `turn_end_rows`, `turn_end_osc`: a row, or an OSC string (codex's `7501;state=idle`, gemini's
//!   title `◇  Ready`), that says the turn is over;
//! * `wrap`: how the CLI wraps a long line when it is not claude's way (opencode's opentui breaks
//!   inside a word after punctuation and carries a space that does not fit to the next row), so
//!   the line reader joins its rows right ([`crate::screen::Rewrap`]);
//! * `code_blocks`: the CLI draws a fenced code block as claude does, without fences and with only
//!   some tokens coloured, so a plain row right below a code row, at its indent, is code too (off
//!   for the built-in tables: none of those CLIs draws blocks that way);
//! * `streaming`: the CLI draws half-streamed rows (down to mid-word, `Engineer Agent: impl`), so a
//!   screen detection stays provisional until its turn ends ([`crate::detect::finality`] in turn
//!   mode), never merely because a row was drawn below it.
//!
//! Cost: per logical line one `RegexSet` scan of the user/chrome/turn-end rows (only when the
//! profile has them) and a scan of the error displays; per byte a 5-state OSC lexer.

use std::sync::Arc;

use regex::{Regex, RegexSet};
use serde::Deserialize;

use crate::events::{Detection, TextSource};
use crate::screen::{Fg, Rewrap};

/// The longest OSC string looked at (a title or a status report).
const MAX_OSC: usize = 512;

#[derive(Debug, Deserialize)]
struct FileTop {
    profile: String,
    #[serde(default)]
    screen: Option<ScreenFile>,
}

#[derive(Debug, Default, Deserialize)]
struct ScreenFile {
    #[serde(default)]
    streaming: bool,
    #[serde(default)]
    code_blocks: bool,
    #[serde(default)]
    reply_markers: Vec<String>,
    #[serde(default)]
    user_rows: Vec<String>,
    #[serde(default)]
    chrome: Vec<String>,
    #[serde(default)]
    turn_end_rows: Vec<String>,
    #[serde(default)]
    turn_end_osc: Vec<String>,
    #[serde(default)]
    errors: Vec<ErrorFile>,
    #[serde(default)]
    wrap: Option<WrapFile>,
    #[serde(default)]
    alert_colours: Vec<String>,
}

/// `screen.wrap`: how the CLI wraps a long line (see [`crate::screen::Rewrap`]).
#[derive(Debug, Deserialize)]
struct WrapFile {
    #[serde(default)]
    right_margin: usize,
    #[serde(default)]
    carry_space: bool,
    #[serde(default)]
    split_words: bool,
    #[serde(default)]
    space_must_fit: bool,
}

#[derive(Debug, Deserialize)]
struct ErrorFile {
    name: String,
    regex: String,
    /// Only for lines drawn in one of the `alert_colours` (the regex alone would match the
    /// user's own boxed rows too).
    #[serde(default)]
    alert: bool,
}

/// Errors in a screen table.
#[derive(Debug, thiserror::Error)]
pub enum CliScreenError {
    #[error("screen table {name}: {message}")]
    Yaml { name: String, message: String },
    #[error("screen table {name}: {what}: bad regex: {source}")]
    Regex {
        name: String,
        what: String,
        #[source]
        source: regex::Error,
    },
}

/// What one logical screen line is, for a CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind<'a> {
    /// What the user typed (an echoed prompt, the input box).
    User,
    /// The CLI's own rows around the reply (status, hints, footers).
    Chrome,
    /// A row that says the turn is over.
    TurnEnd,
    /// Reply text, without the reply marker.
    Text(&'a str),
}

/// One CLI's compiled screen table.
#[derive(Debug, Clone)]
pub struct CliScreen {
    /// The profile (CLI) it describes.
    pub profile: String,
    /// The CLI draws half-streamed rows: screen detections wait for the turn's end.
    pub streaming: bool,
    /// The CLI draws a fenced code block as claude does (no fences, some tokens coloured): a plain
    /// row below a code row at its indent is code too ([`crate::screen::LineReader::with_code_blocks`]).
    pub code_blocks: bool,
    markers: Vec<String>,
    /// User rows, then chrome, then turn-end rows, in one set.
    rows: RegexSet,
    users: usize,
    chrome: usize,
    osc_end: Option<RegexSet>,
    errors: Vec<(String, Regex)>,
    /// Error displays recognised only on lines drawn in an alert colour.
    alert_errors: Vec<(String, Regex)>,
    alert_colours: Vec<Fg>,
    rewrap: Option<Rewrap>,
}

/// The built-in tables, by profile name.
const BUILTIN: &[(&str, &str)] = &[
    ("codex", include_str!("../state/codex.yaml")),
    ("gemini", include_str!("../state/gemini.yaml")),
    ("opencode", include_str!("../state/opencode.yaml")),
    ("aider", include_str!("../state/aider.yaml")),
];

/// The profile a command is, by the file name of its `argv[0]` (`/x/bin/codex` → `codex`), when it
/// is one of the CLIs with a built-in table (claude included).
pub(crate) fn profile_of_command(argv: &[String]) -> Option<&'static str> {
    let name = std::path::Path::new(argv.first()?).file_name()?.to_str()?;
    ["claude", "codex", "gemini", "opencode", "aider"]
        .into_iter()
        .find(|p| *p == name)
}

impl CliScreen {
    /// The built-in table of `profile` (None for claude, whose screen knowledge is built into the
    /// pipeline, and for unknown profiles).
    pub fn builtin(profile: &str) -> Option<Arc<CliScreen>> {
        let (_, yaml) = BUILTIN.iter().find(|(p, _)| *p == profile)?;
        match CliScreen::parse(&format!("{profile}.yaml"), yaml) {
            Ok(Some(t)) => Some(Arc::new(t)),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "built-in screen table does not compile");
                None
            }
        }
    }

    /// Parse a table (the `screen:` section of a state table); `Ok(None)` when it has none.
    pub fn parse(name: &str, yaml: &str) -> Result<Option<CliScreen>, CliScreenError> {
        let top: FileTop = serde_saphyr::from_str(yaml).map_err(|e| CliScreenError::Yaml {
            name: name.into(),
            message: e.to_string(),
        })?;
        let Some(s) = top.screen else {
            return Ok(None);
        };
        let err = |what: &str| {
            let (name, what) = (name.to_string(), what.to_string());
            move |source| CliScreenError::Regex { name, what, source }
        };
        let all: Vec<&String> = s
            .user_rows
            .iter()
            .chain(&s.chrome)
            .chain(&s.turn_end_rows)
            .collect();
        let rows = RegexSet::new(all).map_err(err("rows"))?;
        let osc_end = if s.turn_end_osc.is_empty() {
            None
        } else {
            Some(RegexSet::new(&s.turn_end_osc).map_err(err("turn_end_osc"))?)
        };
        let mut errors = Vec::new();
        let mut alert_errors = Vec::new();
        for e in &s.errors {
            let re = Regex::new(&e.regex).map_err(err(&format!("error {}", e.name)))?;
            let to = if e.alert {
                &mut alert_errors
            } else {
                &mut errors
            };
            to.push((format!("{}.{}", top.profile, e.name), re));
        }
        let mut alert_colours = Vec::new();
        for c in &s.alert_colours {
            alert_colours.push(parse_fg(c).ok_or_else(|| CliScreenError::Yaml {
                name: name.into(),
                message: format!("alert_colours: {c:?} is not `38;5;N` or `38;2;R;G;B`"),
            })?);
        }
        Ok(Some(CliScreen {
            profile: top.profile,
            streaming: s.streaming,
            code_blocks: s.code_blocks,
            markers: s.reply_markers,
            rows,
            users: s.user_rows.len(),
            chrome: s.chrome.len(),
            osc_end,
            errors,
            alert_errors,
            alert_colours,
            rewrap: s.wrap.map(|w| Rewrap {
                right_margin: w.right_margin,
                carry_space: w.carry_space,
                split_words: w.split_words,
                space_must_fit: w.space_must_fit,
            }),
        }))
    }

    /// What `line` (a logical line read off the screen) is.
    pub fn classify<'a>(&self, line: &'a str) -> RowKind<'a> {
        let t = line.trim_start();
        if let Some(i) = self.rows.matches(t).iter().next() {
            return if i < self.users {
                RowKind::User
            } else if i < self.users + self.chrome {
                RowKind::Chrome
            } else {
                RowKind::TurnEnd
            };
        }
        for m in &self.markers {
            if let Some(rest) = t.strip_prefix(m.as_str()) {
                return RowKind::Text(rest);
            }
            // The marker alone (a reply whose first row is still empty).
            if t == m.trim_end() {
                return RowKind::Text("");
            }
        }
        RowKind::Text(t)
    }

    /// The CLI's own error display in `line` (reply marker already stripped), as a detection.
    pub fn error(&self, line: &str, source: TextSource) -> Option<Detection> {
        let t = line.trim();
        self.errors.iter().find_map(|(id, re)| {
            let c = re.captures(t)?;
            let text = c.name("message").map_or(t, |m| m.as_str()).trim();
            (!text.is_empty()).then(|| Detection::new("error", id, text.to_string(), source))
        })
    }

    /// The CLI's own error display drawn in its alert colour (`alert: true` in `errors`), as a
    /// detection: `line` is a whole logical line whose first cell is in an alert colour.
    pub fn alert_error(&self, line: &str, source: TextSource) -> Option<Detection> {
        let t = line.trim();
        self.alert_errors.iter().find_map(|(id, re)| {
            let c = re.captures(t)?;
            let text = c.name("message").map_or(t, |m| m.as_str()).trim();
            (!text.is_empty()).then(|| Detection::new("error", id, text.to_string(), source))
        })
    }

    /// The foreground colours the CLI draws its error displays in (`alert_colours`).
    pub fn alert_colours(&self) -> &[Fg] {
        &self.alert_colours
    }

    /// Does this OSC string (`0;title`, `7501;state=idle:app=codex`) say the turn is over?
    pub fn osc_ends_turn(&self, osc: &str) -> bool {
        self.osc_end.as_ref().is_some_and(|s| s.is_match(osc))
    }

    /// How the CLI wraps long lines, when it differs from claude's (`screen.wrap`).
    pub fn rewrap(&self) -> Option<Rewrap> {
        self.rewrap
    }

    /// True when the table looks at OSC strings at all.
    pub fn watches_osc(&self) -> bool {
        self.osc_end.is_some()
    }
}

/// `38;5;N` or `38;2;R;G;B` as a foreground colour.
fn parse_fg(s: &str) -> Option<Fg> {
    let p: Vec<u16> = s
        .split(';')
        .map(|x| x.trim().parse().ok())
        .collect::<Option<_>>()?;
    match p.as_slice() {
        [38, 5, n] => Some(Fg::Indexed(*n)),
        [38, 2, r, g, b] => Some(Fg::Rgb(*r, *g, *b)),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Lex {
    #[default]
    Text,
    Escape,
    Osc,
    OscEscape,
}

/// Finds OSC strings in raw output, in any chunking: [`OscLexer::scan`] gives each string that ends
/// in a chunk with the offset just past its terminator, so the caller can act on it in stream order.
#[derive(Debug, Default)]
pub(crate) struct OscLexer {
    state: Lex,
    buf: Vec<u8>,
}

impl OscLexer {
    pub(crate) fn new() -> OscLexer {
        OscLexer::default()
    }

    /// The OSC strings that end in `bytes`: (offset after the terminator, the string).
    pub(crate) fn scan(&mut self, bytes: &[u8]) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for (i, &b) in bytes.iter().enumerate() {
            self.state = match self.state {
                Lex::Text => {
                    if b == 0x1b {
                        Lex::Escape
                    } else {
                        Lex::Text
                    }
                }
                Lex::Escape => match b {
                    b']' => {
                        self.buf.clear();
                        Lex::Osc
                    }
                    0x1b => Lex::Escape,
                    _ => Lex::Text,
                },
                Lex::Osc => match b {
                    0x07 => {
                        out.push((i + 1, String::from_utf8_lossy(&self.buf).into_owned()));
                        Lex::Text
                    }
                    0x1b => Lex::OscEscape,
                    // A C0 control other than ESC/BEL cancels the string.
                    0x18 | 0x1a => Lex::Text,
                    _ => {
                        if self.buf.len() < MAX_OSC {
                            self.buf.push(b);
                        }
                        Lex::Osc
                    }
                },
                Lex::OscEscape => {
                    out.push((i + 1, String::from_utf8_lossy(&self.buf).into_owned()));
                    if b == b'\\' { Lex::Text } else { Lex::Escape }
                }
            };
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_tables_compile() {
        for (p, _) in BUILTIN {
            let t = CliScreen::builtin(p).unwrap_or_else(|| panic!("{p}: no table"));
            assert_eq!(&t.profile, p);
        }
        assert!(CliScreen::builtin("claude").is_none());
    }

    #[test]
    fn profile_by_command() {
        let argv = |s: &str| vec![s.to_string()];
        assert_eq!(profile_of_command(&argv("/x/bin/codex")), Some("codex"));
        assert_eq!(profile_of_command(&argv("gemini")), Some("gemini"));
        assert_eq!(profile_of_command(&argv("bash")), None);
        assert_eq!(profile_of_command(&[]), None);
    }

    #[test]
    fn osc_lexer_any_chunking() {
        let bytes =
            b"ab\x1b]0;\xe2\x97\x87  Ready (work)\x07cd\x1b]7501;state=idle:app=codex\x1b\\e";
        for split in 0..bytes.len() {
            let mut l = OscLexer::new();
            let mut got: Vec<(usize, String)> = l.scan(&bytes[..split]);
            got.extend(
                l.scan(&bytes[split..])
                    .into_iter()
                    .map(|(o, s)| (o + split, s)),
            );
            assert_eq!(
                got,
                vec![
                    (24, "0;\u{25c7}  Ready (work)".to_string()),
                    (55, "7501;state=idle:app=codex".to_string())
                ],
                "split {split}"
            );
        }
    }

    #[test]
    fn codex_rows() {
        let c = CliScreen::builtin("codex").expect("codex");
        assert_eq!(
            c.classify("• Engineer Agent: implement fib"),
            RowKind::Text("Engineer Agent: implement fib")
        );
        assert_eq!(c.classify("› plan fib"), RowKind::User);
        let e = c
            .error("■ {\"error\": {\"message\": \"boom\"}}", TextSource::Screen)
            .expect("error display");
        assert_eq!(e.category, "error");
        assert_eq!(e.pattern, "codex.error-display");
        assert!(c.osc_ends_turn("7501;state=idle:app=codex"));
        assert!(!c.osc_ends_turn("7501;state=working:app=codex"));
    }

    #[test]
    fn gemini_rows() {
        let g = CliScreen::builtin("gemini").expect("gemini");
        assert_eq!(
            g.classify("✦ TODO: cache it"),
            RowKind::Text("TODO: cache it")
        );
        assert_eq!(g.classify(" > break the api"), RowKind::User);
        let e = g
            .error(
                "✕ [API Error: {\"error\":{\"code\":400}}]",
                TextSource::Screen,
            )
            .expect("error display");
        assert_eq!(e.pattern, "gemini.api-error");
        assert!(g.osc_ends_turn("0;\u{25c7}  Ready (work)"));
        assert!(!g.osc_ends_turn("0;\u{2726}  Working\u{2026} (work)"));
    }
}

#[cfg(test)]
mod opencode {
    use crate::screen::{Fg, LineReader, Lines, ReadKind, Screen};

    /// The red-barred box is an error; the same box in the user's blue is not.
    #[test]
    fn api_error_box_by_its_colour() {
        let o = super::CliScreen::builtin("opencode").expect("opencode");
        assert!(o.alert_colours().contains(&Fg::Indexed(168)));
        assert!(o.alert_colours().contains(&Fg::Rgb(224, 108, 117)));
        let mut s = Screen::new(60, 8);
        s.set_alert_colours(o.alert_colours().to_vec());
        let bytes = "\x1b[1;3H\x1b[38;5;75m┃\x1b[0m  break the api\
                     \x1b[3;3H\x1b[38;2;224;108;117m┃\x1b[0m  \x1b[38;5;8mfake_llm: boom\x1b[0m\x1b[6;1H";
        let mut r = LineReader::new();
        let mut out = Lines::new();
        s.feed(bytes.as_bytes(), &mut |s, h| r.read(s, h.into(), &mut out));
        r.read(&mut s, ReadKind::All, &mut out);
        let got: Vec<(String, bool)> = out.lines().map(|l| (l.text.to_string(), l.alert)).collect();
        assert_eq!(
            got,
            [
                ("  ┃  break the api".to_string(), false),
                ("  ┃  fake_llm: boom".to_string(), true)
            ]
        );
        let e = o
            .alert_error("  ┃  fake_llm: boom", crate::events::TextSource::Screen)
            .expect("error");
        assert_eq!(
            (e.pattern.as_str(), e.text.as_str()),
            ("opencode.api-error", "fake_llm: boom")
        );
        // The toast (closed by a second bar) is not read: it wraps a long message over its rows,
        // and the box in the conversation says it whole.
        assert!(
            o.alert_error("┃  fake_llm: boom  ┃", crate::events::TextSource::Screen)
                .is_none()
        );
        assert!(
            o.alert_error("  ┃", crate::events::TextSource::Screen)
                .is_none()
        );
    }

    /// A long message wraps over rows of the box: one error with the whole message.
    #[test]
    fn a_wrapped_error_box_is_one_error() {
        let engine = std::sync::Arc::new(
            crate::patterns::Engine::builder()
                .build()
                .unwrap_or_else(|e| panic!("{e}")),
        );
        let mut p = crate::detect::Pipeline::new(engine, 40, 10)
            .with_cli(super::CliScreen::builtin("opencode"));
        let bar = "\x1b[38;5;168m┃\x1b[0m";
        let bytes = format!(
            "\x1b[2;3H{bar}\x1b[3;3H{bar}  Cannot connect to API: Unable to\
             \x1b[4;3H{bar}  connect. Is the computer able to\x1b[5;3H{bar}  access the url?\
             \x1b[6;3H{bar}\x1b[9;1H"
        );
        let mut got = p.feed(bytes.as_bytes());
        got.extend(p.finish());
        let texts: Vec<(&str, &str)> = got
            .iter()
            .map(|d| (d.pattern.as_str(), d.text.as_str()))
            .collect();
        assert_eq!(
            texts,
            [(
                "opencode.api-error",
                "Cannot connect to API: Unable to connect. Is the computer able to access the url?"
            )]
        );
    }

    /// `screen.code_blocks` is the table's choice: with it, a plain delegation line right below a
    /// coloured code row, at its indent, is code and fires nothing; without it (the built-in
    /// tables), it is prose.
    #[test]
    fn code_blocks_is_a_table_flag() {
        let engine = std::sync::Arc::new(
            crate::patterns::Engine::builder()
                .build()
                .unwrap_or_else(|e| panic!("{e}")),
        );
        let bytes =
            "  \x1b[32m# a comment\x1b[39m\r\n  Engineer Agent: plain in the block\r\n\r\nmore\r\n";
        let run = |yaml: &str| {
            let table = super::CliScreen::parse("x.yaml", yaml)
                .unwrap_or_else(|e| panic!("{e}"))
                .map(std::sync::Arc::new);
            let mut p = crate::detect::Pipeline::new(engine.clone(), 80, 10).with_cli(table);
            let mut got = p.feed(bytes.as_bytes());
            got.extend(p.finish());
            got.iter().filter(|d| d.category == "delegation").count()
        };
        assert_eq!(run("profile: x\nscreen:\n  code_blocks: true\n"), 0);
        assert_eq!(run("profile: x\nscreen:\n  reply_markers: []\n"), 1);
        assert!(!super::CliScreen::builtin("codex").is_some_and(|c| c.code_blocks));
    }

    #[test]
    fn bad_alert_colour_is_named() {
        let yaml = "profile: x\nscreen:\n  alert_colours: ['red']\n";
        let e = super::CliScreen::parse("x.yaml", yaml).expect_err("refused");
        assert!(e.to_string().contains("red"), "{e}");
    }
}

#[cfg(test)]
mod dump {
    /// A debugging aid: `MPM_DUMP=fixtures/captures/codex_100.raw,100,codex cargo test --lib
    /// cli_screen::dump -- --ignored --nocapture` prints the logical lines the reader makes of a
    /// capture, how the CLI's table classifies each, and the detections.
    #[test]
    #[ignore]
    fn dump_capture() {
        use crate::screen::{LineReader, Lines, ReadKind, Screen};
        let Ok(spec) = std::env::var("MPM_DUMP") else {
            return;
        };
        let mut it = spec.split(',');
        let path = it.next().unwrap_or_default();
        let cols: u16 = it.next().and_then(|c| c.parse().ok()).unwrap_or(100);
        let cli = it.next().and_then(super::CliScreen::builtin);
        let bytes = std::fs::read(path).unwrap_or_default();
        let mut s = Screen::new(cols, 30);
        let mut r = LineReader::new();
        let mut out = Lines::new();
        let mut osc = super::OscLexer::new();
        let mut at = 0;
        let mut chunks: Vec<(usize, Option<String>)> = osc
            .scan(&bytes)
            .into_iter()
            .map(|(e, o)| (e, Some(o)))
            .collect();
        chunks.push((bytes.len(), None));
        for (end, o) in chunks {
            s.feed(&bytes[at..end], &mut |s, h| r.read(s, h.into(), &mut out));
            at = end;
            for l in out.iter() {
                let kind = cli.as_ref().map(|c| format!("{:?}", c.classify(l)));
                println!("|{l}    <{}>", kind.unwrap_or_default());
            }
            out.clear();
            if let Some(o) = o {
                let ends = cli.as_ref().is_some_and(|c| c.osc_ends_turn(&o));
                println!("== OSC {o:?}{}", if ends { " TURN END" } else { "" });
            }
        }
        r.read(&mut s, ReadKind::All, &mut out);
        for l in out.iter() {
            println!("|{l}");
        }
    }
}

#[cfg(test)]
mod chunking {
    use std::sync::Arc;

    use crate::detect::Pipeline;
    use crate::events::Detection;

    fn run(profile: &str, cols: u16, bytes: &[u8], cuts: &[usize]) -> Vec<Detection> {
        let engine = Arc::new(
            crate::patterns::Engine::builder()
                .build()
                .unwrap_or_else(|e| panic!("{e}")),
        );
        let mut p = Pipeline::new(engine, cols, 30).with_cli(super::CliScreen::builtin(profile));
        let mut out = Vec::new();
        let mut at = 0;
        for &c in cuts.iter().chain(std::iter::once(&bytes.len())) {
            out.extend(p.feed(&bytes[at..c]));
            at = c;
        }
        out.extend(p.finish());
        out
    }

    /// The same bytes give the same final detections however they are chunked (the OSC turn ends
    /// are acted on at their place in the stream, not at a read's end).
    #[test]
    fn codex_and_gemini_captures_in_any_chunking() {
        for (profile, file) in [
            ("codex", "codex_100.raw"),
            ("gemini", "gemini_60.raw"),
            ("opencode", "opencode_60.raw"),
        ] {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/captures/");
            let Ok(bytes) = std::fs::read(format!("{path}{file}")) else {
                panic!("{file} missing");
            };
            let cols = if file.contains("_60") { 60 } else { 100 };
            let whole = run(profile, cols, &bytes, &[]);
            assert_eq!(whole.len(), 8, "{file}: {whole:#?}");
            // Deterministic pseudo-random cuts, and every 7th byte.
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            let mut cuts: Vec<usize> = (0..200)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % bytes.len() as u64) as usize
                })
                .collect();
            cuts.sort_unstable();
            cuts.dedup();
            assert_eq!(
                run(profile, cols, &bytes, &cuts),
                whole,
                "{file}: random cuts"
            );
            let small: Vec<usize> = (1..bytes.len()).step_by(7).collect();
            assert_eq!(
                run(profile, cols, &bytes, &small),
                whole,
                "{file}: 7-byte reads"
            );
        }
    }
}
