//! The end-of-session summary `mpm run` prints once the terminal is the user's again: per
//! delegation its agent, status, duration and task (fitted to the terminal width) with the result
//! file below, then how many tickets and errors the session recorded.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::events::{Bus, Event, EventBody, Sink};
use crate::executor::DelegationSummary;

/// Counts the session's ticket and error detections as they are emitted (a bus sink).
#[derive(Debug, Default)]
pub(crate) struct Tally {
    tickets: AtomicU64,
    errors: AtomicU64,
}

impl Tally {
    /// A tally fed by every event of `bus` from now on.
    pub(crate) fn attach(bus: &Bus) -> Arc<Tally> {
        let t = Arc::new(Tally::default());
        bus.add_sink(t.clone());
        t
    }

    pub(crate) fn tickets(&self) -> u64 {
        self.tickets.load(Ordering::Relaxed)
    }

    pub(crate) fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

impl Sink for Tally {
    fn write(&self, event: &Event) {
        if let EventBody::Detection(d) = &event.body {
            match d.category.as_str() {
                "ticket" => self.tickets.fetch_add(1, Ordering::Relaxed),
                "error" => self.errors.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
        }
    }
}

/// The summary text (empty when there is nothing to say). `width` is the terminal's.
pub(crate) fn format(
    summaries: &[DelegationSummary],
    tickets: u64,
    errors: u64,
    width: usize,
) -> String {
    let width = width.clamp(40, 500);
    let agent_w = summaries.iter().map(|s| s.agent.len()).max().unwrap_or(0);
    let mut out = String::new();
    for s in summaries {
        let head = format!(
            "mpm: {:<agent_w$}  {:<9}  {:>7}  ",
            s.agent,
            s.status.as_str(),
            format!("{:.1}s", s.duration_ms as f64 / 1000.0),
        );
        let room = width.saturating_sub(head.chars().count()).max(10);
        let _ = writeln!(out, "{head}{}", fit(&s.task, room));
        let path = s.result_path.as_ref().or(s.output_path.as_ref());
        match (path, &s.reason) {
            (Some(p), _) => {
                let _ = writeln!(out, "       {}", p.display());
            }
            (None, Some(r)) => {
                let _ = writeln!(out, "       ({})", fit(r, width.saturating_sub(9).max(10)));
            }
            (None, None) => {}
        }
    }
    if tickets > 0 || errors > 0 {
        let plural = |n: u64, one: &str, many: &str| {
            if n == 1 {
                format!("1 {one}")
            } else {
                format!("{n} {many}")
            }
        };
        let _ = writeln!(
            out,
            "mpm: {} and {} recorded (mpm tickets list)",
            plural(tickets, "ticket", "tickets"),
            plural(errors, "error", "errors")
        );
    }
    out
}

/// One line of at most `room` characters: whitespace collapsed, an ellipsis when cut.
pub(crate) fn fit(text: &str, room: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= room {
        return flat;
    }
    let mut s: String = flat.chars().take(room.saturating_sub(1)).collect();
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::DelegationStatus;
    use std::path::PathBuf;

    fn summary(task: &str) -> DelegationSummary {
        DelegationSummary {
            delegation_id: "d".into(),
            agent: "engineer".into(),
            task: task.into(),
            status: DelegationStatus::Success,
            exit_code: Some(0),
            duration_ms: 1234,
            output_path: Some(PathBuf::from("/o/d.result.md")),
            reason: None,
            attempts: 1,
            result_path: Some(PathBuf::from("/o/engineer-d.md")),
        }
    }

    #[test]
    fn task_is_fitted_to_the_width_and_counts_are_said() {
        let long = "implement the whole thing ".repeat(20);
        let text = format(&[summary(&long), summary("short task")], 2, 1, 60);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert_eq!(lines[0].chars().count(), 60, "{:?}", lines[0]);
        assert!(lines[0].ends_with('…'));
        assert_eq!(lines[1].trim(), "/o/engineer-d.md");
        assert!(lines[2].ends_with("short task"));
        assert_eq!(
            lines[4],
            "mpm: 2 tickets and 1 error recorded (mpm tickets list)"
        );
        assert_eq!(format(&[], 0, 0, 80), "");
    }
}
