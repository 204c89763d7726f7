//! Polling measurement of one process tree: sysinfo's targeted refresh of the tree's pids (memory
//! and CPU only), membership from [`crate::process::procfs`].
//!
//! Each tick refreshes exactly the known members (and the root) through
//! `System::refresh_processes_specifics(ProcessesToUpdate::Some(pids), ..)`, which reads each
//! member's kept-open `stat` and its `statm`: a targeted walk, not a system scan. New descendants
//! are found through `/proc/<pid>/task/*/children` of each live member and refreshed in a second
//! round. Orphans re-parented away from the tree stay members while they live (same pid, same
//! start time). A rescan ([`crate::process::tree_members_in`] over
//! [`crate::process::rescan_snapshot`], which also finds members by their `MPM_TREE` tag) runs on
//! the first tick and whenever the sampler hands in a snapshot (every `limits.rescan_ticks`), to
//! catch members that left by a double fork between two ticks. When mpm spawned the tree and is
//! its subreaper, such an orphan is mpm's own child, so the rescan reads only mpm's children, not
//! every process on the machine.
//!
//! Cost cuts that keep every member: the children walk is skipped when no process born since the
//! previous sample can be a member (`ns_last_pid` unchanged: nobody was born; or each of the few
//! pids allocated since is gone or has a parent outside the tree), and a single-threaded member's children come from its main thread's
//! file without listing its `task` folder. What remains per tick is sysinfo's refresh (per
//! member: `status` for the thread-group id, the kept-open `stat`, `statm`).

use std::collections::{HashMap, HashSet};
use std::sync::Once;

use sysinfo::{Pid, ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System};

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

/// `stat` files sysinfo may keep open in this process (all trackers together); beyond this it
/// re-opens them per refresh, so a huge tree cannot exhaust mpm's descriptors.
pub const KEEP_OPEN_MAX: usize = 64;

/// Cap the files sysinfo keeps open, once per process. sysinfo raises the soft `RLIMIT_NOFILE`
/// to the hard one the first time it counts its files; the soft limit is put back, so the agents
/// mpm spawns inherit the user's limit unchanged.
fn init_sysinfo() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let saved = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE);
        sysinfo::set_open_files_limit(KEEP_OPEN_MAX);
        if let Ok((soft, hard)) = saved {
            let _ = nix::sys::resource::setrlimit(
                nix::sys::resource::Resource::RLIMIT_NOFILE,
                soft,
                hard,
            );
        }
    });
}

/// What is refreshed per member: resident memory and CPU time, nothing else.
fn refresh_kind() -> ProcessRefreshKind {
    ProcessRefreshKind::nothing().with_memory().with_cpu()
}

/// A known member: its start time (to tell a reused pid) and CPU time at the last sample.
#[derive(Debug, Clone, Copy)]
struct Member {
    start: u64,
    cpu_ms: u64,
}

/// Tracks the members of the tree rooted at session leader `root` across ticks.
pub struct TreeTracker {
    root: i32,
    system: System,
    known: HashMap<i32, Member>,
    ticks: u64,
    rescan_every: u64,
    /// `ns_last_pid` at the start of the previous sample (`None`: unknown, walk the children).
    last_pid: Option<u64>,
    /// Children files read so far (the benchmark's counter of skipped walks).
    children_reads: u64,
}

impl std::fmt::Debug for TreeTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeTracker")
            .field("root", &self.root)
            .field("members", &self.known.len())
            .field("ticks", &self.ticks)
            .finish()
    }
}

impl TreeTracker {
    /// A tracker for `root`; a full `/proc` scan runs every `rescan_every` samples (0 = never
    /// after the first).
    pub fn new(root: i32, rescan_every: u64) -> Self {
        init_sysinfo();
        TreeTracker {
            root,
            system: System::new(),
            known: HashMap::new(),
            ticks: 0,
            rescan_every,
            last_pid: None,
            children_reads: 0,
        }
    }

    /// The tree's root pid.
    pub fn root(&self) -> i32 {
        self.root
    }

    /// Whether a process born since the previous sample (pids `prev+1..=now`) may be a member:
    /// one whose parent is a known member (or the root). When few pids were allocated, reading
    /// their `stat` (most are gone already) is cheaper than every member's children files; when
    /// many were, or the pids wrapped, assume yes and walk. A process whose parent died before
    /// this sample is not a child of any member either: the rescan finds it (by its tag).
    fn born_into_tree(&self, prev: u64, now: u64) -> bool {
        let budget = (self.known.len() as u64).max(8);
        if now < prev || now - prev > budget {
            return true;
        }
        (prev + 1..=now).any(|pid| {
            crate::process::read_stat(pid as i32)
                .is_some_and(|st| st.ppid == self.root || self.known.contains_key(&st.ppid))
        })
    }

    /// How many members' children files were read so far (walks skipped while no pid was
    /// allocated do not count).
    pub fn children_reads(&self) -> u64 {
        self.children_reads
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
            let all = crate::process::rescan_snapshot(&[self.root]);
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
                own = crate::process::rescan_snapshot(&[self.root]);
                Some(own.as_slice())
            }
            None => None,
        };
        self.ticks += 1;
        // No pid allocated since the previous sample began: no process was born, so no member
        // has a child the last walk did not see; only a rescan can add members then.
        let last_pid = crate::process::procfs::last_pid();
        let walk = snapshot.is_some()
            || match (self.last_pid, last_pid) {
                (Some(prev), Some(now)) => prev != now && self.born_into_tree(prev, now),
                _ => true,
            };
        self.last_pid = last_pid;
        let me = std::process::id() as i32;
        let mut seen: HashSet<i32> = HashSet::with_capacity(self.known.len() * 2 + 1);
        let mut round: Vec<i32> = Vec::with_capacity(self.known.len() + 1);
        let offer = |pid: i32, seen: &mut HashSet<i32>, round: &mut Vec<i32>| {
            if pid > 0 && pid != me && seen.insert(pid) {
                round.push(pid);
            }
        };
        offer(self.root, &mut seen, &mut round);
        for &pid in self.known.keys() {
            offer(pid, &mut seen, &mut round);
        }
        if let Some(all) = snapshot {
            for pid in crate::process::tree_members_in(self.root, all) {
                offer(pid, &mut seen, &mut round);
            }
        }
        let mut old = std::mem::take(&mut self.known);
        let mut sample = TreeSample::default();
        let mut cpu_ms = 0u64;
        let mut pids: Vec<Pid> = Vec::with_capacity(round.len());
        let mut kids = Vec::new();
        // Round 1 refreshes the known members; each further round the children first seen in
        // the one before (a tree that did not change costs one refresh).
        while !round.is_empty() {
            pids.clear();
            pids.extend(round.iter().map(|&p| Pid::from_u32(p as u32)));
            self.system.refresh_processes_specifics(
                ProcessesToUpdate::Some(&pids),
                true,
                refresh_kind(),
            );
            let mut next = Vec::new();
            for pid in round.drain(..) {
                let Some(p) = self.system.process(Pid::from_u32(pid as u32)) else {
                    continue; // gone
                };
                if matches!(p.status(), ProcessStatus::Zombie | ProcessStatus::Dead) {
                    continue;
                }
                let prev = match old.remove(&pid) {
                    Some(m) if m.start == p.start_time() => Some(m.cpu_ms),
                    // A reused pid: a member again only when reached through a live member.
                    Some(_) => {
                        seen.remove(&pid);
                        continue;
                    }
                    None => None,
                };
                let now = p.accumulated_cpu_time();
                cpu_ms += prev.map_or(now, |before| now.saturating_sub(before));
                sample.members += 1;
                sample.rss_bytes += p.memory();
                self.known.insert(
                    pid,
                    Member {
                        start: p.start_time(),
                        cpu_ms: now,
                    },
                );
                if !walk {
                    continue;
                }
                kids.clear();
                self.children_reads += 1;
                crate::process::procfs::children_of(pid, &mut kids);
                for &k in &kids {
                    offer(k, &mut seen, &mut next);
                }
            }
            round = next;
        }
        // sysinfo keeps an entry (and maybe an open `stat`) per pid it refreshed; drop those of
        // former members that are still alive elsewhere (reused pids, members that left).
        if self.system.processes().len() > 2 * self.known.len() + 16 {
            self.system = System::new();
        }
        sample.cpu_secs = cpu_ms as f64 / 1000.0;
        sample
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let second = t.sample();
        crate::process::stop_tree(root, std::time::Duration::from_millis(100));
        let _ = child.wait();
        assert_eq!((first, second.members), (n + 1, n + 1));
        assert!(second.rss_bytes > 0);
    }

    #[test]
    fn the_soft_open_file_limit_is_kept() {
        use nix::sys::resource::{Resource, getrlimit};
        let before = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let _ = TreeTracker::new(std::process::id() as i32, 0);
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), before);
    }
}
