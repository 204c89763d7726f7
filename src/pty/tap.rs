//! The output tap: every output chunk is offered to an in-process consumer (the text pipeline)
//! through a queue bounded by bytes. Offering never blocks the pass-through: when the consumer is
//! behind and the queue is full, the chunk is dropped for the consumer only and its size counted as
//! an overrun (reported in `session.exited` as `tap_overrun_bytes`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};

/// How long the output must be silent before the consumer hears [`OutputConsumer::quiet`]. An
/// agent that streams a reply pauses for well under this between tokens; one whose turn is over
/// (or that waits for the user) stays silent.
pub const QUIET: std::time::Duration = std::time::Duration::from_secs(3);

/// A consumer of a session's output bytes, run on its own thread. The detection pipeline
/// implements it.
pub trait OutputConsumer: Send {
    /// The next output bytes, in order (minus any overrun gaps).
    fn feed(&mut self, bytes: &[u8]);
    /// The PTY was resized; later bytes are laid out at the new size.
    fn resize(&mut self, _cols: u16, _rows: u16) {}
    /// No output for [`QUIET`]: called once per quiet spell (the turn is over as far as the
    /// screen can tell).
    fn quiet(&mut self) {}
    /// The session's output ended (or the tap was closed); called once.
    fn finish(&mut self) {}
}

enum TapMsg {
    Data(Vec<u8>),
    Resize(u16, u16),
    End,
}

/// The producer end of the tap. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Tap {
    tx: Sender<TapMsg>,
    queued: Arc<AtomicUsize>,
    overrun: Arc<AtomicU64>,
    /// Bytes offered so far (taken or not): the consumer measures the output's rate with it.
    offered: Arc<AtomicU64>,
    /// The consumer sees a flood: the queue is bounded by [`FLOOD_BACKLOG`] instead of the
    /// capacity (a backlog of the full capacity, parsed after the flood, delayed the end of a
    /// `cat` of a large file by half a second).
    flooding: Arc<std::sync::atomic::AtomicBool>,
    capacity: usize,
}

impl Tap {
    /// Start `consumer` on its own thread behind a queue of at most `capacity_bytes` bytes.
    pub(crate) fn start(
        mut consumer: Box<dyn OutputConsumer>,
        capacity_bytes: usize,
    ) -> std::io::Result<(Tap, JoinHandle<()>)> {
        let capacity = capacity_bytes.max(1);
        // The byte budget is the real bound; the message bound only keeps tiny chunks in check.
        let (tx, rx) = crossbeam_channel::bounded((capacity / 256).clamp(64, 1 << 16));
        let queued = Arc::new(AtomicUsize::new(0));
        let overrun = Arc::new(AtomicU64::new(0));
        let offered = Arc::new(AtomicU64::new(0));
        let flooding = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let counters = Counters {
            queued: queued.clone(),
            overrun: overrun.clone(),
            offered: offered.clone(),
            flooding: flooding.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("mpm-tap".into())
            .spawn(move || consume(&mut *consumer, &rx, &counters))?;
        Ok((
            Tap {
                tx,
                queued,
                overrun,
                offered,
                flooding,
                capacity,
            },
            handle,
        ))
    }

    /// Offer a chunk; never blocks. Returns false when it was dropped (counted as overrun).
    pub(crate) fn push(&self, chunk: &[u8]) -> bool {
        let n = chunk.len();
        self.offered.fetch_add(n as u64, Ordering::Relaxed);
        let before = self.queued.fetch_add(n, Ordering::AcqRel);
        // In a flood the queue holds less: what it holds is parsed before the session ends.
        let capacity = if self.flooding.load(Ordering::Relaxed) {
            self.capacity.min(FLOOD_BACKLOG)
        } else {
            self.capacity
        };
        if before + n > capacity {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            self.overrun.fetch_add(n as u64, Ordering::Relaxed);
            return false;
        }
        match self.tx.try_send(TapMsg::Data(chunk.to_vec())) {
            Ok(()) => true,
            Err(_) => {
                self.queued.fetch_sub(n, Ordering::AcqRel);
                self.overrun.fetch_add(n as u64, Ordering::Relaxed);
                false
            }
        }
    }

    /// Tell the consumer about a new size (dropped only if the queue is full of messages).
    pub(crate) fn resize(&self, cols: u16, rows: u16) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(TapMsg::Resize(cols, rows)) {
            tracing::warn!(
                cols,
                rows,
                "output tap full: resize not delivered to the consumer"
            );
        }
    }

    /// End of output: the consumer finishes once it has taken everything queued. Blocks only
    /// while the queue is full of messages (the consumer is draining it).
    pub(crate) fn end(&self) {
        let _ = self.tx.send(TapMsg::End);
    }

    /// Bytes dropped for the consumer so far.
    pub(crate) fn overrun_bytes(&self) -> u64 {
        self.overrun.load(Ordering::Relaxed)
    }
}

/// Niceness of the consumer thread: under CPU contention the pass-through threads win, and a
/// consumer that falls behind shows up as counted overrun instead of a slower terminal.
const CONSUMER_NICE: libc::c_int = 10;

/// While the producer floods the consumer (it is dropping chunks, the output comes faster than
/// [`FLOOD_RATE`], or the consumer is more than [`FLOOD_BACKLOG`] behind and more keeps coming),
/// the consumer rests after each chunk for this many times the chunk's processing time: it then
/// takes about a tenth of a core, and the pass-through threads (on a small machine, possibly the
/// same physical core's other hyperthread) keep more of their speed. Resting loses nothing by
/// itself: the queue holds what comes meanwhile, and only what does not fit the queue is dropped
/// (as it would be anyway). Once the flood stops, the backlog is processed at full speed.
/// Measured with `cargo bench --bench run` (BENCHMARKS.md).
const FLOOD_REST_FACTOR: u32 = 9;
/// One rest is never longer than this (a chunk that was slow for another reason).
const MAX_FLOOD_REST: std::time::Duration = std::time::Duration::from_millis(50);
/// Behind by this much while the producer goes on is a flood.
const FLOOD_BACKLOG: usize = 1 << 20;
/// Output faster than this (bytes per second, over [`FLOOD_WINDOW`]) is a flood: an agent's reply,
/// even a full-screen repaint at 60 frames a second, is far below it; `cat` of a large file is
/// not. Without this rule a consumer that keeps up with a flood (the relay slowed by the machine's
/// load, or by the parse itself) parsed every byte at full speed and took most of the relay's CPU
/// (two thirds of the daemon's samples during a `cat`).
const FLOOD_RATE: u64 = 4 << 20;
/// The window over which the output's rate is measured.
const FLOOD_WINDOW: std::time::Duration = std::time::Duration::from_millis(250);

/// The producer's counters the consumer reads.
struct Counters {
    queued: Arc<AtomicUsize>,
    overrun: Arc<AtomicU64>,
    offered: Arc<AtomicU64>,
    flooding: Arc<std::sync::atomic::AtomicBool>,
}

fn consume(consumer: &mut dyn OutputConsumer, rx: &Receiver<TapMsg>, counters: &Counters) {
    let Counters {
        queued,
        overrun,
        offered,
        flooding,
    } = counters;
    // SAFETY: plain syscalls on this thread's own id. Linux applies nice per thread.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, tid, CONSUMER_NICE) != 0 {
            tracing::debug!("cannot lower the tap consumer's priority");
        }
    }
    let mut dropped_seen = overrun.load(Ordering::Relaxed);
    let mut offered_seen = offered.load(Ordering::Relaxed);
    // The rate window: when it started, and the bytes offered by then.
    let mut window = (std::time::Instant::now(), offered_seen);
    let mut fast = false;
    let mut told_quiet = true;
    loop {
        let msg = match rx.recv_timeout(QUIET) {
            Ok(m) => m,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                if !told_quiet {
                    told_quiet = true;
                    consumer.quiet();
                }
                continue;
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        };
        told_quiet = false;
        match msg {
            TapMsg::Data(bytes) => {
                queued.fetch_sub(bytes.len(), Ordering::AcqRel);
                let started = std::time::Instant::now();
                consumer.feed(&bytes);
                let dropped = overrun.load(Ordering::Relaxed);
                let now_offered = offered.load(Ordering::Relaxed);
                let behind =
                    queued.load(Ordering::Acquire) > FLOOD_BACKLOG && now_offered != offered_seen;
                offered_seen = now_offered;
                let elapsed = window.0.elapsed();
                if elapsed >= FLOOD_WINDOW {
                    let bytes = now_offered.saturating_sub(window.1);
                    fast = bytes as f64 > FLOOD_RATE as f64 * elapsed.as_secs_f64();
                    flooding.store(fast, Ordering::Relaxed);
                    window = (std::time::Instant::now(), now_offered);
                }
                if dropped != dropped_seen || behind || fast {
                    dropped_seen = dropped;
                    std::thread::sleep((started.elapsed() * FLOOD_REST_FACTOR).min(MAX_FLOOD_REST));
                }
            }
            TapMsg::Resize(c, r) => consumer.resize(c, r),
            TapMsg::End => break,
        }
    }
    consumer.finish();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    type State = Arc<Mutex<(Vec<u8>, Vec<(u16, u16)>, bool)>>;
    struct Collect(State, Option<Receiver<()>>);
    impl OutputConsumer for Collect {
        fn feed(&mut self, bytes: &[u8]) {
            if let Some(gate) = &self.1 {
                let _ = gate.recv();
            }
            self.0.lock().unwrap().0.extend_from_slice(bytes);
        }
        fn resize(&mut self, c: u16, r: u16) {
            self.0.lock().unwrap().1.push((c, r));
        }
        fn finish(&mut self) {
            self.0.lock().unwrap().2 = true;
        }
    }

    #[test]
    fn delivers_in_order_and_finishes() {
        let state = Arc::new(Mutex::new((Vec::new(), Vec::new(), false)));
        let (tap, h) = Tap::start(Box::new(Collect(state.clone(), None)), 1 << 20).unwrap();
        assert!(tap.push(b"ab"));
        tap.resize(100, 30);
        assert!(tap.push(b"cd"));
        tap.end();
        h.join().unwrap();
        let s = state.lock().unwrap();
        assert_eq!(s.0, b"abcd");
        assert_eq!(s.1, vec![(100, 30)]);
        assert!(s.2);
        assert_eq!(tap.overrun_bytes(), 0);
    }

    #[test]
    fn a_stuck_consumer_never_blocks_and_overruns_are_counted() {
        let state = Arc::new(Mutex::new((Vec::new(), Vec::new(), false)));
        let (gate_tx, gate_rx) = crossbeam_channel::unbounded();
        let (tap, h) = Tap::start(Box::new(Collect(state.clone(), Some(gate_rx))), 1000).unwrap();
        let mut accepted = 0u64;
        for _ in 0..100 {
            if tap.push(&[7u8; 100]) {
                accepted += 100;
            }
        }
        // At most the capacity plus the chunk the consumer holds can be accepted.
        assert!(accepted <= 1100, "accepted {accepted}");
        assert_eq!(tap.overrun_bytes(), 10_000 - accepted);
        drop(gate_tx); // release the consumer
        tap.end();
        h.join().unwrap();
        assert_eq!(state.lock().unwrap().0.len() as u64, accepted);
    }
}
