//! The executor's admission guards, as plain data: dedup keys, the per-session rate window, and the
//! per-agent circuit breaker. No I/O, no clocks of their own (callers pass `now`), so each is unit
//! tested directly.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The dedup key of a delegation: the session's one identity ([`crate::detect::Fingerprint`]) of
/// the registry agent name and the task, folded for markdown, width, whitespace and case.
pub(crate) fn dedup_key(agent: &str, task: &str) -> crate::detect::Fingerprint {
    crate::detect::Fingerprint::delegation(agent, task)
}

/// At most `per_minute` admissions in any 60 s window (0 = no cap). Holds at most `per_minute`
/// instants.
#[derive(Debug)]
pub(crate) struct RateWindow {
    per_minute: usize,
    window: Duration,
    admitted: VecDeque<Instant>,
}

impl RateWindow {
    pub(crate) fn new(per_minute: u32) -> Self {
        Self::with_window(per_minute, Duration::from_secs(60))
    }

    /// A window of another length (tests).
    pub(crate) fn with_window(per_minute: u32, window: Duration) -> Self {
        RateWindow {
            per_minute: per_minute as usize,
            window,
            admitted: VecDeque::new(),
        }
    }

    /// Whether one more admission fits now; records it when it does.
    pub(crate) fn try_admit(&mut self, now: Instant) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        while self
            .admitted
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            self.admitted.pop_front();
        }
        if self.admitted.len() >= self.per_minute {
            return false;
        }
        self.admitted.push_back(now);
        true
    }
}

/// What the breaker says about starting one more delegation of its agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BreakerDecision {
    /// Closed: run normally.
    Run,
    /// Half-open after the cool-down: this delegation is the single trial.
    Trial,
    /// Open (or half-open with a trial in flight): reject with this reason.
    Reject(String),
}

/// A per-agent circuit breaker: `threshold` consecutive failures open it for `cooldown`; then one
/// trial runs (half-open); its success closes the breaker, its failure opens it again.
/// `threshold` 0 disables the breaker.
#[derive(Debug, Clone)]
pub(crate) struct Breaker {
    threshold: u32,
    cooldown: Duration,
    failures: u32,
    open_until: Option<Instant>,
    trial_running: bool,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker {
            threshold,
            cooldown,
            failures: 0,
            open_until: None,
            trial_running: false,
        }
    }

    /// True while it rejects without looking further (open, cool-down not over).
    #[cfg(test)]
    pub(crate) fn is_open(&self, now: Instant) -> bool {
        self.open_until.is_some_and(|t| now < t)
    }

    /// While open: why a delegation of `agent` is rejected now.
    pub(crate) fn open_reason(&self, agent: &str, now: Instant) -> Option<String> {
        let until = self.open_until.filter(|t| now < *t)?;
        let left = until.duration_since(now).as_secs_f64();
        Some(format!(
            "circuit breaker open for agent {agent} after {} consecutive failures ({left:.1}s of cool-down left)",
            self.failures
        ))
    }

    /// Decide for a delegation about to start; a `Trial` marks the trial as running.
    pub(crate) fn decide(&mut self, agent: &str, now: Instant) -> BreakerDecision {
        if self.open_until.is_none() {
            return BreakerDecision::Run;
        }
        if let Some(reason) = self.open_reason(agent, now) {
            return BreakerDecision::Reject(reason);
        }
        if self.trial_running {
            return BreakerDecision::Reject(format!(
                "circuit breaker half-open for agent {agent}: a trial delegation is running"
            ));
        }
        self.trial_running = true;
        BreakerDecision::Trial
    }

    /// Record how a delegation ended: `Some(true)` success, `Some(false)` failure (failed or timed
    /// out), `None` neither (cancelled). `trial` says whether it was the half-open trial.
    pub(crate) fn record(&mut self, outcome: Option<bool>, trial: bool, now: Instant) {
        if trial {
            self.trial_running = false;
        }
        match outcome {
            Some(true) => {
                self.failures = 0;
                self.open_until = None;
            }
            Some(false) => {
                self.failures = self.failures.saturating_add(1);
                let reopen = trial && self.open_until.is_some();
                if self.threshold > 0 && (self.failures >= self.threshold || reopen) {
                    self.open_until = Some(now + self.cooldown);
                }
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_key_folds_whitespace_and_case() {
        assert_eq!(
            dedup_key("qa", "  Run   the\tTESTS\n"),
            dedup_key("qa", "run the tests")
        );
        assert_ne!(dedup_key("qa", "a"), dedup_key("engineer", "a"));
        // The screen's and the transcript's forms of one task are one key.
        assert_eq!(
            dedup_key("qa", "run `cargo test` on **all** crates."),
            dedup_key("qa", "run cargo test on all crates")
        );
    }

    #[test]
    fn rate_window_caps_and_slides() {
        let t0 = Instant::now();
        let mut w = RateWindow::with_window(2, Duration::from_secs(60));
        assert!(w.try_admit(t0));
        assert!(w.try_admit(t0 + Duration::from_secs(1)));
        assert!(!w.try_admit(t0 + Duration::from_secs(2)));
        assert!(w.try_admit(t0 + Duration::from_secs(60)));
        assert!(!w.try_admit(t0 + Duration::from_secs(60)));
        let mut unlimited = RateWindow::new(0);
        assert!((0..1000).all(|_| unlimited.try_admit(t0)));
    }

    #[test]
    fn breaker_opens_rejects_then_half_opens() {
        let t0 = Instant::now();
        let cd = Duration::from_secs(10);
        let mut b = Breaker::new(2, cd);
        assert_eq!(b.decide("qa", t0), BreakerDecision::Run);
        b.record(Some(false), false, t0);
        assert!(!b.is_open(t0));
        b.record(Some(false), false, t0);
        assert!(b.is_open(t0));
        assert!(matches!(b.decide("qa", t0), BreakerDecision::Reject(r) if r.contains("open")));
        let later = t0 + cd;
        assert!(!b.is_open(later));
        assert_eq!(b.decide("qa", later), BreakerDecision::Trial);
        assert!(
            matches!(b.decide("qa", later), BreakerDecision::Reject(r) if r.contains("half-open"))
        );
        // The trial fails: open again at once.
        b.record(Some(false), true, later);
        assert!(b.is_open(later));
        let later2 = later + cd;
        assert_eq!(b.decide("qa", later2), BreakerDecision::Trial);
        b.record(Some(true), true, later2);
        assert_eq!(b.decide("qa", later2), BreakerDecision::Run);
        // Success reset the count: one failure does not open it.
        b.record(Some(false), false, later2);
        assert!(!b.is_open(later2));
    }

    #[test]
    fn breaker_threshold_zero_never_opens() {
        let t0 = Instant::now();
        let mut b = Breaker::new(0, Duration::from_secs(1));
        for _ in 0..10 {
            b.record(Some(false), false, t0);
        }
        assert_eq!(b.decide("x", t0), BreakerDecision::Run);
    }
}
