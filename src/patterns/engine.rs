//! The compiled engine: literal prefilters plus one multi-pattern regex.
//!
//! Cost model, per line (see `bench-notes/engine.md` for figures):
//! 1. [`normalize_line`]: a few byte checks at the line start.
//! 2. The line-start prefilter: an anchored Aho-Corasick search of the prefix literals of every
//!    `^`-anchored pattern, at the content start only (a handful of bytes, whatever the pack size).
//! 3. The anywhere prefilter: one unanchored Aho-Corasick pass over the line for the literals of
//!    patterns that are not line-anchored (in the built-in packs only a few, so it runs at memchr speed).
//! 4. Only when a prefilter hits (or a pattern has no usable literal): one leftmost-first search of
//!    the multi-pattern regex (`regex_automata::meta`), which gives the pattern id and its captures in
//!    one pass.
//!
//! A line with no literal hit costs steps 1–3. Word boundaries `\b`/`\B` are ASCII (rewritten in the
//! syntax tree) so the regex stays on the lazy DFA; `\w`, `.` and classes stay Unicode.

use std::collections::BTreeMap;

use aho_corasick::{AhoCorasick, Anchored as AcAnchored, Input as AcInput, MatchKind, StartKind};
use regex_automata::Input;
use regex_automata::meta;
use regex_automata::util::captures::Captures;
use regex_syntax::hir::literal::{ExtractKind, Extractor};
use regex_syntax::hir::{Hir, HirKind, Look};

use super::agents::AgentResolver;
use super::file::MatchExample;
use super::normalize::normalize_line;
use super::{PatternError, PatternInfo, Prefilter, Resolved};
use crate::config::AgentConfig;
use crate::events::{Detection, TextSource};

/// Only the first 64 KiB of a line are examined (cut at a character boundary): a 50 MB line costs
/// one 64 KiB scan and no copy beyond it. Real delegation, ticket and error lines are far shorter.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// How many regex searches one line may cost at most (a rejected `require_known_agent` match
/// restarts the search one character later).
const MAX_SEARCHES_PER_LINE: usize = 16;

/// Prefix literals shorter than this are useless as a prefilter (`[A-Z]` gives 26 one-byte ones).
const MIN_PREFIX_LITERAL: usize = 2;
/// At most this many auto-extracted prefix literals per pattern.
const MAX_PREFIX_LITERALS: usize = 64;

/// The compiled pattern set. Immutable, `Send + Sync`; share it as `Arc<Engine>`.
#[derive(Debug)]
pub struct Engine {
    /// Every merged pattern (active and disabled), in priority order.
    infos: Vec<PatternInfo>,
    /// Per regex pattern id: index into `infos`, and its compiled data.
    active: Vec<Active>,
    regex: Option<meta::Regex>,
    start_ac: Option<AhoCorasick>,
    anywhere_ac: Option<AhoCorasick>,
    /// Some active pattern has no usable literal: every line goes to the regex.
    every_line: bool,
    resolver: AgentResolver,
    /// Examples kept for `check`, per `infos` index.
    examples: Vec<(Resolved, bool)>,
}

#[derive(Debug)]
struct Active {
    info: usize,
    /// The named groups of this pattern: (group index, name).
    names: Vec<(usize, String)>,
}

/// One match with its captures, for examples and for building a detection.
struct Found {
    info: usize,
    detection: Detection,
    captures: BTreeMap<String, String>,
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

    /// All detections in one logical line of already de-styled text: at most one per category (the
    /// leftmost match; at one position the earlier pattern wins). Pure; no I/O, no allocation unless
    /// a prefilter hits. Only the first [`MAX_LINE_BYTES`] are examined.
    pub fn detect(&self, line: &str, source: TextSource) -> Vec<Detection> {
        self.find(line, source, false)
            .into_iter()
            .map(|f| f.detection)
            .collect()
    }

    /// [`Engine::detect`] over bytes that may not be UTF-8 (invalid sequences read as U+FFFD). Only
    /// the first [`MAX_LINE_BYTES`] are decoded.
    pub fn detect_bytes(&self, line: &[u8], source: TextSource) -> Vec<Detection> {
        let capped = &line[..line.len().min(MAX_LINE_BYTES)];
        self.detect(&String::from_utf8_lossy(capped), source)
    }

    /// Would any prefilter admit this (already normalised) content to the regex?
    fn admits(&self, content: &str) -> bool {
        if self.every_line {
            return true;
        }
        if let Some(ac) = &self.start_ac
            && ac.is_match(AcInput::new(content).anchored(AcAnchored::Yes))
        {
            return true;
        }
        if let Some(ac) = &self.anywhere_ac
            && ac.is_match(content)
        {
            return true;
        }
        false
    }

    fn find(&self, line: &str, source: TextSource, want_captures: bool) -> Vec<Found> {
        let line = cap(line);
        let content = normalize_line(line);
        if content.is_empty() || !self.admits(content) {
            return Vec::new();
        }
        let Some(regex) = &self.regex else {
            return Vec::new();
        };
        let mut caps = regex.create_captures();
        let mut out: Vec<Found> = Vec::new();
        let mut at = 0;
        for _ in 0..MAX_SEARCHES_PER_LINE {
            if at > content.len() {
                break;
            }
            regex.search_captures(&Input::new(content).span(at..content.len()), &mut caps);
            let Some(m) = caps.get_match() else { break };
            let active = &self.active[m.pattern().as_usize()];
            let info = &self.infos[active.info];
            match self.detection(content, source, &caps, info) {
                Some(detection) => {
                    if !out
                        .iter()
                        .any(|f| f.detection.category == detection.category)
                    {
                        let captures = if want_captures {
                            named_captures(content, &caps, active)
                        } else {
                            BTreeMap::new()
                        };
                        out.push(Found {
                            info: active.info,
                            detection,
                            captures,
                        });
                    }
                    at = if m.end() > m.start() {
                        m.end()
                    } else {
                        next_boundary(content, m.end())
                    };
                }
                // Rejected (unknown agent for a require_known_agent pattern): no pattern of higher
                // priority matched here, so try again one character later.
                None => at = next_boundary(content, m.start()),
            }
        }
        out
    }

    /// The detection for one match, or `None` when the pattern's conditions reject it.
    fn detection(
        &self,
        content: &str,
        source: TextSource,
        caps: &Captures,
        info: &PatternInfo,
    ) -> Option<Detection> {
        let get = |name: &str| -> Option<String> {
            let span = caps.get_group_by_name(name)?;
            let s = content[span.range()].trim();
            (!s.is_empty()).then(|| s.to_string())
        };
        let spoken = get("agent");
        let agent = match &spoken {
            Some(s) => match self.resolver.resolve(s) {
                Some(name) => Some(name.to_string()),
                None if info.require_known_agent => return None,
                None => Some(s.clone()),
            },
            None if info.require_known_agent => return None,
            None => None,
        };
        Some(Detection {
            category: info.category.clone(),
            pattern: info.id.clone(),
            text: content.to_string(),
            source,
            agent,
            task: get("task"),
            ticket_type: get("ticket_type"),
            title: get("title"),
            priority: get("priority"),
            handled_by_agent: info.handled_by_agent,
        })
    }

    /// Compile merged patterns; every problem is returned, not just the first. Broken patterns are
    /// left out of the engine (so `check` can still run the other examples); the engine is `None`
    /// only when the set as a whole cannot be built.
    pub(crate) fn compile(
        merged: Vec<Resolved>,
        agents: &BTreeMap<String, AgentConfig>,
    ) -> (Option<Engine>, Vec<PatternError>) {
        let mut errors = Vec::new();
        let mut infos = Vec::with_capacity(merged.len());
        let mut hirs = Vec::new();
        let mut active = Vec::new();
        let mut start_lits: Vec<Vec<u8>> = Vec::new();
        let mut anywhere_lits: Vec<Vec<u8>> = Vec::new();
        let mut every_line = false;
        let mut examples = Vec::with_capacity(merged.len());

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
                literals: Vec::new(),
                prefilter: None,
            };
            // Disabled patterns are still parsed: a broken regex is an error wherever it is.
            let hir = match parse_regex(&r.regex) {
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
            if r.enabled {
                let (prefilter, lits) = literals_for(&hir, r.literals.as_deref());
                info.prefilter = Some(prefilter);
                info.literals = lits
                    .iter()
                    .map(|l| String::from_utf8_lossy(l).into_owned())
                    .collect();
                match prefilter {
                    Prefilter::LineStart => start_lits.extend(lits),
                    Prefilter::Anywhere => anywhere_lits.extend(lits),
                    Prefilter::EveryLine => every_line = true,
                }
                let names = named_groups(&hir);
                active.push(Active {
                    info: infos.len(),
                    names,
                });
                hirs.push(hir);
            }
            let enabled = r.enabled;
            infos.push(info);
            examples.push((r, enabled));
        }
        let regex = if hirs.is_empty() {
            None
        } else {
            let config = meta::Config::new()
                .nfa_size_limit(Some(256 << 20))
                .hybrid_cache_capacity(8 << 20);
            match meta::Builder::new()
                .configure(config)
                .build_many_from_hir(&hirs)
            {
                Ok(r) => Some(r),
                Err(e) => {
                    errors.push(PatternError::Compile(format!(
                        "compiling the pattern set: {e}"
                    )));
                    return (None, errors);
                }
            }
        };
        let (start_ac, anywhere_ac) = match (
            build_ac(start_lits, StartKind::Anchored),
            build_ac(anywhere_lits, StartKind::Unanchored),
        ) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                errors.push(e);
                return (None, errors);
            }
        };
        let engine = Engine {
            infos,
            active,
            regex,
            start_ac,
            anywhere_ac,
            every_line,
            resolver: AgentResolver::new(agents),
            examples,
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

fn named_captures(content: &str, caps: &Captures, active: &Active) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (_, name) in &active.names {
        if let Some(span) = caps.get_group_by_name(name) {
            out.insert(name.clone(), content[span.range()].trim().to_string());
        }
    }
    out
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
    let hir = regex_syntax::ParserBuilder::new()
        .utf8(true)
        .unicode(true)
        .build()
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
    match hir.into_kind() {
        HirKind::Look(look) => Hir::look(match look {
            Look::WordUnicode => Look::WordAscii,
            Look::WordUnicodeNegate => Look::WordAsciiNegate,
            Look::WordStartUnicode => Look::WordStartAscii,
            Look::WordEndUnicode => Look::WordEndAscii,
            Look::WordStartHalfUnicode => Look::WordStartHalfAscii,
            Look::WordEndHalfUnicode => Look::WordEndHalfAscii,
            other => other,
        }),
        HirKind::Repetition(mut rep) => {
            let sub = std::mem::replace(&mut rep.sub, Box::new(Hir::empty()));
            rep.sub = Box::new(ascii_word_boundaries(*sub));
            Hir::repetition(rep)
        }
        HirKind::Capture(mut cap) => {
            let sub = std::mem::replace(&mut cap.sub, Box::new(Hir::empty()));
            cap.sub = Box::new(ascii_word_boundaries(*sub));
            Hir::capture(cap)
        }
        HirKind::Concat(subs) => Hir::concat(subs.into_iter().map(ascii_word_boundaries).collect()),
        HirKind::Alternation(subs) => {
            Hir::alternation(subs.into_iter().map(ascii_word_boundaries).collect())
        }
        HirKind::Empty => Hir::empty(),
        HirKind::Literal(lit) => Hir::literal(lit.0),
        HirKind::Class(class) => Hir::class(class),
    }
}

/// Named capture groups (index, name) of one pattern's tree.
fn named_groups(hir: &Hir) -> Vec<(usize, String)> {
    fn walk(h: &Hir, out: &mut Vec<(usize, String)>) {
        match h.kind() {
            HirKind::Capture(c) => {
                if let Some(n) = &c.name {
                    out.push((c.index as usize, n.to_string()));
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
/// Given `literals:` are trusted (a line must contain one, case-insensitively) and searched
/// anywhere. Otherwise the regex's own prefix literals are used when they are usable (finite, at
/// least two bytes each): at the line start when the regex begins with `^`, anywhere otherwise.
fn literals_for(hir: &Hir, given: Option<&[String]>) -> (Prefilter, Vec<Vec<u8>>) {
    if let Some(given) = given {
        let lits = given
            .iter()
            .map(|l| l.as_bytes().to_ascii_lowercase())
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
    let mut lits: Vec<Vec<u8>> = lits
        .iter()
        .map(|l| l.as_bytes().to_ascii_lowercase())
        .collect();
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

fn build_ac(mut lits: Vec<Vec<u8>>, kind: StartKind) -> Result<Option<AhoCorasick>, PatternError> {
    if lits.is_empty() {
        return Ok(None);
    }
    lits.sort();
    lits.dedup();
    AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .start_kind(kind)
        .match_kind(MatchKind::Standard)
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
