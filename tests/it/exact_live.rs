//! Live: the real claude under `mpm run` at 60x20 with a slow stream (about 200 characters a second)
//! and mpm's hooks: each delegation runs once with its whole task (a wrapped one, one with inline
//! code, a bold alias the screen draws without its asterisks), a delegation-like line in a fenced
//! code block never runs, the user's own Stop hook still runs next to mpm's, and the session state
//! follows the hooks (working on the prompt, idle at the turn's end, exited).

use crate::common::{DEADLINE, Spawn, TestEnv, wait_until};
use crate::realclient::{FakeServer, claude_bin, path_with, setup_home, skip};

fn events(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn field(e: &serde_json::Value, k: &str) -> String {
    e[k].as_str().unwrap_or("").to_string()
}

#[test]
fn real_claude_at_60x20_runs_each_delegation_once_whole() {
    let Some(bin) = claude_bin() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI: the real claude CLI is missing"
        );
        skip("real claude CLI not installed");
        return;
    };
    let env = TestEnv::new();
    let server = FakeServer::start("exact_release.json", env.dir.path());
    let home = env.path("home");
    let work = env.path("work");
    setup_home(&home, &work);
    // The user's own Stop hook, in the user's settings: it must keep running.
    let marker = env.path("user-stop-hook-ran");
    let settings_path = home.join(".claude/settings.json");
    let mut settings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&settings_path).unwrap()).unwrap();
    settings["hooks"] = serde_json::json!({"Stop": [{"hooks": [{"type": "command",
        "command": format!("touch '{}'", marker.display())}]}]});
    std::fs::write(&settings_path, settings.to_string()).unwrap();
    let cfg = env.path("mpm.yaml");
    std::fs::write(
        &cfg,
        "agents:\n  engineer:\n    argv: [\"echo\", \"{task}\"]\n  qa:\n    argv: [\"echo\", \"{task}\"]\n  documentation:\n    argv: [\"echo\", \"{task}\"]\n",
    )
    .unwrap();
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
    spawn.cols = 60;
    spawn.rows = 20;
    spawn.cwd = Some(&work);
    spawn.env.extend([
        ("PATH".to_string(), path_with(&bin)),
        ("HOME".to_string(), home.display().to_string()),
        ("CLAUDE_CODE_NO_FLICKER".to_string(), "0".to_string()),
        (
            "MPM_EXECUTOR__ON_SESSION_EXIT".to_string(),
            "wait".to_string(),
        ),
    ]);
    spawn.env.extend(server.claude_env());
    let mut p = spawn.start();
    p.expect("\u{276f}");
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
    p.send(b"/exit");
    p.expect("/exit");
    p.send(b"\r");
    assert_eq!(p.wait().code(), Some(0), "terminal:\n{}", p.text());

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
    let states: Vec<(String, String)> = evs
        .iter()
        .filter(|e| e["kind"] == "session.state")
        .map(|e| (field(e, "state"), field(e, "reason")))
        .collect();
    let mut it = states.iter();
    for (s, r) in [
        ("working", "hook:UserPromptSubmit"),
        ("idle", "hook:Stop"),
        ("exited", "exit"),
    ] {
        assert!(
            it.any(|(a, b)| a == s && b == r),
            "{s} ({r}) missing or out of order in {states:?}"
        );
    }
}
