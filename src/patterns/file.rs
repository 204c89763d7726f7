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
    pub in_code: Option<bool>,
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
    "in_code",
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

/// A line the pattern must detect, optionally with the captures it must give: a plain string, or
/// a mapping `{line, captures}`.
#[derive(Debug, Clone)]
pub(crate) enum MatchExample {
    Line(String),
    WithCaptures(CapturedExample),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CapturedExample {
    pub line: String,
    #[serde(default)]
    pub captures: BTreeMap<String, Scalar>,
}

/// A capture value as written: strings, numbers and booleans all compare as their text (YAML reads
/// `status: 400` as a number and `y` as a boolean; the example still means the text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for MatchExample {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = MatchExample;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a line, or a mapping with `line` and `captures`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<MatchExample, E> {
                Ok(MatchExample::Line(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<MatchExample, A::Error> {
                CapturedExample::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(MatchExample::WithCaptures)
            }
        }
        d.deserialize_any(V)
    }
}

impl MatchExample {
    pub(crate) fn line(&self) -> &str {
        match self {
            MatchExample::Line(l) => l,
            MatchExample::WithCaptures(c) => &c.line,
        }
    }

    pub(crate) fn captures(&self) -> Option<&BTreeMap<String, Scalar>> {
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
/// Entries with a problem are removed from `file` (so the rest can still be checked); one error each.
pub(crate) fn validate(origin: &str, file: &mut PatternFile) -> Vec<PatternError> {
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    file.patterns.retain(|p| {
        let err = |message: &str| PatternError::Pattern {
            file: origin.to_string(),
            line: p.id.referenced.line(),
            col: p.id.referenced.column(),
            id: p.id.value.clone(),
            message: message.to_string(),
        };
        let problem = if p.id.value.trim().is_empty() {
            Some("empty id")
        } else if !seen.insert(p.id.value.clone()) {
            Some("duplicate id in this file")
        } else if p.regex.as_ref().is_some_and(|r| r.value.trim().is_empty()) {
            Some("empty regex")
        } else if p.regex.is_some() && p.category.as_deref().is_none_or(|c| c.trim().is_empty()) {
            Some("a pattern with a regex needs a non-empty category")
        } else if p.literals.as_ref().is_some_and(Vec::is_empty) {
            Some("empty `literals` list: no line could ever match (omit it to let mpm derive literals)")
        } else if p
            .literals
            .as_ref()
            .is_some_and(|l| l.iter().any(String::is_empty))
        {
            Some("empty literal")
        } else {
            None
        };
        match problem {
            Some(m) => {
                errors.push(err(m));
                false
            }
            None => true,
        }
    });
    errors
}
