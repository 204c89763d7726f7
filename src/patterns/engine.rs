//! The compiled engine: literal prefilters plus multi-pattern regexes.
//!
//! Cost model, per line (figures in BENCHMARKS.md):
//! 1. [`normalize_line`]: a few byte checks at the line start.
//! 2. Line-start gate: the prefix literals of every `^`-anchored pattern, checked at the content start
//!    only — a two-byte table lookup, then an anchored Aho-Corasick run when the table hits.
//! 3. Anywhere gate: `literals:` and the prefix literals of unanchored patterns, one SIMD (Teddy) or
//!    Aho-Corasick pass over the line, behind a pre-check that spares it almost every line (a vector
//!    scan for one rare byte pair per literal, [`scan::Pairs`]); [`Engine::detect_text`] runs the
//!    literal search once over a whole block instead.
//! 4. Only when a gate hits: one search of the multi-pattern regex (`regex_automata::meta`, built with
//!    `new_many` semantics from all patterns) that yields the pattern id and span — anchored at the
//!    start for the `^` set, which dies within a few bytes; then, when the pattern fills a detection
//!    field, the captures of that one pattern from its own small regex over the match's head, so the
//!    capture cost does not grow with the pack.
//!
//! A line with no literal hit costs steps 1–3. Word boundaries `\b`/`\B` are ASCII (rewritten in the
//! syntax tree) so the regexes stay on the lazy DFA; `\w`, `.` and classes stay Unicode. Literals are
//! case-sensitive.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, Anchored as AcAnchored, Input as AcInput, MatchKind, StartKind};
use regex_automata::meta;
use regex_automata::{Anchored, Input};
use regex_syntax::hir::literal::{ExtractKind, Extractor};
use regex_syntax::hir::{Hir, HirKind, Look, Repetition};

use super::agents::AgentResolver;
use super::file::MatchExample;
use super::normalize::normalize_line;
use super::scan::{self, rare_bytes};
use super::{PatternError, PatternInfo, Prefilter, Resolved};
use crate::config::AgentConfig;
use crate::events::{Detection, TextSource};

/// Only the first 64 KiB of a line are examined (cut at a character boundary): a 50 MB line costs
/// one 64 KiB scan and no copy beyond it. Real delegation, ticket and error lines are far shorter.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// How many regex searches one line may cost at most in the floating set (a rejected
/// `require_known_agent` match restarts the search one character later).
const MAX_SEARCHES_PER_LINE: usize = 16;

/// Start-gate literals up to this many are compiled to an Aho-Corasick DFA.
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
    /// content start, which dies after a few bytes on most lines.
    anchored: Set,
    /// The other patterns: one multi-pattern regex searched over the line.
    floating: Set,
    resolver: AgentResolver,
    /// Examples kept for `check`, per `infos` index.
    examples: Vec<(Resolved, bool)>,
}

/// One multi-pattern regex and the prefilters that admit a line to it.
#[derive(Debug, Default)]
struct Set {
    regex: Option<meta::Regex>,
    /// Per regex pattern id.
    members: Vec<Member>,
    /// The prefix literals of its `^` members, checked at the content start.
    start: Option<StartGate>,
    /// `literals:` and the prefix literals of unanchored members, searched anywhere in the line.
    /// (One automaton per set: merging both sets' literals measured slower, because literals
    /// starting with a space defeat the prefilters of the bigger set's automaton.)
    anywhere: Option<AnyGate>,
    /// Some member has no usable literal: every line goes to `regex`.
    always: bool,
}

/// Prefix literals of `^` patterns, checked at the content start only: a table of their first two
/// bytes rejects most lines with one lookup, then an anchored Aho-Corasick run confirms.
#[derive(Debug)]
struct StartGate {
    pairs: scan::PairSet,
    ac: AhoCorasick,
}

impl StartGate {
    #[inline(always)]
    fn admits(&self, content: &str) -> bool {
        self.pairs.starts(content.as_bytes())
            && self
                .ac
                .is_match(AcInput::new(content).anchored(AcAnchored::Yes))
    }
}

/// Which set a line is admitted to (bits of [`Engine::admitted`]).
const ANCHORED: u8 = 1;
const FLOATING: u8 = 2;

/// Literals that may occur anywhere in a line: Teddy (SIMD) when they are few enough, else
/// Aho-Corasick; in front of them, for a single line, a cheaper pre-check ([`PreCheck`]).
#[derive(Debug)]
struct AnyGate {
    teddy: Option<aho_corasick::packed::Searcher>,
    ac: AhoCorasick,
    pre: PreCheck,
}

/// What a line must contain before the literal search runs on it.
// One per set, built once: the pairs stay inline (no pointer to follow on every line).
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum PreCheck {
    /// One of a few byte pairs, one from each literal ([`scan::Pairs`]).
    Pairs(scan::Pairs),
    /// One of up to three rare bytes, one from each literal (see [`rare_bytes`]).
    Rare(Vec<u8>),
    None,
}

impl AnyGate {
    fn build(mut lits: Vec<Vec<u8>>) -> Result<Option<AnyGate>, PatternError> {
        lits.sort();
        lits.dedup();
        let Some(ac) = build_ac(lits.clone(), false)? else {
            return Ok(None);
        };
        let mut config = aho_corasick::packed::Config::new();
        config.match_kind(aho_corasick::packed::MatchKind::LeftmostFirst);
        let mut b = config.builder();
        let teddy = b.extend(&lits).build();
        let pre = match scan::pick_pairs(&lits).and_then(|p| scan::Pairs::new(&p)) {
            Some(pairs) => PreCheck::Pairs(pairs),
            None => rare_bytes(&lits).map_or(PreCheck::None, PreCheck::Rare),
        };
        Ok(Some(AnyGate { teddy, ac, pre }))
    }

    /// Does a literal occur in this line? Teddy on a short line costs ~13 ns hot and ~28 ns cold;
    /// the pre-check, a few ns, spares it almost every line (with the pair scan a whole line
    /// measured 13-19% faster than with `memchr3` on rare bytes, which passed a third of the lines
    /// on to Teddy).
    #[inline(always)]
    fn admits(&self, line: &[u8]) -> bool {
        let maybe = match &self.pre {
            PreCheck::Pairs(p) => p.contains(line),
            PreCheck::Rare(r) => match *r.as_slice() {
                [a] => memchr::memchr(a, line).is_some(),
                [a, b] => memchr::memchr2(a, b, line).is_some(),
                [a, b, c] => memchr::memchr3(a, b, c, line).is_some(),
                _ => true,
            },
            PreCheck::None => true,
        };
        maybe && self.find(line, 0).is_some()
    }

    /// The start of the first literal at or after `at`.
    fn find(&self, hay: &[u8], at: usize) -> Option<usize> {
        match &self.teddy {
            Some(t) if hay.len() - at >= t.minimum_len() => t
                .find_in(hay, aho_corasick::Span::from(at..hay.len()))
                .map(|m| m.start()),
            _ => self
                .ac
                .find(AcInput::new(hay).span(at..hay.len()))
                .map(|m| m.start()),
        }
    }
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
    /// A trailing `.*` left out of the set's copy of the pattern, so the set's lazy DFA stops
    /// after the head of the line instead of walking to its end; the match end is computed.
    tail: Tail,
}

/// The detection fields a capture group can fill, in [`CaptureRe::fields`] order.
const FIELDS: [&str; 5] = ["agent", "task", "ticket_type", "title", "priority"];
/// Capture slots kept on the stack; a pattern with more groups uses the heap.
const STACK_SLOTS: usize = 32;

/// One pattern's own regex for its capture pass, with the group index of each detection field
/// resolved once, so a match costs one search and no name lookups.
#[derive(Debug)]
struct CaptureRe {
    re: meta::Regex,
    /// The same pattern with every class cut down to ASCII, for an ASCII span (almost every
    /// line): on ASCII input it matches exactly what `re` matches, with a fraction of the states
    /// (Unicode `\w` alone compiles to hundreds), which made the capture pass several times faster.
    ascii: Option<meta::Regex>,
    /// Group index per [`FIELDS`] entry.
    fields: [Option<usize>; FIELDS.len()],
    /// Slots a search needs (two per group, the whole match included).
    slots: usize,
    /// Groups that enclosed a trailing repetition cut off the capture regex: they end where the
    /// whole match ends.
    tail_groups: Vec<usize>,
}

impl CaptureRe {
    fn new(hir: &Hir) -> Option<CaptureRe> {
        let mut tail_groups = Vec::new();
        let (hir, cut) = strip_tail(hir.clone(), &mut tail_groups, &|_| true);
        if cut.is_some() {
            // The whole match too.
            tail_groups.push(0);
        }
        let re = capture_regex(&hir)?;
        let ascii = capture_regex(&ascii_classes(hir))
            .filter(|a| a.group_info().slot_len() == re.group_info().slot_len());
        let info = re.group_info();
        let pid = regex_automata::PatternID::ZERO;
        let fields = FIELDS.map(|name| info.to_index(pid, name));
        let slots = info.slot_len();
        Some(CaptureRe {
            re,
            ascii,
            fields,
            slots,
            tail_groups: tail_groups.into_iter().map(|g| g as usize).collect(),
        })
    }

    /// Search the match's head (anchored at its start; it ends where the set's copy of the
    /// pattern, trailing `.*` dropped, stopped) and call `each(group index, text)` for every group
    /// that took part in the match; groups around a cut tail end at `end`, the whole match's end.
    ///
    /// The head is enough: the capture regex is the set's copy with more empty-matching tail cut
    /// off, so its first completing path (the one leftmost-first picks) ends inside the head, and
    /// look-around still sees the whole line. A shorter span is cheaper: the backtracker clears a
    /// visited set of (states x span) bits per search.
    fn each_group<'c>(
        &self,
        content: &'c str,
        head: Range<usize>,
        end: usize,
        mut each: impl FnMut(usize, &'c str),
    ) {
        let re = match &self.ascii {
            Some(a) if content.as_bytes()[head.clone()].is_ascii() => a,
            _ => &self.re,
        };
        let input = Input::new(content).span(head).anchored(Anchored::Yes);
        let mut stack = [None; STACK_SLOTS];
        let mut heap = Vec::new();
        let slots: &mut [Option<regex_automata::util::primitives::NonMaxUsize>] =
            if self.slots <= STACK_SLOTS {
                &mut stack[..self.slots]
            } else {
                heap.resize(self.slots, None);
                &mut heap
            };
        if re.search_slots(&input, slots).is_none() {
            return;
        }
        for (group, pair) in slots.chunks_exact(2).enumerate() {
            if let [Some(a), Some(b)] = pair {
                let b = if self.tail_groups.contains(&group) {
                    end
                } else {
                    b.get()
                };
                each(group, &content[a.get()..b]);
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
    /// `bit` when a gate admits the line to this set, else 0.
    #[inline(always)]
    fn admits(&self, content: &str, bit: u8) -> u8 {
        let anywhere = || {
            self.anywhere
                .as_ref()
                .is_some_and(|g| g.admits(content.as_bytes()))
        };
        if self.admits_at_start(content, bit) != 0 || (self.regex.is_some() && anywhere()) {
            bit
        } else {
            0
        }
    }

    /// [`Set::admits`] without the anywhere literals: every line, or by the start gate.
    #[inline(always)]
    fn admits_at_start(&self, content: &str, bit: u8) -> u8 {
        let start = || self.start.as_ref().is_some_and(|g| g.admits(content));
        if self.regex.is_some() && (self.always || start()) {
            bit
        } else {
            0
        }
    }

    fn build(hirs: &[Hir], members: Vec<Member>, lits: &mut Lits) -> Result<Set, PatternError> {
        let regex = if hirs.is_empty() {
            None
        } else {
            let config = meta::Config::new()
                .nfa_size_limit(Some(512 << 20))
                .hybrid_cache_capacity(16 << 20)
                // The capture pass runs on per-pattern regexes; the set only finds (id, span).
                .which_captures(regex_automata::nfa::thompson::WhichCaptures::Implicit);
            let r = meta::Builder::new()
                .configure(config)
                .build_many_from_hir(hirs)
                .map_err(|e| PatternError::Compile(format!("compiling the pattern set: {e}")))?;
            Some(r)
        };
        let mut start = None;
        if !lits.start.is_empty() {
            let mut pairs = scan::PairSet::new();
            for l in &lits.start {
                // Prefix literals have at least MIN_PREFIX_LITERAL (2) bytes.
                if let [a, b, ..] = l.as_slice() {
                    pairs.insert(*a, *b);
                }
            }
            if let Some(ac) = build_ac(std::mem::take(&mut lits.start), true)? {
                start = Some(StartGate { pairs, ac });
            }
        }
        Ok(Set {
            regex,
            members,
            start,
            anywhere: AnyGate::build(std::mem::take(&mut lits.anywhere))?,
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
        // Most lines stop at the gates: no call into the matcher proper.
        let content = normalize_line(cap(line));
        let admitted = self.admitted(content);
        if admitted == 0 {
            return Vec::new();
        }
        self.detect_admitted(content, admitted, source)
    }

    /// The rest of [`Engine::detect`] for a line a gate admitted: out of line, so that the path
    /// of every other line stays a small function (inlined, this measured 7% slower per line).
    #[inline(never)]
    fn detect_admitted(&self, content: &str, admitted: u8, source: TextSource) -> Vec<Detection> {
        let mut out = Vec::new();
        self.find_admitted(content, admitted, source, false, |f| out.push(f.detection));
        out
    }

    /// [`Engine::detect`] over bytes that may not be UTF-8 (invalid sequences read as U+FFFD). Only
    /// the first [`MAX_LINE_BYTES`] are decoded.
    pub fn detect_bytes(&self, line: &[u8], source: TextSource) -> Vec<Detection> {
        let capped = &line[..line.len().min(MAX_LINE_BYTES)];
        self.detect(&String::from_utf8_lossy(capped), source)
    }

    /// Every detection in a block of text, line by line (`\n`-separated; a trailing `\r` is
    /// ignored): `(byte range of the line in text, detection)`, in order. Same results as calling
    /// [`Engine::detect`] on each line, but the anywhere-literal prefilter runs once over the whole
    /// block (SIMD speed, no per-line call) and each line start costs a two-byte table lookup.
    /// For transcripts, `-p` output and plain text; screen rows come one at a time.
    pub fn detect_text(&self, text: &str, source: TextSource) -> Vec<(Range<usize>, Detection)> {
        let mut out = Vec::new();
        let bytes = text.as_bytes();
        // Lines an anywhere literal hits, ascending start offsets.
        let mut marked: Vec<usize> = Vec::new();
        for set in [&self.anchored, &self.floating] {
            if let Some(gate) = &set.anywhere
                && set.regex.is_some()
            {
                mark_lines(gate, bytes, &mut marked);
            }
        }
        marked.sort_unstable();
        marked.dedup();
        let always = (self.anchored.always && self.anchored.regex.is_some())
            || (self.floating.always && self.floating.regex.is_some());
        let mut next_marked = marked.iter().copied().peekable();
        // Line ends: every newline, then the end of the text (one iterator over the block keeps
        // its vector state; a `memchr` call per line cost ~10 ns of setup each).
        let ends = memchr::memchr_iter(b'\n', bytes).chain(std::iter::once(bytes.len()));
        let mut start = 0;
        for end in ends {
            let line = &text[start..end];
            while next_marked.peek().is_some_and(|&m| m < start) {
                next_marked.next();
            }
            let is_marked = next_marked.peek() == Some(&start);
            let content = normalize_line(cap(line));
            // A line no anywhere literal marked has none: the start gates alone decide it.
            let admitted = if always || is_marked {
                self.admitted(content)
            } else {
                self.anchored.admits_at_start(content, ANCHORED)
                    | self.floating.admits_at_start(content, FLOATING)
            };
            self.find_admitted(content, admitted, source, false, |f| {
                out.push((start..end, f.detection));
            });
            start = end + 1;
        }
        out
    }

    /// Which sets see this line: the start gate first (a table lookup), then the anywhere scan.
    #[inline(always)]
    fn admitted(&self, content: &str) -> u8 {
        self.anchored.admits(content, ANCHORED) | self.floating.admits(content, FLOATING)
    }

    fn find(&self, line: &str, source: TextSource, want_captures: bool) -> Vec<Found> {
        let content = normalize_line(cap(line));
        let mut out = Vec::new();
        self.find_admitted(
            content,
            self.admitted(content),
            source,
            want_captures,
            |f| {
                out.push(f);
            },
        );
        out
    }

    /// [`Engine::find`] on normalised `content` that the gates admitted to the sets in `admitted`:
    /// each match goes to `sink`, leftmost first. Allocates nothing of its own when only the
    /// anchored set matches (almost every detection).
    fn find_admitted(
        &self,
        content: &str,
        admitted: u8,
        source: TextSource,
        want_captures: bool,
        mut sink: impl FnMut(Found),
    ) {
        if content.is_empty() || admitted == 0 {
            return;
        }
        let mut anchored = None;
        if admitted & ANCHORED != 0
            && let Some(regex) = &self.anchored.regex
        {
            let input = Input::new(content).anchored(Anchored::Yes);
            if let Some(m) = regex.search(&input) {
                // require_known_agent members come last in this set, so a rejected match hides no
                // other anchored pattern.
                let member = &self.anchored.members[m.pattern().as_usize()];
                let end = member.tail.end(content, m.end());
                anchored = self.found(content, source, member, m.range(), end, want_captures);
            }
        }
        let mut out: Vec<Found> = Vec::new();
        if admitted & FLOATING != 0
            && let Some(regex) = &self.floating.regex
        {
            let mut at = 0;
            for _ in 0..MAX_SEARCHES_PER_LINE {
                if at > content.len() {
                    break;
                }
                let Some(m) = regex.search(&Input::new(content).span(at..content.len())) else {
                    break;
                };
                let member = &self.floating.members[m.pattern().as_usize()];
                let range = m.start()..member.tail.end(content, m.end());
                match self.found(content, source, member, m.range(), range.end, want_captures) {
                    Some(f) => {
                        out.push(f);
                        at = if range.is_empty() {
                            next_boundary(content, range.end)
                        } else {
                            range.end
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
        head: Range<usize>,
        end: usize,
        want_captures: bool,
    ) -> Option<Found> {
        let info = &self.infos[member.info];
        let mut captures = BTreeMap::new();
        let mut fields: [Option<&str>; FIELDS.len()] = [None; FIELDS.len()];
        if (member.fills_fields || want_captures && !member.names.is_empty())
            && let Some(cre) = member.captures.get_or_init(|| CaptureRe::new(&member.hir))
        {
            let names = cre
                .re
                .group_info()
                .pattern_names(regex_automata::PatternID::ZERO);
            let names: Vec<Option<&str>> = if want_captures {
                names.collect()
            } else {
                Vec::new()
            };
            cre.each_group(content, head.clone(), end, |group, text| {
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
            start: head.start,
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
        let mut errors = Vec::new();
        let mut infos = Vec::with_capacity(merged.len());
        let mut examples = Vec::with_capacity(merged.len());
        // (hir, member, gated) per set, in priority order.
        let mut anchored: Vec<(Hir, Member, bool)> = Vec::new();
        let mut floating: Vec<(Hir, Member, bool)> = Vec::new();
        let (mut a_lits, mut f_lits) = (Lits::default(), Lits::default());

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
                let (set_hir, cut) =
                    strip_tail(hir.clone(), &mut Vec::new(), &|r| Tail::of(r).is_some());
                let tail = cut.as_ref().and_then(Tail::of).unwrap_or(Tail::Kept);
                let names = named_groups(&hir);
                let member = Member {
                    info: infos.len(),
                    fills_fields: names.iter().any(|n| FIELDS.contains(&n.as_str())),
                    names,
                    hir,
                    captures: OnceLock::new(),
                    tail,
                };
                set.push((set_hir, member, r.require_known_agent));
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
        let sets = Set::build(&a_hirs, a_members, &mut a_lits)
            .and_then(|a| Ok((a, Set::build(&f_hirs, f_members, &mut f_lits)?)));
        let (anchored, floating) = match sets {
            Ok(s) => s,
            Err(e) => {
                errors.push(e);
                return (None, errors);
            }
        };
        let engine = Engine {
            infos,
            anchored,
            floating,
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

/// Push the start offset of every line in which an anywhere literal occurs (a superset of the
/// lines `find` admits: it looks at the raw line, uncapped and with its decoration).
fn mark_lines(gate: &AnyGate, bytes: &[u8], marked: &mut Vec<usize>) {
    let mut at = 0;
    while at < bytes.len() {
        let Some(p) = gate.find(bytes, at) else {
            break;
        };
        let line_start = memchr::memrchr(b'\n', &bytes[..p]).map_or(0, |i| i + 1);
        marked.push(line_start);
        // One hit per line is enough: continue after this line.
        at = memchr::memchr(b'\n', &bytes[p..]).map_or(bytes.len(), |i| p + i + 1);
    }
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

/// Cut a trailing repetition that may match nothing and has no groups (`.*`, `\s*`, ...) off the tree, noting the
/// capture groups that enclose it (pushed onto `groups`). Such a tail never decides whether or how
/// the rest matches — it always succeeds, at worst empty — so the rest's leftmost-first captures
/// are the same, and the enclosing groups end where the whole match ends. The capture pass then
/// walks the line's head only (`**Engineer Agent**: ` instead of the whole task text).
fn strip_tail(
    hir: Hir,
    groups: &mut Vec<u32>,
    accept: &impl Fn(&Repetition) -> bool,
) -> (Hir, Option<Repetition>) {
    match hir.kind() {
        // Only a tail without groups of its own: their captures would be lost.
        HirKind::Repetition(r)
            if r.min == 0 && r.sub.properties().explicit_captures_len() == 0 && accept(r) =>
        {
            (Hir::empty(), Some(r.clone()))
        }
        HirKind::Capture(cap) => {
            let (sub, cut) = strip_tail((*cap.sub).clone(), groups, accept);
            if cut.is_none() {
                return (hir, None);
            }
            groups.push(cap.index);
            let mut cap = cap.clone();
            cap.sub = Box::new(sub);
            (Hir::capture(cap), cut)
        }
        HirKind::Concat(subs) => {
            let Some((last, head)) = subs.split_last() else {
                return (hir, None);
            };
            let (last, cut) = strip_tail(last.clone(), groups, accept);
            if cut.is_none() {
                return (hir, None);
            }
            let mut subs = head.to_vec();
            subs.push(last);
            (Hir::concat(subs), cut)
        }
        _ => (hir, None),
    }
}

/// Where a match whose trailing repetition was cut off the set's copy of its pattern really
/// ends. Only a greedy `.*` is cut there: its end is the next newline (or, with `(?s)`, the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tail {
    /// Nothing was cut: the set reports the true end.
    Kept,
    /// `.*`: up to the next `\n` or the end of the line.
    ToNewline,
    /// `(?s).*`: to the end of the line.
    ToEnd,
}

impl Tail {
    /// The end of the whole match, given where its head ended.
    fn end(self, content: &str, head_end: usize) -> usize {
        match self {
            Tail::Kept => head_end,
            Tail::ToEnd => content.len(),
            Tail::ToNewline => memchr::memchr(b'\n', &content.as_bytes()[head_end..])
                .map_or(content.len(), |i| head_end + i),
        }
    }

    /// The tail a greedy `.*` repetition stands for, if it is one.
    fn of(r: &Repetition) -> Option<Tail> {
        use regex_syntax::hir::{Class, ClassUnicode, ClassUnicodeRange};
        if !r.greedy || r.max.is_some() {
            return None;
        }
        let HirKind::Class(Class::Unicode(c)) = r.sub.kind() else {
            return None;
        };
        let any = ClassUnicode::new([ClassUnicodeRange::new('\0', char::MAX)]);
        let mut but_newline = any.clone();
        but_newline.difference(&ClassUnicode::new([ClassUnicodeRange::new('\n', '\n')]));
        if *c == but_newline {
            Some(Tail::ToNewline)
        } else if *c == any {
            Some(Tail::ToEnd)
        } else {
            None
        }
    }
}

/// The same tree with every character class intersected with ASCII. On an ASCII haystack it
/// matches exactly what the original matches (a non-ASCII class member can never match there).
/// A class left empty becomes the never-matching empty class, which is still a valid regex.
fn ascii_classes(hir: Hir) -> Hir {
    use regex_syntax::hir::{Class, ClassBytes, ClassBytesRange, ClassUnicode, ClassUnicodeRange};
    map_leaves(hir, &|leaf| match leaf.kind() {
        HirKind::Class(Class::Unicode(c)) => {
            let mut c = c.clone();
            c.intersect(&ClassUnicode::new([ClassUnicodeRange::new('\0', '\x7f')]));
            Hir::class(Class::Unicode(c))
        }
        HirKind::Class(Class::Bytes(c)) => {
            let mut c = c.clone();
            c.intersect(&ClassBytes::new([ClassBytesRange::new(0, 0x7f)]));
            Hir::class(Class::Bytes(c))
        }
        _ => leaf,
    })
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
/// Measured: the bounded backtracker beats the PikeVM here by ~30% despite clearing its visited set.
fn capture_regex(hir: &Hir) -> Option<meta::Regex> {
    // The span is known already: no DFA pass to find it first, straight to the capture engines
    // (one-pass DFA when the pattern allows, else the bounded backtracker).
    let config = meta::Config::new().hybrid(false).dfa(false);
    meta::Builder::new()
        .configure(config)
        .build_from_hir(hir)
        .ok()
}

#[cfg(test)]
mod capture_tests {
    use super::*;

    /// The capture pass (tail cut off, classes cut down to ASCII for ASCII spans) gives exactly the
    /// groups of each pattern's plain regex, on every example line of every built-in pattern, with
    /// and without non-ASCII text around and inside.
    #[test]
    fn capture_pass_equals_the_plain_regex() {
        let e = Engine::builder().build().expect("built-in engine");
        let mut lines: Vec<String> = vec![
            "**Ingénieur Agent**: réparer le café".into(),
            "Task(Engineer: implement ünïcode)".into(),
            "TODO (Hohe Priorität): prüfen".into(),
            "Error: ☕ überlauf".into(),
        ];
        for (r, _) in &e.examples {
            for ex in &r.examples.matches {
                let l = ex.line();
                lines.push(l.to_string());
                lines.push(format!("{l} é ü"));
                lines.push(l.replacen(' ', " é", 1));
            }
        }
        let mut compared = 0;
        for set in [&e.anchored, &e.floating] {
            for m in &set.members {
                let plain = meta::Regex::builder()
                    .build_from_hir(&m.hir)
                    .expect("plain regex");
                let cre = CaptureRe::new(&m.hir).expect("capture regex");
                // The set's copy of the pattern, as compiled: where its match (the head) ends.
                let (set_hir, _) =
                    strip_tail(m.hir.clone(), &mut Vec::new(), &|r| Tail::of(r).is_some());
                let head_re = meta::Regex::builder()
                    .build_from_hir(&set_hir)
                    .expect("set copy");
                for line in &lines {
                    let content = normalize_line(line);
                    let mut caps = plain.create_captures();
                    plain.search_captures(&Input::new(content), &mut caps);
                    let Some(whole) = caps.get_match() else {
                        continue;
                    };
                    let want: Vec<Option<&str>> = (0..caps.group_len())
                        .map(|g| caps.get_group(g).map(|s| &content[s.range()]))
                        .collect();
                    let head = head_re
                        .search(
                            &Input::new(content)
                                .span(whole.start()..content.len())
                                .anchored(Anchored::Yes),
                        )
                        .expect("the set's copy matches where the pattern does");
                    assert!(head.end() <= whole.end());
                    let mut got = vec![None; caps.group_len()];
                    cre.each_group(content, head.range(), whole.end(), |g, t| got[g] = Some(t));
                    assert_eq!(got, want, "pattern {} on {content:?}", e.infos[m.info].id);
                    compared += 1;
                }
            }
        }
        assert!(compared > 50, "only {compared} comparisons");
    }

    #[test]
    fn only_group_free_tails_are_cut() {
        let hir = parse_regex(r"^a(?P<x>b.*)(?:c(?P<y>d))?").expect("regex");
        let mut groups = Vec::new();
        let (_, cut) = strip_tail(hir, &mut groups, &|_| true);
        assert!(cut.is_none(), "a tail with a group must stay");
        let hir = parse_regex(r"^a(?P<x>b(?P<z>c).*)").expect("regex");
        let (cut_hir, cut) = strip_tail(hir, &mut groups, &|_| true);
        assert!(cut.is_some());
        assert_eq!(groups, [1]);
        assert_eq!(cut_hir.properties().explicit_captures_len(), 2);
    }
}

#[cfg(test)]
mod gate_tests {
    use super::*;
    use proptest::prelude::*;

    fn lits(xs: &[&str]) -> Vec<Vec<u8>> {
        xs.iter().map(|x| x.as_bytes().to_vec()).collect()
    }

    proptest! {
        /// With the pair pre-check (the built-in literals), a line is admitted exactly when a
        /// literal occurs in it.
        #[test]
        fn admits_agrees_with_the_automaton(line in "[ -~]{0,120}", pick in 0usize..6, at in 0usize..120) {
            let words = [" Agent:", " FAILED", "Error: ", "Exception: ", "Segmentation fault", "ABC"];
            let gate = AnyGate::build(lits(&words[..5])).expect("gate").expect("some literals");
            prop_assert!(matches!(gate.pre, PreCheck::Pairs(_)));
            let mut line = line;
            let at = at.min(line.len());
            line.insert_str(at, words[pick]);
            let want = gate.find(line.as_bytes(), 0).is_some();
            prop_assert_eq!(gate.admits(line.as_bytes()), want);
            prop_assert_eq!(want, words[..5].iter().any(|w| line.contains(w)));
        }

        /// More literals than pairs: the rare-byte pre-check (`A`), with the same answers.
        #[test]
        fn rare_bytes_pre_check_agrees(line in "[ -~]{0,120}", pick in 0usize..10, at in 0usize..120) {
            let words = ["Ab", "Ac", "Ad", "Ae", "Af", "Ag", "Ah", "Ai", "Aj", "xyz"];
            let gate = AnyGate::build(lits(&words[..9])).expect("gate").expect("some literals");
            prop_assert!(matches!(&gate.pre, PreCheck::Rare(r) if r == b"A"));
            let mut line = line;
            let at = at.min(line.len());
            line.insert_str(at, words[pick]);
            let want = words[..9].iter().any(|w| line.contains(w));
            prop_assert_eq!(gate.admits(line.as_bytes()), want);
        }
    }
}
