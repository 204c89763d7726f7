//! The delegations of one or more sessions as the events tell them: one [`DelegationRecord`] per
//! delegation, folded from `delegation.*` events in order. `mpm delegations` and `mpm top` read the
//! same fold, whether the events come from the daemon or the store.

use std::collections::HashMap;

use serde::Serialize;

use crate::events::{DelegationPhase, Event, EventBody, FeedbackVia};

/// What is known about one delegation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct DelegationRecord {
    pub delegation_id: String,
    pub session: String,
    pub agent: String,
    pub task: String,
    /// `queued`, `running`, or the final status (`success`, `failed`, `timeout`, `cancelled`,
    /// `rejected`).
    pub status: DelegationPhase,
    pub pid: Option<u32>,
    pub queued_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<u64>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub output_path: Option<String>,
    pub result_path: Option<String>,
    /// Tokens and last tool from `delegation.progress`.
    pub tokens: Option<u64>,
    pub last_tool: Option<String>,
    pub stalled: bool,
    /// How its result reached the main agent; `None` while it is pending (or feedback is off).
    pub fed_back: Option<FeedbackVia>,
    /// Its session feeds no results back (`feedback: off`): a finished result is not pending.
    pub feedback_off: bool,
}

impl DelegationRecord {
    /// True once it has ended.
    pub(crate) fn is_finished(&self) -> bool {
        self.finished_at.is_some()
    }

    /// `delivered (paste)`, `pending`, `off` (its session feeds nothing back), or `-` while it
    /// runs.
    pub(crate) fn feedback_label(&self) -> String {
        match (self.fed_back, self.is_finished()) {
            (Some(v), _) => format!("delivered ({})", via_str(v)),
            (None, true) if self.feedback_off => "off".into(),
            (None, true) => "pending".into(),
            (None, false) => "-".into(),
        }
    }
}

/// The contract's name of a feedback channel.
pub(crate) fn via_str(v: FeedbackVia) -> &'static str {
    match v {
        FeedbackVia::StopHook => "stop-hook",
        FeedbackVia::NextPrompt => "next-prompt",
        FeedbackVia::Paste => "paste",
    }
}

/// Delegation records in the order they first appeared.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    order: Vec<String>,
    by_id: HashMap<String, DelegationRecord>,
    /// Sessions whose `session.started` says `feedback: off`.
    feedback_off: std::collections::HashSet<String>,
}

impl Ledger {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn entry(&mut self, ev: &Event, id: &str, agent: &str, task: &str) -> &mut DelegationRecord {
        if !self.by_id.contains_key(id) {
            self.order.push(id.to_string());
        }
        let feedback_off = self.feedback_off.contains(&ev.session);
        self.by_id
            .entry(id.to_string())
            .or_insert_with(|| DelegationRecord {
                delegation_id: id.to_string(),
                session: ev.session.clone(),
                agent: agent.to_string(),
                task: task.to_string(),
                status: DelegationPhase::Queued,
                pid: None,
                queued_at: None,
                started_at: None,
                finished_at: None,
                duration_ms: None,
                exit_code: None,
                reason: None,
                output_path: None,
                result_path: None,
                tokens: None,
                last_tool: None,
                stalled: false,
                fed_back: None,
                feedback_off,
            })
    }

    /// Fold one event in (other kinds are ignored).
    pub(crate) fn apply(&mut self, ev: &Event) {
        match &ev.body {
            EventBody::SessionStarted { feedback, .. } => {
                let off = feedback.as_deref() == Some("off");
                if off {
                    self.feedback_off.insert(ev.session.clone());
                } else {
                    self.feedback_off.remove(&ev.session);
                }
                for r in self.by_id.values_mut() {
                    if r.session == ev.session {
                        r.feedback_off = off;
                    }
                }
            }
            EventBody::DelegationQueued(d) => {
                let r = self.entry(ev, &d.delegation_id, &d.agent, &d.task);
                r.queued_at.get_or_insert_with(|| ev.ts.clone());
            }
            EventBody::DelegationStarted { delegation: d, pid } => {
                let r = self.entry(ev, &d.delegation_id, &d.agent, &d.task);
                r.pid = Some(*pid);
                r.started_at.get_or_insert_with(|| ev.ts.clone());
                if !r.is_finished() {
                    r.status = DelegationPhase::Running;
                }
            }
            EventBody::DelegationProgress {
                delegation: d,
                last_tool,
                tokens,
                stalled,
                ..
            } => {
                let r = self.entry(ev, &d.delegation_id, &d.agent, &d.task);
                r.tokens = Some(*tokens);
                if last_tool.is_some() {
                    r.last_tool = last_tool.clone();
                }
                r.stalled = *stalled;
            }
            EventBody::DelegationFinished {
                delegation: d,
                status,
                exit_code,
                duration_ms,
                output_path,
                reason,
                result_path,
                ..
            } => {
                let r = self.entry(ev, &d.delegation_id, &d.agent, &d.task);
                r.status = DelegationPhase::Ended(*status);
                r.finished_at = Some(ev.ts.clone());
                r.duration_ms = Some(*duration_ms);
                r.exit_code = *exit_code;
                r.reason = reason.clone();
                r.output_path = output_path.clone();
                r.result_path = result_path.clone();
                r.stalled = false;
            }
            EventBody::DelegationFeedback {
                delegation_ids,
                via,
                ..
            } => {
                for id in delegation_ids {
                    if let Some(r) = self.by_id.get_mut(id) {
                        r.fed_back = Some(*via);
                    }
                }
            }
            _ => {}
        }
    }

    /// Every record, in order of first appearance.
    pub(crate) fn records(&self) -> Vec<&DelegationRecord> {
        self.order
            .iter()
            .filter_map(|id| self.by_id.get(id))
            .collect()
    }

    /// The record whose id is `id` or starts with it (at least 4 characters, unique).
    pub(crate) fn find(&self, id: &str) -> Result<&DelegationRecord, String> {
        if let Some(r) = self.by_id.get(id) {
            return Ok(r);
        }
        if id.len() < 4 {
            return Err(format!(
                "no delegation {id:?} (give at least 4 characters of its id)"
            ));
        }
        let hits: Vec<&DelegationRecord> = self
            .records()
            .into_iter()
            .filter(|r| r.delegation_id.starts_with(id))
            .collect();
        match hits.as_slice() {
            [one] => Ok(one),
            [] => Err(format!("no delegation {id:?}")),
            many => Err(format!(
                "delegation id {id:?} is ambiguous ({} match)",
                many.len()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Bus, Context, Delegation, DelegationStatus};

    #[test]
    fn folds_lifecycle_and_feedback() {
        let bus = Bus::new(Context::with_session("s"));
        let rx = bus.subscribe();
        let d = Delegation {
            delegation_id: "abcd1234-x".into(),
            agent: "qa".into(),
            task: "test it".into(),
        };
        bus.emit(EventBody::DelegationQueued(d.clone()));
        bus.emit(EventBody::DelegationStarted {
            delegation: d.clone(),
            pid: 7,
        });
        let mut l = Ledger::new();
        for ev in rx.try_iter() {
            l.apply(&ev);
        }
        assert_eq!(l.find("abcd").unwrap().status, "running");
        assert_eq!(l.find("abcd").unwrap().feedback_label(), "-");
        bus.emit(EventBody::DelegationFinished {
            delegation: d.clone(),
            status: DelegationStatus::Success,
            exit_code: Some(0),
            duration_ms: 5,
            output_path: None,
            reason: None,
            worker: None,
            result_path: Some("/r/qa-abcd1234.md".into()),
        });
        for ev in rx.try_iter() {
            l.apply(&ev);
        }
        let r = l.find("abcd1234-x").unwrap();
        assert_eq!((r.status.as_str(), r.pid), ("success", Some(7)));
        assert_eq!(r.feedback_label(), "pending");
        bus.emit(EventBody::DelegationFeedback {
            delegation_ids: vec!["abcd1234-x".into()],
            via: FeedbackVia::Paste,
            bytes: 10,
        });
        for ev in rx.try_iter() {
            l.apply(&ev);
        }
        assert_eq!(
            l.find("abcd").unwrap().feedback_label(),
            "delivered (paste)"
        );
        assert!(l.find("abc").is_err());
        assert!(l.find("zzzz").is_err());
    }
}
