//! Closing the loop: delegation results back to the main agent, and what the user sees of them.
//!
//! - [`Feedback`]: the per-session actor. It subscribes to the bus, groups the delegations a turn
//!   started into batches ([`batch`]), and hands each finished batch to the main agent as ONE
//!   message ([`message`]), through the profile's channel (`profiles.<name>.feedback`):
//!   claude's Stop hook ([`FeedbackHandle::on_stop`]: the hook blocks with the results as the
//!   reason, so claude continues with them), the next prompt ([`FeedbackHandle::on_user_prompt`]:
//!   added as context), or a bracketed paste into the PTY while the session is idle and the user
//!   is not typing ([`port`]). Each delivery is a `delegation.feedback` event; a result never
//!   delivered stays pending (`mpm delegations list`).
//! - [`ledger`]: one record per delegation folded from events (`mpm delegations`, `mpm top`).
//! - [`prompt`]: the delegation protocol `inject` mode teaches the main agent (`mpm prompt`).
//! - [`summary`]: the end-of-session summary of `mpm run`.
//!
//! Wiring: the session connects a [`port::PtyPort`] (writer + typing + output activity); the
//! agent CLI's hook server (`mpm hook EVENT`, see `crate::hook` when present) calls the handle.

pub(crate) mod batch;
pub(crate) mod ledger;
pub(crate) mod message;
pub(crate) mod port;
pub(crate) mod prompt;
pub(crate) mod summary;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::config::{FeedbackMode, OrchestrationConfig};
use crate::events::{Bus, EventBody, FeedbackVia, SessionState};

use batch::{Batcher, Ready};
use port::PtyPort;

/// Pause between a paste and the Enter that submits it (a TUI handles the paste first).
const SUBMIT_DELAY: Duration = Duration::from_millis(100);
/// How often the actor looks again while a batch waits (closing windows, idleness).
const TICK: Duration = Duration::from_millis(100);

enum Cmd {
    Stop {
        reply: Sender<Option<String>>,
        deadline: Instant,
    },
    Prompt {
        reply: Sender<Option<String>>,
    },
    Close,
}

/// The session's feedback actor (see the module docs). Dropping it without [`close`](Self::close)
/// also stops it.
pub(crate) struct Feedback {
    mode: FeedbackMode,
    tx: Sender<Cmd>,
    thread: Option<JoinHandle<()>>,
    port: Arc<PtyPort>,
}

/// A cheap handle for the hook side: answers claude's Stop and UserPromptSubmit hooks.
#[derive(Clone)]
pub(crate) struct FeedbackHandle {
    tx: Sender<Cmd>,
    stop_wait: Duration,
}

impl FeedbackHandle {
    /// claude's Stop hook: `Some(reason)` blocks the stop with the turn's results (claude then
    /// continues with them as its next input); `None` lets it stop. Waits (at most
    /// `orchestration.stop_wait_secs`) for the turn's delegations to finish.
    pub(crate) fn on_stop(&self, _payload: &serde_json::Value) -> Option<String> {
        let (reply, rx) = crossbeam_channel::bounded(1);
        let deadline = Instant::now() + self.stop_wait;
        self.tx.send(Cmd::Stop { reply, deadline }).ok()?;
        rx.recv_deadline(deadline + Duration::from_secs(1))
            .ok()
            .flatten()
    }

    /// claude's UserPromptSubmit hook: finished results not yet delivered, as context for the
    /// prompt; `None` when there are none.
    pub(crate) fn on_user_prompt(&self, _payload: &serde_json::Value) -> Option<String> {
        let (reply, rx) = crossbeam_channel::bounded(1);
        self.tx.send(Cmd::Prompt { reply }).ok()?;
        rx.recv_timeout(Duration::from_secs(5)).ok().flatten()
    }
}

/// What the actor needs; see [`Feedback::start`].
pub(crate) struct FeedbackOptions {
    pub mode: FeedbackMode,
    pub orchestration: OrchestrationConfig,
}

/// The feedback channel for `argv` under the active profile: the profile's `feedback`, except that
/// a command that is neither claude nor the profile's own CLI (`mpm run -- bash` under the claude
/// profile) gets none: mpm never types into a program it was not told about.
pub(crate) fn mode_for(cfg: &crate::config::Config, argv: &[String]) -> FeedbackMode {
    let Some(profile) = cfg.profiles.get(&cfg.profile) else {
        return FeedbackMode::Off;
    };
    let base = |p: &str| {
        std::path::Path::new(p)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let same_cli = match (argv.first(), profile.command.first()) {
        (Some(a), Some(b)) => base(a) == base(b),
        _ => false,
    };
    if crate::supervisor::is_claude(argv) || same_cli {
        profile.feedback
    } else {
        FeedbackMode::Off
    }
}

/// Start the feedback actor for a session running `argv`; `None` when results are not fed back
/// (or the thread cannot start, which is logged).
pub(crate) fn start_for(
    cfg: &crate::config::Config,
    argv: &[String],
    bus: &Bus,
) -> Option<Feedback> {
    let mode = mode_for(cfg, argv);
    if mode == FeedbackMode::Off {
        return None;
    }
    match Feedback::start(
        bus,
        FeedbackOptions {
            mode,
            orchestration: cfg.orchestration.clone(),
        },
    ) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the feedback thread: results stay pending");
            None
        }
    }
}

impl Feedback {
    /// Start the actor for one session on `bus`. With `FeedbackMode::Off` no thread starts and the
    /// handle answers nothing.
    pub(crate) fn start(bus: &Bus, o: FeedbackOptions) -> std::io::Result<Feedback> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let port = PtyPort::new();
        let thread = if o.mode == FeedbackMode::Off {
            None
        } else {
            let events = bus.subscribe();
            let actor = Actor {
                bus: bus.clone(),
                mode: o.mode,
                batcher: Batcher::new(
                    Duration::from_millis(o.orchestration.batch_window_ms),
                    o.orchestration.feedback_lines,
                    o.orchestration.feedback_max_bytes,
                    o.orchestration.max_feedback_per_session,
                ),
                port: port.clone(),
                idle_quiet: Duration::from_millis(o.orchestration.idle_quiet_ms),
                typing_quiet: Duration::from_millis(o.orchestration.typing_quiet_ms),
                window: Duration::from_millis(o.orchestration.batch_window_ms),
                state: None,
                waiters: Vec::new(),
            };
            Some(
                std::thread::Builder::new()
                    .name("mpm-feedback".into())
                    .spawn(move || actor.run(events, rx))?,
            )
        };
        Ok(Feedback {
            mode: o.mode,
            tx,
            thread,
            port,
        })
    }

    /// The channel results take.
    pub(crate) fn mode(&self) -> FeedbackMode {
        self.mode
    }

    /// The session's side of paste delivery.
    pub(crate) fn port(&self) -> Arc<PtyPort> {
        self.port.clone()
    }

    pub(crate) fn handle(&self, stop_wait: Duration) -> FeedbackHandle {
        FeedbackHandle {
            tx: self.tx.clone(),
            stop_wait,
        }
    }

    /// Stop the actor; undelivered results stay pending.
    pub(crate) fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.port.disconnect();
        let _ = self.tx.send(Cmd::Close);
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("feedback thread panicked");
        }
    }
}

impl Drop for Feedback {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Waiter {
    reply: Sender<Option<String>>,
    since: Instant,
    deadline: Instant,
}

struct Actor {
    bus: Bus,
    mode: FeedbackMode,
    batcher: Batcher,
    port: Arc<PtyPort>,
    idle_quiet: Duration,
    typing_quiet: Duration,
    window: Duration,
    /// The latest `session.state`, when the session publishes one.
    state: Option<SessionState>,
    waiters: Vec<Waiter>,
}

impl Actor {
    fn run(mut self, events: Receiver<Arc<crate::events::Event>>, cmds: Receiver<Cmd>) {
        loop {
            let busy = self.batcher.has_batches() || !self.waiters.is_empty();
            let timeout = if busy {
                TICK
            } else {
                Duration::from_secs(3600)
            };
            crossbeam_channel::select! {
                recv(events) -> ev => match ev {
                    Ok(ev) => {
                        if let EventBody::SessionState { state, .. } = &ev.body {
                            self.state = Some(*state);
                        }
                        self.batcher.on_event(&ev, Instant::now());
                    }
                    Err(_) => break, // the bus closed
                },
                recv(cmds) -> cmd => match cmd {
                    Ok(Cmd::Stop { reply, deadline }) => {
                        let now = Instant::now();
                        self.batcher.turn_ended(now);
                        if self.mode == FeedbackMode::OnIdle {
                            self.waiters.push(Waiter { reply, since: now, deadline });
                        } else {
                            let _ = reply.send(None);
                        }
                    }
                    Ok(Cmd::Prompt { reply }) => {
                        let _ = reply.send(self.for_prompt());
                    }
                    Ok(Cmd::Close) | Err(_) => break,
                },
                default(timeout) => {}
            }
            self.step();
        }
        for w in self.waiters.drain(..) {
            let _ = w.reply.send(None);
        }
    }

    fn deliver(&self, r: &Ready, via: FeedbackVia) {
        tracing::info!(
            delegations = r.ids.len(),
            bytes = r.text.len(),
            ?via,
            "results handed to the main agent"
        );
        self.bus.emit(EventBody::DelegationFeedback {
            delegation_ids: r.ids.clone(),
            via,
            bytes: r.text.len() as u64,
        });
    }

    /// Every ready message, joined (the next prompt takes them all).
    fn for_prompt(&mut self) -> Option<String> {
        self.batcher.close_finished();
        let mut texts = Vec::new();
        while let Some(r) = self.batcher.take_ready(Instant::now()) {
            self.deliver(&r, FeedbackVia::NextPrompt);
            texts.push(r.text);
        }
        (!texts.is_empty()).then(|| texts.join("\n"))
    }

    fn step(&mut self) {
        let now = Instant::now();
        // Stop hooks waiting: the first gets the next ready message.
        if !self.waiters.is_empty() {
            if let Some(r) = self.batcher.take_ready(now) {
                let w = self.waiters.remove(0);
                match w.reply.send(Some(r.text.clone())) {
                    Ok(()) => self.deliver(&r, FeedbackVia::StopHook),
                    Err(_) => tracing::warn!("a Stop hook gave up before its results were ready"),
                }
            }
            let window = self.window;
            let nothing = !self.batcher.has_batches();
            // Past the cap nothing will come: claude may stop at once.
            let capped = self.batcher.capped();
            self.waiters.retain(|w| {
                let give_up = now >= w.deadline || capped || (nothing && now >= w.since + window);
                if give_up {
                    let _ = w.reply.send(None);
                }
                !give_up
            });
            return;
        }
        if self.mode != FeedbackMode::OnIdle || !self.port.is_connected() {
            return;
        }
        let idle = match self.state {
            Some(s) => s == SessionState::Idle,
            None => self.port.output_quiet(self.idle_quiet),
        };
        if !idle || !self.port.user_quiet(self.typing_quiet) {
            return;
        }
        if let Some(r) = self.batcher.take_ready(now) {
            match self.paste(&r.text) {
                Ok(()) => self.deliver(&r, FeedbackVia::Paste),
                Err(e) => tracing::warn!(error = %e, "cannot paste results into the session"),
            }
        }
    }

    /// One bracketed paste (or, when the program did not ask for bracketed paste, one line), then
    /// Enter.
    fn paste(&self, text: &str) -> std::io::Result<()> {
        let body = message::sanitize(text);
        let bytes = if self.port.bracketed_paste() {
            format!("\x1b[200~{}\x1b[201~", body.trim_end())
        } else {
            body.lines()
                .map(str::trim_end)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" | ")
        };
        self.port.write(bytes.as_bytes())?;
        std::thread::sleep(SUBMIT_DELAY);
        self.port.write(b"\r")
    }
}

/// claude's hooks answer through the feedback actor: the Stop hook blocks with the turn's results,
/// the next prompt carries results not yet delivered (`feedback: next-prompt`).
impl crate::hook::HookResponder for FeedbackHandle {
    fn on_stop(&self, _payload: &crate::hook::StopPayload) -> Option<String> {
        FeedbackHandle::on_stop(self, &serde_json::Value::Null)
    }

    fn on_user_prompt(&self, _payload: &crate::hook::PromptPayload) -> Option<String> {
        FeedbackHandle::on_user_prompt(self, &serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Context, Delegation, DelegationStatus};

    fn opts(mode: FeedbackMode) -> FeedbackOptions {
        FeedbackOptions {
            mode,
            orchestration: OrchestrationConfig {
                batch_window_ms: 100,
                ..OrchestrationConfig::default()
            },
        }
    }

    fn delegate(bus: &Bus, id: &str, finish: bool) {
        let d = Delegation {
            delegation_id: id.into(),
            agent: "qa".into(),
            task: format!("check {id}"),
        };
        bus.emit(EventBody::DelegationQueued(d.clone()));
        if finish {
            bus.emit(EventBody::DelegationFinished {
                delegation: d,
                status: DelegationStatus::Success,
                exit_code: Some(0),
                duration_ms: 3,
                output_path: None,
                reason: None,
                worker: None,
                result_path: None,
            });
        }
    }

    /// Poll `cond` until it holds (true) or 10 s pass (false).
    fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn feedback_events(
        rx: &Receiver<Arc<crate::events::Event>>,
    ) -> Vec<(Vec<String>, FeedbackVia)> {
        rx.try_iter()
            .filter_map(|e| match &e.body {
                EventBody::DelegationFeedback {
                    delegation_ids,
                    via,
                    ..
                } => Some((delegation_ids.clone(), *via)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn stop_hook_waits_for_the_turn_and_blocks_with_one_message() {
        let bus = Bus::new(Context::new());
        let rx = bus.subscribe();
        let f = Feedback::start(&bus, opts(FeedbackMode::OnIdle)).unwrap();
        let h = f.handle(Duration::from_secs(20));
        delegate(&bus, "a", true);
        delegate(&bus, "b", false);
        let waiting = std::thread::spawn(move || h.on_stop(&serde_json::json!({})));
        // The hook is still waiting for b; finishing it releases the hook with both results.
        let d = Delegation {
            delegation_id: "b".into(),
            agent: "qa".into(),
            task: "check b".into(),
        };
        bus.emit(EventBody::DelegationFinished {
            delegation: d,
            status: DelegationStatus::Failed,
            exit_code: Some(1),
            duration_ms: 3,
            output_path: None,
            reason: Some("exit status 1".into()),
            worker: None,
            result_path: None,
        });
        let reason = waiting.join().unwrap().expect("the stop is blocked");
        assert!(
            reason.contains("check a (success") && reason.contains("check b (failed"),
            "{reason}"
        );
        let h = f.handle(Duration::from_millis(300));
        assert_eq!(
            h.on_stop(&serde_json::json!({})),
            None,
            "nothing more: claude may stop"
        );
        f.close();
        assert_eq!(
            feedback_events(&rx),
            [(
                vec!["a".to_string(), "b".to_string()],
                FeedbackVia::StopHook
            )]
        );
    }

    #[test]
    fn next_prompt_mode_hands_results_to_the_next_prompt_only() {
        let bus = Bus::new(Context::new());
        let rx = bus.subscribe();
        let f = Feedback::start(&bus, opts(FeedbackMode::NextPrompt)).unwrap();
        let h = f.handle(Duration::from_secs(20));
        delegate(&bus, "a", true);
        assert_eq!(
            h.on_stop(&serde_json::json!({})),
            None,
            "the Stop hook never blocks"
        );
        let mut got = None;
        assert!(wait_for(|| {
            got = h.on_user_prompt(&serde_json::json!({}));
            got.is_some()
        }));
        assert!(got.unwrap().contains("check a"));
        assert_eq!(h.on_user_prompt(&serde_json::json!({})), None, "once");
        f.close();
        assert_eq!(
            feedback_events(&rx),
            [(vec!["a".to_string()], FeedbackVia::NextPrompt)]
        );
    }

    #[test]
    fn mode_follows_the_profile_and_never_types_into_an_unknown_program() {
        let cfg = crate::config::Config::default();
        let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            mode_for(&cfg, &argv(&["/usr/bin/claude"])),
            FeedbackMode::OnIdle
        );
        assert_eq!(mode_for(&cfg, &argv(&["bash"])), FeedbackMode::Off);
    }
}
