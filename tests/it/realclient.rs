//! Shared by the tests that drive the real Claude Code CLI (pinned 2.1.331) offline against the
//! project's own fake LLM API server, `fixtures/fake_llm.py`, with the scenarios in
//! `fixtures/scenarios/`. Everything comes from the repository; nothing beside it is read.
//!
//! When the CLI is missing, tests call [`skip`] and return, which prints `SKIPPED: ...` (shown in
//! the test summary by `cargo test -- --nocapture`, and always in the captured output). Under CI
//! (`CI=true`) a missing CLI is a failure instead: `.ci/run` installs it first.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the fake server may take to start (python start-up on a loaded 2-core machine).
const START: Duration = Duration::from_secs(30);

/// The repository's `fixtures/` folder.
pub(crate) fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The claude binary: `MPM_CLAUDE_BIN`, else the cache folder `.ci/install-claude.sh` fills
/// (`$MPM_CLAUDE_PREFIX`, default `~/.cache/mpm-ci/claude`).
pub(crate) fn claude_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MPM_CLAUDE_BIN") {
        return Some(PathBuf::from(p))
            .filter(|p| p.exists())
            .inspect(|_| one_real_cli_at_a_time());
    }
    let prefix = std::env::var_os("MPM_CLAUDE_PREFIX")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/mpm-ci/claude"))
        })?;
    Some(prefix.join("node_modules/.bin/claude"))
        .filter(|p| p.exists())
        .inspect(|_| one_real_cli_at_a_time())
}

/// The real CLIs are heavy (Node or Python start-up, streamed model turns, hooks): on a 2-core
/// machine several at once starve each other into their tests' deadlines. A test that asks for a
/// real CLI therefore waits here until no other test drives one, and holds the turn until its
/// thread (the test) ends, pass or fail. The other tests keep running in parallel.
fn one_real_cli_at_a_time() {
    use std::cell::RefCell;
    use std::sync::{Mutex, MutexGuard};
    static REAL_CLI: Mutex<()> = Mutex::new(());
    thread_local! {
        static HELD: RefCell<Option<MutexGuard<'static, ()>>> = const { RefCell::new(None) };
    }
    HELD.with(|held| {
        let mut held = held.borrow_mut();
        if held.is_none() {
            *held = Some(REAL_CLI.lock().unwrap_or_else(|e| e.into_inner()));
        }
    });
}

/// True under CI (`CI=true`, as GitHub Actions and `.ci/run` set it): a missing tool fails there.
pub(crate) fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Say clearly why a real-client test did not run; under CI, fail instead.
pub(crate) fn skip(what: &str) {
    assert!(
        !in_ci(),
        "{what}: under CI (CI=true) the real-client tests must run; .ci/run installs the CLI"
    );
    // Written to the real stderr, not the test harness's capture, so it shows in the summary.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr().lock(),
        "SKIPPED: {what}; run .ci/install-claude.sh"
    );
}

/// `PATH` with the claude bin folder first, so `claude` is found by name.
pub(crate) fn path_with(bin: &Path) -> String {
    let dir = bin.parent().unwrap().display().to_string();
    format!("{dir}:{}", std::env::var("PATH").unwrap_or_default())
}

/// `fixtures/fake_llm.py` on a free loopback port; killed on drop.
pub(crate) struct FakeServer {
    child: Child,
    pub port: u16,
    /// The server's request log (JSONL, one trimmed line per request).
    pub log: PathBuf,
}

impl FakeServer {
    /// Start the server with `fixtures/scenarios/<scenario>`; its port file and log go into `dir`.
    pub(crate) fn start(scenario: &str, dir: &Path) -> FakeServer {
        let port_file = dir.join("fake_llm.port");
        let log = dir.join("fake_llm.requests.jsonl");
        let child = Command::new("python3")
            .arg(fixtures_dir().join("fake_llm.py"))
            .arg("--scenario")
            .arg(fixtures_dir().join("scenarios").join(scenario))
            .arg("--port-file")
            .arg(&port_file)
            .arg("--log")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start fixtures/fake_llm.py (python3 on PATH?)");
        let mut server = FakeServer {
            child,
            port: 0,
            log,
        };
        let deadline = Instant::now() + START;
        loop {
            // The server renames a complete file into place: a read never sees half a number.
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                server.port = port;
                return server;
            }
            if let Ok(Some(st)) = server.child.try_wait() {
                panic!("fake_llm.py exited before listening: {st}");
            }
            assert!(Instant::now() < deadline, "fake_llm.py wrote no port file");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The requests the server answered so far, as parsed log lines.
    pub(crate) fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The environment claude needs to talk to this server offline.
    pub(crate) fn claude_env(&self) -> Vec<(String, String)> {
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

/// A throwaway HOME that lets interactive claude skip onboarding, key and trust prompts for `work`
/// (`fixtures/claude_home.sh`).
pub(crate) fn setup_home(home: &Path, work: &Path) {
    let st = Command::new("bash")
        .arg(fixtures_dir().join("claude_home.sh"))
        .arg(home)
        .arg(work)
        .stdout(Stdio::null())
        .status()
        .expect("run fixtures/claude_home.sh");
    assert!(st.success(), "fixtures/claude_home.sh failed");
}

/// The other agent CLIs' cache folder (`.ci/install-clis.sh`): `$MPM_CLI_PREFIX`, default
/// `~/.cache/mpm-ci`.
pub(crate) fn cli_prefix() -> Option<PathBuf> {
    std::env::var_os("MPM_CLI_PREFIX")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/mpm-ci")))
}

/// The binary of a pinned agent CLI (`codex`, `gemini`, `opencode`, `aider`, `claude`):
/// `MPM_<NAME>_BIN`, else where `.ci/install-clis.sh` (or `.ci/install-claude.sh`) puts it.
pub(crate) fn cli_bin(name: &str) -> Option<PathBuf> {
    if name == "claude" {
        return claude_bin();
    }
    if let Some(p) = std::env::var_os(format!("MPM_{}_BIN", name.to_ascii_uppercase())) {
        return Some(PathBuf::from(p))
            .filter(|p| p.exists())
            .inspect(|_| one_real_cli_at_a_time());
    }
    let dir = cli_prefix()?.join(name);
    let bin = match name {
        "aider" => dir.join("bin/aider"),
        _ => dir.join("node_modules/.bin").join(name),
    };
    Some(bin)
        .filter(|p| p.exists())
        .inspect(|_| one_real_cli_at_a_time())
}

/// Like [`skip`], naming the installer of the other CLIs.
pub(crate) fn skip_cli(name: &str) {
    assert!(
        !in_ci(),
        "{name} not installed: under CI (CI=true) the real-client tests must run; .ci/run installs it"
    );
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr().lock(),
        "SKIPPED: {name} CLI not installed; run .ci/install-clis.sh {name}"
    );
}

/// How long the real claude may take to draw its prompt (Node start-up on a busy machine).
const CLAUDE_START: Duration = Duration::from_secs(90);

/// What a live real-claude session needs before it starts: a test folder, the fake server on a
/// scenario, a throwaway HOME trusted for `work`. Tests change these (the HOME's settings, the
/// size, the renderer, extra variables) and then [`LiveSetup::start`] it.
pub(crate) struct LiveSetup {
    pub env: crate::common::TestEnv,
    pub server: FakeServer,
    pub home: PathBuf,
    pub work: PathBuf,
    bin: PathBuf,
    config: Option<String>,
    cols: u16,
    rows: u16,
    /// `CLAUDE_CODE_NO_FLICKER`: "0" the classic renderer (default), "1" the fullscreen one.
    renderer: String,
    vars: Vec<(String, String)>,
}

/// The real claude under `mpm run --no-daemon --events-file ... -- claude --permission-mode
/// acceptEdits`, PATH and HOME set, talking to the fake server (sub-agents inherit that
/// environment: they talk to the same server), its prompt drawn. The process tree is killed on
/// drop (the `PtyProc`), the server too.
pub(crate) struct Live {
    pub env: crate::common::TestEnv,
    pub server: FakeServer,
    pub home: PathBuf,
    pub ev_path: PathBuf,
    pub p: crate::common::PtyProc,
    cols: u16,
    rows: u16,
}

impl LiveSetup {
    /// `None` when the CLI is missing (SKIPPED printed; under CI a failure).
    pub(crate) fn new(scenario: &str) -> Option<LiveSetup> {
        let Some(bin) = claude_bin() else {
            skip("real claude CLI not installed");
            return None;
        };
        let env = crate::common::TestEnv::new();
        let server = FakeServer::start(scenario, env.dir.path());
        let home = env.path("home");
        let work = env.path("work");
        setup_home(&home, &work);
        Some(LiveSetup {
            env,
            server,
            home,
            work,
            bin,
            config: None,
            cols: 100,
            rows: 30,
            renderer: "0".into(),
            vars: Vec::new(),
        })
    }

    /// mpm's configuration (YAML), passed with `--config`.
    pub(crate) fn config(mut self, yaml: &str) -> Self {
        self.config = Some(yaml.into());
        self
    }

    /// The terminal's size.
    pub(crate) fn size(mut self, cols: u16, rows: u16) -> Self {
        self.cols = cols;
        self.rows = rows;
        self
    }

    /// claude's renderer (`CLAUDE_CODE_NO_FLICKER`).
    pub(crate) fn renderer(mut self, value: &str) -> Self {
        self.renderer = value.into();
        self
    }

    /// One more environment variable for mpm (and the agents under it).
    pub(crate) fn var(mut self, key: &str, value: &str) -> Self {
        self.vars.push((key.into(), value.into()));
        self
    }

    /// Start `mpm run` and wait for claude's prompt (❯).
    pub(crate) fn start(self) -> Live {
        let ev_path = self.env.path("events.jsonl");
        let cfg = self.env.path("mpm.yaml");
        let mut args: Vec<String> = Vec::new();
        if let Some(yaml) = &self.config {
            std::fs::write(&cfg, yaml).unwrap();
            args.extend(["--config".into(), cfg.display().to_string()]);
        }
        args.extend(
            [
                "run",
                "--no-daemon",
                "--events-file",
                &ev_path.display().to_string(),
                "--",
                "claude",
                "--permission-mode",
                "acceptEdits",
            ]
            .map(String::from),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut spawn = crate::common::Spawn::new(&self.env, &args);
        spawn.cols = self.cols;
        spawn.rows = self.rows;
        spawn.cwd = Some(&self.work);
        spawn.env.extend([
            ("PATH".to_string(), path_with(&self.bin)),
            ("HOME".to_string(), self.home.display().to_string()),
            ("CLAUDE_CODE_NO_FLICKER".to_string(), self.renderer.clone()),
        ]);
        spawn.env.extend(self.server.claude_env());
        spawn.env.extend(self.vars.iter().cloned());
        let p = spawn.start();
        let live = Live {
            env: self.env,
            server: self.server,
            home: self.home,
            ev_path,
            p,
            cols: self.cols,
            rows: self.rows,
        };
        live.wait("claude's prompt", CLAUDE_START, |l| {
            l.p.text().contains('\u{276f}')
        });
        live
    }
}

impl Live {
    /// The session's events so far.
    pub(crate) fn events(&self) -> Vec<serde_json::Value> {
        crate::common::read_events(&self.ev_path)
    }

    /// The visible screen (a VT model fed with everything written so far).
    pub(crate) fn screen(&self) -> String {
        let mut parser = vt100::Parser::new(self.rows, self.cols, 0);
        parser.process(self.p.text().as_bytes());
        parser.screen().contents()
    }

    /// What the test saw, for a failure message.
    pub(crate) fn dump(&self) -> String {
        format!(
            "requests:\n{}\nevents:\n{}\nscreen:\n{}",
            self.server
                .requests()
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
            self.events()
                .iter()
                .filter(|e| e["kind"] != "resource.sample")
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
            self.screen()
        )
    }

    /// Wait for `cond`; on timeout fail with `what` and [`Live::dump`].
    pub(crate) fn wait(&self, what: &str, timeout: Duration, mut cond: impl FnMut(&Live) -> bool) {
        assert!(
            crate::common::wait_until(timeout, || cond(self)),
            "timed out waiting for {what}\n{}",
            self.dump()
        );
    }

    /// Type `/exit`, then Enter once it is drawn; mpm must exit 0 within `timeout` (longer with
    /// `executor.on_session_exit: wait`, which waits for the sub-agents).
    pub(crate) fn exit_within(&mut self, timeout: Duration) {
        self.p.send(b"/exit");
        self.wait("/exit on the screen", timeout, |l| {
            l.screen().contains("/exit")
        });
        self.p.send(b"\r");
        let st = self.p.wait_within(timeout);
        assert_eq!(st.code(), Some(0), "{}", self.dump());
    }
}
