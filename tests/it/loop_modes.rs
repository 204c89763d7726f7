//! Orchestration modes (`--mode`) and `mpm prompt`, through the real binary.

use std::os::unix::fs::PermissionsExt as _;

use crate::common::TestEnv;
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
    let bin = env.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    // A stand-in named `claude` that records its argv, one per line, NUL-separated.
    let args = env.path("args");
    let claude = bin.join("claude");
    std::fs::write(
        &claude,
        format!("#!/bin/sh\nprintf '%s\\0' \"$@\" > {}\n", args.display()),
    )
    .unwrap();
    std::fs::set_permissions(&claude, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = write_config(&env, "orchestration: {mode: inject}\n");
    let out = env
        .command(&[
            "--config",
            &cfg,
            "run",
            "--no-daemon",
            "--",
            claude.to_str().unwrap(),
            "--model",
            "x",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    env.command(&[
        "--config",
        &cfg,
        "run",
        "--no-daemon",
        "--",
        claude.to_str().unwrap(),
    ])
    .stdin(std::process::Stdio::null())
    .output()
    .unwrap();
    let text = std::fs::read_to_string(&args).unwrap();
    assert!(!text.contains("--append-system-prompt"), "{text:?}");
}
