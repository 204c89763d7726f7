//! The executor against the fake agent: limits, queue, timeouts, dedup, retries, breaker, rate cap,
//! output capture, session end. Every wait is on events from the bus (or a polled condition) with a
//! deadline; nothing sleeps to synchronise.

use crate::executor_support;

use std::time::Duration;

use executor_support::*;
use mpm::config::{RetryConfig, SessionExitPolicy, UnknownAgentPolicy};
use mpm::events::{DelegationStatus, EventBody};

#[test]
fn global_parallelism_never_exceeds_the_limit() {
    let mut cfg = config(vec![("slow", fake_agent(&["{task}", "sleep:0.3"]))]);
    cfg.executor.max_parallel = 2;
    let mut h = Harness::start(&cfg);
    for i in 0..6 {
        h.submit("slow", &format!("print:job{i}"));
    }
    h.until_finished(6);
    let max = max_overlap(&h.events, None);
    assert!(max <= 2, "{max} ran at once:\n{}", h.dump());
    assert!(max >= 1);
    assert_eq!(count(&h.events, "delegation.started"), 6);
    for i in 0..6 {
        assert_eq!(status(h.finished(&format!("print:job{i}"))), "success");
    }
}

#[test]
fn per_agent_parallelism_is_respected_under_the_global_limit() {
    let mut one = fake_agent(&["{task}", "sleep:0.3"]);
    one.max_parallel = Some(1);
    let mut cfg = config(vec![
        ("one", one),
        ("many", fake_agent(&["{task}", "sleep:0.3"])),
    ]);
    cfg.executor.max_parallel = 3;
    let mut h = Harness::start(&cfg);
    for i in 0..3 {
        h.submit("one", &format!("print:one{i}"));
        h.submit("many", &format!("print:many{i}"));
    }
    h.until_finished(6);
    assert!(max_overlap(&h.events, Some("one")) <= 1, "{}", h.dump());
    assert!(max_overlap(&h.events, None) <= 3, "{}", h.dump());
    assert_eq!(count(&h.events, "delegation.started"), 6);
}

#[test]
fn events_of_one_delegation_share_a_step_and_report_output() {
    let cfg = config(vec![("ok", fake_agent(&["{task}"]))]);
    let mut h = Harness::start(&cfg);
    h.submit("ok", "print:hello world");
    h.until_finished(1);
    let steps: Vec<&str> = h.events.iter().map(|e| e.step_id.as_str()).collect();
    let kinds: Vec<&str> = h.events.iter().map(|e| e.kind()).collect();
    assert_eq!(
        kinds,
        [
            "delegation.queued",
            "delegation.started",
            "delegation.finished"
        ]
    );
    assert!(steps.iter().all(|s| *s == steps[0]), "{steps:?}");
    let fin = &h.events[2];
    let EventBody::DelegationFinished {
        delegation,
        status,
        exit_code,
        output_path,
        ..
    } = &fin.body
    else {
        unreachable!()
    };
    assert_eq!(*status, DelegationStatus::Success);
    assert_eq!(*exit_code, Some(0));
    let path = output_path.as_deref().expect("output path");
    assert_eq!(
        std::path::Path::new(path),
        h.out().join(format!("{}.stdout", delegation.delegation_id))
    );
    assert_eq!(std::fs::read_to_string(path).unwrap(), "hello world\n");
    assert!(
        !h.out()
            .join(format!("{}.stderr", delegation.delegation_id))
            .exists(),
        "a silent stream leaves no file"
    );
}

#[test]
fn stream_json_result_is_saved_as_result_md() {
    let cfg = config(vec![(
        "ok",
        fake_agent(&["print:{\"type\":\"system\"}", "{task}"]),
    )]);
    let mut h = Harness::start(&cfg);
    h.submit(
        "ok",
        r##"print:{"type":"result","subtype":"success","result":"# Report\nall good"}"##,
    );
    h.until_finished(1);
    let EventBody::DelegationFinished {
        delegation,
        output_path,
        ..
    } = &h.events[2].body
    else {
        unreachable!()
    };
    let want = h
        .out()
        .join(format!("{}.result.md", delegation.delegation_id));
    assert_eq!(output_path.as_deref(), Some(want.to_str().unwrap()));
    assert_eq!(
        std::fs::read_to_string(&want).unwrap(),
        "# Report\nall good"
    );
}

#[test]
fn queue_overflow_is_rejected_with_an_event() {
    let mut cfg = config(vec![("slow", fake_agent(&["{task}", "sleep:0"]))]);
    cfg.executor.max_parallel = 1;
    cfg.executor.queue_capacity = 2;
    let mut h = Harness::start(&cfg);
    for i in 0..6 {
        h.submit("slow", &format!("print:q{i}"));
    }
    // At most 1 running + 2 waiting were admitted: at least 3 rejected at once.
    h.until("3 rejections", |evs| count(evs, "delegation.finished") >= 3);
    let rejected: Vec<_> = h
        .events
        .iter()
        .filter(|e| e.kind() == "delegation.finished")
        .collect();
    for e in &rejected {
        assert_eq!(status(e), "rejected");
        assert!(reason(e).contains("queue full"), "{}", reason(e));
    }
    let summaries = h.shutdown(SessionExitPolicy::Cancel);
    assert_eq!(summaries.len(), 6);
    let admitted = count(&h.events, "delegation.queued");
    assert!(admitted <= 3, "{admitted} admitted:\n{}", h.dump());
    assert_eq!(
        summaries
            .iter()
            .filter(|s| s.status == DelegationStatus::Cancelled)
            .count(),
        admitted
    );
}

#[test]
fn timeout_kills_the_whole_tree_including_a_term_ignoring_grandchild() {
    // The timeout counts from the start, and on a loaded machine python may not even have set up
    // its tree (leader pid, TERM-ignoring grandchild) within it. Such a run says nothing about the
    // tree: it is repeated with a doubled timeout until the tree was up before the timeout struck,
    // and the assertions are made on that run.
    let mut timeout = 1;
    loop {
        let dir = tempfile::tempdir().unwrap();
        let gc = dir.path().join("gc.pid");
        let leader = dir.path().join("leader.pid");
        let mut agent = fake_agent(&[
            &format!("pid:{}", leader.display()),
            &format!("grandchild:{}:hup", gc.display()),
            "{task}",
            "sleep:0",
        ]);
        agent.timeout_secs = Some(timeout);
        let mut h = Harness::start(&config(vec![("hang", agent)]));
        h.submit("hang", "print:hanging");
        h.until("started", |evs| count(evs, "delegation.started") >= 1);
        h.until_finished(1);
        let fin = h.finished("print:hanging");
        assert_eq!(status(fin), "timeout", "{}", h.dump());
        let now = |p: &std::path::Path| {
            std::fs::read_to_string(p)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
        };
        let pids = PidGuard([now(&leader), now(&gc)].into_iter().flatten().collect());
        if pids.0.len() == 2 {
            for &pid in &pids.0 {
                assert!(
                    wait_pid_gone(pid, DEADLINE),
                    "pid {pid} survived the timeout"
                );
            }
            return;
        }
        assert!(
            timeout < 32,
            "the agent never set up its tree within its timeout ({timeout} s)"
        );
        eprintln!(
            "the tree was not up within {timeout} s: again with {} s",
            timeout * 2
        );
        timeout *= 2;
    }
}

#[test]
fn identical_delegations_run_once_per_session() {
    let cfg = config(vec![("ok", fake_agent(&["{task}"]))]);
    let mut h = Harness::start(&cfg);
    h.submit("ok", "print:same   task");
    h.submit("OK Agent", "  PRINT:same task ");
    h.submit("ok", "print:other task");
    h.until_finished(2);
    let summaries = h.shutdown(SessionExitPolicy::Wait);
    assert_eq!(summaries.len(), 2, "{summaries:?}");
    assert_eq!(count(&h.events, "delegation.queued"), 2);
    assert_eq!(count(&h.events, "delegation.started"), 2);
}

#[test]
fn transient_exit_codes_are_retried_up_to_the_budget() {
    let mut agent = fake_agent(&["{task}"]);
    agent.retry = RetryConfig {
        max_retries: 2,
        transient_exit_codes: vec![75],
        backoff_ms: 10,
    };
    let mut h = Harness::start(&config(vec![("flaky", agent)]));
    h.submit("flaky", "exit:75");
    h.submit("flaky", "exit:3");
    h.until_finished(2);
    let starts = |task: &str| {
        h.events
            .iter()
            .filter(|e| matches!(&e.body, EventBody::DelegationStarted { delegation, .. } if delegation.task == task))
            .count()
    };
    assert_eq!(starts("exit:75"), 3, "1 attempt + 2 retries:\n{}", h.dump());
    assert_eq!(starts("exit:3"), 1, "not transient: no retry");
    assert_eq!(status(h.finished("exit:75")), "failed");
    let summaries = h.shutdown(SessionExitPolicy::Wait);
    let s = summaries.iter().find(|s| s.task == "exit:75").unwrap();
    assert_eq!((s.attempts, s.exit_code), (3, Some(75)));
}

#[test]
fn breaker_opens_rejects_fast_then_half_opens_after_the_cooldown() {
    let mut cfg = config(vec![("brittle", fake_agent(&["{task}"]))]);
    cfg.executor.breaker_failures = 2;
    cfg.executor.breaker_cooldown_secs = 1;
    let mut h = Harness::start(&cfg);
    h.submit("brittle", "exit:1");
    h.until_finished(1);
    h.submit("brittle", "exit:2");
    h.until_finished(2);
    assert_eq!(status(h.finished("exit:2")), "failed");
    // Open: rejected at once, without being queued or started.
    h.submit("brittle", "exit:4");
    h.until_finished(3);
    let fin = h.finished("exit:4");
    assert_eq!(status(fin), "rejected");
    assert!(reason(fin).contains("breaker open"), "{}", reason(fin));
    assert_eq!(count(&h.events, "delegation.queued"), 2);
    // After the cool-down one trial runs; poll by submitting until one is not rejected.
    let mut n = 0;
    let trial = loop {
        n += 1;
        let task = format!("print:trial{n}");
        let before = h.events.len();
        h.submit("brittle", &task);
        h.until(&format!("end of {task}"), |evs| {
            count(&evs[before..], "delegation.finished") >= 1
        });
        if status(h.finished(&task)) != "rejected" {
            break task;
        }
        assert!(n < 200, "breaker never half-opened");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status(h.finished(&trial)), "success");
    // The trial's success closed it: a failure now runs (failed, not rejected).
    h.submit("brittle", "exit:5");
    let want = count(&h.events, "delegation.finished") + 1;
    h.until_finished(want);
    assert_eq!(status(h.finished("exit:5")), "failed");
}

#[test]
fn rate_cap_rejects_the_excess() {
    let mut cfg = config(vec![("ok", fake_agent(&["{task}"]))]);
    cfg.executor.rate_per_minute = 2;
    let mut h = Harness::start(&cfg);
    for i in 0..4 {
        h.submit("ok", &format!("print:r{i}"));
    }
    h.until_finished(4);
    let rejected: Vec<_> = h
        .events
        .iter()
        .filter(|e| status(e) == "rejected")
        .collect();
    assert_eq!(rejected.len(), 2, "{}", h.dump());
    assert!(rejected.iter().all(|e| reason(e).contains("rate")));
    assert_eq!(count(&h.events, "delegation.started"), 2);
}

#[test]
fn five_megabytes_of_output_are_captured_whole() {
    let cfg = config(vec![("big", fake_agent(&["{task}"]))]);
    let mut h = Harness::start(&cfg);
    h.submit("big", "random:5242880:1");
    h.until_finished(1);
    let fin = h.finished("random:5242880:1");
    assert_eq!(status(fin), "success", "{}", h.dump());
    let EventBody::DelegationFinished { output_path, .. } = &fin.body else {
        unreachable!()
    };
    let got = std::fs::read(output_path.as_deref().unwrap()).unwrap();
    let want = std::process::Command::new("python3")
        .args([fake(), "random:5242880:1".into()])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(want.len(), 5_242_880);
    assert_eq!(got.len(), want.len());
    assert!(got == want, "captured bytes differ from the agent's output");
}

#[test]
fn cancel_at_session_end_leaves_no_process() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let mut cfg = config(vec![(
        "hang",
        fake_agent(&[
            &format!("pid:{d}/{{delegation_id}}.pid"),
            &format!("grandchild:{d}/{{delegation_id}}.gc:hup"),
            "{task}",
            "sleep:0",
        ]),
    )]);
    cfg.executor.max_parallel = 2;
    let mut h = Harness::start(&cfg);
    for i in 0..4 {
        h.submit("hang", &format!("print:c{i}"));
    }
    h.until("2 started", |evs| count(evs, "delegation.started") >= 2);
    let ids: Vec<String> = h
        .events
        .iter()
        .filter(|e| e.kind() == "delegation.started")
        .map(|e| delegation_id(e).to_string())
        .collect();
    let mut pids = PidGuard(Vec::new());
    for id in &ids {
        pids.0
            .push(read_pid(&dir.path().join(format!("{id}.pid")), DEADLINE));
        pids.0
            .push(read_pid(&dir.path().join(format!("{id}.gc")), DEADLINE));
    }
    let summaries = h.shutdown(SessionExitPolicy::Cancel);
    assert_eq!(summaries.len(), 4);
    assert!(
        summaries
            .iter()
            .all(|s| s.status == DelegationStatus::Cancelled),
        "{summaries:?}"
    );
    assert_eq!(
        count(&h.events, "delegation.started"),
        2,
        "queued ones never start"
    );
    for &pid in &pids.0 {
        assert!(
            wait_pid_gone(pid, DEADLINE),
            "pid {pid} survived cancellation"
        );
    }
    // New submissions after shutdown are ignored.
}

#[test]
fn wait_at_session_end_finishes_everything() {
    let mut cfg = config(vec![("ok", fake_agent(&["{task}", "sleep:0.2"]))]);
    cfg.executor.max_parallel = 1;
    let mut h = Harness::start(&cfg);
    for i in 0..3 {
        h.submit("ok", &format!("print:w{i}"));
    }
    let summaries = h.shutdown(SessionExitPolicy::Wait);
    assert_eq!(summaries.len(), 3);
    assert!(
        summaries
            .iter()
            .all(|s| s.status == DelegationStatus::Success)
    );
    assert!(
        mpm::executor::format_summary(&summaries)
            .lines()
            .all(|l| l.contains("ok") && l.contains("success") && l.contains(".stdout"))
    );
}

#[test]
fn unknown_agents_are_rejected_or_routed_per_policy() {
    let mut cfg = config(vec![("ok", fake_agent(&["{task}"]))]);
    cfg.executor.on_unknown_agent = UnknownAgentPolicy::Reject;
    let mut h = Harness::start(&cfg);
    h.submit("Wizard Agent", "print:x");
    h.until_finished(1);
    assert_eq!(h.events.len(), 1, "rejected without a queued event");
    assert_eq!(status(&h.events[0]), "rejected");
    assert!(reason(&h.events[0]).contains("unknown agent"));
    drop(h);

    cfg.executor.on_unknown_agent = UnknownAgentPolicy::Default;
    cfg.executor.default_agent = "ok".into();
    let mut h = Harness::start(&cfg);
    h.submit("Wizard Agent", "print:x");
    h.until_finished(1);
    let fin = h.finished("print:x");
    assert_eq!(status(fin), "success");
    assert_eq!(agent_of(fin), "ok");
}

#[test]
fn handled_by_agent_and_other_categories_are_not_run() {
    let cfg = config(vec![("ok", fake_agent(&["{task}"]))]);
    let mut h = Harness::start(&cfg);
    let mut d = delegation("ok", "print:inside");
    d.handled_by_agent = true;
    h.handle().submit(&d);
    let mut t = delegation("ok", "print:ticket");
    t.category = "ticket".into();
    h.handle().submit(&t);
    h.submit("ok", "print:real");
    h.until_finished(1);
    let summaries = h.shutdown(SessionExitPolicy::Wait);
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0].task, "print:real");
}

#[test]
fn a_dash_task_is_one_argv_element_and_never_a_flag() {
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("argv.json");
    let code = format!(
        "import sys, json; open({:?}, 'w').write(json.dumps(sys.argv[1:])); sys.stderr.write('err-out')",
        seen.display().to_string()
    );
    let agent = mpm::config::AgentConfig {
        argv: vec!["python3".into(), "-c".into(), code, "{task}".into()],
        ..Default::default()
    };
    let mut h = Harness::start(&config(vec![("argv", agent)]));
    let task = "--dangerously-skip-permissions; rm -rf / $(id) `id`\n\x1b[31mred";
    h.submit("argv", task);
    h.until_finished(1);
    let args: Vec<String> = serde_json::from_str(&std::fs::read_to_string(&seen).unwrap()).unwrap();
    assert_eq!(
        args,
        [" --dangerously-skip-permissions; rm -rf / $(id) `id`\n[31mred"],
        "one element, guarded by a leading space, control characters removed"
    );
    let id = delegation_id(&h.events[0]).to_string();
    assert_eq!(
        std::fs::read_to_string(h.out().join(format!("{id}.stderr"))).unwrap(),
        "err-out"
    );
}

#[test]
fn a_missing_program_fails_cleanly() {
    let agent = mpm::config::AgentConfig {
        argv: vec!["/nonexistent/agent-cli".into(), "{task}".into()],
        ..Default::default()
    };
    let mut h = Harness::start(&config(vec![("ghost", agent)]));
    h.submit("ghost", "do it");
    h.until_finished(1);
    let fin = h.finished("do it");
    assert_eq!(status(fin), "failed");
    assert!(reason(fin).contains("cannot start"), "{}", reason(fin));
}

#[test]
fn an_escaped_process_holding_the_output_pipe_does_not_hang_the_delegation() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("escaped.pid");
    // The child forks a process that leaves the session (setsid) but keeps stdout open.
    let code = format!(
        "import os, sys, time\nif os.fork() == 0:\n    os.setsid()\n    open({:?}, 'w').write(str(os.getpid()))\n    time.sleep(60)\n    os._exit(0)\nprint(sys.argv[1], flush=True)\n",
        pidfile.display().to_string()
    );
    let agent = mpm::config::AgentConfig {
        argv: vec!["python3".into(), "-c".into(), code, "{task}".into()],
        ..Default::default()
    };
    let mut h = Harness::start(&config(vec![("escape", agent)]));
    h.submit("escape", "hello");
    let escaped = PidGuard(vec![read_pid(&pidfile, DEADLINE)]);
    h.until_finished(1);
    let fin = h.finished("hello");
    assert_eq!(status(fin), "success", "{}", h.dump());
    let EventBody::DelegationFinished { output_path, .. } = &fin.body else {
        unreachable!()
    };
    assert_eq!(
        std::fs::read_to_string(output_path.as_deref().unwrap()).unwrap(),
        "hello\n"
    );
    drop(escaped);
}

#[test]
fn a_detection_event_is_the_parent_step_of_its_delegation() {
    let cfg = config(vec![("ok", fake_agent(&["{task}"]))]);
    let bus = mpm::events::Bus::new(mpm::events::Context::new());
    let rx = bus.subscribe();
    let dir = tempfile::tempdir().unwrap();
    let handle = mpm::executor::Executor::start(&cfg, bus.clone(), dir.path().join("out")).unwrap();
    let det = bus.emit(EventBody::Detection(delegation("ok", "print:child")));
    assert!(handle.submit_event(&det).is_some());
    let summaries = handle.shutdown(SessionExitPolicy::Wait);
    assert_eq!(summaries.len(), 1);
    let delegation_events: Vec<_> = rx
        .try_iter()
        .filter(|e| e.kind().starts_with("delegation."))
        .collect();
    assert_eq!(delegation_events.len(), 3);
    for e in &delegation_events {
        assert_eq!(e.parent_step_id.as_deref(), Some(det.step_id.as_str()));
    }
}
