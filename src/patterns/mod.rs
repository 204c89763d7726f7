//! YAML pattern packs and the compiled detection engine.
//!
//! Pattern files (built-in `patterns/*.yaml`, compiled into the binary, then user files) are merged
//! by id in contract order — built-in < `$XDG_CONFIG_HOME/mpm/patterns/*.yaml` <
//! `./.mpm/patterns/*.yaml` < `--patterns` — and every active pattern is compiled into one
//! [`Engine`]: literal prefilters plus multi-pattern regexes, within the memory limits of
//! [`limits`]. See [`Engine`] for costs.
//!
//! Callers: [`Engine::detect`] per logical line (screen rows after line assembly),
//! [`Engine::detect_text`] for a block of lines (transcript text, `-p` output, plain text; faster),
//! [`CodeFence`] to skip fenced code in markdown sources. Lines are normalised inside
//! ([`normalize_line`]); callers pass de-styled text with decorations still on.
//!
//! ```
//! use mpm::events::TextSource;
//! use mpm::patterns::Engine;
//!
//! let engine = Engine::builder().build().unwrap();
//! let found = engine.detect("**Engineer Agent**: add tests", TextSource::Transcript);
//! assert_eq!(found[0].agent.as_deref(), Some("engineer"));
//! assert_eq!(found[0].task.as_deref(), Some("add tests"));
//! ```

mod agents;
mod engine;
mod fence;
mod file;
mod limits;
mod normalize;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use agents::{AgentResolver, agent_key};
pub use engine::{Engine, MAX_LINE_BYTES};
pub use fence::CodeFence;
pub use limits::{
    DFA_CACHE_BYTES, MAX_PATTERN_NFA_BYTES, MAX_PATTERNS, MAX_REGEX_BYTES, MAX_TOTAL_NFA_BYTES,
    NEST_LIMIT,
};
pub use normalize::{MAX_STRIP_STEPS, normalize_line, push_lower_words, push_lowercase};

use crate::config::AgentConfig;
use file::{Examples, PatternFile};

/// How the origin of every built-in pack starts.
const BUILTIN_ORIGIN: &str = "builtin:";

/// The built-in packs, compiled into the binary: (origin as shown to users, text).
const BUILTIN: &[(&str, &str)] = &[
    (
        "builtin:patterns/delegations.yaml",
        include_str!("../../patterns/delegations.yaml"),
    ),
    (
        "builtin:patterns/tickets.yaml",
        include_str!("../../patterns/tickets.yaml"),
    ),
    (
        "builtin:patterns/errors.yaml",
        include_str!("../../patterns/errors.yaml"),
    ),
];

/// The JSON Schema (draft 2020-12) of pattern files, as published in `patterns/schema.json`.
pub const SCHEMA_JSON: &str = include_str!("../../patterns/schema.json");

/// A pattern-file or pattern-compilation error; maps to exit status 2. `Display` is one line,
/// starting with `file:line:col:` where a position is known.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    /// Unparsable YAML or a shape error (unknown field, wrong type), at the parser's position.
    #[error("{file}:{line}:{col}: {message}")]
    Yaml {
        /// The pattern file.
        file: String,
        /// 1-based line.
        line: u64,
        /// 1-based column.
        col: u64,
        /// What is wrong.
        message: String,
    },
    /// A problem with one pattern (invalid regex, duplicate id, failing example, ...), at its `id`.
    #[error("{file}:{line}:{col}: pattern {id}: {message}")]
    Pattern {
        /// The pattern file.
        file: String,
        /// 1-based line of the pattern.
        line: u64,
        /// 1-based column of the pattern.
        col: u64,
        /// The pattern's id.
        id: String,
        /// What is wrong.
        message: String,
    },
    /// A pattern file or folder could not be read.
    #[error("{file}: {source}")]
    Io {
        /// The file or folder.
        file: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The merged set could not be compiled (for instance, too big).
    #[error("{0}")]
    Compile(String),
    /// More than one problem: the first, and how many more (`mpm patterns check` lists them all).
    #[error("{first} (and {more} more problems; run `mpm patterns check`)")]
    Many {
        /// The first problem.
        first: Box<PatternError>,
        /// How many more there are.
        more: usize,
    },
}

impl PatternError {
    /// One error from a non-empty list: the only one, or [`PatternError::Many`].
    fn from_list(mut errors: Vec<PatternError>) -> PatternError {
        if errors.len() == 1 {
            return errors.remove(0);
        }
        let more = errors.len().saturating_sub(1);
        let first = if errors.is_empty() {
            PatternError::Compile("unknown pattern error".into())
        } else {
            errors.remove(0)
        };
        PatternError::Many {
            first: Box::new(first),
            more,
        }
    }
}

/// Where a pattern is tried: which prefilter admits a line to the regex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Prefilter {
    /// The regex is anchored at the line start: its prefix literals are checked there only.
    LineStart,
    /// One of its literals must occur somewhere in the line.
    Anywhere,
    /// No usable literal: the regex runs on every line (costs; give it `literals:`).
    EveryLine,
}

/// What `mpm patterns list` shows about one pattern (active or disabled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatternInfo {
    /// The pattern's id (unique in the merged set).
    pub id: String,
    /// `delegation`, `ticket`, `error`, or a custom category.
    pub category: String,
    /// The file that defined (last overrode) it; built-ins as `builtin:patterns/<file>.yaml`.
    pub source: String,
    /// What the pattern is for.
    pub description: String,
    /// Whether it is active.
    pub enabled: bool,
    /// The regular expression.
    pub regex: String,
    /// Detections are claude's own delegations (recorded, never run by mpm).
    pub handled_by_agent: bool,
    /// Fires only when the `agent` capture names a registered agent.
    pub require_known_agent: bool,
    /// Also fires on lines drawn as code (a fenced block's lines on screen, lines inside fences in
    /// markdown); other patterns never do.
    pub in_code: bool,
    /// Literals the prefilter looks for (lower case).
    pub literals: Vec<String>,
    /// How the prefilter admits lines; `None` for disabled patterns.
    pub prefilter: Option<Prefilter>,
}

/// One pattern after merging all files, before compilation.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub id: String,
    pub category: String,
    pub regex: String,
    pub literals: Option<Vec<String>>,
    pub enabled: bool,
    pub description: String,
    pub handled_by_agent: bool,
    pub require_known_agent: bool,
    pub in_code: bool,
    pub examples: Examples,
    pub origin: String,
    pub line: u64,
    pub col: u64,
}

impl Resolved {
    fn error(&self, message: impl Into<String>) -> PatternError {
        PatternError::Pattern {
            file: self.origin.clone(),
            line: self.line,
            col: self.col,
            id: self.id.clone(),
            message: message.into(),
        }
    }
}

/// Builds an [`Engine`]: which packs, which files, which agent registry.
#[derive(Debug, Clone)]
pub struct EngineBuilder {
    builtin: bool,
    files: Vec<PathBuf>,
    agents: Option<BTreeMap<String, AgentConfig>>,
}

impl Default for EngineBuilder {
    fn default() -> Self {
        EngineBuilder {
            builtin: true,
            files: Vec::new(),
            agents: None,
        }
    }
}

impl EngineBuilder {
    /// Include the built-in packs (default: yes).
    pub fn builtin(mut self, yes: bool) -> Self {
        self.builtin = yes;
        self
    }

    /// Add a pattern file, or a folder whose `*.yaml`/`*.yml` files are read in name order. Later
    /// files override earlier ones by id.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.files.push(path.into());
        self
    }

    /// Add several files or folders, in order.
    pub fn files<I, P>(mut self, paths: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<PathBuf>,
    {
        self.files.extend(paths.into_iter().map(Into::into));
        self
    }

    /// The agent registry used to resolve spoken names (default: the built-in agents).
    pub fn agents(mut self, agents: &BTreeMap<String, AgentConfig>) -> Self {
        self.agents = Some(agents.clone());
        self
    }

    /// Load, merge, validate and compile. Reads the files; the first problem (or a summary of several)
    /// is the error.
    pub fn build(self) -> Result<Engine, PatternError> {
        let (merged, errors) = self.load();
        if !errors.is_empty() {
            return Err(PatternError::from_list(errors));
        }
        match Engine::compile(merged, &self.agents_or_default()) {
            (Some(engine), errors) if errors.is_empty() => Ok(engine),
            (_, errors) => Err(PatternError::from_list(errors)),
        }
    }

    /// Every problem, one error each: YAML and shape errors, invalid patterns, and failing
    /// examples. Empty when all is well. This is `mpm patterns check`.
    pub fn check(self) -> Vec<PatternError> {
        let (merged, mut errors) = self.load();
        let agents = self.agents_or_default();
        let (engine, compile_errors) = Engine::compile(merged, &agents);
        errors.extend(compile_errors);
        if let Some(engine) = engine {
            errors.extend(engine.run_examples());
        }
        errors
    }

    fn agents_or_default(&self) -> BTreeMap<String, AgentConfig> {
        self.agents
            .clone()
            .unwrap_or_else(|| crate::config::Config::default().agents)
    }

    /// Read every source in order and merge by id; collects errors instead of stopping at the first.
    fn load(&self) -> (Vec<Resolved>, Vec<PatternError>) {
        let mut merged: Vec<Resolved> = Vec::new();
        let mut errors = Vec::new();
        let mut sources: Vec<(String, String)> = Vec::new();
        if self.builtin {
            sources.extend(
                BUILTIN
                    .iter()
                    .map(|(o, t)| ((*o).to_string(), (*t).to_string())),
            );
        }
        for path in &self.files {
            for file in expand(path) {
                match std::fs::read(&file) {
                    Ok(bytes) => sources.push((
                        file.display().to_string(),
                        String::from_utf8_lossy(&bytes).into_owned(),
                    )),
                    Err(source) => errors.push(PatternError::Io {
                        file: file.display().to_string(),
                        source,
                    }),
                }
            }
        }
        for (origin, text) in &sources {
            let mut parsed = match file::parse(origin, text) {
                Ok(f) => f,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            errors.extend(file::validate(origin, &mut parsed));
            merge(&mut merged, origin, parsed, &mut errors);
        }
        (merged, errors)
    }
}

/// Apply one file on top of the merged list: whole replacement by id (keeping the original
/// priority position), `enabled`-only toggles, or new patterns appended.
fn merge(
    merged: &mut Vec<Resolved>,
    origin: &str,
    parsed: PatternFile,
    errors: &mut Vec<PatternError>,
) {
    for spec in parsed.patterns {
        let id = spec.id.value.clone();
        let (line, col) = (spec.id.referenced.line(), spec.id.referenced.column());
        let existing = merged.iter().position(|r| r.id == id);
        match spec.regex {
            Some(regex) => {
                let r = Resolved {
                    id,
                    category: spec.category.unwrap_or_default(),
                    regex: regex.value,
                    literals: spec.literals,
                    enabled: spec.enabled.unwrap_or(true),
                    description: spec.description.unwrap_or_default(),
                    handled_by_agent: spec.handled_by_agent.unwrap_or(false),
                    require_known_agent: spec.require_known_agent.unwrap_or(false),
                    in_code: spec.in_code.unwrap_or(false),
                    examples: spec.examples.unwrap_or_default(),
                    origin: origin.to_string(),
                    line,
                    col,
                };
                match existing {
                    Some(i) => merged[i] = r,
                    None => merged.push(r),
                }
            }
            None => {
                let err = |message: &str| PatternError::Pattern {
                    file: origin.to_string(),
                    line,
                    col,
                    id: id.clone(),
                    message: message.to_string(),
                };
                let only_toggle = spec.category.is_none()
                    && spec.literals.is_none()
                    && spec.description.is_none()
                    && spec.handled_by_agent.is_none()
                    && spec.require_known_agent.is_none()
                    && spec.in_code.is_none()
                    && spec.examples.is_none();
                match (existing, spec.enabled) {
                    (None, _) => errors.push(err(
                        "no regex, and no earlier pattern with this id to enable or disable",
                    )),
                    (Some(_), None) => errors.push(err(
                        "an override without `regex` may only set `enabled`, and must set it",
                    )),
                    (Some(_), Some(_)) if !only_toggle => {
                        errors.push(err("an override without `regex` may only set `enabled`"))
                    }
                    (Some(i), Some(enabled)) => {
                        merged[i].enabled = enabled;
                        merged[i].origin = origin.to_string();
                        merged[i].line = line;
                        merged[i].col = col;
                    }
                }
            }
        }
    }
}

/// A file as itself; a folder as its `*.yaml`/`*.yml` files in name order (not recursive).
fn expand(path: &Path) -> Vec<PathBuf> {
    if !path.is_dir() {
        return vec![path.to_path_buf()];
    }
    let mut files: Vec<PathBuf> = match std::fs::read_dir(path) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect(),
        Err(_) => return vec![path.to_path_buf()],
    };
    files.sort();
    files
}

/// The configured pattern files after the built-ins, in contract order:
/// `$XDG_CONFIG_HOME/mpm/patterns/*.yaml` < `./.mpm/patterns/*.yaml` < `extra` (the `--patterns`
/// flags, in order; folders expanded, missing paths kept so that loading reports them).
pub fn configured_sources(extra: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in [
        crate::config::paths::config_dir().join("patterns"),
        PathBuf::from(".mpm").join("patterns"),
    ] {
        if dir.is_dir() {
            out.extend(expand(&dir));
        }
    }
    for p in extra {
        out.extend(expand(p));
    }
    out
}

/// The built-in pack origins (`builtin:patterns/<name>.yaml`) and texts.
pub fn builtin_packs() -> impl Iterator<Item = (&'static str, &'static str)> {
    BUILTIN.iter().copied()
}

#[cfg(test)]
mod tests;
