//! The engine on real lines: every line of `shared/realclient/scenarios/delegation_reply.md` in its
//! markdown (transcript / `-p`) form and in its rendered screen forms, plus precision cases.

use mpm::events::{Detection, TextSource};
use mpm::patterns::{Engine, MAX_LINE_BYTES, normalize_line};

/// What one line must give: `None` = no detection at all.
#[derive(Debug, Clone, Copy)]
enum Want {
    None,
    Delegation(&'static str, &'static str),
    /// A delegation the agent CLI runs itself.
    Handled(&'static str, &'static str),
    Ticket(&'static str, &'static str),
    TicketPriority(&'static str, &'static str, &'static str),
    Error,
}

fn engine() -> Engine {
    Engine::builder().build().expect("built-in packs compile")
}

fn check(engine: &Engine, line: &str, want: Want) {
    let got = engine.detect(line, TextSource::Text);
    let ctx = format!("line {line:?} gave {got:#?}");
    let one = |cat: &str| -> &Detection {
        assert_eq!(got.len(), 1, "{ctx}");
        assert_eq!(got[0].category, cat, "{ctx}");
        &got[0]
    };
    match want {
        Want::None => assert!(got.is_empty(), "{ctx}"),
        Want::Delegation(agent, task) | Want::Handled(agent, task) => {
            let d = one("delegation");
            assert_eq!(d.agent.as_deref(), Some(agent), "{ctx}");
            assert_eq!(d.task.as_deref(), Some(task), "{ctx}");
            assert_eq!(
                d.handled_by_agent,
                matches!(want, Want::Handled(..)),
                "{ctx}"
            );
        }
        Want::Ticket(kind, title) => {
            let d = one("ticket");
            assert_eq!(d.ticket_type.as_deref(), Some(kind), "{ctx}");
            assert_eq!(d.title.as_deref(), Some(title), "{ctx}");
            assert_eq!(d.priority, None, "{ctx}");
        }
        Want::TicketPriority(kind, priority, title) => {
            let d = one("ticket");
            assert_eq!(d.ticket_type.as_deref(), Some(kind), "{ctx}");
            assert_eq!(d.priority.as_deref(), Some(priority), "{ctx}");
            assert_eq!(d.title.as_deref(), Some(title), "{ctx}");
        }
        Want::Error => {
            one("error");
        }
    }
}

const FIB_TASK: &str =
    "Create a Python function that computes the nth Fibonacci number iteratively.";
const LONG_TASK: &str = "This is a deliberately long delegation line to check wrapping, so it keeps going well past the terminal width: implement fib(n) iteratively, add type hints, raise ValueError on negative input, keep it O(n) time and O(1) space, and report back.";

/// delegation_reply.md, line by line: (markdown form, screen forms, expected).
#[test]
fn delegation_reply_markdown_and_screen_forms() {
    use Want::*;
    let long_md = format!("**Engineer Agent**: {LONG_TASK}");
    let long_screen = format!("  Engineer Agent: {LONG_TASK}");
    let fib_md = format!("**Engineer Agent**: {FIB_TASK}");
    let fib_screen = format!("  Engineer Agent: {FIB_TASK}");
    let table: Vec<(&str, Vec<&str>, Want)> = vec![
        (
            "I'll coordinate this by delegating to the specialist agents.",
            vec!["● I'll coordinate this by delegating to the specialist agents."],
            None,
        ),
        (
            &fib_md,
            vec![
                &fib_screen,
                "Engineer Agent: Create a Python function that computes the nth Fibonacci number iteratively.",
            ],
            Delegation("engineer", FIB_TASK),
        ),
        (
            "Task(Engineer: implement fibonacci function)",
            vec!["  Task(Engineer: implement fibonacci function)"],
            Delegation("engineer", "implement fibonacci function"),
        ),
        (
            "Delegating to QA Agent: test the implementation",
            vec!["  Delegating to QA Agent: test the implementation"],
            Delegation("qa", "test the implementation"),
        ),
        (
            "TODO: add a memoization benchmark for large n",
            vec!["  TODO: add a memoization benchmark for large n"],
            Ticket("TODO", "add a memoization benchmark for large n"),
        ),
        (
            "BUG: fib(-1) recurses forever instead of raising ValueError",
            vec!["  BUG: fib(-1) recurses forever instead of raising ValueError"],
            Ticket(
                "BUG",
                "fib(-1) recurses forever instead of raising ValueError",
            ),
        ),
        (
            "TICKET: ENG-42 document the fibonacci API",
            vec!["  TICKET: ENG-42 document the fibonacci API"],
            Ticket("TICKET", "ENG-42 document the fibonacci API"),
        ),
        (
            "Error: ModuleNotFoundError: No module named 'fibonacci'",
            vec!["  Error: ModuleNotFoundError: No module named 'fibonacci'"],
            Error,
        ),
        ("```python", vec![], None),
        (
            "def fib(n: int) -> int:",
            vec!["  def fib(n: int) -> int:"],
            None,
        ),
        ("    if n < 0:", vec!["      if n < 0:"], None),
        (
            "        raise ValueError(\"n must be >= 0\")",
            vec!["          raise ValueError(\"n must be >= 0\")"],
            None,
        ),
        ("    a, b = 0, 1", vec![], None),
        ("    for _ in range(n):", vec![], None),
        ("        a, b = b, a + b", vec![], None),
        ("    return a", vec![], None),
        ("```", vec![], None),
        (
            &long_md,
            vec![&long_screen],
            Delegation("engineer", LONG_TASK),
        ),
        (
            "- TODO: a ticket inside a bullet list item",
            vec!["  - TODO: a ticket inside a bullet list item"],
            Ticket("TODO", "a ticket inside a bullet list item"),
        ),
        (
            "1. **QA Agent**: a delegation inside a numbered list item",
            vec!["  1. QA Agent: a delegation inside a numbered list item"],
            Delegation("qa", "a delegation inside a numbered list item"),
        ),
        (
            "> Delegating to Documentation Agent: a delegation inside a blockquote",
            vec!["  ▎ Delegating to Documentation Agent: a delegation inside a blockquote"],
            Delegation("documentation", "a delegation inside a blockquote"),
        ),
        (
            "Inline forms: `Task(Engineer: implement fibonacci function)` and *Delegating to Ops Agent: deploy*.",
            vec![
                "  Inline forms: Task(Engineer: implement fibonacci function) and Delegating to Ops Agent: deploy.",
                // The screen-reader renderer wraps it at 60 columns.
                "Inline forms: Task(Engineer: implement fibonacci function)",
                "and Delegating to Ops Agent: deploy.",
            ],
            None,
        ),
        // Screen-only lines of the same exchange.
        (
            "● API Error: 400 fake server: scripted invalid_request_error",
            vec!["error: API Error: 400 fake server: scripted invalid_request_error"],
            Error,
        ),
        (
            "● Agent(Engineer: implement fibonacci function)",
            vec!["Agent(Engineer: implement fibonacci function)"],
            Handled("engineer", "implement fibonacci function"),
        ),
        (
            "  ⎿  Backgrounded agent (↓ to manage · ctrl+o to expand)",
            vec![
                "✻ Cooked for 0s · done 12:11 PM",
                "❯ please delegate the fibonacci task",
            ],
            None,
        ),
    ];
    let engine = engine();
    for (md, screens, want) in &table {
        check(&engine, md, *want);
        for s in screens {
            check(&engine, s, *want);
        }
    }
}

#[test]
fn formats_and_agent_resolution() {
    use Want::*;
    let table: &[(&str, Want)] = &[
        (
            "Delegate to Research: compare caching strategies",
            Delegation("research", "compare caching strategies"),
        ),
        (
            "→ Ops Agent: deploy to staging",
            Delegation("ops", "deploy to staging"),
        ),
        (
            "Task for Security: audit deps",
            Delegation("security", "audit deps"),
        ),
        (
            "QA Agent should: add property tests",
            Delegation("qa", "add property tests"),
        ),
        (
            "Ask Docs to: update the README",
            Delegation("documentation", "update the README"),
        ),
        (
            "**Version Control Agent**: tag v1.0",
            Delegation("version-control", "tag v1.0"),
        ),
        (
            "Version Control Agent: tag v1.0",
            Delegation("version-control", "tag v1.0"),
        ),
        (
            "Delegating to the Version Control Agent: merge",
            Delegation("version-control", "merge"),
        ),
        (
            "**engineer agent**: lower case works in bold",
            Delegation("engineer", "lower case works in bold"),
        ),
        (
            "Task(Data Engineer: design the schema)",
            Delegation("data-engineer", "design the schema"),
        ),
        (
            "**VCS**: push the branch",
            Delegation("version-control", "push the branch"),
        ),
        // Unknown agents are kept as spoken (the executor applies its policy)...
        (
            "**Frobnicator Agent**: frob it",
            Delegation("Frobnicator", "frob it"),
        ),
        (
            "Delegating to Wizard Agent: cast",
            Delegation("Wizard Agent", "cast"),
        ),
        // ...except `**X**:`, which only fires for registered agents.
        ("**Frobnicator**: frob it", None),
        // Precision: bold labels, prose, code.
        ("**Context**: the user wants a fibonacci function", None),
        ("**Task**: implement fib", None),
        ("**Summary**: done", None),
        ("**Note:** nothing", None),
        ("Note that the QA Agent: runs later", None),
        ("We are delegating to QA Agent: tests", None),
        ("debug: value=3", None),
        ("+    // TODO: x", None),
        ("    // TODO: x", None),
        ("# TODO: python comment", None),
        ("TODOs are tracked elsewhere", None),
        ("A BUG: mid-sentence", None),
        ("An Error: mid-sentence", None),
        // Tickets.
        (
            "TODO (High Priority): [QA] write tests",
            TicketPriority("TODO", "High", "[QA] write tests"),
        ),
        ("BUG(P1): overflow", TicketPriority("BUG", "P1", "overflow")),
        (
            "[TICKET] ENG-7 rename fib",
            Ticket("TICKET", "ENG-7 rename fib"),
        ),
        (
            "FEATURE: memoized variant",
            Ticket("FEATURE", "memoized variant"),
        ),
        (
            "ENHANCEMENT: faster fib",
            Ticket("ENHANCEMENT", "faster fib"),
        ),
        ("ISSUE: flaky test", Ticket("ISSUE", "flaky test")),
        ("TASK: write docs", Ticket("TASK", "write docs")),
        ("FIXME: handle n > 92", Ticket("FIXME", "handle n > 92")),
        (
            "  ⎿  TODO: run the QA suite",
            Ticket("TODO", "run the QA suite"),
        ),
        // Errors.
        ("Traceback (most recent call last):", Error),
        ("thread 'main' panicked at src/main.rs:2:5:", Error),
        ("error[E0382]: borrow of moved value: `v`", Error),
        (
            "FAILED tests/test_fib.py::test_negative - ValueError",
            Error,
        ),
        ("test fib::negative ... FAILED", Error),
        ("npm ERR! code E404", Error),
        (
            "Exception in thread \"main\" java.lang.NullPointerException",
            Error,
        ),
        ("ValueError: n must be >= 0", Error),
        ("panic: runtime error: index out of range", Error),
    ];
    let engine = engine();
    for (line, want) in table {
        check(&engine, line, *want);
    }
}

#[test]
fn agent_tool_detection_is_handled_by_agent() {
    let engine = engine();
    let d = engine.detect(
        "Agent(Implement the fibonacci function)",
        TextSource::Transcript,
    );
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].handled_by_agent);
    assert_eq!(d[0].agent, None);
    assert_eq!(
        d[0].task.as_deref(),
        Some("Implement the fibonacci function")
    );
    assert_eq!(d[0].source, TextSource::Transcript);
    assert_eq!(d[0].pattern, "delegation-agent-tool");
}

#[test]
fn detection_fields() {
    let engine = engine();
    let d = engine.detect("  1. **QA Agent**: verify it  ", TextSource::Screen);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].pattern, "delegation-bold-agent");
    assert_eq!(d[0].text, "**QA Agent**: verify it");
    assert_eq!(d[0].source, TextSource::Screen);
    assert!(!d[0].handled_by_agent);
}

#[test]
fn one_detection_per_category_per_line() {
    let engine = engine();
    let d = engine.detect("error: API Error: 400 fake server", TextSource::Screen);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].pattern, "error-api");
}

#[test]
fn agents_come_from_the_given_registry() {
    let mut agents = std::collections::BTreeMap::new();
    agents.insert(
        "wizard".to_string(),
        mpm::config::AgentConfig {
            aliases: vec!["Mage".into(), "Arch Mage".into()],
            ..Default::default()
        },
    );
    let engine = Engine::builder().agents(&agents).build().unwrap();
    let d = engine.detect("**Arch Mage**: cast", TextSource::Text);
    assert_eq!(d[0].agent.as_deref(), Some("wizard"));
    let d = engine.detect("Delegating to Mage Agent: cast", TextSource::Text);
    assert_eq!(d[0].agent.as_deref(), Some("wizard"));
    // Built-in names are not known to this registry: kept as spoken, and `**X**:` does not fire.
    let d = engine.detect("Delegating to Engineer Agent: x", TextSource::Text);
    assert_eq!(d[0].agent.as_deref(), Some("Engineer Agent"));
    assert!(
        engine
            .detect("**Engineer**: x", TextSource::Text)
            .is_empty()
    );
}

#[test]
fn long_lines_are_capped_and_bytes_are_decoded_lossily() {
    let engine = engine();
    // A ticket at the start of a 3 MB line is found; its text is capped.
    let line = format!("TODO: {}", "x".repeat(3 << 20));
    let d = engine.detect(&line, TextSource::Text);
    assert_eq!(d.len(), 1);
    assert!(d[0].text.len() <= MAX_LINE_BYTES);
    // Something past the cap is not looked at.
    let line = format!(
        "{} Exception in thread \"main\" x",
        "y".repeat(MAX_LINE_BYTES)
    );
    assert!(engine.detect(&line, TextSource::Text).is_empty());
    // Invalid UTF-8 and binary junk.
    let d = engine.detect_bytes(b"TODO: fix \xff\xfe the \x00 parser", TextSource::Text);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].ticket_type.as_deref(), Some("TODO"));
    assert!(
        engine
            .detect_bytes(b"\xff\xff**\x00\x01\x02Agent:", TextSource::Text)
            .is_empty()
    );
    // A cut inside a multi-byte character at the cap does not panic.
    let line = format!("{}é", "a".repeat(MAX_LINE_BYTES - 1));
    assert!(engine.detect(&line, TextSource::Text).is_empty());
}

#[test]
fn normalize_is_exported() {
    assert_eq!(normalize_line("  ● API Error: 400"), "API Error: 400");
}

#[test]
fn a_50_mb_line_costs_one_capped_scan() {
    let engine = engine();
    // Junk full of near-literals, no newline: nothing is detected, nothing is copied beyond the cap.
    let unit = "Agent: **x** Error: TODO Task( ";
    let line = unit.repeat((50 << 20) / unit.len() + 1);
    assert!(line.len() >= 50 << 20);
    assert!(engine.detect(&line, TextSource::Screen).is_empty());
    assert!(
        engine
            .detect_bytes(line.as_bytes(), TextSource::Screen)
            .is_empty()
    );
    // A real ticket at the start of such a line is still found, with its text capped.
    let ticket = format!("TODO: {line}");
    let d = engine.detect(&ticket, TextSource::Text);
    assert_eq!(d.len(), 1);
    assert!(d[0].text.len() <= MAX_LINE_BYTES);
    let bulk = engine.detect_text(&ticket, TextSource::Text);
    assert_eq!(bulk.len(), 1);
    assert_eq!(bulk[0].0, 0..ticket.len());
}

#[test]
fn resolver_is_exposed() {
    let engine = engine();
    assert_eq!(
        engine.resolver().resolve("Version Control Agent"),
        Some("version-control")
    );
    assert_eq!(engine.resolver().resolve("general-purpose"), None);
}
