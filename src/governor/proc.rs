//! Polling measurement of one process tree straight from `/proc`, touching only the tree's pids.
//!
//! Each tick reads one `/proc/<pid>/stat` per member (state, parent, session, CPU ticks, RSS pages
//! all come from that one line) and `/proc/<pid>/task/<tid>/children` to find new descendants: a
//! targeted walk, not a system scan. Orphans re-parented away from the tree stay members while they
//! live (same pid and start time). A full `/proc` scan ([`crate::process::tree_members`]) runs only
//! on the first tick and every `rescan_every` ticks, to catch members that left by a double fork
//! between two ticks.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

/// The fields of `/proc/<pid>/stat` the sampler uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidStat {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub state: char,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    /// Start time after boot, in clock ticks: tells a reused pid from the original.
    pub start: u64,
    /// Resident set, in pages.
    pub rss_pages: u64,
}

/// Parse one `/proc/<pid>/stat` line (the command name may hold spaces and parentheses).
pub fn parse_pid_stat(text: &str) -> Option<PidStat> {
    let close = text.rfind(')')?;
    let pid = text[..text.find(' ')?].parse().ok()?;
    // Field 3 (state) is index 0 after the closing parenthesis.
    let f: Vec<&str> = text[close + 1..].split_ascii_whitespace().collect();
    let num = |i: usize| f.get(i)?.parse::<u64>().ok();
    let int = |i: usize| f.get(i)?.parse::<i32>().ok();
    Some(PidStat {
        pid,
        state: f.first()?.chars().next()?,
        ppid: int(1)?,
        pgid: int(2)?,
        sid: int(3)?,
        cpu_ticks: num(11)? + num(12)?,
        start: num(19)?,
        rss_pages: num(21)?,
    })
}

/// Read and parse `/proc/<pid>/stat`; `None` when the process is gone.
pub fn read_pid_stat(pid: i32) -> Option<PidStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_pid_stat(&text)
}

/// Every child pid of every thread of `pid` (`/proc/<pid>/task/*/children`).
pub fn children_of(pid: i32, out: &mut Vec<i32>) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    for task in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        out.extend(
            text.split_ascii_whitespace()
                .filter_map(|s| s.parse::<i32>().ok()),
        );
    }
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), 100 when unknown.
pub fn clock_ticks() -> u64 {
    static TCK: OnceLock<u64> = OnceLock::new();
    *TCK.get_or_init(|| {
        // SAFETY: sysconf has no preconditions and touches no memory of ours.
        let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if v > 0 { v as u64 } else { 100 }
    })
}

/// Page size in bytes, 4096 when unknown.
pub fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: as above.
        let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if v > 0 { v as u64 } else { 4096 }
    })
}

/// One measurement of a whole tree.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TreeSample {
    /// Live (non-zombie) members found.
    pub members: usize,
    /// Sum of the members' resident memory, bytes.
    pub rss_bytes: u64,
    /// CPU seconds the tree used since the previous sample (all of a new member's time counts).
    pub cpu_secs: f64,
}

/// Tracks the members of the tree rooted at session leader `root` across ticks.
#[derive(Debug)]
pub struct TreeTracker {
    root: i32,
    /// Known members: pid -> (start time, cumulative CPU ticks at the last sample).
    known: HashMap<i32, (u64, u64)>,
    ticks: u64,
    rescan_every: u64,
}

impl TreeTracker {
    /// A tracker for `root`; a full `/proc` scan runs every `rescan_every` samples (0 = never
    /// after the first).
    pub fn new(root: i32, rescan_every: u64) -> Self {
        TreeTracker {
            root,
            known: HashMap::new(),
            ticks: 0,
            rescan_every,
        }
    }

    /// The tree's root pid.
    pub fn root(&self) -> i32 {
        self.root
    }

    /// The members found by the last sample.
    pub fn members(&self) -> Vec<i32> {
        let mut v: Vec<i32> = self.known.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Measure the tree now. `members == 0` means the tree is gone.
    pub fn sample(&mut self) -> TreeSample {
        let rescan = self.ticks == 0
            || (self.rescan_every > 0 && self.ticks.is_multiple_of(self.rescan_every));
        self.ticks += 1;
        let me = std::process::id() as i32;
        let mut queue: Vec<i32> = vec![self.root];
        queue.extend(self.known.keys().copied());
        if rescan {
            queue.extend(crate::process::tree_members(self.root));
        }
        let mut seen: HashSet<i32> = HashSet::new();
        let mut next: HashMap<i32, (u64, u64)> = HashMap::new();
        let mut sample = TreeSample::default();
        let mut kids = Vec::new();
        let mut ticks_delta = 0u64;
        while let Some(pid) = queue.pop() {
            if pid <= 0 || pid == me || !seen.insert(pid) {
                continue;
            }
            let Some(st) = read_pid_stat(pid) else {
                continue;
            };
            if st.state == 'Z' || st.state == 'X' {
                continue;
            }
            // A pid we knew but that now has a different start time was reused by a stranger;
            // it is a member again only if the walk reaches it through a live member.
            let reused = self
                .known
                .get(&pid)
                .is_some_and(|&(start, _)| start != st.start);
            if reused && pid != self.root && st.sid != self.root && st.pgid != self.root {
                continue;
            }
            match self.known.get(&pid) {
                Some(&(start, prev)) if start == st.start => {
                    ticks_delta += st.cpu_ticks.saturating_sub(prev);
                }
                _ => ticks_delta += st.cpu_ticks,
            }
            next.insert(pid, (st.start, st.cpu_ticks));
            sample.members += 1;
            sample.rss_bytes += st.rss_pages * page_size();
            kids.clear();
            children_of(pid, &mut kids);
            queue.extend(kids.iter().copied());
        }
        self.known = next;
        sample.cpu_secs = ticks_delta as f64 / clock_ticks() as f64;
        sample
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_start_and_rss() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime cutime cstime prio nice threads itreal starttime vsize rss ...
        let line = "42 (a (b) c) S 1 42 42 0 -1 0 0 0 0 0 7 5 0 0 20 0 1 0 9999 1000 321 rest";
        let s = parse_pid_stat(line).unwrap();
        assert_eq!(
            (s.pid, s.ppid, s.pgid, s.sid, s.state),
            (42, 1, 42, 42, 'S')
        );
        assert_eq!(s.cpu_ticks, 12);
        assert_eq!(s.start, 9999);
        assert_eq!(s.rss_pages, 321);
    }

    #[test]
    fn truncated_stat_is_none() {
        assert!(parse_pid_stat("42 (x) S 1 42").is_none());
        assert!(parse_pid_stat("").is_none());
    }

    #[test]
    fn own_stat_is_readable() {
        let me = std::process::id() as i32;
        let s = read_pid_stat(me).unwrap();
        assert_eq!(s.pid, me);
        assert!(s.rss_pages > 0);
    }
}
