//! The orphan watchdog: stops the agent's tree when mpm dies without cleaning up (SIGKILL, OOM
//! kill, crash).
//!
//! Design. Nothing runs in a process after SIGKILL, so the cleanup has to live in another one.
//! Before the agent is spawned, mpm starts `mpm __watchdog --grace S` as a separate process: its own
//! session (so signals to mpm's process group or terminal do not reach it), stdout and stderr on
//! `/dev/null`, and stdin the read end of a pipe whose write end only mpm holds (`O_CLOEXEC`, so
//! neither the agent nor any other child ever inherits it). Once the agent is spawned, mpm writes
//! its pid as one line ([`Watchdog::arm`]). The watchdog blocks in `read` on the pipe — no CPU,
//! no timers — and sees EOF exactly when every copy of the write end is closed, i.e. when mpm
//! exited, however it exited. It then runs `process::stop_tree(root, grace)`: SIGTERM to the
//! agent's process group and every member of its session (grandchildren that re-parented to init
//! keep the session id; those that called `setsid` are found by parent link while their parent
//! lives), the grace period, then SIGKILL. On a normal exit mpm has already stopped the tree, so the
//! watchdog finds nothing and exits at once.
//!
//! Delegation trees are covered too: the watchdog listens to the process registry
//! ([`crate::process::registry`]) for as long as mpm lives, with lines `+<root> <start> <tag>` and
//! `-<root>`, and at EOF stops every tree still registered, finding members that left the session
//! by the tree's `MPM_TREE` tag (reading every process's environment: mpm, their subreaper, is
//! gone). `done` disarms the main agent's tree only.
//!
//! Starting the watchdog before the agent leaves no window in which the agent runs unwatched:
//! if mpm dies before `arm`, the watchdog reads EOF with no pid and just exits (the agent, if it was
//! being spawned, loses its terminal and gets SIGHUP from the kernel).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// mpm's handle on its watchdog process.
pub(crate) struct Watchdog {
    pipe: Option<std::fs::File>,
    child: Option<Child>,
}

impl Watchdog {
    /// Start `exe __watchdog --grace G` (exe is normally `std::env::current_exe()`).
    pub(crate) fn spawn(exe: &Path, grace: Duration) -> std::io::Result<Watchdog> {
        let (read_end, write_end): (OwnedFd, OwnedFd) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let mut cmd = Command::new(exe);
        cmd.arg("__watchdog")
            .arg("--grace")
            .arg(format!("{}", grace.as_secs_f64()))
            .stdin(Stdio::from(read_end))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        let pipe = std::fs::File::from(write_end);
        // Every tree this process starts (delegations too) is reported to the watchdog for as
        // long as this process lives: the registry keeps its own copy of the write end.
        crate::process::registry::add_listener(pipe.try_clone()?);
        Ok(Watchdog {
            pipe: Some(pipe),
            child: Some(child),
        })
    }

    /// Tell the watchdog which tree to stop if mpm dies.
    pub(crate) fn arm(&mut self, root: i32) -> std::io::Result<()> {
        match &mut self.pipe {
            Some(p) => writeln!(p, "{root}"),
            None => Ok(()),
        }
    }

    /// The tree is already stopped: tell the watchdog to exit without signalling anything (the
    /// root's pid may be reused once it was reaped).
    pub(crate) fn disarm(&mut self) {
        if let Some(p) = &mut self.pipe {
            let _ = writeln!(p, "done");
        }
        self.pipe = None;
    }
}

impl Drop for Watchdog {
    /// Close the pipe (the watchdog wakes and exits, stopping the tree unless disarmed) and reap it
    /// off-thread.
    fn drop(&mut self) {
        self.pipe = None;
        if let Some(mut child) = self.child.take() {
            let _ = std::thread::Builder::new()
                .name("mpm-watchdog-reap".into())
                .spawn(move || {
                    let _ = child.wait();
                });
        }
    }
}

/// The watchdog process's body: read pid lines from `input` until EOF, then stop the last pid's
/// tree (or `root` when none was sent). A `done` line means mpm cleaned up itself: exit without
/// signalling. Returns the exit status.
pub(crate) fn run(root: Option<i32>, grace: Duration, input: impl Read) -> i32 {
    // The terminal going away or a Ctrl-C in it must not kill the watchdog before it has done its job.
    // SAFETY: setting a disposition to SIG_IGN is always sound.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    use crate::process::registry;
    // mpm is gone: orphans of its trees went to init or another subreaper, not to us.
    registry::set_thorough(true);
    let mut root = root;
    for line in BufReader::new(input).lines() {
        let Ok(l) = line else { break };
        let l = l.trim();
        if l == "done" {
            // The main tree is stopped; keep watching the others until mpm exits.
            root = None;
        } else if let Some(rest) = l.strip_prefix('+') {
            let mut f = rest.split(' ');
            if let (Some(Ok(pid)), Some(Ok(start)), Some(tag)) = (
                f.next().map(str::parse::<i32>),
                f.next().map(str::parse::<u64>),
                f.next(),
            ) && pid > 1
            {
                registry::insert(registry::TreeEntry {
                    root: pid,
                    start,
                    tag: tag.to_string(),
                });
            }
        } else if let Some(Ok(pid)) = l.strip_prefix('-').map(str::parse::<i32>) {
            registry::unregister(pid);
        } else if let Ok(pid) = l.parse::<i32>()
            && pid > 1
        {
            root = Some(pid);
        }
    }
    if let Some(pid) = root {
        let outcome = crate::process::stop_tree(pid, grace);
        tracing::info!(root = pid, ?outcome, "watchdog: parent gone, tree stopped");
    }
    for e in registry::trees() {
        let same = crate::process::start_time(e.root).is_some_and(|s| s == e.start);
        let outcome = if same || crate::process::start_time(e.root).is_none() {
            // Alive, or gone with only orphans left: the root's session and tag find them.
            crate::process::stop_tree(e.root, grace)
        } else {
            // The pid was reused: only the tag is trustworthy.
            crate::process::stop_tagged(&e.tag, grace)
        };
        tracing::info!(root = e.root, tag = %e.tag, ?outcome, "watchdog: parent gone, tree stopped");
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_line_means_no_signal_and_eof_stops_the_last_root() {
        use std::os::unix::process::CommandExt as _;
        let mut victim = std::process::Command::new("sleep")
            .arg("100")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = victim.id() as i32;
        let input = format!("{pid}\ndone\n");
        assert_eq!(run(None, Duration::from_millis(100), input.as_bytes()), 0);
        assert!(
            victim.try_wait().unwrap().is_none(),
            "disarmed watchdog signalled"
        );
        let input = format!("1\n{pid}\n");
        run(None, Duration::from_millis(100), input.as_bytes());
        let status = victim.wait().unwrap();
        assert!(!status.success());
    }
}
