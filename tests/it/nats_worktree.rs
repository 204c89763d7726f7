//! `isolation: worktree` through NATS workers: the job carries the remote and the base commit; the
//! worker runs in a worktree of its mirror and pushes the branch, or sends a bundle back.

use std::path::Path;
use std::process::Command;

use mpm::config::{BackendKind, Isolation};

use crate::executor_support::{Harness, config, delegation_id, reason, status};
use crate::nats_support::{NatsServer, Worker};

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

/// A bare "remote" and a checkout of it (origin = the remote) with one pushed commit.
fn remote_and_checkout(root: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let remote = root.join("remote.git");
    let checkout = root.join("checkout");
    git(root, &["init", "-q", "--bare", "-b", "main", "remote.git"]);
    crate::worktree::init_repo(&checkout);
    git(
        &checkout,
        &["remote", "add", "origin", &remote.display().to_string()],
    );
    git(&checkout, &["push", "-q", "origin", "main"]);
    (remote, checkout)
}

fn run_one(root: &Path, deny_push: bool) {
    let Some(nats) = NatsServer::start() else {
        return;
    };
    let (remote, checkout) = remote_and_checkout(root);
    if deny_push {
        let hook = remote.join("hooks/pre-receive");
        std::fs::write(&hook, "#!/bin/sh\necho pushes are closed >&2\nexit 1\n").unwrap();
        let mut p = std::fs::metadata(&hook).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o755);
        std::fs::set_permissions(&hook, p).unwrap();
    }
    let worker_cfg = serde_json::json!({
        "run": {"grace_secs": 0.3},
        "worktree": {"retention_secs": 0},
        "agents": {"iso": {
            "argv": ["sh", "-c", "echo \"$1\" >> shared.txt; pwd", "sh", "{task}"],
            "isolation": "worktree",
        }},
    })
    .to_string();
    let w = Worker::start(root, &nats.url, "w1", &worker_cfg, "iso", 1);
    let mut cfg = config(vec![(
        "iso",
        mpm::config::AgentConfig {
            argv: vec!["true".into(), "{task}".into()],
            cwd: Some(checkout.clone()),
            isolation: Isolation::Worktree,
            ..Default::default()
        },
    )]);
    cfg.executor.backend = BackendKind::Nats;
    cfg.executor.nats.url = nats.url.clone();
    let mut h = Harness::start(&cfg);
    h.submit("iso", "remote edit");
    h.until_finished(1);
    let fin = h.finished("remote edit");
    assert_eq!(status(fin), "success", "{}\n{}", reason(fin), h.dump());
    let id = delegation_id(fin).to_string();
    let branch = format!("mpm/iso-{}", &id[..8]);
    // It ran in a worktree on the worker, not in the session's checkout.
    let stdout = std::fs::read_to_string(h.out().join(format!("{id}.stdout"))).unwrap();
    assert!(
        stdout.starts_with(&w.state.join("worktrees").display().to_string()),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(checkout.join("shared.txt")).unwrap(),
        "base\n"
    );
    let result = std::fs::read_to_string(h.out().join(format!("{id}.result.md"))).unwrap();
    assert!(
        result.contains(&format!("`{branch}` (1 commit on")),
        "{result}"
    );
    if deny_push {
        // The bundle came back; the branch can be fetched from it.
        assert!(result.contains("bundle sent back"), "{result}");
        let bundle = h.out().join(format!("{id}.bundle"));
        let spec = format!("{branch}:{branch}");
        git(
            &checkout,
            &["fetch", "-q", &bundle.display().to_string(), &spec],
        );
        assert_eq!(git(&remote, &["branch", "--list", "mpm/*"]).trim(), "");
    } else {
        assert!(result.contains("pushed"), "{result}");
        git(
            &checkout,
            &["fetch", "-q", "origin", &format!("{branch}:{branch}")],
        );
    }
    assert_eq!(
        git(&checkout, &["show", &format!("{branch}:shared.txt")]),
        "base\nremote edit\n"
    );
}

#[test]
fn a_worker_runs_an_isolated_delegation_in_its_mirror_and_pushes_the_branch() {
    let tmp = tempfile::tempdir().unwrap();
    run_one(tmp.path(), false);
}

#[test]
fn a_worker_that_cannot_push_sends_the_branch_back_as_a_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    run_one(tmp.path(), true);
}
