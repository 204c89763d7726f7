//! `mpm run` with pipes, `--events-file` and `--record`.

use crate::common;

use std::io::Write;
use std::process::Stdio;

use common::*;

fn run_with_stdin(env: &TestEnv, args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = env
        .command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

fn piped_stdin_partial_last_line_then_eof(host: HostKind) {
    let env = TestEnv::for_host(host);
    let out = run_with_stdin(&env, &["run", "--", "cat"], b"a\nb");
    assert_eq!(out.status.code(), Some(0));
    // The PTY echoes the input ("a\r\nb"), then cat prints what it read: "a\n" and, after the first
    // EOF character flushed the partial line, "b"; the second EOF character ends cat.
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a\r\nba\r\nb");
}

fn piped_stdin_lines_reach_the_agent_and_eof_is_delivered_once(host: HostKind) {
    let env = TestEnv::for_host(host);
    let out = run_with_stdin(&env, &["run", "--", &fake_agent(), "echo"], b"hi\n");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("echo: hi\r\n"), "{text:?}");
    assert!(text.ends_with("EOF\r\n"), "{text:?}");
    // Empty stdin: EOF at once.
    let out = run_with_stdin(&env, &["run", "--", "cat"], b"");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"");
}

/// `mpm run --events-file F [flags] -- fake_agent STEPS` with `env_vars` set and stdin closed:
/// the process output and the events it wrote, parsed.
fn run_with_events(
    env: &TestEnv,
    name: &str,
    flags: &[&str],
    steps: &[&str],
    env_vars: &[(&str, &str)],
) -> (std::process::Output, Vec<serde_json::Value>) {
    let events = env.path(name);
    let fake = fake_agent();
    let mut args = vec!["run", "--events-file", events.to_str().unwrap()];
    args.extend_from_slice(flags);
    args.push("--");
    args.push(&fake);
    args.extend_from_slice(steps);
    let out = env
        .command(&args)
        .envs(env_vars.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = std::fs::read_to_string(&events).unwrap();
    let parsed = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out, parsed)
}

#[test]
fn events_file_has_session_started_and_exited() {
    let env = TestEnv::new();
    let (out, mut lines) = run_with_events(&env, "events.jsonl", &[], &["exit:3"], &[]);
    assert_eq!(out.status.code(), Some(3));
    // `session.state` changes (exited, here) are checked by tests/it/exact_*.rs.
    lines.retain(|l| l["kind"] != "session.state");
    assert_eq!(lines.len(), 2, "{lines:?}");
    let (s, e) = (&lines[0], &lines[1]);
    for ev in [s, e] {
        for key in [
            "ts",
            "session",
            "kind",
            "trace_id",
            "step_id",
            "parent_step_id",
        ] {
            assert!(ev.get(key).is_some(), "{key} missing in {ev}");
        }
        assert_eq!(ev["session"], s["session"]);
    }
    assert_eq!(s["kind"], "session.started");
    assert_eq!(s["command"][0], fake_agent());
    assert_eq!(s["command"][1], "exit:3");
    assert!(s["pid"].as_u64().unwrap() > 1);
    assert_eq!(s["cols"], 80);
    assert_eq!(s["rows"], 24);
    assert_eq!(e["kind"], "session.exited");
    assert_eq!(e["exit_code"], 3);
    assert!(e["signal"].is_null());
    assert!(e["duration_ms"].is_u64());
    assert_eq!(e["tap_overrun_bytes"], 0);

    // Death by signal: exit_code null, signal the number.
    let (out, lines) = run_with_events(&env, "events2.jsonl", &[], &["signal:TERM"], &[]);
    assert_eq!(out.status.code(), Some(143));
    let last = lines
        .iter()
        .rev()
        .find(|l| l["kind"] == "session.exited")
        .unwrap();
    assert!(last["exit_code"].is_null());
    assert_eq!(last["signal"], 15);
}

/// `--record` alone: header, output and resize events, and no input events (input can hold secrets).
#[test]
fn record_writes_a_valid_asciicast_v2() {
    let env = TestEnv::new();
    let cast = env.path("s.cast");
    let mut p = Spawn::new(
        &env,
        &[
            "run",
            "--record",
            cast.to_str().unwrap(),
            "--",
            &fake_agent(),
            "print:h\u{e9}llo w\u{f6}rld",
            "winch",
            "ready",
            "echo",
        ],
    );
    p.cols = 90;
    p.rows = 20;
    let mut p = p.start();
    p.expect("READY");
    p.resize(70, 15);
    p.expect("winch 70x15");
    p.send(b"\x04");
    assert_eq!(p.wait().code(), Some(0));
    let text = std::fs::read_to_string(&cast).unwrap();
    let mut lines = text.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    assert_eq!(header["width"], 90);
    assert_eq!(header["height"], 20);
    assert!(header["timestamp"].as_i64().unwrap() > 1_600_000_000);
    assert_eq!(header["env"]["TERM"], "xterm-256color");
    let mut output = String::new();
    let mut resizes = Vec::new();
    let mut input = String::new();
    let mut last_t = 0.0;
    for l in lines {
        let ev: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        let arr = ev.as_array().unwrap();
        assert_eq!(arr.len(), 3);
        let t = arr[0].as_f64().unwrap();
        assert!(t >= last_t, "time goes backwards");
        last_t = t;
        match arr[1].as_str().unwrap() {
            "o" => output.push_str(arr[2].as_str().unwrap()),
            "r" => resizes.push(arr[2].as_str().unwrap().to_string()),
            "i" => input.push_str(arr[2].as_str().unwrap()),
            other => panic!("unexpected event type {other}"),
        }
    }
    // Typed input (here the EOF key) is not recorded without `--record-input`.
    assert_eq!(input, "");
    assert!(output.contains("h\u{e9}llo w\u{f6}rld\r\n"), "{output:?}");
    assert!(output.contains("winch 70x15"), "{output:?}");
    assert_eq!(resizes, vec!["70x15"]);
}

/// `--record-input` only adds to a `--record` file: alone it is a usage error (status 2).
#[test]
fn record_input_needs_record() {
    let env = TestEnv::new();
    let out = env
        .command(&["run", "--no-daemon", "--record-input", "--", "true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--record"),
        "{out:?}"
    );
}

#[test]
fn closed_stdout_pipe_ends_the_session_like_sigpipe() {
    let env = TestEnv::new();
    let mut child = env
        .command(&["run", "--", "yes"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 4];
    std::io::Read::read_exact(&mut out, &mut buf).unwrap();
    assert_eq!(&buf, b"y\r\ny");
    drop(out);
    let mut status = None;
    assert!(wait_until(DEADLINE, || {
        status = child.try_wait().unwrap();
        status.is_some()
    }));
    assert_eq!(status.unwrap().code(), Some(128 + 13));
}

/// The agent exits while a background grandchild still holds the PTY open: mpm drains what is
/// there, stops the leftover tree, and exits with the agent's status instead of hanging.
#[test]
fn grandchild_holding_the_pty_does_not_hang_mpm() {
    let env = TestEnv::new();
    let pid_file = env.path("bg.pid");
    let script = format!(
        "sleep 1000 & echo $! > {}; echo done; exit 4",
        pid_file.display()
    );
    let out = env
        .command(&["run", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let bg = read_pid(&pid_file);
    let _guard = KillOnDrop(vec![bg]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "done\r\n");
    // mpm waits for the leftover tree before it exits.
    assert!(!alive(bg), "background grandchild {bg} survived");
}

#[test]
fn without_a_terminal_the_size_comes_from_columns_and_lines() {
    let env = TestEnv::new();
    let out = env
        .command(&["run", "--", &fake_agent(), "size"])
        .env("COLUMNS", "132")
        .env("LINES", "43")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "size 132x43\r\n");
    let out = env
        .command(&["run", "--", &fake_agent(), "size"])
        .env_remove("COLUMNS")
        .env_remove("LINES")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "size 80x24\r\n");
}

/// `limits.rlimits` are applied with setrlimit in the child before exec.
#[test]
fn rlimits_from_the_config_apply_to_the_agent() {
    let env = TestEnv::new();
    let out = env
        .command(&["run", "--", "sh", "-c", "ulimit -n; ulimit -Hn"])
        .env("MPM_LIMITS__RLIMITS__NOFILE", "77")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "77\r\n77\r\n");
}

/// Issue 5: the governor stops the main session at its hard limit, the restart policy starts it
/// again (once, per `max_per_hour: 1`), and the second stop ends the run. Every stop is a
/// `resource.limit` event and the tree is gone each time.
#[test]
fn main_session_restarts_after_a_limit_stop_within_the_policy() {
    let env = TestEnv::new();
    let (out, evs) = run_with_events(
        &env,
        "events.jsonl",
        &["--no-detect"],
        &["alloc-steps:40:8:50", "sleep:0"],
        &[
            ("MPM_LIMITS__INTERVAL_MS", "100"),
            ("MPM_LIMITS__MEMORY_MB__WARNING", "60"),
            ("MPM_LIMITS__MEMORY_MB__CRITICAL", "90"),
            ("MPM_LIMITS__MEMORY_MB__HARD", "120"),
            ("MPM_LIMITS__RESTART__ENABLED", "true"),
            ("MPM_LIMITS__RESTART__MAX_PER_HOUR", "1"),
            ("MPM_LIMITS__RESTART__BACKOFF_MS", "50"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kinds: Vec<&str> = evs.iter().map(|v| v["kind"].as_str().unwrap()).collect();
    let count = |k: &str| kinds.iter().filter(|x| **x == k).count();
    assert_eq!(count("session.started"), 2, "{kinds:?}\n{stderr}");
    assert_eq!(count("resource.limit"), 2, "{kinds:?}");
    assert!(stderr.contains("restarting"), "{stderr}");
    // Killed by the governor: SIGTERM (143) — the child's status is mpm's.
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    // Restarted with the same argv (not claude: no --resume).
    let started: Vec<&serde_json::Value> = evs
        .iter()
        .filter(|v| v["kind"] == "session.started")
        .collect();
    assert_eq!(started[0]["command"], started[1]["command"]);
}

crate::both_hosts!(
    piped_stdin_partial_last_line_then_eof,
    piped_stdin_lines_reach_the_agent_and_eof_is_delivered_once,
);

/// The agent sees the user's environment (through a daemon too: the client's, not the daemon's),
/// and the client's `MPM_*` configuration layer shapes the session (here the profile's `env`).
fn environment_reaches_the_agent(host: HostKind) {
    let env = TestEnv::for_host(host);
    let out = env
        .command(&[
            "run",
            "--",
            "sh",
            "-c",
            "echo foo=$MPM_TEST_FOO bar=$mpm_test_bar; exit 5",
        ])
        .env("MPM_TEST_FOO", "from-the-user")
        // Keys of `MPM_*` variables are lowercased: this sets `profiles.claude.env.mpm_test_bar`.
        .env("MPM_PROFILES__CLAUDE__ENV__MPM_TEST_BAR", "from-the-config")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{text}");
    assert_eq!(text, "foo=from-the-user bar=from-the-config\r\n");
}

/// Output into a pipe is exactly what the PTY produced: every line, no redraw, in both hosts.
fn output_into_a_pipe_is_complete(host: HostKind) {
    let env = TestEnv::for_host(host);
    let out = env
        .command(&["run", "--", "seq", "1", "50000"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let expected: String = (1..=50000).map(|i| format!("{i}\r\n")).collect();
    assert!(
        out.stdout == expected.as_bytes(),
        "{} bytes, want {}; starts {:?}",
        out.stdout.len(),
        expected.len(),
        String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(80)])
    );
}

crate::both_hosts!(
    environment_reaches_the_agent,
    output_into_a_pipe_is_complete
);

/// The PTY's tail is not lost when the reader stalls past mpm's drain limits as the agent exits
/// (issue 12 item 6): 70 KB (more than a pipe holds) written in raw mode, nobody reading until the
/// agent is gone and the drain cap (5 s) has passed, then every byte arrives.
fn stalled_reader_gets_the_whole_tail(host: HostKind) {
    let env = TestEnv::for_host(host);
    let file = env.path("70k");
    let body: Vec<u8> = (0..70_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    std::fs::write(&file, &body).unwrap();
    let pidfile = env.path("agent.pid");
    let script = format!(
        "echo $$ > {}; stty raw -echo; cat {}",
        pidfile.display(),
        file.display()
    );
    let mut child = env
        .command(&["run", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let agent = read_pid(&pidfile);
    assert!(
        wait_until(DEADLINE, || !alive(agent)),
        "the agent never ended"
    );
    // The stall itself (the scenario, not a synchronisation): longer than mpm's drain cap.
    std::thread::sleep(mpm::pty::DRAIN_MAX + std::time::Duration::from_secs(1));
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut stdout, &mut got).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert_eq!(got.len(), body.len(), "tail lost");
    assert!(got == body, "tail differs");
}

crate::both_hosts!(stalled_reader_gets_the_whole_tail);
