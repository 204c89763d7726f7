//! The real Claude Code CLI (pinned 2.1.331) under `mpm run`, offline against the shared fake
//! Anthropic server. Skipped, with a clear message, when the CLI or `shared/` is not there:
//! run `.ci/install-claude.sh`.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::*;

const VERSION: &str = "2.1.331";

/// The claude binary: `MPM_CLAUDE_BIN`, else the cache folder `.ci/install-claude.sh` uses.
fn claude_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MPM_CLAUDE_BIN") {
        return Some(PathBuf::from(p)).filter(|p| p.exists());
    }
    let prefix = std::env::var_os("MPM_CLAUDE_PREFIX")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/mpm-ci/claude"))
        })?;
    Some(prefix.join("node_modules/.bin/claude")).filter(|p| p.exists())
}

/// `shared/realclient`: `MPM_SHARED_DIR`, else `shared/` beside the repository (as CI clones it).
fn realclient_dir() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("MPM_SHARED_DIR") {
        Some(d) => vec![PathBuf::from(d)],
        None => vec![
            repo_root().join("../shared"),
            repo_root().join("../../shared"),
        ],
    };
    candidates
        .into_iter()
        .map(|d| d.join("realclient"))
        .find(|d| d.join("fake_anthropic.py").exists())
}

fn skip(what: &str) {
    eprintln!(
        "SKIPPED: {what}; run .ci/install-claude.sh (and keep shared/ beside the repository, or set MPM_SHARED_DIR)"
    );
}

/// The claude bin folder first on PATH, so `mpm run -- claude` finds it by name.
fn path_with(bin: &std::path::Path) -> String {
    let dir = bin.parent().unwrap().display().to_string();
    format!("{dir}:{}", std::env::var("PATH").unwrap_or_default())
}

#[test]
fn claude_version_through_mpm() {
    let Some(bin) = claude_bin() else {
        return skip("real claude CLI not installed");
    };
    let env = TestEnv::new();
    let out = env
        .command(&["run", "--", "claude", "--version"])
        .env("PATH", path_with(&bin))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!("{VERSION} (Claude Code)")),
        "{text:?}"
    );
}

/// The fake Anthropic server, killed on drop.
struct FakeServer(Child);

impl Drop for FakeServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn interactive_claude_session_shows_the_reply_and_exits_0() {
    let Some(bin) = claude_bin() else {
        return skip("real claude CLI not installed");
    };
    let Some(rc) = realclient_dir() else {
        return skip("shared/realclient not found");
    };
    let env = TestEnv::new();
    let port_file = env.path("port");
    let server = Command::new("python3")
        .arg(rc.join("fake_anthropic.py"))
        .arg("--scenario")
        .arg(rc.join("scenarios/delegation.json"))
        .args(["--port", "0", "--port-file"])
        .arg(&port_file)
        .arg("--log")
        .arg(env.path("requests.jsonl"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start fake_anthropic.py");
    let _server = FakeServer(server);
    assert!(
        wait_until(DEADLINE, || std::fs::read_to_string(&port_file)
            .is_ok_and(|p| p.trim().parse::<u16>().is_ok())),
        "fake server did not write its port"
    );
    let port = std::fs::read_to_string(&port_file)
        .unwrap()
        .trim()
        .to_string();
    let home = env.path("home");
    let work = env.path("work");
    let st = Command::new("bash")
        .arg(rc.join("setup_home.sh"))
        .arg(&home)
        .arg(&work)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());

    let events = env.path("events.jsonl");
    let mut spawn = Spawn::new(
        &env,
        &[
            "run",
            "--events-file",
            events.to_str().unwrap(),
            "--",
            "claude",
            "--permission-mode",
            "acceptEdits",
        ],
    );
    spawn.cols = 100;
    spawn.rows = 30;
    spawn.cwd = Some(&work);
    spawn.env.extend([
        ("PATH".to_string(), path_with(&bin)),
        ("HOME".to_string(), home.display().to_string()),
        (
            "ANTHROPIC_BASE_URL".to_string(),
            format!("http://127.0.0.1:{port}"),
        ),
        ("ANTHROPIC_API_KEY".to_string(), "sk-test-dummy".to_string()),
        (
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".to_string(),
            "1".to_string(),
        ),
        ("DISABLE_TELEMETRY".to_string(), "1".to_string()),
        ("DISABLE_AUTOUPDATER".to_string(), "1".to_string()),
        ("CLAUDE_CODE_NO_FLICKER".to_string(), "0".to_string()),
    ]);
    let mut p = spawn.start();
    p.expect("\u{276f}"); // ❯, the prompt
    p.send(b"please delegate the fibonacci task");
    p.expect("fibonacci");
    p.send(b"\r");
    // Classic renderer: words are placed with cursor jumps, so look for single words of the reply.
    p.expect("ModuleNotFoundError:");
    p.expect("Inline");
    p.send(b"/exit");
    p.expect("/exit");
    p.send(b"\r");
    assert_eq!(p.wait().code(), Some(0), "terminal:\n{}", p.text());
    let text = std::fs::read_to_string(&events).unwrap();
    assert!(text.contains("\"kind\":\"session.exited\""), "{text}");
    assert!(text.contains("\"exit_code\":0"), "{text}");
}
