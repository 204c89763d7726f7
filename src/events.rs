//! Events: the one typed record every component emits, and the bus that carries them to every sink.
//!
//! The JSON shape of each kind is the user-facing contract (`shared/spec/interface.md`): common fields
//! `ts`, `session`, `kind`, `trace_id`, `step_id`, `parent_step_id`, then the kind's own fields, flattened.
//! Extra fields may be added; names are never changed.
//!
//! The [`Bus`] is deliberately small. [`Sink`]s are called in emit order under one lock and must not
//! block: the slow ones (the events file, the SQLite store) are each a [`Writer`], a sink that only
//! queues the event for its own thread, so no emitting thread (the detection dispatcher above all)
//! ever waits on a disk or on SQLite; [`Bus::flush`] (and [`Bus::close`]) waits until every writer has
//! written what was emitted before. Channel subscribers (feedback, notifier, socket clients) get an
//! `Arc<Event>` each through an unbounded crossbeam channel and must keep up or unsubscribe by dropping
//! their receiver. Listeners ([`Bus::listen`]: the executor) are called on the emitting thread after
//! the lock is released, once per event, internal events included (`detection.dispatch`).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// A timestamp in the contract's format: RFC 3339, UTC, milliseconds.
pub fn now_ts() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A fresh random identifier (UUID v4, hyphenated), used for sessions, traces, steps and delegations.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// One event, as written to events files, the store and socket subscribers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When it happened (RFC 3339, UTC, milliseconds).
    pub ts: String,
    /// The session it belongs to.
    pub session: String,
    /// The session's trace: every event of one session shares it.
    pub trace_id: String,
    /// This event's own step id.
    pub step_id: String,
    /// The step that caused this one (a delegation's detection, for example), when there is one.
    pub parent_step_id: Option<String>,
    /// The kind and its fields (`kind` is the serde tag).
    #[serde(flatten)]
    pub body: EventBody,
}

impl Event {
    /// The contract's `kind` string for this event.
    pub fn kind(&self) -> &'static str {
        self.body.kind()
    }

    /// This event as one JSON line (no trailing newline).
    pub fn to_json_line(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// The kind-specific part of an [`Event`]; `kind` is the serde tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum EventBody {
    /// The session's agent started.
    #[serde(rename = "session.started")]
    SessionStarted {
        /// The agent's argv.
        command: Vec<String>,
        /// The agent's pid (the root of its process tree).
        pid: u32,
        /// The terminal width the agent started with.
        cols: u16,
        /// The terminal height the agent started with.
        rows: u16,
        /// Which resource-governor mode is active (`cgroup` or `polling`), when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        governor_mode: Option<String>,
        /// How finished results reach this session's main agent (`off`, `on-idle`,
        /// `next-prompt`), when known: with `off` a finished result is not "pending".
        #[serde(default, skip_serializing_if = "Option::is_none")]
        feedback: Option<String>,
    },
    /// The session's agent ended.
    #[serde(rename = "session.exited")]
    SessionExited {
        /// The agent's exit code, when it exited.
        exit_code: Option<i32>,
        /// The signal that killed the agent, when one did.
        signal: Option<i32>,
        /// How long the session ran.
        duration_ms: u64,
        /// Output bytes the text pipeline could not take in time (dropped for detection only; the
        /// terminal got every byte).
        #[serde(default)]
        tap_overrun_bytes: u64,
    },
    /// The pattern engine found something (final detections only).
    #[serde(rename = "detection")]
    Detection(Detection),
    /// Internal: run this final delegation (once). The dispatcher's word that a delegation is to
    /// run, which the executor takes as a bus subscriber; its parent step is the delegation's
    /// `detection` event. Never written to the events file or the store, nor sent to
    /// [`Bus::subscribe`] receivers: the `detection` event is the record.
    #[serde(rename = "detection.dispatch")]
    DetectionDispatch(Detection),
    /// A delegation was admitted and waits for a free slot.
    #[serde(rename = "delegation.queued")]
    DelegationQueued(Delegation),
    /// A delegation's sub-agent was spawned.
    #[serde(rename = "delegation.started")]
    DelegationStarted {
        /// Which delegation.
        #[serde(flatten)]
        delegation: Delegation,
        /// The sub-agent's pid.
        pid: u32,
    },
    /// A delegation ended (exactly one per queued delegation).
    #[serde(rename = "delegation.finished")]
    DelegationFinished {
        /// Which delegation.
        #[serde(flatten)]
        delegation: Delegation,
        /// How it ended.
        status: DelegationStatus,
        /// The sub-agent's exit code, when it exited.
        exit_code: Option<i32>,
        /// From queued to finished.
        duration_ms: u64,
        /// The sub-agent's captured stdout file.
        output_path: Option<String>,
        /// Why the delegation ended this way (rejection reason, error text), when there is one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// The worker that ran it (`null` for the local backend).
        #[serde(default)]
        worker: Option<String>,
        /// The readable result file (`<agent>-<short id>.md`), when one was written.
        #[serde(default)]
        result_path: Option<String>,
    },
    /// The session's state changed.
    #[serde(rename = "session.state")]
    SessionState {
        /// The new state.
        state: SessionState,
        /// The state before; none for the first.
        previous: Option<SessionState>,
        /// Which signal decided (e.g. `transcript`, `hook:Stop`, `screen:prompt`, `title`, `exit`).
        reason: String,
        /// For `blocked`: when the limit resets, as shown by the agent.
        #[serde(default)]
        resets_at: Option<String>,
    },
    /// What a running sub-agent is doing (throttled; from its stream-json).
    #[serde(rename = "delegation.progress")]
    DelegationProgress {
        /// Which delegation.
        #[serde(flatten)]
        delegation: Delegation,
        /// The last tool the sub-agent called, when known.
        last_tool: Option<String>,
        /// Tokens used so far.
        tokens: u64,
        /// Time since the sub-agent started.
        elapsed_ms: u64,
        /// No output and no CPU for `executor.stall_secs`.
        stalled: bool,
    },
    /// Results of finished delegations were handed to the main agent (once per batch).
    #[serde(rename = "delegation.feedback")]
    DelegationFeedback {
        /// The batch of delegations whose results were handed to the main agent.
        delegation_ids: Vec<String>,
        /// How they were handed over.
        via: FeedbackVia,
        /// Size of the message.
        bytes: u64,
    },
    /// The live detection pipeline panicked: it was rebuilt, or (after repeated panics) stopped
    /// for the rest of the session. The pass-through is not affected.
    #[serde(rename = "detection.restarted")]
    DetectionRestarted {
        /// Panics so far in this session's detection.
        panics: u32,
        /// Detection stopped for the rest of the session.
        stopped: bool,
        /// The panic's message and location.
        reason: String,
    },
    /// A tree went over its warning threshold.
    #[serde(rename = "resource.warning")]
    ResourceWarning(Resource),
    /// A tree went over its critical threshold.
    #[serde(rename = "resource.critical")]
    ResourceCritical(Resource),
    /// A hard limit was enforced on a tree (it was stopped).
    #[serde(rename = "resource.limit")]
    ResourceLimit(Resource),
    /// A restarted daemon stopped a process a dead mpm (a SIGKILLed daemon or `mpm run`) left
    /// running: one event per process, under the session it belonged to (`MPM_SESSION` in its
    /// environment; empty when unknown).
    #[serde(rename = "process.reaped")]
    ProcessReaped {
        /// The process stopped.
        pid: u32,
        /// `/proc/<pid>/comm`.
        comm: String,
        /// `/proc/<pid>/cmdline` (empty when unreadable).
        argv: Vec<String>,
        /// The tree tag (`MPM_TREE`) it carried: `<dead owner pid>-<its start time>-<n>`; empty for a
        /// session root found through the store (the monitor, a fork that never exec'd, has none).
        tag: String,
        /// The signal that ended it: `SIGTERM`, or `SIGKILL` when the grace period was not enough.
        signal: String,
    },
}

impl EventBody {
    /// Internal events steer components (the executor) and are not part of the record: sinks
    /// and [`Bus::subscribe`] receivers never see them, only listeners do.
    pub fn is_internal(&self) -> bool {
        matches!(self, EventBody::DetectionDispatch(_))
    }

    /// The contract's `kind` string.
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::SessionStarted { .. } => "session.started",
            EventBody::SessionExited { .. } => "session.exited",
            EventBody::Detection(_) => "detection",
            EventBody::DetectionDispatch(_) => "detection.dispatch",
            EventBody::DelegationQueued(_) => "delegation.queued",
            EventBody::DelegationStarted { .. } => "delegation.started",
            EventBody::DelegationFinished { .. } => "delegation.finished",
            EventBody::SessionState { .. } => "session.state",
            EventBody::DelegationProgress { .. } => "delegation.progress",
            EventBody::DelegationFeedback { .. } => "delegation.feedback",
            EventBody::DetectionRestarted { .. } => "detection.restarted",
            EventBody::ResourceWarning(_) => "resource.warning",
            EventBody::ResourceCritical(_) => "resource.critical",
            EventBody::ResourceLimit(_) => "resource.limit",
            EventBody::ProcessReaped { .. } => "process.reaped",
        }
    }
}

/// Where a detection's text came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TextSource {
    /// Rows read off the VT screen model of the session's PTY output.
    Screen,
    /// The agent's own session transcript (claude's JSONL).
    Transcript,
    /// `--output-format stream-json` lines.
    Stream,
    /// Plain text lines.
    Text,
}

/// Something the pattern engine found: a delegation, a ticket, an error, or a custom category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// `delegation`, `ticket`, `error`, or a custom category from a pattern file.
    pub category: String,
    /// The id of the pattern that matched.
    pub pattern: String,
    /// The matched line, de-styled.
    pub text: String,
    /// How the text was read.
    pub source: TextSource,
    /// Delegations: the registry name of the agent (resolved from aliases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Delegations: the task text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Tickets: TODO, BUG, FEATURE, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket_type: Option<String>,
    /// Tickets: the title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Tickets: an optional priority (`High`, `P1`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// True when the agent CLI runs this delegation itself (claude's `Agent`/`Task` tool call): it is
    /// recorded, never executed by mpm.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub handled_by_agent: bool,
    /// Final (`true`) when the detection's block is complete: text was drawn below it in the same
    /// reply, the turn ended, or an exact source (transcript, hook, stream) carries it. A
    /// provisional (`false`) detection may still grow; only final delegations dispatch.
    #[serde(rename = "final", default = "final_default")]
    pub is_final: bool,
}

/// Detections read back without a `final` field (older events files, stores) were final.
fn final_default() -> bool {
    true
}

impl Detection {
    /// A final detection with no detection fields set; fill them with struct update syntax
    /// (`Detection { agent: Some(..), ..Detection::new(..) }`).
    pub fn new(category: &str, pattern: &str, text: String, source: TextSource) -> Detection {
        Detection {
            category: category.to_string(),
            pattern: pattern.to_string(),
            text,
            source,
            agent: None,
            task: None,
            ticket_type: None,
            title: None,
            priority: None,
            handled_by_agent: false,
            is_final: true,
        }
    }

    /// A final delegation of `task` to `agent` (the text as `<agent> Agent: <task>`).
    pub fn delegation(agent: &str, task: &str, pattern: &str, source: TextSource) -> Detection {
        Detection {
            agent: Some(agent.to_string()),
            task: Some(task.to_string()),
            ..Detection::new(
                "delegation",
                pattern,
                format!("{agent} Agent: {task}"),
                source,
            )
        }
    }
}

/// The published state of a session (`session.state` events, `mpm status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Spawned; the agent has not shown its prompt yet.
    Starting,
    /// The agent is working on a turn.
    Working,
    /// Waiting for the user's next prompt.
    Idle,
    /// A permission dialog or a question waits for the user.
    NeedsInput,
    /// A usage limit was reached (`resets_at` when shown).
    Blocked,
    /// The agent process ended.
    Exited,
}

impl SessionState {
    /// The contract's name of this state.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Starting => "starting",
            SessionState::Working => "working",
            SessionState::Idle => "idle",
            SessionState::NeedsInput => "needs_input",
            SessionState::Blocked => "blocked",
            SessionState::Exited => "exited",
        }
    }
}

/// How a batch of finished delegation results reached the main agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeedbackVia {
    /// claude's Stop hook blocked with the results as the reason.
    StopHook,
    /// Added as context to the user's next prompt (claude's UserPromptSubmit hook).
    NextPrompt,
    /// Typed into the PTY as one bracketed paste while the session was idle.
    Paste,
}

/// The identity of one delegation, shared by its queued/started/finished events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delegation {
    /// Unique id (UUID) of this delegation.
    pub delegation_id: String,
    /// The registry name of the agent that runs it.
    pub agent: String,
    /// The task, exactly as one argv element receives it.
    pub task: String,
}

/// How a delegation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DelegationStatus {
    /// The sub-agent exited 0 (and reported no error).
    Success,
    /// The sub-agent failed (non-zero exit, a lost worker, a spawn error); `reason` says why.
    Failed,
    /// The agent's timeout stopped it.
    Timeout,
    /// Stopped on request (the user, `top`, the end of the session).
    Cancelled,
    /// Never run: a cap, a budget, an unknown agent, a refused job; `reason` names it.
    Rejected,
}

impl DelegationStatus {
    /// The contract's string for this status.
    pub fn as_str(self) -> &'static str {
        match self {
            DelegationStatus::Success => "success",
            DelegationStatus::Failed => "failed",
            DelegationStatus::Timeout => "timeout",
            DelegationStatus::Cancelled => "cancelled",
            DelegationStatus::Rejected => "rejected",
        }
    }
}

/// Where a delegation is: queued, running, or ended with its final status. Written as one string
/// (`queued`, `running`, or the [`DelegationStatus`]), as the delegation records always were.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DelegationPhase {
    /// Waiting for a slot.
    Queued,
    /// Its sub-agent runs.
    Running,
    /// Finished, with this status.
    Ended(DelegationStatus),
}

impl DelegationPhase {
    /// The phase as the records write it.
    pub fn as_str(self) -> &'static str {
        match self {
            DelegationPhase::Queued => "queued",
            DelegationPhase::Running => "running",
            DelegationPhase::Ended(s) => s.as_str(),
        }
    }
}

impl std::fmt::Display for DelegationPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl PartialEq<&str> for DelegationPhase {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for DelegationPhase {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What the governor did about a breach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceAction {
    /// Nothing was done (a warning).
    None,
    /// The tree was sent SIGTERM (then SIGKILL after the grace period).
    Terminate,
    /// The tree was killed at once.
    Kill,
}

/// A resource figure for one supervised process tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    /// The tree's root pid.
    pub pid: u32,
    /// Resident memory of the whole tree, MB.
    pub rss_mb: f64,
    /// CPU of the whole tree, percent of one core.
    pub cpu_percent: f64,
    /// The threshold that was crossed (MB for memory, percent for CPU).
    pub threshold: f64,
    /// What the governor did.
    pub action: ResourceAction,
    /// `memory` or `cpu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The delegation this tree runs, when it is not the main session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation_id: Option<String>,
}

/// A synchronous consumer of events: called in emit order; must not block for long.
pub trait Sink: Send + Sync {
    /// Take one event (called in emit order on the emitting thread).
    fn write(&self, event: &Event);
    /// Take one shared event; [`Writer`] keeps the `Arc` instead of copying the event.
    fn write_shared(&self, event: &Arc<Event>) {
        self.write(event);
    }
    /// Wait until every event taken so far is written ([`Writer`]); synchronous sinks have nothing
    /// to wait for.
    fn flush(&self) {}
    /// Flush and release resources; called once when the bus closes.
    fn close(&self) {}
}

/// Called with every event (internal ones too) on the emitting thread, outside the bus's lock.
pub type Listener = Arc<dyn Fn(&Arc<Event>) + Send + Sync>;

enum WriterMsg {
    Event(Arc<Event>),
    Flush(crossbeam_channel::Sender<()>),
}

/// A sink on its own thread: `write` only queues the event (never blocks), the thread writes it to
/// the inner sink in order. The events file and the store are each one, so neither is ever on an
/// emitting thread's path and a slow one does not hold up the other.
///
/// The queue is unbounded on purpose: bounding it would either block the emitting thread when full
/// (the detection dispatcher waiting on SQLite again) or drop events from the record. Events come
/// at the pace agents write (a few per second; a burst of detections is hundreds), and the writer
/// drains thousands per second, so the queue stays short.
pub struct Writer {
    inner: Arc<dyn Sink>,
    tx: Mutex<Option<crossbeam_channel::Sender<WriterMsg>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Writer {
    /// Start a thread named `name` writing to `sink`.
    pub fn spawn(name: &str, sink: Arc<dyn Sink>) -> std::io::Result<Arc<Writer>> {
        let (tx, rx) = crossbeam_channel::unbounded::<WriterMsg>();
        let for_thread = sink.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                for msg in rx {
                    match msg {
                        WriterMsg::Event(e) => for_thread.write_shared(&e),
                        WriterMsg::Flush(done) => {
                            for_thread.flush();
                            let _ = done.send(());
                        }
                    }
                }
            })?;
        Ok(Arc::new(Writer {
            inner: sink,
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        }))
    }

    fn send(&self, msg: WriterMsg) -> bool {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        tx.as_ref().is_some_and(|tx| tx.send(msg).is_ok())
    }

    /// Stop the thread after it has written everything queued (the sink is not closed).
    pub fn stop(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread
            && t.join().is_err()
        {
            tracing::error!("an event writer panicked");
        }
    }
}

impl Sink for Writer {
    fn write(&self, event: &Event) {
        self.send(WriterMsg::Event(Arc::new(event.clone())));
    }

    fn write_shared(&self, event: &Arc<Event>) {
        self.send(WriterMsg::Event(event.clone()));
    }

    fn flush(&self) {
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        if self.send(WriterMsg::Flush(done_tx)) {
            // The thread answers after writing what was queued before; it only ends when stopped.
            let _ = done_rx.recv();
        }
    }

    fn close(&self) {
        self.flush();
        self.inner.close();
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The per-session context stamped on every event: session id and trace id.
#[derive(Debug, Clone)]
pub struct Context {
    /// The session id.
    pub session: String,
    /// The session's trace id.
    pub trace_id: String,
    /// The session's root step; events without a parent hang off it.
    pub root_step: String,
}

impl Context {
    /// A fresh context with new ids.
    pub fn new() -> Self {
        Context {
            session: new_id(),
            trace_id: new_id(),
            root_step: new_id(),
        }
    }

    /// A context for a given session id (the trace id is fresh).
    pub fn with_session(session: impl Into<String>) -> Self {
        Context {
            session: session.into(),
            trace_id: new_id(),
            root_step: new_id(),
        }
    }
}

impl Default for Context {
    fn default() -> Self {
        Self::new()
    }
}

struct BusInner {
    sinks: Vec<Arc<dyn Sink>>,
    subscribers: Vec<crossbeam_channel::Sender<Arc<Event>>>,
    listeners: Vec<Listener>,
    closed: bool,
}

/// Fan-out of events to sinks and subscribers. Cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct Bus {
    ctx: Arc<Context>,
    inner: Arc<Mutex<BusInner>>,
}

impl Bus {
    /// A bus for one session's events.
    pub fn new(ctx: Context) -> Self {
        Bus {
            ctx: Arc::new(ctx),
            inner: Arc::new(Mutex::new(BusInner {
                sinks: Vec::new(),
                subscribers: Vec::new(),
                listeners: Vec::new(),
                closed: false,
            })),
        }
    }

    /// The session context stamped on every event.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Add a synchronous sink (events file, store): it sees every event from now on.
    pub fn add_sink(&self, sink: Arc<dyn Sink>) {
        self.lock().sinks.push(sink);
    }

    /// Add a sink on its own thread (a [`Writer`] named `name`): for the slow ones (events file,
    /// store), so that no emitting thread waits on them. A writer that cannot start (no thread)
    /// is added as a synchronous sink.
    pub fn add_writer(&self, name: &str, sink: Arc<dyn Sink>) {
        match Writer::spawn(name, sink.clone()) {
            Ok(w) => self.add_sink(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start an event writer thread: writing in line");
                self.add_sink(sink);
            }
        }
    }

    /// Call `listener` with every event from now on (internal ones too), on the emitting thread
    /// after the bus's lock is released: lossless and in emit order per emitting thread, and the
    /// listener may emit in turn. It must not block: the executor's (`submit`) only queues.
    pub fn listen(&self, listener: Listener) {
        self.lock().listeners.push(listener);
    }

    /// Wait until every sink has written what was emitted so far (see [`Writer`]).
    pub fn flush(&self) {
        let sinks = self.lock().sinks.clone();
        for sink in &sinks {
            sink.flush();
        }
    }

    /// A receiver that gets every event emitted from now on, until it is dropped or the bus closes
    /// (not internal ones: see [`EventBody::is_internal`]).
    pub fn subscribe(&self) -> crossbeam_channel::Receiver<Arc<Event>> {
        let (tx, rx) = crossbeam_channel::unbounded();
        self.lock().subscribers.push(tx);
        rx
    }

    /// Stamp `body` with the session context (root step as parent) and emit it; returns the event.
    pub fn emit(&self, body: EventBody) -> Arc<Event> {
        self.emit_step(body, new_id(), Some(self.ctx.root_step.clone()))
    }

    /// Emit with an explicit step id and parent step (for delegations, whose events share a step).
    pub fn emit_step(
        &self,
        body: EventBody,
        step_id: String,
        parent_step_id: Option<String>,
    ) -> Arc<Event> {
        let event = Arc::new(Event {
            ts: now_ts(),
            session: self.ctx.session.clone(),
            trace_id: self.ctx.trace_id.clone(),
            step_id,
            parent_step_id,
            body,
        });
        self.publish(event.clone());
        event
    }

    /// Deliver an already stamped event (used by the daemon to relay events).
    pub fn publish(&self, event: Arc<Event>) {
        let listeners = {
            let mut inner = self.lock();
            if inner.closed {
                return;
            }
            if !event.body.is_internal() {
                for sink in &inner.sinks {
                    sink.write_shared(&event);
                }
                inner
                    .subscribers
                    .retain(|tx| tx.send(event.clone()).is_ok());
            }
            if inner.listeners.is_empty() {
                return;
            }
            inner.listeners.clone()
        };
        for l in &listeners {
            l(&event);
        }
    }

    /// Close every sink and drop every subscriber; later emits are ignored.
    pub fn close(&self) {
        let mut inner = self.lock();
        if inner.closed {
            return;
        }
        inner.closed = true;
        inner.subscribers.clear();
        inner.listeners.clear();
        let sinks = std::mem::take(&mut inner.sinks);
        drop(inner);
        // Outside the lock: a writer's close waits for its thread to drain.
        for sink in &sinks {
            sink.close();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BusInner> {
        // A panicking sink must not take the whole bus down with a poisoned lock.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Appends every event as one JSON line to a file, flushed per event (`--events-file`).
pub struct EventsFile {
    path: PathBuf,
    out: Mutex<BufWriter<File>>,
}

impl EventsFile {
    /// Open (append, create) the JSON-lines events file at `path`, creating its folder.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(EventsFile {
            path: path.to_path_buf(),
            out: Mutex::new(BufWriter::new(file)),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Sink for EventsFile {
    fn write(&self, event: &Event) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let line = event.to_json_line();
        if let Err(e) = writeln!(out, "{line}").and_then(|_| out.flush()) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot write events file");
        }
    }

    fn close(&self) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_started_has_contract_fields() {
        let bus = Bus::new(Context::with_session("s1"));
        let rx = bus.subscribe();
        bus.emit(EventBody::SessionStarted {
            command: vec!["claude".into()],
            pid: 42,
            cols: 80,
            rows: 24,
            governor_mode: None,
            feedback: None,
        });
        let ev = rx.try_recv().unwrap();
        let v: serde_json::Value = serde_json::from_str(&ev.to_json_line()).unwrap();
        assert_eq!(v["kind"], "session.started");
        assert_eq!(v["session"], "s1");
        for key in [
            "ts",
            "trace_id",
            "step_id",
            "parent_step_id",
            "command",
            "pid",
            "cols",
            "rows",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        let ts = v["ts"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok());
        assert_eq!(
            ts.len(),
            "2026-01-01T00:00:00.000Z".len(),
            "milliseconds: {ts}"
        );
    }

    #[test]
    fn delegation_finished_round_trips() {
        let body = EventBody::DelegationFinished {
            delegation: Delegation {
                delegation_id: "d".into(),
                agent: "qa".into(),
                task: "t".into(),
            },
            status: DelegationStatus::Timeout,
            exit_code: None,
            duration_ms: 5,
            output_path: None,
            reason: None,
            worker: None,
            result_path: None,
        };
        let ev = Event {
            ts: now_ts(),
            session: "s".into(),
            trace_id: "t".into(),
            step_id: "x".into(),
            parent_step_id: None,
            body,
        };
        let line = ev.to_json_line();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["kind"], "delegation.finished");
        assert_eq!(v["status"], "timeout");
        assert_eq!(v["delegation_id"], "d");
        assert!(v["parent_step_id"].is_null());
        let back: Event = serde_json::from_str(&line).unwrap();
        assert_eq!(back, ev);
    }

    #[test]
    fn events_file_appends_and_flushes_per_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/events.jsonl");
        let bus = Bus::new(Context::new());
        bus.add_sink(Arc::new(EventsFile::open(&path).unwrap()));
        bus.emit(EventBody::SessionExited {
            exit_code: Some(0),
            signal: None,
            duration_ms: 1,
            tap_overrun_bytes: 0,
        });
        // Flushed per event: readable before the bus closes.
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(text.contains("\"kind\":\"session.exited\""));
        bus.close();
        bus.emit(EventBody::SessionExited {
            exit_code: Some(0),
            signal: None,
            duration_ms: 1,
            tap_overrun_bytes: 0,
        });
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().lines().count(),
            1,
            "closed bus ignores emits"
        );
    }

    /// A sink that holds its writer until the test opens the gate (bounded: a test that goes wrong
    /// fails instead of hanging).
    struct Gated {
        gate: crossbeam_channel::Receiver<()>,
        seen: Mutex<Vec<String>>,
    }

    impl Sink for Gated {
        fn write(&self, event: &Event) {
            let _ = self.gate.recv_timeout(std::time::Duration::from_secs(60));
            self.seen
                .lock()
                .unwrap()
                .push(event.body.kind().to_string());
        }
    }

    fn state(s: SessionState) -> EventBody {
        EventBody::SessionState {
            state: s,
            previous: Some(SessionState::Starting),
            reason: "test".into(),
            resets_at: None,
        }
    }

    #[test]
    fn a_writer_keeps_a_slow_sink_off_the_emitting_thread_and_flush_waits_for_it() {
        let (open, gate) = crossbeam_channel::unbounded();
        let slow = Arc::new(Gated {
            gate,
            seen: Mutex::new(Vec::new()),
        });
        let bus = Bus::new(Context::new());
        bus.add_writer("mpm-test-writer", slow.clone());
        let rx = bus.subscribe();
        // The sink blocks on every event until the gate opens; emitting does not wait for it.
        for _ in 0..3 {
            bus.emit(state(SessionState::Working));
        }
        assert_eq!(rx.try_iter().count(), 3, "every emit returned");
        assert!(slow.seen.lock().unwrap().len() < 3);
        for _ in 0..3 {
            open.send(()).unwrap();
        }
        bus.flush();
        assert_eq!(
            slow.seen.lock().unwrap().len(),
            3,
            "flush waited for the writer"
        );
        bus.emit(state(SessionState::Idle));
        open.send(()).unwrap();
        bus.close();
        assert_eq!(
            slow.seen.lock().unwrap().len(),
            4,
            "close drained the writer"
        );
    }

    #[test]
    fn internal_events_reach_listeners_only_once_each_and_listeners_may_emit() {
        let bus = Bus::new(Context::new());
        let rx = bus.subscribe();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (for_listener, echo) = (seen.clone(), bus.clone());
        bus.listen(Arc::new(move |e| {
            for_listener.lock().unwrap().push(e.body.kind().to_string());
            if e.body.is_internal() {
                // A listener may emit (the executor's `delegation.queued`): no deadlock.
                echo.emit(state(SessionState::Working));
            }
        }));
        let d = Detection::delegation("qa", "check", "p", TextSource::Screen);
        let det = bus.emit(EventBody::Detection(d.clone()));
        let dispatch = bus.emit_step(
            EventBody::DetectionDispatch(d),
            new_id(),
            Some(det.step_id.clone()),
        );
        assert_eq!(
            dispatch.parent_step_id.as_deref(),
            Some(det.step_id.as_str())
        );
        assert_eq!(
            *seen.lock().unwrap(),
            ["detection", "detection.dispatch", "session.state"]
        );
        let public: Vec<&str> = rx.try_iter().map(|e| e.body.kind()).collect();
        assert_eq!(
            public,
            ["detection", "session.state"],
            "subscribers never see internal events"
        );
    }
}
