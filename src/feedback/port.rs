//! The session's side of paste delivery: a narrow writer into the agent's PTY plus what the
//! feedback needs to know to stay out of the user's way (when the user last typed, whether the
//! input line holds something, when the agent last wrote, whether it enabled bracketed paste).
//!
//! The session owns the PTY; it [`connect`](PtyPort::connect)s a write function after the spawn,
//! reports keystrokes with [`typed`](PtyPort::typed) from its stdin relay, and reports output with
//! [`output`](PtyPort::output) from the text pipeline's thread (never from the pass-through path).
//! Everything is atomics except the writer slot, which is set once and read per paste.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Writes bytes into the agent's PTY (as if typed).
pub(crate) type PtyWriter = Box<dyn Fn(&[u8]) -> io::Result<()> + Send + Sync>;

const NEVER: u64 = u64::MAX;
const BRACKETED_ON: &[u8] = b"\x1b[?2004h";
const BRACKETED_OFF: &[u8] = b"\x1b[?2004l";

/// See the module docs. Shared as `Arc<PtyPort>` between the session and the feedback actor.
pub(crate) struct PtyPort {
    epoch: Instant,
    writer: Mutex<Option<PtyWriter>>,
    last_key_ms: AtomicU64,
    line_dirty: AtomicBool,
    last_output_ms: AtomicU64,
    bracketed: AtomicBool,
}

impl Default for PtyPort {
    fn default() -> Self {
        PtyPort {
            epoch: Instant::now(),
            writer: Mutex::new(None),
            last_key_ms: AtomicU64::new(NEVER),
            line_dirty: AtomicBool::new(false),
            last_output_ms: AtomicU64::new(NEVER),
            bracketed: AtomicBool::new(false),
        }
    }
}

impl PtyPort {
    pub(crate) fn new() -> Arc<PtyPort> {
        Arc::new(PtyPort::default())
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn since(&self, slot: &AtomicU64) -> Option<Duration> {
        match slot.load(Ordering::Relaxed) {
            NEVER => None,
            t => Some(Duration::from_millis(self.now_ms().saturating_sub(t))),
        }
    }

    /// The session connects its PTY writer (after the spawn).
    pub(crate) fn connect(&self, writer: PtyWriter) {
        *self.writer.lock().unwrap_or_else(|e| e.into_inner()) = Some(writer);
    }

    /// The session ended: no more writes.
    pub(crate) fn disconnect(&self) {
        self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Write into the PTY; an error when nothing is connected.
    pub(crate) fn write(&self, bytes: &[u8]) -> io::Result<()> {
        match self
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            Some(w) => w(bytes),
            None => Err(io::Error::new(io::ErrorKind::NotConnected, "session ended")),
        }
    }

    /// The user typed `bytes`. Enter, Ctrl-C and Ctrl-U leave the input line empty; any other
    /// key leaves something on it (as far as mpm can know).
    pub(crate) fn typed(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.last_key_ms.store(self.now_ms(), Ordering::Relaxed);
        if let Some(&last) = bytes.last() {
            let clean = matches!(last, b'\r' | b'\n' | 0x03 | 0x15);
            self.line_dirty.store(!clean, Ordering::Relaxed);
        }
    }

    /// The agent wrote `bytes` (seen by the text pipeline).
    pub(crate) fn output(&self, bytes: &[u8]) {
        self.last_output_ms.store(self.now_ms(), Ordering::Relaxed);
        let on = memchr::memmem::rfind(bytes, BRACKETED_ON);
        let off = memchr::memmem::rfind(bytes, BRACKETED_OFF);
        match (on, off) {
            (Some(a), Some(b)) => self.bracketed.store(a > b, Ordering::Relaxed),
            (Some(_), None) => self.bracketed.store(true, Ordering::Relaxed),
            (None, Some(_)) => self.bracketed.store(false, Ordering::Relaxed),
            (None, None) => {}
        }
    }

    /// True when the user has not typed for `quiet` and the input line is (as far as known) empty.
    pub(crate) fn user_quiet(&self, quiet: Duration) -> bool {
        !self.line_dirty.load(Ordering::Relaxed)
            && self.since(&self.last_key_ms).is_none_or(|d| d >= quiet)
    }

    /// True when the agent has written nothing for `quiet` (and has written something at all).
    pub(crate) fn output_quiet(&self, quiet: Duration) -> bool {
        self.since(&self.last_output_ms).is_some_and(|d| d >= quiet)
    }

    /// Whether the agent asked for bracketed paste (`CSI ? 2004 h`).
    pub(crate) fn bracketed_paste(&self) -> bool {
        self.bracketed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_and_output_are_tracked() {
        let p = PtyPort::new();
        assert!(p.user_quiet(Duration::ZERO));
        assert!(!p.output_quiet(Duration::ZERO), "no output yet");
        p.typed(b"ab");
        assert!(!p.user_quiet(Duration::ZERO), "a half-typed line");
        p.typed(b"\r");
        assert!(p.user_quiet(Duration::ZERO));
        assert!(!p.user_quiet(Duration::from_secs(60)), "typed just now");
        p.output(b"x\x1b[?2004hy");
        assert!(p.bracketed_paste() && p.output_quiet(Duration::ZERO));
        p.output(b"\x1b[?2004h..\x1b[?2004l");
        assert!(!p.bracketed_paste());
        assert!(p.write(b"x").is_err());
        let (tx, rx) = std::sync::mpsc::channel();
        p.connect(Box::new(move |b| {
            tx.send(b.to_vec()).unwrap();
            Ok(())
        }));
        p.write(b"hi").unwrap();
        assert_eq!(rx.recv().unwrap(), b"hi");
        p.disconnect();
        assert!(!p.is_connected());
    }
}
