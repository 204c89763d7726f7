//! Result files, `mpm delegations list/show/logs` from the store, and budgets (tokens, depth),
//! through the real binary with the fake agent as both the main agent and the sub-agents.

use crate::common::{HostKind, Spawn, TestEnv, fake_agent};
use crate::loop_support::*;

/// A sub-agent that reports a stream-json result with `usage` (150 tokens) and prints its depth.
fn sub_agent() -> String {
    fake_argv(&[
        "env:MPM_DEPTH",
        r#"print:{"type":"result","result":"RESULT for {task}\nsecond line","usage":{"input_tokens":100,"output_tokens":50},"total_cost_usd":0.01}"#,
    ])
}

#[test]
fn result_file_has_a_header_and_delegations_commands_read_the_store() {
    let env = TestEnv::new();
    let cfg = write_config(
        &env,
        &format!(
            "executor: {{on_session_exit: wait}}\nagents:\n  engineer: {{argv: {}}}\n",
            sub_agent()
        ),
    );
    let (out, events) = run_session(
        &env,
        &cfg,
        &[],
        &["print:Engineer Agent: implement fib"],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fin = of_kind(&events, "delegation.finished");
    assert_eq!(fin.len(), 1, "{events:?}");
    let id = fin[0]["delegation_id"].as_str().unwrap();
    assert_eq!(fin[0]["status"], "success");
    let result = fin[0]["result_path"].as_str().expect("result_path set");
    let name = std::path::Path::new(result)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(name, format!("engineer-{}.md", &id.replace('-', "")[..8]));
    let text = std::fs::read_to_string(result).unwrap();
    assert!(text.starts_with("# mpm delegation: engineer\n"), "{text}");
    let session = fin[0]["session"].as_str().unwrap();
    for line in [
        "- agent: engineer".to_string(),
        "- task: implement fib".to_string(),
        "- status: success".to_string(),
        format!("- session: {session}"),
        "RESULT for implement fib\nsecond line".to_string(),
    ] {
        assert!(text.contains(&line), "{line:?} not in:\n{text}");
    }
    assert!(text.contains("- duration: "), "{text}");
    // The summary names the task and the result file.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("implement fib") && stderr.contains(name),
        "{stderr}"
    );

    // No daemon runs: the commands read the store.
    let (code, list, err) = mpm_cmd(&env, &cfg, &["delegations", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = list
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{list}");
    assert_eq!(rows[0]["delegation_id"], id);
    assert_eq!(rows[0]["status"], "success");
    assert_eq!(rows[0]["task"], "implement fib");
    assert_eq!(rows[0]["result_path"], result);

    let (code, list, _) = mpm_cmd(
        &env,
        &cfg,
        &["delegations", "list", "--session", &session[..8]],
    );
    assert_eq!(code, 0);
    assert!(
        list.contains(&id[..8]) && list.contains("implement fib"),
        "{list}"
    );
    let (_, none, _) = mpm_cmd(
        &env,
        &cfg,
        &["delegations", "list", "--session", "nosuchsession"],
    );
    assert_eq!(none.trim(), "no delegations");

    let (code, show, err) = mpm_cmd(&env, &cfg, &["delegations", "show", &id[..6]]);
    assert_eq!(code, 0, "{err}");
    assert!(show.contains(&format!("delegation  {id}")), "{show}");
    assert!(show.contains("task        implement fib"), "{show}");
    assert!(show.contains("RESULT for implement fib"), "{show}");

    let (code, logs, err) = mpm_cmd(&env, &cfg, &["delegations", "logs", id]);
    assert_eq!(code, 0, "{err}");
    assert!(
        logs.contains("MPM_DEPTH=1"),
        "the sub-agent runs one level down: {logs}"
    );
    assert!(
        logs.contains("[result]\nRESULT for implement fib"),
        "{logs}"
    );
    let (code, _, err) = mpm_cmd(&env, &cfg, &["delegations", "show", "zzzzzz"]);
    assert_eq!(code, 2, "an unknown id is a usage error");
    assert!(err.contains("no delegation"), "{err}");
}

#[test]
fn stream_json_usage_over_the_session_budget_rejects_the_next_delegation() {
    let env = TestEnv::new();
    let out_dir = env.path("out");
    let cfg = write_config(
        &env,
        &format!(
            "executor: {{on_session_exit: wait, output_dir: {:?}, budgets: {{tokens_per_session: 100}}}}\nagents:\n  engineer: {{argv: {}}}\n",
            out_dir.display().to_string(),
            sub_agent()
        ),
    );
    let glob = format!("{}/*/engineer-*.md", out_dir.display());
    let wait = format!("wait-glob:{glob}");
    let (out, events) = run_session(
        &env,
        &cfg,
        &[],
        &[
            "print:Engineer Agent: first task",
            &wait,
            "print:Engineer Agent: second task",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0));
    let fin = of_kind(&events, "delegation.finished");
    assert_eq!(fin.len(), 2, "{events:?}");
    assert_eq!(fin[0]["task"], "first task");
    assert_eq!(fin[0]["status"], "success");
    assert_eq!(fin[1]["task"], "second task");
    assert_eq!(fin[1]["status"], "rejected");
    let why = fin[1]["reason"].as_str().unwrap();
    assert!(
        why.contains("tokens_per_session (100)") && why.contains("150 tokens"),
        "{why}"
    );
}

#[test]
fn a_session_at_the_maximum_depth_runs_no_delegations() {
    let env = TestEnv::new();
    let cfg = write_config(
        &env,
        &format!("agents:\n  engineer: {{argv: {}}}\n", sub_agent()),
    );
    let (_, events) = run_session(
        &env,
        &cfg,
        &[],
        &["print:Engineer Agent: go deeper"],
        &[("MPM_DEPTH", "2")],
    );
    let fin = of_kind(&events, "delegation.finished");
    assert_eq!(fin.len(), 1, "{events:?}");
    assert_eq!(fin[0]["status"], "rejected");
    let why = fin[0]["reason"].as_str().unwrap();
    assert!(why.contains("max_depth (2)"), "{why}");
    assert!(of_kind(&events, "delegation.started").is_empty());
}

/// With `feedback: off` a finished result is not "pending" (pending = not delivered yet): the
/// list says `off`, the JSON has `feedback_off`, and the session's start records the mode.
#[test]
fn results_of_a_session_without_feedback_are_not_pending() {
    let env = TestEnv::new();
    let cfg = write_config(
        &env,
        &format!(
            "executor: {{on_session_exit: wait}}\nagents:\n  engineer: {{argv: {}}}\n",
            sub_agent()
        ),
    );
    // The fake agent is not the profile's CLI: mpm never types into it, so feedback is off.
    let (out, events) = run_session(
        &env,
        &cfg,
        &[],
        &["print:Engineer Agent: implement fib"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0));
    let started = of_kind(&events, "session.started");
    assert_eq!(started[0]["feedback"], "off", "{started:?}");
    assert_eq!(of_kind(&events, "delegation.finished").len(), 1);
    let (code, list, err) = mpm_cmd(&env, &cfg, &["delegations", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(list.contains("implement fib"), "{list}");
    assert!(!list.contains("pending"), "{list}");
    assert!(list.contains(" off "), "{list}");
    let (_, json, _) = mpm_cmd(&env, &cfg, &["delegations", "list", "--json"]);
    let row: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(row["feedback_off"], true, "{json}");
    assert!(row["fed_back"].is_null());
    let (_, show, _) = mpm_cmd(
        &env,
        &cfg,
        &[
            "delegations",
            "show",
            row["delegation_id"].as_str().unwrap(),
        ],
    );
    assert!(show.contains("feedback    off"), "{show}");
}

/// A sub-agent runs where the user ran `mpm run` and with the user's environment, in both hosts:
/// a daemon (under systemd: its own cwd and environment) starts it in the client's folder with the
/// client's variables, as it starts the main agent (an API key or a virtualenv the sub-agent needs
/// lives there, and "implement X" means X in the user's project).
fn a_sub_agent_runs_in_the_clients_folder_with_its_environment(host: HostKind) {
    let env = TestEnv::for_host(host);
    let project = env.path("project");
    std::fs::create_dir(&project).unwrap();
    let project = project.canonicalize().unwrap();
    let cfg = write_config(
        &env,
        &format!(
            "executor: {{on_session_exit: wait}}\nagents:\n  engineer: {{argv: {}}}\n",
            fake_argv(&["env:MPM_TEST_CLIENT_VAR", "cwd", "print:task={task}"])
        ),
    );
    let events = env.path("events.jsonl");
    let fake = fake_agent();
    let mut args = vec!["--config", cfg.as_str(), "run"];
    if host == HostKind::InProcess {
        args.push("--no-daemon");
    }
    args.extend([
        "--events-file",
        events.to_str().unwrap(),
        "--",
        "python3",
        fake.as_str(),
        "print:Engineer Agent: say where you are",
    ]);
    let mut spawn = Spawn::new(&env, &args);
    spawn
        .env
        .push(("MPM_TEST_CLIENT_VAR".into(), "from-the-client".into()));
    spawn.cwd = Some(&project);
    let mut p = spawn.start();
    assert_eq!(p.wait_output().code(), Some(0), "{}", p.text());
    let evs = crate::common::read_events(&events);
    let fin = of_kind(&evs, "delegation.finished");
    assert_eq!(fin.len(), 1, "{evs:#?}");
    assert_eq!(fin[0]["status"], "success", "{evs:#?}");
    let out = std::fs::read_to_string(fin[0]["output_path"].as_str().unwrap()).unwrap();
    assert!(
        out.contains("MPM_TEST_CLIENT_VAR=from-the-client\n"),
        "the sub-agent did not get the client's environment:\n{out}"
    );
    assert!(
        out.contains(&format!("cwd={}\n", project.display())),
        "the sub-agent did not run in the client's folder {}:\n{out}",
        project.display()
    );
}

crate::both_hosts!(a_sub_agent_runs_in_the_clients_folder_with_its_environment);
