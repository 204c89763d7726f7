//! What the user sees does not depend on the backend: a session whose delegations run on a NATS
//! worker gives the same `delegation.*` events (plus the worker's name), the same result file,
//! the same `mpm delegations` rows and logs, and the same results pasted back into the main agent,
//! as the local backend (tests/it/loop_delegations.rs, loop_feedback.rs). Real nats-server, real
//! `mpm worker`, the real binary as the supervisor; fake agents.

use crate::common::{PtyProc, Spawn, TestEnv, fake_agent};
use crate::loop_support::*;
use crate::nats_support::{NatsServer, Worker};

/// The worker's registry: `engineer` answers with a stream-json result and usage.
fn worker_config() -> String {
    let argv: Vec<String> = serde_json::from_str(&fake_argv(&[
        "env:MPM_DEPTH",
        r#"print:{"type":"result","result":"RESULT for {task}\nsecond line","usage":{"input_tokens":100,"output_tokens":50}}"#,
    ]))
    .unwrap();
    serde_json::json!({"run": {"grace_secs": 0.3}, "agents": {"engineer": {"argv": argv, "timeout_secs": 60}}})
        .to_string()
}

/// The supervisor's side: the agent's name only (its argv is the worker's business), NATS backend.
fn supervisor_yaml(url: &str, extra: &str) -> String {
    format!(
        "executor: {{backend: nats, on_session_exit: wait, nats: {{url: {url:?}, heartbeat_timeout_secs: 5}}}}\n\
         agents:\n  engineer: {{argv: {}}}\n{extra}",
        fake_argv(&["print:the supervisor must not run this: {task}"])
    )
}

#[test]
fn delegations_commands_and_result_files_are_the_same_through_a_worker() {
    let Some(nats) = NatsServer::start() else {
        return;
    };
    let env = TestEnv::new();
    let _w = Worker::start(
        env.path("").as_path(),
        &nats.url,
        "w1",
        &worker_config(),
        "engineer",
        2,
    );
    let cfg = write_config(&env, &supervisor_yaml(&nats.url, ""));
    let (out, events) = run_session(
        &env,
        &cfg,
        &[],
        &["print:Engineer Agent: implement fib"],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let fin = of_kind(&events, "delegation.finished");
    assert_eq!(fin.len(), 1, "{events:#?}");
    assert_eq!(fin[0]["status"], "success", "{events:#?}");
    assert_eq!(fin[0]["worker"], "w1");
    let id = fin[0]["delegation_id"].as_str().unwrap();
    let result = fin[0]["result_path"].as_str().expect("result_path set");
    let text = std::fs::read_to_string(result).unwrap();
    assert!(text.starts_with("# mpm delegation: engineer\n"), "{text}");
    assert!(text.contains("- task: implement fib"), "{text}");
    assert!(
        text.contains("RESULT for implement fib\nsecond line"),
        "{text}"
    );
    assert!(
        !text.contains("must not run"),
        "the supervisor ran it: {text}"
    );
    assert!(
        stderr.contains("implement fib"),
        "the summary names the task: {stderr}"
    );

    let (code, list, err) = mpm_cmd(&env, &cfg, &["delegations", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = list
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{list}");
    assert_eq!(rows[0]["delegation_id"], id);
    assert_eq!(rows[0]["status"], "success");
    assert_eq!(rows[0]["result_path"], result);
    let (code, show, err) = mpm_cmd(&env, &cfg, &["delegations", "show", &id[..8]]);
    assert_eq!(code, 0, "{err}");
    assert!(show.contains("RESULT for implement fib"), "{show}");
    // The sub-agent's output was streamed back from the worker; it ran one level down.
    let (code, logs, err) = mpm_cmd(&env, &cfg, &["delegations", "logs", id]);
    assert_eq!(code, 0, "{err}");
    assert!(logs.contains("MPM_DEPTH=1"), "{logs}");
    assert!(
        logs.contains("[result]\nRESULT for implement fib"),
        "{logs}"
    );
}

#[test]
fn results_from_a_worker_are_pasted_back_into_the_main_agent() {
    let Some(nats) = NatsServer::start() else {
        return;
    };
    let env = TestEnv::new();
    let _w = Worker::start(
        env.path("").as_path(),
        &nats.url,
        "w1",
        &worker_config(),
        "engineer",
        2,
    );
    let cfg = write_config(
        &env,
        &supervisor_yaml(
            &nats.url,
            &format!(
                "profile: fake\nprofiles:\n  fake: {{command: [{:?}], feedback: on-idle}}\n\
                 orchestration: {{idle_quiet_ms: 500, typing_quiet_ms: 300, batch_window_ms: 300}}\n",
                fake_agent()
            ),
        ),
    );
    let events = env.path("events.jsonl");
    let fake = fake_agent();
    let mut p: PtyProc = Spawn::new(
        &env,
        &[
            "--config",
            &cfg,
            "run",
            "--no-daemon",
            "--events-file",
            events.to_str().unwrap(),
            "--",
            &fake,
            "write-hex:1b5b3f3230303468",
            "print:Engineer Agent: task one",
            "print:Engineer Agent: task two",
            "print:IDLE",
            "echo",
        ],
    )
    .start();
    p.expect("echo: \x1b[200~[mpm] Results");
    p.expect("\x1b[201~");
    let text = p.text();
    for needle in ["RESULT for task one", "RESULT for task two", "engineer-"] {
        assert!(text.contains(needle), "{needle:?} not pasted:\n{text}");
    }
    p.send(b"\x04");
    assert_eq!(p.wait_output().code(), Some(0), "{}", p.text());
    let evs: Vec<serde_json::Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let fb = of_kind(&evs, "delegation.feedback");
    assert_eq!(fb.len(), 1, "one message for the batch: {fb:#?}");
    assert_eq!(fb[0]["via"], "paste");
    let fin = of_kind(&evs, "delegation.finished");
    assert_eq!(fin.len(), 2, "{evs:#?}");
    assert!(
        fin.iter()
            .all(|f| f["worker"] == "w1" && f["status"] == "success"),
        "{fin:#?}"
    );
}
