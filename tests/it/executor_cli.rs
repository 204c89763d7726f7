//! `mpm agents list [--json]` through the real binary, with a user config overriding a built-in and
//! adding an agent.

use std::process::Command;

fn mpm(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mpm"))
        .args(args)
        .current_dir(dir)
        .env("XDG_CONFIG_HOME", dir.join("xdg-config"))
        .env("XDG_STATE_HOME", dir.join("xdg-state"))
        .env("HOME", dir)
        .output()
        .expect("run mpm");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn agents_list_shows_builtins_overrides_and_additions() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("mpm.yaml");
    std::fs::write(
        &cfg,
        "agents:\n  qa:\n    timeout_secs: 42\n  reviewer:\n    aliases: [\"Code Reviewer\"]\n    description: Reviews diffs\n    argv: [\"my-cli\", \"--prompt\", \"{task}\"]\n    max_parallel: 1\n",
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let (code, out, err) = mpm(dir.path(), &["--config", cfg, "agents", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let agents = v.as_array().unwrap();
    let by = |n: &str| agents.iter().find(|a| a["name"] == n).unwrap().clone();
    assert_eq!(agents.len(), 9);
    let qa = by("qa");
    assert_eq!(qa["timeout_secs"], 42);
    assert!(
        qa["aliases"]
            .as_array()
            .unwrap()
            .contains(&"Quality Assurance".into())
    );
    assert_eq!(qa["argv"][0], "claude");
    let r = by("reviewer");
    assert_eq!(
        r["argv"],
        serde_json::json!(["my-cli", "--prompt", "{task}"])
    );
    assert_eq!(r["max_parallel"], 1);
    assert_eq!(r["aliases"][0], "Code Reviewer");

    let (code, text, _) = mpm(dir.path(), &["--config", cfg, "agents", "list"]);
    assert_eq!(code, 0);
    assert!(text.contains("reviewer") && text.contains("Code Reviewer"));
    assert!(text.contains(r#"["my-cli","--prompt","{task}"]"#));
}

#[test]
fn agents_list_flags_an_invalid_template() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("mpm.yaml");
    std::fs::write(&cfg, "agents:\n  bad:\n    argv: [\"{task}\"]\n").unwrap();
    let (code, text, err) = mpm(
        dir.path(),
        &["--config", cfg.to_str().unwrap(), "agents", "list"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(text.contains("INVALID"), "{text}");
}
