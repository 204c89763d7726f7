//! Polling measurement of process trees: sysinfo's targeted refresh of the trees' pids (memory
//! and CPU only), membership from [`crate::process::procfs`].
//!
//! Each tick refreshes the members due (and the root) of every polled tree through one
//! [`Probe`], i.e. one `System::refresh_processes_specifics(ProcessesToUpdate::Some(pids), ..)`
//! for all trees, which reads each member's `status` (for the thread-group id), its kept-open
//! `stat` and its `statm`, plus `/proc/uptime` and `/proc/stat` once: a targeted walk, not a
//! system scan. New descendants are found through `/proc/<pid>/task/*/children` of each member
//! and refreshed in a further round. Orphans re-parented away from the tree stay members while
//! they live (same pid, same start time). A rescan ([`crate::process::tree_members_in`] over
//! [`crate::process::rescan_snapshot`], which also finds members by their `MPM_TREE` tag) runs on
//! the first tick and whenever the sampler hands in a snapshot (every `limits.rescan_ticks`), to
//! catch members that left by a double fork between two ticks. When mpm spawned the tree and is
//! its subreaper, such an orphan is mpm's own child, so the rescan reads only mpm's children, not
//! every process on the machine.
//!
//! Cost cuts that keep every member:
//! - a member that used no CPU since its previous reading is due every [`IDLE_EVERY`]th tick
//!   only (when the governor allows it: [`TreeTracker::skip_idle`]); between two readings a
//!   `kill(pid, 0)` tells that it still lives. An idle tree of 20 processes costs about a quarter
//!   of what reading every member costs;
//! - the children walk is skipped when no process born since the previous sample can be a member
//!   (`ns_last_pid` unchanged: nobody was born; or each of the few pids allocated since is gone or
//!   has a parent outside the tree), and a single-threaded member's children come from its main
//!   thread's file without listing its `task` folder.

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
    ProcessRefreshKind::nothing()
        .with_memory()
        .with_cpu()
        .without_tasks()
}

/// How often a member that was idle at its last refresh is refreshed again, in ticks. An idle
/// member (no CPU time since its previous refresh) cannot have grown its memory either, since a
/// page fault runs in the process's own context; so until it runs again its last reading stands.
/// It is refreshed every `IDLE_EVERY`th tick (members spread over the ticks by pid), which
/// bounds how late a member that wakes up is seen: at most `IDLE_EVERY - 1` ticks. Its CPU time
/// meanwhile is not lost, only counted at that refresh.
pub const IDLE_EVERY: u64 = 4;

/// What sysinfo reads of the processes the governor watches: one `System` for every tree the
/// sampler polls, so a tick costs one refresh call (one `/proc/uptime`, one `/proc/stat`) plus
/// three small files per member refreshed, whatever the number of trees.
pub struct Probe {
    system: System,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("processes", &self.system.processes().len())
            .finish()
    }
}

impl Default for Probe {
    fn default() -> Self {
        Self::new()
    }
}

/// One member as sysinfo read it.
#[derive(Debug, Clone, Copy)]
struct Reading {
    start: u64,
    cpu_ms: u64,
    rss: u64,
}

impl Probe {
    /// An empty probe.
    pub fn new() -> Self {
        init_sysinfo();
        Probe {
            system: System::new(),
        }
    }

    /// Refresh these pids (memory and CPU): the targeted refresh, never a system scan.
    pub fn refresh(&mut self, pids: &[Pid]) {
        if !pids.is_empty() {
            self.system.refresh_processes_specifics(
                ProcessesToUpdate::Some(pids),
                true,
                refresh_kind(),
            );
        }
    }

    /// The last reading of `pid`; `None` when it is gone or a zombie.
    fn reading(&self, pid: i32) -> Option<Reading> {
        let p = self.system.process(Pid::from_u32(pid as u32))?;
        if matches!(p.status(), ProcessStatus::Zombie | ProcessStatus::Dead) {
            return None;
        }
        Some(Reading {
            start: p.start_time(),
            cpu_ms: p.accumulated_cpu_time(),
            rss: p.memory(),
        })
    }

    /// sysinfo keeps an entry (and maybe an open `stat`) per pid it refreshed; when it holds many
    /// more than the `members` the trackers know (former members alive elsewhere, reused pids),
    /// start afresh.
    pub fn forget_stale(&mut self, members: usize) {
        if self.system.processes().len() > 2 * members + 16 {
            self.system = System::new();
        }
    }
}

/// A known member: its start time (to tell a reused pid), CPU time and memory at its last
/// refresh, and whether it was idle then.
#[derive(Debug, Clone, Copy)]
struct Member {
    start: u64,
    cpu_ms: u64,
    rss: u64,
    idle: bool,
}

/// Tracks the members of the tree rooted at session leader `root` across ticks.
///
/// A sample is two steps so that every tree the sampler polls shares one sysinfo refresh:
/// [`plan`](Self::plan) lists the pids due this tick, the caller refreshes them all through one
/// [`Probe`], and [`settle`](Self::settle) reads them and follows newborn members.
/// [`sample`](Self::sample) does the three for one tree.
pub struct TreeTracker {
    root: i32,
    known: HashMap<i32, Member>,
    ticks: u64,
    rescan_every: u64,
    /// Refresh idle members every [`IDLE_EVERY`]th tick only (see there).
    skip_idle: bool,
    /// `ns_last_pid` at the start of the previous sample (`None`: unknown, walk the children).
    last_pid: Option<u64>,
    /// Children files read so far (the benchmark's counter of skipped walks).
    children_reads: u64,
    /// Member refreshes so far (the benchmark's counter of skipped idle members).
    refreshes: u64,
    /// Between `plan` and `settle`: the pids due, those considered this tick, and whether the
    /// children are walked.
    due: Vec<i32>,
    seen: HashSet<i32>,
    walk: bool,
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
    /// after the first). Every member is refreshed at every sample; see
    /// [`skip_idle`](Self::skip_idle).
    pub fn new(root: i32, rescan_every: u64) -> Self {
        TreeTracker {
            root,
            known: HashMap::new(),
            ticks: 0,
            rescan_every,
            skip_idle: false,
            last_pid: None,
            children_reads: 0,
            refreshes: 0,
            due: Vec::new(),
            seen: HashSet::new(),
            walk: false,
        }
    }

    /// Refresh a member that was idle at its last refresh only every [`IDLE_EVERY`]th sample.
    /// Its CPU time is then counted up to `IDLE_EVERY - 1` samples late, so the governor turns
    /// this on only when no CPU window it evaluates is shorter than that.
    pub fn skip_idle(mut self, on: bool) -> Self {
        self.skip_idle = on;
        self
    }

    /// The tree's root pid.
    pub fn root(&self) -> i32 {
        self.root
    }

    /// Whether a process born since the previous sample (pids `prev+1..=now`) may be a member:
    /// one whose parent is a known member (or the root). When few pids were allocated, reading
    /// their `stat` (most are gone already) is cheaper than every member's children files; when
    /// many were (a `stat` costs about two `children` files), or the pids wrapped, assume yes and
    /// walk. A process whose parent died before this sample is not a child of any member either:
    /// the rescan finds it (by its tag).
    fn born_into_tree(&self, prev: u64, now: u64) -> bool {
        let budget = (self.known.len() as u64 / 2).max(4);
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

    /// How many member refreshes were asked of sysinfo so far (idle members skipped do not
    /// count).
    pub fn refreshes(&self) -> u64 {
        self.refreshes
    }

    /// The members found by the last sample.
    pub fn members(&self) -> Vec<i32> {
        let mut v: Vec<i32> = self.known.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Measure the tree now through `probe`, rescanning `/proc` on this tracker's own schedule.
    /// `members == 0` means the tree is gone.
    pub fn sample(&mut self, probe: &mut Probe) -> TreeSample {
        let rescan = self.ticks == 0
            || (self.rescan_every > 0 && self.ticks.is_multiple_of(self.rescan_every));
        let snapshot = rescan.then(|| crate::process::rescan_snapshot(&[self.root]));
        let mut pids = Vec::new();
        self.plan(snapshot.as_deref(), &mut pids);
        probe.refresh(&pids);
        self.settle(probe)
    }

    /// Step one of a sample: push onto `out` the pids to refresh now: the root and the members
    /// due, and with a `/proc` snapshot (shared by every tree the sampler watches, so many trees
    /// cost one scan) the members that left by a double fork. The first sample always scans.
    pub fn plan(&mut self, snapshot: Option<&[crate::process::ProcStat]>, out: &mut Vec<Pid>) {
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
        self.walk = snapshot.is_some()
            || match (self.last_pid, last_pid) {
                (Some(prev), Some(now)) => prev != now && self.born_into_tree(prev, now),
                _ => true,
            };
        self.last_pid = last_pid;
        let me = std::process::id() as i32;
        self.seen.clear();
        self.due.clear();
        let tick = self.ticks;
        let skip_idle = self.skip_idle;
        let (seen, due) = (&mut self.seen, &mut self.due);
        let offer = |pid: i32, seen: &mut HashSet<i32>, due: &mut Vec<i32>| {
            if pid > 0 && pid != me && seen.insert(pid) {
                due.push(pid);
            }
        };
        if !self.known.contains_key(&self.root) {
            offer(self.root, seen, due);
        }
        for (&pid, m) in &self.known {
            if !(skip_idle && m.idle) || (tick + pid as u64).is_multiple_of(IDLE_EVERY) {
                offer(pid, seen, due);
            } else {
                seen.insert(pid);
            }
        }
        if let Some(all) = snapshot {
            for pid in crate::process::tree_members_in(self.root, all) {
                offer(pid, seen, due);
            }
        }
        out.extend(self.due.iter().map(|&p| Pid::from_u32(p as u32)));
    }

    /// Step two: read the pids [`plan`](Self::plan) listed (refreshed by the caller), carry the
    /// idle members not due, and refresh newborn members found through the children files.
    pub fn settle(&mut self, probe: &mut Probe) -> TreeSample {
        let me = std::process::id() as i32;
        let mut old = std::mem::take(&mut self.known);
        let mut sample = TreeSample::default();
        let mut cpu_ms = 0u64;
        let mut round = std::mem::take(&mut self.due);
        let mut seen = std::mem::take(&mut self.seen);
        let offer = |pid: i32, seen: &mut HashSet<i32>, round: &mut Vec<i32>| {
            if pid > 0 && pid != me && seen.insert(pid) {
                round.push(pid);
            }
        };
        let mut pids: Vec<Pid> = Vec::new();
        let mut kids = Vec::new();
        // Round 1 reads what the caller refreshed; each further round refreshes the children
        // first seen in the one before (a tree that did not change costs no further round).
        for n in 0.. {
            if n > 0 {
                if round.is_empty() {
                    break;
                }
                pids.clear();
                pids.extend(round.iter().map(|&p| Pid::from_u32(p as u32)));
                probe.refresh(&pids);
            }
            self.refreshes += round.len() as u64;
            let mut next = Vec::new();
            for pid in round.drain(..) {
                let Some(r) = probe.reading(pid) else {
                    old.remove(&pid);
                    continue; // gone
                };
                let prev = match old.remove(&pid) {
                    Some(m) if m.start == r.start => Some(m.cpu_ms),
                    // A reused pid: a member again only when reached through a live member.
                    Some(_) => {
                        seen.remove(&pid);
                        continue;
                    }
                    None => None,
                };
                let used = prev.map_or(r.cpu_ms, |before| r.cpu_ms.saturating_sub(before));
                cpu_ms += used;
                sample.members += 1;
                sample.rss_bytes += r.rss;
                self.known.insert(
                    pid,
                    Member {
                        start: r.start,
                        cpu_ms: r.cpu_ms,
                        rss: r.rss,
                        idle: prev.is_some() && used == 0,
                    },
                );
                if self.walk {
                    self.walk_children(pid, &mut kids, |k| offer(k, &mut seen, &mut next));
                }
            }
            if n == 0 {
                // The idle members not due this tick: their last reading stands while they
                // live. A newborn child of one is read in the next round.
                for (pid, m) in std::mem::take(&mut old) {
                    if !crate::process::pid_exists(pid) {
                        continue;
                    }
                    sample.members += 1;
                    sample.rss_bytes += m.rss;
                    self.known.insert(pid, m);
                    if self.walk {
                        self.walk_children(pid, &mut kids, |k| offer(k, &mut seen, &mut next));
                    }
                }
            }
            round = next;
        }
        self.seen = seen;
        sample.cpu_secs = cpu_ms as f64 / 1000.0;
        sample
    }

    /// Offer each child of `pid` (from its `children` files).
    fn walk_children(&mut self, pid: i32, kids: &mut Vec<i32>, mut offer: impl FnMut(i32)) {
        kids.clear();
        self.children_reads += 1;
        crate::process::procfs::children_of(pid, kids);
        for &k in kids.iter() {
            offer(k);
        }
    }

    /// How many members the last sample counted.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// Whether the last sample found no member.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
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
        let mut probe = Probe::new();
        let mut t = TreeTracker::new(root, 0);
        let first = t.sample(&mut probe).members;
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(b"go\n");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut n = first;
        while n < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
            n = t.sample(&mut probe).members;
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
        let mut probe = Probe::new();
        let mut t = TreeTracker::new(root, 0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut first = t.sample(&mut probe).members;
        while first < n + 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            first = t.sample(&mut probe).members;
        }
        let second = t.sample(&mut probe);
        crate::process::stop_tree(root, std::time::Duration::from_millis(100));
        let _ = child.wait();
        assert_eq!((first, second.members), (n + 1, n + 1));
        assert!(second.rss_bytes > 0);
    }

    /// A tree of `n` processes (`sh` and its sleeps) in its own process group, stopped on drop.
    struct Sleeps(std::process::Child);

    impl Sleeps {
        fn start(n: usize) -> (Sleeps, i32) {
            use std::os::unix::process::CommandExt;
            let child = std::process::Command::new("sh")
                .args([
                    "-c",
                    &format!("for i in $(seq {}); do sleep 100 & done; wait", n - 1),
                ])
                .process_group(0)
                .spawn()
                .unwrap();
            let root = child.id() as i32;
            (Sleeps(child), root)
        }
    }

    impl Drop for Sleeps {
        fn drop(&mut self) {
            crate::process::stop_tree(self.0.id() as i32, std::time::Duration::from_millis(100));
            let _ = self.0.wait();
        }
    }

    #[test]
    fn idle_members_are_read_every_few_samples_and_still_counted() {
        let n = 9;
        let (_tree, root) = Sleeps::start(n);
        let mut probe = Probe::new();
        let mut t = TreeTracker::new(root, 0).skip_idle(true);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut full = t.sample(&mut probe);
        while full.members < n && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            full = t.sample(&mut probe);
        }
        assert_eq!(full.members, n);
        // Once every member was seen idle, a sample reads about one in IDLE_EVERY of them; the
        // others' last readings stand, so the tree's size and memory do not change.
        t.sample(&mut probe);
        let before = t.refreshes();
        let rounds = 4 * IDLE_EVERY;
        for _ in 0..rounds {
            let s = t.sample(&mut probe);
            assert_eq!(s.members, n);
            assert!(s.rss_bytes > 0);
        }
        let read = t.refreshes() - before;
        assert!(
            read <= rounds * n as u64 / IDLE_EVERY + rounds,
            "{read} refreshes in {rounds} samples of {n} idle members"
        );
        assert!(read >= rounds * n as u64 / IDLE_EVERY / 2, "{read}");
        // Without the skip every member is read at every sample.
        let mut all = TreeTracker::new(root, 0);
        all.sample(&mut probe);
        let before = all.refreshes();
        for _ in 0..rounds {
            all.sample(&mut probe);
        }
        assert_eq!(all.refreshes() - before, rounds * n as u64);
    }

    #[test]
    fn an_idle_member_that_exits_is_dropped_at_once() {
        let (tree, root) = Sleeps::start(3);
        let mut probe = Probe::new();
        let mut t = TreeTracker::new(root, 0).skip_idle(true);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while t.sample(&mut probe).members < 3 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        t.sample(&mut probe);
        let victim = *t.members().iter().find(|&&p| p != root).unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(victim),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        // `sh` reaps it from its `wait`; then the next sample no longer counts it, due or not.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while crate::process::pid_exists(victim) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let s = t.sample(&mut probe);
        drop(tree);
        assert_eq!(s.members, 2, "{:?}", t.members());
    }

    #[test]
    fn the_soft_open_file_limit_is_kept() {
        use nix::sys::resource::{Resource, getrlimit};
        let before = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let _ = Probe::new();
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), before);
    }
}
