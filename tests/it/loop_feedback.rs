//! Results back into the main agent by paste (a CLI without hooks): typed in only when the session
//! is idle and the user is not typing, one message per batch, a per-session cap. The main agent is
//! the fake agent on a real PTY under the real binary; the sub-agents are fake agents too. Each
//! test runs in both hosts: in-process, and hosted by a daemon (the paste goes into the daemon's
//! PTY, the typing it must wait for comes through the attached client).

use std::time::Duration;

use crate::common::{DEADLINE, HostKind, PtyProc, Spawn, TestEnv, fake_agent, wait_until};
use crate::loop_support::*;

const RESULTS: &str = "[mpm] Results of the delegations";

/// A config whose active profile is the fake agent with paste feedback (idle after `idle_ms` of
/// quiet output), and whose engineer answers with a stream-json result.
fn config(env: &TestEnv, idle_ms: u64, extra: &str) -> String {
    write_config(
        env,
        &format!(
            "profile: fake\nprofiles:\n  fake: {{command: [{:?}], feedback: on-idle}}\n\
             orchestration: {{idle_quiet_ms: {idle_ms}, typing_quiet_ms: 300, batch_window_ms: 300{extra}}}\n\
             agents:\n  engineer: {{argv: {}}}\n",
            fake_agent(),
            fake_argv(&[r#"print:{"type":"result","result":"done: {task}"}"#]),
        ),
    )
}

fn start(env: &TestEnv, cfg: &str, steps: &[&str]) -> PtyProc {
    let events = env.path("events.jsonl");
    let fake = fake_agent();
    let mut args = vec!["--config", cfg, "run"];
    if env.host() == HostKind::InProcess {
        args.push("--no-daemon");
    }
    args.extend(["--events-file", events.to_str().unwrap(), "--", &fake]);
    args.extend_from_slice(steps);
    Spawn::new(env, &args).start()
}

fn events(env: &TestEnv) -> Vec<serde_json::Value> {
    crate::common::read_events(&env.path("events.jsonl"))
}

fn wait_events(env: &TestEnv, what: &str, pred: impl Fn(&[serde_json::Value]) -> bool) {
    assert!(
        wait_until(DEADLINE, || pred(&events(env))),
        "timed out waiting for {what}: {:#?}",
        events(env)
    );
}

/// The session really ran in `env`'s host: a daemon keeps results in its own state folder.
fn assert_host(env: &TestEnv, evs: &[serde_json::Value]) {
    let daemon_state = env.path("daemon-state").display().to_string();
    for f in of_kind(evs, "delegation.finished") {
        let path = f["result_path"].as_str().unwrap_or("");
        assert_eq!(
            path.starts_with(&daemon_state),
            env.host() == HostKind::Daemon,
            "{path} for {:?}",
            env.host()
        );
    }
}

/// End the fake agent's `echo` step (EOF) and wait for mpm to exit.
fn finish(p: &mut PtyProc) {
    p.send(b"\x04");
    assert_eq!(p.wait_output().code(), Some(0), "{}", p.text());
}

fn one_bracketed_paste_per_batch_and_only_once_the_agent_is_idle(host: HostKind) {
    let env = TestEnv::for_host(host);
    // Busy is ticks 100 ms apart; idle is 2 s of quiet, so a tick delayed by load (the suite runs
    // on 2 cores) is not taken for the end of the agent's work.
    let cfg = config(&env, 2000, "");
    let mut p = start(
        &env,
        &cfg,
        &[
            "write-hex:1b5b3f3230303468", // the agent asks for bracketed paste
            "print:Engineer Agent: task one",
            "print:Engineer Agent: task two",
            "tick:25:100", // busy for a while: results are ready before it is idle
            "print:IDLE",
            "echo",
        ],
    );
    p.expect("echo: \x1b[200~[mpm] Results");
    let text = p.text();
    let pasted = text.find(RESULTS).unwrap();
    let idle = text.find("IDLE").expect("the agent said IDLE");
    assert!(
        pasted > idle && pasted > text.rfind("tick 25").unwrap(),
        "results were typed while the agent was busy:\n{text}"
    );
    wait_events(&env, "the feedback event", |evs| {
        !of_kind(evs, "delegation.feedback").is_empty()
    });
    finish(&mut p);
    let evs = events(&env);
    let fb = of_kind(&evs, "delegation.feedback");
    assert_eq!(fb.len(), 1, "one message for the batch: {fb:?}");
    assert_eq!(fb[0]["via"], "paste");
    assert_host(&env, &evs);
    let ids: Vec<&str> = fb[0]["delegation_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let finished: Vec<&str> = of_kind(&evs, "delegation.finished")
        .iter()
        .map(|e| e["delegation_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(
        ids.iter().all(|i| finished.contains(i)),
        "{ids:?} vs {finished:?}"
    );
    // The message reached the agent: both results, each with its file.
    let text = p.text();
    for needle in [
        "done: task one",
        "done: task two",
        "full result: ",
        "engineer-",
    ] {
        assert!(text.contains(needle), "{needle:?} not pasted:\n{text}");
    }
    assert_eq!(
        text.matches("echo: \x1b[200~").count(),
        1,
        "one paste:\n{text}"
    );
}

fn no_paste_while_the_user_has_a_half_typed_line(host: HostKind) {
    let env = TestEnv::for_host(host);
    let cfg = config(&env, 500, "");
    let mut p = start(
        &env,
        &cfg,
        &["print:Engineer Agent: quick job", "print:IDLE", "echo"],
    );
    p.expect("IDLE");
    p.send(b"abc"); // typed, not submitted
    wait_events(&env, "the delegation to finish", |evs| {
        !of_kind(evs, "delegation.finished").is_empty()
    });
    // Long enough for the agent to count as idle and for the batch to close (0.5 s, 0.3 s): a
    // paste would come now if the half-typed line did not hold it back.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !p.text().contains(RESULTS),
        "pasted over the user's typing:\n{}",
        p.text()
    );
    assert!(of_kind(&events(&env), "delegation.feedback").is_empty());
    p.send(b"\r");
    p.expect("echo: abc");
    p.expect(&format!("echo: {RESULTS}"));
    let text = p.text();
    assert!(text.find("echo: abc").unwrap() < text.find(&format!("echo: {RESULTS}")).unwrap());
    // Without bracketed paste the message is one line.
    assert!(text.contains("done: quick job"), "{text}");
    finish(&mut p);
}

fn the_per_session_cap_leaves_later_results_pending(host: HostKind) {
    let env = TestEnv::for_host(host);
    let cfg = config(&env, 500, ", max_feedback_per_session: 1");
    let mut p = start(
        &env,
        &cfg,
        &[
            "print:Engineer Agent: first",
            &format!("wait-stdin:{RESULTS}"),
            "print:Engineer Agent: second",
            "echo",
        ],
    );
    p.expect(&format!("GOT {RESULTS}"));
    wait_events(&env, "the second delegation to finish", |evs| {
        of_kind(evs, "delegation.finished")
            .iter()
            .any(|e| e["task"] == "second")
    });
    // Time for a second paste, were the cap not there.
    std::thread::sleep(Duration::from_millis(1500));
    finish(&mut p);
    let evs = events(&env);
    let fb = of_kind(&evs, "delegation.feedback");
    assert_eq!(fb.len(), 1, "{fb:?}");
    assert_host(&env, &evs);
    assert_eq!(p.text().matches(&format!("echo: {RESULTS}")).count(), 0);
    // `mpm delegations` lists the second as pending.
    let (code, out, err) = mpm_cmd(&env, &cfg, &["delegations", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by = |t: &str| rows.iter().find(|r| r["task"] == t).unwrap().clone();
    assert_eq!(by("first")["fed_back"], "paste");
    assert!(by("second")["fed_back"].is_null());
    let (_, text, _) = mpm_cmd(&env, &cfg, &["delegations", "list"]);
    assert!(
        text.lines()
            .any(|l| l.contains("second") && l.contains("pending")),
        "{text}"
    );
}

crate::both_hosts!(
    one_bracketed_paste_per_batch_and_only_once_the_agent_is_idle,
    no_paste_while_the_user_has_a_half_typed_line,
    the_per_session_cap_leaves_later_results_pending,
);
