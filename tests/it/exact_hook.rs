//! Claude's hooks as a signal source, through the real `mpm` binary: `mpm hook EVENT` alone (no
//! session, a session that answers), and `mpm run` around a stand-in `claude` that calls the hooks
//! mpm registered with `--settings` the way claude does (command through a shell, JSON on stdin).

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::common::{DEADLINE, Spawn, TestEnv, clear_mpm_vars, mpm_bin};

fn hook(event: &str, socket: Option<&std::path::Path>, stdin: &str) -> (i32, String) {
    let mut c = Command::new(mpm_bin());
    clear_mpm_vars(&mut c);
    c.args(["hook", event])
        .env_remove("MPM_HOOK_SOCKET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(s) = socket {
        c.env("MPM_HOOK_SOCKET", s);
    }
    let mut child = c.spawn().expect("spawn mpm hook");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn hook_without_a_session_exits_0_silently() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        hook("Stop", None, r#"{"stop_hook_active":false}"#),
        (0, String::new())
    );
    let gone = dir.path().join("no-such.sock");
    assert_eq!(hook("Stop", Some(&gone), "not json"), (0, String::new()));
}

#[test]
fn hook_prints_the_sessions_answer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hook.sock");
    struct Feedback;
    impl mpm::hook::HookResponder for Feedback {
        fn on_stop(&self, p: &mpm::hook::StopPayload) -> Option<String> {
            Some(format!(
                "results after: {}",
                p.last_assistant_message.as_deref().unwrap_or("")
            ))
        }
        fn on_user_prompt(&self, _: &mpm::hook::PromptPayload) -> Option<String> {
            None
        }
    }
    let responder = Arc::new(Feedback);
    let server = mpm::hook::server::HookServer::start(
        path.clone(),
        Box::new(move |e| mpm::hook::response(responder.as_ref(), &e)),
    )
    .unwrap();
    let (code, out) = hook(
        "Stop",
        Some(server.path()),
        r#"{"stop_hook_active":false,"last_assistant_message":"done"}"#,
    );
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON on stdout");
    assert_eq!(v["decision"], "block");
    assert_eq!(v["reason"], "results after: done");
    // Nothing to add to a prompt: no output at all.
    assert_eq!(
        hook("UserPromptSubmit", Some(server.path()), r#"{"prompt":"x"}"#),
        (0, String::new())
    );
}

/// A stand-in `claude`: calls the hooks from the `--settings` file mpm passed, draws one delegation
/// on screen (inline code without backticks, as claude draws it) and reports the Stop hook's final
/// message with the same delegation in markdown plus one more.
const FAKE_CLAUDE: &str = r#"#!/usr/bin/env python3
import json, os, subprocess, sys
args = sys.argv[1:]
settings = json.load(open(args[args.index("--settings") + 1]))
def hook(event, payload):
    cmd = settings["hooks"][event][0]["hooks"][0]["command"]
    r = subprocess.run(cmd, shell=True, input=json.dumps(payload).encode(), capture_output=True, timeout=60)
    return r.stdout.decode().strip()
print("socket-env:" + ("set" if os.environ.get("MPM_HOOK_SOCKET") else "unset"), flush=True)
hook("UserPromptSubmit", {"prompt": "go"})
print("\u25cf Engineer Agent: implement fib(n) in fib.py", flush=True)
print("", flush=True)
print("  more text below the block", flush=True)
final = "Engineer Agent: implement `fib(n)` in fib.py\n\nQA Agent: test the `fib` module"
out = hook("Stop", {"stop_hook_active": False, "last_assistant_message": final})
print("stop-answer:[" + out + "]", flush=True)
"#;

#[test]
fn run_with_hooks_dispatches_each_delegation_once_and_publishes_states() {
    let env = TestEnv::new();
    let bin = env.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let claude = bin.join("claude");
    std::fs::write(&claude, FAKE_CLAUDE).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&claude, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = env.path("mpm.yaml");
    std::fs::write(
        &cfg,
        "agents:\n  engineer:\n    argv: [\"echo\", \"{task}\"]\n  qa:\n    argv: [\"echo\", \"{task}\"]\n",
    )
    .unwrap();
    let events = env.path("events.jsonl");
    let mut spawn = Spawn::new(
        &env,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "run",
            "--no-daemon",
            "--events-file",
            events.to_str().unwrap(),
            "--",
            claude.to_str().unwrap(),
        ],
    );
    spawn
        .env
        .push(("HOME".into(), env.path("home").display().to_string()));
    spawn.cwd = Some(env.dir.path());
    let mut p = spawn.start();
    let status = p.wait();
    let screen = p.text();
    assert!(status.success(), "{screen}");
    assert!(screen.contains("socket-env:set"), "{screen}");
    // The feedback actor answers the Stop hook: it blocks with the turn's results (issue 14).
    assert!(
        screen.contains("stop-answer:[{\"decision\":\"block\""),
        "{screen}"
    );
    // The task that ran is the Stop hook's (exact) copy, backticks and all, even when the screen's
    // copy was read first (which one arrives first depends on the machine's load).
    assert!(
        screen.contains("implement `fib(n)` in fib.py (success"),
        "{screen}"
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let queued: Vec<(String, String)> = lines
        .iter()
        .filter(|e| e["kind"] == "delegation.queued")
        .map(|e| {
            (
                e["agent"].as_str().unwrap_or("").to_string(),
                e["task"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(queued.len(), 2, "{queued:?}\n{screen}");
    assert!(
        queued
            .iter()
            .any(|(a, t)| a == "engineer" && t.contains("fib.py")),
        "{queued:?}"
    );
    assert!(
        queued.iter().any(|(a, t)| a == "qa" && t.contains("fib")),
        "{queued:?}"
    );
    let states: Vec<(String, String)> = lines
        .iter()
        .filter(|e| e["kind"] == "session.state")
        .map(|e| {
            (
                e["state"].as_str().unwrap_or("").to_string(),
                e["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let want = [
        ("working", "hook:UserPromptSubmit"),
        ("idle", "hook:Stop"),
        ("exited", "exit"),
    ];
    let mut it = states.iter();
    for (s, r) in want {
        assert!(
            it.any(|(a, b)| a == s && b == r),
            "{s} ({r}) missing or out of order in {states:?}"
        );
    }
    let _ = DEADLINE;
}

/// A stand-in `claude` that writes its reply to the transcript where claude does (under `$HOME`,
/// by `--session-id`) and draws nothing of it, then waits for the sub-agent's mark.
const TRANSCRIPT_CLAUDE: &str = r#"#!/usr/bin/env python3
import json, os, re, sys, time
args = sys.argv[1:]
sid = args[args.index("--session-id") + 1]
folder = re.sub(r"[^A-Za-z0-9]", "-", os.getcwd())
path = os.path.join(os.environ["HOME"], ".claude", "projects", folder, sid + ".jsonl")
os.makedirs(os.path.dirname(path), exist_ok=True)
reply = {"type": "assistant", "sessionId": sid, "message": {"role": "assistant",
         "content": [{"type": "text", "text": "Engineer Agent: implement the origin check"}],
         "stop_reason": "end_turn"}}
with open(path, "a") as f:
    f.write(json.dumps(reply) + "\n")
print("transcript written", flush=True)
mark, end = os.environ["MARK"], time.monotonic() + 30
while not os.path.exists(mark) and time.monotonic() < end:
    time.sleep(0.05)
print("mark seen" if os.path.exists(mark) else "no mark", flush=True)
"#;

/// The transcript is looked for under the user's `HOME`, in both hosts: a daemon (whose own HOME
/// is systemd's, here the test runner's) follows the client's claude transcript, not its own.
fn the_transcript_is_found_under_the_clients_home(host: crate::common::HostKind) {
    let env = TestEnv::for_host(host);
    let bin = env.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let claude = bin.join("claude");
    std::fs::write(&claude, TRANSCRIPT_CLAUDE).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&claude, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mark = env.path("sub-agent-ran");
    let cfg = env.path("mpm.yaml");
    std::fs::write(
        &cfg,
        format!(
            "agents:\n  engineer:\n    argv: {}\n",
            serde_json::to_string(&[
                "python3",
                &crate::common::fake_agent(),
                &format!("touch:{}", mark.display()),
                "print:{task}",
            ])
            .unwrap()
        ),
    )
    .unwrap();
    let events = env.path("events.jsonl");
    let mut args = vec!["--config", cfg.to_str().unwrap(), "run"];
    if host == crate::common::HostKind::InProcess {
        args.push("--no-daemon");
    }
    args.extend(["--events-file", events.to_str().unwrap(), "--"]);
    args.push(claude.to_str().unwrap());
    let mut spawn = Spawn::new(&env, &args);
    spawn
        .env
        .push(("HOME".into(), env.path("home").display().to_string()));
    spawn.env.push(("MARK".into(), mark.display().to_string()));
    spawn.cwd = Some(env.dir.path());
    let mut p = spawn.start();
    let status = p.wait();
    let screen = p.text();
    assert!(status.success(), "{screen}");
    assert!(screen.contains("mark seen"), "no sub-agent ran:\n{screen}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let found: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|e| e["kind"] == "detection" && e["category"] == "delegation")
        .collect();
    assert_eq!(found.len(), 1, "{lines:#?}");
    assert_eq!(found[0]["source"], "transcript", "{lines:#?}");
    assert_eq!(found[0]["task"], "implement the origin check");
}

crate::both_hosts!(the_transcript_is_found_under_the_clients_home);
