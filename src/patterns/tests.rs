//! Unit tests of loading, merging and compiling; the table of real lines is in
//! `tests/patterns_engine.rs`.

use std::io::Write;
use std::path::PathBuf;

use super::file::{self, SPEC_FIELDS};
use super::{BUILTIN, Engine, EngineBuilder, PatternError, Prefilter, SCHEMA_JSON};
use crate::events::TextSource;

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    path
}

/// Check one file on top of nothing (no built-ins); the error lines.
fn problems_of(text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "p.yaml", text);
    EngineBuilder::default()
        .builtin(false)
        .file(&path)
        .check()
        .iter()
        .map(|e| {
            e.to_string()
                .replace(&format!("{}", path.display()), "FILE")
        })
        .collect()
}

#[test]
fn rejected_files_give_one_line_errors_with_positions() {
    let table: &[(&str, &str)] = &[
        ("patterns: [", "FILE:1:"),
        (
            "patterns:\n  - id: a\n    category: x\n    regex: 'a'\n    colour: red\n",
            "FILE:5:5: unknown field `colour`",
        ),
        ("bogus: 1\n", "FILE:1:1: unknown field `bogus`"),
        (
            "version: 2\npatterns: []\n",
            "FILE:1:1: unsupported version 2",
        ),
        (
            "patterns:\n  - id: a\n    category: x\n    regex: '(unclosed'\n",
            "FILE:2:9: pattern a: invalid regex: unclosed group (at offset 0)",
        ),
        (
            "patterns:\n  - id: a\n    category: x\n    regex: ''\n",
            "FILE:2:9: pattern a: empty regex",
        ),
        (
            "patterns:\n  - id: a\n    category: x\n    regex: 'a'\n    literals: []\n",
            "FILE:2:9: pattern a: empty `literals` list: no line could ever match (omit it to let mpm derive literals)",
        ),
        (
            "patterns:\n  - id: a\n    category: x\n    regex: 'x*'\n",
            "FILE:2:9: pattern a: the regex matches the empty string",
        ),
        (
            "patterns:\n  - id: a\n    category: x\n    regex: '^'\n",
            "FILE:2:9: pattern a: the regex matches the empty string",
        ),
        (
            "patterns:\n  - id: a\n    category: x\n    regex: 'a'\n  - id: a\n    category: x\n    regex: 'b'\n",
            "FILE:5:9: pattern a: duplicate id in this file",
        ),
        (
            "patterns:\n  - id: a\n    regex: 'a'\n",
            "FILE:2:9: pattern a: a pattern with a regex needs a non-empty category",
        ),
        (
            "patterns:\n  - id: a\n    enabled: false\n",
            "FILE:2:9: pattern a: no regex, and no earlier pattern with this id",
        ),
        (
            "patterns:\n  - id: a\n    category: t\n    regex: '^A: (?P<title>.+)'\n    examples:\n      match: ['B: x']\n",
            "FILE:2:9: pattern a: example \"B: x\" should match: nothing matched",
        ),
        (
            "patterns:\n  - id: a\n    category: t\n    regex: '^A: (?P<title>.+)'\n    examples:\n      match: [{line: 'A: x', captures: {title: 'no'}}]\n",
            "FILE:2:9: pattern a: example \"A: x\": capture title is \"x\", expected \"no\"",
        ),
        (
            "patterns:\n  - id: a\n    category: t\n    regex: '^A: (?P<title>.+)'\n    examples:\n      no_match: ['A: x']\n",
            "FILE:2:9: pattern a: example \"A: x\" should not match, but it does",
        ),
    ];
    for (text, want) in table {
        let got = problems_of(text);
        assert_eq!(got.len(), 1, "{text:?} gave {got:?}");
        assert!(
            got[0].starts_with(want),
            "{text:?}: got {:?}, want prefix {want:?}",
            got[0]
        );
        assert!(!got[0].contains('\n'), "{got:?}");
    }
}

#[test]
fn every_problem_is_reported() {
    let got = problems_of(
        "patterns:\n  - id: a\n    category: x\n    regex: '('\n  - id: b\n    category: x\n    regex: '['\n",
    );
    assert_eq!(got.len(), 2, "{got:?}");
}

#[test]
fn build_error_is_one_line_and_summarises() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "p.yaml",
        "patterns:\n  - id: a\n    category: x\n    regex: '('\n  - id: b\n    category: x\n    regex: '['\n",
    );
    let err = EngineBuilder::default().file(&path).build().unwrap_err();
    assert!(matches!(err, PatternError::Many { more: 1, .. }), "{err:?}");
    assert!(!err.to_string().contains('\n'));
    let missing = EngineBuilder::default()
        .file(dir.path().join("nope.yaml"))
        .build()
        .unwrap_err();
    assert!(matches!(missing, PatternError::Io { .. }), "{missing:?}");
}

#[test]
fn later_files_override_and_disable_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        &dir,
        "a.yaml",
        "patterns:\n  - id: deploy\n    category: deploy\n    regex: '^DEPLOY: (?P<title>.+)'\n",
    );
    let b = write(
        &dir,
        "b.yaml",
        "patterns:\n  - id: deploy\n    category: release\n    regex: '^SHIP: (?P<title>.+)'\n  - id: ticket-keyword\n    enabled: false\n",
    );
    let engine = Engine::builder().file(&a).file(&b).build().unwrap();
    assert!(engine.detect("DEPLOY: x", TextSource::Text).is_empty());
    let d = engine.detect("SHIP: x", TextSource::Text);
    assert_eq!(d[0].category, "release");
    assert!(engine.detect("TODO: x", TextSource::Text).is_empty());
    let info = engine
        .patterns()
        .iter()
        .find(|p| p.id == "ticket-keyword")
        .unwrap();
    assert!(!info.enabled);
    assert_eq!(info.source, b.display().to_string());
    // The bracket form is still on.
    assert_eq!(engine.detect("[TODO] x", TextSource::Text).len(), 1);

    // Re-enabling in a third file; a folder is read in name order.
    let c = write(
        &dir,
        "c.yaml",
        "patterns:\n  - id: ticket-keyword\n    enabled: true\n",
    );
    let engine = Engine::builder().file(dir.path()).build().unwrap();
    assert_eq!(engine.detect("TODO: x", TextSource::Text).len(), 1);
    assert!(c.exists());

    // An override without regex may only toggle.
    let d2 = tempfile::tempdir().unwrap();
    let bad = write(
        &d2,
        "x.yaml",
        "patterns:\n  - id: ticket-keyword\n    category: other\n",
    );
    let err = Engine::builder().file(&bad).build().unwrap_err();
    assert!(err.to_string().contains("may only set `enabled`"), "{err}");
}

#[test]
fn builtins_can_be_left_out() {
    let engine = Engine::builder().builtin(false).build().unwrap();
    assert!(engine.patterns().is_empty());
    assert!(engine.detect("TODO: x", TextSource::Text).is_empty());
}

#[test]
fn prefilter_kinds() {
    let engine = Engine::builder().build().unwrap();
    let kind = |id: &str| {
        engine
            .patterns()
            .iter()
            .find(|p| p.id == id)
            .and_then(|p| p.prefilter)
    };
    assert_eq!(kind("ticket-keyword"), Some(Prefilter::LineStart));
    assert_eq!(kind("delegation-agent-line"), Some(Prefilter::Anywhere));
    // No built-in pattern runs on every line.
    assert!(
        engine
            .patterns()
            .iter()
            .all(|p| p.prefilter != Some(Prefilter::EveryLine)),
        "{:?}",
        engine.patterns()
    );
}

#[test]
fn word_boundaries_are_ascii() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        &dir,
        "w.yaml",
        "patterns:\n  - id: w\n    category: x\n    regex: '\\bfib\\b'\n    literals: ['fib']\n",
    );
    let engine = Engine::builder().builtin(false).file(&p).build().unwrap();
    assert_eq!(engine.matched_ids("call fib now"), ["w"]);
    assert!(engine.matched_ids("xfib").is_empty());
    // `é` is not an ASCII word character, so there is a boundary between it and `f` (a Unicode `\b`
    // would see none).
    assert_eq!(engine.matched_ids("éfib"), ["w"]);
}

#[test]
fn rejected_known_agent_match_does_not_hide_later_ones() {
    let engine = Engine::builder().build().unwrap();
    // `**Context**:` is rejected; the error later in the line is still found.
    let d = engine.detect("**Context**: FAILED", TextSource::Text);
    assert!(d.iter().all(|d| d.category != "delegation"), "{d:?}");
}

#[test]
fn engine_is_send_and_sync() {
    fn is<T: Send + Sync + 'static>() {}
    is::<Engine>();
    is::<std::sync::Arc<Engine>>();
}

/// The names in a JSON object's `properties`, sorted.
fn property_names(v: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = v["properties"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn schema_matches_the_structs() {
    let schema: serde_json::Value = serde_json::from_str(SCHEMA_JSON).unwrap();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(property_names(&schema), ["patterns", "version"]);
    assert_eq!(schema["additionalProperties"], false);
    let pattern = &schema["$defs"]["pattern"];
    assert_eq!(pattern["additionalProperties"], false);
    let mut fields: Vec<String> = SPEC_FIELDS.iter().map(|s| s.to_string()).collect();
    fields.sort();
    assert_eq!(property_names(pattern), fields);
    let examples = &pattern["properties"]["examples"];
    assert_eq!(property_names(examples), ["match", "no_match"]);
    // SPEC_FIELDS is what serde accepts: a file with every field parses, one more field does not.
    let all = "patterns:\n  - id: a\n    category: c\n    regex: 'x'\n    literals: ['x']\n    enabled: true\n    description: d\n    handled_by_agent: false\n    require_known_agent: false\n    in_code: false\n    examples: {match: [x], no_match: [y]}\n";
    assert!(file::parse("t", all).is_ok());
    assert_eq!(SPEC_FIELDS.len(), 10);
}

/// A small structural check of a YAML value against the schema's shape (types, required fields,
/// no additional properties) — enough to keep the built-in packs honest without a validator crate.
#[test]
fn builtin_packs_conform_to_the_schema() {
    let schema: serde_json::Value = serde_json::from_str(SCHEMA_JSON).unwrap();
    let pattern_props = property_names(&schema["$defs"]["pattern"]);
    for (origin, text) in BUILTIN {
        let v: serde_json::Value = serde_saphyr::from_str(text).unwrap();
        let top = v.as_object().unwrap();
        for k in top.keys() {
            assert!(property_names(&schema).contains(k), "{origin}: {k}");
        }
        assert_eq!(v["version"], 1, "{origin}");
        for p in v["patterns"].as_array().unwrap() {
            let obj = p.as_object().unwrap();
            for k in obj.keys() {
                assert!(pattern_props.contains(k), "{origin}: unknown {k}");
            }
            for k in ["id", "category", "regex", "description"] {
                assert!(obj[k].is_string(), "{origin}: {k} in {p}");
            }
            let ex = &p["examples"];
            assert!(
                ex["match"].as_array().is_some_and(|m| !m.is_empty()),
                "{origin}: {} needs match examples",
                p["id"]
            );
            assert!(
                ex["no_match"].as_array().is_some_and(|m| !m.is_empty()),
                "{origin}: {} needs no_match examples",
                p["id"]
            );
        }
        let parsed = file::parse(origin, text).unwrap();
        assert!(!parsed.patterns.is_empty());
    }
}

#[test]
fn builtin_examples_pass() {
    let problems = Engine::builder().check();
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn regex_size_and_nesting_limits_name_the_pattern() {
    let deep = format!("{}a{}", "(".repeat(100), ")".repeat(100));
    let long = "a".repeat(super::MAX_REGEX_BYTES + 1);
    let huge = r"^(?:\w+\s+){0,300}X(?P<title>.+)";
    for (regex, want) in [
        (deep.as_str(), "nested parentheses/brackets (64)"),
        (long.as_str(), "bytes long, more than 16384 (the limit)"),
        (huge, "the per-pattern limit"),
    ] {
        let text = format!("patterns:\n  - id: big\n    category: x\n    regex: '{regex}'\n");
        let problems = problems_of(&text);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("FILE:2:9: pattern big: ") && problems[0].contains(want),
            "{problems:?}"
        );
    }
}

#[test]
fn patterns_past_the_cap_are_refused_at_the_first_one_beyond() {
    let mut text = String::from("patterns:\n");
    for i in 0..super::MAX_PATTERNS + 5 {
        text.push_str(&format!(
            "  - id: t{i}\n    category: x\n    regex: 'tok{i}x'\n"
        ));
    }
    let problems = problems_of(&text);
    let beyond = super::MAX_PATTERNS;
    let line = 2 + 3 * beyond;
    assert_eq!(
        problems,
        [format!(
            "FILE:{line}:9: pattern t{beyond}: more than 2000 patterns (the limit); this and every later pattern is left out"
        )]
    );
}

#[test]
fn only_patterns_with_in_code_fire_on_code_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "code.yaml",
        "patterns:\n  - id: code-note\n    category: note\n    in_code: true\n    regex: '^NOTE:\\s+(?P<title>.+)'\n",
    );
    let engine = EngineBuilder::default().file(&path).build().unwrap();
    let line = "  QA Agent: in a block";
    assert_eq!(engine.detect(line, TextSource::Screen).len(), 1);
    assert!(engine.detect_code(line, TextSource::Screen).is_empty());
    let note = engine.detect_code("NOTE: keep this", TextSource::Screen);
    assert_eq!(note.len(), 1);
    assert_eq!(note[0].pattern, "code-note");
    let info = engine
        .patterns()
        .iter()
        .find(|p| p.id == "code-note")
        .unwrap();
    assert!(info.in_code);
    // The built-ins never fire on code.
    let builtin = Engine::builder().build().unwrap();
    assert!(builtin.patterns().iter().all(|p| !p.in_code));
    assert!(builtin.detect_code(line, TextSource::Screen).is_empty());
}
