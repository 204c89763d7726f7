//! `isolation: worktree`: one git worktree and branch per delegation (local backend).

use std::path::{Path, PathBuf};
use std::process::Command;

use mpm::config::{AgentConfig, Isolation};
use mpm::events::EventBody;

use crate::executor_support::{Harness, config, delegation_id, reason, status};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A repository with one commit: `shared.txt` = "base\n", `.env` ignored (and present).
pub(crate) fn init_repo(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("shared.txt"), "base\n").unwrap();
    std::fs::write(dir.join(".gitignore"), ".env\n").unwrap();
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", "base"]);
    std::fs::write(dir.join(".env"), "SECRET=from-env-file\n").unwrap();
}

/// An agent running `sh -c SCRIPT sh {task}` in `cwd`, isolated in worktrees.
fn isolated_agent(script: &str, cwd: &Path) -> AgentConfig {
    AgentConfig {
        argv: vec![
            "sh".into(),
            "-c".into(),
            script.into(),
            "sh".into(),
            "{task}".into(),
        ],
        cwd: Some(cwd.to_path_buf()),
        isolation: Isolation::Worktree,
        ..AgentConfig::default()
    }
}

fn output_path(e: &mpm::events::Event) -> PathBuf {
    match &e.body {
        EventBody::DelegationFinished { output_path, .. } => {
            PathBuf::from(output_path.clone().expect("an output path"))
        }
        _ => panic!("not a finished event"),
    }
}

#[test]
fn parallel_delegations_do_not_see_each_others_changes_and_branches_carry_commits() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    init_repo(&repo);
    let marks = tmp.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    // Each appends its name to the same file, then waits until both have written before reading
    // the file back: in one shared checkout each would see both lines.
    let script = format!(
        r#"echo "$1" >> shared.txt
touch "{marks}/$1"
while [ "$(ls "{marks}" | wc -l)" -lt 2 ]; do sleep 0.02; done
echo "sees: $(tr '\n' ' ' < shared.txt)"
echo "env: $(cat .env)"
[ -f setup-ran ] && echo "setup ran"
if [ "$1" = alpha ]; then git add shared.txt && git -c user.name=a -c user.email=a@a commit -qm "alpha edit"; fi"#,
        marks = marks.display()
    );
    let mut cfg = config(vec![("iso", isolated_agent(&script, &repo))]);
    cfg.worktree.retention_secs = 0;
    cfg.worktree.include = vec![".env".into()];
    cfg.worktree.setup = vec![vec!["touch".into(), "setup-ran".into()]];
    cfg.worktree.teardown = vec![vec!["rm".into(), "-f".into(), "setup-ran".into()]];
    let mut h = Harness::start(&cfg);
    h.submit("iso", "alpha");
    h.submit("iso", "beta");
    h.until_finished(2);
    for (task, other) in [("alpha", "beta"), ("beta", "alpha")] {
        let fin = h.finished(task);
        assert_eq!(
            status(fin),
            "success",
            "{task}: {}\n{}",
            reason(fin),
            h.dump()
        );
        let id = delegation_id(fin).to_string();
        let stdout = std::fs::read_to_string(h.out().join(format!("{id}.stdout"))).unwrap();
        assert!(
            stdout.contains(&format!("sees: base {task} \n")),
            "{stdout}"
        );
        assert!(!stdout.contains(other), "{task} saw {other}: {stdout}");
        assert!(stdout.contains("env: SECRET=from-env-file"), "{stdout}");
        assert!(stdout.contains("setup ran"), "{stdout}");
        // The branch carries the change, as a commit on top of the base.
        let branch = format!("mpm/iso-{}", &id[..8]);
        let log = git(&repo, &["log", "--format=%s", &format!("main..{branch}")]);
        let expected = if task == "alpha" {
            "alpha edit".to_string()
        } else {
            format!("mpm: iso delegation {}", &id[..8])
        };
        assert_eq!(log.trim(), expected, "{branch}");
        let content = git(&repo, &["show", &format!("{branch}:shared.txt")]);
        assert_eq!(content, format!("base\n{task}\n"));
        // Teardown ran before the commit; the ignored .env never entered the branch.
        let files = git(&repo, &["ls-tree", "--name-only", &branch]);
        assert!(
            !files.contains("setup-ran") && !files.contains(".env\n"),
            "{files}"
        );
        // The result file records the branch and the diff stat.
        let result = std::fs::read_to_string(output_path(fin)).unwrap();
        assert!(
            result.contains(&format!("`{branch}` (1 commit on")),
            "{result}"
        );
        assert!(result.contains("shared.txt | 1 +"), "{result}");
    }
    // The session's checkout is untouched, and retention 0 removed both worktrees.
    assert_eq!(
        std::fs::read_to_string(repo.join("shared.txt")).unwrap(),
        "base\n"
    );
    let worktrees = git(&repo, &["worktree", "list", "--porcelain"]);
    assert_eq!(worktrees.matches("worktree ").count(), 1, "{worktrees}");
}

#[test]
fn a_delegation_without_changes_leaves_no_branch() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    init_repo(&repo);
    let mut cfg = config(vec![("iso", isolated_agent("echo read-only: $1", &repo))]);
    cfg.worktree.retention_secs = 3600;
    let mut h = Harness::start(&cfg);
    h.submit("iso", "look around");
    h.until_finished(1);
    let fin = h.finished("look around");
    assert_eq!(status(fin), "success", "{}", h.dump());
    assert_eq!(git(&repo, &["branch", "--list", "mpm/*"]).trim(), "");
    let result = std::fs::read_to_string(output_path(fin)).unwrap();
    assert!(result.contains("no changes (branch deleted)"), "{result}");
    // Even with a long retention, an empty worktree is removed at once.
    let worktrees = git(&repo, &["worktree", "list", "--porcelain"]);
    assert_eq!(worktrees.matches("worktree ").count(), 1, "{worktrees}");
}

#[test]
fn retention_keeps_the_worktree_until_the_next_sweep() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    init_repo(&repo);
    let wt_root = tmp.path().join("wts");
    let mut cfg = config(vec![(
        "iso",
        isolated_agent("echo \"$1\" > new.txt", &repo),
    )]);
    cfg.worktree.retention_secs = 3600;
    cfg.worktree.dir = Some(wt_root.clone());
    let mut h = Harness::start(&cfg);
    h.submit("iso", "first");
    h.until_finished(1);
    let id = delegation_id(h.finished("first")).to_string();
    let kept = wt_root.join(format!("iso-{}", &id[..8]));
    assert!(kept.join("new.txt").is_file(), "kept for inspection");
    // Past its retention, the sweep removes the worktree; the branch stays.
    mpm::worktree::sweep(&wt_root, std::time::Duration::ZERO);
    assert!(!kept.exists());
    let branches = git(&repo, &["branch", "--list", "mpm/*"]);
    assert!(
        branches.contains(&format!("mpm/iso-{}", &id[..8])),
        "{branches}"
    );
}

#[test]
fn not_a_git_repository_rejects_the_delegation_instead_of_running_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let mut h = Harness::start(&config(vec![(
        "iso",
        isolated_agent("touch ran-here", &plain),
    )]));
    h.submit("iso", "do it");
    h.until_finished(1);
    let fin = h.finished("do it");
    assert_eq!(status(fin), "rejected", "{}", h.dump());
    assert!(
        reason(fin).contains("needs a git repository"),
        "{}",
        reason(fin)
    );
    assert!(!plain.join("ran-here").exists(), "it ran in place");
    assert_eq!(
        crate::executor_support::count(&h.events, "delegation.started"),
        0
    );
}
