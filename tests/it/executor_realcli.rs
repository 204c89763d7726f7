//! The executor running the real `claude` CLI (the built-in engineer agent's default argv) against
//! the project's fake LLM server (`fixtures/fake_llm.py`, `fixtures/scenarios/limiter.json`).
//! Skips with `SKIPPED: ...` when the CLI is absent (a failure under CI).

use crate::executor_support;
use crate::realclient;

use executor_support::*;
use mpm::config::{Config, SessionExitPolicy};
use mpm::events::EventBody;
use realclient::{FakeServer, claude_bin, fixtures_dir, path_with, skip};

#[test]
fn engineer_default_argv_runs_the_real_cli_and_saves_the_result() {
    let Some(claude) = claude_bin() else {
        return skip("real claude CLI not installed");
    };
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let server = FakeServer::start("limiter.json", dir.path());

    let mut cfg = Config::default();
    cfg.run.grace_secs = 1.0;
    cfg.executor.timeout_secs = 60;
    // The built-in engineer sets no argv: it runs the default profile's (claude's) headless form.
    assert_eq!(
        mpm::executor::AgentRegistry::from_config(&cfg)
            .get("engineer")
            .unwrap()
            .argv,
        mpm::config::default_agent_argv(),
        "built-in argv untouched"
    );
    let engineer = cfg.agents.get_mut("engineer").unwrap();
    assert!(engineer.argv.is_empty());
    engineer.env.insert("PATH".into(), path_with(&claude));
    engineer
        .env
        .insert("HOME".into(), home.display().to_string());
    engineer.env.extend(server.claude_env());
    engineer.cwd = Some(dir.path().to_path_buf());

    let mut h = Harness::start(&cfg);
    h.submit("Engineer Agent", "plan the rate limiter");
    // A task that would be claude's --version flag if it reached argv unguarded.
    h.submit("engineer", "--version");
    h.until_finished(2);
    let reply = std::fs::read_to_string(fixtures_dir().join("scenarios/limiter_reply.md")).unwrap();
    for (task, want) in [
        ("plan the rate limiter", reply.trim()),
        ("--version", "Done."),
    ] {
        let fin = h.finished(task);
        let EventBody::DelegationFinished {
            delegation,
            status,
            output_path,
            ..
        } = &fin.body
        else {
            unreachable!()
        };
        let id = &delegation.delegation_id;
        let stderr =
            std::fs::read_to_string(h.out().join(format!("{id}.stderr"))).unwrap_or_default();
        assert_eq!(
            status.as_str(),
            "success",
            "{task}: {}\nstderr: {stderr}",
            h.dump()
        );
        let result = h.out().join(format!("{id}.result.md"));
        assert_eq!(output_path.as_deref(), Some(result.to_str().unwrap()));
        let text = std::fs::read_to_string(&result).unwrap();
        assert_eq!(text.trim(), want, "{task}");
    }
    let summaries = h.shutdown(SessionExitPolicy::Cancel);
    assert_eq!(summaries.len(), 2);
}
