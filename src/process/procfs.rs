//! The one reader of `/proc`: every process fact mpm needs that sysinfo does not give, in one place.
//!
//! sysinfo measures processes (memory and CPU, [`crate::governor::tracker`]); what it lacks is read
//! here: the session id and process group of every process (a tree is "same session or group, or a
//! descendant"), a process's children (`/proc/<pid>/task/*/children`, so a tree walk touches only
//! the tree's pids), one variable of another process's environment (the `MPM_TREE` tag), and the
//! start time in clock ticks (exact, so a reused pid is never mistaken for the original; sysinfo
//! rounds it to seconds). Linux only: the module is compiled for `target_os = "linux"`.

use std::sync::OnceLock;

/// The fields of `/proc/<pid>/stat` mpm uses: the one parser of that file (tree walks, liveness,
/// pid-reuse checks by start time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcStat {
    /// The process id.
    pub pid: i32,
    /// Its parent's pid.
    pub ppid: i32,
    /// Its process group.
    pub pgid: i32,
    /// Its session.
    pub sid: i32,
    /// 'R', 'S', 'Z', ...
    pub state: char,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    /// Threads (field 20).
    pub threads: u64,
    /// Start time after boot, in clock ticks: tells a reused pid from the original.
    pub start: u64,
    /// Resident set, in pages.
    pub rss_pages: u64,
}

impl ProcStat {
    /// Alive and not a zombie.
    pub fn is_live(&self) -> bool {
        self.state != 'Z' && self.state != 'X'
    }
}

/// Read and parse `/proc/<pid>/stat`; `None` when the process is gone.
pub fn read_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Whether `pid` is a live process (not gone, not a zombie).
pub fn is_alive(pid: i32) -> bool {
    read_stat(pid).is_some_and(|s| s.is_live())
}

/// Parse one `/proc/<pid>/stat` line (the command name may hold spaces, parentheses and bytes
/// that are not UTF-8).
pub fn parse_stat(text: &[u8]) -> Option<ProcStat> {
    let close = text.iter().rposition(|&b| b == b')')?;
    let head = std::str::from_utf8(&text[..text.iter().position(|&b| b == b' ')?]).ok()?;
    let pid = head.parse().ok()?;
    let rest = std::str::from_utf8(&text[close + 1..]).ok()?;
    // Field 3 (state) is index 0 after the closing parenthesis.
    let mut f = [""; 22];
    let mut n = 0;
    for (slot, word) in f.iter_mut().zip(rest.split_ascii_whitespace()) {
        *slot = word;
        n += 1;
    }
    if n < f.len() {
        return None;
    }
    let num = |i: usize| f[i].parse::<u64>().ok();
    let int = |i: usize| f[i].parse::<i32>().ok();
    Some(ProcStat {
        pid,
        state: f[0].chars().next()?,
        ppid: int(1)?,
        pgid: int(2)?,
        sid: int(3)?,
        cpu_ticks: num(11)? + num(12)?,
        threads: num(17)?,
        start: num(19)?,
        rss_pages: num(21)?,
    })
}

/// The start time of `pid` (clock ticks after boot, field 22 of `/proc/<pid>/stat`), to tell it
/// from a later process that reuses the pid.
pub fn start_time(pid: i32) -> Option<u64> {
    read_stat(pid).map(|s| s.start)
}

/// Every process on the machine (pids readable in /proc).
pub fn all_processes() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_stat)
        .collect()
}

/// Every child pid of every thread of `pid` (`/proc/<pid>/task/*/children`), appended to `out`.
///
/// A single-threaded process (procfs gives its `task` folder 2 + threads links, so one `stat`
/// tells) has only its main thread's file to read: no folder listing. A thread born after that
/// `stat` allocates a pid, which makes the tracker walk again at its next sample.
pub fn children_of(pid: i32, out: &mut Vec<i32>) {
    use std::os::unix::fs::MetadataExt;
    let task = format!("/proc/{pid}/task");
    let Ok(meta) = std::fs::metadata(&task) else {
        return;
    };
    if meta.nlink() == 3 {
        read_pids(&format!("{task}/{pid}/children"), out);
        return;
    }
    let Ok(tasks) = std::fs::read_dir(&task) else {
        return;
    };
    for t in tasks.flatten() {
        if let Some(p) = t.path().join("children").to_str() {
            read_pids(p, out);
        }
    }
}

/// Append the pids listed in a `children` file.
fn read_pids(path: &str, out: &mut Vec<i32>) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    out.extend(
        text.split_ascii_whitespace()
            .filter_map(|s| s.parse::<i32>().ok()),
    );
}

/// The last pid allocated in this pid namespace (`/proc/sys/kernel/ns_last_pid`). Every new
/// process or thread, in this namespace or a nested one, moves it: when it has not moved between
/// two samples, no tree can have gained a member, so the children files need not be read.
pub fn last_pid() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid").ok()?;
    text.trim().parse().ok()
}

/// The children of this process's main thread (one file): where the kernel re-parents the orphans
/// a child subreaper adopts (the first live thread of the reaper's group, the leader while it
/// runs). Children that other threads spawned are in their own threads' files.
pub(crate) fn leader_children() -> Vec<i32> {
    let me = std::process::id();
    let mut out = Vec::new();
    read_pids(&format!("/proc/{me}/task/{me}/children"), &mut out);
    out
}

/// The direct children of this process (every thread's).
pub fn own_children() -> Vec<i32> {
    let mut out = Vec::new();
    children_of(std::process::id() as i32, &mut out);
    out
}

/// The value of `name` in the environment of `pid` (`/proc/<pid>/environ`: the environment the
/// process was started with). `None` when unreadable, unset or not UTF-8.
pub fn env_var(pid: i32, name: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let key = format!("{name}=");
    let entry = env
        .split(|&b| b == 0)
        .find(|e| e.starts_with(key.as_bytes()))?;
    String::from_utf8(entry[key.len()..].to_vec()).ok()
}

/// Resident memory of `pid` in bytes (`/proc/<pid>/statm`).
pub fn rss_bytes(pid: i32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

/// Page size in bytes, 4096 when unknown.
pub fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .filter(|&v| v > 0)
            .map_or(4096, |v| v as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_of_finds_the_child_of_a_thread_that_is_not_the_main_one() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            let mut c = std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap();
            tx.send(c.id() as i32).unwrap();
            let _ = done_rx.recv();
            let _ = c.kill();
            let _ = c.wait();
        });
        let child = rx.recv().unwrap();
        let mut kids = Vec::new();
        children_of(std::process::id() as i32, &mut kids);
        done_tx.send(()).unwrap();
        t.join().unwrap();
        assert!(kids.contains(&child), "{child} not in {kids:?}");
    }

    #[test]
    fn parses_stat_with_spaces_in_name() {
        let line = "123 (a b) c)) S 1 123 123 0 -1 4194560 0 0 0 0 7 5 0 0 20 0 1 0 9999 1000 321";
        let s = parse_stat(line.as_bytes()).unwrap();
        assert_eq!(
            (s.pid, s.ppid, s.pgid, s.sid, s.state),
            (123, 1, 123, 123, 'S')
        );
    }

    #[test]
    fn parses_cpu_start_and_rss() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime cutime cstime prio nice threads itreal starttime vsize rss ...
        let line = "42 (a (b) c) S 1 42 42 0 -1 0 0 0 0 0 7 5 0 0 20 0 1 0 9999 1000 321 rest";
        let s = parse_stat(line.as_bytes()).unwrap();
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
        assert!(parse_stat(b"42 (x) S 1 42").is_none());
        assert!(parse_stat(b"").is_none());
        let odd = b"7 (\xff\xfe) S 1 7 7 0 -1 0 0 0 0 0 1 1 0 0 20 0 1 0 5 1000 3";
        assert_eq!(
            parse_stat(odd).map(|s| s.rss_pages),
            Some(3),
            "non-UTF-8 name"
        );
    }

    #[test]
    fn own_stat_and_memory_are_readable() {
        let me = std::process::id() as i32;
        let s = read_stat(me).unwrap();
        assert_eq!(s.pid, me);
        assert!(s.rss_pages > 0);
        assert!(rss_bytes(me).unwrap() > 0);
        assert!(is_alive(me));
    }

    #[test]
    fn own_environment_variable_is_read() {
        let me = std::process::id() as i32;
        // PATH is set for every test run; a name that is surely unset reads as None.
        assert!(env_var(me, "PATH").is_some());
        assert_eq!(env_var(me, "MPM_SURELY_UNSET_VARIABLE_42"), None);
    }
}
