//! Live: the real claude under `mpm run` at 60x20 with a slow stream (about 200 characters a second)
//! and mpm's hooks: each delegation runs once with its whole task (a wrapped one, one with inline
//! code, a bold alias the screen draws without its asterisks), a delegation-like line in a fenced
//! code block never runs, the user's own Stop hook still runs next to mpm's, and the session state
//! follows the hooks (working on the prompt, idle at the turn's end, exited). The same in the
//! fullscreen renderer, and over two turns where the model repeats a delegation of the first turn
//! word for word: a delegation runs once per session (the repeat is not a new request; see
//! `src/detect/dispatch.rs` and `captures_exact.rs`).

use crate::common::read_events as events;
use crate::common::{DEADLINE, wait_until};
use crate::realclient::LiveSetup;

fn field(e: &serde_json::Value, k: &str) -> String {
    e[k].as_str().unwrap_or("").to_string()
}

/// The `delegation.queued` events: (agent, task), in order.
fn queued(evs: &[serde_json::Value]) -> Vec<(String, String)> {
    evs.iter()
        .filter(|e| e["kind"] == "delegation.queued")
        .map(|e| (field(e, "agent"), field(e, "task")))
        .collect()
}

/// Run the real claude under `mpm run --no-daemon` at 60x20 in `renderer`
/// (`CLAUDE_CODE_NO_FLICKER` value) against `scenario`, type each prompt, wait for the server to
/// answer it by the named rule and for the turn's Stop hook, then `/exit`. Every agent runs `echo`;
/// results are not fed back (`feedback: off`: a fed-back result would start another model turn).
/// The events of the session; `None` when the CLI is missing (skipped; a failure under CI).
fn live_session(
    scenario: &str,
    renderer: &str,
    prompts: &[(&str, &str)],
) -> Option<Vec<serde_json::Value>> {
    let mut yaml = String::from("profiles:\n  claude:\n    feedback: \"off\"\nagents:\n");
    for a in [
        "engineer",
        "qa",
        "documentation",
        "ops",
        "research",
        "security",
    ] {
        yaml.push_str(&format!("  {a}:\n    argv: [\"echo\", \"{{task}}\"]\n"));
    }
    let mut live = LiveSetup::new(scenario)?
        .config(&yaml)
        .size(60, 20)
        .renderer(renderer)
        .var("MPM_EXECUTOR__ON_SESSION_EXIT", "wait")
        .start();
    let (p, server, ev_path) = (&live.p, &live.server, live.ev_path.clone());
    for (i, (prompt, rule)) in prompts.iter().enumerate() {
        p.send(prompt.as_bytes());
        // The echo of the prompt's last word (claude redraws the input line as it is typed).
        p.expect(prompt.rsplit(' ').next().unwrap_or(prompt));
        p.send(b"\r");
        // The server answered this prompt, then the turn ends when mpm's Stop hook reports it.
        let asked = wait_until(DEADLINE * 3, || {
            server.requests().iter().any(|r| r["rule"] == *rule)
        });
        assert!(
            asked,
            "the server never got {prompt:?}; terminal:\n{}",
            p.text()
        );
        let done = wait_until(DEADLINE * 3, || {
            events(&ev_path)
                .iter()
                .filter(|e| e["kind"] == "session.state" && e["reason"] == "hook:Stop")
                .count()
                > i
        });
        assert!(done, "no Stop hook for turn {i}; terminal:\n{}", p.text());
    }
    eprintln!(
        "fake server requests: {:?}",
        server
            .requests()
            .iter()
            .map(|r| (r["rule"].clone(), r["last_user"].clone()))
            .collect::<Vec<_>>()
    );
    live.exit_within(DEADLINE);
    Some(events(&ev_path))
}

/// The session states' order: each (state, reason) of `want` appears, in this order (an empty
/// reason: any).
fn assert_states_in_order(evs: &[serde_json::Value], want: &[(&str, &str)]) {
    let states: Vec<(String, String)> = evs
        .iter()
        .filter(|e| e["kind"] == "session.state")
        .map(|e| (field(e, "state"), field(e, "reason")))
        .collect();
    let mut it = states.iter();
    for (s, r) in want {
        assert!(
            it.any(|(a, b)| a == s && (r.is_empty() || b == r)),
            "{s} ({r}) missing or out of order in {states:?}"
        );
    }
}

/// Fullscreen renderer (alt screen, cell diffs) at 60x20: each delegation once and whole (a task
/// with inline code, wrapped over three rows; a bold alias), nothing from the fenced SQL block.
#[test]
fn real_claude_fullscreen_at_60x20_runs_each_delegation_once_whole() {
    let Some(evs) = live_session(
        "live_fullscreen.json",
        "1",
        &[("plan the invoice migration", "migration")],
    ) else {
        return;
    };
    // The task as the transcript says it or as the screen draws it (inline code without its
    // backticks): the same delegation, once.
    let mut q: Vec<(String, String)> = queued(&evs)
        .into_iter()
        .map(|(a, t)| (a, t.replace('`', "")))
        .collect();
    q.sort();
    assert_eq!(
        q,
        [
            (
                "engineer".to_string(),
                "write the database migration that adds a tenant_id column to the invoices \
                 table, with a backfill in batches of five hundred rows"
                    .to_string()
            ),
            (
                "qa".to_string(),
                "run the migration twice against a copy of production and compare the row counts"
                    .to_string()
            ),
        ]
    );
    assert_states_in_order(
        &evs,
        &[("working", ""), ("idle", "hook:Stop"), ("exited", "exit")],
    );
}

/// Two turns; the second repeats the first turn's engineer delegation word for word and adds a
/// documentation one. Exactly once means once per session: the engineer runs once (the repeat is
/// the model restating its request, not a new one), the documentation agent once.
#[test]
fn real_claude_two_turns_repeated_delegation_runs_once() {
    let Some(evs) = live_session(
        "live_multiturn.json",
        "0",
        &[("draft the mailer", "turn1"), ("what next", "turn2")],
    ) else {
        return;
    };
    assert_eq!(
        queued(&evs),
        [
            (
                "engineer".to_string(),
                "build the weekly digest mailer with one template per locale and a dry-run \
                 switch for the operators"
                    .to_string()
            ),
            (
                "documentation".to_string(),
                "describe the digest schedule in docs/mailer.md".to_string()
            ),
        ]
    );
    // Both turns seen by the hooks: working, idle, working, idle, exited (working from the hook or,
    // when claude's spinner title comes first, from the title).
    assert_states_in_order(
        &evs,
        &[
            ("working", ""),
            ("idle", "hook:Stop"),
            ("working", ""),
            ("idle", "hook:Stop"),
            ("exited", "exit"),
        ],
    );
}

#[test]
fn real_claude_at_60x20_runs_each_delegation_once_whole() {
    let Some(setup) = LiveSetup::new("exact_release.json") else {
        return;
    };
    // The user's own Stop hook, in the user's settings: it must keep running.
    let marker = setup.env.path("user-stop-hook-ran");
    let settings_path = setup.home.join(".claude/settings.json");
    let mut settings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&settings_path).unwrap()).unwrap();
    settings["hooks"] = serde_json::json!({"Stop": [{"hooks": [{"type": "command",
        "command": format!("touch '{}'", marker.display())}]}]});
    std::fs::write(&settings_path, settings.to_string()).unwrap();
    let mut live = setup
        .config("agents:\n  engineer:\n    argv: [\"echo\", \"{task}\"]\n  qa:\n    argv: [\"echo\", \"{task}\"]\n  documentation:\n    argv: [\"echo\", \"{task}\"]\n")
        .size(60, 20)
        .var("MPM_EXECUTOR__ON_SESSION_EXIT", "wait")
        .start();
    let (p, ev_path) = (&live.p, live.ev_path.clone());
    p.send(b"please prepare the release");
    p.expect("release");
    p.send(b"\r");
    // The turn ends when mpm's Stop hook reports it.
    let idle = wait_until(DEADLINE * 3, || {
        events(&ev_path)
            .iter()
            .any(|e| e["kind"] == "session.state" && e["reason"] == "hook:Stop")
    });
    assert!(idle, "no Stop hook state; terminal:\n{}", p.text());
    live.exit_within(DEADLINE);

    assert!(marker.exists(), "the user's own Stop hook did not run");
    let evs = events(&ev_path);
    let queued: Vec<(String, String)> = evs
        .iter()
        .filter(|e| e["kind"] == "delegation.queued")
        .map(|e| (field(e, "agent"), field(e, "task")))
        .collect();
    let mut agents: Vec<&str> = queued.iter().map(|(a, _)| a.as_str()).collect();
    agents.sort();
    assert_eq!(agents, ["documentation", "engineer", "qa"], "{queued:#?}");
    let task = |a: &str| {
        queued
            .iter()
            .find(|(x, _)| x == a)
            .map(|(_, t)| t.clone())
            .unwrap()
    };
    assert!(
        task("engineer").contains("one unit test per step"),
        "{queued:#?}"
    );
    assert!(task("engineer").contains("release.py"), "{queued:#?}");
    assert!(task("qa").contains("report the failures"), "{queued:#?}");
    assert!(
        task("documentation").contains("in the changelog"),
        "{queued:#?}"
    );
    assert!(
        !queued
            .iter()
            .any(|(_, t)| t.contains("inside a code block")),
        "{queued:#?}"
    );
    // Working from the hook or, when claude's spinner title comes first, from the title (the race
    // the other live tests allow for since de64352).
    assert_states_in_order(
        &evs,
        &[("working", ""), ("idle", "hook:Stop"), ("exited", "exit")],
    );
}
