//! Helpers for the loop tests (feedback, budgets, `mpm delegations`, `mpm top`, event hooks):
//! a config file whose agents run the fake agent, and `mpm run` with an events file.
#![allow(dead_code)]

use std::process::Stdio;

use crate::common::{TestEnv, fake_agent};

/// Write `body` (YAML) as the test's config file; returns its path.
pub(crate) fn write_config(env: &TestEnv, body: &str) -> String {
    let p = env.path("mpm.yaml");
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

/// A YAML flow list: the fake agent and `steps` (for `argv:`).
pub(crate) fn fake_argv(steps: &[&str]) -> String {
    let mut v = vec!["python3".to_string(), fake_agent()];
    v.extend(steps.iter().map(|s| s.to_string()));
    serde_json::to_string(&v).unwrap()
}

/// `mpm --config CFG run --no-daemon --events-file EV [flags] -- fake_agent STEPS` with stdin
/// closed; returns the output and the parsed events.
pub(crate) fn run_session(
    env: &TestEnv,
    cfg: &str,
    flags: &[&str],
    steps: &[&str],
    vars: &[(&str, &str)],
) -> (std::process::Output, Vec<serde_json::Value>) {
    let events = env.path("events.jsonl");
    let _ = std::fs::remove_file(&events);
    let fake = fake_agent();
    let mut args = vec![
        "--config",
        cfg,
        "run",
        "--no-daemon",
        "--events-file",
        events.to_str().unwrap(),
    ];
    args.extend_from_slice(flags);
    args.push("--");
    args.push(&fake);
    args.extend_from_slice(steps);
    let out = env
        .command(&args)
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = std::fs::read_to_string(&events).unwrap_or_default();
    let parsed = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out, parsed)
}

/// Events of one kind.
pub(crate) fn of_kind<'a>(
    events: &'a [serde_json::Value],
    kind: &str,
) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["kind"] == kind).collect()
}

/// `mpm --config CFG ARGS...` (no terminal): (exit code, stdout, stderr).
pub(crate) fn mpm_cmd(env: &TestEnv, cfg: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["--config", cfg];
    all.extend_from_slice(args);
    let out = env.command(&all).stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
