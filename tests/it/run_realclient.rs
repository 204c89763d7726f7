//! The real Claude Code CLI (pinned 2.1.331) under `mpm run`, offline against the project's fake
//! LLM server (`fixtures/fake_llm.py`, scenario `fixtures/scenarios/limiter.json`). Skipped, with
//! `SKIPPED: ...`, when the CLI is not installed (a failure under CI): run `.ci/install-claude.sh`.

use crate::common;
use crate::realclient;

use std::process::Stdio;

use common::*;
use realclient::*;

const VERSION: &str = "2.1.331";

#[test]
fn claude_version_through_mpm() {
    let Some(bin) = claude_bin() else {
        return skip("real claude CLI not installed");
    };
    let env = TestEnv::new();
    let out = env
        .command(&["run", "--", "claude", "--version"])
        .env("PATH", path_with(&bin))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!("{VERSION} (Claude Code)")),
        "{text:?}"
    );
}

/// Run the limiter exchange through `mpm run -- claude` (classic renderer, 100x30) against the
/// fake server: prompt, reply, `/exit`. Returns the events file; `None` when the real client is
/// not available (the test is skipped).
fn limiter_exchange(env: &TestEnv, extra_env: &[(&str, &str)]) -> Option<std::path::PathBuf> {
    let Some(bin) = claude_bin() else {
        skip("real claude CLI not installed");
        return None;
    };
    let server = FakeServer::start("limiter.json", env.dir.path());
    let home = env.path("home");
    let work = env.path("work");
    setup_home(&home, &work);

    let events = env.path("events.jsonl");
    let mut spawn = Spawn::new(
        env,
        &[
            "run",
            "--events-file",
            events.to_str().unwrap(),
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
    spawn.env.extend(server.claude_env());
    spawn.env.extend(
        extra_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let mut p = spawn.start();
    p.expect("\u{276f}"); // ❯, the prompt
    p.send(b"plan the rate limiter");
    p.expect("limiter");
    p.send(b"\r");
    // Classic renderer: words are placed with cursor jumps, so look for single words of the reply.
    p.expect("X-Forwarded-For");
    p.expect("later.");
    p.send(b"/exit");
    p.expect("/exit");
    p.send(b"\r");
    assert_eq!(p.wait().code(), Some(0), "terminal:\n{}", p.text());
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r["rule"] == "limiter-plan" && r["stream"] == true),
        "claude streamed the scripted reply: {:#?}",
        server.requests()
    );
    Some(events)
}

#[test]
fn interactive_claude_session_shows_the_reply_and_exits_0() {
    let env = TestEnv::new();
    let Some(events) = limiter_exchange(&env, &[]) else {
        return;
    };
    let text = std::fs::read_to_string(&events).unwrap();
    assert!(text.contains("\"kind\":\"session.exited\""), "{text}");
    assert!(text.contains("\"exit_code\":0"), "{text}");
}

/// Issue 4 end to end: `mpm run -- claude` with the limiter scenario detects the seven delegations
/// of `fixtures/scenarios/limiter_reply.md` (on screen and in the transcript, de-duplicated), each
/// once with its whole task, runs each through `claude -p` against the fake server, and every
/// `delegation.finished` says `success`.
#[test]
fn mpm_run_claude_detects_and_runs_each_delegation() {
    let env = TestEnv::new();
    // Let the delegations finish after /exit instead of cancelling them.
    let Some(events) = limiter_exchange(&env, &[("MPM_EXECUTOR__ON_SESSION_EXIT", "wait")]) else {
        return;
    };
    let evs: Vec<serde_json::Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |kind: &str| -> Vec<&serde_json::Value> {
        evs.iter().filter(|e| e["kind"] == kind).collect()
    };
    let mut delegations: Vec<(String, String)> = of("detection")
        .into_iter()
        .filter(|e| e["category"] == "delegation")
        .map(|e| {
            (
                e["agent"].as_str().unwrap_or("").to_string(),
                e["task"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    delegations.sort();
    let mut want: Vec<(String, String)> = [
        ("documentation", "describe the limiter settings in docs/limits.md"),
        ("engineer", "Implement a token-bucket RateLimiter class in limiter.py with a refill rate per second."),
        ("engineer", "Once the tests pass, wire the limiter into the HTTP middleware so that every route shares one bucket per client address, log each rejection with the client id and the route, answer 429 with a Retry-After header, and keep the defaults documented."),
        ("ops", "部署到预发布环境 🚀 并观察一小时"),
        ("qa", "write table-driven tests for burst and refill behaviour"),
        ("research", "compare token bucket and sliding window algorithms for bursty traffic"),
        ("security", "check that client ids cannot be spoofed through X-Forwarded-For"),
    ]
    .into_iter()
    .map(|(a, t)| (a.to_string(), t.to_string()))
    .collect();
    want.sort();
    // Each once, with its whole task; the mid-sentence mentions of the last line are prose.
    assert_eq!(delegations, want);
    let finished = of("delegation.finished");
    assert_eq!(finished.len(), want.len(), "{finished:#?}");
    for f in &finished {
        assert_eq!(f["status"], "success", "{f}");
        let out = f["output_path"].as_str().expect("output_path");
        assert!(std::path::Path::new(out).exists(), "{out}");
    }
    assert_eq!(of("delegation.started").len(), want.len());
}
