//! Property tests: arbitrary input never panics, and nothing is detected out of thin air.

use std::sync::OnceLock;

use mpm::events::TextSource;
use mpm::patterns::Engine;
use proptest::prelude::*;

fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| Engine::builder().build().expect("built-ins compile"))
}

/// Every built-in delegation format contains one of these (lower-cased) — the property below checks
/// the engine never invents a delegation from a line without one.
const DELEGATION_MARKERS: &[&str] = &["agent", "task", "delegat", "**", "ask ", "→", "->"];

/// Lines built from pieces that matter to the patterns, glued with random text.
fn line() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("**".to_string()),
        Just("Agent".to_string()),
        Just(" Agent: ".to_string()),
        Just("Task(".to_string()),
        Just(")".to_string()),
        Just(": ".to_string()),
        Just("Delegating to ".to_string()),
        Just("TODO".to_string()),
        Just("BUG (".to_string()),
        Just("Error: ".to_string()),
        Just("API Error: 400".to_string()),
        Just("● ".to_string()),
        Just("⎿ \u{a0}".to_string()),
        Just("> ".to_string()),
        Just("1. ".to_string()),
        Just("- ".to_string()),
        Just("Engineer".to_string()),
        Just("Version Control".to_string()),
        "[a-zA-Z0-9 :()*\\-\\[\\]>.]{0,12}",
        "\\PC{0,8}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_and_no_delegation_without_a_marker(l in line()) {
        let found = engine().detect(&l, TextSource::Screen);
        let lower = l.to_lowercase();
        let has_marker = DELEGATION_MARKERS.iter().any(|m| lower.contains(m));
        for d in &found {
            prop_assert!(!d.category.is_empty());
            prop_assert!(!d.pattern.is_empty());
            if d.category == "delegation" {
                prop_assert!(has_marker, "delegation from {:?}: {:?}", l, d);
                prop_assert!(d.task.as_deref().is_some_and(|t| !t.is_empty()), "{:?}", d);
                prop_assert!(d.agent.as_deref().is_none_or(|a| !a.is_empty()), "{:?}", d);
            }
        }
        // At most one detection per category.
        let mut cats: Vec<&str> = found.iter().map(|d| d.category.as_str()).collect();
        cats.sort();
        let n = cats.len();
        cats.dedup();
        prop_assert_eq!(n, cats.len());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let found = engine().detect_bytes(&bytes, TextSource::Text);
        // Random bytes carry no delegation unless they spell a marker.
        let text = String::from_utf8_lossy(&bytes).to_lowercase();
        if !DELEGATION_MARKERS.iter().any(|m| text.contains(m)) {
            prop_assert!(found.iter().all(|d| d.category != "delegation"), "{:?}", found);
        }
    }

    #[test]
    fn screen_decoration_does_not_change_what_is_found(l in line()) {
        // Only for lines that do not already start with a marker the normaliser would eat.
        let plain = engine().detect(&l, TextSource::Text);
        if mpm::patterns::normalize_line(&l) == l.trim_end() && !l.is_empty() {
            for prefix in ["  ", "● ", "  ⎿  "] {
                let decorated = engine().detect(&format!("{prefix}{l}"), TextSource::Text);
                prop_assert_eq!(&plain, &decorated, "prefix {:?}", prefix);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// The bulk path gives exactly what the per-line path gives.
    #[test]
    fn detect_text_equals_detect_per_line(lines in prop::collection::vec(line(), 0..20)) {
        let text = lines.join("\n");
        let bulk = engine().detect_text(&text, TextSource::Transcript);
        let mut per_line = Vec::new();
        let mut start = 0;
        for l in text.split('\n') {
            for d in engine().detect(l, TextSource::Transcript) {
                per_line.push((start..start + l.len(), d));
            }
            start += l.len() + 1;
        }
        prop_assert_eq!(bulk, per_line);
    }
}

#[test]
fn detect_text_on_the_reply() {
    let text = "I'll coordinate this.\n\n**Engineer Agent**: build it\r\nTask(Engineer: implement fibonacci function)\n  Engineer Agent: rendered\nprose with Delegating to QA Agent: x\nTODO: last line without newline";
    let found = engine().detect_text(text, TextSource::Transcript);
    let got: Vec<(&str, Option<&str>)> = found
        .iter()
        .map(|(r, d)| (&text[r.clone()], d.task.as_deref().or(d.title.as_deref())))
        .collect();
    assert_eq!(
        got,
        [
            ("**Engineer Agent**: build it\r", Some("build it")),
            (
                "Task(Engineer: implement fibonacci function)",
                Some("implement fibonacci function")
            ),
            ("  Engineer Agent: rendered", Some("rendered")),
            (
                "TODO: last line without newline",
                Some("last line without newline")
            ),
        ]
    );
}
