//! Threshold crossing with hysteresis: turns a stream of (whole-tree RSS, CPU seconds) samples into
//! warning / critical / limit verdicts that fire once per crossing.
//!
//! Memory: a level fires when RSS reaches its threshold and re-arms only after RSS falls below
//! [`REARM_FRACTION`] of it (a 10% band, so a tree hovering at the line does not flap). CPU: the
//! figure is the tree's average over the last `window_secs`; the warning fires once the window is
//! full and the average reaches `warning_percent`, and re-arms below 90% of it. The hard CPU limit
//! (off by default) uses the same full-window average.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::ResolvedLimits;

/// A level re-arms when the figure falls below this fraction of its threshold.
pub const REARM_FRACTION: f64 = 0.9;

/// Which resource a verdict is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    /// Resident memory of the tree.
    Memory,
    /// CPU of the tree, averaged over the window.
    Cpu,
}

impl ResourceKind {
    /// `memory` or `cpu`, as in events.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Memory => "memory",
            ResourceKind::Cpu => "cpu",
        }
    }
}

/// The severity of a crossing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Over the warning threshold.
    Warning,
    /// Over the critical threshold.
    Critical,
    /// Over the hard limit: the tree is stopped.
    Limit,
}

/// One crossing: fire an event of `level` about `resource` at `threshold`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Verdict {
    pub level: Level,
    pub resource: ResourceKind,
    pub threshold: f64,
}

/// Per-tree crossing state.
#[derive(Debug)]
pub(crate) struct Evaluator {
    limits: ResolvedLimits,
    mem_warned: bool,
    mem_critical: bool,
    cpu_warned: bool,
    /// (start, end, cpu seconds) of the samples inside the CPU window.
    cpu: VecDeque<(Instant, Instant, f64)>,
    last: Option<Instant>,
}

impl Evaluator {
    pub(crate) fn new(limits: ResolvedLimits) -> Self {
        Evaluator {
            limits,
            mem_warned: false,
            mem_critical: false,
            cpu_warned: false,
            cpu: VecDeque::new(),
            last: None,
        }
    }

    pub(crate) fn limits(&self) -> &ResolvedLimits {
        &self.limits
    }

    /// Feed one sample taken at `now`: whole-tree RSS in MB and the CPU seconds used since the
    /// previous sample. Returns the verdicts in severity order, and the CPU percent (of one core)
    /// averaged over the window so far.
    pub(crate) fn observe(
        &mut self,
        now: Instant,
        rss_mb: f64,
        cpu_secs: f64,
    ) -> (Vec<Verdict>, f64) {
        let mut out = Vec::new();
        let mem = &self.limits.memory;
        let fire = |level, threshold: u64| Verdict {
            level,
            resource: ResourceKind::Memory,
            threshold: threshold as f64,
        };
        if let Some(w) = mem.warning {
            if !self.mem_warned && rss_mb >= w as f64 {
                self.mem_warned = true;
                out.push(fire(Level::Warning, w));
            } else if self.mem_warned && rss_mb < w as f64 * REARM_FRACTION {
                self.mem_warned = false;
            }
        }
        if let Some(c) = mem.critical {
            if !self.mem_critical && rss_mb >= c as f64 {
                self.mem_critical = true;
                out.push(fire(Level::Critical, c));
            } else if self.mem_critical && rss_mb < c as f64 * REARM_FRACTION {
                self.mem_critical = false;
            }
        }
        if let Some(h) = mem.hard
            && rss_mb >= h as f64
        {
            out.push(fire(Level::Limit, h));
        }

        // CPU window.
        if let Some(prev) = self.last {
            self.cpu.push_back((prev, now, cpu_secs.max(0.0)));
        }
        self.last = Some(now);
        let window = Duration::from_secs(self.limits.cpu.window_secs.max(1));
        while self
            .cpu
            .front()
            .is_some_and(|&(_, end, _)| end + window <= now)
        {
            self.cpu.pop_front();
        }
        // Keep the window just covered: drop the oldest while the rest still spans it.
        while self.cpu.len() > 1
            && self
                .cpu
                .get(1)
                .is_some_and(|&(start, _, _)| now.duration_since(start) >= window)
        {
            self.cpu.pop_front();
        }
        let span = self
            .cpu
            .front()
            .map_or(Duration::ZERO, |&(start, _, _)| now.duration_since(start));
        let used: f64 = self.cpu.iter().map(|s| s.2).sum();
        let percent = if span.is_zero() {
            0.0
        } else {
            used / span.as_secs_f64() * 100.0
        };
        let full = span >= window;
        let cpu = &self.limits.cpu;
        if let Some(w) = cpu.warning_percent {
            if full && !self.cpu_warned && percent >= w {
                self.cpu_warned = true;
                out.push(Verdict {
                    level: Level::Warning,
                    resource: ResourceKind::Cpu,
                    threshold: w,
                });
            } else if self.cpu_warned && percent < w * REARM_FRACTION {
                self.cpu_warned = false;
            }
        }
        if let Some(h) = cpu.hard_percent
            && full
            && percent >= h
        {
            out.push(Verdict {
                level: Level::Limit,
                resource: ResourceKind::Cpu,
                threshold: h,
            });
        }
        (out, percent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CpuLimits, MemoryLimits, Rlimits};

    fn limits() -> ResolvedLimits {
        ResolvedLimits {
            memory: MemoryLimits {
                warning: Some(60),
                critical: Some(120),
                hard: Some(180),
            },
            cpu: CpuLimits {
                warning_percent: Some(50.0),
                window_secs: 1,
                hard_percent: None,
            },
            rlimits: Rlimits::default(),
        }
    }

    fn levels(v: &[Verdict]) -> Vec<(Level, ResourceKind)> {
        v.iter().map(|v| (v.level, v.resource)).collect()
    }

    #[test]
    fn memory_fires_once_per_crossing_and_rearms_below_the_band() {
        let mut e = Evaluator::new(limits());
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        assert!(e.observe(ms(0), 10.0, 0.0).0.is_empty());
        assert_eq!(
            levels(&e.observe(ms(100), 70.0, 0.0).0),
            [(Level::Warning, ResourceKind::Memory)]
        );
        assert!(e.observe(ms(200), 80.0, 0.0).0.is_empty(), "no repeat");
        assert!(
            e.observe(ms(300), 57.0, 0.0).0.is_empty(),
            "inside the band"
        );
        assert!(
            e.observe(ms(400), 61.0, 0.0).0.is_empty(),
            "not re-armed yet"
        );
        assert!(e.observe(ms(500), 50.0, 0.0).0.is_empty(), "re-armed");
        assert_eq!(e.observe(ms(600), 65.0, 0.0).0.len(), 1, "fires again");
    }

    #[test]
    fn a_jump_past_everything_fires_all_levels_in_order() {
        let mut e = Evaluator::new(limits());
        let v = e.observe(Instant::now(), 500.0, 0.0).0;
        assert_eq!(
            v.iter().map(|v| v.level).collect::<Vec<_>>(),
            [Level::Warning, Level::Critical, Level::Limit]
        );
        assert_eq!(v[2].threshold, 180.0);
    }

    #[test]
    fn cpu_warns_only_when_the_window_is_full_and_sustained() {
        let mut e = Evaluator::new(limits());
        let t = Instant::now();
        let mut fired = Vec::new();
        for i in 0..=15u64 {
            // 80% of a core over each 100 ms interval.
            let (v, pct) = e.observe(t + Duration::from_millis(i * 100), 10.0, 0.08);
            if !v.is_empty() {
                fired.push((i, levels(&v), pct));
            }
        }
        assert_eq!(fired.len(), 1, "{fired:?}");
        let (i, lv, pct) = &fired[0];
        assert_eq!(*i, 10, "the first full 1 s window");
        assert_eq!(lv, &[(Level::Warning, ResourceKind::Cpu)]);
        assert!((pct - 80.0).abs() < 1.0, "{pct}");
    }

    #[test]
    fn short_cpu_spike_does_not_warn() {
        let mut e = Evaluator::new(limits());
        let t = Instant::now();
        for i in 0..=30u64 {
            let cpu = if i == 12 { 0.1 } else { 0.0 }; // one busy interval
            let (v, _) = e.observe(t + Duration::from_millis(i * 100), 10.0, cpu);
            assert!(v.is_empty(), "tick {i}");
        }
    }

    #[test]
    fn hard_cpu_limit_when_configured() {
        let mut l = limits();
        l.cpu.hard_percent = Some(70.0);
        let mut e = Evaluator::new(l);
        let t = Instant::now();
        let mut last = Vec::new();
        for i in 0..=10u64 {
            last = e.observe(t + Duration::from_millis(i * 100), 10.0, 0.09).0;
        }
        assert_eq!(
            levels(&last),
            [
                (Level::Warning, ResourceKind::Cpu),
                (Level::Limit, ResourceKind::Cpu)
            ]
        );
    }
}
