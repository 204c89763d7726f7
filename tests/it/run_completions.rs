//! `mpm completions bash|zsh|fish` and `mpm man`, generated from the clap definitions.

use crate::common;

use common::*;

fn stdout_of(env: &TestEnv, args: &[&str]) -> String {
    let out = env.command(args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "mpm {args:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn completions_and_man_page_come_from_the_command_definitions() {
    let env = TestEnv::new();
    let bash = stdout_of(&env, &["completions", "bash"]);
    assert!(
        bash.contains("_mpm()") && bash.contains("--detach-keys"),
        "{bash}"
    );
    let zsh = stdout_of(&env, &["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef mpm"), "{zsh}");
    let fish = stdout_of(&env, &["completions", "fish"]);
    assert!(
        fish.contains("complete -c mpm") && fish.contains("attach"),
        "{fish}"
    );
    let man = stdout_of(&env, &["man"]);
    assert!(man.contains(".TH mpm 1"), "{man}");
    assert!(
        man.contains("completions") && man.contains("status"),
        "{man}"
    );
    let out = env.command(&["completions", "tcsh"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}
