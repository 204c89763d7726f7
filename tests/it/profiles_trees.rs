//! No process of an interactive agent CLI outlives `mpm run` (issue 15, process trees): codex
//! (whose TUI, without the profile's `--no-daemon`, installs and starts a shared app-server daemon
//! outside mpm's tree) and gemini (a launcher that relaunches a child). Each runs under
//! `mpm --profile CLI run` (the profile's own command, with the flags mpm adds) against
//! `fixtures/fake_llm.py`; when its UI is up, mpm is told to stop (SIGTERM), and afterwards no
//! process carrying the test's environment marker may remain. SKIPPED when the CLI is missing (a
//! failure under CI).

use std::time::Duration;

use crate::common::{Spawn, TestEnv, wait_until};
use crate::profiles_headless::{Leftovers, setup};
use crate::realclient::{FakeServer, cli_bin, skip_cli};

/// Generous: node start-up on a loaded 2-core machine.
const UP: Duration = Duration::from_secs(60);

fn session_leaves_nothing(cli: &str, ready: &str) {
    let Some(bin) = cli_bin(cli) else {
        return skip_cli(cli);
    };
    let env = TestEnv::new();
    let home = env.path("home");
    let work = env.path("work");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let server = FakeServer::start("headless.json", env.dir.path());
    let mark = format!("tree-{cli}-{}", std::process::id());
    let leftovers = Leftovers(mark.clone());

    let mut spawn = Spawn::new(&env, &["--profile", cli, "run", "--no-daemon", "--no-exec"]);
    spawn.cols = 100;
    spawn.rows = 30;
    spawn.cwd = Some(&work);
    spawn.env.push((
        "PATH".into(),
        format!(
            "{}:{}",
            bin.parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    ));
    spawn.env.push(("MPM_TEST_MARK".into(), mark));
    spawn.env.extend(setup(cli, &home, &work, server.port));
    let mut pty = spawn.start();
    assert!(
        wait_until(UP, || pty.text().contains(ready)),
        "{cli} never showed {ready:?}; processes: {:?}\nterminal:\n{}",
        leftovers.pids(),
        pty.text()
    );
    let running = leftovers.pids();
    let of_cli = |procs: &[(i32, String)]| {
        procs
            .iter()
            .filter(|(_, cmd)| !cmd.starts_with(crate::common::mpm_bin()))
            .cloned()
            .collect::<Vec<_>>()
    };
    let cli_procs = of_cli(&running);
    assert!(
        cli_procs.iter().any(|(_, cmd)| cmd.contains(cli)),
        "{cli} runs under mpm: {running:?}"
    );
    if cli == "gemini" {
        // 0.61.0's launcher relaunches itself as a child with a larger heap.
        assert!(
            cli_procs.len() >= 2,
            "gemini's launcher and its relaunched child: {running:?}"
        );
    }
    pty.signal(nix::sys::signal::Signal::SIGTERM);
    pty.wait_within(UP);
    // mpm stops the whole tree (group, members, tagged escapees) before it exits.
    let left = of_cli(&leftovers.pids());
    assert!(
        left.is_empty(),
        "{cli}: processes left after mpm ended: {left:?}"
    );
    // mpm's own watchdog ends when it sees mpm's end (its pipe closes).
    assert!(
        wait_until(UP, || leftovers.pids().is_empty()),
        "left: {:?}",
        leftovers.pids()
    );
    if cli == "codex" {
        // `--no-daemon`: the shared app-server was not even installed.
        assert!(
            !home.join(".codex/app-server-daemon").exists()
                && !home.join(".codex/packages/app-server-daemon").exists(),
            "codex prepared its daemon despite --no-daemon"
        );
    }
    drop(leftovers);
}

#[test]
fn codex_session_starts_without_daemon_and_leaves_no_process() {
    // Up and idle: 0.171.0 says so in an OSC 7501 sequence (`state=idle:app=codex`).
    session_leaves_nothing("codex", "state=idle");
}

#[test]
fn gemini_session_and_its_relaunched_child_leave_no_process() {
    // The OSC 0 title when idle: `◇  Ready (work)`.
    session_leaves_nothing("gemini", "Ready (work)");
}
