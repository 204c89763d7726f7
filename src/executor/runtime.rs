//! The tokio runtime executors run on: one per daemon, shared by every hosted session's executor.
//!
//! An in-process `mpm run` has one session, and its executor builds its own small runtime when the
//! first delegation comes (driven from one `mpm-executor` thread). A daemon hosts many sessions;
//! a runtime each would cost every session that ever delegated its own worker threads. So the
//! daemon owns one [`ExecutorRuntime`], built lazily on the first delegation of any session, with a
//! fixed, small number of workers ([`DAEMON_WORKERS`]); each session's executor is a task on it
//! (its queue, dedup, budgets and caps stay per session; [`super::Slots`] bounds the running
//! sub-agents across sessions).
//!
//! Thread names: the workers are `mpm-executor`; threads tokio adds on demand for blocking calls
//! (`spawn_blocking`: a tree's CPU time, stopping a tree, worktrees) are `mpm-exec-block` and end
//! when idle. Sub-agents are spawned from a worker, never from a blocking thread: the parent-death
//! signal follows the spawning thread, and the workers live as long as the runtime.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// Worker threads of the daemon's shared executor runtime. A worker is busy only while it forks
/// and execs a sub-agent (about a millisecond) or moves output; two keep one spawn from delaying
/// another's bookkeeping.
pub(crate) const DAEMON_WORKERS: usize = 2;

/// The name of the runtime's worker threads.
pub(crate) const WORKER_NAME: &str = "mpm-executor";

/// The name of the threads tokio adds for blocking calls.
pub(crate) const BLOCKING_NAME: &str = "mpm-exec-block";

/// A lazily built multi-thread runtime shared by several executors. Cheap to clone; nothing runs
/// (no thread exists) until the first [`ExecutorRuntime::handle`].
#[derive(Clone)]
pub(crate) struct ExecutorRuntime {
    inner: Arc<Lazy>,
}

struct Lazy {
    workers: usize,
    built: OnceLock<Result<tokio::runtime::Runtime, String>>,
}

impl ExecutorRuntime {
    /// A runtime of `workers` (at least 1) worker threads, built on first use.
    pub(crate) fn lazy(workers: usize) -> ExecutorRuntime {
        ExecutorRuntime {
            inner: Arc::new(Lazy {
                workers: workers.max(1),
                built: OnceLock::new(),
            }),
        }
    }

    /// The runtime's handle, building it on the first call.
    pub(crate) fn handle(&self) -> Result<tokio::runtime::Handle, std::io::Error> {
        let built = self
            .inner
            .built
            .get_or_init(|| build(self.inner.workers).map_err(|e| e.to_string()));
        match built {
            Ok(rt) => Ok(rt.handle().clone()),
            Err(e) => Err(std::io::Error::other(e.clone())),
        }
    }

    /// True once the runtime has been built (a session delegated).
    #[cfg(test)]
    pub(crate) fn is_built(&self) -> bool {
        self.inner.built.get().is_some_and(Result::is_ok)
    }
}

impl Drop for Lazy {
    fn drop(&mut self) {
        // Dropping a runtime inside another runtime's context panics; the daemon drops its copy on
        // a plain thread, but never wait on tasks here: a session's executor ends with its session.
        if let Some(Ok(rt)) = self.built.take() {
            rt.shutdown_background();
        }
    }
}

/// A multi-thread runtime with `workers` workers named [`WORKER_NAME`] and blocking threads named
/// [`BLOCKING_NAME`]. tokio starts every worker while building, before any blocking thread, so the
/// first `workers` threads named are the workers.
pub(crate) fn build(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let workers = workers.max(1);
    let started = AtomicUsize::new(0);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .thread_name_fn(move || {
            if started.fetch_add(1, Ordering::Relaxed) < workers {
                WORKER_NAME.to_string()
            } else {
                BLOCKING_NAME.to_string()
            }
        })
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lazy_until_used_then_workers_and_blocking_threads_are_told_apart() {
        let rt = ExecutorRuntime::lazy(2);
        assert!(!rt.is_built());
        let h = rt.handle().unwrap();
        assert!(rt.is_built());
        let blocking = h.block_on(async {
            tokio::task::spawn_blocking(|| {
                std::fs::read_to_string("/proc/thread-self/comm").unwrap_or_default()
            })
            .await
            .unwrap()
        });
        assert_eq!(blocking.trim_end(), BLOCKING_NAME);
        let again = rt.clone().handle().unwrap();
        let worker = again.block_on(async {
            tokio::spawn(async {
                std::fs::read_to_string("/proc/thread-self/comm").unwrap_or_default()
            })
            .await
            .unwrap()
        });
        assert_eq!(worker.trim_end(), WORKER_NAME);
    }
}
