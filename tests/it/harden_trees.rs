//! Processes never escape: a grandchild that daemonises the classic way (fork, setsid, fork) is
//! stopped on every stop path (delegation timeout, normal end, cancellation, session end, SIGKILL
//! of `mpm run`, SIGKILL of the daemon plus restart) and its memory is counted by the governor.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::common::{DEADLINE, KillOnDrop, Spawn, TestEnv, alive, fake_agent, wait_until};
use crate::executor_support::{
    Harness, PidGuard, config, count, fake_agent as fake_delegate, read_pid, status,
};
use mpm::config::SessionExitPolicy;
use nix::sys::signal::Signal;

/// Gone: not alive; when `reaped`, not even a zombie (the subreaper reaped what it adopted).
fn gone(pid: i32, reaped: bool) -> bool {
    wait_until(DEADLINE, || match mpm::process::read_stat(pid) {
        None => true,
        Some(s) => !reaped && s.state == 'Z',
    })
}

/// The grandchild really left: its own session, not the tree root's, and not the root's group.
fn assert_escaped(gc: i32, root: i32) {
    let st = mpm::process::read_stat(gc).expect("grandchild alive");
    assert_ne!(st.sid, root, "the grandchild did not leave the session");
    assert_ne!(st.pgid, root, "the grandchild did not leave the group");
}

#[test]
fn a_daemonised_grandchild_is_stopped_on_timeout_normal_end_and_cancel_and_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let hang = {
        let mut a = fake_delegate(&[
            &format!("pid:{d}/{{delegation_id}}.pid"),
            &format!("daemonize:{d}/{{delegation_id}}.gc"),
            "{task}",
            "sleep:0",
        ]);
        a.timeout_secs = Some(2);
        a
    };
    let quick = fake_delegate(&[
        &format!("pid:{d}/{{delegation_id}}.pid"),
        &format!("daemonize:{d}/{{delegation_id}}.gc"),
        "{task}",
    ]);
    let mut h = Harness::start(&config(vec![("hang", hang.clone()), ("quick", quick)]));
    h.submit("hang", "print:t");
    h.submit("quick", "print:q");
    h.until("2 started", |evs| count(evs, "delegation.started") >= 2);
    let ids: Vec<String> = h
        .events
        .iter()
        .filter(|e| e.kind() == "delegation.started")
        .map(|e| crate::executor_support::delegation_id(e).to_string())
        .collect();
    let mut pids = PidGuard(Vec::new());
    for id in &ids {
        let root = read_pid(&dir.path().join(format!("{id}.pid")), DEADLINE);
        let gc = read_pid(&dir.path().join(format!("{id}.gc")), DEADLINE);
        pids.0.push(gc);
        if alive(gc) && alive(root) {
            assert_escaped(gc, root);
        }
    }
    h.until_finished(2);
    assert_eq!(status(h.finished("print:t")), "timeout", "{}", h.dump());
    assert_eq!(status(h.finished("print:q")), "success", "{}", h.dump());
    for &gc in &pids.0 {
        assert!(gone(gc, true), "grandchild {gc} survived or was not reaped");
    }

    // Cancellation at session end.
    let mut h = Harness::start(&config(vec![("hang", hang)]));
    h.submit("hang", "print:c");
    h.until("started", |evs| count(evs, "delegation.started") >= 1);
    let id = h
        .events
        .iter()
        .find(|e| e.kind() == "delegation.started")
        .map(|e| crate::executor_support::delegation_id(e).to_string())
        .unwrap();
    let gc = read_pid(&dir.path().join(format!("{id}.gc")), DEADLINE);
    let _g = PidGuard(vec![gc]);
    h.shutdown(SessionExitPolicy::Cancel);
    assert!(gone(gc, true), "grandchild {gc} survived cancellation");
}

#[test]
fn the_governor_counts_the_memory_of_a_daemonised_grandchild() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let gc_file = dir.path().join("gc.pid");
    let tag = mpm::process::registry::new_tag();
    let mut child = std::process::Command::new("python3")
        .arg(fake_agent())
        .arg(format!("daemonize:{}:96", gc_file.display()))
        .arg("sleep:0")
        .env(mpm::process::registry::TREE_VAR, &tag)
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let root = child.id() as i32;
    mpm::process::registry::register(root, &tag);
    let gc = read_pid(&gc_file, DEADLINE);
    let _g = PidGuard(vec![gc, root]);
    assert_escaped(gc, root);
    let mut tracker = mpm::governor::tracker::TreeTracker::new(root, 1);
    let sample = tracker.sample(&mut mpm::governor::tracker::Probe::new());
    assert!(tracker.members().contains(&gc), "{:?}", tracker.members());
    assert!(
        sample.rss_bytes >= 96 << 20,
        "the tree holds {} MB, the grandchild alone 96",
        sample.rss_bytes >> 20
    );
    mpm::process::stop_tree(root, Duration::from_millis(200));
    let _ = child.wait();
    mpm::process::registry::unregister(root);
    assert!(gone(gc, true));
}

#[test]
fn a_daemonised_grandchild_of_the_session_agent_is_gone_when_the_session_ends() {
    let env = TestEnv::new();
    let gc_file = env.path("gc.pid");
    let mut p = Spawn::new(
        &env,
        &[
            "run",
            "--no-detect",
            "--",
            &fake_agent(),
            &format!("daemonize:{}", gc_file.display()),
            "print:bye",
        ],
    )
    .start();
    let gc = read_pid(&gc_file, DEADLINE);
    let _g = KillOnDrop(vec![gc]);
    assert_eq!(p.wait().code(), Some(0), "{}", p.text());
    assert!(
        gone(gc, false),
        "grandchild {gc} survived the session's end"
    );
}

/// A config whose engineer runs the fake agent: its pid, a daemonised grandchild, then sleep.
fn hanging_engineer(dir: &Path) -> std::path::PathBuf {
    let cfg = dir.join("config.yaml");
    let d = dir.display();
    std::fs::write(
        &cfg,
        format!(
            "run:\n  settle_ms: 0\nexecutor:\n  rate_per_minute: 0\nagents:\n  engineer:\n    argv: [python3, {fake}, 'pid:{d}/del.pid', 'daemonize:{d}/del.gc', 'print:{{task}}', 'sleep:0']\n",
            fake = fake_agent()
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn sigkill_of_mpm_run_stops_a_running_delegation_tree_through_the_watchdog() {
    let env = TestEnv::new();
    let cfg = hanging_engineer(env.dir.path());
    let mut p = Spawn::new(
        &env,
        &[
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--",
            &fake_agent(),
            "print:Engineer Agent: implement the parser",
            "sleep:0",
        ],
    )
    .start();
    let root = read_pid(&env.path("del.pid"), DEADLINE);
    let gc = read_pid(&env.path("del.gc"), DEADLINE);
    let _g = KillOnDrop(vec![root, gc]);
    assert!(alive(root) && alive(gc));
    p.signal(Signal::SIGKILL);
    let _ = p.wait();
    for pid in [root, gc] {
        assert!(
            wait_until(DEADLINE, || !alive(pid)),
            "{pid} survived SIGKILL of mpm run"
        );
    }
}

#[test]
fn a_restarted_daemon_stops_what_its_killed_predecessor_left() {
    use crate::daemon_support::{Env, agent_argv};
    use mpm::daemon::client::Client;
    use mpm::protocol::{ClientMsg, RunSpec, ServerMsg};
    let env = Env::new();
    let mut daemon = env.start_daemon(None);
    let gc_file = env.dir.path().join("gc.pid");
    let agent_file = env.dir.path().join("agent.pid");
    // The agent ignores SIGHUP (the daemon's death hangs up its terminal), so it outlives the
    // daemon as its grandchild does.
    let spec: RunSpec = serde_json::from_value(serde_json::json!({
        "argv": agent_argv(&[
            "nohup",
            &format!("pid:{}", agent_file.display()),
            &format!("daemonize:{}", gc_file.display()),
            "sleep:0",
        ]),
        "cwd": env.dir.path().display().to_string(),
    }))
    .unwrap();
    let mut c = Client::connect(&env.socket()).unwrap();
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    let (session, agent) = match c.request(&ClientMsg::Run(spec)).unwrap() {
        ServerMsg::Spawned { session, pid } => (session, pid as i32),
        m => panic!("{m:?}"),
    };
    let gc = read_pid(&gc_file, DEADLINE);
    let real_agent = read_pid(&agent_file, DEADLINE);
    let _g = KillOnDrop(vec![agent, real_agent, gc]);
    assert_escaped(gc, agent);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(daemon.pid()), Signal::SIGKILL).unwrap();
    daemon.wait_exit(DEADLINE);
    assert!(alive(gc), "the grandchild should outlive the killed daemon");
    assert!(
        alive(real_agent),
        "the agent should outlive the killed daemon"
    );
    let _restarted = env.start_daemon(None);
    for pid in [agent, real_agent, gc] {
        assert!(
            wait_until(DEADLINE, || !alive(pid)),
            "{pid} survived the daemon's restart"
        );
    }
    // One `process.reaped` event per process stopped, under the session it belonged to. (The
    // session's monitor died with the daemon: no event for it, it was not stopped.)
    let agent = real_agent;
    let mut reaped: Vec<serde_json::Value> = Vec::new();
    let found = wait_until(DEADLINE, || {
        let (code, out, _) = env.client(&["events", "--json", "--kind", "process.reaped"]);
        reaped = out
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        code == 0
            && [agent, gc]
                .iter()
                .all(|p| reaped.iter().any(|e| e["pid"] == *p))
    });
    assert!(
        found,
        "no process.reaped for the agent {agent} and its grandchild {gc}: {reaped:#?}\n{}",
        std::fs::read_to_string(env.state().join("mpm.log")).unwrap_or_default()
    );
    let argv = |e: &serde_json::Value| e["argv"].to_string();
    assert!(
        reaped
            .iter()
            .any(|e| e["pid"] == agent && argv(e).contains("fake_agent.py")),
        "{reaped:#?}"
    );
    for pid in [agent, gc] {
        let e = reaped.iter().find(|e| e["pid"] == pid).unwrap();
        assert_eq!(e["kind"], "process.reaped");
        assert_eq!(e["session"], session.as_str(), "{e}");
        assert!(e["signal"] == "SIGTERM" || e["signal"] == "SIGKILL", "{e}");
        assert!(!e["comm"].as_str().unwrap_or_default().is_empty(), "{e}");
        assert!(e["argv"].as_array().is_some_and(|a| !a.is_empty()), "{e}");
    }
    // Both were found by their tree tag.
    for pid in [agent, gc] {
        let e = reaped.iter().find(|e| e["pid"] == pid).unwrap();
        assert!(e["tag"].as_str().is_some_and(|t| t.contains('-')), "{e}");
    }
    // One per process (the session's monitor process may be among them), all of this session.
    let mut pids: Vec<i64> = reaped.iter().filter_map(|e| e["pid"].as_i64()).collect();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(
        pids.len(),
        reaped.len(),
        "one event per process: {reaped:#?}"
    );
    assert!(
        reaped.iter().all(|e| e["session"] == session.as_str()),
        "{reaped:#?}"
    );
}

/// Issue 12 across `limits.restart`: the governor stops the main agent at its hard limit while a
/// delegation runs, the restart policy starts the agent again, then `mpm run` is SIGKILLed. The
/// watchdog stops the restarted agent, the delegation's tree and its daemonised grandchild.
#[test]
fn sigkill_of_mpm_run_after_a_limit_restart_stops_the_restarted_agent_and_the_delegation() {
    let env = TestEnv::new();
    let cfg = hanging_engineer(env.dir.path());
    let d = env.dir.path().display().to_string();
    // First run: ask for the delegation, wait until it runs, then exceed the hard limit. Second
    // run (the restart): stay up.
    let script = r#"if [ -e "$1/first" ]; then exec python3 "$2" "pid:$1/agent2.pid" "print:second run" sleep:0; else touch "$1/first"; exec python3 "$2" "print:Engineer Agent: implement the parser" "print:asked" "wait-glob:$1/del.gc" "alloc:300" sleep:0; fi"#;
    let fake = fake_agent();
    let mut spawn = Spawn::new(
        &env,
        &[
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            script,
            "sh",
            &d,
            &fake,
        ],
    );
    spawn.env.extend(
        [
            ("MPM_LIMITS__INTERVAL_MS", "100"),
            ("MPM_LIMITS__MEMORY_MB__WARNING", "100"),
            ("MPM_LIMITS__MEMORY_MB__CRITICAL", "150"),
            ("MPM_LIMITS__MEMORY_MB__HARD", "200"),
            ("MPM_LIMITS__RESTART__ENABLED", "true"),
            ("MPM_LIMITS__RESTART__MAX_PER_HOUR", "1"),
            ("MPM_LIMITS__RESTART__BACKOFF_MS", "50"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let mut p = spawn.start();
    let root = read_pid(&env.path("del.pid"), DEADLINE);
    let gc = read_pid(&env.path("del.gc"), DEADLINE);
    let mut guard = KillOnDrop(vec![root, gc]);
    // The restart happened: the second run wrote its pid.
    let agent2 = read_pid(&env.path("agent2.pid"), Duration::from_secs(60));
    guard.0.push(agent2);
    p.expect("second run");
    assert!(
        alive(root) && alive(gc) && alive(agent2),
        "the delegation and the restarted agent should be running"
    );
    p.signal(Signal::SIGKILL);
    let _ = p.wait();
    for pid in [agent2, root, gc] {
        assert!(
            wait_until(DEADLINE, || !alive(pid)),
            "{pid} survived SIGKILL of mpm run after the restart"
        );
    }
}
