//! A client attaching to a daemon session gets the screen redrawn from mpm's own screen model:
//! the characters, the cursor, the alternate screen and the input modes the agent set (so keys,
//! pastes and mouse reports reach the agent encoded as it asked).

use std::time::Duration;

use crate::daemon_support::{Env, Guard, agent_argv, wait_for};
use mpm::daemon::client::Client;
use mpm::protocol::{ClientMsg, Frame, RunSpec, ServerMsg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const T: Duration = Duration::from_secs(30);

/// Attach once and return the redraw (the first data frame).
fn snapshot(env: &Env, session: &str) -> Vec<u8> {
    let mut c = Client::connect(&env.socket()).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    c.send(&ClientMsg::Attach {
        session: session.to_string(),
        cols: Some(80),
        rows: Some(24),
    })
    .unwrap();
    assert!(matches!(c.recv_msg().unwrap(), ServerMsg::Attached { .. }));
    match c.recv().unwrap() {
        Frame::Data(b) => b,
        f => panic!("expected the redraw, got {f:?}"),
    }
}

#[test]
fn a_reattaching_client_gets_the_agents_screen_cursor_and_modes() {
    let env = Env::new();
    let mut daemon = env.start_daemon(None);
    // Alternate screen, bracketed paste, SGR mouse reporting, hidden cursor, application cursor
    // keys, then text at row 5, column 3.
    let setup = b"\x1b[?1049h\x1b[?2004h\x1b[?1000h\x1b[?1006h\x1b[?25l\x1b[?1h\x1b[5;3Hin-alt";
    let hex: String = setup.iter().map(|b| format!("{b:02x}")).collect();
    let mut c = Client::connect(&env.socket()).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    let mut sessions = Guard::empty();
    let session = match c
        .request(&ClientMsg::Run(RunSpec {
            argv: agent_argv(&[&format!("write-hex:{hex}"), "sleep:0"]),
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
            sessions.track_group(pid);
            session
        }
        m => panic!("{m:?}"),
    };
    let mut redraw = Vec::new();
    wait_for("the agent's screen in the redraw", T, || {
        redraw = snapshot(&env, &session);
        String::from_utf8_lossy(&redraw).contains("in-alt")
    });
    // What the client's terminal shows after the redraw, whatever it showed before.
    let mut screen = mpm::screen::Screen::new(80, 24);
    screen.feed(b"old\x1b[?1l\x1b[?2004l", &mut |_, _| {});
    screen.feed(&redraw, &mut |_, _| {});
    let text = String::from_utf8_lossy(&redraw).into_owned();
    assert!(screen.in_alt(), "{text:?}");
    for mode in [1, 1000, 1006, 2004] {
        assert!(screen.dec_mode_set(mode), "mode {mode}: {text:?}");
    }
    assert!(!screen.dec_mode_set(1002), "{text:?}");
    assert!(!screen.cursor_visible(), "{text:?}");
    let rows = screen.contents();
    assert_eq!(rows.lines().nth(4), Some("  in-alt"), "{rows}");
    assert_eq!(
        (screen.cursor_row(), screen.cursor_col()),
        (4, 8),
        "{text:?}"
    );

    kill(Pid::from_raw(daemon.pid()), Signal::SIGTERM).unwrap();
    assert_eq!(daemon.wait_exit(T), Some(0));
}
