//! Every process tree this mpm started, so that none escapes: a tag in the environment, a child
//! subreaper, a reaper for adopted orphans, and the feed of the orphan watchdog.
//!
//! Session ids, process groups and parent links lose a grandchild that calls `setsid` and
//! double-forks (what a daemonising program does): it leaves the session and the group, and its
//! parent dies. Two things bring it back:
//!
//! - **The tag.** Each tree's root is started with `MPM_TREE=<tag>` in its environment, which every
//!   descendant inherits through fork and exec (a nested mpm appends its own: `outer:inner`). A
//!   process whose `/proc/<pid>/environ` holds the tag belongs to the tree, whatever its session.
//!   The tag is `<owner pid>-<owner start time>-<n>`, so a later mpm can tell the trees of a dead
//!   owner (the daemon's start-up clean-up) from those of a live one.
//! - **The subreaper.** Before the first tree starts, mpm calls `PR_SET_CHILD_SUBREAPER`: an
//!   orphan in its trees is re-parented to mpm rather than to init. A tree walk therefore reads
//!   the environment only of processes whose parent is mpm or init (cheap), except in
//!   [`set_thorough`] mode (the watchdog after mpm died, the daemon's start-up clean-up), where it
//!   reads every process's.
//!
//! A subreaper must reap what it adopts. The reaper thread (every [`REAP_EVERY`]) looks only at
//! mpm's own children, and of those only at its main thread's (`/proc/self/task/<pid>/children`:
//! the kernel re-parents an orphan to the subreaper's first live thread, the leader; every 64th
//! pass reads every thread's file), and reaps those it adopted: a live child
//! that is not a registered root but carries a registered tag is remembered as adopted; a zombie
//! child that was adopted, or that shares a registered root's session or group, is reaped. It
//! never waits for a child another part of mpm spawned (std, tokio and the executor reap their own),
//! so no exit status is stolen. An adopted process that exits before the reaper first saw it alive
//! (and left its tree's session) stays a zombie until mpm exits: bounded by what the trees do.
//!
//! The registry is a small map behind a mutex (registration is rare, lookups are one hash probe);
//! the watchdog listens to it through pipes ([`add_listener`]) with lines `+<root> <start> <tag>`
//! and `-<root>`.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Once};
use std::time::Duration;

/// The environment variable that tags a tree.
pub const TREE_VAR: &str = "MPM_TREE";

/// How often the reaper looks at mpm's children.
pub const REAP_EVERY: Duration = Duration::from_millis(250);

/// One registered tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    /// The tree's root pid.
    pub root: i32,
    /// The root's start time (0 when unknown): a reused pid is not the root.
    pub start: u64,
    /// The `MPM_TREE` tag every process of the tree inherits.
    pub tag: String,
}

#[derive(Default)]
struct Registry {
    trees: HashMap<i32, TreeEntry>,
    adopted: HashSet<i32>,
    /// Live children whose environment carries no registered tag (checked once: a process's
    /// starting environment does not change), forgotten when they are no longer children.
    untagged: HashSet<i32>,
    listeners: Vec<std::fs::File>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);
static THOROUGH: AtomicBool = AtomicBool::new(false);
static NEXT: AtomicU64 = AtomicU64::new(1);
static SUBREAPER: Once = Once::new();

fn registry() -> MutexGuard<'static, Option<Registry>> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

fn with<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    let mut g = registry();
    f(g.get_or_insert_with(Registry::default))
}

/// Read every process's environment in tree walks (not only orphans'): for a process that is
/// not the subreaper of the trees it looks for.
pub fn set_thorough(on: bool) {
    THOROUGH.store(on, Ordering::Relaxed);
}

pub(crate) fn thorough() -> bool {
    THOROUGH.load(Ordering::Relaxed)
}

/// Make this process a child subreaper (once) and start the reaper thread. Called before the
/// first tree is spawned ([`new_tag`] does it).
pub fn become_subreaper() {
    SUBREAPER.call_once(|| {
        #[cfg(target_os = "linux")]
        // SAFETY: prctl with an integer argument; no memory is passed.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        #[cfg(not(target_os = "linux"))]
        let rc = -1;
        if rc != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "cannot become a child subreaper: daemonising grandchildren go to init"
            );
        }
        let _ = std::thread::Builder::new()
            .name("mpm-reaper".into())
            .spawn(|| {
                for pass in 1u64.. {
                    std::thread::sleep(REAP_EVERY);
                    // Adopted orphans are the main thread's children: one file to read. Every
                    // 64th pass (16 s) reads every thread's (a daemon has ~10 per session), in
                    // case the kernel put one elsewhere.
                    reap_children(if pass.is_multiple_of(64) {
                        super::procfs::own_children()
                    } else {
                        super::procfs::leader_children()
                    });
                    if pass.is_multiple_of(16) {
                        forget_finished();
                    }
                }
            });
    });
}

/// Whether this process is a child subreaper now (`PR_GET_CHILD_SUBREAPER`): then every orphan
/// of the trees it spawned is re-parented to it, and a rescan need only look at its own children.
pub fn is_subreaper() -> bool {
    #[cfg(target_os = "linux")]
    {
        let mut on: libc::c_int = 0;
        // SAFETY: prctl writes one int through the pointer to our local.
        let rc = unsafe {
            libc::prctl(
                libc::PR_GET_CHILD_SUBREAPER,
                &mut on as *mut libc::c_int as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        rc == 0 && on != 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// A fresh tag for a tree about to be spawned (and this process a subreaper from now on).
pub fn new_tag() -> String {
    become_subreaper();
    let me = std::process::id() as i32;
    let start = super::start_time(me).unwrap_or(0);
    format!("{me}-{start}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The value of [`TREE_VAR`] for a new tree: this process's own tags (when it runs inside
/// another mpm's tree) followed by `tag`, so the outer tree keeps its members.
pub fn env_value(tag: &str) -> String {
    match std::env::var(TREE_VAR) {
        Ok(outer) if !outer.is_empty() => format!("{outer}:{tag}"),
        _ => tag.to_string(),
    }
}

/// Record a spawned tree. Its listeners (the watchdog) hear of it at once.
pub fn register(root: i32, tag: &str) {
    let entry = TreeEntry {
        root,
        start: super::start_time(root).unwrap_or(0),
        tag: tag.to_string(),
    };
    let line = format!("+{} {} {}\n", entry.root, entry.start, entry.tag);
    with(|r| {
        r.trees.insert(root, entry);
        r.listeners
            .retain_mut(|l| l.write_all(line.as_bytes()).is_ok());
    });
}

/// Forget a tree (it was stopped; its pid may be reused from now on).
pub fn unregister(root: i32) {
    let line = format!("-{root}\n");
    with(|r| {
        if r.trees.remove(&root).is_some() {
            r.listeners
                .retain_mut(|l| l.write_all(line.as_bytes()).is_ok());
        }
    });
}

/// The tag of the tree rooted at `root`, when registered.
pub fn tag_of(root: i32) -> Option<String> {
    with(|r| r.trees.get(&root).map(|e| e.tag.clone()))
}

/// Every registered tree.
pub fn trees() -> Vec<TreeEntry> {
    with(|r| r.trees.values().cloned().collect())
}

/// Send every registry change to `pipe` from now on, starting with the trees registered now.
pub fn add_listener(mut pipe: std::fs::File) {
    with(|r| {
        for e in r.trees.values() {
            if writeln!(pipe, "+{} {} {}", e.root, e.start, e.tag).is_err() {
                return;
            }
        }
        r.listeners.push(pipe);
    });
}

/// Whether the environment of `pid` carries `tag` in [`TREE_VAR`].
pub fn has_tag(pid: i32, tag: &str) -> bool {
    tags_of(pid).is_some_and(|tags| tags.iter().any(|t| t == tag))
}

/// The tags in the environment of `pid` (None when unreadable or untagged).
pub fn tags_of(pid: i32) -> Option<Vec<String>> {
    let value = super::procfs::env_var(pid, TREE_VAR)?;
    Some(value.split(':').map(str::to_string).collect())
}

/// Unregister the trees whose root is gone and that have no member left (nobody will stop them).
pub fn forget_finished() {
    for e in trees() {
        let root_gone = super::read_stat(e.root)
            .is_none_or(|st| !st.is_live() || (e.start != 0 && st.start != e.start));
        if root_gone && super::tree_members(e.root).is_empty() {
            unregister(e.root);
        }
    }
}

/// The owner (pid, start time) named by a tag `<pid>-<start>-<n>`.
pub fn tag_owner(tag: &str) -> Option<(i32, u64)> {
    let mut f = tag.split('-');
    Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
}

/// A process a dead owner left behind, found by its tree tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// Its pid.
    pub pid: i32,
    /// Its start time: a reused pid is never signalled.
    pub start: u64,
    /// The dead owner's tag it carries.
    pub tag: String,
    /// `/proc/<pid>/comm`.
    pub comm: String,
    /// `/proc/<pid>/cmdline`.
    pub argv: Vec<String>,
    /// `MPM_SESSION` from its environment: the session it belongs to, when known.
    pub session: Option<String>,
}

/// The value of `key` in the environment of `pid`.
pub fn env_of(pid: i32, key: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{key}=");
    let entry = env
        .split(|&b| b == 0)
        .find(|e| e.starts_with(prefix.as_bytes()))?;
    Some(String::from_utf8_lossy(&entry[prefix.len()..]).into_owned())
}

/// Every live process tagged by a tree whose owner's pid is in `owners` and that owner is no
/// longer running (its pid is gone or was reused). Reads every process's environment once.
pub fn find_leftovers(owners: &[u32]) -> Vec<Leftover> {
    let me = std::process::id() as i32;
    let dead = |tag: &str| {
        tag_owner(tag).is_some_and(|(pid, start)| {
            pid != me
                && owners.contains(&(pid as u32))
                && super::start_time(pid).is_none_or(|s| s != start)
        })
    };
    let mut found = Vec::new();
    if owners.is_empty() {
        return found;
    }
    for p in super::all_processes() {
        if !p.is_live() || p.pid == me {
            continue;
        }
        let Some(tag) = tags_of(p.pid).and_then(|tags| tags.into_iter().find(|t| dead(t))) else {
            continue;
        };
        found.push(Leftover {
            pid: p.pid,
            start: p.start,
            tag,
            comm: comm_of(p.pid),
            argv: argv_of(p.pid),
            session: env_of(p.pid, "MPM_SESSION").filter(|s| !s.is_empty()),
        });
    }
    found
}

/// A process recorded as a session's root (`pid` with start time `start`, of `session`), when it
/// still runs: a leftover even without a tag (the session's monitor is a fork of its host that
/// never exec'd, so its environment has no `MPM_TREE`).
pub fn root_leftover(pid: u32, start: u64, session: &str) -> Option<Leftover> {
    let pid = pid as i32;
    let st = super::read_stat(pid)?;
    if !st.is_live() || st.start != start {
        return None;
    }
    Some(Leftover {
        pid,
        start,
        tag: tags_of(pid)
            .and_then(|t| t.into_iter().last())
            .unwrap_or_default(),
        comm: comm_of(pid),
        argv: argv_of(pid),
        session: Some(session.to_string()),
    })
}

fn comm_of(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim_end().to_string())
        .unwrap_or_default()
}

fn argv_of(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Stop `found`: SIGCONT and SIGTERM to each, the grace, SIGKILL to what is left. Returns each
/// with the signal that ended it (SIGTERM or SIGKILL); one already gone before the first signal is
/// left out. Then whatever still carries one of their tags (forked meanwhile) is stopped too.
pub fn stop_found(found: Vec<Leftover>, grace: Duration) -> Vec<(Leftover, i32)> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let live = |l: &Leftover| {
        super::read_stat(l.pid)
            .is_some_and(|st| st.is_live() && (l.start == 0 || st.start == l.start))
    };
    let found: Vec<Leftover> = found.into_iter().filter(|l| live(l)).collect();
    for l in &found {
        let _ = kill(Pid::from_raw(l.pid), Signal::SIGCONT);
        let _ = kill(Pid::from_raw(l.pid), Signal::SIGTERM);
    }
    let wait_all_gone = |set: &[&Leftover], within: Duration| {
        let deadline = std::time::Instant::now() + within;
        loop {
            if !set.iter().any(|l| live(l)) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_all_gone(&found.iter().collect::<Vec<_>>(), grace);
    let mut out = Vec::with_capacity(found.len());
    let mut killed = Vec::new();
    for l in found {
        if live(&l) {
            let _ = kill(Pid::from_raw(l.pid), Signal::SIGKILL);
            killed.push(l);
        } else {
            out.push((l, libc::SIGTERM));
        }
    }
    wait_all_gone(&killed.iter().collect::<Vec<_>>(), Duration::from_secs(5));
    let tags: HashSet<String> = out
        .iter()
        .map(|(l, _)| l.tag.clone())
        .chain(killed.iter().map(|l| l.tag.clone()))
        .collect();
    out.extend(killed.into_iter().map(|l| (l, libc::SIGKILL)));
    for tag in tags.into_iter().filter(|t| !t.is_empty()) {
        let outcome = super::stop_tagged(&tag, grace);
        if outcome != super::StopOutcome::AlreadyGone {
            tracing::warn!(tag, ?outcome, "stopped more of a tree left by a dead mpm");
        }
    }
    out
}

/// Stop what dead owners left behind ([`find_leftovers`], then [`stop_found`]). Returns the
/// (pid, tag) pairs stopped.
pub fn stop_leftovers(owners: &[u32], grace: Duration) -> Vec<(i32, String)> {
    stop_found(find_leftovers(owners), grace)
        .into_iter()
        .map(|(l, _)| (l.pid, l.tag))
        .collect()
}

/// [`stop_found`] on a thread of its own (start-up must not wait for the grace period); `report`
/// gets each process stopped with the signal that ended it; `then` runs last.
pub fn stop_found_in_background(
    found: Vec<Leftover>,
    grace: Duration,
    report: impl Fn(&Leftover, i32) + Send + 'static,
    then: impl FnOnce() + Send + 'static,
) {
    let _ = std::thread::Builder::new()
        .name("mpm-leftovers".into())
        .spawn(move || {
            for (l, sig) in stop_found(found, grace) {
                tracing::warn!(pid = l.pid, tag = %l.tag, signal = sig, "stopped a process left running by a dead mpm");
                report(&l, sig);
            }
            then();
        });
}

/// [`stop_leftovers`] on a thread of its own (start-up must not wait for the grace period).
pub fn stop_leftovers_in_background(owners: Vec<u32>, grace: Duration) {
    if owners.is_empty() {
        return;
    }
    stop_found_in_background(find_leftovers(&owners), grace, |_, _| {}, || {});
}

/// Record a tree heard of from another process (the watchdog's feed), as is.
pub fn insert(entry: TreeEntry) {
    with(|r| {
        r.trees.insert(entry.root, entry);
    });
}

/// Remember `pid` as adopted (a tree member re-parented to this process), to be reaped.
pub(crate) fn note_adopted(pid: i32) {
    with(|r| {
        r.adopted.insert(pid);
    });
}

/// Whether a live child of this process (an adopted orphan) carries `tag`: a cheap check (only
/// this process's children are read) for what a tree left behind after its root exited.
pub fn children_with_tag(tag: &str) -> bool {
    super::procfs::own_children()
        .into_iter()
        .any(|p| super::read_stat(p).is_some_and(|s| s.is_live()) && has_tag(p, tag))
}

/// One pass of the reaper (see the module docs). Returns how many were reaped.
pub fn reap_adopted() -> usize {
    reap_children(super::procfs::own_children())
}

/// [`reap_adopted`] over `children` (this process's, or its main thread's). Idle, a pass costs one
/// `children` file and one `stat` per child: a child's environment is read once. (Reading every
/// thread's file and every child's environment on each pass cost a daemon with ten idle sessions
/// about half of a core-percent.)
fn reap_children(children: Vec<i32>) -> usize {
    let (roots, tags): (HashSet<i32>, Vec<String>) = with(|r| {
        (
            r.trees.keys().copied().collect(),
            r.trees.values().map(|e| e.tag.clone()).collect(),
        )
    });
    let mut reaped = 0;
    for &pid in &children {
        if roots.contains(&pid) {
            continue;
        }
        let Some(st) = super::read_stat(pid) else {
            continue;
        };
        let (adopted, untagged) = with(|r| (r.adopted.contains(&pid), r.untagged.contains(&pid)));
        if st.is_live() {
            if !adopted && !untagged && !tags.is_empty() {
                if tags_of(pid).is_some_and(|t| t.iter().any(|t| tags.contains(t))) {
                    note_adopted(pid);
                } else {
                    with(|r| r.untagged.insert(pid));
                }
            }
            continue;
        }
        let in_tree = roots.contains(&st.sid) || roots.contains(&st.pgid);
        if adopted || in_tree {
            let mut status = 0;
            // SAFETY: waitpid on one pid this process adopted, with a valid out-pointer.
            let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if rc == pid {
                reaped += 1;
            }
            with(|r| r.adopted.remove(&pid));
        }
    }
    with(|r| r.untagged.retain(|p| children.contains(p)));
    reaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_unique_and_nest() {
        let a = new_tag();
        let b = new_tag();
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("{}-", std::process::id())), "{a}");
        assert!(env_value(&a).ends_with(&a));
    }

    #[test]
    fn own_environment_tag_is_read() {
        let tag = new_tag();
        let mut child = std::process::Command::new("sleep")
            .arg("100")
            .env(TREE_VAR, format!("outer:{tag}"))
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // Until the child has exec'd, its environment is still ours.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !has_tag(pid, &tag) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let found = has_tag(pid, &tag) && has_tag(pid, "outer") && !has_tag(pid, "other");
        let _ = child.kill();
        let _ = child.wait();
        assert!(found);
    }
}
