//! Notifications: when a session needs input, is blocked on a usage limit, a batch of delegations
//! has finished, or a resource limit stopped an agent. Each goes to the attached terminal as an
//! OSC 9 and an OSC 777 desktop notification plus a bell (`notify.terminal`), and to `notify-send`
//! when it is installed (`notify.desktop`, run like an event hook: argv, timeout, never a shell).
//!
//! The terminal bytes go through a narrow writer the session provides. They are written between
//! the agent's output chunks, never inside mpm's relay; a terminal that does not know OSC 9/777
//! ignores them and rings the bell.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::config::{EventHook, NotifyConfig};
use crate::events::{Bus, Event, EventBody, Resource, SessionState};

/// Writes bytes to the user's terminal.
pub(crate) type TerminalWriter = Box<dyn Fn(&[u8]) + Send + Sync>;

/// The notification text for an event, if it deserves one; `outstanding` counts delegations
/// queued and not yet finished, `batch` those finished since the last batch notification.
#[derive(Debug, Default)]
pub(crate) struct Decider {
    outstanding: std::collections::HashSet<String>,
    batch_ok: u32,
    batch_failed: u32,
    /// The last limit that stopped the main agent, as one line.
    pub main_limit: Option<String>,
}

/// "the governor stopped ...: memory 2100 MB over its hard limit of 2048 MB".
pub(crate) fn limit_line(r: &Resource, agent: Option<&str>) -> String {
    let who = match (&r.delegation_id, agent) {
        (Some(_), Some(a)) => format!("the {a} delegation"),
        (Some(id), None) => format!("delegation {}", crate::executor::result_file::cut(id, 8)),
        (None, _) => "the agent".to_string(),
    };
    match r.resource.as_deref() {
        Some("cpu") => format!(
            "mpm: the governor stopped {who}: CPU {:.0}% over its hard limit of {:.0}%",
            r.cpu_percent, r.threshold
        ),
        _ => format!(
            "mpm: the governor stopped {who}: memory {:.0} MB over its hard limit of {:.0} MB",
            r.rss_mb, r.threshold
        ),
    }
}

impl Decider {
    pub(crate) fn decide(&mut self, ev: &Event) -> Option<String> {
        match &ev.body {
            EventBody::SessionState {
                state: SessionState::NeedsInput,
                ..
            } => Some("mpm: the agent needs your input".into()),
            EventBody::SessionState {
                state: SessionState::Blocked,
                resets_at,
                ..
            } => Some(match resets_at {
                Some(t) => format!("mpm: the agent is blocked on a usage limit (resets {t})"),
                None => "mpm: the agent is blocked on a usage limit".into(),
            }),
            EventBody::DelegationQueued(d) => {
                self.outstanding.insert(d.delegation_id.clone());
                None
            }
            EventBody::DelegationFinished {
                delegation, status, ..
            } => {
                self.outstanding.remove(&delegation.delegation_id);
                if *status == crate::events::DelegationStatus::Success {
                    self.batch_ok += 1;
                } else {
                    self.batch_failed += 1;
                }
                if !self.outstanding.is_empty() {
                    return None;
                }
                let (ok, failed) = (self.batch_ok, self.batch_failed);
                self.batch_ok = 0;
                self.batch_failed = 0;
                let n = ok + failed;
                let noun = if n == 1 { "delegation" } else { "delegations" };
                Some(format!(
                    "mpm: {n} {noun} finished ({ok} succeeded, {failed} did not)"
                ))
            }
            EventBody::ResourceLimit(r) => {
                let line = limit_line(r, None);
                if r.delegation_id.is_none() {
                    self.main_limit = Some(line.clone());
                }
                Some(line)
            }
            _ => None,
        }
    }
}

/// OSC 9 + OSC 777 + BEL for `text` (control characters removed).
pub(crate) fn terminal_bytes(text: &str) -> Vec<u8> {
    let clean: String = text.chars().filter(|c| !c.is_control()).collect();
    format!("\x1b]9;{clean}\x07\x1b]777;notify;mpm;{clean}\x07\x07").into_bytes()
}

/// The user's terminal as stderr, when stderr is a terminal (in-process `mpm run`).
pub(crate) fn stderr_terminal() -> Option<TerminalWriter> {
    // SAFETY: fd 2 stays open for the life of the process.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(2) };
    if !nix::unistd::isatty(fd).unwrap_or(false) {
        return None;
    }
    Some(Box::new(|bytes| {
        // SAFETY: as above.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(2) };
        let _ = crate::pty::fdio::write_all(fd, bytes);
    }))
}

/// Whether `notify-send` is on PATH.
fn desktop_available() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("notify-send").is_file()))
}

/// Remembers, synchronously with the emit, the line saying which limit stopped the main agent
/// (the in-process `mpm run` reads it through its [`Notifier`]; the daemon attaches one per hosted
/// session and sends the line to the client with the summary).
#[derive(Debug, Default)]
pub(crate) struct LimitWatch(Mutex<Option<String>>);

impl LimitWatch {
    /// A watch fed by every event of `bus` from now on.
    pub(crate) fn attach(bus: &Bus) -> Arc<LimitWatch> {
        let w = Arc::new(LimitWatch::default());
        bus.add_sink(w.clone());
        w
    }

    /// The line, once a limit stopped the main agent.
    pub(crate) fn line(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl crate::events::Sink for LimitWatch {
    fn write(&self, ev: &Event) {
        if let EventBody::ResourceLimit(r) = &ev.body
            && r.delegation_id.is_none()
        {
            *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(limit_line(r, None));
        }
    }
}

/// The per-session notifier thread.
pub(crate) struct Notifier {
    thread: Option<JoinHandle<()>>,
    limit: Arc<LimitWatch>,
}

impl Notifier {
    /// Start notifying about `bus`'s events; `terminal` writes to the attached terminal.
    pub(crate) fn start(
        bus: &Bus,
        cfg: &NotifyConfig,
        terminal: Option<TerminalWriter>,
    ) -> Notifier {
        let rx = bus.subscribe();
        let terminal = terminal.filter(|_| cfg.terminal);
        let desktop = cfg.desktop && desktop_available();
        let limit = Arc::new(LimitWatch::default());
        bus.add_sink(limit.clone());
        let thread = std::thread::Builder::new()
            .name("mpm-notify".into())
            .spawn(move || {
                let mut d = Decider::default();
                for ev in rx.iter() {
                    let Some(text) = d.decide(&ev) else { continue };
                    tracing::info!(%text, "notification");
                    if let Some(w) = &terminal {
                        w(&terminal_bytes(&text));
                    }
                    if desktop {
                        let hook = EventHook {
                            on: Vec::new(),
                            argv: vec!["notify-send".into(), "mpm".into(), text],
                            timeout_secs: 5.0,
                        };
                        let ev = ev.clone();
                        let _ = std::thread::Builder::new()
                            .name("mpm-notify-send".into())
                            .spawn(move || crate::event_hooks::run_hook(&hook, &ev));
                    }
                }
            })
            .map_err(|e| tracing::warn!(error = %e, "cannot start the notifier"))
            .ok();
        Notifier { thread, limit }
    }

    /// The line saying which limit stopped the main agent and the figure, once one did (set
    /// when `resource.limit` is emitted, so it is there when the session returns).
    pub(crate) fn main_limit_line(&self) -> Option<String> {
        self.limit
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Wait until the notifier has seen the bus close.
    pub(crate) fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Context, Delegation, DelegationStatus, ResourceAction};

    fn d(id: &str) -> Delegation {
        Delegation {
            delegation_id: id.into(),
            agent: "qa".into(),
            task: "t".into(),
        }
    }

    fn fin(id: &str, status: DelegationStatus) -> EventBody {
        EventBody::DelegationFinished {
            delegation: d(id),
            status,
            exit_code: None,
            duration_ms: 1,
            output_path: None,
            reason: None,
            worker: None,
            result_path: None,
        }
    }

    #[test]
    fn notifies_once_per_finished_batch_and_on_states_and_limits() {
        let bus = Bus::new(Context::new());
        let rx = bus.subscribe();
        let mut dec = Decider::default();
        bus.emit(EventBody::DelegationQueued(d("a")));
        bus.emit(EventBody::DelegationQueued(d("b")));
        bus.emit(fin("a", DelegationStatus::Success));
        bus.emit(fin("b", DelegationStatus::Failed));
        bus.emit(EventBody::SessionState {
            state: SessionState::Blocked,
            previous: Some(SessionState::Working),
            reason: "screen".into(),
            resets_at: Some("5pm".into()),
        });
        bus.emit(EventBody::ResourceLimit(Resource {
            pid: 1,
            rss_mb: 2100.4,
            cpu_percent: 3.0,
            threshold: 2048.0,
            action: ResourceAction::Terminate,
            resource: Some("memory".into()),
            delegation_id: None,
        }));
        let said: Vec<String> = rx.try_iter().filter_map(|e| dec.decide(&e)).collect();
        assert_eq!(
            said,
            [
                "mpm: 2 delegations finished (1 succeeded, 1 did not)",
                "mpm: the agent is blocked on a usage limit (resets 5pm)",
                "mpm: the governor stopped the agent: memory 2100 MB over its hard limit of 2048 MB",
            ]
        );
        assert!(dec.main_limit.is_some());
        let bytes = terminal_bytes("hi\x1b]x");
        assert_eq!(bytes, b"\x1b]9;hi]x\x07\x1b]777;notify;mpm;hi]x\x07\x07");
    }

    #[test]
    fn notifier_writes_to_the_terminal() {
        let bus = Bus::new(Context::new());
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = Mutex::new(tx);
        let n = Notifier::start(
            &bus,
            &NotifyConfig {
                terminal: true,
                desktop: false,
            },
            Some(Box::new(move |b| {
                let _ = tx.lock().unwrap().send(b.to_vec());
            })),
        );
        bus.emit(EventBody::SessionState {
            state: SessionState::NeedsInput,
            previous: Some(SessionState::Working),
            reason: "screen".into(),
            resets_at: None,
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(got, terminal_bytes("mpm: the agent needs your input"));
        bus.close();
        n.join();
    }
}
