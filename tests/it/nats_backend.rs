//! The `nats` executor backend against a real nats-server (JetStream) and real `mpm worker`
//! processes; the supervisor is an in-process executor with `executor.backend: nats`.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use mpm::config::{BackendKind, Config, SessionExitPolicy};
use mpm::events::{Event, EventBody};

use crate::common::{DEADLINE, wait_until};
use crate::executor_support::{
    Harness, STREAM_JSON_STEPS, assert_stream_json_progress, config, count, delegation_id, fake,
    reason, status, wait_pid_gone,
};
use crate::nats_support::{NatsServer, PidGuard, Worker};

/// The supervisor's config: these agent names (their argv is the workers' business), the NATS
/// backend, a short heartbeat window.
fn supervisor(url: &str, agents: &[&str], max_parallel: usize) -> Config {
    let mut cfg = config(
        agents
            .iter()
            .map(|a| (*a, crate::executor_support::fake_agent(&["print:{task}"])))
            .collect(),
    );
    cfg.executor.backend = BackendKind::Nats;
    cfg.executor.nats.url = url.to_string();
    cfg.executor.nats.heartbeat_timeout_secs = 2;
    cfg.executor.max_parallel = max_parallel;
    cfg
}

/// A worker config (JSON is YAML) with these agents: name → (argv, timeout_secs).
fn worker_config(agents: &[(&str, Vec<String>, u64)]) -> String {
    let mut map = serde_json::Map::new();
    for (name, argv, timeout) in agents {
        map.insert(
            name.to_string(),
            serde_json::json!({"argv": argv, "timeout_secs": timeout}),
        );
    }
    serde_json::json!({"run": {"grace_secs": 0.3}, "agents": map}).to_string()
}

fn sh(script: &str) -> Vec<String> {
    ["sh", "-c", script, "sh", "{task}"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn worker_of(e: &Event) -> Option<String> {
    match &e.body {
        EventBody::DelegationFinished { worker, .. } => worker.clone(),
        _ => None,
    }
}

fn max_in(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .max()
        .unwrap_or(0)
}

#[test]
fn twenty_delegations_spread_over_two_workers_within_the_limits() {
    let Some(nats) = NatsServer::start() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let all = home.path().join("all");
    let log = home.path().join("runs.log");
    let mut workers = Vec::new();
    for name in ["w1", "w2"] {
        let mine = home.path().join(format!("{name}-running"));
        for d in [&all, &mine] {
            std::fs::create_dir_all(d).unwrap();
        }
        // Count the delegations running on this worker and overall at each start.
        let script = format!(
            r#"touch "{mine}/$$" "{all}/$$"
ls "{mine}" | wc -l >> "{mine}.max"
ls "{all}" | wc -l >> "{all}.max"
echo "$1" >> "{log}"
echo "did $1"
sleep 0.3
rm -f "{mine}/$$" "{all}/$$""#,
            mine = mine.display(),
            all = all.display(),
            log = log.display()
        );
        let cfg = worker_config(&[("count", sh(&script), 30)]);
        workers.push(Worker::start(
            home.path(),
            &nats.url,
            name,
            &cfg,
            "count",
            2,
        ));
    }
    let mut h = Harness::start(&supervisor(&nats.url, &["count"], 3));
    let tasks: Vec<String> = (0..20).map(|i| format!("t{i:02}")).collect();
    for t in &tasks {
        h.submit("count", t);
    }
    h.until_finished(20);
    let mut per_worker: HashMap<String, usize> = HashMap::new();
    for t in &tasks {
        let fin = h.finished(t);
        assert_eq!(status(fin), "success", "{t}: {}\n{}", reason(fin), h.dump());
        *per_worker
            .entry(worker_of(fin).expect("worker"))
            .or_default() += 1;
        // Output streamed back into the supervisor's output folder.
        let id = delegation_id(fin);
        let out = std::fs::read_to_string(h.out().join(format!("{id}.stdout"))).unwrap();
        assert_eq!(out, format!("did {t}\n"));
    }
    assert_eq!(per_worker.len(), 2, "both workers ran some: {per_worker:?}");
    assert!(per_worker.keys().all(|w| w == "w1" || w == "w2"));
    for name in ["w1", "w2"] {
        let m = max_in(&home.path().join(format!("{name}-running.max")));
        assert!(m <= 2, "{name} ran {m} at once (limit 2)");
    }
    let overall = max_in(&home.path().join("all.max"));
    assert!(overall <= 3, "{overall} at once overall (limit 3)");
    assert!(overall >= 2, "never ran in parallel");
    // Every delegation ran exactly once.
    let runs = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = runs.lines().collect();
    assert_eq!(lines.len(), 20, "{runs}");
    assert_eq!(lines.iter().collect::<HashSet<_>>().len(), 20, "{runs}");
}

#[test]
fn a_timeout_and_a_cancel_each_leave_no_process_on_the_worker() {
    let Some(nats) = NatsServer::start() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let pids = home.path().join("pids");
    std::fs::create_dir_all(&pids).unwrap();
    let steps = |_: &str| -> Vec<String> {
        vec![
            "python3".into(),
            fake(),
            format!("pid:{}/{{delegation_id}}.pid", pids.display()),
            format!("grandchild:{}/{{delegation_id}}.gc", pids.display()),
            "print:{task}".into(),
            "sleep:0".into(),
        ]
    };
    let cfg = worker_config(&[("slow", steps("slow"), 4), ("hang", steps("hang"), 300)]);
    let _w = Worker::start(home.path(), &nats.url, "w1", &cfg, "slow,hang", 2);
    let mut h = Harness::start(&supervisor(&nats.url, &["slow", "hang"], 4));
    h.submit("slow", "times out");
    h.submit("hang", "gets cancelled");
    h.until("both started", |evs| count(evs, "delegation.started") >= 2);
    let ids: Vec<String> = h
        .events
        .iter()
        .filter(|e| e.kind() == "delegation.queued")
        .map(|e| delegation_id(e).to_string())
        .collect();
    let pid_of = |id: &str, ext: &str| {
        crate::executor_support::read_pid(&pids.join(format!("{id}.{ext}")), DEADLINE)
    };
    let mut guard = PidGuard::default();
    let mut tree = HashMap::new();
    for id in &ids {
        let (p, g) = (pid_of(id, "pid"), pid_of(id, "gc"));
        guard.0.extend([p, g]);
        tree.insert(id.clone(), (p, g));
    }
    // The worker's own timeout (4 s) stops the whole tree and reports `timeout`.
    h.until("timeout", |evs| {
        evs.iter().any(|e| e.kind() == "delegation.finished")
    });
    let fin = h.finished("times out");
    assert_eq!(status(fin), "timeout", "{}", h.dump());
    let (p, g) = tree[delegation_id(fin)];
    assert!(wait_pid_gone(p, DEADLINE) && wait_pid_gone(g, DEADLINE));
    // Output of a remote delegation arrives while it runs.
    let hang_id = ids
        .iter()
        .find(|i| *i != delegation_id(fin))
        .unwrap()
        .clone();
    let hang_out = h.out().join(format!("{hang_id}.stdout"));
    assert!(wait_until(DEADLINE, || {
        std::fs::read_to_string(&hang_out).is_ok_and(|s| s.contains("gets cancelled"))
    }));
    // Ending the session cancels the other on the worker: its tree is gone too.
    h.shutdown(SessionExitPolicy::Cancel);
    let fin = h.finished("gets cancelled");
    assert_eq!(status(fin), "cancelled", "{}", h.dump());
    assert_eq!(worker_of(fin).as_deref(), Some("w1"));
    let (p, g) = tree[&hang_id];
    assert!(wait_pid_gone(p, DEADLINE) && wait_pid_gone(g, DEADLINE));
}

#[test]
fn a_worker_killed_mid_delegation_fails_it_once_and_the_other_worker_carries_on() {
    let Some(nats) = NatsServer::start() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let log = home.path().join("runs.log");
    let pids = home.path().join("pids");
    std::fs::create_dir_all(&pids).unwrap();
    let script = format!(
        r#"echo "$1" >> "{log}"
echo $$ > "{pids}/$1.pid"
if [ "$1" = hang ]; then sleep 1000 & echo $! > "{pids}/hang.child"; wait; fi
echo "done $1""#,
        log = log.display(),
        pids = pids.display()
    );
    let cfg = worker_config(&[("job", sh(&script), 300)]);
    let mut w1 = Worker::start(home.path(), &nats.url, "w1", &cfg, "job", 1);
    let mut w2 = Worker::start(home.path(), &nats.url, "w2", &cfg, "job", 1);
    let mut h = Harness::start(&supervisor(&nats.url, &["job"], 4));
    h.submit("job", "hang");
    let sub_agent = crate::executor_support::read_pid(&pids.join("hang.pid"), DEADLINE);
    // A process of the sub-agent's own (the parent-death signal reaches only the sub-agent).
    let grandchild = crate::executor_support::read_pid(&pids.join("hang.child"), DEADLINE);
    let _orphan = PidGuard(vec![sub_agent, grandchild]);
    // Which worker runs it: the sub-agent's parent.
    let parent = mpm::process::read_stat(sub_agent)
        .expect("sub-agent alive")
        .ppid;
    let (victim, survivor) = if parent == w1.proc.pid() {
        (&mut w1, "w2")
    } else {
        assert_eq!(parent, w2.proc.pid(), "the sub-agent's parent is a worker");
        (&mut w2, "w1")
    };
    victim.proc.crash();
    h.until_finished(1);
    let fin = h.finished("hang");
    assert_eq!(status(fin), "failed", "{}", h.dump());
    assert!(
        reason(fin).contains("stopped responding"),
        "{}",
        reason(fin)
    );
    // The dead worker's orphan watchdog stopped its sub-agent (no systemd or Kubernetes needed).
    assert!(
        wait_pid_gone(sub_agent, DEADLINE) && wait_pid_gone(grandchild, DEADLINE),
        "the SIGKILLed worker's sub-agent {sub_agent} or its child {grandchild} is still running"
    );
    // The other worker carries on (with one slot: a re-run of "hang" would block it forever).
    for t in ["after-1", "after-2", "after-3"] {
        h.submit("job", t);
    }
    h.until_finished(4);
    for t in ["after-1", "after-2", "after-3"] {
        let fin = h.finished(t);
        assert_eq!(status(fin), "success", "{t}: {}\n{}", reason(fin), h.dump());
        assert_eq!(worker_of(fin).as_deref(), Some(survivor));
    }
    let runs = std::fs::read_to_string(&log).unwrap();
    assert_eq!(runs.lines().filter(|l| *l == "hang").count(), 1, "{runs}");
    let hang_id = delegation_id(h.finished("hang")).to_string();
    let endings = h
        .events
        .iter()
        .filter(|e| e.kind() == "delegation.finished" && delegation_id(e) == hang_id)
        .count();
    assert_eq!(endings, 1, "{}", h.dump());
}

#[test]
fn jobs_for_agents_a_worker_does_not_have_are_rejected() {
    let Some(nats) = NatsServer::start() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let ran = home.path().join("ran");
    let script = format!(r#"echo "$1" >> "{}""#, ran.display());
    let cfg = worker_config(&[("count", sh(&script), 30)]);
    let _w = Worker::start(home.path(), &nats.url, "w1", &cfg, "count", 1);
    // An agent no worker serves: refused at once by the supervisor.
    let mut h = Harness::start(&supervisor(&nats.url, &["count", "ghost"], 2));
    h.submit("ghost", "boo");
    h.until_finished(1);
    let fin = h.finished("boo");
    assert_eq!(status(fin), "rejected", "{}", h.dump());
    assert!(
        reason(fin).contains("no worker serves agent ghost"),
        "{}",
        reason(fin)
    );
    // A forged job on the queue of `count` naming another agent: the worker refuses it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let reply = rt.block_on(async {
        use futures_util::StreamExt as _;
        let client = async_nats::connect(nats.url.as_str()).await.unwrap();
        let mut sub = client.subscribe("mpm.ev.forged-1").await.unwrap();
        client.flush().await.unwrap();
        let job = mpm::executor::nats::Job {
            v: 1,
            delegation_id: "forged-1".into(),
            session: "s".into(),
            agent: "evil".into(),
            task: "rm everything".into(),
            timeout_secs: 5,
            expires_at_ms: mpm::executor::nats::now_ms() + 60_000,
            repo: None,
            depth: None,
        };
        let js = async_nats::jetstream::new(client.clone());
        js.publish("mpm.jobs.count", serde_json::to_vec(&job).unwrap().into())
            .await
            .unwrap()
            .await
            .unwrap();
        let msg = tokio::time::timeout(DEADLINE, sub.next())
            .await
            .expect("a reply")
            .expect("a message");
        // A valid job nobody waits for (its supervisor gave up or died): claimed in vain, not run.
        let orphan = mpm::executor::nats::Job {
            delegation_id: "orphan-1".into(),
            agent: "count".into(),
            task: "orphan".into(),
            ..job
        };
        js.publish(
            "mpm.jobs.count",
            serde_json::to_vec(&orphan).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        serde_json::from_slice::<mpm::executor::nats::WorkerMsg>(&msg.payload).unwrap()
    });
    match reply {
        mpm::executor::nats::WorkerMsg::Rejected { worker, reason } => {
            assert_eq!(worker, "w1");
            assert!(reason.contains("does not serve agent \"evil\""), "{reason}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    // Then a real job still runs (after the orphan: one slot, FIFO), and only it ran.
    h.submit("count", "real");
    h.until_finished(2);
    assert_eq!(status(h.finished("real")), "success", "{}", h.dump());
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "real\n");
}

/// deploy/slurm/README.md: an argv template that runs each delegation as a Slurm job step.
#[test]
fn slurm_argv_template_runs_a_delegation() {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("srun").is_file()));
    if !on_path {
        println!("SKIPPED: srun is not on PATH (no Slurm here)");
        return;
    }
    let agent = mpm::config::AgentConfig {
        argv: [
            "srun",
            "--quiet",
            "--job-name=mpm-{agent}",
            "echo",
            "{task}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        ..Default::default()
    };
    let mut h = Harness::start(&config(vec![("slurm", agent)]));
    h.submit("slurm", "--hello from a job step");
    h.until_finished(1);
    let fin = h.finished("--hello from a job step");
    assert_eq!(status(fin), "success", "{}", h.dump());
    let out =
        std::fs::read_to_string(h.out().join(format!("{}.stdout", delegation_id(fin)))).unwrap();
    assert_eq!(out.trim(), "--hello from a job step");
}

/// SIGTERM (systemd stop, Kubernetes pod deletion): the worker cancels what it runs and reports it
/// (`failed`: the worker was stopped), leaves no process, and exits 0.
#[test]
fn a_stopped_worker_cancels_and_reports_its_delegations() {
    let Some(nats) = NatsServer::start() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let pids = home.path().join("pids");
    std::fs::create_dir_all(&pids).unwrap();
    let argv = vec![
        "python3".into(),
        fake(),
        format!("pid:{}/{{delegation_id}}.pid", pids.display()),
        "print:{task}".into(),
        "sleep:0".into(),
    ];
    let cfg = worker_config(&[("hang", argv, 300)]);
    let mut w = Worker::start(home.path(), &nats.url, "w1", &cfg, "hang", 1);
    let mut h = Harness::start(&supervisor(&nats.url, &["hang"], 2));
    h.submit("hang", "until stopped");
    h.until("started", |evs| count(evs, "delegation.started") >= 1);
    let id = h
        .events
        .iter()
        .find(|e| e.kind() == "delegation.started")
        .map(|e| delegation_id(e).to_string())
        .unwrap();
    let pid = crate::executor_support::read_pid(&pids.join(format!("{id}.pid")), DEADLINE);
    let _guard = PidGuard(vec![pid]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(w.proc.pid()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    h.until_finished(1);
    let fin = h.finished("until stopped");
    assert_eq!(status(fin), "failed", "{}", h.dump());
    assert!(
        reason(fin).contains("worker w1 was stopped"),
        "{}",
        reason(fin)
    );
    assert!(wait_pid_gone(pid, DEADLINE));
    let exited = wait_until(
        DEADLINE,
        || matches!(w.proc.child.try_wait(), Ok(Some(s)) if s.success()),
    );
    assert!(exited, "worker did not exit 0:\n{}", w.text());
}

/// A worker's sub-agent that prints stream-json reports its progress back over NATS: the
/// supervisor emits `delegation.progress` as for a local run (the same ticker on the worker: the
/// tool call, `stalled` in the silence, the result's tokens; at most one a second).
#[test]
fn a_workers_sub_agent_progress_reaches_the_supervisor() {
    let Some(nats) = NatsServer::start() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let argv: Vec<String> = ["python3".to_string(), fake()]
        .into_iter()
        .chain(STREAM_JSON_STEPS.iter().map(|s| s.to_string()))
        .collect();
    let cfg = serde_json::json!({
        "run": {"grace_secs": 0.3},
        "executor": {"stall_secs": 2},
        "agents": {"engineer": {"argv": argv, "timeout_secs": 120}},
    })
    .to_string();
    let _w = Worker::start(home.path(), &nats.url, "w1", &cfg, "engineer", 1);
    let mut h = Harness::start(&supervisor(&nats.url, &["engineer"], 1));
    h.submit("engineer", "report progress");
    h.until_finished(1);
    let fin = h.finished("report progress");
    assert_eq!(status(fin), "success", "{}\n{}", reason(fin), h.dump());
    assert_eq!(worker_of(fin).as_deref(), Some("w1"));
    let progress: Vec<(String, u64, bool, u64)> = h
        .events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::DelegationProgress {
                delegation,
                last_tool,
                tokens,
                elapsed_ms,
                stalled,
            } => {
                assert_eq!(delegation.task, "report progress");
                Some((
                    last_tool.clone().unwrap_or_default(),
                    *tokens,
                    *stalled,
                    *elapsed_ms,
                ))
            }
            _ => None,
        })
        .collect();
    assert_stream_json_progress(&progress);
}
