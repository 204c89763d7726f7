//! Running slots shared by several executors: the daemon's one bound on sub-agents.
//!
//! Each session has its own [`Executor`](super::Executor) (its queue, dedup, rate cap, breaker and
//! budgets are per session), but a daemon hosts many sessions, and `executor.max_parallel` is meant
//! as a bound on the sub-agents the machine runs, not per session. So the daemon hands every
//! session's executor the same [`Slots`]: an executor starts a delegation only when it holds one of
//! the daemon's slots as well as one of its own, and gives it back when the delegation has ended
//! (after its `delegation.finished`). An in-process `mpm run` has no `Slots` and keeps its own bound.
//!
//! Waking: an executor that found no free slot registers its wake-up ([`Notify`]); every release
//! wakes every registered executor, which then tries again (the first to come takes the slot; the
//! others register again). Sessions are not served in a strict FIFO across each other; each
//! session's own queue stays FIFO.

use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

/// A parallelism bound shared by several executors. Cheap to clone.
#[derive(Clone)]
pub struct Slots {
    inner: Arc<Inner>,
}

struct Inner {
    max: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    taken: usize,
    /// Executors waiting for a slot (woken, then forgotten, on every release).
    waiters: Vec<Weak<Notify>>,
}

impl Slots {
    /// At most `max` (at least 1) slots taken at once.
    pub fn new(max: usize) -> Slots {
        Slots {
            inner: Arc::new(Inner {
                max: max.max(1),
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The bound.
    pub fn max(&self) -> usize {
        self.inner.max
    }

    /// Slots taken right now.
    pub fn taken(&self) -> usize {
        self.inner.lock().taken
    }

    /// Take a slot, or (none free) remember `wake` to be notified at the next release.
    pub fn try_take(&self, wake: &Arc<Notify>) -> Option<Slot> {
        let mut st = self.inner.lock();
        if st.taken < self.inner.max {
            st.taken += 1;
            return Some(Slot {
                inner: self.inner.clone(),
            });
        }
        let me = Arc::downgrade(wake);
        if !st.waiters.iter().any(|w| w.ptr_eq(&me)) {
            st.waiters.push(me);
        }
        None
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One taken slot; dropping it frees the slot and wakes the waiting executors.
pub struct Slot {
    inner: Arc<Inner>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let waiters = {
            let mut st = self.inner.lock();
            st.taken = st.taken.saturating_sub(1);
            std::mem::take(&mut st.waiters)
        };
        for w in waiters.iter().filter_map(Weak::upgrade) {
            w.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_bound_holders_and_wake_waiters_on_release() {
        let slots = Slots::new(2);
        let (a, b) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let s1 = slots.try_take(&a).unwrap();
        let _s2 = slots.try_take(&b).unwrap();
        assert!(slots.try_take(&a).is_none());
        assert!(slots.try_take(&a).is_none(), "registered once");
        assert!(slots.try_take(&b).is_none());
        assert_eq!(slots.taken(), 2);
        drop(s1);
        assert_eq!(slots.taken(), 1);
        // Both waiters hold a stored permit now: their next `notified()` returns at once.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            a.notified().await;
            b.notified().await;
        });
        assert!(slots.try_take(&a).is_some());
    }
}
