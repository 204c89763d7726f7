//! Closing the loop with the real claude (2.1.331) under `mpm run` against the project's fake API
//! server at a realistic stream speed (6 characters every 20 ms): a reply that delegates twice runs
//! both delegations through `claude -p` sub-agents (the built-in agents' default argv, talking to
//! the same fake server), and the main session receives ONE message carrying both results: the
//! fake server sees it in the main session's next request, and claude continues (its next reply
//! is drawn). With `feedback: next-prompt` the results ride on the user's next prompt instead; a
//! model that delegates in every turn stops being fed after `orchestration.max_feedback_per_session`.
//! Without the CLI the tests print SKIPPED (a failure under CI=true).

use crate::common::{DEADLINE, PtyProc, Spawn, TestEnv, wait_until};
use crate::realclient::{FakeServer, claude_bin, path_with, setup_home, skip};

const HEADER: &str = "Results of the delegations";

fn events(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn of_kind(evs: &[serde_json::Value], kind: &str) -> Vec<serde_json::Value> {
    evs.iter().filter(|e| e["kind"] == kind).cloned().collect()
}

/// The visible screen of `p` (a VT model fed with everything written so far).
fn screen(p: &PtyProc) -> String {
    let mut parser = vt100::Parser::new(30, 100, 0);
    parser.process(p.text().as_bytes());
    parser.screen().contents()
}

/// What the user messages of one logged request say (hook additions included).
fn user_tail(r: &serde_json::Value) -> String {
    r["user_tail"].as_str().unwrap_or("").to_string()
}

/// A live real-claude session under `mpm run --no-daemon` and its fake server.
struct Live {
    env: TestEnv,
    server: FakeServer,
    ev_path: std::path::PathBuf,
    p: PtyProc,
}

impl Live {
    /// `None` when the CLI is missing (SKIPPED printed; under CI a failure).
    fn start(scenario: &str, config: &str) -> Option<Live> {
        let Some(bin) = claude_bin() else {
            skip("real claude CLI not installed");
            return None;
        };
        let env = TestEnv::new();
        let server = FakeServer::start(scenario, env.dir.path());
        let home = env.path("home");
        let work = env.path("work");
        setup_home(&home, &work);
        let cfg = env.path("mpm.yaml");
        std::fs::write(&cfg, config).unwrap();
        let ev_path = env.path("events.jsonl");
        let mut spawn = Spawn::new(
            &env,
            &[
                "--config",
                cfg.to_str().unwrap(),
                "run",
                "--no-daemon",
                "--events-file",
                ev_path.to_str().unwrap(),
                "--",
                "claude",
                "--permission-mode",
                "acceptEdits",
            ],
        );
        spawn.cols = 100;
        spawn.rows = 30;
        spawn.cwd = Some(&work);
        spawn.env.extend([
            ("PATH".to_string(), path_with(&bin)),
            ("HOME".to_string(), home.display().to_string()),
            ("CLAUDE_CODE_NO_FLICKER".to_string(), "0".to_string()),
        ]);
        // The sub-agents (`claude -p`) inherit this environment: they talk to the same server.
        spawn.env.extend(server.claude_env());
        let p = spawn.start();
        p.expect("\u{276f}");
        Some(Live {
            env,
            server,
            ev_path,
            p,
        })
    }

    fn prompt(&self, text: &str) {
        self.p.send(text.as_bytes());
        // claude draws words with cursor moves between them: read the screen, not the bytes.
        self.wait("the prompt on the screen", DEADLINE, |l| {
            screen(&l.p).contains(text)
        });
        self.p.send(b"\r");
    }

    /// Type `text` as a prompt and wait until the server has seen it.
    fn prompt_answered(&self, text: &str) {
        self.prompt(text);
        self.wait("the prompt's request", DEADLINE * 2, |l| {
            l.server
                .requests()
                .iter()
                .any(|r| user_tail(r).contains(text))
        });
    }

    fn events(&self) -> Vec<serde_json::Value> {
        events(&self.ev_path)
    }

    /// What the test saw, for a failure message.
    fn dump(&self) -> String {
        format!(
            "requests:\n{}\nevents:\n{}\nscreen:\n{}",
            self.server
                .requests()
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
            self.events()
                .iter()
                .filter(|e| e["kind"] != "resource.sample")
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
            screen(&self.p)
        )
    }

    fn wait(&self, what: &str, timeout: std::time::Duration, mut cond: impl FnMut(&Live) -> bool) {
        assert!(
            wait_until(timeout, || cond(self)),
            "timed out waiting for {what}\n{}",
            self.dump()
        );
    }

    /// The main session's requests that carry mpm's results (sub-agents never see the header).
    fn fed_requests(&self) -> Vec<serde_json::Value> {
        self.server
            .requests()
            .into_iter()
            .filter(|r| user_tail(r).contains(HEADER))
            .collect()
    }

    fn exit(mut self) {
        self.p.send(b"/exit");
        self.wait("/exit on the screen", DEADLINE, |l| {
            screen(&l.p).contains("/exit")
        });
        self.p.send(b"\r");
        let st = self.p.wait_within(DEADLINE * 2);
        assert_eq!(st.code(), Some(0), "{}", self.dump());
        drop(self.env);
    }
}

/// Tight batching so that the test does not wait on defaults meant for people.
const ORCH: &str = "orchestration: {batch_window_ms: 1000, stop_wait_secs: 50}\n";

#[test]
fn real_claude_gets_both_results_in_one_message_and_continues() {
    let Some(live) = Live::start("loop_feedback.json", ORCH) else {
        return;
    };
    live.prompt("please delegate twice");
    // The Stop hook waits for both sub-agents, then blocks with one message: the server sees it.
    live.wait("the results in a request", DEADLINE * 4, |l| {
        !l.fed_requests().is_empty()
    });
    // claude continues with them: its next reply is drawn.
    live.wait("the reply after the results", DEADLINE * 2, |l| {
        screen(&l.p).contains("RESULTS-SEEN")
    });
    // A prompt now is answered after anything the next Stop hook might (wrongly) have started.
    live.prompt_answered("hello there");
    let fed = live.fed_requests();
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
    live.exit();
}

#[test]
fn real_claude_next_prompt_mode_carries_the_results_with_the_users_prompt() {
    let cfg = format!(
        "{ORCH}profiles:\n  claude: {{command: [claude], transcript: true, feedback: next-prompt}}\n"
    );
    let Some(live) = Live::start("loop_feedback.json", &cfg) else {
        return;
    };
    live.prompt("please delegate twice");
    live.wait("both delegations to finish", DEADLINE * 4, |l| {
        of_kind(&l.events(), "delegation.finished").len() >= 2
    });
    live.wait("the turn to end", DEADLINE, |l| {
        of_kind(&l.events(), "session.state")
            .iter()
            .any(|e| e["reason"] == "hook:Stop")
    });
    // The Stop hook did not block: nothing reached claude yet.
    assert!(live.fed_requests().is_empty(), "{}", live.dump());
    live.prompt("what did the specialists say");
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
    assert_eq!(live.fed_requests().len(), 1, "{}", live.dump());
    live.wait("the reply", DEADLINE * 2, |l| {
        screen(&l.p).contains("NEXT-PROMPT-SEEN")
    });
    let fb = of_kind(&live.events(), "delegation.feedback");
    assert_eq!(fb.len(), 1, "{}", live.dump());
    assert_eq!(fb[0]["via"], "next-prompt");
    live.exit();
}

#[test]
fn real_claude_that_delegates_every_turn_stops_being_fed_after_the_cap() {
    let cfg =
        "orchestration: {batch_window_ms: 1000, stop_wait_secs: 50, max_feedback_per_session: 2}\n";
    let Some(live) = Live::start("loop_cap.json", cfg) else {
        return;
    };
    live.prompt("keep delegating please");
    // Turn 1 delegates SUB-CAP-1 → fed (1); turn 2 SUB-CAP-2 → fed (2); turn 3 SUB-CAP-3 runs,
    // but the cap is reached: its Stop is not blocked and the session goes idle.
    live.wait("the third delegation to finish", DEADLINE * 8, |l| {
        of_kind(&l.events(), "delegation.finished")
            .iter()
            .any(|e| e["task"].as_str().unwrap_or("").contains("SUB-CAP-3"))
    });
    // A prompt now is answered after anything the last Stop hook might (wrongly) have started.
    live.prompt_answered("hello there");
    let fed = live.fed_requests();
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
    live.exit();
}
