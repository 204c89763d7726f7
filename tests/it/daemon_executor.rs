//! One bound per daemon: `executor.max_parallel` limits the sub-agents of all the daemon's sessions
//! together, while each delegation's events still carry its own session.

use std::collections::HashMap;
use std::time::Duration;

use crate::daemon_support::{Env, Guard, agent_argv, wait_for};
use mpm::daemon::client::Client;
use mpm::protocol::{ClientMsg, RunSpec, ServerMsg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const T: Duration = Duration::from_secs(60);

/// Start a session whose agent asks for `tasks` delegations to the engineer, then waits.
fn session_delegating(env: &Env, guard: &mut Guard, tag: &str, tasks: usize) -> String {
    let lines: Vec<String> = (0..tasks)
        .map(|i| format!("print:Engineer Agent: task {tag} number {i}"))
        .collect();
    let mut steps: Vec<&str> = lines.iter().map(String::as_str).collect();
    steps.push("print:done asking");
    steps.push("sleep:0");
    let mut c = Client::connect(&env.socket()).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    match c
        .request(&ClientMsg::Run(RunSpec {
            argv: agent_argv(&steps),
            cwd: env.dir.path().display().to_string(),
            env: vec![],
            cols: 100,
            rows: 30,
            flags: Default::default(),
            client: None,
        }))
        .unwrap()
    {
        ServerMsg::Spawned { session, pid } => {
            guard.track_group(pid);
            session
        }
        m => panic!("{m:?}"),
    }
}

/// The stored delegation events, in store order.
fn delegation_events(env: &Env) -> Vec<serde_json::Value> {
    let (code, out, err) = env.client(&["events", "--json", "--kind", "delegation"]);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn delegation_id(v: &serde_json::Value) -> String {
    v["delegation_id"]
        .as_str()
        .or_else(|| v["delegation"]["delegation_id"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// Two sessions each delegate three slow sub-agents with `max_parallel: 2`: never more than two
/// run at once across both (from the sub-agents' own marker files and from the events' order),
/// all six run, and each delegation's events name the session that asked for it.
#[test]
fn max_parallel_bounds_sub_agents_across_all_sessions_of_a_daemon() {
    let env = Env::new();
    let marks = env.dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let cfg_dir = env.dir.path().join("config/mpm");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    // Each sub-agent marks itself running, records how many are running, holds a while, unmarks.
    let script = r#"touch "$0/run.$$"; ls "$0" | grep -c '^run\.' >> "$0/counts"; sleep 2; rm -f "$0/run.$$""#;
    std::fs::write(
        cfg_dir.join("config.yaml"),
        format!(
            "run:\n  settle_ms: 0\nexecutor:\n  max_parallel: 2\n  rate_per_minute: 0\nagents:\n  engineer:\n    argv: [sh, -c, '{script}', '{marks}', '{{task}}']\n",
            script = script.replace('\'', "''"),
            marks = marks.display(),
        ),
    )
    .unwrap();
    let mut daemon = env.start_daemon(None);
    let mut sessions = Guard::empty();
    let a = session_delegating(&env, &mut sessions, "alpha", 3);
    let b = session_delegating(&env, &mut sessions, "beta", 3);

    let mut evs = Vec::new();
    wait_for("six finished delegations", T, || {
        evs = delegation_events(&env);
        evs.iter()
            .filter(|v| v["kind"] == "delegation.finished")
            .count()
            >= 6
    });
    let finished: Vec<_> = evs
        .iter()
        .filter(|v| v["kind"] == "delegation.finished")
        .collect();
    assert!(
        finished.iter().all(|v| v["status"] == "success"),
        "{finished:#?}"
    );
    // Each delegation's events carry the session whose agent asked for it.
    let mut by_session: HashMap<String, usize> = HashMap::new();
    for v in &finished {
        let session = v["session"].as_str().unwrap_or_default().to_string();
        let task = v["task"]
            .as_str()
            .or_else(|| v["delegation"]["task"].as_str())
            .unwrap_or_default();
        let want = if session == a { "alpha" } else { "beta" };
        assert!(session == a || session == b, "unknown session in {v}");
        assert!(task.contains(want), "{task} reported under {session}");
        *by_session.entry(session).or_default() += 1;
    }
    assert_eq!(by_session.get(&a), Some(&3), "{by_session:?}");
    assert_eq!(by_session.get(&b), Some(&3), "{by_session:?}");

    // At most two running at once: from the events' order across both sessions...
    let mut running = std::collections::HashSet::new();
    let mut peak = 0;
    for v in &evs {
        match v["kind"].as_str() {
            Some("delegation.started") => {
                running.insert(delegation_id(v));
            }
            Some("delegation.finished") => {
                running.remove(&delegation_id(v));
            }
            _ => {}
        }
        peak = peak.max(running.len());
    }
    assert!(peak <= 2, "{peak} delegations running at once: {evs:#?}");
    // ... and from what the sub-agents themselves saw.
    let counts = std::fs::read_to_string(marks.join("counts")).unwrap();
    let seen: Vec<usize> = counts.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(seen.len(), 6, "{counts}");
    assert!(seen.iter().all(|&n| (1..=2).contains(&n)), "{counts}");

    kill(Pid::from_raw(daemon.pid()), Signal::SIGTERM).unwrap();
    assert_eq!(daemon.wait_exit(T), Some(0));
}

/// Threads of process `pid` whose name starts with `prefix`.
fn threads_named(pid: i32, prefix: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|c| c.trim_end().starts_with(prefix))
                .count()
        })
        .unwrap_or(0)
}

/// One executor runtime per daemon: before any delegation the daemon has no executor thread; after
/// four live sessions have each delegated (with `max_parallel: 4`, where a runtime per session would
/// bring four workers and a driver each), it has the shared runtime's two workers, no more.
#[test]
fn every_session_of_a_daemon_runs_its_delegations_on_one_executor_runtime() {
    let env = Env::new();
    let cfg_dir = env.dir.path().join("config/mpm");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    std::fs::write(
        cfg_dir.join("config.yaml"),
        "run:\n  settle_ms: 0\nexecutor:\n  max_parallel: 4\n  rate_per_minute: 0\nagents:\n  engineer:\n    argv: [sh, -c, 'exit 0', '{task}']\n",
    )
    .unwrap();
    let mut daemon = env.start_daemon(None);
    let pid = daemon.pid();
    let mut sessions = Guard::empty();
    assert_eq!(
        threads_named(pid, "mpm-executor"),
        0,
        "no executor runtime before the first delegation"
    );
    let ids: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .map(|tag| session_delegating(&env, &mut sessions, tag, 1))
        .collect();
    wait_for("a finished delegation in every session", T, || {
        let evs = delegation_events(&env);
        ids.iter().all(|id| {
            evs.iter()
                .any(|v| v["kind"] == "delegation.finished" && v["session"] == id.as_str())
        })
    });
    let evs = delegation_events(&env);
    assert!(
        evs.iter()
            .filter(|v| v["kind"] == "delegation.finished")
            .all(|v| v["status"] == "success"),
        "{evs:#?}"
    );
    // The sessions are still live (their agents wait), so per-session executors would still be
    // there too.
    assert_eq!(
        threads_named(pid, "mpm-executor"),
        2,
        "one shared runtime of two workers for four sessions"
    );
    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    assert_eq!(daemon.wait_exit(T), Some(0));
}
