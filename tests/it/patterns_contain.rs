//! A panic in the live detection pipeline is contained (debug builds inject one through
//! `MPM_DEBUG_PANIC_DETECT`): the pass-through and the terminal go on untouched, no report lands
//! in the terminal, and a `detection.restarted` event says what happened.

use std::path::Path;
use std::time::Duration;

use nix::sys::termios::LocalFlags;
use serde_json::Value;

use crate::common::*;

const MARKER: &str = "PANIC-MARKER-7";

use crate::common::read_events as events;

fn restarts(path: &Path) -> Vec<Value> {
    events(path)
        .into_iter()
        .filter(|e| e["kind"] == "detection.restarted")
        .collect()
}

fn titles(path: &Path) -> Vec<String> {
    events(path)
        .iter()
        .filter(|e| e["kind"] == "detection")
        .filter_map(|e| e["title"].as_str().map(str::to_string))
        .collect()
}

fn start(env: &TestEnv, events: &Path, steps: &[&str]) -> PtyProc {
    let fake = fake_agent();
    let mut args = vec![
        "run",
        "--no-exec",
        "--events-file",
        events.to_str().unwrap_or_default(),
        "--",
        &fake,
    ];
    args.extend_from_slice(steps);
    let mut spawn = Spawn::new(env, &args);
    spawn
        .env
        .push(("MPM_DEBUG_PANIC_DETECT".into(), MARKER.into()));
    spawn.start()
}

fn assert_no_report(p: &PtyProc) {
    let text = p.text();
    for needle in ["panicked", "backtrace", "injected", "RUST_BACKTRACE"] {
        assert!(
            !text.contains(needle),
            "{needle:?} in the terminal:\n{text}"
        );
    }
}

#[test]
fn a_detection_panic_restarts_detection_and_leaves_the_terminal_alone() {
    let env = TestEnv::new();
    let ev = env.path("events.jsonl");
    let mut p = start(
        &env,
        &ev,
        &[
            "print:TODO: before the panic",
            &format!("print:{MARKER}"),
            "ready",
            "echo",
            "print:TODO: after the panic",
        ],
    );
    p.expect("READY");
    assert!(
        wait_until(Duration::from_secs(20), || !restarts(&ev).is_empty()),
        "no detection.restarted event; terminal:\n{}",
        p.text()
    );
    // Still raw: the panic did not put the terminal back into cooked mode.
    assert!(!p.termios().local_flags.contains(LocalFlags::ICANON));
    // The pass-through goes on.
    p.send(b"still here\r");
    p.expect("echo: still here");
    p.send(b"\x04");
    p.expect("EOF");
    assert_eq!(p.wait().code(), Some(0), "terminal:\n{}", p.text());
    assert_no_report(&p);
    let r = restarts(&ev);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["panics"], 1);
    assert_eq!(r[0]["stopped"], false);
    assert!(
        r[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("injected"),
        "{r:?}"
    );
    // Detection was rebuilt and found the ticket after the panic.
    assert!(
        titles(&ev).iter().any(|t| t == "after the panic"),
        "{:?}",
        events(&ev)
    );
}

#[test]
fn repeated_detection_panics_stop_detection_but_not_the_session() {
    let env = TestEnv::new();
    let ev = env.path("events.jsonl");
    let mut p = start(
        &env,
        &ev,
        &["ready", "echo", "print:TODO: after detection stopped"],
    );
    p.expect("READY");
    for i in 0..10 {
        if restarts(&ev).iter().any(|r| r["stopped"] == true) {
            break;
        }
        p.send(format!("{MARKER} {i}\r").as_bytes());
        p.expect(&format!("echo: {MARKER} {i}"));
        // Each chunk with the marker panics once; wait for its event before the next line.
        let before = restarts(&ev).len();
        wait_until(Duration::from_secs(10), || restarts(&ev).len() > before);
    }
    let r = restarts(&ev);
    let flags: Vec<(u64, bool)> = r
        .iter()
        .map(|e| {
            (
                e["panics"].as_u64().unwrap_or_default(),
                e["stopped"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(flags, [(1, false), (2, false), (3, true)], "{r:?}");
    assert!(!p.termios().local_flags.contains(LocalFlags::ICANON));
    p.send(b"\x04");
    p.expect("EOF");
    assert_eq!(p.wait().code(), Some(0), "terminal:\n{}", p.text());
    assert_no_report(&p);
    assert!(
        !titles(&ev).iter().any(|t| t == "after detection stopped"),
        "{:?}",
        events(&ev)
    );
}
