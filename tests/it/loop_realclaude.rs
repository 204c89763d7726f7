//! Closing the loop with the real claude (2.1.331) under `mpm run` against the project's fake API
//! server at a realistic stream speed (6 characters every 20 ms): a reply that delegates twice runs
//! both delegations through `claude -p` sub-agents (the built-in agents' default argv, talking to
//! the same fake server), and the main session receives ONE message carrying both results: the
//! fake server sees it in the main session's next request, and claude continues (its next reply
//! is drawn). With `feedback: next-prompt` the results ride on the user's next prompt instead; a
//! model that delegates in every turn stops being fed after `orchestration.max_feedback_per_session`.
//! Without the CLI the tests print SKIPPED (a failure under CI=true).

use crate::common::DEADLINE;
use crate::realclient::{Live, LiveSetup};

const HEADER: &str = "Results of the delegations";

fn of_kind(evs: &[serde_json::Value], kind: &str) -> Vec<serde_json::Value> {
    evs.iter().filter(|e| e["kind"] == kind).cloned().collect()
}

/// What the user messages of one logged request say (hook additions included).
fn user_tail(r: &serde_json::Value) -> String {
    r["user_tail"].as_str().unwrap_or("").to_string()
}

/// A live real-claude session at 100x30 (classic renderer) with `config`; `None` when the CLI is
/// missing (SKIPPED printed; under CI a failure).
fn start(scenario: &str, config: &str) -> Option<Live> {
    Some(LiveSetup::new(scenario)?.config(config).start())
}

/// Type `text` as a prompt; Enter once it is on the screen (claude draws words with cursor moves
/// between them: read the screen, not the bytes).
fn prompt(live: &Live, text: &str) {
    live.p.send(text.as_bytes());
    live.wait("the prompt on the screen", DEADLINE, |l| {
        l.screen().contains(text)
    });
    live.p.send(b"\r");
}

/// Type `text` as a prompt and wait until the server has seen it.
fn prompt_answered(live: &Live, text: &str) {
    prompt(live, text);
    live.wait("the prompt's request", DEADLINE * 2, |l| {
        l.server
            .requests()
            .iter()
            .any(|r| user_tail(r).contains(text))
    });
}

/// The main session's requests that carry mpm's results (sub-agents never see the header).
fn fed_requests(live: &Live) -> Vec<serde_json::Value> {
    live.server
        .requests()
        .into_iter()
        .filter(|r| user_tail(r).contains(HEADER))
        .collect()
}

/// Tight batching so that the test does not wait on defaults meant for people.
const ORCH: &str = "orchestration: {batch_window_ms: 1000, stop_wait_secs: 50}\n";

#[test]
fn real_claude_gets_both_results_in_one_message_and_continues() {
    let Some(mut live) = start("loop_feedback.json", ORCH) else {
        return;
    };
    prompt(&live, "please delegate twice");
    // The Stop hook waits for both sub-agents, then blocks with one message: the server sees it.
    live.wait("the results in a request", DEADLINE * 4, |l| {
        !fed_requests(l).is_empty()
    });
    // claude continues with them: its next reply is drawn.
    live.wait("the reply after the results", DEADLINE * 2, |l| {
        l.screen().contains("RESULTS-SEEN")
    });
    // A prompt now is answered after anything the next Stop hook might (wrongly) have started.
    prompt_answered(&live, "hello there");
    let fed = fed_requests(&live);
    assert_eq!(fed.len(), 1, "one message for the batch\n{}", live.dump());
    let msg = user_tail(&fed[0]);
    for want in [
        "engineer: SUB-ALPHA write alpha.txt",
        "ALPHA-RESULT: wrote alpha.txt",
        "qa: SUB-BETA check the beta build",
        "BETA-RESULT: the beta check passed",
        "(2 finished)",
    ] {
        assert!(msg.contains(want), "{want:?} not in the message:\n{msg}");
    }
    assert_eq!(fed[0]["rule"], "results-back");
    // Both delegations ran through `claude -p` against the server, and succeeded.
    let reqs = live.server.requests();
    for rule in ["sub-alpha", "sub-beta"] {
        assert!(
            reqs.iter().any(|r| r["rule"] == rule),
            "{rule}\n{}",
            live.dump()
        );
    }
    let evs = live.events();
    let finished = of_kind(&evs, "delegation.finished");
    assert_eq!(finished.len(), 2, "{}", live.dump());
    assert!(finished.iter().all(|e| e["status"] == "success"));
    let fb = of_kind(&evs, "delegation.feedback");
    assert_eq!(fb.len(), 1, "{}", live.dump());
    assert_eq!(fb[0]["via"], "stop-hook");
    // The session state follows: idle at the Stop, working on the results, idle again.
    let states: Vec<(String, String)> = of_kind(&evs, "session.state")
        .iter()
        .map(|e| {
            (
                e["state"].as_str().unwrap_or("").to_string(),
                e["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let mut it = states.iter();
    for (s, r) in [
        ("idle", "hook:Stop"),
        ("working", "hook:StopBlocked"),
        ("idle", "hook:Stop"),
    ] {
        assert!(
            it.any(|(a, b)| a == s && b == r),
            "{s} ({r}) missing or out of order in {states:?}"
        );
    }
    assert_eq!(fb[0]["delegation_ids"].as_array().unwrap().len(), 2);
    live.exit_within(DEADLINE * 2);
}

#[test]
fn real_claude_next_prompt_mode_carries_the_results_with_the_users_prompt() {
    let cfg = format!(
        "{ORCH}profiles:\n  claude: {{command: [claude], transcript: true, feedback: next-prompt}}\n"
    );
    let Some(mut live) = start("loop_feedback.json", &cfg) else {
        return;
    };
    prompt(&live, "please delegate twice");
    live.wait("both delegations to finish", DEADLINE * 4, |l| {
        of_kind(&l.events(), "delegation.finished").len() >= 2
    });
    live.wait("the turn to end", DEADLINE, |l| {
        of_kind(&l.events(), "session.state")
            .iter()
            .any(|e| e["reason"] == "hook:Stop")
    });
    // The Stop hook did not block: nothing reached claude yet.
    assert!(fed_requests(&live).is_empty(), "{}", live.dump());
    prompt(&live, "what did the specialists say");
    live.wait("the prompt's request", DEADLINE * 2, |l| {
        l.server
            .requests()
            .iter()
            .any(|r| r["rule"] == "what-did-they-say")
    });
    let reqs = live.server.requests();
    let req = reqs
        .iter()
        .find(|r| r["rule"] == "what-did-they-say")
        .unwrap();
    let tail = user_tail(req);
    for want in [HEADER, "ALPHA-RESULT", "BETA-RESULT"] {
        assert!(
            tail.contains(want),
            "{want:?} not with the prompt:\n{tail}\n{}",
            live.dump()
        );
    }
    assert_eq!(fed_requests(&live).len(), 1, "{}", live.dump());
    live.wait("the reply", DEADLINE * 2, |l| {
        l.screen().contains("NEXT-PROMPT-SEEN")
    });
    let fb = of_kind(&live.events(), "delegation.feedback");
    assert_eq!(fb.len(), 1, "{}", live.dump());
    assert_eq!(fb[0]["via"], "next-prompt");
    live.exit_within(DEADLINE * 2);
}

#[test]
fn real_claude_that_delegates_every_turn_stops_being_fed_after_the_cap() {
    let cfg =
        "orchestration: {batch_window_ms: 1000, stop_wait_secs: 50, max_feedback_per_session: 2}\n";
    let Some(mut live) = start("loop_cap.json", cfg) else {
        return;
    };
    prompt(&live, "keep delegating please");
    // Turn 1 delegates SUB-CAP-1 → fed (1); turn 2 SUB-CAP-2 → fed (2); turn 3 SUB-CAP-3 runs,
    // but the cap is reached: its Stop is not blocked and the session goes idle.
    live.wait("the third delegation to finish", DEADLINE * 8, |l| {
        of_kind(&l.events(), "delegation.finished")
            .iter()
            .any(|e| e["task"].as_str().unwrap_or("").contains("SUB-CAP-3"))
    });
    // A prompt now is answered after anything the last Stop hook might (wrongly) have started.
    prompt_answered(&live, "hello there");
    let fed = fed_requests(&live);
    assert_eq!(fed.len(), 2, "fed twice, then never\n{}", live.dump());
    let evs = live.events();
    assert_eq!(
        of_kind(&evs, "delegation.feedback").len(),
        2,
        "{}",
        live.dump()
    );
    assert!(
        !of_kind(&evs, "delegation.queued")
            .iter()
            .any(|e| e["task"].as_str().unwrap_or("").contains("SUB-CAP-N")),
        "no fourth turn\n{}",
        live.dump()
    );
    live.exit_within(DEADLINE * 2);
}
