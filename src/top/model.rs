//! What `mpm top` shows, folded from events (pure: no terminal, no I/O but `/proc` sampling in
//! [`Model::sample`]).

use std::collections::{BTreeMap, VecDeque};

use crate::events::{DelegationPhase, Event, EventBody};
use crate::feedback::ledger::{DelegationRecord, Ledger};

/// Recent items kept per list.
const RECENT: usize = 50;

/// One session as `top` shows it.
#[derive(Debug, Clone, Default)]
pub(crate) struct SessionView {
    pub id: String,
    pub command: Vec<String>,
    pub pid: Option<u32>,
    /// `session.state` when published, else `running` / `exited`.
    pub state: String,
    pub started_at: String,
    pub ended: bool,
    pub rss_mb: Option<f64>,
    pub cpu_percent: Option<f64>,
}

impl SessionView {
    /// The agent CLI (the command's program name).
    pub(crate) fn agent(&self) -> String {
        self.command
            .first()
            .and_then(|p| std::path::Path::new(p).file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// The dashboard's state.
#[derive(Debug, Default)]
pub(crate) struct Model {
    pub sessions: BTreeMap<String, SessionView>,
    pub ledger: Ledger,
    /// (session, type, title) newest last.
    pub tickets: VecDeque<(String, String, String)>,
    /// (session, text) newest last.
    pub errors: VecDeque<(String, String)>,
    /// One line per resource event, newest last.
    pub warnings: VecDeque<String>,
    trackers: BTreeMap<String, crate::governor::tracker::TreeTracker>,
    probe: crate::governor::tracker::Probe,
}

fn push<T>(q: &mut VecDeque<T>, v: T) {
    if q.len() >= RECENT {
        q.pop_front();
    }
    q.push_back(v);
}

impl Model {
    pub(crate) fn apply(&mut self, ev: &Event) {
        self.ledger.apply(ev);
        let s = ev.session.clone();
        match &ev.body {
            EventBody::SessionStarted { command, pid, .. } => {
                let v = self.sessions.entry(s.clone()).or_default();
                v.id = s;
                v.command = command.clone();
                v.pid = Some(*pid);
                v.started_at = ev.ts.clone();
                if v.state.is_empty() {
                    v.state = "running".into();
                }
            }
            EventBody::SessionExited { .. } => {
                let v = self.sessions.entry(s.clone()).or_default();
                v.id = s;
                v.state = "exited".into();
                v.ended = true;
                v.rss_mb = None;
                v.cpu_percent = None;
            }
            EventBody::SessionState { state, .. } => {
                let v = self.sessions.entry(s.clone()).or_default();
                v.id = s;
                if !v.ended {
                    v.state = state.as_str().into();
                }
            }
            EventBody::Detection(d) if d.category == "ticket" => push(
                &mut self.tickets,
                (
                    s,
                    d.ticket_type.clone().unwrap_or_else(|| "TICKET".into()),
                    d.title.clone().unwrap_or_else(|| d.text.clone()),
                ),
            ),
            EventBody::Detection(d) if d.category == "error" => {
                push(&mut self.errors, (s, d.text.clone()))
            }
            EventBody::ResourceWarning(r)
            | EventBody::ResourceCritical(r)
            | EventBody::ResourceLimit(r) => {
                let who = r
                    .delegation_id
                    .as_deref()
                    .map(|d| format!("delegation {}", crate::executor::result_file::cut(d, 8)))
                    .unwrap_or_else(|| {
                        format!("session {}", crate::executor::result_file::cut(&s, 8))
                    });
                let line = if matches!(ev.body, EventBody::ResourceLimit(_)) {
                    crate::notify::limit_line(r, None)
                } else {
                    format!(
                        "{} {who}: {} {:.0} (threshold {:.0}), {:.0} MB, {:.0}% CPU",
                        ev.kind(),
                        r.resource.as_deref().unwrap_or("memory"),
                        if r.resource.as_deref() == Some("cpu") {
                            r.cpu_percent
                        } else {
                            r.rss_mb
                        },
                        r.threshold,
                        r.rss_mb,
                        r.cpu_percent
                    )
                };
                push(&mut self.warnings, line);
            }
            _ => {}
        }
    }

    /// Mark sessions the store says ended (a crashed host never wrote `session.exited`).
    pub(crate) fn mark_ended(&mut self, id: &str) {
        if let Some(v) = self.sessions.get_mut(id) {
            v.ended = true;
            if v.state != "exited" {
                v.state = "ended".into();
            }
        }
    }

    /// Measure the memory and CPU of every live session's tree; `secs` since the last call.
    pub(crate) fn sample(&mut self, secs: f64) {
        for (id, v) in self.sessions.iter_mut() {
            let Some(pid) = v.pid.filter(|_| !v.ended) else {
                self.trackers.remove(id);
                continue;
            };
            let t = self
                .trackers
                .entry(id.clone())
                .or_insert_with(|| crate::governor::tracker::TreeTracker::new(pid as i32, 10));
            let first = t.members().is_empty();
            let s = t.sample(&mut self.probe);
            if s.members == 0 {
                v.rss_mb = None;
                v.cpu_percent = None;
                continue;
            }
            v.rss_mb = Some(s.rss_bytes as f64 / (1024.0 * 1024.0));
            if !first && secs > 0.0 {
                v.cpu_percent = Some(s.cpu_secs / secs * 100.0);
            }
        }
    }

    /// Sessions, live first, then newest.
    pub(crate) fn session_rows(&self) -> Vec<&SessionView> {
        let mut v: Vec<&SessionView> = self.sessions.values().collect();
        v.sort_by(|a, b| a.ended.cmp(&b.ended).then(b.started_at.cmp(&a.started_at)));
        v
    }

    /// Delegations: running, then queued, then the most recent finished ones.
    pub(crate) fn delegation_rows(&self) -> Vec<&DelegationRecord> {
        let all = self.ledger.records();
        let rank = |r: &DelegationRecord| match r.status {
            DelegationPhase::Running => 0,
            DelegationPhase::Queued => 1,
            DelegationPhase::Ended(_) => 2,
        };
        let mut v: Vec<&DelegationRecord> = all.into_iter().rev().collect();
        v.sort_by_key(|r| rank(r));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Bus, Context, Delegation, Detection, SessionState, TextSource};

    #[test]
    fn folds_sessions_delegations_tickets_and_errors() {
        let bus = Bus::new(Context::with_session("s1"));
        let rx = bus.subscribe();
        bus.emit(EventBody::SessionStarted {
            command: vec!["/usr/bin/claude".into()],
            pid: 1,
            cols: 80,
            rows: 24,
            governor_mode: None,
            feedback: None,
        });
        bus.emit(EventBody::SessionState {
            state: SessionState::Working,
            previous: None,
            reason: "t".into(),
            resets_at: None,
        });
        let det = |cat: &str, text: &str| Detection {
            category: cat.into(),
            pattern: "p".into(),
            text: text.into(),
            source: TextSource::Screen,
            agent: None,
            task: None,
            ticket_type: Some("TODO".into()),
            title: Some(text.into()),
            priority: None,
            handled_by_agent: false,
            is_final: true,
        };
        bus.emit(EventBody::Detection(det("ticket", "write docs")));
        bus.emit(EventBody::Detection(det("error", "Error: boom")));
        bus.emit(EventBody::DelegationQueued(Delegation {
            delegation_id: "d1".into(),
            agent: "qa".into(),
            task: "test".into(),
        }));
        let mut m = Model::default();
        for ev in rx.try_iter() {
            m.apply(&ev);
        }
        let s = m.session_rows();
        assert_eq!(
            (s[0].state.as_str(), s[0].agent().as_str()),
            ("working", "claude")
        );
        assert_eq!(m.tickets.back().unwrap().2, "write docs");
        assert_eq!(m.errors.back().unwrap().1, "Error: boom");
        assert_eq!(m.delegation_rows()[0].status, "queued");
        m.mark_ended("s1");
        assert_eq!(m.session_rows()[0].state, "ended");
    }
}
