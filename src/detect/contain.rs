//! Panic containment for the live detection pipeline.
//!
//! Detection reads whatever the agent writes; a bug anywhere in it (screen model, line reader,
//! engine) must not reach the user. [`Contained`] runs each piece of the pipeline's work under
//! `catch_unwind`: on a panic the pipeline is dropped and rebuilt (fresh screen model, the same
//! shared dedup memory, so nothing already reported is reported again), the incident is reported
//! (an event and a log line), and detection goes on with the next chunk. After
//! [`MAX_PANICS`] panics detection stops for the session; the pass-through never notices either
//! way, because the pipeline runs on the output tap's own thread.
//!
//! The panic's report must not land in the user's terminal, which the session owns and keeps in
//! raw mode: while contained work runs, [`absorb_panic`] (called first by every panic hook mpm
//! installs, and by the hook [`Contained::new`] installs) takes the message for the incident
//! instead, and the terminal hook neither prints nor restores cooked mode.

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, PanicHookInfo};
use std::sync::Once;

use crate::events::{Detection, EventBody};

use super::Pipeline;

/// After this many panics in one session, detection stops (the same bug would keep firing).
pub(crate) const MAX_PANICS: u32 = 3;

thread_local! {
    /// Contained work is running on this thread.
    static CONTAINED: Cell<bool> = const { Cell::new(false) };
    /// The message of the panic absorbed on this thread, for the incident.
    static ABSORBED: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// For panic hooks: when the panicking thread is running contained work, keep the panic's message
/// and location for the incident and return true (the hook then prints nothing and leaves the
/// terminal as it is); false otherwise.
pub(crate) fn absorb_panic(info: &PanicHookInfo<'_>) -> bool {
    if !CONTAINED.with(Cell::get) {
        return false;
    }
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string());
    let text = match info.location() {
        Some(l) => format!("{message} at {}:{}", l.file(), l.line()),
        None => message,
    };
    ABSORBED.with(|a| *a.borrow_mut() = Some(text));
    true
}

/// Chain a panic hook that absorbs contained panics (see [`absorb_panic`]); once per process.
fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !absorb_panic(info) {
                previous(info);
            }
        }));
    });
}

/// Run `work` contained: `Err(message)` when it panicked.
fn contained<T>(work: impl FnOnce() -> T) -> Result<T, String> {
    CONTAINED.with(|c| c.set(true));
    let result = std::panic::catch_unwind(AssertUnwindSafe(work));
    CONTAINED.with(|c| c.set(false));
    result.map_err(|_| {
        ABSORBED
            .with(|a| a.borrow_mut().take())
            .unwrap_or_else(|| "a panic".to_string())
    })
}

/// What happened when contained work panicked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    /// Panics so far in this session's detection (1 for the first).
    pub panics: u32,
    /// Detection stopped for the rest of the session (after [`MAX_PANICS`]).
    pub stopped: bool,
    /// The panic's message and location.
    pub reason: String,
}

impl Incident {
    /// The `detection.restarted` event for this incident.
    pub fn event(&self) -> EventBody {
        EventBody::DetectionRestarted {
            panics: self.panics,
            stopped: self.stopped,
            reason: self.reason.clone(),
        }
    }
}

/// Builds a pipeline at a size (the first, and each rebuild after a panic).
type MakePipeline = Box<dyn FnMut(u16, u16) -> Pipeline + Send>;
/// Told about each incident.
type Report = Box<dyn FnMut(&Incident) + Send>;

/// A [`Pipeline`] whose panics are contained: same calls, and after a panic the detections of that
/// call are lost, the pipeline is rebuilt and the incident reported.
pub struct Contained {
    make: MakePipeline,
    report: Report,
    /// `None` once detection has stopped.
    pipeline: Option<Pipeline>,
    cols: u16,
    rows: u16,
    panics: u32,
}

impl std::fmt::Debug for Contained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contained")
            .field("pipeline", &self.pipeline)
            .field("panics", &self.panics)
            .finish_non_exhaustive()
    }
}

impl Contained {
    /// A contained pipeline of `cols` x `rows`, built (and rebuilt) by `make`; `report` gets each
    /// incident.
    pub fn new(
        cols: u16,
        rows: u16,
        mut make: impl FnMut(u16, u16) -> Pipeline + Send + 'static,
        report: impl FnMut(&Incident) + Send + 'static,
    ) -> Contained {
        install_hook();
        let pipeline = Some(make(cols, rows));
        Contained {
            make: Box::new(make),
            report: Box::new(report),
            pipeline,
            cols,
            rows,
            panics: 0,
        }
    }

    /// [`Pipeline::feed`], contained.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Detection> {
        self.run(|p| {
            #[cfg(debug_assertions)]
            inject::maybe_panic(bytes);
            p.feed(bytes)
        })
    }

    /// [`Pipeline::resize`], contained (a rebuild after a panic uses the new size).
    pub fn resize(&mut self, cols: u16, rows: u16) -> Vec<Detection> {
        (self.cols, self.rows) = (cols, rows);
        self.run(|p| p.resize(cols, rows))
    }

    /// [`Pipeline::finish`], contained.
    pub fn finish(&mut self) -> Vec<Detection> {
        self.run(Pipeline::finish)
    }

    /// [`Pipeline::quiet`], contained.
    pub fn quiet(&mut self) -> Vec<Detection> {
        self.run(Pipeline::quiet)
    }

    /// Detection has stopped after [`MAX_PANICS`] panics.
    pub fn stopped(&self) -> bool {
        self.pipeline.is_none()
    }

    fn run(&mut self, work: impl FnOnce(&mut Pipeline) -> Vec<Detection>) -> Vec<Detection> {
        let Some(pipeline) = self.pipeline.as_mut() else {
            return Vec::new();
        };
        match contained(|| work(pipeline)) {
            Ok(found) => found,
            Err(reason) => {
                self.panics += 1;
                let stopped = self.panics >= MAX_PANICS;
                // The old pipeline may be half-way through a change: never use it again.
                self.pipeline = None;
                if !stopped {
                    let (cols, rows) = (self.cols, self.rows);
                    self.pipeline = contained(|| (self.make)(cols, rows)).ok();
                }
                let incident = Incident {
                    panics: self.panics,
                    stopped: self.pipeline.is_none(),
                    reason,
                };
                if incident.stopped {
                    tracing::error!(panics = incident.panics, reason = %incident.reason,
                        "detection stopped for this session after repeated panics");
                } else {
                    tracing::error!(panics = incident.panics, reason = %incident.reason,
                        "detection panicked and was restarted");
                }
                (self.report)(&incident);
                Vec::new()
            }
        }
    }
}

/// A test-only fault: in debug builds, `MPM_DEBUG_PANIC_DETECT=MARKER` makes the pipeline panic
/// on every output chunk that contains MARKER. Compiled out of release builds.
#[cfg(debug_assertions)]
mod inject {
    use std::sync::OnceLock;

    pub(super) fn maybe_panic(bytes: &[u8]) {
        static MARKER: OnceLock<Option<Vec<u8>>> = OnceLock::new();
        let marker = MARKER.get_or_init(|| {
            std::env::var_os("MPM_DEBUG_PANIC_DETECT")
                .filter(|m| !m.is_empty())
                .map(|m| m.into_encoded_bytes())
        });
        if let Some(m) = marker
            && bytes.windows(m.len()).any(|w| w == m.as_slice())
        {
            panic!("injected detection panic (MPM_DEBUG_PANIC_DETECT)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use crate::events::TextSource;

    /// Panics on a line containing `BOOM`, else finds `TODO:` lines.
    struct Bomb;
    impl super::super::Matcher for Bomb {
        fn detect(&self, line: &str, source: TextSource) -> Vec<Detection> {
            assert!(!line.contains("BOOM"), "bomb went off");
            let t = line.trim();
            match t.strip_prefix("TODO:") {
                Some(title) => vec![Detection {
                    category: "ticket".into(),
                    pattern: "bomb".into(),
                    text: t.into(),
                    source,
                    agent: None,
                    task: None,
                    ticket_type: Some("TODO".into()),
                    title: Some(title.trim().into()),
                    priority: None,
                    handled_by_agent: false,
                    is_final: true,
                }],
                None => Vec::new(),
            }
        }
    }

    fn contained_bomb() -> (Contained, Arc<Mutex<Vec<Incident>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let c = Contained::new(
            80,
            24,
            |cols, rows| Pipeline::with_matcher(Arc::new(Bomb), cols, rows),
            move |i| s.lock().unwrap_or_else(|e| e.into_inner()).push(i.clone()),
        );
        (c, seen)
    }

    fn titles(d: &[Detection]) -> Vec<&str> {
        d.iter().filter_map(|d| d.title.as_deref()).collect()
    }

    #[test]
    fn a_panic_restarts_detection_and_is_reported() {
        let (mut c, seen) = contained_bomb();
        // A line drawn below a detection makes it final (`detect::finality`).
        assert_eq!(titles(&c.feed(b"TODO: one\r\nand more text\r\n")), ["one"]);
        assert!(c.feed(b"BOOM\r\n").is_empty());
        {
            let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            assert_eq!(seen.len(), 1);
            assert_eq!(seen[0].panics, 1);
            assert!(!seen[0].stopped);
            assert!(seen[0].reason.contains("bomb went off"), "{:?}", seen[0]);
            assert!(seen[0].reason.contains("contain.rs"), "{:?}", seen[0]);
        }
        // Rebuilt: detection goes on.
        let mut d = c.feed(b"TODO: two\r\n");
        d.extend(c.finish());
        assert_eq!(titles(&d), ["two"]);
        assert!(!c.stopped());
    }

    #[test]
    fn repeated_panics_stop_detection() {
        let (mut c, seen) = contained_bomb();
        for _ in 0..MAX_PANICS {
            assert!(c.feed(b"BOOM\r\n").is_empty());
        }
        assert!(c.stopped());
        assert!(c.feed(b"TODO: ignored\r\n").is_empty());
        assert!(c.finish().is_empty());
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        let flags: Vec<(u32, bool)> = seen.iter().map(|i| (i.panics, i.stopped)).collect();
        assert_eq!(flags, [(1, false), (2, false), (3, true)]);
        assert!(matches!(
            seen[2].event(),
            EventBody::DetectionRestarted {
                stopped: true,
                panics: 3,
                ..
            }
        ));
    }

    #[test]
    fn panics_outside_contained_work_are_not_absorbed() {
        install_hook();
        let r = std::panic::catch_unwind(|| panic!("not contained"));
        assert!(r.is_err());
        assert!(ABSORBED.with(|a| a.borrow().is_none()));
    }
}
