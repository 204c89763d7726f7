//! The real binary: `mpm daemon` with its clients, systemd notify, SIGTERM, kill -9 durability,
//! restart after a crash, and `mpm attach` over pipes.

use crate::daemon_support;

use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use daemon_support::{Env, Guard, agent_argv, alive, wait_for};
use mpm::daemon::client::Client;
use mpm::events::{Event, EventBody};
use mpm::protocol::{ClientMsg, RunSpec, ServerMsg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const T: Duration = Duration::from_secs(30);

fn connect(env: &Env) -> Client {
    let c = Client::connect(&env.socket()).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    c
}

fn spawn_session(env: &Env, guard: &mut Guard, steps: &[&str]) -> (String, u32) {
    let mut c = connect(env);
    match c
        .request(&ClientMsg::Run(RunSpec {
            argv: agent_argv(steps),
            cwd: env.dir.path().display().to_string(),
            env: vec![],
            cols: 80,
            rows: 24,
            flags: Default::default(),
            client: None,
        }))
        .unwrap()
    {
        ServerMsg::Spawned { session, pid } => {
            guard.track_group(pid);
            (session, pid)
        }
        m => panic!("{m:?}"),
    }
}

fn recv_dgram(s: &UnixDatagram) -> String {
    let mut buf = [0u8; 256];
    let n = s.recv(&mut buf).expect("notify datagram");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn no_daemon_is_a_clear_error() {
    let env = Env::new();
    // What needs a daemon says so; reads open the store instead (see daemon_reads).
    for args in [&["stop", "x"][..], &["attach", "x"]] {
        let (code, _, err) = env.client(args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains("no mpm daemon at"), "{err}");
        assert!(err.contains("systemctl --user start mpm"), "{err}");
    }
    for args in [&["status"][..], &["events"], &["tickets", "list"]] {
        let (code, _, err) = env.client(args);
        assert_eq!(code, 0, "{args:?}: {err}");
    }
    // MPM_SOCKET is honoured when --socket is absent.
    let out = env
        .mpm(&["stop", "x"])
        .env("MPM_SOCKET", env.dir.path().join("elsewhere.sock"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("elsewhere.sock"));
}

#[test]
fn binary_lifecycle_with_every_client_command() {
    let env = Env::new();
    let notify_path = env.dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(T)).unwrap();
    let mut daemon = env.start_daemon(Some(&notify_path));
    assert_eq!(recv_dgram(&notify), "READY=1");

    // A second daemon on the same socket refuses, exit 1.
    let out = env
        .mpm(&[
            "daemon",
            "--socket",
            env.socket().to_str().unwrap(),
            "--state-dir",
            env.state().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already running"));

    let (id, pid) = spawn_session(&env, &mut daemon, &["print:hello-from-agent", "sleep:0"]);

    // status, human and JSON.
    let (code, out, err) = env.client(&["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&id) && out.contains("running"), "{out}");
    let (code, out, _) = env.client(&["status", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["sessions"][0]["id"], id.as_str());
    assert_eq!(v["sessions"][0]["pid"], pid);
    assert_eq!(v["governor_mode"], "polling");
    assert!(v["delegations_queued"].is_u64());

    // A ticket, published like a hook would, then tickets list/show/close.
    let mut c = connect(&env);
    let ev = Event {
        ts: mpm::events::now_ts(),
        session: id.clone(),
        trace_id: "t".into(),
        step_id: "s".into(),
        parent_step_id: None,
        body: EventBody::Detection(mpm::events::Detection {
            category: "ticket".into(),
            pattern: "bug".into(),
            text: "BUG: parser drops CR".into(),
            source: mpm::events::TextSource::Screen,
            agent: None,
            task: None,
            ticket_type: Some("BUG".into()),
            title: Some("parser drops CR".into()),
            priority: Some("High".into()),
            handled_by_agent: false,
            is_final: true,
        }),
    };
    assert_eq!(
        c.request(&ClientMsg::Publish {
            event: Box::new(ev)
        })
        .unwrap(),
        ServerMsg::Ok
    );
    let (code, out, _) = env.client(&["tickets", "list", "--json"]);
    assert_eq!(code, 0);
    let tickets: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(tickets[0]["title"], "parser drops CR");
    let tid = tickets[0]["id"].as_i64().unwrap().to_string();
    let (code, out, _) = env.client(&["tickets", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("parser drops CR"), "{out}");
    let (code, out, _) = env.client(&["tickets", "show", &tid]);
    assert_eq!(code, 0);
    assert!(out.contains("priority:   High"), "{out}");
    let (code, out, _) = env.client(&["tickets", "close", &tid, "--json"]);
    assert_eq!(code, 0);
    assert!(out.contains("\"status\":\"closed\""), "{out}");
    let (code, _, err) = env.client(&["tickets", "show", "not-a-number"]);
    assert_eq!(code, 2, "{err}");

    // events, with filters.
    let (code, out, _) = env.client(&["events", "--json", "--session", &id, "--kind", "session"]);
    assert_eq!(code, 0);
    let kinds: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        // `session.state` changes come and go with the agent's output.
        .filter(|k| k != "session.state")
        .collect();
    assert_eq!(kinds, ["session.started"]);
    let (code, out, _) = env.client(&["events"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("detection") && out.contains("session.started"),
        "{out}"
    );

    // events --follow in the background sees the stop.
    let sock = env.socket();
    let mut follow = env
        .mpm(&[
            "events",
            "--follow",
            "--json",
            "--kind",
            "session",
            "--socket",
            sock.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let follow_out = follow.stdout.take().unwrap();
    let mut follow_guard = Guard::new(follow);
    let lines = Arc::new(Mutex::new(String::new()));
    let l2 = lines.clone();
    std::thread::spawn(move || {
        let mut r = follow_out;
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            l2.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    // The backlog (session.started) arriving means the live subscription is in place.
    wait_for("follower backlog", T, || {
        lines.lock().unwrap().contains("session.started")
    });

    // stop.
    let (code, out, err) = env.client(&["stop", &id[..8]]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("stopped"), "{out}");
    assert!(!alive(pid));
    wait_for("follower sees session.exited", T, || {
        lines.lock().unwrap().contains("session.exited")
    });
    let (code, _, err) = env.client(&["stop", "no-such-session"]);
    assert_eq!(code, 1);
    assert!(err.contains("no session"), "{err}");

    // SIGTERM: STOPPING=1, exit 0, socket gone, followers end.
    let (_, pid2) = spawn_session(&env, &mut daemon, &["sleep:0"]);
    kill(Pid::from_raw(daemon.pid()), Signal::SIGTERM).unwrap();
    assert_eq!(recv_dgram(&notify), "STOPPING=1");
    assert_eq!(daemon.wait_exit(T), Some(0));
    assert!(!env.socket().exists());
    assert!(!alive(pid2), "sessions end with the daemon");
    assert_eq!(follow_guard.wait_exit(T), Some(0));
    let db = rusqlite::Connection::open(env.db()).unwrap();
    let running: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM sessions WHERE state='running'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(running, 0);
}

#[test]
fn kill_9_keeps_every_acknowledged_event_and_restart_recovers() {
    let env = Env::new();
    let mut daemon = env.start_daemon(None);
    // The agent ignores the hang-up the daemon's death sends through the PTY: only the restarted
    // daemon's recovery can end it.
    let (id, pid) = spawn_session(&env, &mut daemon, &["nohup", "sleep:0"]);
    // The session's pid is its monitor (see `pty::spawn`); the agent is the monitor's child.
    let mut agent = 0;
    wait_for("the agent under the session's monitor", T, || {
        agent = mpm::process::all_processes()
            .iter()
            .find(|p| p.ppid == pid as i32)
            .map_or(0, |p| p.pid);
        agent != 0
    });
    wait_for("the agent to ignore SIGHUP", T, || {
        std::fs::read_to_string(format!("/proc/{agent}/status"))
            .ok()
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("SigIgn:"))?.to_string();
                u64::from_str_radix(line["SigIgn:".len()..].trim(), 16).ok()
            })
            .is_some_and(|mask| mask & 1 != 0)
    });

    // Writers: two clients publishing as fast as acknowledgements come back.
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let mut c = connect(&env);
            let acked = acked.clone();
            let stop = stop.clone();
            let id = id.clone();
            std::thread::spawn(move || {
                for i in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let step = format!("w{w}-{i}");
                    let ev = Event {
                        ts: mpm::events::now_ts(),
                        session: id.clone(),
                        trace_id: "t".into(),
                        step_id: step.clone(),
                        parent_step_id: None,
                        body: EventBody::ResourceWarning(mpm::events::Resource {
                            pid: 1,
                            rss_mb: i as f64,
                            cpu_percent: 0.0,
                            threshold: 1.0,
                            action: mpm::events::ResourceAction::None,
                            resource: Some("memory".into()),
                            delegation_id: None,
                        }),
                    };
                    match c.request(&ClientMsg::Publish {
                        event: Box::new(ev),
                    }) {
                        Ok(ServerMsg::Ok) => acked.lock().unwrap().push(step),
                        _ => break,
                    }
                }
            })
        })
        .collect();
    wait_for("some acknowledged writes", T, || {
        acked.lock().unwrap().len() >= 300
    });
    kill(Pid::from_raw(daemon.pid()), Signal::SIGKILL).unwrap();
    daemon.wait_exit(T);
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    {
        let db = rusqlite::Connection::open(env.db()).unwrap();
        let ok: String = db
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        let mut st = db
            .prepare(
                "SELECT json_extract(json, '$.step_id') FROM events WHERE kind='resource.warning'",
            )
            .unwrap();
        let stored: std::collections::HashSet<String> = st
            .query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let missing: Vec<&String> = acked.iter().filter(|s| !stored.contains(*s)).collect();
        assert!(
            missing.is_empty(),
            "{} acknowledged events lost",
            missing.len()
        );
    }

    // The orphaned session is still there (the daemon could not stop it); the new daemon must not
    // believe it runs, and ends it.
    assert!(alive(pid));
    assert!(env.socket().exists(), "stale socket left by kill -9");
    let mut daemon2 = env.start_daemon(None);
    daemon2.extra_groups.push(pid as i32);
    // The restarted daemon stops the tree its crashed predecessor left behind.
    wait_for("orphaned session stopped", T, || !alive(pid));
    let (code, out, _) = env.client(&["status", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["sessions"].as_array().unwrap().len(), 0);
    let db = rusqlite::Connection::open(env.db()).unwrap();
    let (state, reason): (String, String) = db
        .query_row(
            "SELECT state, end_reason FROM sessions WHERE id=?1",
            [&id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (state.as_str(), reason.as_str()),
        ("ended", "daemon-restart")
    );
    kill(Pid::from_raw(daemon2.pid()), Signal::SIGTERM).unwrap();
    assert_eq!(daemon2.wait_exit(T), Some(0));
}

#[test]
fn attach_command_relays_detaches_and_reattaches() {
    let env = Env::new();
    let mut daemon = env.start_daemon(None);
    let (id, pid) = spawn_session(&env, &mut daemon, &["print:banner-line", "echo"]);
    let sock = env.socket();

    let attach = |input: &[u8], until: &str| -> (i32, String) {
        let mut child = env
            .mpm(&["attach", &id, "--socket", sock.to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut g = Guard::new(child);
        let seen = Arc::new(Mutex::new(String::new()));
        let s2 = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s2.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        wait_for("redraw", T, || seen.lock().unwrap().contains("banner-line"));
        stdin.write_all(input).unwrap();
        wait_for(until, T, || seen.lock().unwrap().contains(until));
        stdin.write_all(&[0x1d]).unwrap(); // Ctrl-] detaches
        let code = g.wait_exit(T).unwrap();
        let text = seen.lock().unwrap().clone();
        (code, text)
    };
    let (code, text) = attach(b"first\r", "echo: first");
    assert_eq!(code, 0, "{text}");
    assert!(alive(pid), "detach leaves the session running");
    // Re-attach: the redraw shows what the first attach produced.
    let (code, text) = attach(b"second\r", "echo: second");
    assert_eq!(code, 0);
    assert!(text.contains("echo: first"), "{text}");
    kill(Pid::from_raw(daemon.pid()), Signal::SIGTERM).unwrap();
    assert_eq!(daemon.wait_exit(T), Some(0));
}

#[test]
fn service_install_writes_the_unit_for_this_binary() {
    let env = Env::new();
    let out = env.mpm(&["service", "install"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("systemctl --user enable --now mpm"),
        "{stdout}"
    );
    assert!(stdout.contains("loginctl enable-linger"), "{stdout}");
    let unit_path = env.dir.path().join("config/systemd/user/mpm.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    assert!(
        unit.contains(&format!("ExecStart={} daemon\n", env!("CARGO_BIN_EXE_mpm"))),
        "{unit}"
    );
    assert!(unit.lines().any(|l| l == "Type=notify"));
    // Same content again: fine. A changed file is not overwritten without --force.
    assert_eq!(
        env.mpm(&["service", "install"]).status().unwrap().code(),
        Some(0)
    );
    std::fs::write(&unit_path, "# mine\n").unwrap();
    assert_eq!(
        env.mpm(&["service", "install"]).status().unwrap().code(),
        Some(2)
    );
    assert_eq!(std::fs::read_to_string(&unit_path).unwrap(), "# mine\n");
    assert_eq!(
        env.mpm(&["service", "install", "--force"])
            .status()
            .unwrap()
            .code(),
        Some(0)
    );
    // systemd's own checker, where the machine has it.
    if let Ok(v) = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_path)
        .output()
    {
        assert!(
            v.status.success(),
            "systemd-analyze verify: {}",
            String::from_utf8_lossy(&v.stderr)
        );
    }
}

#[test]
fn default_socket_is_private_and_found_by_clients() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let mut c = env.mpm(&["daemon", "--state-dir", env.state().to_str().unwrap()]);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    let mut daemon = Guard::new(c.spawn().unwrap());
    let sock = env.dir.path().join("rt/mpm/mpm.sock");
    wait_for("default socket", T, || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(sock.parent().unwrap()), 0o700);
    assert_eq!(mode(&sock), 0o600);
    // Clients find it without --socket or MPM_SOCKET.
    let out = env.mpm(&["status", "--json"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // --since is validated and normalised.
    let out = env
        .mpm(&["events", "--since", "yesterday"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = env
        .mpm(&["events", "--since", "2000-01-01T00:00:00+02:00"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    kill(Pid::from_raw(daemon.pid()), Signal::SIGTERM).unwrap();
    assert_eq!(daemon.wait_exit(T), Some(0));
    assert!(!sock.exists());
}

#[test]
fn daemon_socket_from_the_config_is_used_by_daemon_and_clients() {
    let env = Env::new();
    let sock = env.dir.path().join("configured.sock");
    std::fs::create_dir_all(env.dir.path().join("config/mpm")).unwrap();
    std::fs::write(
        env.dir.path().join("config/mpm/config.yaml"),
        format!("daemon:\n  socket: {}\n", sock.display()),
    )
    .unwrap();
    let mut c = env.mpm(&["daemon", "--state-dir", env.state().to_str().unwrap()]);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    let mut daemon = Guard::new(c.spawn().unwrap());
    wait_for("configured socket", T, || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    let out = env.mpm(&["status"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // MPM_SOCKET still wins over the config (no daemon there: status reads the store).
    let out = env
        .mpm(&["status"])
        .env("MPM_SOCKET", env.dir.path().join("other.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no mpm daemon running"));
    kill(Pid::from_raw(daemon.pid()), Signal::SIGTERM).unwrap();
    assert_eq!(daemon.wait_exit(T), Some(0));
}

/// With a daemon running, `mpm run` hands the session to it and becomes its terminal: the agent's
/// output comes through, mpm exits with the agent's status, and the session is the daemon's (its
/// events are in the daemon's store). `--no-daemon` keeps the session in-process.
#[test]
fn mpm_run_is_a_thin_client_of_a_running_daemon() {
    let env = Env::new();
    let mut daemon = env.start_daemon(None);
    let agent = agent_argv(&["print:via-daemon", "exit:3"]);
    let mut args = vec!["run", "--"];
    args.extend(agent.iter().map(String::as_str));
    let mut child = env
        .mpm(&args)
        .env("MPM_SOCKET", env.socket())
        .stdin(Stdio::piped()) // kept open: end of input would detach
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _stdin = child.stdin.take();
    let mut stdout = child.stdout.take().unwrap();
    let mut g = Guard::new(child);
    let code = g.wait_exit(T);
    let mut out = String::new();
    stdout.read_to_string(&mut out).unwrap();
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("via-daemon"), "{out:?}");

    let (code, events, err) = env.client(&["events", "--json"]);
    assert_eq!(code, 0, "{err}");
    let exited: Vec<serde_json::Value> = events
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "session.exited")
        .collect();
    assert_eq!(exited.len(), 1, "{events}");
    assert_eq!(exited[0]["exit_code"], 3);

    // --no-daemon: same result, but the daemon never hears of it.
    let mut args = vec!["run", "--no-daemon", "--"];
    args.extend(agent.iter().map(String::as_str));
    let out = env
        .mpm(&args)
        .env("MPM_SOCKET", env.socket())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let (_, status, _) = env.client(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(status.trim()).unwrap();
    assert_eq!(v["sessions"].as_array().map(Vec::len), Some(1), "{status}");
    kill(Pid::from_raw(daemon.pid()), Signal::SIGTERM).unwrap();
    assert_eq!(daemon.wait_exit(T), Some(0));
}
