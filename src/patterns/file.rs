//! Pattern files: the YAML shape, parsing with positions, and per-file validation.
//!
//! A file is a mapping with `patterns:` (a list) and an optional `version:` (1). Each entry is a
//! whole pattern (`id`, `category`, `regex`, ...) or an override of an earlier one by id, possibly
//! only `id` + `enabled`. Unknown fields are errors. `patterns/schema.json` describes the same shape;
//! a test keeps the two in step.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::PatternError;

/// One pattern file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatternFile {
    /// Format version; only 1 exists.
    #[serde(default)]
    pub version: Option<u32>,
    #[serde(default)]
    pub patterns: Vec<PatternSpec>,
}

/// One entry of `patterns:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatternSpec {
    pub id: Spanned<String>,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub regex: Option<Spanned<String>>,
    #[serde(default)]
    pub literals: Option<Vec<String>>,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub handled_by_agent: Option<bool>,
    #[serde(default)]
    pub require_known_agent: Option<bool>,
    #[serde(default)]
    pub examples: Option<Examples>,
}

/// The field names of [`PatternSpec`], for the schema test.
#[cfg(test)]
pub(crate) const SPEC_FIELDS: &[&str] = &[
    "id",
    "category",
    "regex",
    "literals",
    "enabled",
    "description",
    "handled_by_agent",
    "require_known_agent",
    "examples",
];

/// Example lines run by `mpm patterns check`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Examples {
    #[serde(default, rename = "match")]
    pub matches: Vec<MatchExample>,
    #[serde(default)]
    pub no_match: Vec<String>,
}

/// A line the pattern must detect, optionally with the captures it must give.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum MatchExample {
    Line(String),
    WithCaptures(CapturedExample),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CapturedExample {
    pub line: String,
    #[serde(default)]
    pub captures: BTreeMap<String, String>,
}

impl MatchExample {
    pub fn line(&self) -> &str {
        match self {
            MatchExample::Line(l) => l,
            MatchExample::WithCaptures(c) => &c.line,
        }
    }

    pub fn captures(&self) -> Option<&BTreeMap<String, String>> {
        match self {
            MatchExample::Line(_) => None,
            MatchExample::WithCaptures(c) => Some(&c.captures),
        }
    }
}

/// Parse one file's text. Structural problems only; regexes are checked at compile time.
pub(crate) fn parse(origin: &str, text: &str) -> Result<PatternFile, PatternError> {
    if text.trim().is_empty() {
        return Ok(PatternFile {
            version: None,
            patterns: Vec::new(),
        });
    }
    let file: PatternFile = serde_saphyr::from_str(text).map_err(|e| {
        let (line, col) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        PatternError::Yaml {
            file: origin.to_string(),
            line,
            col,
            message: crate::config::first_line_message(&e),
        }
    })?;
    if let Some(v) = file.version
        && v != 1
    {
        return Err(PatternError::Yaml {
            file: origin.to_string(),
            line: 1,
            col: 1,
            message: format!("unsupported version {v} (only 1 exists)"),
        });
    }
    Ok(file)
}

/// Per-file checks that need no other file: duplicate ids, empty ids and regexes, missing category.
pub(crate) fn validate(origin: &str, file: &PatternFile) -> Vec<PatternError> {
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    for p in &file.patterns {
        let err = |message: String| PatternError::Pattern {
            file: origin.to_string(),
            line: p.id.referenced.line(),
            col: p.id.referenced.column(),
            id: p.id.value.clone(),
            message,
        };
        if p.id.value.trim().is_empty() {
            errors.push(err("empty id".into()));
            continue;
        }
        if !seen.insert(p.id.value.as_str()) {
            errors.push(err("duplicate id in this file".into()));
        }
        if let Some(r) = &p.regex {
            if r.value.trim().is_empty() {
                errors.push(err("empty regex".into()));
            }
            match &p.category {
                None => errors.push(err("a pattern with a regex needs a category".into())),
                Some(c) if c.trim().is_empty() => errors.push(err("empty category".into())),
                _ => {}
            }
        }
        if let Some(lits) = &p.literals
            && lits.iter().any(|l| l.is_empty())
        {
            errors.push(err("empty literal".into()));
        }
    }
    errors
}
