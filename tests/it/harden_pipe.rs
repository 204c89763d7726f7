//! No exit 101 from ordinary use: every subcommand with stdout a closed pipe ends quietly with
//! status 141 (128 + SIGPIPE, the rule of `cli::output`), and a full stderr (`2>/dev/full`) never
//! panics either.

use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::daemon_support::{Env, wait_for};
use mpm::daemon::client::Client;
use mpm::events::{Event, EventBody};
use mpm::protocol::{ClientMsg, ServerMsg};

/// A pipe whose read end is already closed: every write to the other end fails with EPIPE.
fn closed_pipe() -> OwnedFd {
    let (r, w) = nix::unistd::pipe().expect("pipe");
    drop(r);
    w
}

/// Runs `cmd` with stdout a closed pipe; (status code, stderr).
fn into_closed_pipe(mut cmd: Command) -> (Option<i32>, String) {
    let out = cmd
        .stdout(Stdio::from(closed_pipe()))
        .stderr(Stdio::piped())
        .output()
        .expect("run mpm");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn publish(env: &Env, body: EventBody) {
    let mut c = Client::connect(&env.socket()).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let ev = Event {
        ts: mpm::events::now_ts(),
        session: "0123456789abcdef".into(),
        trace_id: "t".into(),
        step_id: "s".into(),
        parent_step_id: None,
        body,
    };
    let reply = c
        .request(&ClientMsg::Publish {
            event: Box::new(ev),
        })
        .expect("publish");
    assert_eq!(reply, ServerMsg::Ok);
}

#[test]
fn every_subcommand_into_a_closed_pipe_ends_quietly_with_141() {
    let env = Env::new();
    let _daemon = env.start_daemon(None);
    // Something for `events` and `tickets` to print.
    publish(
        &env,
        EventBody::Detection(mpm::events::Detection {
            category: "ticket".into(),
            pattern: "bug".into(),
            text: "BUG: parser drops CR".into(),
            source: mpm::events::TextSource::Screen,
            agent: None,
            task: None,
            ticket_type: Some("BUG".into()),
            title: Some("parser drops CR".into()),
            priority: None,
            handled_by_agent: false,
            is_final: true,
        }),
    );
    let sock = env.socket().display().to_string();
    wait_for("the ticket stored", Duration::from_secs(30), || {
        env.client(&["tickets", "list", "--json"])
            .1
            .contains("parser drops CR")
    });
    let capture = env.dir.path().join("capture.txt");
    std::fs::write(&capture, "Engineer Agent: implement the parser\n").expect("write");
    let capture = capture.display().to_string();

    let cases: Vec<Vec<&str>> = vec![
        vec!["--help"],
        vec!["--version"],
        vec!["scan", "--input", "text", &capture],
        vec!["patterns", "list"],
        vec!["patterns", "list", "--json"],
        vec!["agents", "list"],
        vec!["agents", "list", "--json"],
        vec!["config", "show"],
        vec!["config", "show", "--json"],
        vec!["status", "--socket", &sock],
        vec!["status", "--json", "--socket", &sock],
        vec!["events", "--socket", &sock],
        vec!["events", "--json", "--socket", &sock],
        vec!["tickets", "list", "--socket", &sock],
        vec!["tickets", "list", "--json", "--socket", &sock],
        vec!["tickets", "show", "1", "--socket", &sock],
        vec!["service", "install"],
    ];
    for args in &cases {
        let (code, err) = into_closed_pipe(env.mpm(args));
        assert!(!err.contains("panicked"), "mpm {args:?}: {err}");
        assert_ne!(code, Some(101), "mpm {args:?}: {err}");
        // clap prints help itself; everything else follows the one rule.
        if args[0] != "--help" && args[0] != "--version" {
            assert_eq!(code, Some(141), "mpm {args:?}: {err}");
            assert!(err.is_empty(), "mpm {args:?} said something: {err}");
        }
    }
}

#[test]
fn a_full_stderr_never_panics() {
    let env = Env::new();
    let bad = env.dir.path().join("bad.yaml");
    std::fs::write(&bad, "patterns:\n  - id: x\n    regex: '('\n").expect("write");
    let full = || std::fs::OpenOptions::new().write(true).open("/dev/full");
    let Ok(f) = full() else {
        println!("SKIPPED: no /dev/full here");
        return;
    };
    let cases: Vec<(Vec<String>, i32)> = vec![
        // An error message that cannot be written: the status still says what happened.
        (
            vec!["patterns".into(), "check".into(), bad.display().to_string()],
            2,
        ),
        (
            // `stop` needs a daemon (`status` reads the store without one).
            vec![
                "stop".into(),
                "--socket".into(),
                "/nonexistent/s".into(),
                "0123abcd".into(),
            ],
            1,
        ),
        (vec!["--no-such-flag".into()], 2),
    ];
    let _ = f;
    for (args, want) in cases {
        let out = env
            .mpm(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .stdout(Stdio::null())
            .stderr(Stdio::from(full().expect("/dev/full")))
            .output()
            .expect("run mpm");
        assert_eq!(out.status.code(), Some(want), "mpm {args:?}");
    }
}
