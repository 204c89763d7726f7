//! `mpm profiles list|show NAME [--json]` through the real binary: every built-in profile, a
//! user profile from a config file, which agents use which profile, and whether the CLI is
//! installed (a stand-in program on the profile's `PATH`, with its `--version`).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

/// Run mpm in `cwd` with a private HOME / XDG dirs and a PATH without the real CLIs.
fn mpm(home: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mpm"));
    crate::common::clear_mpm_vars(&mut c);
    c.args(args)
        .current_dir(home)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_STATE_HOME", home.join("state"))
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("mpm runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn setup() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let bin = home.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let prog = bin.join("my-cli");
    std::fs::write(&prog, "#!/bin/sh\necho \"my-cli 1.2.3\"\n").unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = home.path().join("config/mpm");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(
        cfg.join("config.yaml"),
        format!(
            "profiles:\n  mine:\n    description: my own CLI\n    command: [my-cli]\n    env: {{PATH: '{}:/usr/bin:/bin'}}\n    headless: [my-cli, --ask, '{{task}}']\n    headless_output: text\nagents:\n  qa:\n    profile: mine\n  research:\n    profile: codex\n",
            bin.display()
        ),
    )
    .unwrap();
    home
}

#[test]
fn list_shows_every_profile_with_its_headless_form_and_install_state() {
    let home = setup();
    let out = mpm(home.path(), &["profiles", "list", "--json"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = v.as_array().unwrap();
    let by_name = |n: &str| {
        list.iter()
            .find(|p| p["name"] == n)
            .unwrap_or_else(|| panic!("no profile {n}: {v:#}"))
    };
    for n in [
        "claude", "codex", "gemini", "aider", "opencode", "shell", "mine",
    ] {
        by_name(n);
    }
    let claude = by_name("claude");
    assert_eq!(claude["active"], true);
    assert_eq!(claude["default_for_subagents"], true);
    assert_eq!(claude["headless_output"], "claude");
    assert!(
        claude["agents"]
            .as_array()
            .unwrap()
            .contains(&"engineer".into())
    );
    let codex = by_name("codex");
    assert_eq!(
        codex["session_command"],
        serde_json::json!(["codex", "--no-daemon"])
    );
    assert_eq!(codex["headless"][1], "exec");
    assert_eq!(codex["agents"], serde_json::json!(["research"]));
    // Not on this PATH: said so, with the reason.
    assert_eq!(codex["installed"], serde_json::Value::Null);
    assert!(
        codex["not_installed"]
            .as_str()
            .unwrap()
            .contains("not found")
    );
    let mine = by_name("mine");
    assert!(
        mine["installed"].as_str().unwrap().ends_with("/bin/my-cli"),
        "{mine}"
    );
    assert_eq!(mine["agents"], serde_json::json!(["qa"]));
    assert_eq!(by_name("shell")["headless"], serde_json::json!([]));
    assert!(mine.get("version").is_none(), "list does not run the CLIs");

    let out = mpm(home.path(), &["profiles", "list"]);
    assert_eq!(out.status.code(), Some(0));
    let t = text(&out.stdout);
    assert!(
        t.contains("claude  (active for `mpm run`, default for sub-agents)"),
        "{t}"
    );
    assert!(t.contains("(none: cannot run sub-agents)"), "{t}");
}

#[test]
fn show_gives_one_profile_with_its_version_and_unknown_is_a_usage_error() {
    let home = setup();
    let out = mpm(home.path(), &["profiles", "show", "mine", "--json"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], "my-cli 1.2.3");
    assert_eq!(v["description"], "my own CLI");

    let out = mpm(home.path(), &["profiles", "show", "gemini"]);
    assert_eq!(out.status.code(), Some(0));
    let t = text(&out.stdout);
    for want in [
        "output:       gemini",
        "role prompt:  before the task",
        "installed:    no: command not found: gemini",
        "exact source: ~/.gemini/tmp/<project>/chats/session-*-<id>.jsonl (mpm adds --session-id)",
    ] {
        assert!(t.contains(want), "{want:?} in\n{t}");
    }
    let out = mpm(home.path(), &["profiles", "show", "opencode"]);
    let t = text(&out.stdout);
    assert!(
        t.contains("exact source: $XDG_DATA_HOME/opencode/opencode.db"),
        "{t}"
    );
    let out = mpm(home.path(), &["profiles", "show", "shell"]);
    let t = text(&out.stdout);
    assert!(t.contains("exact source: none (the screen only)"), "{t}");

    let out = mpm(home.path(), &["profiles", "show", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    let e = text(&out.stderr);
    assert!(
        e.contains("unknown profile \"nope\"") && e.contains("codex"),
        "{e}"
    );
}
