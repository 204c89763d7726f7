//! Grouping finished delegations into batches, one message each (pure logic; the actor in
//! [`super`] feeds it events and the clock).
//!
//! A batch is the delegations one turn of the main agent started. A turn ends at a
//! `session.state` working → idle transition or a Stop hook call; without any such signal (a CLI
//! mpm has no state for) a burst of delegations detected close together is one batch. A batch
//! closes once its turn has ended (or, without turn signals, at once) and no member joined for
//! `window` (late members: detection settles after the text is shown). A closed batch whose
//! members have all finished becomes ONE message, handed out once; after `max` messages per
//! session nothing more is handed out and later batches stay pending.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::message::{self, Item};
use crate::events::{Event, EventBody};

#[derive(Debug)]
struct Batch {
    ids: Vec<String>,
    opened: Instant,
    last_member: Instant,
    closed: bool,
}

/// A message ready for the main agent: the batch's delegation ids and the text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ready {
    pub ids: Vec<String>,
    pub text: String,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Batcher {
    window: Duration,
    lines: usize,
    max_bytes: usize,
    max: u32,
    delivered: u32,
    cap_said: bool,
    batches: Vec<Batch>,
    finished: HashMap<String, Item>,
    turn_signals: bool,
    last_turn_end: Option<Instant>,
}

impl Batcher {
    pub(crate) fn new(window: Duration, lines: usize, max_bytes: usize, max: u32) -> Self {
        Batcher {
            window,
            lines,
            max_bytes,
            max,
            delivered: 0,
            cap_said: false,
            batches: Vec::new(),
            finished: HashMap::new(),
            turn_signals: false,
            last_turn_end: None,
        }
    }

    /// True once `max_feedback_per_session` messages were handed out: nothing more will be.
    pub(crate) fn capped(&self) -> bool {
        self.delivered >= self.max
    }

    /// True while some batch waits (open, running, or finished and not handed out).
    pub(crate) fn has_batches(&self) -> bool {
        !self.batches.is_empty()
    }

    fn join(&mut self, id: &str, now: Instant) {
        if self.batches.iter().any(|b| b.ids.iter().any(|i| i == id)) {
            return;
        }
        match self.batches.iter_mut().find(|b| !b.closed) {
            Some(b) => {
                b.ids.push(id.to_string());
                b.last_member = now;
            }
            None => self.batches.push(Batch {
                ids: vec![id.to_string()],
                opened: now,
                last_member: now,
                closed: false,
            }),
        }
    }

    /// Fold one bus event in.
    pub(crate) fn on_event(&mut self, ev: &Event, now: Instant) {
        match &ev.body {
            EventBody::DelegationQueued(d) => self.join(&d.delegation_id, now),
            EventBody::DelegationFinished {
                delegation: d,
                status,
                duration_ms,
                reason,
                result_path,
                ..
            } => {
                // Rejected at admission: never queued, still part of the turn's answer.
                self.join(&d.delegation_id, now);
                let result = result_path.as_deref().and_then(|p| {
                    std::fs::read_to_string(p)
                        .ok()
                        .map(|t| crate::executor::result_file::body_of(&t).to_string())
                });
                self.finished.insert(
                    d.delegation_id.clone(),
                    Item {
                        agent: d.agent.clone(),
                        task: d.task.clone(),
                        status: status.as_str().to_string(),
                        duration_ms: *duration_ms,
                        reason: reason.clone(),
                        result_path: result_path.clone(),
                        result,
                    },
                );
            }
            EventBody::SessionState {
                state, previous, ..
            } => {
                self.turn_signals = true;
                if *state == crate::events::SessionState::Idle
                    && *previous == Some(crate::events::SessionState::Working)
                {
                    self.turn_ended(now);
                }
            }
            _ => {}
        }
    }

    /// The main agent's turn ended (idle after working, or its Stop hook).
    pub(crate) fn turn_ended(&mut self, now: Instant) {
        self.turn_signals = true;
        self.last_turn_end = Some(now);
    }

    fn close_due(&mut self, now: Instant) {
        let (window, signals, turn_end) = (self.window, self.turn_signals, self.last_turn_end);
        for b in self.batches.iter_mut().filter(|b| !b.closed) {
            let quiet = now.saturating_duration_since(b.last_member) >= window;
            let turn_over =
                !signals || turn_end.is_some_and(|t| t + window >= b.opened && t <= now);
            if quiet && turn_over {
                b.closed = true;
            }
        }
    }

    /// The user's next prompt: the turn that opened the batches is over, so a batch whose
    /// delegations have all finished need not wait out its window (results that finished a moment
    /// before the prompt go with it, not with the prompt after).
    pub(crate) fn close_finished(&mut self) {
        let finished = &self.finished;
        for b in self.batches.iter_mut().filter(|b| !b.closed) {
            if b.ids.iter().all(|i| finished.contains_key(i)) {
                b.closed = true;
            }
        }
    }

    /// The next message, if a closed batch has finished and the cap allows; handed out once.
    pub(crate) fn take_ready(&mut self, now: Instant) -> Option<Ready> {
        self.close_due(now);
        let pos = self
            .batches
            .iter()
            .position(|b| b.closed && b.ids.iter().all(|i| self.finished.contains_key(i)))?;
        if self.delivered >= self.max {
            if !self.cap_said {
                self.cap_said = true;
                tracing::warn!(
                    max = self.max,
                    "orchestration.max_feedback_per_session reached: later results stay pending"
                );
            }
            return None;
        }
        let batch = self.batches.remove(pos);
        let items: Vec<Item> = batch
            .ids
            .iter()
            .filter_map(|i| self.finished.remove(i))
            .collect();
        self.delivered += 1;
        Some(Ready {
            text: message::build(&items, self.lines, self.max_bytes),
            ids: batch.ids,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Bus, Context, Delegation, DelegationStatus, SessionState};

    struct T {
        bus: Bus,
        rx: crossbeam_channel::Receiver<std::sync::Arc<Event>>,
        b: Batcher,
    }

    impl T {
        fn new(max: u32) -> T {
            let bus = Bus::new(Context::new());
            let rx = bus.subscribe();
            T {
                bus,
                rx,
                b: Batcher::new(Duration::from_millis(100), 3, 4096, max),
            }
        }
        fn emit(&mut self, body: EventBody, now: Instant) {
            self.bus.emit(body);
            for ev in self.rx.try_iter() {
                self.b.on_event(&ev, now);
            }
        }
        fn queued(&mut self, id: &str, now: Instant) {
            self.emit(EventBody::DelegationQueued(d(id)), now);
        }
        fn finished(&mut self, id: &str, now: Instant) {
            self.emit(
                EventBody::DelegationFinished {
                    delegation: d(id),
                    status: DelegationStatus::Success,
                    exit_code: Some(0),
                    duration_ms: 10,
                    output_path: None,
                    reason: None,
                    worker: None,
                    result_path: None,
                },
                now,
            );
        }
        fn state(&mut self, s: SessionState, p: SessionState, now: Instant) {
            self.emit(
                EventBody::SessionState {
                    state: s,
                    previous: Some(p),
                    reason: "test".into(),
                    resets_at: None,
                },
                now,
            );
        }
    }

    fn d(id: &str) -> Delegation {
        Delegation {
            delegation_id: id.into(),
            agent: "qa".into(),
            task: format!("task {id}"),
        }
    }

    #[test]
    fn a_burst_is_one_message_once_all_finished() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut t = T::new(10);
        t.queued("a", ms(0));
        t.queued("b", ms(50));
        t.finished("a", ms(60));
        assert_eq!(t.b.take_ready(ms(500)), None, "b still runs");
        t.finished("b", ms(600));
        let r = t.b.take_ready(ms(600)).expect("ready");
        assert_eq!(r.ids, ["a", "b"]);
        assert!(r.text.contains("task a") && r.text.contains("task b"));
        assert_eq!(t.b.take_ready(ms(700)), None, "handed out once");
        assert!(!t.b.has_batches());
    }

    #[test]
    fn with_turn_signals_a_turn_is_one_batch_and_the_cap_holds() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut t = T::new(1);
        t.state(SessionState::Working, SessionState::Idle, ms(0));
        t.queued("a", ms(10));
        t.finished("a", ms(20));
        // Quiet for long, but the turn has not ended: a late member may still join.
        assert_eq!(t.b.take_ready(ms(1000)), None);
        t.queued("b", ms(1000));
        t.state(SessionState::Idle, SessionState::Working, ms(1010));
        t.finished("b", ms(1020));
        assert_eq!(t.b.take_ready(ms(1050)), None, "within the settle window");
        let r = t.b.take_ready(ms(1200)).unwrap();
        assert_eq!(r.ids, ["a", "b"]);
        // Next turn: over the cap, stays pending.
        t.state(SessionState::Working, SessionState::Idle, ms(2000));
        t.queued("c", ms(2010));
        t.finished("c", ms(2020));
        t.state(SessionState::Idle, SessionState::Working, ms(2030));
        assert_eq!(t.b.take_ready(ms(5000)), None);
        assert!(t.b.has_batches(), "c is pending");
        assert_eq!(t.b.delivered, 1);
    }
}
