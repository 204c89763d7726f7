//! Shared by the tests that drive the real Claude Code CLI (pinned 2.1.331) offline against the fake
//! Anthropic server in `shared/realclient/`. When the CLI or `shared/` is missing, tests call
//! [`skip`] and return: run `.ci/install-claude.sh` to install the CLI.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the fake server may take to start.
const START: Duration = Duration::from_secs(20);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The claude binary: `MPM_CLAUDE_BIN`, else the cache folder `.ci/install-claude.sh` fills
/// (`$MPM_CLAUDE_PREFIX`, default `~/.cache/mpm-ci/claude`).
pub fn claude_bin() -> Option<PathBuf> {
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
pub fn realclient_dir() -> Option<PathBuf> {
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

/// Say clearly why a real-client test did not run.
pub fn skip(what: &str) {
    eprintln!(
        "SKIPPED: {what}; run .ci/install-claude.sh (and keep shared/ beside the repository, or set MPM_SHARED_DIR)"
    );
}

/// `PATH` with the claude bin folder first, so `claude` is found by name.
pub fn path_with(bin: &Path) -> String {
    let dir = bin.parent().unwrap().display().to_string();
    format!("{dir}:{}", std::env::var("PATH").unwrap_or_default())
}

/// The fake Anthropic server on a free loopback port; killed on drop.
pub struct FakeServer {
    child: Child,
    pub port: u16,
}

impl FakeServer {
    /// Start `fake_anthropic.py` with `scenarios/<scenario>`; its files go into `dir`.
    pub fn start(rc: &Path, scenario: &str, dir: &Path) -> FakeServer {
        let port_file = dir.join("port");
        let child = Command::new("python3")
            .arg(rc.join("fake_anthropic.py"))
            .arg("--scenario")
            .arg(rc.join("scenarios").join(scenario))
            .args(["--port", "0", "--port-file"])
            .arg(&port_file)
            .arg("--log")
            .arg(dir.join("requests.jsonl"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start fake_anthropic.py");
        let mut server = FakeServer { child, port: 0 };
        let deadline = Instant::now() + START;
        loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                server.port = port;
                return server;
            }
            assert!(Instant::now() < deadline, "fake server wrote no port file");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The environment claude needs to talk to this server offline.
    pub fn claude_env(&self) -> Vec<(String, String)> {
        [
            (
                "ANTHROPIC_BASE_URL",
                format!("http://127.0.0.1:{}", self.port),
            ),
            ("ANTHROPIC_API_KEY", "sk-test-dummy".to_string()),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_string()),
            ("DISABLE_TELEMETRY", "1".to_string()),
            ("DISABLE_AUTOUPDATER", "1".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throwaway HOME that lets interactive claude skip onboarding, key and trust prompts for `work`.
pub fn setup_home(rc: &Path, home: &Path, work: &Path) {
    let st = Command::new("bash")
        .arg(rc.join("setup_home.sh"))
        .arg(home)
        .arg(work)
        .stdout(Stdio::null())
        .status()
        .expect("run setup_home.sh");
    assert!(st.success(), "setup_home.sh failed");
}
