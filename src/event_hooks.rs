//! User hooks on events (`hooks:` in the config): each hook is an argv, run directly (never through
//! a shell) with the event as one JSON line on stdin, for the event kinds it lists, bounded by its
//! timeout. Not to be confused with the agent CLI's own hooks (`mpm hook EVENT`).
//!
//! One thread per session reads the bus and starts hooks; each run is its own process group with
//! stdout and stderr discarded, waited for on a short-lived thread, and stopped (SIGTERM to the
//! group, 1 s grace, SIGKILL) at its timeout. At most [`MAX_RUNNING`] hooks run at once; an event
//! that finds them all busy skips the hook (logged). A hook that cannot start, fails or times out is
//! logged, never fatal, and never stops the session.

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::EventHook;
use crate::events::{Bus, Event};

/// Hook processes running at once, per session.
pub(crate) const MAX_RUNNING: usize = 4;

/// Whether `hook` wants events of `kind`: an exact kind, a prefix ending in `*`, or all when `on`
/// is empty.
pub(crate) fn wants(hook: &EventHook, kind: &str) -> bool {
    hook.on.is_empty()
        || hook.on.iter().any(|k| match k.strip_suffix('*') {
            Some(prefix) => kind.starts_with(prefix),
            None => k == kind,
        })
}

/// How one hook run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HookEnd {
    Exited(i32),
    TimedOut,
    CannotStart(String),
}

/// Run one hook with `event` on stdin; blocks until it ends or is stopped at its timeout.
pub(crate) fn run_hook(hook: &EventHook, event: &Event) -> HookEnd {
    let Some((prog, args)) = hook.argv.split_first() else {
        return HookEnd::CannotStart("empty argv".into());
    };
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env("MPM_EVENT_KIND", event.kind())
        .env("MPM_SESSION", &event.session)
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return HookEnd::CannotStart(format!("{prog}: {e}")),
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read stdin (or exits early) closes the pipe: not an error.
        let _ = writeln!(stdin, "{}", event.to_json_line());
    }
    let timeout =
        Duration::try_from_secs_f64(hook.timeout_secs.max(0.0)).unwrap_or(Duration::from_secs(10));
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return HookEnd::Exited(crate::process::shell_status(status)),
            Ok(None) => {}
            Err(e) => return HookEnd::CannotStart(format!("{prog}: {e}")),
        }
        if Instant::now() >= deadline {
            let pid = child.id() as i32;
            crate::process::stop_tree(pid, Duration::from_secs(1));
            let _ = child.kill();
            let _ = child.wait();
            return HookEnd::TimedOut;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// The per-session hook runner; stops with the bus (or when dropped).
pub(crate) struct EventHooks {
    thread: Option<JoinHandle<()>>,
    running: Arc<AtomicUsize>,
    longest: Duration,
}

impl EventHooks {
    /// Start running `hooks` for the events of `bus`; `None` when there are no hooks.
    pub(crate) fn start(bus: &Bus, hooks: &[EventHook]) -> Option<EventHooks> {
        if hooks.is_empty() {
            return None;
        }
        let rx = bus.subscribe();
        let hooks: Arc<Vec<EventHook>> = Arc::new(hooks.to_vec());
        let running = Arc::new(AtomicUsize::new(0));
        let counter = running.clone();
        let longest = hooks
            .iter()
            .map(|h| {
                Duration::try_from_secs_f64(h.timeout_secs.max(0.0))
                    .unwrap_or(Duration::from_secs(10))
            })
            .max()
            .unwrap_or_default();
        let thread = std::thread::Builder::new()
            .name("mpm-event-hooks".into())
            .spawn(move || {
                for event in rx.iter() {
                    for (i, hook) in hooks.iter().enumerate() {
                        if !wants(hook, event.kind()) {
                            continue;
                        }
                        if running.fetch_add(1, Ordering::SeqCst) >= MAX_RUNNING {
                            running.fetch_sub(1, Ordering::SeqCst);
                            tracing::warn!(hook = i, kind = event.kind(), "event hook skipped: {MAX_RUNNING} already running");
                            continue;
                        }
                        let (hooks, event, done) = (hooks.clone(), event.clone(), running.clone());
                        let spawned = std::thread::Builder::new()
                            .name("mpm-event-hook".into())
                            .spawn(move || {
                                let hook = &hooks[i];
                                match run_hook(hook, &event) {
                                    HookEnd::Exited(0) => {
                                        tracing::debug!(hook = ?hook.argv, kind = event.kind(), "event hook ran")
                                    }
                                    end => tracing::warn!(hook = ?hook.argv, kind = event.kind(), ?end, "event hook failed"),
                                }
                                done.fetch_sub(1, Ordering::SeqCst);
                            });
                        if let Err(e) = spawned {
                            running.fetch_sub(1, Ordering::SeqCst);
                            tracing::warn!(error = %e, "cannot start an event hook thread");
                        }
                    }
                }
            });
        spawned_or_log(thread).map(|t| EventHooks {
            thread: Some(t),
            running: counter,
            longest,
        })
    }

    /// Wait for the runner to see the bus close, then for the hooks still running (each is
    /// bounded by its timeout), so none outlives mpm unsupervised.
    pub(crate) fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let deadline = Instant::now() + self.longest + Duration::from_secs(2);
        while self.running.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn spawned_or_log(r: std::io::Result<JoinHandle<()>>) -> Option<JoinHandle<()>> {
    r.map_err(|e| tracing::warn!(error = %e, "cannot start the event hook runner"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Context, EventBody};

    fn hook(on: &[&str], argv: &[&str], timeout: f64) -> EventHook {
        EventHook {
            on: on.iter().map(|s| s.to_string()).collect(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            timeout_secs: timeout,
        }
    }

    fn event() -> Arc<Event> {
        let bus = Bus::new(Context::with_session("s1"));
        bus.emit(EventBody::SessionExited {
            exit_code: Some(0),
            signal: None,
            duration_ms: 1,
            tap_overrun_bytes: 0,
        })
    }

    #[test]
    fn kinds_filter_exactly_or_by_prefix() {
        assert!(wants(&hook(&[], &["x"], 1.0), "detection"));
        assert!(wants(&hook(&["resource.*"], &["x"], 1.0), "resource.limit"));
        assert!(!wants(&hook(&["resource.*"], &["x"], 1.0), "detection"));
        assert!(wants(&hook(&["detection"], &["x"], 1.0), "detection"));
        assert!(!wants(
            &hook(&["detection"], &["x"], 1.0),
            "detection.final"
        ));
    }

    #[test]
    fn the_event_arrives_on_stdin_and_argv_is_never_a_shell() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("got");
        let h = hook(&[], &["tee", out.to_str().unwrap()], 10.0);
        assert_eq!(run_hook(&h, &event()), HookEnd::Exited(0));
        let text = std::fs::read_to_string(&out).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["kind"], "session.exited");
        assert_eq!(v["session"], "s1");
        // `;` is an argument, not a command separator.
        let h = hook(&[], &["echo", "a; touch", out.to_str().unwrap()], 10.0);
        assert_eq!(run_hook(&h, &event()), HookEnd::Exited(0));
    }

    #[test]
    fn failures_and_timeouts_are_reported_not_fatal() {
        assert!(matches!(
            run_hook(&hook(&[], &["/no/such/hook"], 1.0), &event()),
            HookEnd::CannotStart(_)
        ));
        assert_eq!(
            run_hook(&hook(&[], &["false"], 5.0), &event()),
            HookEnd::Exited(1)
        );
        assert_eq!(
            run_hook(&hook(&[], &["sleep", "30"], 0.2), &event()),
            HookEnd::TimedOut
        );
    }
}
