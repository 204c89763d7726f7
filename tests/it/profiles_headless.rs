//! Sub-agents run through each agent CLI's headless form (`agents.<name>.profile`), against the
//! project's fake LLM server (`fixtures/fake_llm.py`, `fixtures/scenarios/headless.json`): each
//! delegation ends `success` with a result file holding the scripted reply, the profile and the
//! usage the CLI reported, the role prompt reaches the model, and no process of the CLI is left
//! afterwards (found by a marker in the environment, which every descendant inherits).
//!
//! One test per CLI; a CLI that is not installed is SKIPPED (a failure under CI=true;
//! `.ci/install-clis.sh` installs the pinned versions).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::executor_support::{Harness, count};
use crate::realclient::{FakeServer, cli_bin, cli_prefix, skip_cli};
use mpm::config::{Config, SessionExitPolicy};
use mpm::events::{Event, EventBody};

/// The sub-agent's timeout, and how long the test waits for it (aider and opencode take 3-35 s
/// each on a loaded 2-core machine; opencode's first start is the slow one).
const CLI_TIMEOUT: Duration = Duration::from_secs(240);

const REPLY: &str = "fib(10) = 55. All 3 tests pass.";
const TASK: &str = "test fib() with 3 cases";

/// Processes whose environment holds `MPM_TEST_MARK=<mark>`: the CLI's whole tree, daemons
/// included (they inherit the environment). Killed on drop so a failing test leaves none.
pub(crate) struct Leftovers(pub String);

impl Leftovers {
    pub(crate) fn pids(&self) -> Vec<(i32, String)> {
        let needle = format!("MPM_TEST_MARK={}", self.0);
        let mut out = Vec::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return out;
        };
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(env) = std::fs::read(e.path().join("environ")) else {
                continue;
            };
            if env.split(|b| *b == 0).any(|v| v == needle.as_bytes()) {
                let cmd = std::fs::read(e.path().join("cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                    .unwrap_or_default();
                out.push((pid, cmd));
            }
        }
        out
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for (pid, _) in self.pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Write the CLI's throw-away configuration under `home` (and `work`), pointing it at `port`;
/// returns the environment it needs.
pub(crate) fn setup(cli: &str, home: &Path, work: &Path, port: u16) -> Vec<(String, String)> {
    let base = format!("http://127.0.0.1:{port}");
    let write = |p: PathBuf, text: String| {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    let mut env = vec![("HOME".to_string(), home.display().to_string())];
    match cli {
        "codex" => {
            let codex_home = home.join(".codex");
            let work = work.canonicalize().unwrap();
            write(
                codex_home.join("config.toml"),
                format!(
                    "model = \"gpt-5.4\"\nmodel_provider = \"fake\"\ncheck_for_update_on_startup = false\n\n\
                     [model_providers.fake]\nname = \"fake\"\nbase_url = \"{base}/v1\"\n\
                     env_key = \"FAKE_OPENAI_API_KEY\"\nwire_api = \"responses\"\n\n\
                     [projects.\"{}\"]\ntrust_level = \"trusted\"\n",
                    work.display()
                ),
            );
            env.push(("CODEX_HOME".into(), codex_home.display().to_string()));
            env.push(("FAKE_OPENAI_API_KEY".into(), "sk-test".into()));
        }
        "gemini" => {
            write(
                home.join(".gemini/settings.json"),
                r#"{"security": {"auth": {"selectedType": "gemini-api-key"}, "folderTrust": {"enabled": false}},
                    "privacy": {"usageStatisticsEnabled": false},
                    "general": {"enableAutoUpdate": false, "enableAutoUpdateNotification": false},
                    "ide": {"enabled": false, "hasSeenNudge": true}}"#
                    .into(),
            );
            env.push(("GEMINI_API_KEY".into(), "fake-key".into()));
            env.push(("GOOGLE_GEMINI_BASE_URL".into(), base));
        }
        "opencode" => {
            write(
                home.join(".config/opencode/opencode.json"),
                format!(
                    r#"{{"autoupdate": false, "share": "disabled",
                        "provider": {{"fake": {{"npm": "@ai-sdk/openai-compatible", "name": "Fake",
                          "options": {{"baseURL": "{base}/v1", "apiKey": "sk-test"}},
                          "models": {{"fake-model": {{"name": "Fake model"}}}}}}}},
                        "model": "fake/fake-model"}}"#
                ),
            );
            // Its first start installs plugin packages from npm; offline, it goes on without.
            env.push(("NPM_CONFIG_REGISTRY".into(), "http://127.0.0.1:9/".into()));
            for (var, sub) in [
                ("XDG_CONFIG_HOME", ".config"),
                ("XDG_DATA_HOME", ".local/share"),
                ("XDG_STATE_HOME", ".local/state"),
                ("XDG_CACHE_HOME", ".cache"),
            ] {
                env.push((var.into(), home.join(sub).display().to_string()));
            }
        }
        "aider" => {
            write(
                home.join(".aider.conf.yml"),
                format!(
                    "model: openai/gpt-4o\nopenai-api-base: {base}/v1\nopenai-api-key: sk-test\n\
                     check-update: false\nshow-release-notes: false\nanalytics-disable: true\n\
                     gitignore: false\nauto-commits: false\nshow-model-warnings: false\ngit: false\n"
                ),
            );
            // litellm fetches its price list from the internet unless the cache holds one: seed it
            // from the copy litellm ships.
            let cache = home.join(".aider/caches/model_prices_and_context_window.json");
            let backup = cli_prefix().and_then(|p| {
                std::fs::read_dir(p.join("aider/lib"))
                    .ok()?
                    .flatten()
                    .find_map(|py| {
                        let f = py.path().join(
                            "site-packages/litellm/model_prices_and_context_window_backup.json",
                        );
                        f.exists().then_some(f)
                    })
            });
            let text = backup
                .and_then(|b| std::fs::read_to_string(b).ok())
                .unwrap_or_else(|| "{}".into());
            write(cache, text);
            env.push(("LITELLM_LOCAL_MODEL_COST_MAP".into(), "True".into()));
        }
        other => panic!("no setup for {other}"),
    }
    env
}

/// Run one delegation of `qa` through `cli`'s headless form and check everything said above.
fn delegation_through(cli: &str) {
    let Some(bin) = cli_bin(cli) else {
        return skip_cli(cli);
    };
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let server = FakeServer::start("headless.json", dir.path());
    let mark = format!("{cli}-{}", std::process::id());
    let leftovers = Leftovers(mark.clone());

    let mut cfg = Config::default();
    cfg.run.grace_secs = 1.0;
    cfg.executor.timeout_secs = CLI_TIMEOUT.as_secs();
    let qa = cfg.agents.get_mut("qa").unwrap();
    qa.profile = Some(cli.to_string());
    qa.cwd = Some(work.clone());
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    qa.env.insert("PATH".into(), path);
    qa.env.insert("MPM_TEST_MARK".into(), mark);
    qa.env.extend(setup(cli, &home, &work, server.port));
    let role = qa.role.clone();

    let mut h = Harness::start(&cfg);
    h.submit("QA Agent", TASK);
    let deadline = Instant::now() + CLI_TIMEOUT + Duration::from_secs(30);
    while count(&h.events, "delegation.finished") < 1 {
        let left = deadline.saturating_duration_since(Instant::now());
        match h.rx.recv_timeout(left) {
            Ok(ev) => h.events.push(ev),
            Err(_) => panic!("{cli}: no delegation.finished; events:\n{}", h.dump()),
        }
    }
    // The executor stops what is left of the tree before it reports the end: nothing may remain.
    let left = leftovers.pids();
    assert!(left.is_empty(), "{cli}: processes left: {left:?}");

    let fin: Arc<Event> = h
        .events
        .iter()
        .find(|e| e.body.kind() == "delegation.finished")
        .cloned()
        .unwrap();
    let EventBody::DelegationFinished {
        delegation,
        status,
        result_path,
        ..
    } = &fin.body
    else {
        unreachable!()
    };
    let id = &delegation.delegation_id;
    let stderr = std::fs::read_to_string(h.out().join(format!("{id}.stderr"))).unwrap_or_default();
    let stdout = std::fs::read_to_string(h.out().join(format!("{id}.stdout"))).unwrap_or_default();
    assert_eq!(
        status.as_str(),
        "success",
        "{cli}: {}\nstdout: {stdout}\nstderr: {stderr}",
        h.dump()
    );
    let result = std::fs::read_to_string(result_path.as_deref().expect("a result file")).unwrap();
    assert!(
        result.starts_with("# mpm delegation: qa\n"),
        "{cli}: {result}"
    );
    for want in [
        format!("- profile: {cli}"),
        format!("- task: {TASK}"),
        "- status: success".to_string(),
    ] {
        assert!(result.contains(&want), "{cli}: {want:?} in\n{result}");
    }
    let tokens: u64 = result
        .lines()
        .find_map(|l| l.strip_prefix("- tokens: "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!("{cli}: no usage in the result file:\n{result}\nstdout: {stdout}")
        });
    assert!(tokens > 0, "{cli}");
    // The answer is the scripted reply, not the CLI's banner or event stream.
    assert_eq!(
        mpm::executor::result_file::body_of(&result).trim(),
        REPLY,
        "{cli}: {result}"
    );
    let answer = std::fs::read_to_string(h.out().join(format!("{id}.result.md"))).unwrap();
    assert_eq!(answer.trim(), REPLY, "{cli}");

    // The whole task reached the model, the role too: before the task for the CLIs without a
    // system-prompt flag (the scenario's rule `role-then-task`), as developer instructions for
    // codex (rule `role-as-system`). Rules match the whole message; the request log keeps only
    // its head.
    let rules: Vec<String> = server
        .requests()
        .iter()
        .filter_map(|r| r["rule"].as_str().map(str::to_string))
        .collect();
    let want = if cli == "codex" {
        "role-as-system"
    } else {
        "role-then-task"
    };
    assert!(
        rules.iter().any(|r| r == want),
        "{cli}: no turn matched rule {want:?}: {rules:?} (role {role:?})"
    );
    let summaries = h.shutdown(SessionExitPolicy::Cancel);
    assert_eq!(summaries.len(), 1);
    drop(leftovers);
}

#[test]
fn codex_exec_json_delegation_succeeds_with_result_and_usage() {
    delegation_through("codex");
}

#[test]
fn gemini_stream_json_delegation_succeeds_with_result_and_usage() {
    delegation_through("gemini");
}

#[test]
fn opencode_run_json_delegation_succeeds_with_result_and_usage() {
    delegation_through("opencode");
}

#[test]
fn aider_message_delegation_succeeds_with_result_and_usage() {
    delegation_through("aider");
}

/// The usage codex reports (`turn.completed`) counts against `executor.budgets`: with 100 tokens
/// per session, the first delegation (150 tokens) runs to its end and the next is rejected with a
/// reason naming the budget and the figure.
#[test]
fn codex_usage_counts_against_the_session_budget() {
    let cli = "codex";
    let Some(bin) = cli_bin(cli) else {
        return skip_cli(cli);
    };
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let server = FakeServer::start("headless.json", dir.path());
    let mark = format!("budget-{cli}-{}", std::process::id());
    let leftovers = Leftovers(mark.clone());

    let mut cfg = Config::default();
    cfg.run.grace_secs = 1.0;
    cfg.executor.timeout_secs = CLI_TIMEOUT.as_secs();
    cfg.executor.default_profile = cli.into();
    cfg.executor.budgets.tokens_per_session = Some(100);
    let qa = cfg.agents.get_mut("qa").unwrap();
    qa.cwd = Some(work.clone());
    qa.env.insert(
        "PATH".into(),
        format!(
            "{}:{}",
            bin.parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    );
    qa.env.insert("MPM_TEST_MARK".into(), mark);
    qa.env.extend(setup(cli, &home, &work, server.port));

    let mut h = Harness::start(&cfg);
    let wait_finished = |h: &mut Harness, n: usize| {
        let deadline = Instant::now() + CLI_TIMEOUT;
        while count(&h.events, "delegation.finished") < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match h.rx.recv_timeout(left) {
                Ok(ev) => h.events.push(ev),
                Err(_) => panic!("no delegation.finished #{n}; events:\n{}", h.dump()),
            }
        }
    };
    h.submit("QA Agent", TASK);
    wait_finished(&mut h, 1);
    assert_eq!(
        crate::executor_support::status(h.finished(TASK)),
        "success",
        "{}",
        h.dump()
    );
    let second = "test fib() with 3 cases, again";
    h.submit("QA Agent", second);
    wait_finished(&mut h, 2);
    let fin = h.finished(second);
    assert_eq!(
        crate::executor_support::status(fin),
        "rejected",
        "{}",
        h.dump()
    );
    let why = crate::executor_support::reason(fin);
    assert!(
        why.contains("tokens_per_session (100)") && why.contains("150 tokens spent"),
        "{why}"
    );
    h.shutdown(SessionExitPolicy::Cancel);
    drop(leftovers);
}

/// A profile of the user's own (no real CLI needed): its headless form has no `{role}`, so the
/// role prompt reaches the program before the task, in the one task argument; its `env` reaches
/// the sub-agent under the agent's own; `headless_output: text` puts stdout in the result file.
#[test]
fn user_profile_without_role_flag_gets_the_role_before_the_task() {
    let mut cfg = Config::default();
    cfg.profiles.insert(
        "echoer".into(),
        mpm::config::Profile {
            command: vec!["python3".into()],
            headless: [
                "python3",
                "-c",
                "import os, sys; print(repr(sys.argv[1:])); print(os.environ['FROM_PROFILE'], os.environ['BOTH'])",
                "{task}",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            env: [("FROM_PROFILE", "p"), ("BOTH", "profile")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            headless_output: mpm::config::HeadlessOutput::Text,
            ..Default::default()
        },
    );
    let qa = cfg.agents.get_mut("qa").unwrap();
    qa.profile = Some("echoer".into());
    qa.role = "You are QA.".into();
    qa.env.insert("BOTH".into(), "agent".into());
    let mut h = Harness::start(&cfg);
    h.submit("QA", "-v test fib()");
    h.until_finished(1);
    let fin = h.finished("-v test fib()");
    assert_eq!(
        crate::executor_support::status(fin),
        "success",
        "{}",
        h.dump()
    );
    let EventBody::DelegationFinished { result_path, .. } = &fin.body else {
        unreachable!()
    };
    let text = std::fs::read_to_string(result_path.as_deref().unwrap()).unwrap();
    let body = mpm::executor::result_file::body_of(&text);
    assert_eq!(
        body, "['You are QA.\\n\\n-v test fib()']\np agent\n",
        "one argument, role first: {text}"
    );
    assert!(text.contains("- profile: echoer"), "{text}");
}
