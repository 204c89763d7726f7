//! Event hooks (`hooks:`) and terminal notifications through the real binary.

use crate::common::{DEADLINE, Spawn, TestEnv, alive, fake_agent, read_pid, wait_until};
use crate::loop_support::*;

#[test]
fn hooks_get_the_event_as_json_on_stdin_filtered_by_kind_with_a_timeout() {
    let env = TestEnv::new();
    let got = env.path("got.jsonl");
    let slow_pid = env.path("slow.pid");
    let cfg = write_config(
        &env,
        &format!(
            "executor: {{on_session_exit: wait}}\n\
             agents:\n  engineer: {{argv: {}}}\n\
             hooks:\n\
             \x20 - {{on: [\"delegation.finished\"], argv: [\"tee\", \"-a\", {got:?}]}}\n\
             \x20 - {{on: [\"session.*\"], argv: [\"python3\", {:?}, \"pid:{}\", \"sleep:0\"], timeout_secs: 3}}\n\
             \x20 - {{on: [\"session.started\"], argv: [\"/no/such/hook\"]}}\n",
            fake_argv(&["print:done {task}"]),
            fake_agent(),
            slow_pid.display(),
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
        "a failing hook is not fatal: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(of_kind(&events, "delegation.finished").len(), 1);
    let text = std::fs::read_to_string(&got).unwrap_or_default();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "only delegation.finished: {text}");
    assert_eq!(lines[0]["kind"], "delegation.finished");
    assert_eq!(lines[0]["task"], "implement fib");
    assert_eq!(lines[0]["status"], "success");
    // The never-ending hook was stopped at its timeout before mpm exited.
    let pid = read_pid(&slow_pid);
    assert!(
        wait_until(DEADLINE, || !alive(pid)),
        "hook {pid} outlived its timeout"
    );
}

#[test]
fn a_finished_batch_notifies_the_terminal() {
    let env = TestEnv::new();
    let cfg = write_config(
        &env,
        &format!(
            "executor: {{on_session_exit: wait}}\nnotify: {{desktop: false}}\nagents:\n  engineer: {{argv: {}}}\n",
            fake_argv(&["print:done {task}"])
        ),
    );
    let fake = fake_agent();
    let p = Spawn::new(
        &env,
        &[
            "--config",
            &cfg,
            "run",
            "--no-daemon",
            "--",
            &fake,
            "print:Engineer Agent: implement fib",
            "print:Engineer Agent: test fib",
            // Text below the block: both delegations are final together (`detect::finality`).
            "print:That is the plan.",
            "sleep:0",
        ],
    )
    .start();
    p.expect("\x1b]9;mpm: 2 delegations finished (2 succeeded, 0 did not)\x07");
    let text = p.text();
    assert!(
        text.contains("\x1b]777;notify;mpm;mpm: 2 delegations finished"),
        "{text:?}"
    );
    assert_eq!(
        text.matches("\x1b]9;").count(),
        1,
        "one notification for the batch: {text:?}"
    );
}

/// When the governor stops the main agent, the user's terminal says so in one line (which limit,
/// the figure), in either host.
fn governor_stop_is_one_line_on_the_terminal(host: crate::common::HostKind) {
    let env = TestEnv::for_host(host);
    let cfg = write_config(
        &env,
        "limits:\n  interval_ms: 100\n  cgroup: \"off\"\n  memory_mb: {warning: null, critical: null, hard: 80}\n",
    );
    let fake = fake_agent();
    let mut args = vec!["--config", cfg.as_str(), "run"];
    if host == crate::common::HostKind::InProcess {
        args.push("--no-daemon");
    }
    args.extend(["--", &fake, "print:ALLOCATING", "alloc:300", "sleep:0"]);
    let out = env
        .command(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("the governor stopped"))
        .collect();
    assert_eq!(lines.len(), 1, "{host:?}: {stderr}");
    assert!(
        lines[0].starts_with("mpm: the governor stopped the agent: memory ")
            && lines[0].ends_with(" MB over its hard limit of 80 MB"),
        "{host:?}: {stderr}"
    );
}

crate::both_hosts!(governor_stop_is_one_line_on_the_terminal);
