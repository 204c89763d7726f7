//! Issue 13's captures of the real claude 2.1.331 (`fixtures/captures/<renderer>_<cols>_<scenario>.cast`,
//! recorded by `fixtures/record_claude.sh` against `fixtures/fake_llm.py` at about 250 characters a
//! second): for each, the exact detections of `mpm scan --input cast` (resizes replayed) and the
//! sequence of session states the built-in claude cue table gives over the same bytes.
//!
//! Detections: every right row exactly once, nothing else. A row mpm gets wrong today is listed
//! with the reason as a known failure ([`Case::known_extra`]: may appear, at most once;
//! [`Case::known_missing`]: may be absent), so the test keeps passing when the gap is fixed and
//! fails on any other change.
//!
//! States: the capture's output is replayed through [`CueScanner`] into a [`StateMachine`] the way
//! the supervisor's screen consumer and dispatcher do it (no hooks in a recording: the screen cues,
//! the window title, and silence, taken from the recording's clock, decide), then `exited`. The
//! sequence of states (consecutive repeats folded) must be exactly the listed one, and a `blocked`
//! state must carry the reset time claude showed.
//!
//! Exactly once across turns: `multiturn` repeats turn one's engineer delegation word for word in
//! turn two. mpm treats the repeat as the same request, not a new one: one fingerprint dispatches
//! once per session (`src/detect/dispatch.rs`), and `mpm scan` reports it once. A model that wants
//! the work done again must say something different (a new task text is a new request). Reasons:
//! claude's renderers redraw earlier turns (a resize repaints the whole conversation, `/resume`
//! replays it), and models restate running delegations when they summarise; running a costly agent
//! twice on a restatement is the worse error.

use std::path::PathBuf;
use std::process::Command;

use mpm::events::SessionState;
use mpm::state::cues::{CueScanner, CueTable};
use mpm::state::{Signal, StateMachine};
use serde_json::Value;

/// The supervisor's silence threshold (`supervisor::SILENCE`): no output this long → idle.
const SILENCE_SECS: f64 = 5.0;

fn capture(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/captures")
        .join(format!("{name}.cast"));
    assert!(p.exists(), "capture missing: {}", p.display());
    p
}

/// One detection: category, agent or ticket type, task/title/text, priority.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    cat: String,
    who: String,
    what: String,
    priority: Option<String>,
}

fn row(cat: &str, who: &str, what: &str) -> Row {
    Row {
        cat: cat.into(),
        who: who.into(),
        what: what.into(),
        priority: None,
    }
}

fn ticket(kind: &str, priority: Option<&str>, title: &str) -> Row {
    Row {
        priority: priority.map(String::from),
        ..row("ticket", kind, title)
    }
}

fn scan(name: &str) -> Vec<Row> {
    let out = Command::new(env!("CARGO_BIN_EXE_mpm"))
        .args(["scan", "--input", "cast"])
        .arg(capture(name))
        .env("XDG_CONFIG_HOME", "/nonexistent-mpm-test")
        .output()
        .unwrap_or_else(|e| panic!("running mpm: {e}"));
    assert!(
        out.status.success(),
        "mpm scan failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert_eq!(
                v["final"],
                Value::Bool(true),
                "a provisional row in scan: {l}"
            );
            let (cat, who, what) = crate::common::scan_row(&v);
            Row {
                cat,
                who,
                what,
                priority: v.get("priority").and_then(Value::as_str).map(String::from),
            }
        })
        .collect()
}

/// The states the built-in claude cues give over the capture's output: (state, reset time), each
/// change once, then `exited`.
fn states(name: &str) -> (Vec<(SessionState, Option<String>)>, Vec<String>) {
    let text = std::fs::read_to_string(capture(name)).unwrap();
    let mut cues = CueScanner::new(CueTable::builtin("claude").expect("built-in claude table"));
    let mut m = StateMachine::new();
    let mut out = Vec::new();
    let mut why = Vec::new();
    let mut last = 0.0f64;
    let mut apply = |m: &mut StateMachine, s: &Signal, t: f64| {
        if let Some(tr) = m.on(s) {
            why.push(format!("{t:.2}s {} ({})", tr.state.as_str(), tr.reason));
            out.push((tr.state, tr.resets_at));
        }
    };
    for l in text.lines().skip(1) {
        let ev: Value = serde_json::from_str(l).unwrap();
        let (t, code, data) = (
            ev[0].as_f64().unwrap(),
            ev[1].as_str().unwrap(),
            ev[2].as_str().unwrap(),
        );
        if code != "o" {
            continue;
        }
        if t - last >= SILENCE_SECS {
            apply(&mut m, &Signal::Silence, t);
        }
        last = t;
        let starting = m.state() == SessionState::Starting;
        for sig in cues.feed(data.as_bytes(), starting) {
            apply(&mut m, &sig, t);
        }
    }
    apply(&mut m, &Signal::Exited, last);
    (out, why)
}

/// What one capture must give.
struct Case {
    name: &'static str,
    right: Vec<Row>,
    /// Wrong rows mpm gives today (each with its reason in a comment where the case is built).
    known_extra: Vec<Row>,
    /// Right rows mpm misses today.
    known_missing: Vec<Row>,
    states: Vec<(SessionState, Option<&'static str>)>,
    /// The states mpm gives today when they are wrong (a known failure, the reason where the
    /// case is built); the right ones are accepted too.
    known_states: Option<Vec<(SessionState, Option<&'static str>)>>,
}

fn check(case: &Case) {
    let got = scan(case.name);
    let ctx = || format!("{}: mpm gave\n{got:#?}", case.name);
    let mut extra_seen: Vec<&Row> = Vec::new();
    let mut have: Vec<&Row> = Vec::new();
    for g in &got {
        if case.right.contains(g) {
            have.push(g);
        } else if case.known_extra.contains(g) && !extra_seen.contains(&g) {
            extra_seen.push(g);
        } else {
            panic!("{}: unexpected detection {g:?}\n{}", case.name, ctx());
        }
    }
    let want: Vec<&Row> = case
        .right
        .iter()
        .filter(|r| !case.known_missing.contains(r) || have.contains(r))
        .collect();
    assert_eq!(have, want, "{}", ctx());

    let (got_states, why) = states(case.name);
    let want_states: Vec<(SessionState, Option<String>)> = case
        .states
        .iter()
        .map(|(s, r)| (*s, r.map(String::from)))
        .collect();
    let known: Option<Vec<(SessionState, Option<String>)>> = case
        .known_states
        .as_ref()
        .map(|k| k.iter().map(|(s, r)| (*s, r.map(String::from))).collect());
    if known.as_ref() == Some(&got_states) {
        return;
    }
    assert_eq!(
        got_states,
        want_states,
        "{}: session states; transitions:\n{}",
        case.name,
        why.join("\n")
    );
}

use SessionState::{Blocked, Exited, Idle, NeedsInput, Working};

/// One turn: starting → idle (the prompt) → working → idle (turn done) → exited.
fn one_turn() -> Vec<(SessionState, Option<&'static str>)> {
    vec![(Idle, None), (Working, None), (Idle, None), (Exited, None)]
}

const CACHE_ENGINEER: &str = "add an LRU eviction policy to cache.py with a configurable capacity \
and one unit test per eviction case";
const CACHE_DOCS: &str = "Once the eviction policy lands, document the capacity setting in \
docs/cache.md with an example for a web worker, a note on memory use per entry, and a warning \
that a capacity of zero disables caching entirely.";

/// `fixtures/scenarios/cache_reply.md`: a bold delegation; `**QA**:` (bold `QA:` on a TUI
/// screen); a fenced python block with `# Engineer Agent: …` and `QA Agent: …` lines (code:
/// nothing); a long delegation wrapped over two to four rows; `TODO (High Priority): …` (73
/// columns) directly followed by `FIXME (P2): …` (two tickets, never joined); prose.
fn cache_right() -> Vec<Row> {
    vec![
        row("delegation", "engineer", CACHE_ENGINEER),
        row(
            "delegation",
            "qa",
            "fuzz the cache with random get and put sequences against a dict model",
        ),
        row("delegation", "documentation", CACHE_DOCS),
        ticket(
            "TODO",
            Some("High"),
            "the cache key ignores the query string of a request",
        ),
        ticket("FIXME", Some("P2"), "eviction runs under the global lock"),
    ]
}

/// The code block's line that must not count.
fn code_block_line() -> Row {
    row("delegation", "qa", "neither must this line")
}

/// The python block's `QA Agent: neither must this line` is drawn without colour (python's
/// highlighter leaves names plain) at the prose's own margin, with no fence: on its own it is a
/// line of prose. It sits right below the block's green `# Engineer Agent: …` comment, at the same
/// indent, with no blank row between: the reader takes it as the block's line
/// (`LineReader::with_code_blocks`). A block with no coloured line at all (```` ```text ````) has no
/// such cue on screen (see README, "Code blocks").
fn cache_case(name: &'static str) -> Case {
    Case {
        name,
        right: cache_right(),
        known_extra: vec![],
        known_missing: vec![],
        known_states: None,
        states: one_turn(),
    }
}

#[test]
fn classic_60_cache() {
    check(&cache_case("classic_60_cache"));
}

#[test]
fn classic_80_cache() {
    check(&cache_case("classic_80_cache"));
}

#[test]
fn classic_132_cache() {
    check(&cache_case("classic_132_cache"));
}

/// At 60 columns the block's green comment row fills the width exactly: the plain `QA Agent:
/// neither must this line` row below it is the block's next line, not the comment's wrap (a code
/// row does not wrap onto a row without any code colour), and so code too.
#[test]
fn fullscreen_60_cache() {
    check(&cache_case("fullscreen_60_cache"));
}

#[test]
fn fullscreen_80_cache() {
    check(&cache_case("fullscreen_80_cache"));
}

#[test]
fn fullscreen_132_cache() {
    check(&cache_case("fullscreen_132_cache"));
}

/// Screen reader at 80 columns: flat text, the live line printed as it streams, erased with the
/// status rows below it and printed again longer. Read right since the finality keeps a live
/// line provisional under the status rows (chrome), takes a mid-word longer version as the same
/// line, and cuts a half-written next row off a line it was glued to. `**QA**:` is drawn as a
/// plain `QA:` (this renderer draws no bold at all): once its flat status rows show the renderer, a
/// plain label naming a registered agent is read as the emphasis it lost (`detect::plain_label`).
/// Known failure: this renderer draws no colour at all, so the python block's plain line has no
/// screen cue (only the transcript and the Stop hook know it is code).
#[test]
fn screenreader_80_cache() {
    let mut case = cache_case("screenreader_80_cache");
    case.known_extra = vec![code_block_line()];
    check(&case);
}

/// `index_reply.md` at 80x24 with a resize to 60x20 while the reply streams (the first delegation
/// on screen, the rest still coming) and back to 80x24 after it; the cast's resize events are
/// replayed, so the repaint at 60 columns is read at 60.
#[test]
fn classic_80_resize_mid() {
    check(&Case {
        name: "classic_80_resize_mid",
        right: vec![
            row(
                "delegation",
                "research",
                "measure how long a full rebuild of the search index takes on the staging data \
                 set and report the slowest shard with its document count",
            ),
            row(
                "delegation",
                "security",
                "check that the index never stores the raw password reset tokens",
            ),
            ticket(
                "BUG",
                Some("P1"),
                "the indexer drops documents whose title holds a tab character",
            ),
        ],
        known_extra: vec![],
        known_missing: vec![],
        known_states: None,
        states: one_turn(),
    });
}

/// `multiturn.json`: turn one asks the engineer and notes a TODO; turn two repeats the engineer
/// delegation word for word and adds a QA one. Each once (see the module doc: a repeat is not a
/// new request).
fn multiturn(name: &'static str) -> Case {
    Case {
        name,
        right: vec![
            row(
                "delegation",
                "engineer",
                "write a CSV importer for orders.csv that skips malformed rows and logs each \
                 skipped line number",
            ),
            ticket("TODO", None, "agree on one date format for the order dates"),
            row(
                "delegation",
                "qa",
                "test the importer with an empty file, a header-only file and a file of ten \
                 thousand rows",
            ),
        ],
        known_extra: vec![],
        known_missing: vec![],
        known_states: None,
        states: vec![
            (Idle, None),
            (Working, None),
            (Idle, None),
            (Working, None),
            (Idle, None),
            (Exited, None),
        ],
    }
}

#[test]
fn classic_80_multiturn() {
    check(&multiturn("classic_80_multiturn"));
}

#[test]
fn fullscreen_80_multiturn() {
    check(&multiturn("fullscreen_80_multiturn"));
}

/// `permission.json`: a Bash call outside the working folder under `acceptEdits` asks for
/// permission (needs_input); Enter allows it, the call fails, and the reply after it delegates.
#[test]
fn classic_80_permission() {
    check(&Case {
        name: "classic_80_permission",
        right: vec![row(
            "delegation",
            "ops",
            "create the folder /srv/orders/logs with mode 750 on the staging host",
        )],
        known_extra: vec![],
        known_missing: vec![],
        // claude sets its idle title as the dialog opens, a read before it draws it: the scanner
        // holds an idle title until the next text, which shows the dialog (no moment of idle).
        known_states: None,
        states: vec![
            (Idle, None),
            (Working, None),
            (NeedsInput, None),
            (Working, None),
            (Idle, None),
            (Exited, None),
        ],
    });
}

const QUEUE_RESEARCH: &str = "compare RabbitMQ and NATS JetStream for the order queue at ten \
thousand messages a second";

/// `usage_limit.json` with a (dummy) subscription token: a reply, then a 429 with claude's
/// unified rate-limit headers (status rejected, a 5-hour window resetting three hours later).
/// claude 2.1.331 shows `You've hit your 5-hour limit · resets 4:25pm (UTC)` and a status line
/// `⚠ Usage limit reached · limit resets 4:25pm`: blocked, with the reset time as shown.
fn usage_limit(name: &'static str, states: Vec<(SessionState, Option<&'static str>)>) -> Case {
    Case {
        name,
        right: vec![row("delegation", "research", QUEUE_RESEARCH)],
        known_extra: vec![],
        known_missing: vec![],
        known_states: None,
        states,
    }
}

#[test]
fn classic_80_usage_limit() {
    // The 429 comes back before the classic renderer shows a spinner or a working title: idle,
    // then blocked with the reset time of the first message (the status line's shorter `limit
    // resets 4:25pm` and `continue automatically at 4:25pm` keep it).
    check(&usage_limit(
        "classic_80_usage_limit",
        vec![
            (Idle, None),
            (Working, None),
            (Idle, None),
            (Blocked, Some("4:25pm (UTC)")),
            (Exited, None),
        ],
    ));
}

/// The same in the screen reader (its half-written live line is never read as a detection).
#[test]
fn screenreader_80_usage_limit() {
    // The screen reader's title shows working for the second prompt; its idle title a read before
    // the limit message is held and replaced by blocked.
    let case = usage_limit(
        "screenreader_80_usage_limit",
        vec![
            (Idle, None),
            (Working, None),
            (Idle, None),
            (Working, None),
            (Blocked, Some("4:25pm (UTC)")),
            (Exited, None),
        ],
    );
    check(&case);
}
