//! Spawn-time limits: a child started with `apply_rlimits` in its pre_exec hook shows them in
//! `/proc/<pid>/limits`.

use crate::governor_support;

use governor_support::*;
use mpm::config::Rlimits;

/// (soft, hard) of the `/proc/<pid>/limits` line starting with `name`.
fn limit(pid: u32, name: &str) -> Option<(String, String)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with(name))?;
    let mut it = line[name.len()..].split_whitespace();
    Some((it.next()?.to_string(), it.next()?.to_string()))
}

#[test]
fn rlimits_apply_to_the_spawned_child() {
    let r = Rlimits {
        nofile: Some(256),
        core_mb: Some(0),
        address_space_mb: Some(8192),
    };
    let tree = Tree::spawn_argv(&["sleep".into(), "30".into()], Some(r));
    let pid = tree.pid();
    let s = |a: &str, b: &str| Some((a.to_string(), b.to_string()));
    assert_eq!(limit(pid, "Max open files"), s("256", "256"));
    assert_eq!(limit(pid, "Max core file size"), s("0", "0"));
    let bytes = (8192u64 * 1024 * 1024).to_string();
    assert_eq!(limit(pid, "Max address space"), s(&bytes, &bytes));
}

#[test]
fn unset_rlimits_leave_the_inherited_values() {
    let mine = limit(std::process::id(), "Max open files");
    let tree = Tree::spawn_argv(&["sleep".into(), "30".into()], Some(Rlimits::default()));
    assert_eq!(limit(tree.pid(), "Max open files"), mine);
}
