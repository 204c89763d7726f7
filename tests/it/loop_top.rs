//! `mpm top` driven on a real PTY, its screen read through a VT model: a live in-process session
//! seen from a second terminal, its delegation, ticket and memory; `s` stops the session, `q` quits
//! and gives the terminal back.

use crate::common::{DEADLINE, HostKind, PtyProc, Spawn, TestEnv, fake_agent, wait_until};
use crate::loop_support::*;

fn screen(p: &PtyProc, cols: u16, rows: u16) -> String {
    let mut screen = mpm::screen::Screen::new(cols, rows);
    screen.feed(p.text().as_bytes(), &mut |_, _| {});
    screen.contents()
}

fn wait_screen(p: &PtyProc, what: &[&str]) -> String {
    let mut last = String::new();
    let ok = wait_until(DEADLINE, || {
        last = screen(p, 140, 40);
        what.iter().all(|w| last.contains(w))
    });
    assert!(ok, "{what:?} not on the screen:\n{last}");
    last
}

#[test]
fn top_shows_a_live_session_from_a_second_terminal_and_stops_it() {
    let env = TestEnv::new();
    let cfg = write_config(
        &env,
        &format!(
            "executor: {{on_session_exit: wait}}\nagents:\n  engineer: {{argv: {}}}\n",
            fake_argv(&["print:done {task}"])
        ),
    );
    let fake = fake_agent();
    let mut session = Spawn::new(
        &env,
        &[
            "--config",
            &cfg,
            "run",
            "--no-daemon",
            "--",
            &fake,
            "print:Engineer Agent: implement fib",
            "print:TODO: write the docs",
            "sleep:0",
        ],
    )
    .start();
    session.expect("TODO: write the docs");

    let mut spawn = Spawn::new(&env, &["--config", &cfg, "top", "--interval", "0.2"]);
    spawn.cols = 140;
    spawn.rows = 40;
    let mut top = spawn.start();
    let text = wait_screen(
        &top,
        &[
            "Sessions",
            "Delegations",
            "implement fib",
            "success",
            "TODO: write the docs",
            " MB",
        ],
    );
    assert!(text.contains("fake_agent"), "the agent column: {text}");
    assert!(text.contains("running"), "the live session: {text}");
    // `s` on the (only, selected) session: SIGTERM to the hosting mpm run.
    top.send(b"\t");
    top.send(b"s");
    let status = session.wait();
    assert_eq!(status.code(), Some(128 + 15), "{}", session.text());
    wait_screen(&top, &["exited", "0 live sessions"]);
    top.send(b"q");
    assert_eq!(top.wait_output().code(), Some(0));
    assert!(
        top.text().ends_with("\x1b[?1049l") || top.text().contains("\x1b[?1049l"),
        "alternate screen left"
    );
}

/// `c` on a running delegation is a user cancel: it ends `cancelled` ("cancelled by the user"),
/// not `failed`; the session feeds nothing back (a program mpm was not told about), so the
/// finished row says `off`, never `pending`. In both hosts (top reads the daemon, or the store).
fn top_cancels_a_running_delegation_as_cancelled(host: HostKind) {
    let env = TestEnv::for_host(host);
    let cfg = write_config(
        &env,
        &format!(
            "executor: {{on_session_exit: wait}}\nagents:\n  engineer: {{argv: {}}}\n",
            fake_argv(&["print:working on {task}", "sleep:0"])
        ),
    );
    let events = env.path("events.jsonl");
    let fake = fake_agent();
    let mut args = vec!["--config", cfg.as_str(), "run"];
    if host == HostKind::InProcess {
        args.push("--no-daemon");
    }
    args.extend([
        "--events-file",
        events.to_str().unwrap(),
        "--",
        &fake,
        "print:Engineer Agent: a very long job",
        "print:TODO: nothing",
        "sleep:0",
    ]);
    let session = Spawn::new(&env, &args).start();
    session.expect("TODO: nothing");
    let read = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&events)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    assert!(
        wait_until(DEADLINE, || !of_kind(&read(), "delegation.started")
            .is_empty()),
        "the delegation never started: {:?}",
        read()
    );

    let mut spawn = Spawn::new(&env, &["--config", &cfg, "top", "--interval", "0.2"]);
    spawn.cols = 140;
    spawn.rows = 40;
    if host == HostKind::Daemon {
        // The test daemon keeps its store in its own folder (`--state-dir`).
        spawn.env.push((
            "MPM_DAEMON__STATE_DIR".into(),
            env.path("daemon-state").display().to_string(),
        ));
    }
    let mut top = spawn.start();
    wait_screen(&top, &["Delegations", "a very long job", "running"]);
    // The delegations table has the focus and its only row is selected.
    top.send(b"c");
    let mut fin = Vec::new();
    assert!(
        wait_until(DEADLINE, || {
            fin = of_kind(&read(), "delegation.finished")
                .into_iter()
                .cloned()
                .collect();
            !fin.is_empty()
        }),
        "not finished after c:\n{}",
        screen(&top, 140, 40)
    );
    assert_eq!(fin[0]["status"], "cancelled", "{fin:?}");
    assert_eq!(fin[0]["reason"], "cancelled by the user", "{fin:?}");
    let text = wait_screen(&top, &["cancelled", "off"]);
    assert!(!text.contains("pending"), "feedback is off: {text}");
    top.send(b"q");
    assert_eq!(top.wait_output().code(), Some(0));
    drop(session);
}

crate::both_hosts!(top_cancels_a_running_delegation_as_cancelled);
