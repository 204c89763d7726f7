//! Signals to `mpm run` through a daemon: a client whose stdin is not a terminal owns its session,
//! so SIGTERM/SIGHUP/SIGINT stop it as in-process (status 128+N, nothing left running); a
//! terminal client whose terminal closes (SIGHUP) detaches and the agent keeps running.

use std::os::unix::process::CommandExt;
use std::process::Stdio;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::both_hosts;
use crate::common::{
    DEADLINE, HostKind, KillOnDrop, Spawn, TestEnv, alive, fake_agent, read_pid, wait_until,
};

/// `mpm run </dev/null` of an agent with a grandchild that ignores SIGHUP and SIGTERM, signalled
/// once both are up.
fn signal_to_a_non_terminal_client_stops_the_session(host: HostKind) {
    for sig in [Signal::SIGTERM, Signal::SIGHUP, Signal::SIGINT] {
        let env = TestEnv::for_host(host);
        let (agent_pid, gc_pid) = (env.path("agent.pid"), env.path("gc.pid"));
        let mut child = env
            .command(&[
                "run",
                "--",
                &fake_agent(),
                &format!("pid:{}", agent_pid.display()),
                &format!("grandchild:{}:hup", gc_pid.display()),
                "sleep:0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let mpm = child.id() as i32;
        let mut guard = KillOnDrop(vec![mpm]);
        assert!(
            wait_until(DEADLINE, || gc_pid.exists() && agent_pid.exists()),
            "{sig}: the agent never started"
        );
        let pids = [read_pid(&agent_pid), read_pid(&gc_pid)];
        guard.0.extend(pids);
        kill(Pid::from_raw(mpm), sig).unwrap();
        let mut status = None;
        assert!(
            wait_until(DEADLINE, || {
                status = child.try_wait().unwrap();
                status.is_some()
            }),
            "{sig}: mpm did not exit"
        );
        assert_eq!(
            status.unwrap().code(),
            Some(128 + sig as i32),
            "{sig} ({host:?})"
        );
        for pid in pids {
            assert!(
                wait_until(DEADLINE, || !alive(pid)),
                "{sig} ({host:?}): {pid} survived"
            );
        }
    }
}

both_hosts!(signal_to_a_non_terminal_client_stops_the_session);

/// SIGHUP to a terminal client of the daemon is its terminal closing: it detaches, the agent
/// keeps running in the daemon (a later `mpm attach` finds it), as with tmux.
#[test]
fn sighup_to_a_terminal_client_of_the_daemon_detaches_and_the_agent_keeps_running() {
    let env = TestEnv::for_host(HostKind::Daemon);
    let agent_pid = env.path("agent.pid");
    let mut p = Spawn::new(
        &env,
        &[
            "run",
            "--",
            &fake_agent(),
            &format!("pid:{}", agent_pid.display()),
            "ready",
            "sleep:0",
        ],
    )
    .start();
    p.expect("READY");
    let agent = read_pid(&agent_pid);
    let _guard = KillOnDrop(vec![agent]);
    p.signal(Signal::SIGHUP);
    assert_eq!(p.wait_output().code(), Some(0), "{}", p.text());
    assert!(p.text().contains("detached"), "{}", p.text());
    assert!(alive(agent), "the agent should keep running in the daemon");
}
