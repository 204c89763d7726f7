//! Running one attempt of a delegation: spawn, wait with timeout and cancellation, stop the tree.
//!
//! The sub-agent is spawned directly (argv as given, no shell) as a session leader (see
//! [`super::spawn`]), with stdin from /dev/null, so it has no controlling terminal and
//! cannot touch the user's. Its stdout and stderr are pipes read continuously (64 KiB at a time,
//! so a chatty child never stalls on a full pipe) into `<id>.stdout` / `<id>.stderr` in the
//! session's output folder; a file is created on its stream's first byte (an ext4 inode per empty
//! stream was the executor's largest cost for short delegations). Reading stops at end-of-file,
//! or a bounded time after the tree is gone when an escaped process keeps a pipe open.
//!
//! The root carries a fresh `MPM_TREE` tag and is registered while it runs
//! ([`process::registry`]), so processes that leave its session are still its tree's.
//!
//! On timeout or cancellation the whole tree is stopped with [`process::stop_tree`] (SIGTERM to the
//! group and every member, grace, SIGKILL). After a normal exit, anything left in the sub-agent's
//! process group (background children) is stopped the same way: a finished delegation leaves no
//! process behind.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sys::signal::killpg;
use nix::unistd::Pid;
use tokio::io::AsyncReadExt as _;
use tokio::net::unix::pipe;
use tokio::sync::watch;

use super::spawn;
use crate::process;

/// Everything needed to run one attempt.
#[derive(Debug, Clone)]
pub(crate) struct AttemptSpec {
    pub argv: Vec<String>,
    pub cwd: Option<PathBuf>,
    /// The whole environment to start from (see [`super::SessionOrigin`]); `None`: mpm's own.
    pub base_env: Option<std::sync::Arc<[(String, String)]>>,
    pub env: BTreeMap<String, String>,
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
    pub timeout: Duration,
    pub grace: Duration,
    /// setrlimit values applied in the child before exec.
    pub rlimits: Option<crate::config::Rlimits>,
    /// Bytes kept per output stream; the rest is drained and counted (`executor.max_output_bytes`).
    pub max_output_bytes: u64,
    /// `delegation.progress` reporting from the stdout's stream-json (None: off).
    pub progress: Option<super::progress::Monitor>,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AttemptEnd {
    /// The sub-agent exited; shell convention status (128+N for signal N).
    Exited(i32),
    TimedOut,
    Cancelled,
    /// It could not be started (missing program, unwritable output file, ...).
    SpawnFailed(String),
}

/// Run attempt number `attempt` (from 1). `on_start` gets the pid once the child is running. `cancel` flips to true when
/// the session cancels running delegations.
pub(crate) async fn run_attempt(
    spec: &AttemptSpec,
    attempt: u32,
    cancel: &mut watch::Receiver<bool>,
    on_start: impl FnOnce(u32),
) -> AttemptEnd {
    // Output of an earlier attempt must not survive into this one.
    if attempt > 1 {
        for p in [&spec.stdout_path, &spec.stderr_path] {
            let _ = std::fs::remove_file(p);
        }
    }
    let pipes = (
        nix::unistd::pipe2(OFlag::O_CLOEXEC),
        nix::unistd::pipe2(OFlag::O_CLOEXEC),
    );
    let ((out_r, out_w), (err_r, err_w)) = match pipes {
        (Ok(o), Ok(e)) => (o, e),
        (Err(e), _) | (_, Err(e)) => {
            return AttemptEnd::SpawnFailed(format!("cannot create output pipes: {e}"));
        }
    };
    let readers = match (
        pipe::Receiver::from_owned_fd(out_r),
        pipe::Receiver::from_owned_fd(err_r),
    ) {
        (Ok(o), Ok(e)) => (o, e),
        (Err(e), _) | (_, Err(e)) => {
            return AttemptEnd::SpawnFailed(format!("cannot register output pipes: {e}"));
        }
    };
    // The tag finds members that leave the session by a double fork (`process::registry`).
    let tag = process::registry::new_tag();
    let mut env = spec.env.clone();
    env.insert(
        process::registry::TREE_VAR.to_string(),
        process::registry::env_value(&tag),
    );
    let spawned = spawn::spawn_leader(&spawn::SpawnSpec {
        argv: &spec.argv,
        base_env: spec.base_env.as_deref(),
        env: &env,
        cwd: spec.cwd.as_deref(),
        stdout: &out_w,
        stderr: &err_w,
        rlimits: spec.rlimits.as_ref(),
    });
    // Only the child may hold the write ends, or the readers would never see end-of-file.
    drop((out_w, err_w));
    let mut child = match spawned {
        Ok(leader) => leader,
        Err(e) => {
            let program = spec.argv.first().map(String::as_str).unwrap_or("");
            return AttemptEnd::SpawnFailed(format!("cannot start {program:?}: {e}"));
        }
    };
    let pid = child.pid();
    process::registry::register(pid, &tag);
    let cap = spec.max_output_bytes;
    let tracker = spec
        .progress
        .as_ref()
        .map(|_| super::progress::Tracker::new());
    let out_task = tokio::spawn(drain(
        readers.0,
        spec.stdout_path.clone(),
        cap,
        tracker.clone().map(|t| (t, true)),
    ));
    let err_task = tokio::spawn(drain(
        readers.1,
        spec.stderr_path.clone(),
        cap,
        tracker.clone().map(|t| (t, false)),
    ));
    let pid = pid as u32;
    on_start(pid);
    // Stopped when this attempt ends (dropping the handle does not stop a task: abort it).
    let watcher = match (&spec.progress, tracker) {
        (Some(m), Some(t)) => Some(tokio::spawn(m.clone().watch(t, pid))),
        _ => None,
    };
    let _stop_watcher = AbortOnDrop(watcher);

    let stop = |grace: Duration| async move {
        let _ = tokio::task::spawn_blocking(move || process::stop_tree(pid as i32, grace)).await;
    };
    let end = tokio::select! {
        status = child.wait() => match status {
            Ok(s) => AttemptEnd::Exited(process::shell_status(s)),
            Err(e) => AttemptEnd::SpawnFailed(format!("wait failed: {e}")),
        },
        _ = tokio::time::sleep(spec.timeout) => {
            stop(spec.grace).await;
            AttemptEnd::TimedOut
        }
        _ = cancelled(cancel) => {
            stop(spec.grace).await;
            AttemptEnd::Cancelled
        }
    };
    if !matches!(end, AttemptEnd::Exited(_)) {
        // Reap the leader (already stopped above).
        let _ = child.wait().await;
    }
    // Leftovers (background children, daemonised grandchildren found by the tag): stop them too.
    // Leftovers (background children in the group, daemonised grandchildren re-parented to us
    // with the tree's tag): stop them too. Both probes are cheap; a full scan only when needed.
    if killpg(Pid::from_raw(pid as i32), None).is_ok() || process::registry::children_with_tag(&tag)
    {
        tracing::debug!(pid, "delegation left processes behind; stopping them");
        stop(spec.grace).await;
    }
    process::registry::unregister(pid as i32);
    // The tree is gone, so the pipes are closed, unless a process that left the session keeps
    // them open: give the readers a bounded time, then stop reading.
    for (task, what) in [(out_task, "stdout"), (err_task, "stderr")] {
        let abort = task.abort_handle();
        match tokio::time::timeout(DRAIN_AFTER_EXIT, task).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(e))) => {
                tracing::warn!(pid, what, error = %e, "cannot save delegation output")
            }
            Ok(Err(_)) => {}
            Err(_) => {
                abort.abort();
                tracing::warn!(
                    pid,
                    what,
                    "output still open after the delegation ended; stopped reading"
                );
            }
        }
    }
    end
}

/// How long output is still read after the sub-agent's tree is gone.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// Copy a pipe to `path` until end-of-file, keeping at most `cap` bytes. The file is created
/// (0600) on the first byte, so silent streams leave no empty files. Past the cap the pipe is
/// still read (a blocked writer would hang the delegation) but dropped, and the file ends with a
/// note `[mpm: output truncated: kept N bytes, dropped M]`. Returns the bytes read.
/// Aborts a task when dropped.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

async fn drain(
    mut rx: pipe::Receiver,
    path: PathBuf,
    cap: u64,
    progress: Option<(std::sync::Arc<super::progress::Tracker>, bool)>,
) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 64 << 10];
    let mut file: Option<File> = None;
    let mut total = 0u64;
    loop {
        let n = rx.read(&mut buf).await?;
        if n == 0 {
            if total > cap
                && let Some(f) = &mut file
            {
                tracing::warn!(path = %path.display(), kept = cap, dropped = total - cap, "delegation output truncated");
                writeln!(
                    f,
                    "\n[mpm: output truncated: kept {cap} bytes, dropped {}]",
                    total - cap
                )?;
            }
            return Ok(total);
        }
        if let Some((t, parse)) = &progress {
            t.output(&buf[..n], *parse);
        }
        let keep = cap.saturating_sub(total).min(n as u64) as usize;
        total += n as u64;
        if keep == 0 {
            continue;
        }
        let f = match &mut file {
            Some(f) => f,
            None => file.insert(
                crate::config::paths::private_file()
                    .create(true)
                    .write(true)
                    .truncate(true)
                    .open(&path)?,
            ),
        };
        // A local file write lands in the page cache; not worth a blocking-pool round trip.
        f.write_all(&buf[..keep])?;
    }
}

/// Resolves once cancellation is requested (never, if the sender is gone).
pub(crate) async fn cancelled(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}
