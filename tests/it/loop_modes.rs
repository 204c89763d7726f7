//! Orchestration modes (`--mode`) and `mpm prompt`, through the real binary.

use std::os::unix::fs::PermissionsExt as _;

use crate::common::{HostKind, TestEnv, fake_agent};
use crate::loop_support::*;

#[test]
fn prompt_is_generated_from_the_registry() {
    let env = TestEnv::new();
    let cfg = write_config(
        &env,
        "agents:\n  reviewer: {aliases: [\"Code Reviewer\"], description: Reviews diffs}\n",
    );
    let (code, out, err) = mpm_cmd(&env, &cfg, &["prompt"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("- Reviewer: Reviews diffs (also: Code Reviewer)"),
        "{out}"
    );
    assert!(out.contains("- Engineer: Implements code changes"), "{out}");
    assert!(
        out.contains("[mpm] Results of the delegations"),
        "claude feeds back: {out}"
    );
    // A profile without feedback says results stay in files.
    let (code, out, _) = mpm_cmd(&env, &cfg, &["--profile", "codex", "prompt"]);
    assert_eq!(code, 0);
    assert!(out.contains("Results are not sent back"), "{out}");
    let (code, _, err) = mpm_cmd(&env, &cfg, &["--profile", "nope", "prompt"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn observe_records_without_running_and_passthrough_detects_nothing() {
    let env = TestEnv::new();
    let cfg = write_config(
        &env,
        &format!(
            "agents:\n  engineer: {{argv: {}}}\n",
            fake_argv(&["print:ran {task}"])
        ),
    );
    let steps = [
        "print:Engineer Agent: implement fib",
        "print:TODO: write docs",
    ];
    let (out, events) = run_session(&env, &cfg, &["--mode", "observe"], &steps, &[]);
    assert_eq!(out.status.code(), Some(0));
    let det = of_kind(&events, "detection");
    assert!(
        det.iter().any(|d| d["category"] == "delegation"),
        "{events:?}"
    );
    assert!(
        of_kind(&events, "delegation.queued").is_empty(),
        "{events:?}"
    );
    assert!(of_kind(&events, "delegation.finished").is_empty());

    let (out, events) = run_session(&env, &cfg, &["--mode", "passthrough"], &steps, &[]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(of_kind(&events, "session.started").len(), 1, "{events:?}");
    assert!(of_kind(&events, "detection").is_empty(), "{events:?}");

    let (out, _) = run_session(&env, &cfg, &["--mode", "sideways"], &steps, &[]);
    assert_eq!(out.status.code(), Some(2), "a bad mode is a usage error");
}

#[test]
fn inject_gives_claude_the_protocol_as_a_system_prompt() {
    let env = TestEnv::new();
    let (claude, args) = argv_recorder(&env);
    let cfg = write_config(&env, "orchestration: {mode: inject}\n");
    run_hosted(&env, &cfg, &[], &[claude.to_str().unwrap(), "--model", "x"]);
    let text = std::fs::read_to_string(&args).unwrap();
    let argv: Vec<&str> = text.split('\0').collect();
    let i = argv
        .iter()
        .position(|a| *a == "--append-system-prompt")
        .unwrap_or_else(|| panic!("no system prompt in {argv:?}"));
    assert!(
        argv[i + 1].contains("# Delegating work through mpm"),
        "{argv:?}"
    );
    assert!(argv[..i].contains(&"--model"));
    // Intercept (the default) leaves the argv alone.
    let cfg = write_config(&env, "orchestration: {mode: intercept}\n");
    run_hosted(&env, &cfg, &[], &[claude.to_str().unwrap()]);
    let text = std::fs::read_to_string(&args).unwrap();
    assert!(!text.contains("--append-system-prompt"), "{text:?}");
}

/// A stand-in named `claude` in `<test>/bin` that records its argv, NUL-separated, in `<test>/args`:
/// (the stand-in, the args file).
fn argv_recorder(env: &TestEnv) -> (std::path::PathBuf, std::path::PathBuf) {
    let bin = env.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let args = env.path("args");
    let claude = bin.join("claude");
    std::fs::write(
        &claude,
        format!("#!/bin/sh\nprintf '%s\\0' \"$@\" > {}\n", args.display()),
    )
    .unwrap();
    std::fs::set_permissions(&claude, std::fs::Permissions::from_mode(0o755)).unwrap();
    (claude, args)
}

/// `mpm run` with this host (no `--no-daemon` for a daemon), stdin closed; it must exit 0. The
/// parsed events.
fn run_hosted(env: &TestEnv, cfg: &str, flags: &[&str], cmd: &[&str]) -> Vec<serde_json::Value> {
    run_hosted_with(env, &[], cfg, flags, cmd)
}

/// [`run_hosted`] with global options (`--patterns`) before `--config`.
fn run_hosted_with(
    env: &TestEnv,
    global: &[&str],
    cfg: &str,
    flags: &[&str],
    cmd: &[&str],
) -> Vec<serde_json::Value> {
    let events = env.path("events.jsonl");
    let _ = std::fs::remove_file(&events);
    let mut args = global.to_vec();
    args.extend(["--config", cfg, "run"]);
    if env.host() == HostKind::InProcess {
        args.push("--no-daemon");
    }
    args.extend(["--events-file", events.to_str().unwrap()]);
    args.extend_from_slice(flags);
    args.push("--");
    args.extend_from_slice(cmd);
    let out = env
        .command(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{flags:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(&events)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every `mpm run` flag that changes the session (`--mode`, `--no-exec`, `--no-detect`,
/// `--events-file`, `--patterns`) acts the same when a daemon hosts it.
fn run_flags_reach_the_session(host: HostKind) {
    let env = TestEnv::for_host(host);
    let cfg = write_config(
        &env,
        &format!(
            "executor: {{on_session_exit: wait}}\nagents:\n  engineer: {{argv: {}}}\n",
            fake_argv(&["print:ran {task}"])
        ),
    );
    let fake = fake_agent();
    let steps = [
        fake.as_str(),
        "print:Engineer Agent: implement fib",
        "print:CUSTOM-MARK here",
    ];
    let ran = |evs: &[serde_json::Value]| !of_kind(evs, "delegation.finished").is_empty();
    let detected = |evs: &[serde_json::Value]| !of_kind(evs, "detection").is_empty();
    // intercept (the default): detected and run. The daemon appends to the events file too.
    let evs = run_hosted(&env, &cfg, &[], &steps);
    assert!(ran(&evs), "{host:?}: {evs:?}");
    let daemon_state = env.path("daemon-state").display().to_string();
    let result = of_kind(&evs, "delegation.finished")[0]["result_path"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert_eq!(
        result.starts_with(&daemon_state),
        host == HostKind::Daemon,
        "hosted where? {result}"
    );
    for flags in [&["--mode", "observe"][..], &["--no-exec"]] {
        let evs = run_hosted(&env, &cfg, flags, &steps);
        assert!(detected(&evs) && !ran(&evs), "{host:?} {flags:?}: {evs:?}");
    }
    for flags in [&["--mode", "passthrough"][..], &["--no-detect"]] {
        let evs = run_hosted(&env, &cfg, flags, &steps);
        assert!(
            !detected(&evs) && of_kind(&evs, "session.started").len() == 1,
            "{host:?} {flags:?}: {evs:?}"
        );
    }
    // --patterns: an extra pattern file is used by the hosted session.
    let pat = env.path("custom.yaml");
    std::fs::write(
        &pat,
        "patterns:\n  - id: custom-mark\n    category: custom\n    regex: '^CUSTOM-MARK (?P<title>.+)'\n",
    )
    .unwrap();
    let evs = run_hosted_with(
        &env,
        &["--patterns", pat.to_str().unwrap()],
        &cfg,
        &[],
        &steps,
    );
    assert!(
        evs.iter().any(|e| e["pattern"] == "custom-mark"),
        "{host:?}: {evs:?}"
    );

    // --mode inject: claude gets the protocol as a system prompt in either host.
    let (claude, args_file) = argv_recorder(&env);
    run_hosted(
        &env,
        &cfg,
        &["--mode", "inject"],
        &[claude.to_str().unwrap()],
    );
    let text = std::fs::read_to_string(&args_file).unwrap();
    assert!(
        text.contains("--append-system-prompt\0# Delegating work through mpm"),
        "{host:?}: {text:?}"
    );
    run_hosted(
        &env,
        &cfg,
        &["--mode", "intercept"],
        &[claude.to_str().unwrap()],
    );
    let text = std::fs::read_to_string(&args_file).unwrap();
    assert!(
        !text.contains("--append-system-prompt"),
        "{host:?}: {text:?}"
    );
}

crate::both_hosts!(run_flags_reach_the_session);
