//! A cloned project's `./.mpm/config.yaml` that chooses commands is ignored until `mpm trust`,
//! trusted as it was, and ignored again once changed (the real binary, real files).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::common::{TestEnv, mpm_bin};

/// `mpm ARGS` run in `cwd` with `env`'s XDG folders: (status, stdout, stderr).
fn mpm(env: &TestEnv, cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let mut c = Command::new(mpm_bin());
    crate::common::clear_mpm_vars(&mut c);
    let out = c
        .args(args)
        .envs(env.vars())
        .current_dir(cwd)
        .output()
        .expect("run mpm");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The value and origin of one key in `mpm config show --json`.
fn shown(env: &TestEnv, cwd: &Path, key: &str) -> (serde_json::Value, String, String) {
    let (code, out, err) = mpm(env, cwd, &["config", "show", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let entry = &v[key];
    (
        entry["value"].clone(),
        entry["origin"].as_str().unwrap_or("").to_string(),
        err,
    )
}

#[test]
fn untrusted_project_config_is_ignored_then_trusted_then_changed() {
    let env = TestEnv::new();
    let project = env.path("project");
    std::fs::create_dir_all(project.join(".mpm")).unwrap();
    let file = project.join(".mpm/config.yaml");
    std::fs::write(
        &file,
        "profiles:\n  claude:\n    command: [sh, -c, 'echo pwned']\nexecutor:\n  max_parallel: 3\n",
    )
    .unwrap();

    // Untrusted: the whole file is skipped, with one line saying why.
    let (value, origin, err) = shown(&env, &project, "profiles.claude.command");
    assert_eq!(value, serde_json::json!(["claude"]));
    assert_eq!(origin, "default");
    let notices: Vec<&str> = err.lines().filter(|l| l.contains("ignoring")).collect();
    assert_eq!(notices.len(), 1, "{err}");
    assert!(
        notices[0].contains("profiles.claude.command") && notices[0].contains("mpm trust"),
        "{err}"
    );
    let (value, _, _) = shown(&env, &project, "executor.max_parallel");
    assert_eq!(value, serde_json::json!(4));

    // Trusted: applies.
    let (code, out, err) = mpm(&env, &project, &["trust"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("trusted "), "{out}");
    let (value, origin, err) = shown(&env, &project, "profiles.claude.command");
    assert_eq!(value, serde_json::json!(["sh", "-c", "echo pwned"]));
    assert!(origin.ends_with(".mpm/config.yaml"), "{origin}");
    assert!(!err.contains("ignoring"), "{err}");
    let record = env.path("state/mpm/trusted.json");
    assert_eq!(
        std::fs::metadata(&record).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (code, out, _) = mpm(&env, &project, &["trust", "--list"]);
    assert_eq!(code, 0);
    assert!(out.contains("trusted"), "{out}");

    // Changed: ignored again until trusted again.
    std::fs::write(
        &file,
        "profiles:\n  claude:\n    command: [sh, -c, 'echo worse']\n",
    )
    .unwrap();
    let (value, _, err) = shown(&env, &project, "profiles.claude.command");
    assert_eq!(value, serde_json::json!(["claude"]));
    assert!(err.contains("changed since it was trusted"), "{err}");
    let (_, out, _) = mpm(&env, &project, &["trust", "--list"]);
    assert!(out.contains("changed"), "{out}");

    // Revoked: gone from the list.
    let (code, out, _) = mpm(&env, &project, &["trust", "--revoke", "."]);
    assert_eq!(code, 0);
    assert!(out.starts_with("revoked"), "{out}");
    let (_, out, _) = mpm(&env, &project, &["trust", "--list"]);
    assert!(out.trim().is_empty(), "{out}");
}

#[test]
fn harmless_project_config_applies_without_trust_and_nothing_to_trust_is_an_error() {
    let env = TestEnv::new();
    let project = env.path("project");
    std::fs::create_dir_all(project.join(".mpm")).unwrap();
    std::fs::write(
        project.join(".mpm/config.yaml"),
        "executor:\n  max_parallel: 3\n",
    )
    .unwrap();
    let (value, origin, err) = shown(&env, &project, "executor.max_parallel");
    assert_eq!(value, serde_json::json!(3));
    assert!(origin.ends_with(".mpm/config.yaml"), "{origin}");
    assert!(!err.contains("ignoring"), "{err}");
    let empty = env.path("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (code, _, err) = mpm(&env, &empty, &["trust"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no .mpm/config.yaml"), "{err}");
}
