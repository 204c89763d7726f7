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
