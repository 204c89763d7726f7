//! The compiled engine: literal prefilters in front of multi-pattern regexes.
//!
//! Cost model, per line:
//! 1. [`normalize_line`]: a few byte checks at the line start.
//! 2. The gates, Aho-Corasick automata over the patterns' literals: the prefix literals of every
//!    `^`-anchored pattern, run anchored at the content start (dies within a byte or two on most
//!    lines); `literals:` and the prefix literals of unanchored patterns, searched anywhere (the
//!    crate's own prefilters, memchr and Teddy, skip most of the line).
//! 3. Only when a gate hits: one search of a multi-pattern regex (a lazy DFA over all patterns,
//!    forward then reverse) that yields the pattern id and span — anchored at the start for the
//!    `^` set; then, when the pattern fills a detection field, the captures of that one pattern
//!    from its own regex over the match, so the capture cost does not grow with the pack.
//!
//! A line with no literal hit costs steps 1–2. Word boundaries `\b`/`\B` are ASCII (rewritten in the
//! syntax tree) so the regexes stay on the lazy DFA; `\w`, `.` and classes stay Unicode. Literals are
//! case-sensitive.
//!
//! Memory is bounded whatever the pattern files say ([`limits`](super::limits)): the number and
//! size of patterns, the compiled size of each and of all together, and the lazy DFA's cache per
//! searching thread (the lazy DFA never gives up for a slower engine whose memory would grow with
//! the number of patterns times their states).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, Anchored as AcAnchored, Input as AcInput, MatchKind, StartKind};
use regex_automata::hybrid::regex::{Cache as DfaCache, Regex as DfaRegex};
use regex_automata::meta;
use regex_automata::util::pool::Pool;
use regex_automata::{Anchored, Input};
use regex_syntax::hir::literal::{ExtractKind, Extractor};
use regex_syntax::hir::{Hir, HirKind, Look};

use super::agents::AgentResolver;
use super::file::MatchExample;
use super::limits;
use super::normalize::normalize_line;
use super::{PatternError, PatternInfo, Prefilter, Resolved};
use crate::config::AgentConfig;
use crate::events::{Detection, TextSource};

/// Only the first 64 KiB of a line are examined (cut at a character boundary): a 50 MB line costs
/// one 64 KiB scan and no copy beyond it. Real delegation, ticket and error lines are far shorter.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// How many regex searches one line may cost at most in the floating set (a rejected
/// `require_known_agent` match restarts the search one character later).
const MAX_SEARCHES_PER_LINE: usize = 16;

/// Start-gate literals up to this many are compiled to an Aho-Corasick DFA (a table lookup per
/// byte; a few thousand literals make a DFA of a few MB); past that the builder picks.
const MAX_START_DFA_LITERALS: usize = 2000;
/// Prefix literals shorter than this are useless as a prefilter (`[A-Z]` gives 26 one-byte ones).
const MIN_PREFIX_LITERAL: usize = 2;
/// At most this many auto-extracted prefix literals per pattern.
const MAX_PREFIX_LITERALS: usize = 64;

/// The compiled pattern set. Immutable, `Send + Sync`; share it as `Arc<Engine>`.
#[derive(Debug)]
pub struct Engine {
    /// Every merged pattern (active and disabled), in priority order.
    infos: Vec<PatternInfo>,
    /// Patterns anchored at the line start (`^...`): one multi-pattern regex searched anchored at the
    /// content start.
    anchored: Set,
    /// The other patterns: one multi-pattern regex searched over the line.
    floating: Set,
    resolver: AgentResolver,
    /// Examples kept for `check`, per `infos` index.
    examples: Vec<(Resolved, bool)>,
    /// The active patterns with `in_code: true` alone (usually none).
    code: Option<Box<Engine>>,
}

/// The lazy DFA caches of one multi-pattern regex, one per searching thread at a time.
type CachePool = Pool<DfaCache, Box<dyn Fn() -> DfaCache + Send + Sync>>;

/// One multi-pattern regex and its search caches.
struct SetRegex {
    regex: std::sync::Arc<DfaRegex>,
    caches: CachePool,
}

impl std::fmt::Debug for SetRegex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetRegex")
            .field("patterns", &self.regex.pattern_len())
            .finish_non_exhaustive()
    }
}

impl SetRegex {
    /// The leftmost-first match in `input`. The lazy DFA is configured never to give up and no
    /// pattern can make it quit (word boundaries are ASCII), so an error is not expected; it reads
    /// as no match.
    fn search(&self, input: &Input<'_>) -> Option<regex_automata::Match> {
        let mut cache = self.caches.get();
        match self.regex.try_search(&mut cache, input) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "pattern search stopped");
                None
            }
        }
    }
}

/// One multi-pattern regex and the prefilters that admit a line to it.
#[derive(Debug, Default)]
struct Set {
    regex: Option<SetRegex>,
    /// Per regex pattern id.
    members: Vec<Member>,
    /// The prefix literals of its `^` members, run anchored at the content start.
    start: Option<AhoCorasick>,
    /// `literals:` and the prefix literals of unanchored members, searched anywhere in the line.
    anywhere: Option<AhoCorasick>,
    /// Some member has no usable literal: every line goes to `regex`.
    always: bool,
}

#[derive(Debug)]
struct Member {
    info: usize,
    hir: Hir,
    /// Named groups; empty means no capture pass at all.
    names: Vec<String>,
    /// Some named group fills a detection field ([`FIELDS`]): without one (most error patterns)
    /// a detection needs no capture pass, only `check` and `scan --captures` do.
    fills_fields: bool,
    /// This pattern alone, built on first use, for its captures inside a match the set found
    /// (a small automaton, so the capture pass does not grow with the pack).
    captures: OnceLock<Option<CaptureRe>>,
}

/// The detection fields a capture group can fill, in [`CaptureRe::fields`] order.
const FIELDS: [&str; 5] = ["agent", "task", "ticket_type", "title", "priority"];

/// One pattern's own regex for its capture pass, with the group index of each detection field
/// resolved once.
#[derive(Debug)]
struct CaptureRe {
    re: meta::Regex,
    /// Group index per [`FIELDS`] entry.
    fields: [Option<usize>; FIELDS.len()],
}

impl CaptureRe {
    fn new(hir: &Hir) -> Option<CaptureRe> {
        let re = capture_regex(hir)?;
        let info = re.group_info();
        let pid = regex_automata::PatternID::ZERO;
        let fields = FIELDS.map(|name| info.to_index(pid, name));
        Some(CaptureRe { re, fields })
    }

    /// Search the match the set found (anchored at its start) and call `each(group index, text)`
    /// for every group that took part in it. Look-around still sees the whole line.
    fn each_group<'c>(
        &self,
        content: &'c str,
        span: Range<usize>,
        mut each: impl FnMut(usize, &'c str),
    ) {
        let input = Input::new(content).span(span).anchored(Anchored::Yes);
        let mut caps = self.re.create_captures();
        self.re.search_captures(&input, &mut caps);
        if !caps.is_match() {
            return;
        }
        for group in 0..caps.group_len() {
            if let Some(s) = caps.get_group(group) {
                each(group, &content[s.range()]);
            }
        }
    }
}

/// One match with its captures, for examples and for building a detection.
struct Found {
    info: usize,
    start: usize,
    detection: Detection,
    captures: BTreeMap<String, String>,
}

impl Set {
    /// Does a gate admit the line to this set?
    fn admits(&self, content: &str) -> bool {
        self.regex.is_some()
            && (self.always
                || self
                    .start
                    .as_ref()
                    .is_some_and(|ac| ac.is_match(AcInput::new(content).anchored(AcAnchored::Yes)))
                || self
                    .anywhere
                    .as_ref()
                    .is_some_and(|ac| ac.is_match(content)))
    }

    fn build(hirs: &[Hir], members: Vec<Member>, lits: Lits) -> Result<Set, PatternError> {
        let regex = if hirs.is_empty() {
            None
        } else {
            let regex =
                std::sync::Arc::new(limits::set_regex(hirs).map_err(|e| {
                    PatternError::Compile(format!("compiling the pattern set: {e}"))
                })?);
            let r = regex.clone();
            let create: Box<dyn Fn() -> DfaCache + Send + Sync> =
                Box::new(move || r.create_cache());
            Some(SetRegex {
                regex,
                caches: Pool::new(create),
            })
        };
        Ok(Set {
            regex,
            members,
            start: build_ac(lits.start, true)?,
            anywhere: build_ac(lits.anywhere, false)?,
            always: lits.always,
        })
    }
}

/// Literals collected for one set while compiling.
#[derive(Default)]
struct Lits {
    start: Vec<Vec<u8>>,
    anywhere: Vec<Vec<u8>>,
    always: bool,
}

impl Engine {
    /// A builder with the built-in packs and the built-in agent registry.
    pub fn builder() -> super::EngineBuilder {
        super::EngineBuilder::default()
    }

    /// Every merged pattern, active and disabled, in priority order.
    pub fn patterns(&self) -> &[PatternInfo] {
        &self.infos
    }

    /// The agent-name resolver the engine uses (registry names and aliases), for callers that get an
    /// agent name from elsewhere (a transcript `tool_use` block, a socket request).
    pub fn resolver(&self) -> &AgentResolver {
        &self.resolver
    }

    /// All detections in one logical line of already de-styled text: at most one per category (the
    /// leftmost match; at one position the earlier pattern wins). Pure; no I/O; allocates only when
    /// a prefilter hits. Only the first [`MAX_LINE_BYTES`] are examined.
    pub fn detect(&self, line: &str, source: TextSource) -> Vec<Detection> {
        let mut out = Vec::new();
        self.find_each(line, source, false, |f| out.push(f.detection));
        out
    }

    /// [`Engine::detect`] for a line drawn or written as code (a fenced block's line): only the
    /// patterns with `in_code: true` may fire, so a delegation-like line in a code block is not a
    /// detection unless a pattern asks for it. Costs nothing when no pattern does.
    pub fn detect_code(&self, line: &str, source: TextSource) -> Vec<Detection> {
        match &self.code {
            Some(code) => code.detect(line, source),
            None => Vec::new(),
        }
    }

    /// [`Engine::detect`] over bytes that may not be UTF-8 (invalid sequences read as U+FFFD). Only
    /// the first [`MAX_LINE_BYTES`] are decoded.
    pub fn detect_bytes(&self, line: &[u8], source: TextSource) -> Vec<Detection> {
        let capped = &line[..line.len().min(MAX_LINE_BYTES)];
        self.detect(&String::from_utf8_lossy(capped), source)
    }

    /// Every detection in a block of text, line by line (`\n`-separated; a trailing `\r` is
    /// ignored): `(byte range of the line in text, detection)`, in order; [`Engine::detect`] on
    /// each line. For transcripts, `-p` output and plain text.
    pub fn detect_text(&self, text: &str, source: TextSource) -> Vec<(Range<usize>, Detection)> {
        let mut out = Vec::new();
        let mut start = 0;
        for line in text.split('\n') {
            let end = start + line.len();
            self.find_each(line, source, false, |f| out.push((start..end, f.detection)));
            start = end + 1;
        }
        out
    }

    fn find(&self, line: &str, source: TextSource, want_captures: bool) -> Vec<Found> {
        let mut out = Vec::new();
        self.find_each(line, source, want_captures, |f| out.push(f));
        out
    }

    /// Every match in `line` (normalised and capped here) to `sink`, leftmost first, at most one
    /// per category.
    fn find_each(
        &self,
        line: &str,
        source: TextSource,
        want_captures: bool,
        mut sink: impl FnMut(Found),
    ) {
        let content = normalize_line(cap(line));
        if content.is_empty() {
            return;
        }
        let mut anchored = None;
        if let Some(set) = self
            .anchored
            .regex
            .as_ref()
            .filter(|_| self.anchored.admits(content))
        {
            let input = Input::new(content).anchored(Anchored::Yes);
            if let Some(m) = set.search(&input) {
                // require_known_agent members come last in this set, so a rejected match hides no
                // other anchored pattern.
                let member = &self.anchored.members[m.pattern().as_usize()];
                anchored = self.found(content, source, member, m.range(), want_captures);
            }
        }
        let mut out: Vec<Found> = Vec::new();
        if let Some(set) = self
            .floating
            .regex
            .as_ref()
            .filter(|_| self.floating.admits(content))
        {
            let mut at = 0;
            for _ in 0..MAX_SEARCHES_PER_LINE {
                if at > content.len() {
                    break;
                }
                let Some(m) = set.search(&Input::new(content).span(at..content.len())) else {
                    break;
                };
                let member = &self.floating.members[m.pattern().as_usize()];
                match self.found(content, source, member, m.range(), want_captures) {
                    Some(f) => {
                        out.push(f);
                        at = if m.is_empty() {
                            next_boundary(content, m.end())
                        } else {
                            m.end()
                        };
                    }
                    // Rejected: try again one character later.
                    None => at = next_boundary(content, m.start()),
                }
            }
        }
        if out.is_empty() {
            if let Some(f) = anchored {
                sink(f);
            }
            return;
        }
        out.extend(anchored);
        // One per category: the leftmost, then the earlier pattern.
        out.sort_by_key(|f| (f.start, f.info));
        let mut seen: Vec<&str> = Vec::new();
        for f in out {
            let category = self.infos[f.info].category.as_str();
            if !seen.contains(&category) {
                seen.push(category);
                sink(f);
            }
        }
    }

    /// The detection for one match, or `None` when the pattern's conditions reject it.
    fn found(
        &self,
        content: &str,
        source: TextSource,
        member: &Member,
        span: Range<usize>,
        want_captures: bool,
    ) -> Option<Found> {
        let info = &self.infos[member.info];
        let mut captures = BTreeMap::new();
        let mut fields: [Option<&str>; FIELDS.len()] = [None; FIELDS.len()];
        if (member.fills_fields || want_captures && !member.names.is_empty())
            && let Some(cre) = member.captures.get_or_init(|| CaptureRe::new(&member.hir))
        {
            let names: Vec<Option<&str>> = if want_captures {
                cre.re
                    .group_info()
                    .pattern_names(regex_automata::PatternID::ZERO)
                    .collect()
            } else {
                Vec::new()
            };
            cre.each_group(content, span.clone(), |group, text| {
                let text = text.trim();
                if let Some(f) = cre.fields.iter().position(|&g| g == Some(group))
                    && !text.is_empty()
                {
                    fields[f] = Some(text);
                }
                if let Some(Some(name)) = names.get(group) {
                    captures.insert((*name).to_string(), text.to_string());
                }
            });
        }
        let [agent, task, ticket_type, title, priority] = fields;
        let agent = match agent {
            Some(s) => match self.resolver.resolve(s) {
                Some(name) => Some(name.to_string()),
                None if info.require_known_agent => return None,
                None => Some(s.to_string()),
            },
            None if info.require_known_agent => return None,
            None => None,
        };
        let detection = Detection {
            category: info.category.clone(),
            pattern: info.id.clone(),
            text: content.to_string(),
            source,
            agent,
            task: task.map(str::to_string),
            ticket_type: ticket_type.map(str::to_string),
            title: title.map(str::to_string),
            priority: priority.map(str::to_string),
            handled_by_agent: info.handled_by_agent,
            is_final: true,
        };
        Some(Found {
            info: member.info,
            start: span.start,
            detection,
            captures,
        })
    }

    /// Compile merged patterns; every problem is returned, not just the first. Broken patterns are
    /// left out of the engine (so `check` can still run the other examples); the engine is `None`
    /// only when the set as a whole cannot be built.
    pub(crate) fn compile(
        merged: Vec<Resolved>,
        agents: &BTreeMap<String, AgentConfig>,
    ) -> (Option<Engine>, Vec<PatternError>) {
        // The patterns that ask for code get an engine of their own: in the main one a built-in
        // anchored pattern matching the same line would hide them (one anchored match per line).
        let code_patterns: Vec<Resolved> = merged
            .iter()
            .filter(|r| r.enabled && r.in_code)
            .cloned()
            .map(|mut r| {
                r.in_code = false;
                r
            })
            .collect();
        let mut errors = Vec::new();
        let mut infos = Vec::with_capacity(merged.len());
        let mut examples = Vec::with_capacity(merged.len());
        // (hir, member, gated) per set, in priority order.
        let mut anchored: Vec<(Hir, Member, bool)> = Vec::new();
        let mut floating: Vec<(Hir, Member, bool)> = Vec::new();
        let (mut a_lits, mut f_lits) = (Lits::default(), Lits::default());
        let mut budget = limits::Budget::default();

        for r in merged {
            let mut info = PatternInfo {
                id: r.id.clone(),
                category: r.category.clone(),
                source: r.origin.clone(),
                description: r.description.clone(),
                enabled: r.enabled,
                regex: r.regex.clone(),
                handled_by_agent: r.handled_by_agent,
                require_known_agent: r.require_known_agent,
                in_code: r.in_code,
                literals: Vec::new(),
                prefilter: None,
            };
            if let Err(msg) = budget.count() {
                // Past the cap nothing more is compiled: one error, for the first pattern beyond.
                errors.push(r.error(msg));
                break;
            }
            // Disabled patterns are still parsed: a broken regex is an error wherever it is.
            let hir = match limits::source(&r.regex).and_then(|()| parse_regex(&r.regex)) {
                Ok(h) => h,
                Err(msg) => {
                    errors.push(r.error(format!("invalid regex: {msg}")));
                    infos.push(info);
                    examples.push((r, false));
                    continue;
                }
            };
            if hir.properties().minimum_len() == Some(0) {
                errors.push(r.error("the regex matches the empty string"));
                infos.push(info);
                examples.push((r, false));
                continue;
            }
            // The built-in packs are known to fit (and every start-up would pay for checking).
            if r.enabled
                && !r.origin.starts_with(super::BUILTIN_ORIGIN)
                && let Err(msg) = budget.compiled(&hir)
            {
                errors.push(r.error(msg));
                infos.push(info);
                examples.push((r, false));
                continue;
            }
            if r.enabled {
                let is_anchored = hir.properties().look_set_prefix().contains(Look::Start);
                let (prefilter, lits) = literals_for(&hir, r.literals.as_deref());
                info.prefilter = Some(prefilter);
                info.literals = lits
                    .iter()
                    .map(|l| String::from_utf8_lossy(l).into_owned())
                    .collect();
                let (set, set_lits) = if is_anchored {
                    (&mut anchored, &mut a_lits)
                } else {
                    (&mut floating, &mut f_lits)
                };
                match prefilter {
                    Prefilter::LineStart => set_lits.start.extend(lits),
                    Prefilter::Anywhere => set_lits.anywhere.extend(lits),
                    Prefilter::EveryLine => set_lits.always = true,
                }
                let names = named_groups(&hir);
                let member = Member {
                    info: infos.len(),
                    fills_fields: names.iter().any(|n| FIELDS.contains(&n.as_str())),
                    names,
                    hir,
                    captures: OnceLock::new(),
                };
                set.push((member.hir.clone(), member, r.require_known_agent));
            }
            let enabled = r.enabled;
            infos.push(info);
            examples.push((r, enabled));
        }
        // Gated patterns last in the anchored set (see `find`); stable, so priority is kept otherwise.
        anchored.sort_by_key(|(_, _, gated)| *gated);
        let split = |v: Vec<(Hir, Member, bool)>| -> (Vec<Hir>, Vec<Member>) {
            v.into_iter().map(|(h, m, _)| (h, m)).unzip()
        };
        let (a_hirs, a_members) = split(anchored);
        let (f_hirs, f_members) = split(floating);
        // A set that cannot be built (past the budget's checks, not expected) is reported at its
        // last pattern, so that the message still names a file and a pattern.
        let last = |members: &[Member]| members.last().map(|m| m.info);
        let (a_last, f_last) = (last(&a_members), last(&f_members));
        let blame = |e: PatternError, at: Option<usize>| match at.and_then(|i| examples.get(i)) {
            Some((r, _)) => r.error(format!("{e} (the set up to this pattern)")),
            None => e,
        };
        let anchored = match Set::build(&a_hirs, a_members, a_lits) {
            Ok(s) => s,
            Err(e) => {
                errors.push(blame(e, a_last));
                return (None, errors);
            }
        };
        let floating = match Set::build(&f_hirs, f_members, f_lits) {
            Ok(s) => s,
            Err(e) => {
                errors.push(blame(e, f_last));
                return (None, errors);
            }
        };
        let code = if code_patterns.is_empty() {
            None
        } else {
            // Errors in these patterns were reported above already.
            Engine::compile(code_patterns, agents).0.map(Box::new)
        };
        let engine = Engine {
            infos,
            anchored,
            floating,
            resolver: AgentResolver::new(agents),
            examples,
            code,
        };
        (Some(engine), errors)
    }

    /// Run every active pattern's examples through the whole engine; one error per failure.
    pub(crate) fn run_examples(&self) -> Vec<PatternError> {
        let mut errors = Vec::new();
        for (idx, (r, enabled)) in self.examples.iter().enumerate() {
            if !enabled {
                continue;
            }
            for ex in &r.examples.matches {
                let found = self.find(ex.line(), TextSource::Text, true);
                match found.iter().find(|f| f.info == idx) {
                    None => {
                        let got = match found.first() {
                            Some(f) => format!("pattern {} matched instead", self.infos[f.info].id),
                            None => "nothing matched".to_string(),
                        };
                        errors
                            .push(r.error(format!("example {:?} should match: {got}", ex.line())));
                    }
                    Some(f) => {
                        if let Some(msg) = captures_mismatch(ex, &f.captures) {
                            errors.push(r.error(format!("example {:?}: {msg}", ex.line())));
                        }
                    }
                }
            }
            for line in &r.examples.no_match {
                let found = self.find(line, TextSource::Text, false);
                if found.iter().any(|f| f.info == idx) {
                    errors.push(r.error(format!("example {line:?} should not match, but it does")));
                }
            }
        }
        errors
    }
}

/// Compare expected captures with the actual ones; a message for the first difference.
fn captures_mismatch(ex: &MatchExample, got: &BTreeMap<String, String>) -> Option<String> {
    let want = ex.captures()?;
    for (name, value) in want {
        match got.get(name) {
            Some(v) if *v == value.0 => {}
            Some(v) => return Some(format!("capture {name} is {v:?}, expected {:?}", value.0)),
            None => return Some(format!("capture {name} is missing, expected {:?}", value.0)),
        }
    }
    None
}

/// The first [`MAX_LINE_BYTES`] of `line`, cut at a character boundary.
fn cap(line: &str) -> &str {
    if line.len() <= MAX_LINE_BYTES {
        return line;
    }
    let mut end = MAX_LINE_BYTES;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}

fn next_boundary(s: &str, at: usize) -> usize {
    let mut i = at + 1;
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// Parse with Unicode on (so `.` and `\w` mean characters), then make word boundaries ASCII.
fn parse_regex(regex: &str) -> Result<Hir, String> {
    let hir = limits::parser()
        .parse(regex)
        .map_err(|e| one_line_regex_error(&e))?;
    Ok(ascii_word_boundaries(hir))
}

/// regex-syntax draws a caret diagram over several lines; keep the reason and the offset.
fn one_line_regex_error(e: &regex_syntax::Error) -> String {
    match e {
        regex_syntax::Error::Parse(p) => {
            format!("{} (at offset {})", p.kind(), p.span().start.offset)
        }
        regex_syntax::Error::Translate(t) => {
            format!("{} (at offset {})", t.kind(), t.span().start.offset)
        }
        other => other.to_string().replace('\n', " "),
    }
}

/// Replace Unicode word-boundary assertions with their ASCII forms, everywhere in the tree.
fn ascii_word_boundaries(hir: Hir) -> Hir {
    map_leaves(hir, &|leaf| match leaf.kind() {
        HirKind::Look(look) => Hir::look(match look {
            Look::WordUnicode => Look::WordAscii,
            Look::WordUnicodeNegate => Look::WordAsciiNegate,
            Look::WordStartUnicode => Look::WordStartAscii,
            Look::WordEndUnicode => Look::WordEndAscii,
            Look::WordStartHalfUnicode => Look::WordStartHalfAscii,
            Look::WordEndHalfUnicode => Look::WordEndHalfAscii,
            other => *other,
        }),
        _ => leaf,
    })
}

/// Rebuild the tree with `leaf` applied to every leaf (look-around, class, literal, empty).
fn map_leaves(hir: Hir, leaf: &impl Fn(Hir) -> Hir) -> Hir {
    match hir.kind() {
        HirKind::Repetition(_) | HirKind::Capture(_) => {}
        HirKind::Concat(_) | HirKind::Alternation(_) => {}
        _ => return leaf(hir),
    }
    match hir.into_kind() {
        HirKind::Repetition(mut rep) => {
            let sub = std::mem::replace(&mut rep.sub, Box::new(Hir::empty()));
            rep.sub = Box::new(map_leaves(*sub, leaf));
            Hir::repetition(rep)
        }
        HirKind::Capture(mut cap) => {
            let sub = std::mem::replace(&mut cap.sub, Box::new(Hir::empty()));
            cap.sub = Box::new(map_leaves(*sub, leaf));
            Hir::capture(cap)
        }
        HirKind::Concat(subs) => {
            Hir::concat(subs.into_iter().map(|h| map_leaves(h, leaf)).collect())
        }
        HirKind::Alternation(subs) => {
            Hir::alternation(subs.into_iter().map(|h| map_leaves(h, leaf)).collect())
        }
        // Leaves were handled above.
        HirKind::Empty => Hir::empty(),
        HirKind::Literal(lit) => Hir::literal(lit.0),
        HirKind::Look(look) => Hir::look(look),
        HirKind::Class(class) => Hir::class(class),
    }
}

/// Named capture groups of one pattern's tree.
fn named_groups(hir: &Hir) -> Vec<String> {
    fn walk(h: &Hir, out: &mut Vec<String>) {
        match h.kind() {
            HirKind::Capture(c) => {
                if let Some(n) = &c.name {
                    out.push(n.to_string());
                }
                walk(&c.sub, out);
            }
            HirKind::Repetition(r) => walk(&r.sub, out),
            HirKind::Concat(subs) | HirKind::Alternation(subs) => {
                subs.iter().for_each(|s| walk(s, out))
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(hir, &mut out);
    out
}

/// Which prefilter admits lines to this pattern, and with which literals (lower case).
///
/// Given `literals:` are trusted (a line must contain one, case-sensitively) and searched
/// anywhere. Otherwise the regex's own prefix literals are used when they are usable (finite, at
/// least two bytes each): at the line start when the regex begins with `^`, anywhere otherwise.
fn literals_for(hir: &Hir, given: Option<&[String]>) -> (Prefilter, Vec<Vec<u8>>) {
    if let Some(given) = given {
        let lits = given
            .iter()
            .map(|l| l.as_bytes().to_vec())
            .collect::<Vec<_>>();
        return (Prefilter::Anywhere, lits);
    }
    let seq = Extractor::new().kind(ExtractKind::Prefix).extract(hir);
    let usable = seq.literals().filter(|lits| {
        !lits.is_empty()
            && lits.len() <= MAX_PREFIX_LITERALS
            && lits
                .iter()
                .all(|l| l.as_bytes().len() >= MIN_PREFIX_LITERAL)
    });
    let Some(lits) = usable else {
        return (Prefilter::EveryLine, Vec::new());
    };
    let mut lits: Vec<Vec<u8>> = lits.iter().map(|l| l.as_bytes().to_vec()).collect();
    lits.sort();
    lits.dedup();
    let anchored = hir.properties().look_set_prefix().contains(Look::Start);
    let kind = if anchored {
        Prefilter::LineStart
    } else {
        Prefilter::Anywhere
    };
    (kind, lits)
}

fn build_ac(mut lits: Vec<Vec<u8>>, at_start: bool) -> Result<Option<AhoCorasick>, PatternError> {
    if lits.is_empty() {
        return Ok(None);
    }
    lits.sort();
    lits.dedup();
    let kind = if at_start {
        StartKind::Anchored
    } else {
        StartKind::Unanchored
    };
    // An anchored start gate walks a few bytes per line: a DFA step is a table lookup, where the
    // default (an NFA for this size) was measured at ~7 ns a byte. Bounded: a few thousand
    // literals make a DFA of a few MB; past that the builder picks.
    let dfa = at_start && lits.len() <= MAX_START_DFA_LITERALS;
    AhoCorasick::builder()
        .start_kind(kind)
        .match_kind(MatchKind::Standard)
        .kind(dfa.then_some(aho_corasick::AhoCorasickKind::DFA))
        .build(&lits)
        .map(Some)
        .map_err(|e| PatternError::Compile(format!("building the literal prefilter: {e}")))
}

#[cfg(test)]
impl Engine {
    /// Pattern ids of every match in a line, for tests.
    pub(crate) fn matched_ids(&self, line: &str) -> Vec<String> {
        self.find(line, TextSource::Text, false)
            .into_iter()
            .map(|f| self.infos[f.info].id.clone())
            .collect()
    }
}

/// One pattern's regex for its capture pass (run only inside a span the set already matched).
fn capture_regex(hir: &Hir) -> Option<meta::Regex> {
    meta::Builder::new()
        .configure(limits::capture_config())
        .build_from_hir(hir)
        .ok()
}
