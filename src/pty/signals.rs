//! Signals to mpm, turned into callbacks on one dedicated thread (signal-hook's iterator: the
//! handler only writes to a self-pipe; the thread blocks reading it, so no CPU is spent idle).

use std::thread::JoinHandle;

use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGWINCH};
use signal_hook::iterator::{Handle, Signals};

/// The signals a terminal session handles: resize, and the four that end it.
pub(crate) const SESSION_SIGNALS: [i32; 5] = [SIGWINCH, SIGTERM, SIGHUP, SIGINT, SIGQUIT];

/// A running signal thread; [`SignalThread::close`] (or drop) stops it.
pub(crate) struct SignalThread {
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

impl SignalThread {
    /// Register handlers for `signals` and call `on_signal(n)` for each one delivered.
    pub(crate) fn start(
        signals: &[i32],
        mut on_signal: impl FnMut(i32) + Send + 'static,
    ) -> std::io::Result<SignalThread> {
        let mut sigs = Signals::new(signals)?;
        let handle = sigs.handle();
        let thread = std::thread::Builder::new()
            .name("mpm-signals".into())
            .spawn(move || {
                for sig in sigs.forever() {
                    on_signal(sig);
                }
            })?;
        Ok(SignalThread {
            handle,
            thread: Some(thread),
        })
    }

    /// Stop listening and join the thread.
    pub(crate) fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SignalThread {
    fn drop(&mut self) {
        self.stop();
    }
}
