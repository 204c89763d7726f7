//! The other agent CLIs, live under `mpm run` against `fixtures/fake_llm.py`
//! (`scenarios/clis.json`): the scripted reply's four delegations are each detected once, final,
//! with their whole task (the first on the reply's first line, behind the CLI's reply marker; one
//! long that wraps; `Task(QA: test fib() with …)`), and nothing half-streamed is ever final.
//! codex, gemini, aider and opencode also have their transcript (opencode: its SQLite store) read
//! as the exact source; gemini's is named after the session id mpm gives it; opencode's scripted
//! API error is detected once. Then each delegation runs through the same CLI's headless form
//! (`agents.<name>.profile`) to `success` with a result file, and nothing of either is left.
//!
//! Each test is SKIPPED when its CLI is not installed (`.ci/install-clis.sh`), and fails under CI.
//! Homes are throw-away (`fixtures/cli_home.sh`); whatever the CLI leaves running is stopped.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common::*;
use crate::realclient::{FakeServer, cli_bin, fixtures_dir, skip_cli};

/// Stops, by pid, every process whose environment has this test's throw-away HOME (codex's
/// app-server daemon, gemini's relaunched child), when the test ends however it ends.
struct HomeReaper(String);

impl HomeReaper {
    fn leftovers(&self) -> Vec<i32> {
        let want = format!("HOME={}", self.0);
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if pid == std::process::id() as i32 {
                continue;
            }
            let Ok(env) = std::fs::read(e.path().join("environ")) else {
                continue;
            };
            if env.split(|b| *b == 0).any(|kv| kv == want.as_bytes()) {
                out.push(pid);
            }
        }
        out
    }
}

impl Drop for HomeReaper {
    fn drop(&mut self) {
        for pid in self.leftovers() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The environment `fixtures/cli_home.sh` prints for `cli` (HOME among it).
fn cli_home(cli: &str, home: &Path, work: &Path, port: u16) -> Vec<(String, String)> {
    let out = Command::new(fixtures_dir().join("cli_home.sh"))
        .args([
            cli,
            &home.display().to_string(),
            &work.display().to_string(),
        ])
        .arg(port.to_string())
        .output()
        .unwrap_or_else(|e| panic!("cli_home.sh: {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Wait (bounded) until the terminal output has not grown for `span`.
fn quiet(p: &PtyProc, span: Duration) {
    let mut last = (p.text().len(), std::time::Instant::now());
    wait_until(Duration::from_secs(30), || {
        let n = p.text().len();
        if n != last.0 {
            last = (n, std::time::Instant::now());
        }
        last.1.elapsed() >= span
    });
}

use crate::common::read_events as events;

fn final_delegations(evs: &[Value]) -> Vec<(String, String, String)> {
    evs.iter()
        .filter(|e| e["kind"] == "detection" && e["category"] == "delegation")
        .filter(|e| e["final"] == true || e["is_final"] == true)
        .map(|e| {
            (
                e["agent"].as_str().unwrap_or("").to_string(),
                e["task"].as_str().unwrap_or("").to_string(),
                e["source"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

const WANT: [(&str, &str); 4] = [
    (
        "engineer",
        "implement fib(n) in fib.py with memoisation and a guard for negative n",
    ),
    (
        "research",
        "compare the iterative, matrix power and fast doubling algorithms for very large n, \
         measure their time and memory on n up to one million, and recommend one in docs/fib.md \
         with a short table",
    ),
    ("qa", "test fib() with n = 0, 1, 2, 10 and a negative n"),
    (
        "documentation",
        "describe fib() and its limits in the README",
    ),
];

/// The scripted API error's text (`scenarios/clis.json`, prompt "break the api").
const API_ERROR: &str = "fake_llm: scripted invalid request";

fn api_error_seen(evs: &[Value]) -> bool {
    evs.iter().any(|e| {
        e["kind"] == "detection"
            && e["category"] == "error"
            && e["text"].as_str().is_some_and(|t| t.contains(API_ERROR))
    })
}

/// One exchange: start `cli` under `mpm run`, wait for `ready`, prompt "plan fib", wait until the
/// four delegations are final (or the deadline), then `exit` keys. With `then_error` a second
/// prompt, "break the api", answered by the fake server's scripted 400, until the CLI's error
/// display is detected. With `exec`, the delegations run (instead of `--no-exec`): every agent
/// through `cli`'s own headless form (`agents.<name>.profile`), and the session waits for them.
fn exchange_then(
    cli: &str,
    args: &[&str],
    ready: &str,
    exit: &[&[u8]],
    then_error: bool,
    exec: bool,
) -> Option<Exchange> {
    // Takes the one-real-CLI-at-a-time turn for this test.
    let Some(bin) = cli_bin(cli) else {
        skip_cli(cli);
        return None;
    };
    let env = TestEnv::new();
    let server = FakeServer::start("clis.json", env.dir.path());
    let (home, work) = (env.path("home"), env.path("work"));
    let vars = cli_home(cli, &home, &work, server.port);
    let home_var = vars
        .iter()
        .find(|(k, _)| k == "HOME")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let reaper = HomeReaper(home_var);
    let events_path = env.path("events.jsonl");
    let mut argv = vec!["run".to_string()];
    if exec {
        let cfg = env.path("mpm.yaml");
        let agents: String = WANT
            .iter()
            .map(|(a, _)| format!("  {a}: {{profile: {cli}, timeout_secs: 120}}\n"))
            .collect();
        std::fs::write(
            &cfg,
            format!("executor: {{on_session_exit: wait}}\nagents:\n{agents}"),
        )
        .unwrap();
        argv.splice(0..0, ["--config".to_string(), cfg.display().to_string()]);
    } else {
        argv.push("--no-exec".into());
    }
    argv.extend([
        "--events-file".into(),
        events_path.display().to_string(),
        "--".into(),
        bin.display().to_string(),
    ]);
    argv.extend(args.iter().map(|s| s.to_string()));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut spawn = Spawn::new(&env, &argv);
    spawn.cols = 100;
    spawn.rows = 30;
    spawn.cwd = Some(&work);
    spawn.env.extend(vars);
    if exec {
        // The headless form names the CLI by its command: find the pinned one first.
        let path = format!(
            "{}:{}",
            bin.parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        spawn.env.push(("PATH".into(), path));
    }
    let mut p = spawn.start();
    let long = Duration::from_secs(120);
    assert!(
        wait_until(long, || p.text().contains(ready)),
        "{cli}: not ready; terminal:\n{}",
        p.text()
    );
    // Let the CLI settle: its first screen drawn (the output quiet for 2 s).
    quiet(&p, Duration::from_secs(2));
    p.send(b"plan fib");
    quiet(&p, Duration::from_millis(500));
    p.send(b"\r");
    let done = wait_until(Duration::from_secs(180), || {
        final_delegations(&events(&events_path)).len() >= WANT.len()
            && events(&events_path).iter().any(|e| {
                e["kind"] == "detection"
                    && e["category"] == "error"
                    && e["text"]
                        .as_str()
                        .is_some_and(|t| t.contains("RecursionError"))
            })
    });
    // Give a late duplicate the chance to show (it must not).
    quiet(&p, Duration::from_secs(3));
    let errored = !then_error || {
        p.send(b"break the api");
        quiet(&p, Duration::from_millis(500));
        p.send(b"\r");
        wait_until(Duration::from_secs(120), || {
            api_error_seen(&events(&events_path))
        })
    };
    if then_error {
        quiet(&p, Duration::from_secs(2));
    }
    for keys in exit {
        p.send(keys);
        quiet(&p, Duration::from_millis(700));
    }
    let ended = wait_until(Duration::from_secs(if exec { 300 } else { 60 }), || {
        p.child.try_wait().ok().flatten().is_some()
    });
    let evs = events(&events_path);
    assert!(
        done,
        "{cli}: the delegations did not all become final; events:\n{:#?}\nterminal:\n{}",
        final_delegations(&evs),
        p.text()
    );
    assert!(
        errored,
        "{cli}: the scripted API error was not detected; terminal:\n{}",
        p.text()
    );
    assert!(ended, "{cli}: mpm did not exit");
    drop(p);
    // Nothing of the CLI outlives the session.
    let left = wait_until(Duration::from_secs(10), || reaper.leftovers().is_empty());
    assert!(left, "{cli}: processes left: {:?}", reaper.leftovers());
    // Read now: the session's folder goes with `env`.
    let results = evs
        .iter()
        .filter_map(|e| e["result_path"].as_str())
        .map(|p| std::fs::read_to_string(p).unwrap_or_else(|e| format!("{p}: {e}")))
        .collect();
    let files = file_names(&home);
    Some(Exchange {
        evs,
        files,
        results,
    })
}

/// What one [`exchange_then`] left.
struct Exchange {
    /// The session's events.
    evs: Vec<Value>,
    /// The names of the files the CLI wrote under its HOME.
    files: Vec<String>,
    /// The texts of the delegations' result files.
    results: Vec<String>,
}

/// Every delegation ran through `cli`'s headless form to `success`, with a result file holding
/// the fake server's answer (`Done.`, read from the CLI's headless output).
fn check_ran(cli: &str, x: &Exchange) {
    let fin: Vec<&Value> = x
        .evs
        .iter()
        .filter(|e| e["kind"] == "delegation.finished")
        .collect();
    assert_eq!(fin.len(), WANT.len(), "{cli}: {fin:#?}");
    for f in &fin {
        assert_eq!(f["status"], "success", "{cli}: {f:#}");
        let task = f["task"].as_str().unwrap_or_default();
        assert!(WANT.iter().any(|(_, t)| *t == task), "{cli}: {task}");
    }
    assert_eq!(x.results.len(), WANT.len(), "{cli}: a result file each");
    for text in &x.results {
        assert!(text.contains(&format!("- profile: {cli}")), "{text}");
        assert!(text.contains("- status: success"), "{text}");
        assert!(text.contains("Done."), "{text}");
    }
}

/// The names of the files under `dir`, at any depth.
fn file_names(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    out
}

fn check(cli: &str, evs: &[Value]) {
    let got = final_delegations(evs);
    for (agent, task) in WANT {
        let n = got
            .iter()
            .filter(|(a, t, _)| a == agent && t == task)
            .count();
        assert_eq!(n, 1, "{cli}: {agent}: {task:?} once; got {got:#?}");
    }
    assert_eq!(got.len(), WANT.len(), "{cli}: only these: {got:#?}");
    // Nothing provisional carries a task the final ones do not: no half-streamed row was final.
    let partial_final = evs.iter().any(|e| {
        e["kind"] == "detection"
            && e["category"] == "delegation"
            && e["final"] == true
            && !WANT
                .iter()
                .any(|(a, t)| e["agent"] == *a && e["task"] == *t)
    });
    assert!(!partial_final, "{cli}: a partial delegation was final");
}

/// The whole loop with codex: each delegation detected once, whole, and run through codex's own
/// headless form (`codex exec --json`, `agents.<name>.profile: codex`) against the fake server to
/// `success`, with a result file; nothing of either left after the session.
#[test]
fn codex_live_detects_each_delegation_once_and_runs_it_headless() {
    let exit: &[&[u8]] = &[b"\x03", b"\x03"];
    let Some(x) = exchange_then("codex", &["--no-daemon"], "Ask Codex", exit, false, true) else {
        return;
    };
    check("codex", &x.evs);
    check_ran("codex", &x);
}

/// `8-4-4-4-12` hex digits.
fn uuid_like(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && s.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
}

#[test]
fn gemini_live_detects_each_delegation_once_and_runs_it_headless() {
    let exit: &[&[u8]] = &[b"/quit", b"\r"];
    let Some(x) = exchange_then("gemini", &[], "Type your message", exit, false, true) else {
        return;
    };
    let (evs, files) = (&x.evs, &x.files);
    check("gemini", evs);
    check_ran("gemini", &x);
    // mpm pinned the session id (`--session-id <uuid>`): gemini named its chat file after it,
    // which is how mpm finds it.
    let started = evs
        .iter()
        .find(|e| e["kind"] == "session.started")
        .expect("session.started");
    let command: Vec<&str> = started["command"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let id = command
        .iter()
        .position(|a| *a == "--session-id")
        .and_then(|i| command.get(i + 1))
        .filter(|id| uuid_like(id))
        .unwrap_or_else(|| panic!("gemini: started without --session-id: {command:?}"));
    let suffix = format!("-{}.jsonl", &id[..8]);
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("session-") && f.ends_with(&suffix)),
        "gemini: no chat file named after {id}: {files:?}"
    );
}

#[test]
fn aider_live_detects_each_delegation_once_and_runs_it_headless() {
    let exit: &[&[u8]] = &[b"/exit", b"\r"];
    let Some(x) = exchange_then("aider", &[], "> ", exit, false, true) else {
        return;
    };
    let evs = &x.evs;
    check("aider", evs);
    check_ran("aider", &x);
    // The reply's `TODO: …` and `BUG: …` are consecutive lines of one markdown paragraph, which
    // rich's markdown would join into one line (`… LRU BUG: …`); aider 0.86.2 draws them apart,
    // and each is its own ticket, once.
    let tickets: Vec<(String, String)> = evs
        .iter()
        .filter(|e| e["kind"] == "detection" && e["category"] == "ticket")
        .filter(|e| e["final"] == true || e["is_final"] == true)
        .map(|e| {
            (
                e["ticket_type"].as_str().unwrap_or("").to_string(),
                e["title"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    for (kind, title) in [
        ("TODO", "cache fib() results between calls in a bounded LRU"),
        ("BUG", "fib(-1) never returns on the recursive path"),
    ] {
        let n = tickets
            .iter()
            .filter(|(k, t)| k == kind && t == title)
            .count();
        assert_eq!(n, 1, "aider: {kind}: {title} once in {tickets:#?}");
    }
    assert_eq!(
        tickets.len(),
        2,
        "aider: only the two tickets: {tickets:#?}"
    );
}

#[test]
fn opencode_live_detects_each_delegation_once_and_runs_it_headless() {
    // Its turn's end is the reply's footer getting its duration (`▣  Build · Fake model · 40.6s`).
    let exit: &[&[u8]] = &[b"\x03", b"\x03"];
    let Some(x) = exchange_then("opencode", &[], "Ask anything", exit, true, true) else {
        return;
    };
    let evs = &x.evs;
    check("opencode", evs);
    check_ran("opencode", &x);
    // Its store (what `opencode export` prints) is the exact source: the delegations came from
    // there, and the screen's copies were merged into them.
    let got = final_delegations(evs);
    assert!(
        got.iter().any(|(_, _, src)| src == "transcript"),
        "opencode: no delegation from its store: {got:#?}"
    );
    // Its API error, once (the box in the conversation, the toast and the store say it).
    let errors: Vec<&Value> = evs
        .iter()
        .filter(|e| e["kind"] == "detection" && e["category"] == "error")
        .filter(|e| e["text"].as_str().is_some_and(|t| t.contains(API_ERROR)))
        .collect();
    assert_eq!(errors.len(), 1, "opencode: the API error once: {errors:#?}");
}
