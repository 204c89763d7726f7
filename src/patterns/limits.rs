//! Compile limits: what the pattern files may cost, and the error that names the pattern that
//! exceeds it.
//!
//! Pattern files come from the user, from `./.mpm/` of a cloned repository and from `--patterns`;
//! none of them may take the process's memory. Without limits, 100 patterns like
//! `^(?:\w+\s+){0,20}W1(?P<title>.+)` (each Unicode `\w` is hundreds of automaton states, times
//! twenty) took 2.8 GB, and 13,000 trivial patterns asked for 60 GB (a slower matching engine's
//! table of pattern count x states). Every limit here is checked before that memory is spent:
//!
//! - at most [`MAX_PATTERNS`] patterns after merging, each regex at most [`MAX_REGEX_BYTES`] long
//!   and nested at most [`NEST_LIMIT`] deep;
//! - each pattern from a file compiles to at most [`MAX_PATTERN_NFA_BYTES`] a direction, and all of
//!   them together, forward and reverse (the multi-pattern regex is built both ways), to at most
//!   [`MAX_TOTAL_NFA_BYTES`] (the built-in packs, about 1 MiB, are not checked: start-up would pay
//!   for it every time);
//! - the multi-pattern regex runs only as a lazy DFA with a cache of about [`DFA_CACHE_BYTES`] per
//!   searching thread, configured never to give up (so no fallback engine, whose memory grows with
//!   patterns x states, is ever built).
//!
//! Memory therefore stays below roughly `3 x MAX_TOTAL_NFA_BYTES` while compiling (the compiler's
//! working memory) and `MAX_TOTAL_NFA_BYTES` plus two caches per searching thread after, whatever
//! the files say; the cost of one more pattern is its own compiled size.

use regex_automata::hybrid::dfa::{Config as DfaConfig, DFA};
use regex_automata::hybrid::regex::Regex as DfaRegex;
use regex_automata::nfa::thompson::{self, WhichCaptures};
use regex_automata::{MatchKind, meta};
use regex_syntax::hir::Hir;

/// At most this many patterns after merging all files (active and disabled).
pub const MAX_PATTERNS: usize = 2000;
/// At most this many bytes of regex source per pattern.
pub const MAX_REGEX_BYTES: usize = 16 * 1024;
/// At most this deep a nesting of groups, repetitions and classes (regex-syntax's default is 250).
pub const NEST_LIMIT: u32 = 64;
/// One pattern, compiled in one direction, at most this many bytes.
pub const MAX_PATTERN_NFA_BYTES: usize = 4 << 20;
/// All patterns, compiled forward and reverse, at most this many bytes together (1,000 patterns
/// like `^NOTE1: (?P<title>\w+.*)` take about 56 MiB: Unicode classes cost).
pub const MAX_TOTAL_NFA_BYTES: usize = 96 << 20;
/// The lazy DFA's cache per searching thread and direction (raised to the minimum a large set
/// needs, which the total limit bounds).
pub const DFA_CACHE_BYTES: usize = 2 << 20;

/// Counts what the patterns compiled so far cost; one per engine build.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    patterns: usize,
    nfa_bytes: usize,
}

impl Budget {
    /// Admit one more pattern (counted whether enabled or not); the message says which limit it
    /// exceeds.
    pub(crate) fn count(&mut self) -> Result<(), String> {
        self.patterns += 1;
        if self.patterns > MAX_PATTERNS {
            return Err(format!(
                "more than {MAX_PATTERNS} patterns (the limit); this and every later pattern is left out"
            ));
        }
        Ok(())
    }

    /// Admit one active pattern's compiled size (forward and reverse, as the set builds it): its
    /// own limit, then the running total. Costs about what the pattern adds to the set's build.
    pub(crate) fn compiled(&mut self, hir: &Hir) -> Result<(), String> {
        let mut bytes = 0;
        for reverse in [false, true] {
            let config = thompson::Config::new()
                .nfa_size_limit(Some(MAX_PATTERN_NFA_BYTES))
                .which_captures(WhichCaptures::None)
                .reverse(reverse);
            let nfa = thompson::Compiler::new()
                .configure(config)
                .build_from_hir(hir)
                .map_err(|_| {
                    format!(
                        "the regex compiles to more than {} (the per-pattern limit); counted \
                         repetitions of Unicode classes such as (?:\\w+\\s+){{0,20}} grow fastest",
                        mib(MAX_PATTERN_NFA_BYTES)
                    )
                })?;
            bytes += nfa.memory_usage();
        }
        if self.nfa_bytes + bytes > MAX_TOTAL_NFA_BYTES {
            return Err(format!(
                "with this pattern ({} compiled) the patterns exceed {} together (the limit)",
                kib(bytes),
                mib(MAX_TOTAL_NFA_BYTES)
            ));
        }
        self.nfa_bytes += bytes;
        Ok(())
    }
}

/// The check on a regex's source before it is parsed.
pub(crate) fn source(regex: &str) -> Result<(), String> {
    if regex.len() > MAX_REGEX_BYTES {
        return Err(format!(
            "the regex is {} bytes long, more than {MAX_REGEX_BYTES} (the limit)",
            regex.len()
        ));
    }
    Ok(())
}

/// The parser every pattern goes through: Unicode on, nesting limited.
pub(crate) fn parser() -> regex_syntax::Parser {
    regex_syntax::ParserBuilder::new()
        .utf8(true)
        .unicode(true)
        .nest_limit(NEST_LIMIT)
        .build()
}

/// The multi-pattern regex of one set: a forward and a reverse lazy DFA, leftmost-first in
/// priority order, within the limits above.
pub(crate) fn set_regex(hirs: &[Hir]) -> Result<DfaRegex, String> {
    let nfa = |reverse: bool| {
        // A backstop only (the budget has checked each pattern): the compiler's working memory
        // is about twice the NFA it produces.
        let config = thompson::Config::new()
            .nfa_size_limit(Some(2 * MAX_TOTAL_NFA_BYTES))
            .which_captures(WhichCaptures::None)
            .reverse(reverse);
        thompson::Compiler::new()
            .configure(config)
            .build_many_from_hir(hirs)
            .map_err(|e| e.to_string())
    };
    let dfa = DfaConfig::new()
        .cache_capacity(DFA_CACHE_BYTES)
        .skip_cache_capacity_check(true)
        .minimum_cache_clear_count(None);
    let forward = DFA::builder()
        .configure(dfa.clone())
        .build_from_nfa(nfa(false)?)
        .map_err(|e| e.to_string())?;
    let reverse = DFA::builder()
        .configure(
            dfa.prefilter(None)
                .specialize_start_states(false)
                .match_kind(MatchKind::All),
        )
        .build_from_nfa(nfa(true)?)
        .map_err(|e| e.to_string())?;
    Ok(DfaRegex::builder().build_from_dfas(forward, reverse))
}

/// The configuration of one pattern's own capture regex: its span is known already, so no DFA
/// pass to find it first, straight to the capture engines (one-pass DFA when the pattern allows,
/// else the bounded backtracker or the PikeVM, whose tables grow with this one pattern only).
pub(crate) fn capture_config() -> meta::Config {
    meta::Config::new()
        .hybrid(false)
        .dfa(false)
        .nfa_size_limit(Some(MAX_PATTERN_NFA_BYTES))
}

fn mib(bytes: usize) -> String {
    format!("{} MiB", bytes >> 20)
}

fn kib(bytes: usize) -> String {
    format!("{} KiB", bytes.div_ceil(1024))
}
