//! `mpm patterns check|list` through the real binary.

use std::path::Path;
use std::process::{Command, Output};

/// Run mpm in `cwd` with a private HOME / XDG_CONFIG_HOME (so the user's files never leak in).
fn mpm(cwd: &Path, home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mpm"))
        .args(args)
        .current_dir(cwd)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_STATE_HOME", home.join("state"))
        .env_remove("MPM_CONFIG")
        .output()
        .expect("mpm runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn builtin_packs_check_clean() {
    let home = tempfile::tempdir().unwrap();
    let out = mpm(home.path(), home.path(), &["patterns", "check"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn bad_files_exit_2_with_one_line_per_problem() {
    let home = tempfile::tempdir().unwrap();
    let bad = home.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "patterns:\n  - id: a\n    category: x\n    regex: '(oops'\n  - id: b\n    category: t\n    regex: '^B: (?P<title>.+)'\n    examples:\n      match: ['C: nope']\n",
    )
    .unwrap();
    let yaml = home.path().join("yaml.yaml");
    std::fs::write(&yaml, "patterns:\n  - id: a\n    regx: x\n").unwrap();
    let out = mpm(
        home.path(),
        home.path(),
        &[
            "patterns",
            "check",
            bad.to_str().unwrap(),
            yaml.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    let b = bad.display().to_string();
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "{b}:2:9: pattern a: invalid regex: unclosed group"
        ))),
        "{err}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "{b}:5:9: pattern b: example \"C: nope\" should match"
        ))),
        "{err}"
    );
    let y = yaml.display().to_string();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{y}:3:5: unknown field `regx`"))),
        "{err}"
    );
}

#[test]
fn list_shows_sources_and_honours_every_layer() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // $XDG_CONFIG_HOME/mpm/patterns, ./.mpm/patterns, --patterns: later ones override by id.
    let user = home.path().join("config/mpm/patterns");
    std::fs::create_dir_all(&user).unwrap();
    std::fs::write(
        user.join("u.yaml"),
        "patterns:\n  - id: deploy\n    category: deploy\n    regex: '^DEPLOY: (?P<title>.+)'\n  - id: error-npm\n    enabled: false\n",
    )
    .unwrap();
    let project = work.path().join(".mpm/patterns");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("p.yaml"),
        "patterns:\n  - id: deploy\n    category: release\n    regex: '^RELEASE: (?P<title>.+)'\n",
    )
    .unwrap();
    let flag = work.path().join("flag.yaml");
    std::fs::write(
        &flag,
        "patterns:\n  - id: ticket-bracket\n    enabled: false\n",
    )
    .unwrap();

    let out = mpm(
        work.path(),
        home.path(),
        &[
            "--patterns",
            flag.to_str().unwrap(),
            "patterns",
            "list",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let rows: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let row = |id: &str| rows.iter().find(|r| r["id"] == id).cloned();
    let tk = row("ticket-keyword").unwrap();
    assert_eq!(tk["source"], "builtin:patterns/tickets.yaml");
    assert_eq!(tk["category"], "ticket");
    let deploy = row("deploy").unwrap();
    assert_eq!(deploy["category"], "release");
    assert!(
        deploy["source"]
            .as_str()
            .unwrap()
            .ends_with(".mpm/patterns/p.yaml")
    );
    // Disabled ones are not listed (only with --all).
    assert!(row("error-npm").is_none());
    assert!(row("ticket-bracket").is_none());

    let out = mpm(
        work.path(),
        home.path(),
        &["--patterns", flag.to_str().unwrap(), "patterns", "list"],
    );
    let table = text(&out.stdout);
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains("delegation-bold-agent"), "{table}");
    assert!(
        table.contains("builtin:patterns/delegations.yaml"),
        "{table}"
    );

    // check with no paths checks the same configured set, which is valid.
    let out = mpm(
        work.path(),
        home.path(),
        &["--patterns", flag.to_str().unwrap(), "patterns", "check"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn list_fails_with_exit_2_on_a_broken_configured_file() {
    let home = tempfile::tempdir().unwrap();
    let bad = home.path().join("bad.yaml");
    std::fs::write(&bad, "patterns: [").unwrap();
    let out = mpm(
        home.path(),
        home.path(),
        &["--patterns", bad.to_str().unwrap(), "patterns", "list"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&format!("{}:1:", bad.display())), "{err}");
}
