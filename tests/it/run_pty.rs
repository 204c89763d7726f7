//! `mpm run` driven through a real PTY: pass-through, resize, exit codes, Ctrl-C, termios restore.

use crate::common;

use std::io::Read;
use std::process::Stdio;

use common::*;
use nix::sys::signal::Signal;
use nix::sys::termios::LocalFlags;

/// The only output transform of a PTY with default line settings: ONLCR (`\n` -> `\r\n`).
fn onlcr(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 128);
    for &b in bytes {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// 16 MiB of random bytes reach stdout exactly as the PTY produced them.
///
/// Reference: the fake agent's bytes read straight from a pipe, with the PTY's known transform
/// applied. The agent's PTY gets the outer terminal's line settings, which are the kernel
/// defaults here (`OPOST|ONLCR` and nothing else in `c_oflag`), so ONLCR is the whole transform.
/// This is exact and independent of another relay (`script` would itself be under test).
fn passes_16_mib_of_random_bytes_exactly(host: HostKind) {
    let env = TestEnv::for_host(host);
    const N: usize = 16 << 20;
    let step = format!("random:{N}:7");
    let expected = {
        let out = std::process::Command::new(fake_agent())
            .arg(&step)
            .output()
            .expect("run fake agent");
        assert_eq!(out.stdout.len(), N);
        onlcr(&out.stdout)
    };
    let (mut pipe_r, pipe_w) = std::io::pipe().unwrap();
    let mut spawn = Spawn::new(&env, &["run", "--", &fake_agent(), &step]);
    spawn.stdout = Some(Stdio::from(pipe_w));
    let mut p = spawn.start();
    let collector = std::thread::spawn(move || {
        let mut all = Vec::new();
        pipe_r.read_to_end(&mut all).unwrap();
        all
    });
    let status = p.wait_within(DEADLINE * 6);
    assert_eq!(status.code(), Some(0), "terminal:\n{}", p.text());
    let got = collector.join().unwrap();
    assert_eq!(got.len(), expected.len(), "length differs");
    if let Some(i) = got.iter().zip(&expected).position(|(a, b)| a != b) {
        panic!("first difference at byte {i}");
    }
}

fn resize_reaches_the_child_and_ctrl_c_is_a_byte(host: HostKind) {
    let env = TestEnv::for_host(host);
    let mut p = Spawn::new(
        &env,
        &[
            "run",
            "--",
            &fake_agent(),
            "size",
            "winch",
            "ready",
            "sleep:0",
        ],
    )
    .start();
    p.expect("READY");
    assert!(p.text().contains("size 80x24"), "{}", p.text());
    p.resize(100, 40);
    p.expect("winch 100x40");
    p.resize(61, 17);
    p.expect("winch 61x17");
    // Raw mode: ^C is a byte for the agent's PTY, whose line discipline makes it SIGINT.
    p.send(b"\x03");
    assert_eq!(p.wait().code(), Some(130));
}

fn ctrl_c_reaches_a_trapping_child(host: HostKind) {
    let env = TestEnv::for_host(host);
    let mut p = Spawn::new(
        &env,
        &["run", "--", &fake_agent(), "trapint", "ready", "echo"],
    )
    .start();
    p.expect("READY");
    p.send(b"\x03");
    p.expect("got SIGINT");
    p.send(b"still here\r");
    p.expect("echo: still here");
    p.send(b"\x04");
    p.expect("EOF");
    assert_eq!(p.wait().code(), Some(0));
}

/// Exit statuses pass through, and the outer terminal's termios after == before, after having
/// been raw during the session.
fn exit_codes_pass_through_and_termios_is_restored(host: HostKind) {
    for (step, code) in [
        ("exit:0", 0),
        ("exit:3", 3),
        ("exit:5", 5),
        ("signal:KILL", 137),
    ] {
        let env = TestEnv::for_host(host);
        let gate = env.path("gate");
        let mut p = Spawn::new(
            &env,
            &[
                "run",
                "--",
                "sh",
                "-c",
                &format!(
                    "echo READY; while [ ! -e {} ]; do sleep 0.02; done; exec {} {step}",
                    gate.display(),
                    fake_agent()
                ),
            ],
        )
        .start();
        // The harness's PTY starts with the kernel defaults, like a fresh terminal.
        let before = p.initial_termios.clone();
        p.expect("READY");
        let during = p.termios();
        assert!(
            !during.local_flags.contains(LocalFlags::ICANON)
                && !during.local_flags.contains(LocalFlags::ECHO),
            "not raw during the session"
        );
        std::fs::write(&gate, "").unwrap();
        assert_eq!(p.wait().code(), Some(code), "{step}: {}", p.text());
        assert_eq!(
            termios_key(&p.termios()),
            termios_key(&before),
            "{step}: termios not restored"
        );
    }
}

/// `mpm run` of the fake agent with a grandchild that ignores SIGHUP and SIGTERM, once the agent
/// is ready: the session, the pids of agent and grandchild, and a guard that kills them.
fn agent_with_stubborn_grandchild(env: &TestEnv) -> (PtyProc, Vec<i32>, KillOnDrop) {
    let agent_pid = env.path("agent.pid");
    let gc_pid = env.path("gc.pid");
    let p = Spawn::new(
        env,
        &[
            "run",
            "--",
            &fake_agent(),
            &format!("pid:{}", agent_pid.display()),
            &format!("grandchild:{}:hup", gc_pid.display()),
            "ready",
            "sleep:0",
        ],
    )
    .start();
    p.expect("READY");
    let pids = vec![read_pid(&agent_pid), read_pid(&gc_pid)];
    let guard = KillOnDrop(pids.clone());
    (p, pids, guard)
}

#[test]
fn sigterm_sighup_sigint_to_mpm_restore_the_terminal_and_stop_the_tree() {
    for sig in [Signal::SIGTERM, Signal::SIGHUP, Signal::SIGINT] {
        let env = TestEnv::new();
        let (mut p, pids, _guard) = agent_with_stubborn_grandchild(&env);
        let before = p.initial_termios.clone();
        assert!(pids.iter().all(|&x| alive(x)));
        p.signal(sig);
        assert_eq!(p.wait().code(), Some(128 + sig as i32), "{sig}");
        assert_eq!(termios_key(&p.termios()), termios_key(&before), "{sig}");
        // mpm waits for the tree before exiting; nothing may be left.
        for pid in pids {
            assert!(!alive(pid), "{sig}: {pid} survived");
        }
    }
}

#[test]
fn sigkill_of_mpm_leaves_no_orphan() {
    let env = TestEnv::new();
    let (mut p, pids, _guard) = agent_with_stubborn_grandchild(&env);
    p.signal(Signal::SIGKILL);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&p.wait()),
        Some(9)
    );
    // The watchdog notices and stops the tree (the grandchild ignores SIGHUP and SIGTERM, so this
    // takes the grace period, 0.5 s here).
    for pid in pids {
        assert!(
            wait_until(DEADLINE, || !alive(pid)),
            "{pid} survived mpm's SIGKILL"
        );
    }
}

fn command_not_found_is_127_and_not_executable_is_126(host: HostKind) {
    let env = TestEnv::for_host(host);
    let mut p = Spawn::new(&env, &["run", "--", "no-such-agent-xyz"]).start();
    let before = p.initial_termios.clone();
    assert_eq!(p.wait_output().code(), Some(127));
    assert!(
        p.text().contains("command not found: no-such-agent-xyz"),
        "{}",
        p.text()
    );
    assert_eq!(termios_key(&p.termios()), termios_key(&before));

    let plain = env.path("plain.sh");
    std::fs::write(&plain, "echo hi\n").unwrap();
    let out = env
        .command(&["run", "--", plain.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(126));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot execute"), "{err}");

    // The profile's command (here a missing one) says how to fix it.
    let out = env
        .command(&["run"])
        .env("MPM_PROFILES__CLAUDE__COMMAND", "[\"no-such-claude-xyz\"]")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(127), "{err}");
    assert!(err.contains("profiles.claude.command"), "{err}");
}

/// An exec failure after raw mode was entered (a script whose interpreter is missing): 126, and
/// the terminal is restored on this setup-error path too.
fn setup_error_after_raw_mode_restores_the_terminal(host: HostKind) {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::for_host(host);
    let script = env.path("bad-interp.sh");
    std::fs::write(&script, "#!/nonexistent/interpreter\necho hi\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut p = Spawn::new(&env, &["run", "--", script.to_str().unwrap()]).start();
    let before = p.initial_termios.clone();
    assert_eq!(p.wait_output().code(), Some(126), "{}", p.text());
    assert!(p.text().contains("bad interpreter"), "{}", p.text());
    assert_eq!(termios_key(&p.termios()), termios_key(&before));
}

/// Ctrl-\ is a byte too: the agent's PTY turns it into SIGQUIT for the agent (131), not for mpm.
fn ctrl_backslash_reaches_the_child_as_sigquit(host: HostKind) {
    let env = TestEnv::for_host(host);
    let mut p = Spawn::new(&env, &["run", "--", &fake_agent(), "ready", "sleep:0"]).start();
    p.expect("READY");
    p.send(b"\x1c");
    assert_eq!(p.wait().code(), Some(128 + 3), "{}", p.text());
}

/// A second SIGTERM while the grace period runs kills the tree at once (here the grace is 600 s and
/// the grandchild ignores SIGTERM, so only the escalation can end the session within the deadline).
#[test]
fn second_sigterm_skips_the_grace_period() {
    let env = TestEnv::new();
    let gc_pid = env.path("gc.pid");
    let mut spawn = Spawn::new(
        &env,
        &[
            "run",
            "--",
            &fake_agent(),
            &format!("grandchild:{}:hup", gc_pid.display()),
            "ready",
            "sleep:0",
        ],
    );
    spawn.env.push(("MPM_RUN__GRACE_SECS".into(), "600".into()));
    let mut p = spawn.start();
    p.expect("READY");
    let gc = read_pid(&gc_pid);
    let _guard = KillOnDrop(vec![gc]);
    p.signal(Signal::SIGTERM);
    // The first one was handled once mpm gave the terminal back (two pending signals would merge).
    assert!(wait_until(DEADLINE, || p
        .termios()
        .local_flags
        .contains(LocalFlags::ICANON)));
    p.signal(Signal::SIGTERM);
    assert_eq!(p.wait().code(), Some(128 + 15));
    assert!(!alive(gc), "grandchild {gc} survived");
}

/// Ctrl-Z is a byte too: the agent's PTY sends SIGTSTP to the agent, which may handle it.
fn ctrl_z_reaches_the_child_as_sigtstp(host: HostKind) {
    let env = TestEnv::for_host(host);
    let script = "import signal, sys, time\n\
                  def h(s, f):\n    print('got-TSTP', flush=True)\n    sys.exit(5)\n\
                  signal.signal(signal.SIGTSTP, h)\nprint('READY', flush=True)\n\
                  while True:\n    time.sleep(0.05)\n";
    let mut p = Spawn::new(&env, &["run", "--", "python3", "-c", script]).start();
    p.expect("READY");
    p.send(b"\x1a");
    p.expect("got-TSTP");
    assert_eq!(p.wait().code(), Some(5), "{}", p.text());
}

/// The state letter of a process (`T` = stopped), from /proc.
fn state(pid: i32) -> Option<char> {
    mpm::process::read_stat(pid).map(|s| s.state)
}

/// Ctrl-Z suspends the agent and returns the terminal (cooked) with mpm stopped, as running the
/// agent directly would; `fg` (SIGCONT to mpm) resumes it in raw mode and continues the agent.
fn ctrl_z_suspends_the_agent_and_mpm_then_fg_resumes(host: HostKind) {
    let env = TestEnv::for_host(host);
    let pidfile = env.path("agent.pid");
    let script = format!(
        "import os, signal, time\n\
         signal.signal(signal.SIGCONT, lambda s, f: print('CONTINUED', flush=True))\n\
         open('{}', 'w').write(str(os.getpid()))\n\
         print('READY', flush=True)\n\
         while True:\n    time.sleep(0.05)\n",
        pidfile.display()
    );
    let mut p = Spawn::new(&env, &["run", "--", "python3", "-c", &script]).start();
    p.expect("READY");
    let agent = read_pid(&pidfile);
    let _guard = KillOnDrop(vec![agent]);
    let before = p.initial_termios.clone();
    p.send(b"\x1a");
    assert!(
        wait_until(DEADLINE, || state(p.pid()) == Some('T')),
        "mpm did not stop; terminal:\n{}",
        p.text()
    );
    assert_eq!(state(agent), Some('T'), "the agent is stopped too");
    assert_eq!(
        termios_key(&p.termios()),
        termios_key(&before),
        "the terminal is the user's while suspended"
    );
    // `fg`.
    p.signal(Signal::SIGCONT);
    p.expect("CONTINUED");
    assert!(
        wait_until(DEADLINE, || !p
            .termios()
            .local_flags
            .contains(LocalFlags::ICANON)),
        "raw mode again after fg"
    );
    assert_ne!(state(agent), Some('T'));
    p.send(b"\x03");
    assert_eq!(p.wait().code(), Some(130), "{}", p.text());
}

crate::both_hosts!(
    passes_16_mib_of_random_bytes_exactly,
    resize_reaches_the_child_and_ctrl_c_is_a_byte,
    ctrl_c_reaches_a_trapping_child,
    exit_codes_pass_through_and_termios_is_restored,
    command_not_found_is_127_and_not_executable_is_126,
    setup_error_after_raw_mode_restores_the_terminal,
    ctrl_backslash_reaches_the_child_as_sigquit,
    ctrl_z_reaches_the_child_as_sigtstp,
    ctrl_z_suspends_the_agent_and_mpm_then_fg_resumes,
);
