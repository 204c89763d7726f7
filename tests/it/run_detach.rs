//! Detaching from a daemon-hosted `mpm run`: the configurable keys, typed twice for the agent, and
//! every terminal mode the agent set switched off on the way out.

use crate::common;

use common::*;

/// What the client writes when it leaves a session that goes on (see `mpm::pty::keys`).
const RESET: &[u8] = mpm::pty::keys::MODE_RESET;

#[test]
fn detach_restores_the_agents_terminal_modes_and_the_session_keeps_running() {
    let env = TestEnv::for_host(HostKind::Daemon);
    let pidfile = env.path("agent.pid");
    // Alternate screen, mouse, bracketed paste, focus events, hidden cursor, kitty keyboard.
    let script = format!(
        "echo $$ > {}; printf '\\033[?1049h\\033[?1000h\\033[?2004h\\033[?1004h\\033[?25l\\033[>1u'; \
         echo READY; exec sleep 60",
        pidfile.display()
    );
    let mut p = Spawn::new(&env, &["run", "--", "sh", "-c", &script]).start();
    p.expect("READY");
    let agent = read_pid(&pidfile);
    let _guard = KillOnDrop(vec![agent]);
    let before = p.initial_termios.clone();
    p.send(b"\x1d");
    assert_eq!(p.wait_output().code(), Some(0), "{}", p.text());
    let text = p.text();
    let out = text.as_bytes();
    let at = out
        .windows(RESET.len())
        .position(|w| w == RESET)
        .unwrap_or_else(|| panic!("no mode reset on detach: {text:?}"));
    assert!(
        at > text.find("READY").unwrap(),
        "the reset comes after the session's output"
    );
    assert!(
        text.contains("the session keeps running"),
        "the message tells the truth: {text:?}"
    );
    assert_eq!(termios_key(&p.termios()), termios_key(&before));
    assert!(alive(agent), "detach leaves the agent running");
}

/// `--detach-keys ctrl-a,d`: Ctrl-] is an ordinary key then; the sequence typed twice reaches the
/// agent once; typed once, it detaches.
#[test]
fn detach_keys_are_configurable_and_twice_reach_the_agent() {
    let env = TestEnv::for_host(HostKind::Daemon);
    let mut p = Spawn::new(
        &env,
        &[
            "run",
            "--detach-keys",
            "ctrl-a,d",
            "--",
            &fake_agent(),
            "ready",
            "echo",
        ],
    )
    .start();
    p.expect("READY");
    p.send(b"x\x1dy\r");
    p.expect("echo: x\x1dy");
    p.send(b"\x01d\x01dz\r");
    p.expect("echo: \x01dz");
    p.send(b"\x01d");
    assert_eq!(p.wait_output().code(), Some(0), "{}", p.text());
    assert!(p.text().contains("detached"), "{}", p.text());

    // A bad sequence is refused with the option named.
    let out = env
        .command(&["run", "--detach-keys", "ctrl-1", "--", "true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--detach-keys") && err.contains("ctrl-1"),
        "{err}"
    );
}
