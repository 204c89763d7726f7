//! The daemon run in-process (library API) with the pipe backend: protocol robustness, uid check,
//! run/attach/detach/re-attach, stop, events follow with two clients, tickets, shutdown.

use crate::daemon_support;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

use daemon_support::{Guard, agent_argv, alive, wait_for};
use mpm::daemon::client::{Client, ClientError};
use mpm::daemon::{Daemon, DaemonHandle, DaemonOptions};
use mpm::events::{Detection, Event, EventBody, TextSource};
use mpm::protocol::{
    ClientMsg, EventFilter, Frame, PROTOCOL_VERSION, RunSpec, ServerMsg, read_frame, write_frame,
};

const T: Duration = Duration::from_secs(20);

/// An in-process daemon; shut down and joined on drop, its sessions' groups killed.
struct Running {
    dir: tempfile::TempDir,
    socket: PathBuf,
    handle: DaemonHandle,
    thread: Option<JoinHandle<()>>,
    guard: Guard,
}

impl Running {
    fn start(tweak: impl FnOnce(&mut DaemonOptions)) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("mpm.sock");
        let mut opts = DaemonOptions::new(socket.clone(), dir.path().join("state"));
        opts.stop_grace = Duration::from_secs(2);
        tweak(&mut opts);
        let d = Daemon::bind(opts).unwrap();
        let handle = d.handle();
        let thread = std::thread::spawn(move || d.run().unwrap());
        Running {
            dir,
            socket,
            handle,
            thread: Some(thread),
            guard: Guard::empty(),
        }
    }

    fn client(&self) -> Client {
        let c = Client::connect(&self.socket).unwrap();
        c.set_read_timeout(Some(T)).unwrap();
        c
    }

    fn run(&mut self, steps: &[&str]) -> (String, u32) {
        let mut c = self.client();
        let reply = c
            .request(&ClientMsg::Run(RunSpec {
                argv: agent_argv(steps),
                cwd: self.dir.path().display().to_string(),
                env: vec![],
                cols: 80,
                rows: 24,
                flags: Default::default(),
                client: None,
            }))
            .unwrap();
        match reply {
            ServerMsg::Spawned { session, pid } => {
                self.guard.track_group(pid);
                (session, pid)
            }
            m => panic!("unexpected {m:?}"),
        }
    }

    fn stop(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn raw_hello(path: &std::path::Path) -> UnixStream {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    write_frame(
        &mut s,
        &Frame::json(&ClientMsg::Hello {
            protocol: PROTOCOL_VERSION,
            client: "test".into(),
        }),
    )
    .unwrap();
    let hello: ServerMsg = read_frame(&mut s, 1 << 20).unwrap().parse().unwrap();
    assert!(matches!(hello, ServerMsg::Hello { .. }), "{hello:?}");
    s
}

fn error_code(m: ServerMsg) -> String {
    match m {
        ServerMsg::Error { code, .. } => code.to_string(),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn bad_frames_get_errors_and_never_take_the_daemon_down() {
    let d = Running::start(|o| o.max_frame_bytes = 4096);
    let mut s = raw_hello(&d.socket);
    let next = |s: &mut UnixStream, f: Frame| -> ServerMsg {
        write_frame(s, &f).unwrap();
        read_frame(s, 1 << 20).unwrap().parse().unwrap()
    };
    assert_eq!(
        error_code(next(&mut s, Frame::Json(b"{not json".to_vec()))),
        "malformed"
    );
    assert_eq!(
        error_code(next(
            &mut s,
            Frame::Json(br#"{"type":"format_disk"}"#.to_vec())
        )),
        "unknown_request"
    );
    assert_eq!(
        error_code(next(&mut s, Frame::Data(b"stray".to_vec()))),
        "malformed"
    );
    // Unknown frame type byte.
    s.write_all(&[0, 0, 0, 2, b'Z', b'!']).unwrap();
    let m: ServerMsg = read_frame(&mut s, 1 << 20).unwrap().parse().unwrap();
    assert_eq!(error_code(m), "malformed");
    // Still serving on the same connection.
    assert!(matches!(
        next(&mut s, Frame::json(&ClientMsg::Status)),
        ServerMsg::Status(_)
    ));
    // Oversized: refused from the header, connection closed.
    s.write_all(&(1u32 << 30).to_be_bytes()).unwrap();
    let m: ServerMsg = read_frame(&mut s, 1 << 20).unwrap().parse().unwrap();
    assert_eq!(error_code(m), "too_large");
    assert!(
        read_frame(&mut s, 1 << 20).is_err(),
        "closed after too_large"
    );
    // A client that vanishes mid-frame, and one that never says hello.
    let mut half = UnixStream::connect(&d.socket).unwrap();
    half.write_all(&[0, 0, 0, 50, b'J', b'{']).unwrap();
    drop(half);
    let mut rude = UnixStream::connect(&d.socket).unwrap();
    rude.set_read_timeout(Some(T)).unwrap();
    write_frame(&mut rude, &Frame::json(&ClientMsg::Status)).unwrap();
    let m: ServerMsg = read_frame(&mut rude, 1 << 20).unwrap().parse().unwrap();
    assert_eq!(error_code(m), "unexpected");
    // The daemon is fine.
    let mut c = d.client();
    assert!(matches!(
        c.request(&ClientMsg::Status).unwrap(),
        ServerMsg::Status(_)
    ));
}

#[test]
fn wrong_protocol_version_is_refused() {
    let d = Running::start(|_| {});
    let mut s = UnixStream::connect(&d.socket).unwrap();
    write_frame(
        &mut s,
        &Frame::json(&ClientMsg::Hello {
            protocol: PROTOCOL_VERSION + 1,
            client: "future".into(),
        }),
    )
    .unwrap();
    let m: ServerMsg = read_frame(&mut s, 1 << 20).unwrap().parse().unwrap();
    assert_eq!(error_code(m), "version");
}

#[test]
fn another_uid_is_refused() {
    let me = nix::unistd::getuid().as_raw();
    let d = Running::start(|o| o.allowed_uid = me.wrapping_add(1));
    match Client::connect(&d.socket) {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, "forbidden"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a foreign uid was let in"),
    }
}

#[test]
fn attach_detach_reattach_redraws_the_screen() {
    let mut d = Running::start(|_| {});
    let (id, pid) = d.run(&["print:first-screen", "cat"]);
    let mut c = d.client();
    c.send(&ClientMsg::Attach {
        session: id[..8].to_string(),
        cols: Some(100),
        rows: Some(30),
    })
    .unwrap();
    assert!(matches!(c.recv_msg().unwrap(), ServerMsg::Attached { .. }));
    let mut text = String::new();
    // The redraw snapshot (possibly followed by live output) shows the first screen.
    let mut w = c.writer().unwrap();
    wait_for("first screen", T, || {
        if let Ok(Frame::Data(b)) = c.recv() {
            text.push_str(&String::from_utf8_lossy(&b));
        }
        text.contains("first-screen")
    });
    write_frame(&mut w, &Frame::Data(b"typed-line\r".to_vec())).unwrap();
    wait_for("echo of input", T, || {
        if let Ok(Frame::Data(b)) = c.recv() {
            text.push_str(&String::from_utf8_lossy(&b));
        }
        text.contains("typed-line")
    });
    // Status counts the attached client.
    let mut c2 = d.client();
    match c2.request(&ClientMsg::Status).unwrap() {
        ServerMsg::Status(r) => {
            let s = r
                .sessions
                .iter()
                .find(|s| s.id == id)
                .expect("session listed");
            assert_eq!(s.attached, 1);
            assert_eq!(s.state, "running");
            assert_eq!(s.pid, pid);
            // The agent's own state is published too (a running agent is not `exited`).
            assert!(
                s.agent_state
                    .is_some_and(|a| a != mpm::events::SessionState::Exited),
                "{:?}",
                s.agent_state
            );
        }
        m => panic!("{m:?}"),
    }
    write_frame(&mut w, &Frame::json(&ClientMsg::Detach)).unwrap();
    loop {
        match c.recv().unwrap() {
            Frame::Data(_) => continue,
            f => {
                assert_eq!(f.parse::<ServerMsg>().unwrap(), ServerMsg::Detached);
                break;
            }
        }
    }
    assert!(alive(pid), "session survives a detach");

    // Re-attach: the first data frame alone redraws both lines.
    let mut c3 = d.client();
    c3.send(&ClientMsg::Attach {
        session: id.clone(),
        cols: None,
        rows: None,
    })
    .unwrap();
    assert!(matches!(c3.recv_msg().unwrap(), ServerMsg::Attached { .. }));
    match c3.recv().unwrap() {
        Frame::Data(b) => {
            let screen = String::from_utf8_lossy(&b);
            assert!(screen.contains("first-screen"), "{screen:?}");
            assert!(screen.contains("typed-line"), "{screen:?}");
        }
        f => panic!("expected the redraw, got {f:?}"),
    }
    // Input after re-attach still reaches the session; then the session ends on EOF (^D).
    let mut w3 = c3.writer().unwrap();
    write_frame(&mut w3, &Frame::Data(vec![4])).unwrap();
    let end = loop {
        match c3.recv().unwrap() {
            Frame::Data(_) => continue,
            f => break f,
        }
    };
    assert_eq!(
        end.parse::<ServerMsg>().unwrap(),
        ServerMsg::SessionEnded {
            session: id,
            exit_code: Some(0),
            summary: None,
        }
    );
}

#[test]
fn stop_ends_the_session_and_two_clients_follow_events() {
    let mut d = Running::start(|_| {});
    // Client 1 follows every session event.
    let mut follower = d.client();
    follower
        .send(&ClientMsg::Events {
            filter: EventFilter {
                kind: Some("session".into()),
                ..Default::default()
            },
            follow: true,
        })
        .unwrap();
    assert_eq!(follower.recv_msg().unwrap(), ServerMsg::EndOfEvents);
    // Client 2 runs and stops a session.
    let (id, pid) = d.run(&["print:up", "sleep:0"]);
    let mut c = d.client();
    match c
        .request(&ClientMsg::Stop {
            session: id.clone(),
        })
        .unwrap()
    {
        ServerMsg::Stopped { session, exit_code } => {
            assert_eq!(session, id);
            assert_eq!(exit_code, Some(128 + 15), "SIGTERM");
        }
        m => panic!("{m:?}"),
    }
    assert!(!alive(pid));
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        match follower.recv_msg().unwrap() {
            ServerMsg::Event { event, .. } => {
                assert_eq!(event.session, id);
                // `session.state` changes come and go with the agent's output.
                if event.kind() != "session.state" {
                    kinds.push(event.kind());
                }
            }
            m => panic!("{m:?}"),
        }
    }
    assert_eq!(kinds, ["session.started", "session.exited"]);
    // Stored too: a fresh non-follow query sees both, and the kind filter works.
    let mut q = d.client();
    q.send(&ClientMsg::Events {
        filter: EventFilter {
            session: Some(id.clone()),
            kind: Some("session.exi".into()),
            ..Default::default()
        },
        follow: false,
    })
    .unwrap();
    assert!(matches!(q.recv_msg().unwrap(), ServerMsg::Event { .. }));
    assert_eq!(q.recv_msg().unwrap(), ServerMsg::EndOfEvents);
    // The same connection takes more requests after a non-follow query.
    assert!(matches!(
        q.request(&ClientMsg::Status).unwrap(),
        ServerMsg::Status(_)
    ));
    // Unknown session.
    assert!(matches!(
        c.request(&ClientMsg::Stop { session: "nope".into() }),
        Err(ClientError::Refused { code, .. }) if code == "not_found"
    ));
}

fn ticket_event(session: &str, title: &str) -> Event {
    Event {
        ts: mpm::events::now_ts(),
        session: session.into(),
        trace_id: "t".into(),
        step_id: mpm::events::new_id(),
        parent_step_id: None,
        body: EventBody::Detection(Detection {
            category: "ticket".into(),
            pattern: "todo".into(),
            text: format!("TODO: {title}"),
            source: TextSource::Screen,
            agent: None,
            task: None,
            ticket_type: Some("TODO".into()),
            title: Some(title.into()),
            priority: None,
            handled_by_agent: false,
            is_final: true,
        }),
    }
}

#[test]
fn tickets_list_show_close_over_the_socket() {
    let mut d = Running::start(|_| {});
    let (id, _) = d.run(&["sleep:0"]);
    let mut c = d.client();
    for title in ["Write the docs", "write the  docs.", "Fix login"] {
        assert_eq!(
            c.request(&ClientMsg::Publish {
                event: Box::new(ticket_event(&id, title))
            })
            .unwrap(),
            ServerMsg::Ok
        );
    }
    let tickets = match c
        .request(&ClientMsg::TicketsList {
            project: Some(d.dir.path().display().to_string()),
            all: false,
        })
        .unwrap()
    {
        ServerMsg::Tickets { tickets } => tickets,
        m => panic!("{m:?}"),
    };
    assert_eq!(tickets.len(), 2, "{tickets:?}");
    let docs = tickets
        .iter()
        .find(|t| t.title == "Write the docs")
        .unwrap();
    assert_eq!(docs.seen_count, 2);
    assert_eq!(docs.source_session, id);
    match c.request(&ClientMsg::TicketClose { id: docs.id }).unwrap() {
        ServerMsg::Ticket { ticket } => assert_eq!(ticket.status, "closed"),
        m => panic!("{m:?}"),
    }
    match c.request(&ClientMsg::TicketShow { id: docs.id }).unwrap() {
        ServerMsg::Ticket { ticket } => assert_eq!(ticket.status, "closed"),
        m => panic!("{m:?}"),
    }
    assert!(matches!(
        c.request(&ClientMsg::TicketShow { id: 424242 }),
        Err(ClientError::Refused { code, .. }) if code == "not_found"
    ));
}

#[test]
fn shutdown_stops_sessions_and_removes_the_socket() {
    let mut d = Running::start(|_| {});
    let (_, pid) = d.run(&["sleep:0"]);
    let mut follower = d.client();
    follower
        .send(&ClientMsg::Events {
            filter: EventFilter::default(),
            follow: true,
        })
        .unwrap();
    d.stop();
    assert!(!alive(pid), "session ended by shutdown");
    assert!(!d.socket.exists(), "socket removed");
    // The follower's stream ends instead of hanging.
    while follower.recv_msg().is_ok() {}
    // The store says the session ended.
    let store = mpm::store::Store::open_in(&d.dir.path().join("state")).unwrap();
    let sessions = store.sessions().unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].state, "ended");
}

#[test]
fn random_bytes_from_clients_never_take_the_daemon_down() {
    use proptest::prelude::*;
    let d = Running::start(|o| o.max_frame_bytes = 4096);
    let socket = d.socket.clone();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(64));
    runner
        .run(
            &(
                any::<bool>(),
                proptest::collection::vec(any::<u8>(), 0..2048),
            ),
            |(greet, junk)| {
                let mut s = if greet {
                    raw_hello(&socket)
                } else {
                    UnixStream::connect(&socket).unwrap()
                };
                let _ = s.write_all(&junk);
                drop(s);
                Ok(())
            },
        )
        .unwrap();
    let mut c = d.client();
    assert!(matches!(
        c.request(&ClientMsg::Status).unwrap(),
        ServerMsg::Status(_)
    ));
}

#[test]
fn run_with_events_file_writes_the_session_events_there_too() {
    let d = Running::start(|_| {});
    let path = d.dir.path().join("events.jsonl");
    let mut c = d.client();
    let reply = c
        .request(&ClientMsg::Run(RunSpec {
            argv: agent_argv(&["print:x", "exit:3"]),
            cwd: d.dir.path().display().to_string(),
            env: vec![],
            cols: 80,
            rows: 24,
            flags: mpm::protocol::RunFlags {
                events_file: Some(path.display().to_string()),
                ..Default::default()
            },
            client: None,
        }))
        .unwrap();
    let ServerMsg::Spawned { session, .. } = reply else {
        panic!("{reply:?}")
    };
    wait_for("session.exited in the events file", T, || {
        std::fs::read_to_string(&path).is_ok_and(|t| t.contains("session.exited"))
    });
    let text = std::fs::read_to_string(&path).unwrap();
    let kinds: Vec<String> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["session"], session.as_str());
            v["kind"].as_str().unwrap().to_string()
        })
        .filter(|k| k != "session.state")
        .collect();
    assert_eq!(kinds, ["session.started", "session.exited"]);
    assert!(text.contains("\"exit_code\":3"), "{text}");
    // A bad events-file path is a spawn error, not a crash.
    let reply = c.request(&ClientMsg::Run(RunSpec {
        argv: agent_argv(&["exit:0"]),
        cwd: d.dir.path().display().to_string(),
        env: vec![],
        cols: 80,
        rows: 24,
        flags: mpm::protocol::RunFlags {
            events_file: Some("/proc/nope/events.jsonl".into()),
            ..Default::default()
        },
        client: None,
    }));
    assert!(matches!(reply, Err(ClientError::Refused { code, .. }) if code == "spawn_failed"));
    // So is a missing program.
    let reply = c.request(&ClientMsg::Run(RunSpec {
        argv: vec!["/nonexistent/agent".into()],
        cwd: d.dir.path().display().to_string(),
        env: vec![],
        cols: 80,
        rows: 24,
        flags: Default::default(),
        client: None,
    }));
    assert!(
        matches!(&reply, Err(ClientError::Refused { code, .. }) if code == "command_not_found"),
        "{reply:?}"
    );
}

#[test]
fn two_attached_clients_see_the_same_output() {
    let mut d = Running::start(|_| {});
    let (id, _) = d.run(&["print:ready", "cat"]);
    let attach = || {
        let mut c = d.client();
        c.send(&ClientMsg::Attach {
            session: id.clone(),
            cols: None,
            rows: None,
        })
        .unwrap();
        assert!(matches!(c.recv_msg().unwrap(), ServerMsg::Attached { .. }));
        c
    };
    let mut a = attach();
    let mut b = attach();
    let mut w = a.writer().unwrap();
    write_frame(&mut w, &Frame::Data(b"shared-line\r".to_vec())).unwrap();
    for c in [&mut a, &mut b] {
        let mut text = String::new();
        while !text.contains("shared-line") {
            if let Frame::Data(bytes) = c.recv().unwrap() {
                text.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
    let mut s = d.client();
    match s.request(&ClientMsg::Status).unwrap() {
        ServerMsg::Status(r) => assert_eq!(r.sessions[0].attached, 2),
        m => panic!("{m:?}"),
    }
}
