//! Process trees: finding every process that belongs to a supervised agent, and stopping them all.
//!
//! Trees are also tagged in their environment and mpm is their child subreaper ([`registry`]), so
//! a grandchild that left the session and the group (setsid + double fork) is still a member.
//!
//! Every child mpm starts is a session leader (`setsid`), so its whole tree shares its session id
//! even after intermediate parents die and grandchildren are re-parented to init. A tree is therefore
//! "the processes whose session id is the leader's pid, plus the descendants of the leader by
//! parent link" (the second catches a grandchild that called `setsid` itself while its parent lived).
//! Stopping a tree is: SIGTERM to the process group and to every member, a grace period, then
//! SIGKILL to whatever is left. Process facts come from [`procfs`], the one reader of `/proc`.

#[cfg(target_os = "linux")]
pub mod procfs;
pub mod registry;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

pub use procfs::{ProcStat, all_processes, read_stat, start_time};

/// The live (non-zombie) members of the tree rooted at session leader `root`: same session id or
/// process group, or a descendant by parent link. Includes `root` itself while it lives.
pub fn tree_members(root: i32) -> Vec<i32> {
    tree_members_in(root, &all_processes())
}

/// [`tree_members`] over a snapshot of [`all_processes`] (one scan shared by many trees).
pub fn tree_members_in(root: i32, procs: &[ProcStat]) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut set: HashSet<i32> = procs
        .iter()
        .filter(|p| p.sid == root || p.pgid == root)
        .map(|p| p.pid)
        .collect();
    if procs.iter().any(|p| p.pid == root) {
        set.insert(root);
    }
    let me = std::process::id() as i32;
    // Members that left the session and the group (setsid + double fork) carry the tree's tag.
    if let Some(tag) = registry::tag_of(root) {
        let thorough = registry::thorough();
        for p in procs {
            if p.is_live()
                && p.pid != me
                && (thorough || p.ppid == me || p.ppid == 1)
                && !set.contains(&p.pid)
                && registry::has_tag(p.pid, &tag)
            {
                set.insert(p.pid);
            }
        }
    }
    let mut stack: Vec<i32> = set.iter().copied().collect();
    while let Some(p) = stack.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            if set.insert(c) {
                stack.push(c);
            }
        }
    }
    let zombies: HashSet<i32> = procs
        .iter()
        .filter(|p| p.state == 'Z')
        .map(|p| p.pid)
        .collect();
    // A member re-parented to this process (the subreaper) is ours to reap.
    for p in procs {
        if p.ppid == me && p.pid != root && set.contains(&p.pid) {
            registry::note_adopted(p.pid);
        }
    }
    let mut v: Vec<i32> = set
        .into_iter()
        .filter(|p| !zombies.contains(p) && *p != me)
        .collect();
    v.sort_unstable();
    v
}

/// The snapshot a rescan of the trees rooted at `roots` needs, as cheap as is safe. Members that
/// the children walk cannot reach (a grandchild that called `setsid` and whose parent died) are
/// orphans; when this process is a child subreaper and spawned every one of these trees (each
/// is registered with its tag), every such orphan was re-parented to this process, so its own
/// children are all a rescan must read (a few files instead of every process's `stat`).
/// Otherwise (not a subreaper, a tree it did not spawn, thorough mode) every process.
pub fn rescan_snapshot(roots: &[i32]) -> Vec<ProcStat> {
    let cheap = !registry::thorough()
        && !roots.is_empty()
        && roots.iter().all(|&r| registry::tag_of(r).is_some())
        && registry::is_subreaper();
    if cheap {
        procfs::own_children()
            .into_iter()
            .filter_map(read_stat)
            .collect()
    } else {
        all_processes()
    }
}

/// Send `sig` to the process group `pgid` and to every member of the tree of `root`.
/// Returns how many processes were signalled (group counted once).
pub fn signal_tree(root: i32, sig: Signal) -> usize {
    let mut n = 0;
    if killpg(Pid::from_raw(root), sig).is_ok() {
        n += 1;
    }
    for pid in tree_members(root) {
        if kill(Pid::from_raw(pid), sig).is_ok() {
            n += 1;
        }
    }
    n
}

/// How a tree stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// Nothing was running.
    AlreadyGone,
    /// Everything exited within the grace period after SIGTERM.
    Terminated,
    /// SIGKILL was needed.
    Killed,
}

/// Stop the whole tree of session leader `root`: SIGTERM to group and members, wait up to `grace`
/// for them to go, then SIGKILL the rest and wait (bounded) until /proc shows none alive.
///
/// `reaped` is asked whether the leader itself has been reaped by its parent (a zombie leader still
/// counts as gone). Blocking; call from a thread that may sleep.
pub fn stop_tree(root: i32, grace: Duration) -> StopOutcome {
    stop_set(Some(root), &|| tree_members(root), grace)
}

/// Stop every live process that carries `tag` (a tree whose root's pid may have been reused, so
/// neither the pid nor its group may be signalled). Reads every process's environment.
pub fn stop_tagged(tag: &str, grace: Duration) -> StopOutcome {
    stop_set(None, &|| tagged_processes(tag), grace)
}

/// The live processes whose environment carries `tag` (a full scan).
pub fn tagged_processes(tag: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    all_processes()
        .into_iter()
        .filter(|p| p.is_live() && p.pid != me && registry::has_tag(p.pid, tag))
        .map(|p| p.pid)
        .collect()
}

/// SIGCONT + SIGTERM to `group` and every member, the grace, then SIGKILL until none is left.
fn stop_set(group: Option<i32>, members: &dyn Fn() -> Vec<i32>, grace: Duration) -> StopOutcome {
    let signal = |sig: Signal| {
        if let Some(g) = group {
            let _ = killpg(Pid::from_raw(g), sig);
        }
        for pid in members() {
            let _ = kill(Pid::from_raw(pid), sig);
        }
    };
    if members().is_empty() {
        return StopOutcome::AlreadyGone;
    }
    signal(Signal::SIGCONT);
    signal(Signal::SIGTERM);
    if wait_gone(members, grace) {
        return StopOutcome::Terminated;
    }
    // Keep killing until nothing is left: a process can fork between the scan and the signal.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        signal(Signal::SIGKILL);
        if wait_gone(members, Duration::from_millis(200)) || Instant::now() > deadline {
            return StopOutcome::Killed;
        }
    }
}

/// Wait until the tree has no live member, up to `timeout`. Polls /proc with a short back-off: a
/// process outside our children cannot be waited for by any other means.
pub fn wait_tree_gone(root: i32, timeout: Duration) -> bool {
    wait_gone(&|| tree_members(root), timeout)
}

fn wait_gone(members: &dyn Fn() -> Vec<i32>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if members().is_empty() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Whether a process with this pid exists (a zombie counts): `kill(pid, 0)`, one system call and no
/// file, so the governor can keep an idle member it does not read this tick.
pub fn pid_exists(pid: i32) -> bool {
    use nix::errno::Errno;
    pid > 0
        && !matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(Errno::ESRCH)
        )
}

/// The exit status convention for a process: the exit code, or 128+N for death by signal N.
pub fn shell_status(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        (None, None) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_includes_session_members_and_descendants() {
        let p = |pid, ppid, sid, state| ProcStat {
            pid,
            ppid,
            pgid: pid,
            sid,
            state,
            ..ProcStat::default()
        };
        let procs = [
            p(10, 1, 10, 'S'),  // leader
            p(11, 10, 10, 'S'), // child
            p(12, 1, 10, 'S'),  // orphaned grandchild, same session
            p(13, 11, 13, 'S'), // child that called setsid
            p(14, 13, 13, 'S'), // its child
            p(15, 10, 10, 'Z'), // zombie
            p(20, 1, 20, 'S'),  // unrelated
        ];
        assert_eq!(tree_members_in(10, &procs), vec![10, 11, 12, 13, 14]);
    }

    #[test]
    fn stop_tree_kills_a_term_ignoring_grandchild() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "sh -c 'trap \"\" TERM HUP; while :; do sleep 0.05; done' & wait",
            ])
            .process_group(0)
            .spawn()
            .unwrap();
        let root = child.id() as i32;
        // A process-group leader (not a session leader): members are found by group and parent link.
        let start = Instant::now();
        while tree_members(root).len() < 2 && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let members = tree_members(root);
        assert!(members.len() >= 2, "{members:?}");
        let outcome = stop_tree(root, Duration::from_millis(300));
        let _ = child.wait();
        assert_eq!(outcome, StopOutcome::Killed);
        for pid in members {
            assert!(
                read_stat(pid).is_none_or(|s| s.state == 'Z'),
                "{pid} still alive"
            );
        }
    }
}
