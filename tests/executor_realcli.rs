//! The executor running the real `claude` CLI (the built-in engineer agent's default argv) against
//! the fake Anthropic server from `shared/realclient/`. Skips with a clear line when the CLI or the
//! shared folder is absent.
//!
//! Finds claude at `$MPM_CLAUDE`, else `$HOME/.cache/mpm-ci/claude/node_modules/.bin/claude`, else
//! on `PATH`; the shared folder at `$MPM_SHARED_DIR`, else `../shared` from the repo root.

mod executor_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use executor_support::*;
use mpm::config::{Config, SessionExitPolicy};
use mpm::events::EventBody;

fn claude() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MPM_CLAUDE") {
        return Some(PathBuf::from(p)).filter(|p| p.exists());
    }
    if let Some(home) = std::env::var_os("HOME") {
        let p = Path::new(&home).join(".cache/mpm-ci/claude/node_modules/.bin/claude");
        if p.exists() {
            return Some(p);
        }
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("claude"))
        .find(|p| p.exists())
}

fn shared() -> PathBuf {
    std::env::var_os("MPM_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared"))
}

/// The fake server; killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(realclient: &Path, dir: &Path) -> (Server, u16) {
    let port_file = dir.join("port");
    let child = Command::new("python3")
        .arg(realclient.join("fake_anthropic.py"))
        .arg("--scenario")
        .arg(realclient.join("scenarios/delegation.json"))
        .args(["--port", "0", "--port-file"])
        .arg(&port_file)
        .arg("--log")
        .arg(dir.join("requests.jsonl"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start fake_anthropic.py");
    let server = Server(child);
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(port) = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return (server, port);
        }
        assert!(Instant::now() < deadline, "fake server wrote no port file");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn engineer_default_argv_runs_the_real_cli_and_saves_the_result() {
    let Some(claude) = claude() else {
        println!(
            "SKIPPED: claude CLI not found (set MPM_CLAUDE or install into ~/.cache/mpm-ci/claude)"
        );
        return;
    };
    let realclient = shared().join("realclient");
    if !realclient.join("fake_anthropic.py").exists() {
        println!(
            "SKIPPED: {} not found (set MPM_SHARED_DIR)",
            realclient.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let (_server, port) = start_server(&realclient, dir.path());

    let mut cfg = Config::default();
    cfg.run.grace_secs = 1.0;
    cfg.executor.timeout_secs = 60;
    let engineer = cfg.agents.get_mut("engineer").unwrap();
    assert_eq!(
        engineer.argv,
        mpm::config::default_agent_argv(),
        "built-in argv untouched"
    );
    let path = format!(
        "{}:{}",
        claude.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for (k, v) in [
        ("PATH", path),
        ("HOME", home.display().to_string()),
        ("ANTHROPIC_BASE_URL", format!("http://127.0.0.1:{port}")),
        ("ANTHROPIC_API_KEY", "sk-test-dummy".into()),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".into()),
        ("DISABLE_TELEMETRY", "1".into()),
        ("DISABLE_AUTOUPDATER", "1".into()),
    ] {
        engineer.env.insert(k.into(), v);
    }
    engineer.cwd = Some(dir.path().to_path_buf());

    let mut h = Harness::start(&cfg);
    h.submit("Engineer Agent", "please delegate the fibonacci task");
    // A task that would be claude's --version flag if it reached argv unguarded.
    h.submit("engineer", "--version");
    h.until_finished(2);
    let reply = std::fs::read_to_string(realclient.join("scenarios/delegation_reply.md")).unwrap();
    for (task, want) in [
        ("please delegate the fibonacci task", reply.trim()),
        ("--version", "OK."),
    ] {
        let fin = h.finished(task);
        let EventBody::DelegationFinished {
            delegation,
            status,
            output_path,
            ..
        } = &fin.body
        else {
            unreachable!()
        };
        let id = &delegation.delegation_id;
        let stderr =
            std::fs::read_to_string(h.out().join(format!("{id}.stderr"))).unwrap_or_default();
        assert_eq!(
            status.as_str(),
            "success",
            "{task}: {}\nstderr: {stderr}",
            h.dump()
        );
        let result = h.out().join(format!("{id}.result.md"));
        assert_eq!(output_path.as_deref(), Some(result.to_str().unwrap()));
        let text = std::fs::read_to_string(&result).unwrap();
        assert_eq!(text.trim(), want, "{task}");
    }
    let summaries = h.shutdown(SessionExitPolicy::Cancel);
    assert_eq!(summaries.len(), 2);
}
