//! `mpm status` without a daemon reads in-process sessions live, from their own endpoints
//! (`$XDG_RUNTIME_DIR/mpm/live/*.sock`), and ended ones from the store; a stale socket is
//! ignored and removed. Also: a claude session's hook settings file goes with the session.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::common::{Spawn, TestEnv, wait_until};

const T: Duration = Duration::from_secs(60);

/// A stand-in `claude`: calls the hooks from the `--settings` file mpm passed (so the session's
/// state follows them: `UserPromptSubmit` → working, `Stop` → idle), and waits for the test's go
/// files between the phases.
const STAND_IN: &str = r#"#!/usr/bin/env python3
import json, os, subprocess, sys, time
args = sys.argv[1:]
path = args[args.index("--settings") + 1]
settings = json.load(open(path))
go = os.environ["GO_DIR"]
def hook(event, payload):
    cmd = settings["hooks"][event][0]["hooks"][0]["command"]
    subprocess.run(cmd, shell=True, input=json.dumps(payload).encode(), capture_output=True, timeout=60)
def wait(name):
    while not os.path.exists(os.path.join(go, name)):
        time.sleep(0.05)
print("SETTINGS:" + path, flush=True)
hook("UserPromptSubmit", {"prompt": "go"})
print("PHASE-WORKING", flush=True)
wait("go1")
hook("Stop", {"stop_hook_active": False, "last_assistant_message": "done"})
print("PHASE-IDLE", flush=True)
wait("go2")
print("BYE", flush=True)
"#;

fn stand_in(env: &TestEnv) -> PathBuf {
    let bin = env.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let claude = bin.join("claude");
    std::fs::write(&claude, STAND_IN).unwrap();
    std::fs::set_permissions(&claude, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(env.path("go")).unwrap();
    claude
}

fn start(env: &TestEnv, claude: &Path) -> crate::common::PtyProc {
    let mut spawn = Spawn::new(env, &["run", "--no-daemon", "--", claude.to_str().unwrap()]);
    spawn
        .env
        .push(("HOME".into(), env.path("home").display().to_string()));
    spawn
        .env
        .push(("GO_DIR".into(), env.path("go").display().to_string()));
    spawn.cwd = Some(env.dir.path());
    spawn.start()
}

/// `mpm status --json` from another process (no daemon answers in this environment).
fn status(env: &TestEnv) -> serde_json::Value {
    let out = env.command(&["status", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
    })
}

/// The one session `status` lists for `claude` (None while it is not listed yet).
fn session_of(v: &serde_json::Value) -> Option<serde_json::Value> {
    v["sessions"]
        .as_array()?
        .iter()
        .find(|s| {
            s["command"][0]
                .as_str()
                .is_some_and(|c| c.ends_with("claude"))
        })
        .cloned()
}

fn wait_state(env: &TestEnv, want: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let ok = wait_until(T, || {
        last = status(env);
        session_of(&last).is_some_and(|s| s["agent_state"] == want && s["state"] == "running")
    });
    assert!(ok, "never {want}: {last}");
    last
}

fn live_dir(env: &TestEnv) -> PathBuf {
    env.path("run").join("mpm").join("live")
}

fn sockets(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn status_reads_an_in_process_session_live_then_lists_it_ended() {
    let env = TestEnv::new();
    let claude = stand_in(&env);
    let mut p = start(&env, &claude);
    p.expect("PHASE-WORKING");
    let v = wait_state(&env, "working");
    assert_eq!(v["daemon"], serde_json::Value::Null, "{v}");
    let live = v["in_process"].as_array().expect("in_process list");
    assert_eq!(live.len(), 1, "{v}");
    let s = &live[0];
    assert!(s["pid"].as_u64().unwrap_or(0) > 0, "{v}");
    assert_eq!(s["mpm_pid"].as_u64(), Some(p.pid() as u64), "{v}");
    assert_eq!(s["delegations_queued"], 0, "{v}");
    assert!(s["governor_mode"].is_string(), "{v}");
    let id = s["id"].as_str().unwrap().to_string();
    // The endpoint: private, in the runtime dir.
    let socks = sockets(&live_dir(&env));
    assert_eq!(socks.len(), 1, "{socks:?}");
    let meta = std::fs::metadata(live_dir(&env).join(&socks[0])).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    std::fs::write(env.path("go").join("go1"), b"").unwrap();
    p.expect("PHASE-IDLE");
    wait_state(&env, "idle");

    std::fs::write(env.path("go").join("go2"), b"").unwrap();
    let st = p.wait();
    assert!(st.success(), "{}", p.text());
    let v = status(&env);
    let s = session_of(&v).unwrap_or_else(|| panic!("ended session not listed: {v}"));
    assert_eq!(s["id"], id.as_str(), "{v}");
    assert_eq!(s["state"], "ended", "{v}");
    assert_eq!(v["in_process"].as_array().map(Vec::len), Some(0), "{v}");
    assert!(sockets(&live_dir(&env)).is_empty(), "socket left behind");
}

/// A SIGKILLed `mpm run --no-daemon` never records its session's end; the watchdog stops the
/// agent, and `status` then lists the session as `lost`, not as running for ever.
#[test]
fn a_sigkilled_sessions_row_is_listed_lost_not_running() {
    let env = TestEnv::new();
    let claude = stand_in(&env);
    let mut p = start(&env, &claude);
    p.expect("PHASE-WORKING");
    let v = wait_state(&env, "working");
    let id = session_of(&v).unwrap()["id"].as_str().unwrap().to_string();
    p.signal(Signal::SIGKILL);
    p.wait();
    let mut last = serde_json::Value::Null;
    let lost = wait_until(T, || {
        last = status(&env);
        session_of(&last).is_some_and(|s| s["state"] == "lost")
    });
    assert!(lost, "never listed lost: {last}");
    assert_eq!(session_of(&last).unwrap()["id"], id.as_str(), "{last}");
    let out = env.command(&["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with(&id) && l.contains("lost")),
        "{text}"
    );
}

#[test]
fn a_stale_live_socket_is_ignored_and_removed() {
    let env = TestEnv::new();
    let dir = live_dir(&env);
    std::fs::create_dir_all(&dir).unwrap();
    // The pid of a process that is gone, as a SIGKILLed mpm's would be.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let stale = dir.join(format!("{pid}-0123456789abcdef.sock"));
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let v = status(&env);
    assert_eq!(v["in_process"].as_array().map(Vec::len), Some(0), "{v}");
    assert!(!stale.exists(), "the stale socket was not removed");
}

#[test]
fn the_hook_settings_file_is_removed_at_session_end_even_on_sigterm() {
    let env = TestEnv::new();
    let claude = stand_in(&env);
    // A normal end.
    let mut p = start(&env, &claude);
    p.expect("PHASE-WORKING");
    let settings = settings_path(&p.text());
    assert!(settings.exists(), "{}", settings.display());
    std::fs::write(env.path("go").join("go1"), b"").unwrap();
    std::fs::write(env.path("go").join("go2"), b"").unwrap();
    assert!(p.wait().success(), "{}", p.text());
    assert!(!settings.exists(), "settings file left after a normal end");
    assert!(!settings.parent().unwrap().exists(), "session folder left");
    // SIGTERM to mpm while the agent waits.
    std::fs::remove_file(env.path("go").join("go1")).unwrap();
    let mut p = start(&env, &claude);
    p.expect("PHASE-WORKING");
    let settings = settings_path(&p.text());
    assert!(settings.exists(), "{}", settings.display());
    p.signal(Signal::SIGTERM);
    p.wait();
    assert!(!settings.exists(), "settings file left after SIGTERM");
    assert!(
        sockets(&live_dir(&env)).is_empty(),
        "live socket left after SIGTERM"
    );
}

fn settings_path(screen: &str) -> PathBuf {
    let line = screen
        .lines()
        .find_map(|l| l.trim().strip_prefix("SETTINGS:"))
        .unwrap_or_else(|| panic!("no settings path in {screen}"));
    PathBuf::from(line.trim())
}

#[test]
fn with_a_daemon_status_adds_the_live_in_process_session() {
    let env = TestEnv::for_host(crate::common::HostKind::Daemon);
    let claude = stand_in(&env);
    let mut p = start(&env, &claude);
    p.expect("PHASE-WORKING");
    let v = wait_state(&env, "working");
    assert!(v["daemon_pid"].as_u64().is_some(), "{v}");
    assert_eq!(v["in_process"].as_array().map(Vec::len), Some(1), "{v}");
    std::fs::write(env.path("go").join("go1"), b"").unwrap();
    std::fs::write(env.path("go").join("go2"), b"").unwrap();
    assert!(p.wait().success(), "{}", p.text());
    let v = status(&env);
    assert!(session_of(&v).is_none(), "the daemon did not host it: {v}");
}
