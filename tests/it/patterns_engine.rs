//! The engine on real lines: every line of `fixtures/scenarios/limiter_reply.md` in its markdown
//! (transcript / `-p`) form and in its rendered screen forms, plus precision cases.

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

const ENGINEER_TASK: &str =
    "Implement a token-bucket RateLimiter class in limiter.py with a refill rate per second.";
const LONG_TASK: &str = "Once the tests pass, wire the limiter into the HTTP middleware so that every route shares one bucket per client address, log each rejection with the client id and the route, answer 429 with a Retry-After header, and keep the defaults documented.";

/// `fixtures/scenarios/limiter_reply.md`, every line: (markdown form, screen forms, expected). The
/// table must list the file's lines in order, so the scenario and this test cannot drift apart.
#[test]
fn limiter_reply_markdown_and_screen_forms() {
    use Want::*;
    let eng_md = format!("**Engineer Agent**: {ENGINEER_TASK}");
    let eng_screen = format!("  Engineer Agent: {ENGINEER_TASK}");
    let long_md = format!("**Engineer Agent**: {LONG_TASK}");
    let long_screen = format!("  Engineer Agent: {LONG_TASK}");
    let table: Vec<(&str, Vec<&str>, Want)> = vec![
        (
            "Here is how I will split the rate limiter work.",
            vec!["● Here is how I will split the rate limiter work."],
            None,
        ),
        (
            &eng_md,
            vec![&eng_screen],
            Delegation("engineer", ENGINEER_TASK),
        ),
        (
            "**QA**: write table-driven tests for burst and refill behaviour",
            // On screen the bold is gone: `QA:` alone reads like a label, so the engine (which sees
            // text only) gives nothing; the transcript has the markdown form.
            vec!["  QA: write table-driven tests for burst and refill behaviour"],
            Delegation(
                "qa",
                "write table-driven tests for burst and refill behaviour",
            ),
        ),
        (
            "Task(Research: compare token bucket and sliding window algorithms for bursty traffic)",
            vec![
                "  Task(Research: compare token bucket and sliding window algorithms for bursty traffic)",
            ],
            Delegation(
                "research",
                "compare token bucket and sliding window algorithms for bursty traffic",
            ),
        ),
        (
            "Delegating to Documentation Agent: describe the limiter settings in docs/limits.md",
            vec![
                "  Delegating to Documentation Agent: describe the limiter settings in docs/limits.md",
            ],
            Delegation(
                "documentation",
                "describe the limiter settings in docs/limits.md",
            ),
        ),
        (
            "TODO (P1): expose the bucket size as a configuration option",
            vec!["  TODO (P1): expose the bucket size as a configuration option"],
            TicketPriority(
                "TODO",
                "P1",
                "expose the bucket size as a configuration option",
            ),
        ),
        (
            "BUG (High Priority): refill drifts when the system clock jumps backwards",
            vec!["  BUG (High Priority): refill drifts when the system clock jumps backwards"],
            TicketPriority(
                "BUG",
                "High",
                "refill drifts when the system clock jumps backwards",
            ),
        ),
        (
            "FIXME: the limiter ignores the burst argument",
            vec!["  FIXME: the limiter ignores the burst argument"],
            Ticket("FIXME", "the limiter ignores the burst argument"),
        ),
        (
            "Error: ConnectionRefusedError: [Errno 111] Connection refused while reaching the metrics sink",
            vec![
                "  Error: ConnectionRefusedError: [Errno 111] Connection refused while reaching the metrics sink",
            ],
            Error,
        ),
        ("Next steps:", vec!["  Next steps:"], None),
        (
            "- TODO: count rejected requests per client",
            vec!["  - TODO: count rejected requests per client"],
            Ticket("TODO", "count rejected requests per client"),
        ),
        (
            "- keep the public API to acquire() and try_acquire()",
            vec!["  - keep the public API to acquire() and try_acquire()"],
            None,
        ),
        (
            "1. **Security Agent**: check that client ids cannot be spoofed through X-Forwarded-For",
            vec![
                "  1. Security Agent: check that client ids cannot be spoofed through X-Forwarded-For",
            ],
            Delegation(
                "security",
                "check that client ids cannot be spoofed through X-Forwarded-For",
            ),
        ),
        (
            &long_md,
            vec![&long_screen],
            Delegation("engineer", LONG_TASK),
        ),
        (
            "TODO: 限流器的中文错误信息 🚦 要和英文版一致",
            vec!["  TODO: 限流器的中文错误信息 🚦 要和英文版一致"],
            Ticket("TODO", "限流器的中文错误信息 🚦 要和英文版一致"),
        ),
        (
            "Delegating to Ops Agent: 部署到预发布环境 🚀 并观察一小时",
            vec!["  Delegating to Ops Agent: 部署到预发布环境 🚀 并观察一小时"],
            Delegation("ops", "部署到预发布环境 🚀 并观察一小时"),
        ),
        (
            "Mentioned mid-sentence, nothing to run: ask the `Engineer Agent: ...` form or *Delegating to QA Agent: retest* later.",
            vec![
                "  Mentioned mid-sentence, nothing to run: ask the Engineer Agent: ... form or Delegating to QA Agent: retest later.",
                // The screen-reader renderer wraps it.
                "form or Delegating to QA Agent: retest later.",
            ],
            None,
        ),
    ];
    let file = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/scenarios/limiter_reply.md"),
    )
    .expect("fixtures/scenarios/limiter_reply.md");
    let lines: Vec<&str> = file.lines().filter(|l| !l.trim().is_empty()).collect();
    let listed: Vec<&str> = table.iter().map(|(md, _, _)| *md).collect();
    assert_eq!(
        listed, lines,
        "the table lists limiter_reply.md line by line"
    );
    let engine = engine();
    for (md, screens, want) in &table {
        check(&engine, md, *want);
        for s in screens {
            let want = if s.trim_start().starts_with("QA:") {
                None
            } else {
                *want
            };
            check(&engine, s, want);
        }
    }
    // Screen-only lines of the same exchanges (`fixtures/captures/`).
    for (line, want) in [
        (
            "● API Error: Request rejected (429) · fake_llm: usage limit reached for this key",
            Error,
        ),
        (
            "error: API Error: Request rejected (429) · fake_llm: usage limit reached for this key",
            Error,
        ),
        (
            "● Agent(Engineer: build the token bucket)",
            Handled("engineer", "build the token bucket"),
        ),
        (
            "  ⎿  Backgrounded agent (↓ to manage · ctrl+o to expand)",
            None,
        ),
        (
            "◯ general-purpose  Engineer: build the token bucket  0s",
            None,
        ),
        (
            "● Agent \"Engineer: build the token bucket\" finished · 2s",
            None,
        ),
        ("  Read 1 file · 1 failed (ctrl+o to expand)", None),
        (
            "● The sub-agent finished. Delegating to Ops Agent: nothing yet, first a smoke check.",
            None,
        ),
        ("❯ plan the rate limiter", None),
    ] {
        check(&engine, line, want);
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
        // The task runs to the `)` that closes `Task(`, past balanced parentheses inside it.
        (
            "Task(QA: test fib() with negative input)",
            Delegation("qa", "test fib() with negative input"),
        ),
        (
            "Task(Engineer: call parse(\"a b\") twice) and more prose",
            Delegation("engineer", "call parse(\"a b\") twice"),
        ),
        (
            "● Agent(QA: test fib() with negative input)",
            Handled("qa", "test fib() with negative input"),
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
