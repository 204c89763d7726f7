//! Polling measurement of one process tree straight from `/proc`, touching only the tree's pids.
//!
//! Each tick reads one `/proc/<pid>/stat` per member (state, parent, session, CPU ticks, RSS pages
//! all come from that one line) and `/proc/<pid>/task/<tid>/children` to find new descendants: a
//! targeted walk, not a system scan. Orphans re-parented away from the tree stay members while they
//! live (same pid and start time). A full `/proc` scan ([`crate::process::tree_members`]) runs only
//! on the first tick and every `rescan_every` ticks, to catch members that left by a double fork
//! between two ticks.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

/// The one `/proc/<pid>/stat` parser lives in [`crate::process`]; these names are the sampler's.
pub use crate::process::{
    ProcStat as PidStat, parse_stat as parse_pid_stat, read_stat as read_pid_stat,
};

fn open_stat(pid: i32) -> Option<File> {
    File::open(format!("/proc/{pid}/stat")).ok()
}

/// Re-read an open `/proc/<pid>/stat`. The descriptor stays bound to the process it was opened
/// for, so a dead process reads as an error (`None`) even if its pid was reused.
fn reread(file: &File, buf: &mut [u8]) -> Option<PidStat> {
    let n = file.read_at(buf, 0).ok()?;
    parse_pid_stat(&buf[..n])
}

/// Children of `pid`: through the kept-open main-thread `children` file when the process has one
/// thread (re-read with `pread`), else from every thread's file.
fn children(pid: i32, threads: u64, kept: &mut Option<File>, out: &mut Vec<i32>) {
    if threads > 1 {
        *kept = None;
        children_of(pid, out);
        return;
    }
    if kept.is_none() {
        *kept = File::open(format!("/proc/{pid}/task/{pid}/children")).ok();
    }
    let Some(file) = kept else { return };
    let mut buf = [0u8; 4096];
    let mut text = Vec::new();
    loop {
        match file.read_at(&mut buf, text.len() as u64) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.extend_from_slice(&buf[..n]),
        }
    }
    out.extend(
        text.split(|b| b.is_ascii_whitespace())
            .filter_map(|w| std::str::from_utf8(w).ok()?.parse::<i32>().ok()),
    );
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

/// Members per tree whose `/proc` files stay open (two descriptors each); beyond this the files
/// are opened per tick, so a huge tree cannot exhaust mpm's descriptors.
pub const KEEP_OPEN_MAX: usize = 64;

/// A known member: its open `stat` file, start time and CPU ticks at the last sample.
#[derive(Debug)]
struct Member {
    /// `None` past [`KEEP_OPEN_MAX`] members: then re-opened each tick.
    stat: Option<File>,
    children: Option<File>,
    start: u64,
    ticks: u64,
}

/// Tracks the members of the tree rooted at session leader `root` across ticks, keeping the first
/// [`KEEP_OPEN_MAX`] members' `/proc/<pid>/stat` open (one `pread` per member per tick; an open
/// descriptor is immune to pid reuse, a re-opened one is checked by start time).
#[derive(Debug)]
pub struct TreeTracker {
    root: i32,
    known: HashMap<i32, Member>,
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

    /// Measure the tree now, rescanning `/proc` on this tracker's own schedule. `members == 0`
    /// means the tree is gone.
    pub fn sample(&mut self) -> TreeSample {
        let rescan = self.ticks == 0
            || (self.rescan_every > 0 && self.ticks.is_multiple_of(self.rescan_every));
        if rescan {
            let all = crate::process::all_processes();
            self.sample_with(Some(&all))
        } else {
            self.sample_with(None)
        }
    }

    /// Measure the tree now; with a `/proc` snapshot (shared by every tree the sampler watches,
    /// so many trees cost one scan), also look for members that left by a double fork. The first
    /// sample always scans.
    pub fn sample_with(&mut self, snapshot: Option<&[crate::process::ProcStat]>) -> TreeSample {
        let own;
        let snapshot = match snapshot {
            Some(s) => Some(s),
            None if self.ticks == 0 => {
                own = crate::process::all_processes();
                Some(own.as_slice())
            }
            None => None,
        };
        self.ticks += 1;
        let me = std::process::id() as i32;
        let mut queue: Vec<i32> = vec![self.root];
        queue.extend(self.known.keys().copied());
        if let Some(all) = snapshot {
            queue.extend(crate::process::tree_members_in(self.root, all));
        }
        let mut old = std::mem::take(&mut self.known);
        let mut seen: HashSet<i32> = HashSet::with_capacity(queue.len() * 2);
        let mut sample = TreeSample::default();
        let mut kids = Vec::new();
        let mut ticks_delta = 0u64;
        let mut buf = [0u8; 1024];
        while let Some(pid) = queue.pop() {
            if pid <= 0 || pid == me || !seen.insert(pid) {
                continue;
            }
            // A known member is re-read through its open descriptor; a dead one drops out and
            // its pid, if reused, comes back only when reached through a live member.
            let (file, mut kept, st, prev) = match old.remove(&pid) {
                Some(m) => {
                    let file = m.stat.or_else(|| open_stat(pid));
                    match file.as_ref().and_then(|f| reread(f, &mut buf)) {
                        Some(st) if st.start == m.start => (file, m.children, st, Some(m.ticks)),
                        _ => {
                            seen.remove(&pid);
                            continue;
                        }
                    }
                }
                None => {
                    let Some(file) = open_stat(pid) else {
                        continue;
                    };
                    let Some(st) = reread(&file, &mut buf) else {
                        continue;
                    };
                    (Some(file), None, st, None)
                }
            };
            if st.state == 'Z' || st.state == 'X' {
                continue;
            }
            ticks_delta += prev.map_or(st.cpu_ticks, |p| st.cpu_ticks.saturating_sub(p));
            sample.members += 1;
            sample.rss_bytes += st.rss_pages * page_size();
            let keep = self.known.len() < KEEP_OPEN_MAX;
            kids.clear();
            children(pid, st.threads, &mut kept, &mut kids);
            queue.extend(kids.iter().copied());
            if !keep {
                kept = None;
            }
            self.known.insert(
                pid,
                Member {
                    stat: if keep { file } else { None },
                    children: kept,
                    start: st.start,
                    ticks: st.cpu_ticks,
                },
            );
        }
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
        let s = parse_pid_stat(line.as_bytes()).unwrap();
        assert_eq!(s.threads, 1);
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
        assert!(parse_pid_stat(b"42 (x) S 1 42").is_none());
        assert!(parse_pid_stat(b"").is_none());
        let odd = b"7 (\xff\xfe) S 1 7 7 0 -1 0 0 0 0 0 1 1 0 0 20 0 1 0 5 1000 3";
        assert_eq!(
            parse_pid_stat(odd).map(|s| s.rss_pages),
            Some(3),
            "non-UTF-8 name"
        );
    }

    #[test]
    fn a_child_born_after_the_first_sample_is_found() {
        use std::io::Write;
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sh")
            .args(["-c", "read x; sleep 100 & wait"])
            .stdin(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let root = child.id() as i32;
        let mut t = TreeTracker::new(root, 0);
        let first = t.sample().members;
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(b"go\n");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut n = first;
        while n < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
            n = t.sample().members;
        }
        crate::process::stop_tree(root, std::time::Duration::from_millis(100));
        let _ = child.wait();
        assert_eq!(first, 1);
        assert_eq!(n, 2, "the sleep child was not discovered");
    }

    #[test]
    fn a_tree_larger_than_the_open_file_budget_is_fully_counted() {
        use std::os::unix::process::CommandExt;
        let n = KEEP_OPEN_MAX + 6;
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                &format!("for i in $(seq {n}); do sleep 100 & done; wait"),
            ])
            .process_group(0)
            .spawn()
            .unwrap();
        let root = child.id() as i32;
        let mut t = TreeTracker::new(root, 0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut first = t.sample().members;
        while first < n + 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            first = t.sample().members;
        }
        let second = t.sample().members;
        let open = t.known.values().filter(|m| m.stat.is_some()).count();
        crate::process::stop_tree(root, std::time::Duration::from_millis(100));
        let _ = child.wait();
        assert_eq!((first, second), (n + 1, n + 1));
        assert_eq!(open, KEEP_OPEN_MAX);
    }

    #[test]
    fn own_stat_is_readable() {
        let me = std::process::id() as i32;
        let s = read_pid_stat(me).unwrap();
        assert_eq!(s.pid, me);
        assert!(s.rss_pages > 0);
    }
}
