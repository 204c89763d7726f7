//! Text sources → engine → dedup → detections.
//!
//! [`Pipeline`] is pure (no I/O, no threads): the live session pushes raw PTY chunks into it, and
//! `mpm scan` runs the very same code over recorded input. Sources:
//! * **screen**: raw PTY bytes through the VT model ([`crate::screen`]), read into logical lines;
//! * **transcript** / **stream**: claude's JSONL lines ([`claude::parse_line`]), assistant markdown
//!   line by line, `Agent`/`Task` tool calls as delegations claude handles itself;
//! * **text**: plain lines.
//!
//! Decoration (`● `, `⎿ `, `▎ `, `❯ `, the indent, list markers) is left in the lines: the engine's
//! own normalisation removes it, so it is done once. Rows the user typed (`❯ …`, screen-reader
//! `you: …`) are skipped. Every detection goes through the session's shared [`Dedup`].
//!
//! Wiring a live session:
//! ```text
//! let mut pipe = Pipeline::new(engine.clone(), cols, rows);      // on the tap thread
//! for chunk in tap { for d in pipe.feed(&chunk) { emit(d) } }   // raw PTY output, any chunking
//! on SIGWINCH: for d in pipe.resize(cols, rows) { emit(d) }
//! at exit:     for d in pipe.finish() { emit(d) }
//! claude profile: let a = prepare_args(&user_args);             // spawn claude with a.args
//!   if let Some(id) = &a.session_id {
//!       let tail = transcript_tap(engine, pipe.dedup(), transcript_path(&home, &cwd, id),
//!                                 a.resumed, move |d| emit(d))?;   // tail.stop() at exit
//!   }
//! ```

pub(crate) mod claude;
pub(crate) mod cli_screen;
pub(crate) mod cli_transcript;
pub(crate) mod contain;
pub mod dedup;
pub mod dispatch;
pub(crate) mod finality;
pub(crate) mod identity;
pub(crate) mod split;

use std::sync::Arc;

pub use claude::{
    ClaudeArgs, Item, TranscriptSync, TranscriptTailer, prepare_args, transcript_path,
};
pub use cli_screen::CliScreen;
pub use contain::Contained;
pub use dedup::Dedup;
pub use finality::Finality;
pub use identity::Fingerprint;
pub use split::LineSplitter;

use crate::events::{Detection, TextSource};
use crate::screen::{LineReader, Lines, ReadKind, Screen};

/// Anything that turns one line into detections: the compiled pattern engine, or a stand-in in tests.
pub trait Matcher: Send + Sync {
    /// The detections in one logical line read from `source`.
    fn detect(&self, line: &str, source: TextSource) -> Vec<Detection>;
    /// A line drawn or written as code (a fenced block's line): only what a pattern explicitly
    /// allows in code (`in_code: true`). By default nothing.
    fn detect_code(&self, _line: &str, _source: TextSource) -> Vec<Detection> {
        Vec::new()
    }
}

impl Matcher for crate::patterns::Engine {
    fn detect(&self, line: &str, source: TextSource) -> Vec<Detection> {
        crate::patterns::Engine::detect(self, line, source)
    }
    fn detect_code(&self, line: &str, source: TextSource) -> Vec<Detection> {
        crate::patterns::Engine::detect_code(self, line, source)
    }
}

/// The pattern id of a delegation made from a claude `Agent`/`Task` tool call the engine could not
/// parse.
pub const AGENT_TOOL_PATTERN: &str = "claude.agent-tool";
/// The pattern id of an API error message the engine did not recognise.
pub const API_ERROR_PATTERN: &str = "claude.api-error";
/// The pattern id of a failed tool result the engine found no error line in.
pub const TOOL_ERROR_PATTERN: &str = "claude.tool-error";

/// A line reader that keeps a row that starts a detection, or a row of TUI chrome (the screen
/// reader's status lines right below its live line), as a line of its own (never joined to the
/// row above as a wrapped continuation).
fn line_reader(matcher: &Arc<dyn Matcher>) -> LineReader {
    let m = matcher.clone();
    LineReader::with_line_start(Box::new(move |row| {
        // A status row (the screen reader's mode line under a half-written row) is never a
        // continuation either.
        finality::is_chrome(row.trim()) || !m.detect(row, TextSource::Screen).is_empty()
    }))
    .with_code_blocks(true)
}

/// One session's text pipeline: screen model, line reader, engine and de-duplication.
pub struct Pipeline {
    matcher: Arc<dyn Matcher>,
    screen: Screen,
    reader: LineReader,
    dedup: Dedup,
    lines: Lines,
    /// Screen detections stay provisional here until their block is complete.
    finality: Finality,
    /// The CLI's screen knowledge (codex, gemini, ...); claude's is built in.
    cli: Option<Arc<CliScreen>>,
    /// OSC strings in the output, for a CLI whose turn's end shows in one.
    osc: cli_screen::OscLexer,
    /// claude's screen-reader renderer was seen (its flat status rows): it draws `**QA**:` as a
    /// plain `QA:`, so a plain label is read as the emphasis it lost ([`plain_label`]).
    screen_reader: bool,
    /// Lines read as code lately (hashes of their trimmed text, oldest first, at most
    /// [`CODE_MEMORY`]): a code block's plain line redrawn alone, after the coloured row that made
    /// it code left the screen, is still code.
    code_lines: CodeMemory,
}

/// A bounded set of line hashes, the oldest dropped first.
#[derive(Default)]
struct CodeMemory {
    set: std::collections::HashSet<u64>,
    order: std::collections::VecDeque<u64>,
}

impl CodeMemory {
    fn remember(&mut self, h: u64) {
        if self.set.insert(h) {
            if self.order.len() == CODE_MEMORY
                && let Some(old) = self.order.pop_front()
            {
                self.set.remove(&old);
            }
            self.order.push_back(h);
        }
    }

    fn knows(&self, text: &str) -> bool {
        !self.set.is_empty() && self.set.contains(&line_hash(text))
    }
}

/// How many code lines [`Pipeline`] remembers.
const CODE_MEMORY: usize = 512;

/// The hash [`Pipeline`] remembers a code line by.
fn line_hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.trim().hash(&mut h);
    h.finish()
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("cols", &self.screen.cols())
            .field("rows", &self.screen.rows())
            .finish_non_exhaustive()
    }
}

/// A claude tool-call row on screen: `● Agent(<description>)`.
fn agent_tool_row(line: &str) -> Option<&str> {
    let t = line.trim_start();
    let t = t.strip_prefix("● ").or_else(|| t.strip_prefix("⏺ "))?;
    let inner = t.strip_prefix("Agent(")?.strip_suffix(')')?;
    (!inner.trim().is_empty()).then_some(inner)
}

/// A line that starts with a short plain label and a colon (`QA: fuzz the cache`), as the same line
/// with the label in markdown emphasis (`**QA**: fuzz the cache`): what claude's screen-reader
/// renderer drew without its asterisks. The engine's `**X**:` pattern takes it only when `X` names
/// a registered agent, so ordinary labels (`Note: …`) stay prose.
fn plain_label(line: &str) -> Option<String> {
    let t = line.trim_start();
    let (label, rest) = t.split_once(':')?;
    let ok = !label.is_empty()
        && label.len() <= 40
        && label.starts_with(|c: char| c.is_alphabetic())
        && !label.ends_with(' ')
        && label.split(' ').count() <= 3
        && label
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        && rest.starts_with(' ')
        && !rest.trim().is_empty();
    ok.then(|| format!("**{label}**:{rest}"))
}

/// A row with what the user typed: claude's prompt `❯ …` (input box and echoed prompts) and the
/// screen reader's `you: …`. The user's words are not the agent's.
fn is_user_input_row(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with('❯') || t.starts_with("you: ")
}

impl Pipeline {
    /// A pipeline over the compiled engine with a fresh dedup memory and a `cols` x `rows` screen.
    pub fn new(engine: Arc<crate::patterns::Engine>, cols: u16, rows: u16) -> Pipeline {
        Pipeline::with_matcher(engine, cols, rows)
    }

    /// A pipeline over `matcher` with a fresh dedup memory and a `cols` x `rows` screen.
    pub fn with_matcher(matcher: Arc<dyn Matcher>, cols: u16, rows: u16) -> Pipeline {
        Pipeline {
            reader: line_reader(&matcher),
            matcher,
            screen: Screen::new(cols, rows),
            dedup: Dedup::new(),
            lines: Lines::new(),
            finality: Finality::new(),
            cli: None,
            osc: cli_screen::OscLexer::new(),
            screen_reader: false,
            code_lines: CodeMemory::default(),
        }
    }

    /// Read the screen with a CLI's knowledge (reply markers, chrome, error displays, turn ends;
    /// [`cli_screen`]). A streaming CLI's detections are final only at the turn's end.
    pub fn with_cli(mut self, cli: Option<Arc<CliScreen>>) -> Pipeline {
        // claude (no table) draws code blocks the `LineReader::with_code_blocks` way; another CLI
        // says so in its table (`screen.code_blocks`).
        let blocks = cli.as_ref().is_none_or(|c| c.code_blocks);
        self.reader = line_reader(&self.matcher).with_code_blocks(blocks);
        if cli.as_ref().is_some_and(|c| c.streaming) {
            self.finality = Finality::turn_mode();
        }
        self.reader
            .set_rewrap(cli.as_ref().and_then(|c| c.rewrap()));
        if let Some(c) = &cli {
            self.screen.set_alert_colours(c.alert_colours().to_vec());
        }
        self.cli = cli;
        self
    }

    /// Share `dedup` (e.g. with the transcript tailer's pipeline) instead of a private memory.
    pub fn with_dedup(mut self, dedup: Dedup) -> Pipeline {
        self.dedup = dedup;
        self
    }

    /// A handle on this pipeline's dedup memory, to share with another source.
    pub fn dedup(&self) -> Dedup {
        self.dedup.clone()
    }

    /// Raw PTY output (one read burst). Returns the detections that became final (see
    /// [`finality`]): the same bytes give the same final detections however they are chunked.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Detection> {
        let Some(cli) = self.cli.clone().filter(|c| c.watches_osc()) else {
            return self.feed_screen(bytes);
        };
        // The turn's end shows in an OSC string (a title, codex's state report): act on it in
        // stream order, after the bytes before it.
        let mut out = Vec::new();
        let mut at = 0;
        for (end, osc) in self.osc.scan(bytes) {
            if !cli.osc_ends_turn(&osc) {
                continue;
            }
            out.extend(self.feed_screen(&bytes[at..end]));
            at = end;
            out.extend(self.turn_end());
        }
        out.extend(self.feed_screen(&bytes[at..]));
        out
    }

    /// The turn is over (as the CLI says): what the screen shows is complete.
    fn turn_end(&mut self) -> Vec<Detection> {
        if !self.screen.in_sync() {
            self.reader
                .read(&mut self.screen, ReadKind::All, &mut self.lines);
        }
        let mut out = self.drain_lines();
        let rest = self.finality.finish();
        out.extend(self.dedup.filter(rest));
        out
    }

    fn feed_screen(&mut self, bytes: &[u8]) -> Vec<Detection> {
        if bytes.is_empty() {
            return Vec::new();
        }
        let (reader, lines) = (&mut self.reader, &mut self.lines);
        self.screen
            .feed(bytes, &mut |s, h| reader.read(s, h.into(), lines));
        if !self.screen.in_sync() {
            self.reader
                .read(&mut self.screen, ReadKind::FeedEnd, &mut self.lines);
        }
        self.drain_lines()
    }

    /// The terminal was resized: read every row, then resize the model.
    pub fn resize(&mut self, cols: u16, rows: u16) -> Vec<Detection> {
        self.reader
            .read(&mut self.screen, ReadKind::All, &mut self.lines);
        self.screen.resize(cols, rows);
        self.drain_lines()
    }

    /// The stream ended: read every row; every provisional detection is final.
    pub fn finish(&mut self) -> Vec<Detection> {
        self.reader
            .read(&mut self.screen, ReadKind::All, &mut self.lines);
        let mut out = self.drain_lines();
        let rest = self.finality.finish();
        out.extend(self.dedup.filter(rest));
        out
    }

    /// The output went quiet ([`crate::pty::QUIET`] without a byte): the agent's turn is over as far
    /// as the screen can tell, so what it shows is complete. Reads every row, like [`Self::finish`],
    /// and makes the pending detections final; the pipeline goes on with later output. For claude
    /// the hooks and the transcript decide first; this is the turn end of CLIs without them.
    pub fn quiet(&mut self) -> Vec<Detection> {
        self.finish()
    }

    /// The screen's detections that are still provisional (their block is not complete yet).
    pub fn provisional(&self) -> Vec<Detection> {
        self.finality.pending().cloned().collect()
    }

    /// One line of text from `source` (no screen involved).
    pub fn feed_line(&mut self, line: &str, source: TextSource) -> Vec<Detection> {
        let found = self.match_line(line, source);
        self.dedup.filter(found)
    }

    /// Markdown (assistant text): each line outside fenced code blocks; the lines inside only for
    /// the patterns that ask for code (`in_code: true`).
    pub fn feed_markdown(&mut self, text: &str, source: TextSource) -> Vec<Detection> {
        let mut out = Vec::new();
        for (l, code) in claude::markdown_lines_with_code(text) {
            if code {
                let found = self.matcher.detect_code(l, source);
                out.extend(self.dedup.filter(found));
            } else {
                out.extend(self.feed_line(l, source));
            }
        }
        out
    }

    /// One item of a transcript or stream-json line.
    pub fn feed_item(&mut self, item: &Item, source: TextSource) -> Vec<Detection> {
        match item {
            Item::Text(t) => self.feed_markdown(t, source),
            Item::AgentTool {
                description,
                subagent_type,
            } => {
                let d = self.agent_tool(description, subagent_type.as_deref(), description, source);
                self.dedup.filter(vec![d])
            }
            Item::ToolError(t) => {
                // Only the error lines of a tool's output: its other lines are not the agent's
                // words (a TODO printed by a command is no ticket).
                let mut found: Vec<Detection> = Vec::new();
                for l in t.lines() {
                    found.extend(
                        self.matcher
                            .detect(l, source)
                            .into_iter()
                            .filter(|d| d.category == "error"),
                    );
                }
                if found.is_empty() {
                    // The last non-empty line is where a failure says what went wrong.
                    let last = t.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
                    found.push(Detection {
                        category: "error".into(),
                        pattern: TOOL_ERROR_PATTERN.into(),
                        text: last.trim().to_string(),
                        source,
                        agent: None,
                        task: None,
                        ticket_type: None,
                        title: None,
                        priority: None,
                        handled_by_agent: false,
                        is_final: true,
                    });
                }
                self.dedup.filter(found)
            }
            Item::ApiError(t) => {
                let mut found = Vec::new();
                for l in t.lines() {
                    found.extend(self.match_line(l, source));
                }
                if !found.iter().any(|d| d.category == "error") {
                    found.push(Detection {
                        category: "error".into(),
                        pattern: API_ERROR_PATTERN.into(),
                        text: t.lines().next().unwrap_or("").trim().to_string(),
                        source,
                        agent: None,
                        task: None,
                        ticket_type: None,
                        title: None,
                        priority: None,
                        handled_by_agent: false,
                        is_final: true,
                    });
                }
                self.dedup.filter(found)
            }
        }
    }

    /// One transcript or stream-json line.
    pub fn feed_json_line(&mut self, line: &str, source: TextSource) -> Vec<Detection> {
        let mut out = Vec::new();
        for item in claude::parse_line(line) {
            out.extend(self.feed_item(&item, source));
        }
        out
    }

    /// A delegation claude runs itself: the engine parses `Task(<description>)` for agent and task;
    /// failing that, the sub-agent type is the agent and the description the task.
    fn agent_tool(
        &self,
        description: &str,
        subagent_type: Option<&str>,
        text: &str,
        source: TextSource,
    ) -> Detection {
        let probe = format!("Task({})", description.trim());
        let parsed = self
            .matcher
            .detect(&probe, source)
            .into_iter()
            .find(|d| d.category == "delegation");
        let mut d = parsed.unwrap_or_else(|| Detection {
            category: "delegation".into(),
            pattern: AGENT_TOOL_PATTERN.into(),
            text: String::new(),
            source,
            agent: Some(subagent_type.unwrap_or("general-purpose").to_string()),
            task: Some(description.trim().to_string()),
            ticket_type: None,
            title: None,
            priority: None,
            handled_by_agent: true,
            is_final: true,
        });
        d.text = crate::patterns::normalize_line(text).to_string();
        d.handled_by_agent = true;
        d
    }

    fn match_line(&self, line: &str, source: TextSource) -> Vec<Detection> {
        if source == TextSource::Screen
            && let Some(cli) = &self.cli
        {
            let text = match cli.classify(line) {
                cli_screen::RowKind::Text(t) => t,
                _ => return Vec::new(),
            };
            if let Some(e) = cli.error(text, source) {
                return vec![e];
            }
            return self.matcher.detect(text, source);
        }
        if source == TextSource::Screen {
            if is_user_input_row(line) {
                return Vec::new();
            }
            if let Some(desc) = agent_tool_row(line) {
                return vec![self.agent_tool(desc, None, line, source)];
            }
            let found = self.matcher.detect(line, source);
            if found.is_empty()
                && self.screen_reader
                && let Some(marked) = plain_label(line)
            {
                return self
                    .matcher
                    .detect(&marked, source)
                    .into_iter()
                    .filter(|d| d.category == "delegation")
                    .map(|mut d| {
                        d.text = crate::patterns::normalize_line(line).to_string();
                        d
                    })
                    .collect();
            }
            return found;
        }
        self.matcher.detect(line, source)
    }

    fn drain_lines(&mut self) -> Vec<Detection> {
        let mut out = Vec::new();
        let mut lines = std::mem::take(&mut self.lines);
        let mut all = lines.lines().peekable();
        while let Some(l) = all.next() {
            if let Some(cli) = &self.cli {
                // The CLI's error display that only its colour tells from the user's rows.
                if let Some(mut e) = l.alert.then(|| cli.alert_error(l.text, TextSource::Screen)) {
                    // A long message wraps over rows of the box of its own: one error.
                    while let Some(d) = e.as_mut() {
                        let Some(more) = all
                            .peek()
                            .filter(|n| n.alert)
                            .and_then(|n| cli.alert_error(n.text, TextSource::Screen))
                        else {
                            break;
                        };
                        d.text.push(' ');
                        d.text.push_str(&more.text);
                        all.next();
                    }
                    let info = finality::LineInfo {
                        text: l.text,
                        cut: l.cut,
                    };
                    let done = self.finality.line(info, e.into_iter().collect());
                    out.extend(self.dedup.filter(done));
                    continue;
                }
                match cli.classify(l.text) {
                    cli_screen::RowKind::TurnEnd => {
                        let rest = self.finality.finish();
                        out.extend(self.dedup.filter(rest));
                        continue;
                    }
                    // Not the agent's words, and no new text below a pending detection.
                    cli_screen::RowKind::User | cli_screen::RowKind::Chrome => continue,
                    cli_screen::RowKind::Text(_) => {}
                }
            }
            if !self.screen_reader && self.cli.is_none() {
                self.screen_reader = finality::is_screen_reader_status(l.text.trim());
            }
            // A line drawn as code is a fenced block's line: only patterns that ask for code. So is
            // a line read as code before, redrawn without the rows that showed it.
            let code = if l.code {
                self.code_lines.remember(line_hash(l.text));
                true
            } else {
                self.code_lines.knows(l.text)
            };
            let found = if code {
                self.matcher.detect_code(l.text, TextSource::Screen)
            } else {
                self.match_line(l.text, TextSource::Screen)
            };
            let info = finality::LineInfo {
                text: l.text,
                cut: l.cut,
            };
            let done = self.finality.line(info, found);
            if !done.is_empty() {
                out.extend(self.dedup.filter(done));
            }
        }
        drop(all);
        lines.clear();
        self.lines = lines;
        out
    }
}

/// Follow claude's transcript at `path` on a thread, feeding each line through a pipeline that
/// shares `dedup` with the screen pipeline; `on_detection` gets each new detection (on the tailer
/// thread). With `from_end` (a resumed session), lines already in the file are skipped.
pub fn transcript_tap<F>(
    engine: Arc<crate::patterns::Engine>,
    dedup: Dedup,
    path: std::path::PathBuf,
    from_end: bool,
    mut on_detection: F,
) -> std::io::Result<TranscriptTailer>
where
    F: FnMut(Detection) + Send + 'static,
{
    // The transcript needs no screen: a 1x1 model costs nothing.
    let mut p = Pipeline::new(engine, 1, 1).with_dedup(dedup);
    TranscriptTailer::spawn(path, from_end, move |line| {
        for d in p.feed_json_line(line, TextSource::Transcript) {
            on_detection(d);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stand-in engine: `TODO: x` tickets and `Task(A: t)` / `A Agent: t` delegations.
    struct Stub;
    impl Matcher for Stub {
        fn detect(&self, line: &str, source: TextSource) -> Vec<Detection> {
            let t = line.trim_start_matches([' ', '●', '▎', '-']).trim_start();
            let mk = |cat: &str, agent: Option<&str>, rest: &str| Detection {
                category: cat.into(),
                pattern: "stub".into(),
                text: t.into(),
                source,
                agent: agent.map(|a| a.to_lowercase()),
                task: agent.map(|_| rest.trim().to_string()),
                ticket_type: (cat == "ticket").then(|| "TODO".into()),
                title: (cat == "ticket").then(|| rest.trim().to_string()),
                priority: None,
                handled_by_agent: false,
                is_final: true,
            };
            if let Some(r) = t.strip_prefix("TODO:") {
                return vec![mk("ticket", None, r)];
            }
            if let Some(inner) = t.strip_prefix("Task(").and_then(|r| r.strip_suffix(')'))
                && let Some((a, task)) = inner.split_once(':')
            {
                return vec![mk("delegation", Some(a), task)];
            }
            if let Some((a, task)) = t.split_once(" Agent:") {
                return vec![mk("delegation", Some(a), task)];
            }
            Vec::new()
        }
    }

    fn pipe() -> Pipeline {
        Pipeline::with_matcher(Arc::new(Stub), 100, 30)
    }

    #[test]
    fn screen_and_transcript_share_dedup() {
        let mut p = pipe();
        let mut d = p.feed(b"  QA Agent: test it\r\n");
        d.extend(p.finish());
        assert_eq!(d.len(), 1);
        let mut t = Pipeline::with_matcher(Arc::new(Stub), 1, 1).with_dedup(p.dedup());
        assert!(
            t.feed_markdown("QA Agent: test it.", TextSource::Transcript)
                .is_empty()
        );
    }

    #[test]
    fn agent_tool_row_is_handled_by_agent() {
        let mut p = pipe();
        let mut d = p.feed("\u{25cf} Agent(Engineer: implement fib)\r\n".as_bytes());
        d.extend(p.finish());
        assert_eq!(d.len(), 1);
        assert!(d[0].handled_by_agent);
        assert_eq!(d[0].agent.as_deref(), Some("engineer"));
        assert_eq!(d[0].task.as_deref(), Some("implement fib"));
    }

    #[test]
    fn transcript_tool_use_and_api_error() {
        let mut p = pipe();
        let line = r#"{"type":"assistant","message":{"content":[{"type":"tool_use","name":"Agent","input":{"description":"Search the code","subagent_type":"Explore"}}]}}"#;
        let d = p.feed_json_line(line, TextSource::Transcript);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].agent.as_deref(), Some("Explore"));
        assert!(d[0].handled_by_agent);
        let e = r#"{"type":"assistant","isApiErrorMessage":true,"message":{"content":[{"type":"text","text":"API Error: 400 bad"}]}}"#;
        let d = p.feed_json_line(e, TextSource::Transcript);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].category, "error");
        assert_eq!(d[0].pattern, API_ERROR_PATTERN);
    }

    #[test]
    fn failed_tool_results_are_transcript_errors() {
        let engine = Arc::new(
            crate::patterns::Engine::builder()
                .build()
                .unwrap_or_else(|e| panic!("{e}")),
        );
        let mut p = Pipeline::new(engine, 1, 1);
        let line = r#"{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t","is_error":true,"content":"Exit code 1\nTODO: not a ticket\nTraceback (most recent call last):\n  File \"f.py\", line 3, in <module>\nModuleNotFoundError: No module named 'fibonacci'"}]}}"#;
        let d = p.feed_json_line(line, TextSource::Transcript);
        assert!(!d.is_empty());
        assert!(
            d.iter()
                .all(|d| d.category == "error" && d.source == TextSource::Transcript),
            "{d:?}"
        );
        assert!(
            d.iter()
                .any(|d| d.text.contains("No module named 'fibonacci'")),
            "{d:?}"
        );
        // An error result the packs do not know is still an error, by its last line.
        let odd = r#"{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"u","is_error":true,"content":"permission denied while writing /etc/x"}]}}"#;
        let d = p.feed_json_line(odd, TextSource::Transcript);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].pattern, TOOL_ERROR_PATTERN);
        assert_eq!(d[0].text, "permission denied while writing /etc/x");
    }

    #[test]
    fn transcript_tap_shares_dedup_with_the_screen() {
        use std::io::Write;
        let engine = Arc::new(
            crate::patterns::Engine::builder()
                .build()
                .unwrap_or_else(|e| panic!("{e}")),
        );
        let mut screen = Pipeline::new(engine.clone(), 100, 30);
        let mut d = screen.feed(b"  \x1b[1mEngineer Agent\x1b[22m: implement fib\r\n");
        d.extend(screen.finish());
        assert_eq!(d.len(), 1);
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("s.jsonl");
        let (tx, rx) = crossbeam_channel::unbounded();
        let tap = transcript_tap(engine, screen.dedup(), path.clone(), false, move |d| {
            let _ = tx.send(d);
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let mut f = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}"));
        let line = r#"{"type":"assistant","message":{"content":[{"type":"text","text":"**Engineer Agent**: implement fib\n\nTODO: add tests"}]}}"#;
        writeln!(f, "{line}").unwrap_or_else(|e| panic!("{e}"));
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{e}"));
        tap.stop();
        // The delegation was already seen on screen: only the ticket is new.
        assert_eq!(got.category, "ticket");
        assert_eq!(got.source, TextSource::Transcript);
        assert!(rx.try_recv().is_err());
    }

    /// claude's screen-reader renderer draws `**QA**: …` as a plain `QA: …` (screenreader_80_cache):
    /// once its flat status rows show the renderer, a plain label that names a registered agent is
    /// a delegation; other labels stay prose, and the other renderers (which keep bold) never read a
    /// plain label as one.
    #[test]
    fn screen_reader_plain_registered_label_is_a_delegation() {
        let engine = Arc::new(
            crate::patterns::Engine::builder()
                .build()
                .unwrap_or_else(|e| panic!("{e}")),
        );
        let reply = "QA: fuzz the cache against a dict model\r\nNote: this is prose\r\nSummary: all done\r\n\r\n";
        let status = "accept edits on (shift+tab to cycle)  \u{b7}  esc to interrupt\r\neffort: medium \u{b7} /effort\r\n";
        let tasks = |input: String| {
            let mut p = Pipeline::new(engine.clone(), 80, 24);
            let mut d = p.feed(input.as_bytes());
            d.extend(p.finish());
            d.into_iter()
                .map(|d| (d.category, d.agent, d.task))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            tasks(format!("{status}{reply}")),
            [(
                "delegation".to_string(),
                Some("qa".to_string()),
                Some("fuzz the cache against a dict model".to_string())
            )]
        );
        // Without the screen reader's status rows (a TUI renderer keeps bold): nothing.
        assert_eq!(tasks(reply.to_string()), []);
        assert_eq!(plain_label("QA: x").as_deref(), Some("**QA**: x"));
        for no in [
            "QA:x",
            "QA:",
            "**QA**: x",
            "a b c d: x",
            "see http://x: y",
            ": x",
        ] {
            assert_eq!(plain_label(no), None, "{no}");
        }
    }

    #[test]
    fn pipeline_can_move_to_a_tap_thread() {
        fn send<T: Send>() {}
        send::<Pipeline>();
        send::<Dedup>();
    }

    #[test]
    fn user_input_rows_are_not_the_agents_words() {
        let mut p = pipe();
        let mut d =
            p.feed("\u{276f} TODO: typed by the user\r\nyou: TODO: also typed\r\n".as_bytes());
        d.extend(p.finish());
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn resize_reflow_gives_one_detection() {
        let mut p = pipe();
        let mut d = p.feed(
            b"  QA Agent: check the whole release candidate build and report the results\r\n",
        );
        d.extend(p.resize(40, 10));
        // The TUI repaints the paragraph wrapped at the new width.
        d.extend(p.feed(
            b"\x1b[2J\x1b[H  QA Agent: check the whole release\r\n  candidate build and report the results\r\n",
        ));
        d.extend(p.finish());
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(
            d[0].task.as_deref(),
            Some("check the whole release candidate build and report the results")
        );
    }

    #[test]
    fn code_lines_on_screen_are_not_detections_unless_a_pattern_asks() {
        struct CodeToo;
        impl Matcher for CodeToo {
            fn detect(&self, line: &str, source: TextSource) -> Vec<Detection> {
                Stub.detect(line, source)
            }
            fn detect_code(&self, line: &str, source: TextSource) -> Vec<Detection> {
                Stub.detect(line, source)
                    .into_iter()
                    .filter(|d| d.category == "ticket")
                    .collect()
            }
        }
        let input = "  \x1b[38;5;153mQA Agent: in a bare block\x1b[39m\r\n  \x1b[38;5;153mTODO: in the block\x1b[39m\r\n\r\n  QA Agent: in prose\r\n";
        let mut p = pipe();
        let mut d = p.feed(input.as_bytes());
        d.extend(p.finish());
        let tasks: Vec<_> = d.iter().filter_map(|d| d.task.clone()).collect();
        assert_eq!(tasks, ["in prose"], "{d:?}");
        // A matcher whose ticket pattern asks for code gets the block's ticket, not its delegation.
        let mut p = Pipeline::with_matcher(Arc::new(CodeToo), 100, 30);
        let mut d = p.feed(input.as_bytes());
        d.extend(p.finish());
        let got: Vec<_> = d
            .iter()
            .map(|d| (d.category.as_str(), d.task.clone().or(d.title.clone())))
            .collect();
        assert_eq!(
            got,
            [
                ("ticket", Some("in the block".to_string())),
                ("delegation", Some("in prose".to_string()))
            ]
        );
        // Markdown: fenced lines go to the code matcher too.
        let mut p = Pipeline::with_matcher(Arc::new(CodeToo), 1, 1);
        let d = p.feed_markdown(
            "```\nQA Agent: fenced\nTODO: fenced ticket\n```\nQA Agent: prose",
            TextSource::Transcript,
        );
        let cats: Vec<_> = d.iter().map(|d| d.category.as_str()).collect();
        assert_eq!(cats, ["ticket", "delegation"], "{d:?}");
    }

    #[test]
    fn redraws_give_one_detection() {
        let mut p = pipe();
        let mut d = Vec::new();
        for _ in 0..3 {
            d.extend(p.feed(b"\x1b[H\x1b[2J  TODO: x\r\n  other\r\n"));
        }
        d.extend(p.finish());
        assert_eq!(d.len(), 1);
    }
}
