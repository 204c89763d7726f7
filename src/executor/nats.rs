//! The `nats` executor backend: delegations as jobs on a NATS JetStream work queue, run by
//! `mpm worker` processes on any machine (see [`crate::worker`]).
//!
//! Wire protocol (all JSON unless said otherwise; `P` = `executor.nats.subject_prefix`):
//! - `P.jobs.<agent>`: a [`Job`], published to the work-queue stream `executor.nats.stream` with
//!   the delegation id as `Nats-Msg-Id` (a re-publish within the stream's duplicate window is
//!   dropped by the server). A job names an agent and carries the task text; never an argv.
//! - `P.ev.<delegation id>` (core NATS, worker → supervisor): [`WorkerMsg`]s (`claimed`,
//!   `started`, `progress`, `heartbeat`, `rejected`, `finished`); output chunks are raw bytes with
//!   the header `Mpm-Stream: stdout|stderr|bundle`, in order, before `finished` (one connection
//!   keeps order).
//!   `claimed` is a request: the supervisor answers `go` (or `cancelled`); a supervisor that gave
//!   up on the delegation no longer listens, so a late or orphaned job never runs.
//! - `P.cancel.<delegation id>` (core NATS, supervisor → worker): empty; the worker stops the
//!   sub-agent's group at once (SIGTERM, grace, SIGKILL), then reports `finished` `cancelled`.
//!
//! Exactly once: each agent has one durable pull consumer (`agent-<name>`, filter `P.jobs.<name>`)
//! shared by every worker serving it, with **`max_deliver: 1`**, and a worker acknowledges a job
//! (waiting for the server's confirmation) *before* it runs it. JetStream therefore never hands a
//! job out twice, even when a worker dies between pulling and acking: that job is lost rather than
//! run twice, and the supervisor fails it when no `claimed` arrives within
//! `executor.nats.pickup_timeout_secs`. Redelivery plus de-duplication on workers was rejected:
//! workers do not share state, so a second worker cannot know the first one already started the
//! job, and sub-agents have side effects (commits, pushes) that must not happen twice. Workers also
//! drop ids they have seen (cheap belt and braces against a re-published job).
//!
//! Liveness: a worker sends a `heartbeat` every `heartbeat_secs` while it runs a job; silence for
//! `heartbeat_timeout_secs` makes the delegation `failed` ("worker W stopped responding"). A
//! cancellation (or the session ending) publishes on `P.cancel.<id>`, which reaches the worker in
//! one network round trip; an unclaimed job is deleted from the stream instead.

use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::{OnceCell, watch};

use super::backend::{Backend, OnStart, RunEnd, RunSpec};
use super::run::{self, AttemptEnd};
use crate::config::{BackendKind, Config, Isolation, NatsConfig};
use crate::worktree::{self, Outcome};

/// The supervisor's answers to a worker's `claimed` request.
pub const CLAIM_GO: &[u8] = b"go";
/// The supervisor no longer wants the job (cancelled, timed out, gone): do not run it.
pub const CLAIM_CANCELLED: &[u8] = b"cancelled";

/// Header naming the stream of an output chunk.
pub const STREAM_HEADER: &str = "Mpm-Stream";

/// A delegation as published for workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Protocol version (1).
    pub v: u32,
    /// The delegation's id.
    pub delegation_id: String,
    /// The session that delegated it.
    pub session: String,
    /// A registry name; the worker's own registry decides what runs.
    pub agent: String,
    /// The task text (one argv element on the worker).
    pub task: String,
    /// The supervisor's timeout for it; the worker uses the smaller of this and its own.
    pub timeout_secs: u64,
    /// Unix milliseconds after which no worker may start it (the supervisor gave up).
    pub expires_at_ms: u64,
    /// Where the work goes: the repository for `isolation: worktree` agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<RepoRef>,
    /// The nesting depth the sub-agent runs at (`MPM_DEPTH`), so that an mpm started inside it
    /// keeps the supervisor's depth budget. The only environment a job carries; a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<u32>,
}

/// A repository a worker fetches, by remote and commit. Credentials are the worker's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepoRef {
    /// A git remote (name or URL) the worker can fetch.
    pub remote: String,
    /// The base commit.
    pub commit: String,
}

/// How a job ended on the worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobEnd {
    /// The sub-agent exited.
    Exited {
        /// Its exit code.
        code: i32,
    },
    /// The timeout stopped it.
    TimedOut {
        /// The timeout that applied.
        timeout_secs: u64,
    },
    /// The supervisor cancelled it.
    Cancelled,
    /// It could not run or the worker lost it.
    Failed {
        /// Why.
        reason: String,
    },
}

/// Messages from the worker about one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMsg {
    /// The worker took the job and asks whether to run it (a request the supervisor answers).
    Claimed {
        /// The worker's name.
        worker: String,
    },
    /// An attempt's sub-agent was spawned.
    Started {
        /// The worker's name.
        worker: String,
        /// The sub-agent's pid on the worker.
        pid: u32,
        /// 1 for the first attempt, then each retry.
        attempt: u32,
    },
    /// The sub-agent's progress, read off its stream-json output on the worker by the same
    /// ticker as a local run's (at most one a second, only on a change); the supervisor emits it
    /// as `delegation.progress`.
    Progress {
        /// The worker's name.
        worker: String,
        /// The last tool the sub-agent called.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_tool: Option<String>,
        /// Tokens so far.
        tokens: u64,
        /// Since the sub-agent started.
        elapsed_ms: u64,
        /// No output and no CPU for `executor.stall_secs` (the worker's).
        stalled: bool,
    },
    /// The worker still runs the job (every `heartbeat_secs`).
    Heartbeat {
        /// The worker's name.
        worker: String,
    },
    /// The worker refused the job (an agent it does not serve, a job past its expiry).
    Rejected {
        /// The worker's name.
        worker: String,
        /// Why.
        reason: String,
    },
    /// The job ended on the worker.
    Finished {
        /// The worker's name.
        worker: String,
        /// How it ended.
        end: JobEnd,
        /// Attempts made.
        attempts: u32,
        /// From the first attempt to the end.
        duration_ms: u64,
        /// For an isolated delegation: the branch and its diff stat.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        worktree: Option<Outcome>,
    },
}

/// Subjects and names derived from the config.
#[derive(Debug, Clone)]
pub struct Names {
    /// The JetStream stream holding jobs.
    pub stream: String,
    /// The subject prefix.
    pub prefix: String,
}

impl Names {
    /// The names the config gives.
    pub fn new(cfg: &NatsConfig) -> Self {
        Names {
            stream: cfg.stream.clone(),
            prefix: cfg.subject_prefix.clone(),
        }
    }
    /// The subject jobs for `agent` are published on.
    pub fn job_subject(&self, agent: &str) -> String {
        format!("{}.jobs.{}", self.prefix, token(agent))
    }
    /// The subject a delegation's worker messages go to.
    pub fn events_subject(&self, id: &str) -> String {
        format!("{}.ev.{}", self.prefix, token(id))
    }
    /// The subject a delegation's cancellation is sent on.
    pub fn cancel_subject(&self, id: &str) -> String {
        format!("{}.cancel.{}", self.prefix, token(id))
    }
    /// The durable consumer all workers serving `agent` share.
    pub fn consumer(&self, agent: &str) -> String {
        format!("agent-{}", token(agent))
    }
}

/// A subject token: anything but `[A-Za-z0-9_-]` becomes `_` (no `.`, `*`, `>` or spaces).
pub fn token(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Connect with the config's credentials and TLS settings.
pub async fn connect(cfg: &NatsConfig, name: &str) -> Result<async_nats::Client, String> {
    let mut opts = async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5));
    if let Some(creds) = &cfg.creds {
        opts = opts
            .credentials_file(creds)
            .await
            .map_err(|e| format!("cannot read NATS credentials {}: {e}", creds.display()))?;
    }
    if let Some(ca) = &cfg.tls_ca {
        opts = opts.add_root_certificates(ca.clone());
    }
    match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(c), Some(k)) => opts = opts.add_client_certificate(c.clone(), k.clone()),
        (None, None) => {}
        _ => return Err("executor.nats: tls_cert and tls_key go together".into()),
    }
    if cfg.tls_required {
        opts = opts.require_tls(true);
    }
    // The client reports why a connection attempt failed (TLS, authorization) only as an event:
    // keep the last one for the error below.
    let last_error: std::sync::Arc<std::sync::Mutex<Option<String>>> = Default::default();
    let sink = last_error.clone();
    opts = opts.event_callback(move |ev| {
        let sink = sink.clone();
        async move {
            if let async_nats::Event::ClientError(e) = ev
                && let Ok(mut last) = sink.lock()
            {
                *last = Some(e.to_string());
            }
        }
    });
    // `retry_on_initial_connect` makes connect return at once; wait for the first connection so a
    // wrong URL is reported instead of hanging every delegation.
    let client = opts
        .connect(cfg.url.as_str())
        .await
        .map_err(|e| format!("cannot connect to NATS at {}: {e}", cfg.url))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.connection_state() != async_nats::connection::State::Connected {
        if Instant::now() >= deadline {
            let why = last_error.lock().ok().and_then(|l| l.clone());
            return Err(match why {
                Some(why) => format!("cannot connect to NATS at {}: {why}", cfg.url),
                None => format!("cannot connect to NATS at {}", cfg.url),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(client)
}

/// Create the work-queue stream when missing (same config from every side: idempotent).
pub async fn ensure_stream(
    js: &jetstream::Context,
    names: &Names,
) -> Result<jetstream::stream::Stream, String> {
    js.get_or_create_stream(jetstream::stream::Config {
        name: names.stream.clone(),
        subjects: vec![format!("{}.jobs.*", names.prefix)],
        retention: jetstream::stream::RetentionPolicy::WorkQueue,
        storage: jetstream::stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map_err(|e| format!("cannot open JetStream stream {}: {e}", names.stream))
}

/// The durable consumer of one agent's jobs (see the module docs for `max_deliver: 1`).
pub fn consumer_config(names: &Names, agent: &str) -> jetstream::consumer::pull::Config {
    jetstream::consumer::pull::Config {
        durable_name: Some(names.consumer(agent)),
        filter_subject: names.job_subject(agent),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        max_deliver: 1,
        ack_wait: Duration::from_secs(30),
        ..Default::default()
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The executor's remote backend for `executor.backend: nats`, else `None` (local).
pub(crate) fn backend_for(cfg: &Config) -> Result<Option<Arc<dyn Backend>>, String> {
    match cfg.executor.backend {
        BackendKind::Local => Ok(None),
        BackendKind::Nats => {
            if cfg.executor.nats.url.trim().is_empty() {
                return Err("executor.backend is nats but executor.nats.url is empty".into());
            }
            Ok(Some(Arc::new(NatsBackend::new(cfg.executor.nats.clone()))))
        }
    }
}

struct Conn {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
}

/// Publishes delegations and follows them to their end. Connects on first use.
pub struct NatsBackend {
    cfg: NatsConfig,
    names: Names,
    conn: OnceCell<Result<Conn, String>>,
}

impl NatsBackend {
    /// A backend for this connection config; connects on first use.
    pub fn new(cfg: NatsConfig) -> Self {
        NatsBackend {
            names: Names::new(&cfg),
            cfg,
            conn: OnceCell::new(),
        }
    }

    async fn conn(&self) -> Result<&Conn, String> {
        self.conn
            .get_or_init(|| async {
                let client = connect(&self.cfg, "mpm-supervisor").await?;
                let js = jetstream::new(client.clone());
                let stream = ensure_stream(&js, &self.names).await?;
                Ok(Conn { client, js, stream })
            })
            .await
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The job's repository for an isolated agent: remote URL and the checkout's HEAD.
    fn repo_ref(&self, spec: &RunSpec) -> Result<Option<RepoRef>, String> {
        if spec.agent.isolation != Isolation::Worktree {
            return Ok(None);
        }
        let src = super::backend::local_source(&spec.agent, None);
        let top = worktree::toplevel(&src.repo).map_err(|e| e.to_string())?;
        let commit = worktree::git(&top, &["rev-parse", "HEAD"])
            .map_err(|e| e.to_string())?
            .trim()
            .to_string();
        let r = &self.cfg.git_remote;
        let remote = if r.contains('/') || r.contains(':') {
            r.clone()
        } else {
            worktree::git(&top, &["remote", "get-url", r])
                .map_err(|e| format!("isolation: worktree on workers needs git remote {r:?}: {e}"))?
                .trim()
                .to_string()
        };
        Ok(Some(RepoRef { remote, commit }))
    }

    async fn run_job(
        &self,
        spec: RunSpec,
        mut cancel: watch::Receiver<bool>,
        mut on_start: OnStart<'_>,
    ) -> RunEnd {
        let fail = |why: String, worker: Option<String>, rejected: bool| RunEnd {
            end: AttemptEnd::SpawnFailed(why.clone()),
            attempts: 0,
            worker,
            worktree: None,
            rejected: rejected.then_some(why),
        };
        let conn = match self.conn().await {
            Ok(c) => c,
            Err(e) => return fail(e, None, false),
        };
        let repo = match self.repo_ref(&spec) {
            Ok(r) => r,
            Err(e) => return fail(e, None, true),
        };
        // A job for an agent no worker ever served would wait for nothing: refuse it now.
        let consumer = self.names.consumer(&spec.agent.name);
        if let Err(e) = conn.stream.consumer_info(&consumer).await {
            return fail(
                format!(
                    "no worker serves agent {} (no consumer {consumer} on stream {}): {e}",
                    spec.agent.name, self.names.stream
                ),
                None,
                true,
            );
        }
        let pickup = Duration::from_secs(self.cfg.pickup_timeout_secs.max(1));
        let job = Job {
            v: 1,
            delegation_id: spec.delegation_id.clone(),
            session: spec.session.clone(),
            agent: spec.agent.name.clone(),
            task: spec.task.clone(),
            timeout_secs: spec.agent.timeout_secs,
            expires_at_ms: now_ms() + pickup.as_millis() as u64,
            repo,
            depth: spec
                .extra_env
                .iter()
                .find(|(k, _)| k == super::budget::DEPTH_VAR)
                .and_then(|(_, v)| v.parse().ok()),
        };
        let mut sub = match conn
            .client
            .subscribe(self.names.events_subject(&spec.delegation_id))
            .await
        {
            Ok(s) => s,
            Err(e) => return fail(format!("cannot subscribe for results: {e}"), None, false),
        };
        let payload = match serde_json::to_vec(&job) {
            Ok(p) => p,
            Err(e) => return fail(format!("cannot encode the job: {e}"), None, false),
        };
        let published = conn
            .js
            .send_publish(
                self.names.job_subject(&spec.agent.name),
                jetstream::message::PublishMessage::build()
                    .payload(payload.into())
                    .message_id(&spec.delegation_id),
            )
            .await;
        let seq = match published {
            Ok(ack) => match ack.await {
                Ok(a) => a.sequence,
                Err(e) => {
                    return fail(format!("JetStream did not store the job: {e}"), None, false);
                }
            },
            Err(e) => return fail(format!("cannot publish the job: {e}"), None, false),
        };
        tracing::debug!(delegation = %spec.delegation_id, seq, "job published");

        let mut out = Sink::new(spec.stdout_path.clone(), spec.stderr_path.clone());
        let published_at = Instant::now();
        let hb_timeout = Duration::from_secs(self.cfg.heartbeat_timeout_secs.max(1));
        let mut worker: Option<String> = None;
        let mut last_word = Instant::now();
        let mut attempts = 0u32;
        let mut cancel_sent: Option<Instant> = None;
        let mut guard = None;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                msg = sub.next() => {
                    let Some(msg) = msg else {
                        return fail("NATS subscription closed".into(), worker, false);
                    };
                    last_word = Instant::now();
                    if let Some(stream) = msg.headers.as_ref().and_then(|h| h.get(STREAM_HEADER)) {
                        out.write(stream.as_str(), &msg.payload);
                        continue;
                    }
                    let Ok(m) = serde_json::from_slice::<WorkerMsg>(&msg.payload) else {
                        tracing::warn!(delegation = %spec.delegation_id, "unreadable worker message");
                        continue;
                    };
                    match m {
                        WorkerMsg::Claimed { worker: w } => {
                            let answer = if cancel_sent.is_some() { CLAIM_CANCELLED } else { CLAIM_GO };
                            if let Some(reply) = &msg.reply {
                                let _ = conn.client.publish(reply.clone(), answer.to_vec().into()).await;
                            }
                            if cancel_sent.is_some() {
                                // Declined: the worker runs nothing; the cancellation is complete.
                                return RunEnd { end: AttemptEnd::Cancelled, attempts: 0, worker: Some(w), worktree: None, rejected: None };
                            }
                            tracing::debug!(delegation = %spec.delegation_id, worker = %w, "claimed");
                            worker = Some(w);
                        }
                        WorkerMsg::Started { worker: w, pid, attempt } => {
                            attempts = attempts.max(attempt);
                            guard = on_start(pid, Some(&w));
                            worker = Some(w);
                        }
                        WorkerMsg::Heartbeat { .. } => {}
                        WorkerMsg::Progress { last_tool, tokens, elapsed_ms, stalled, .. } => {
                            if let Some(m) = &spec.progress {
                                (m.sink)(super::progress::Progress {
                                    last_tool,
                                    tokens,
                                    elapsed: Duration::from_millis(elapsed_ms),
                                    stalled,
                                });
                            }
                        }
                        WorkerMsg::Rejected { worker: w, reason } => {
                            return fail(format!("worker {w} rejected it: {reason}"), Some(w), true);
                        }
                        WorkerMsg::Finished { worker: w, end, attempts: n, worktree, .. } => {
                            drop(guard);
                            let end = match end {
                                JobEnd::Exited { code } => AttemptEnd::Exited(code),
                                JobEnd::TimedOut { .. } => AttemptEnd::TimedOut,
                                // Not asked for: the worker itself was stopped.
                                JobEnd::Cancelled if cancel_sent.is_none() => AttemptEnd::SpawnFailed(
                                    format!("worker {w} was stopped and cancelled it"),
                                ),
                                JobEnd::Cancelled => AttemptEnd::Cancelled,
                                JobEnd::Failed { reason } => AttemptEnd::SpawnFailed(reason),
                            };
                            return RunEnd { end, attempts: n, worker: Some(w), worktree, rejected: None };
                        }
                    }
                }
                _ = run::cancelled(&mut cancel), if cancel_sent.is_none() => {
                    cancel_sent = Some(Instant::now());
                    let _ = conn.client.publish(self.names.cancel_subject(&spec.delegation_id), "".into()).await;
                    let _ = conn.client.flush().await;
                    if worker.is_none() && matches!(conn.stream.delete_message(seq).await, Ok(true)) {
                        // Nobody took it: gone from the queue, nothing ran.
                        return RunEnd { end: AttemptEnd::Cancelled, attempts: 0, worker: None, worktree: None, rejected: None };
                    }
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    if worker.is_none() && now.duration_since(published_at) >= pickup {
                        if matches!(conn.stream.delete_message(seq).await, Ok(true)) {
                            return fail(format!("no worker took it within {}s", pickup.as_secs()), None, false);
                        }
                        // Gone from the queue: a worker acked it and its `claimed` is on the way;
                        // from now on the heartbeat rule decides.
                        worker = Some("(unknown worker)".into());
                        last_word = now;
                    }
                    if let Some(w) = &worker && now.duration_since(last_word) >= hb_timeout {
                        return fail(
                            format!("worker {w} stopped responding (no heartbeat for {}s)", hb_timeout.as_secs()),
                            worker.clone(),
                            false,
                        );
                    }
                    if let Some(at) = cancel_sent && now.duration_since(at) >= spec.grace + hb_timeout {
                        return RunEnd { end: AttemptEnd::Cancelled, attempts, worker, worktree: None, rejected: None };
                    }
                }
            }
        }
    }
}

impl Backend for NatsBackend {
    fn run<'a>(
        &'a self,
        spec: RunSpec,
        cancel: watch::Receiver<bool>,
        on_start: OnStart<'a>,
    ) -> Pin<Box<dyn Future<Output = RunEnd> + Send + 'a>> {
        Box::pin(self.run_job(spec, cancel, on_start))
    }
}

/// The supervisor's copy of a remote delegation's output: `<id>.stdout` / `<id>.stderr`, each
/// created on its first byte (like the local backend's).
struct Sink {
    paths: [PathBuf; 3],
    files: [Option<std::fs::File>; 3],
}

impl Sink {
    fn new(stdout: PathBuf, stderr: PathBuf) -> Self {
        let bundle = stdout.with_extension("bundle");
        Sink {
            paths: [stdout, stderr, bundle],
            files: [None, None, None],
        }
    }

    /// Append a chunk of `stream` (`stdout`, `stderr` or `bundle`: the result branch as a git
    /// bundle, from a worker that could not push it).
    fn write(&mut self, stream: &str, bytes: &[u8]) {
        let i = match stream {
            "stdout" => 0,
            "stderr" => 1,
            "bundle" => 2,
            _ => return,
        };
        if self.files[i].is_none() {
            match std::fs::File::create(&self.paths[i]) {
                Ok(f) => self.files[i] = Some(f),
                Err(e) => {
                    tracing::warn!(path = %self.paths[i].display(), error = %e, "cannot save delegation output");
                    return;
                }
            }
        }
        if let Some(f) = &mut self.files[i]
            && let Err(e) = f.write_all(bytes)
        {
            tracing::warn!(path = %self.paths[i].display(), error = %e, "cannot save delegation output");
        }
    }
}

/// Where a worker keeps a mirror of `remote`.
pub fn mirror_path(root: &Path, remote: &str) -> PathBuf {
    root.join(format!("{}.git", token(remote)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_single_tokens() {
        let n = Names::new(&NatsConfig::default());
        assert_eq!(n.job_subject("qa engineer"), "mpm.jobs.qa_engineer");
        assert_eq!(n.events_subject("a.b>*"), "mpm.ev.a_b__");
        assert_eq!(n.consumer("x.y"), "agent-x_y");
    }

    #[test]
    fn job_round_trips_and_carries_no_argv() {
        let job = Job {
            v: 1,
            delegation_id: "d".into(),
            session: "s".into(),
            agent: "qa".into(),
            task: "--rm -rf".into(),
            timeout_secs: 5,
            expires_at_ms: 1,
            repo: None,
            depth: Some(2),
        };
        let text = serde_json::to_string(&job).unwrap();
        assert!(!text.contains("argv"));
        assert_eq!(serde_json::from_str::<Job>(&text).unwrap(), job);
        let m = WorkerMsg::Finished {
            worker: "w".into(),
            end: JobEnd::Exited { code: 3 },
            attempts: 1,
            duration_ms: 2,
            worktree: None,
        };
        let text = serde_json::to_string(&m).unwrap();
        assert!(text.contains("\"type\":\"finished\"") && text.contains("\"kind\":\"exited\""));
        assert_eq!(serde_json::from_str::<WorkerMsg>(&text).unwrap(), m);
        let m = WorkerMsg::Progress {
            worker: "w".into(),
            last_tool: Some("Bash".into()),
            tokens: 15,
            elapsed_ms: 1200,
            stalled: false,
        };
        let text = serde_json::to_string(&m).unwrap();
        assert!(text.contains("\"type\":\"progress\""), "{text}");
        assert_eq!(serde_json::from_str::<WorkerMsg>(&text).unwrap(), m);
    }
}
