//! Restart of the main session after the governor stopped it: a budget of restarts per sliding
//! hour with a doubling back-off, and the argv that makes claude continue the same conversation.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::RestartConfig;

const HOUR: Duration = Duration::from_secs(3600);
/// The back-off never grows past this.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Decides whether (and after how long) to restart. The n-th restart within the last hour waits
/// `backoff_ms * 2^(n-1)` (capped at [`MAX_BACKOFF`]); once `max_per_hour` restarts happened in the
/// last hour, no more until the oldest ages out.
#[derive(Debug, Clone)]
pub struct RestartPolicy {
    enabled: bool,
    max_per_hour: u32,
    backoff: Duration,
    recent: VecDeque<Instant>,
}

impl RestartPolicy {
    /// The policy `limits.restart` sets.
    pub fn new(cfg: &RestartConfig) -> Self {
        RestartPolicy {
            enabled: cfg.enabled,
            max_per_hour: cfg.max_per_hour,
            backoff: Duration::from_millis(cfg.backoff_ms),
            recent: VecDeque::new(),
        }
    }

    /// Called when the session was stopped at `now`: the delay before restarting, or `None` when
    /// restarts are disabled or the hourly budget is spent. A returned delay counts as a restart.
    pub fn next_delay(&mut self, now: Instant) -> Option<Duration> {
        if !self.enabled {
            return None;
        }
        while self
            .recent
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= HOUR)
        {
            self.recent.pop_front();
        }
        let n = self.recent.len() as u32;
        if n >= self.max_per_hour {
            return None;
        }
        self.recent.push_back(now);
        let factor = 1u32.checked_shl(n).unwrap_or(u32::MAX);
        Some(self.backoff.saturating_mul(factor).min(MAX_BACKOFF))
    }

    /// Restarts counted in the current hour.
    pub fn recent(&self) -> usize {
        self.recent.len()
    }
}

/// The argv that restarts claude on the same conversation: `argv[0] --resume <id>` followed by the
/// original arguments minus any earlier `--resume`/`-r`, `--session-id`, `--continue`/`-c` (they
/// would contradict the resume). Built directly; nothing goes through a shell.
pub fn resume_argv(argv: &[String], claude_session_id: &str) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len() + 2);
    let Some((program, rest)) = argv.split_first() else {
        return out;
    };
    out.push(program.clone());
    out.push("--resume".to_string());
    out.push(claude_session_id.to_string());
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--resume" | "-r" | "--session-id" => {
                // Skip its value too, when it has one (not another flag).
                let mut peek = it.clone();
                if peek.next().is_some_and(|v| !v.starts_with('-')) {
                    it.next();
                }
            }
            "--continue" | "-c" => {}
            s if s.starts_with("--resume=") || s.starts_with("--session-id=") => {}
            _ => out.push(a.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(enabled: bool, max: u32, backoff_ms: u64) -> RestartConfig {
        RestartConfig {
            enabled,
            max_per_hour: max,
            backoff_ms,
        }
    }

    #[test]
    fn disabled_never_restarts() {
        let mut p = RestartPolicy::new(&cfg(false, 3, 100));
        assert_eq!(p.next_delay(Instant::now()), None);
    }

    #[test]
    fn backoff_doubles_and_budget_is_per_sliding_hour() {
        let mut p = RestartPolicy::new(&cfg(true, 3, 100));
        let t = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(p.next_delay(t), Some(ms(100)));
        assert_eq!(p.next_delay(t + ms(1000)), Some(ms(200)));
        assert_eq!(p.next_delay(t + ms(2000)), Some(ms(400)));
        assert_eq!(p.next_delay(t + ms(3000)), None, "budget spent");
        assert_eq!(p.recent(), 3);
        // One hour after the first restart, one slot is free again.
        assert_eq!(p.next_delay(t + HOUR), Some(ms(400)));
        assert_eq!(p.next_delay(t + HOUR + ms(1)), None);
    }

    #[test]
    fn backoff_is_capped() {
        let mut p = RestartPolicy::new(&cfg(true, 100, 60_000));
        let t = Instant::now();
        let delays: Vec<_> = (0..5).filter_map(|_| p.next_delay(t)).collect();
        assert_eq!(delays.last(), Some(&MAX_BACKOFF));
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn resume_argv_replaces_session_flags() {
        assert_eq!(
            resume_argv(&s(&["claude"]), "abc"),
            s(&["claude", "--resume", "abc"])
        );
        assert_eq!(
            resume_argv(
                &s(&[
                    "claude",
                    "--session-id",
                    "old",
                    "--model",
                    "opus",
                    "-c",
                    "--resume=x",
                    "-r",
                    "--verbose"
                ]),
                "new-id"
            ),
            s(&[
                "claude",
                "--resume",
                "new-id",
                "--model",
                "opus",
                "--verbose"
            ])
        );
        assert!(resume_argv(&[], "x").is_empty());
    }
}
