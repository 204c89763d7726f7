//! `mpm worker`: runs delegations pulled from NATS JetStream (the `nats` executor backend's other
//! half; protocol and the exactly-once choice in [`crate::executor::nats`]).
//!
//! A worker serves the agents of **its own** registry (its config; `--agents` narrows it): a job
//! names an agent and carries the task text, and the worker builds the argv from its own template
//! with the task as one element, exactly like the local backend ([`backend::run_attempts`]: same
//! argv building, `MPM_*` environment, per-attempt timeout, retries, process-group stop, rlimits).
//! For each agent it pulls from the durable consumer `agent-<name>`, so every worker serving an
//! agent shares its queue and jobs spread over them.
//!
//! Parallelism: at most `--max-parallel` jobs at once (default `executor.max_parallel`), and at most
//! the agent's `max_parallel` per agent. A permit is taken *before* a job is pulled, so a busy
//! worker leaves jobs in the queue for idle ones.
//!
//! Per job: ack (confirmed by the server) → `claimed` → heartbeats every `heartbeat_secs` →
//! (worktree) → `started` per attempt → output chunks (the output files are followed every
//! [`TAIL_EVERY`]) → `finished`. A job past its `expires_at_ms` (the supervisor gave up on it) or
//! naming an agent this worker does not serve is `rejected`, and nothing runs.
//!
//! Repository: for an agent with `isolation: worktree` the job carries a remote and a commit. The
//! worker keeps a mirror per remote under `<state>/mirrors/` (`git clone --mirror`, then
//! `git fetch` per job, serialised), runs the delegation in a worktree of that commit, and pushes
//! the result branch to the remote; when the push fails it sends a `git bundle` of the branch back
//! instead (the supervisor saves `<id>.bundle`). Git uses the worker's own credentials (ssh agent,
//! credential helpers, environment); a job never carries any.
//!
//! Stop (SIGTERM/SIGINT): no new pulls; running jobs are cancelled (their groups stopped) and
//! reported to the supervisor (which records `failed`: "worker W was stopped"); then the worker exits.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures_util::StreamExt as _;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::config::{Config, Isolation, NatsConfig};
use crate::executor::backend::{self, RunSpec};
use crate::executor::nats::{
    self as wire, Job, JobEnd, Names, STREAM_HEADER, WorkerMsg, consumer_config,
};
use crate::executor::run::AttemptEnd;
use crate::executor::{Agent, AgentRegistry};
use crate::worktree::{self, Outcome, Source};

/// How often a running job's output files are read for new bytes.
pub(crate) const TAIL_EVERY: Duration = Duration::from_millis(50);
/// Largest output chunk per message (well under NATS's default 1 MiB payload limit).
const CHUNK: usize = 256 << 10;

/// Errors starting a worker.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WorkerError {
    #[error("{0}")]
    Nats(String),
    #[error("agent {0:?} is not in this worker's registry (known: {1})")]
    UnknownAgent(String, String),
    #[error("no agent to serve: {0}")]
    NoAgents(String),
    #[error("cannot start a thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error(transparent)]
    Governor(#[from] crate::governor::GovernorError),
    #[error("cannot create {}: {source}", path.display())]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a worker runs with.
#[derive(Debug, Clone)]
pub(crate) struct WorkerOptions {
    pub nats: NatsConfig,
    /// Shown in events (`delegation.finished.worker`); default `<hostname>-<pid>`.
    pub name: String,
    /// Agents to serve; empty = every valid agent of the registry.
    pub agents: Vec<String>,
    pub max_parallel: usize,
    /// Output, mirrors and worktrees of this worker.
    pub state_dir: PathBuf,
    /// Grace between SIGTERM and SIGKILL when stopping a sub-agent.
    pub grace: Duration,
}

impl WorkerOptions {
    /// Defaults from the config: its NATS settings, `executor.max_parallel`, `run.grace_secs`,
    /// `<state dir>/worker`.
    pub(crate) fn from_config(cfg: &Config) -> Self {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "worker".into());
        WorkerOptions {
            nats: cfg.executor.nats.clone(),
            name: format!("{host}-{}", std::process::id()),
            agents: Vec::new(),
            max_parallel: cfg.executor.max_parallel.max(1),
            state_dir: crate::config::paths::state_dir().join("worker"),
            grace: cfg.run.grace(),
        }
    }
}

struct Ctx {
    opts: WorkerOptions,
    cfg: Config,
    names: Names,
    client: async_nats::Client,
    slots: Arc<Semaphore>,
    seen: Mutex<HashSet<String>>,
    /// Serialises mirror updates (one `git fetch` per mirror at a time).
    mirrors: tokio::sync::Mutex<()>,
    stop: watch::Receiver<bool>,
    /// The same resource governor as a session's: every sub-agent tree is watched against
    /// `limits` (the agent's own overrides applied); its events go to the worker's log.
    governor: crate::governor::Governor,
    bus: crate::events::Bus,
}

/// Serve until `stop` flips to true. `ready` is called once every consumer exists, with the
/// agents served.
pub(crate) async fn run(
    cfg: Config,
    opts: WorkerOptions,
    stop: watch::Receiver<bool>,
    ready: impl FnOnce(&[String]),
) -> Result<(), WorkerError> {
    let registry = AgentRegistry::from_config(&cfg);
    let known = || {
        registry
            .agents()
            .map(|a| a.name.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut served: Vec<Agent> = Vec::new();
    if opts.agents.is_empty() {
        served.extend(registry.agents().filter(|a| a.invalid.is_none()).cloned());
    } else {
        for name in &opts.agents {
            let Some(a) = registry.lookup(name).and_then(|n| registry.get(n)) else {
                return Err(WorkerError::UnknownAgent(name.clone(), known()));
            };
            if let Some(why) = &a.invalid {
                return Err(WorkerError::NoAgents(format!("agent {name}: {why}")));
            }
            served.push(a.clone());
        }
    }
    if served.is_empty() {
        return Err(WorkerError::NoAgents(
            "the registry has no valid agent".into(),
        ));
    }
    for sub in ["jobs", "mirrors", "worktrees"] {
        let path = opts.state_dir.join(sub);
        std::fs::create_dir_all(&path).map_err(|source| WorkerError::StateDir { path, source })?;
    }
    let client = wire::connect(&opts.nats, &format!("mpm-worker {}", opts.name))
        .await
        .map_err(WorkerError::Nats)?;
    let js = jetstream::new(client.clone());
    let names = Names::new(&opts.nats);
    let stream = wire::ensure_stream(&js, &names)
        .await
        .map_err(WorkerError::Nats)?;
    let mut consumers = Vec::new();
    for agent in &served {
        let c = stream
            .get_or_create_consumer(
                &names.consumer(&agent.name),
                consumer_config(&names, &agent.name),
            )
            .await
            .map_err(|e| {
                WorkerError::Nats(format!(
                    "cannot open the consumer of agent {}: {e}",
                    agent.name
                ))
            })?;
        consumers.push((agent.clone(), c));
    }
    let governor = crate::governor::Governor::start(&cfg.limits, opts.grace)?;
    let bus = crate::events::Bus::new(crate::events::Context::with_session(format!(
        "worker-{}",
        opts.name
    )));
    let resource_events = bus.subscribe();
    std::thread::Builder::new()
        .name("mpm-worker-log".into())
        .spawn(move || {
            for ev in resource_events {
                tracing::info!(event = %ev.to_json_line(), "governor");
            }
        })
        .map_err(WorkerError::Thread)?;
    let ctx = Arc::new(Ctx {
        governor,
        bus,
        slots: Arc::new(Semaphore::new(opts.max_parallel.max(1))),
        opts,
        cfg,
        names,
        client: client.clone(),
        seen: Mutex::new(HashSet::new()),
        mirrors: tokio::sync::Mutex::new(()),
        stop: stop.clone(),
    });
    let served_names: Vec<String> = served.iter().map(|a| a.name.clone()).collect();
    tracing::info!(worker = %ctx.opts.name, agents = ?served_names, "worker ready");
    ready(&served_names);
    let mut loops = tokio::task::JoinSet::new();
    for (agent, consumer) in consumers {
        loops.spawn(pull_loop(ctx.clone(), agent, consumer));
    }
    while loops.join_next().await.is_some() {}
    let _ = client.flush().await;
    Ok(())
}

/// Pull one agent's jobs while a slot is free; each job runs on its own task.
async fn pull_loop(
    ctx: Arc<Ctx>,
    agent: Agent,
    consumer: jetstream::consumer::Consumer<jetstream::consumer::pull::Config>,
) {
    let agent_slots = agent
        .max_parallel
        .map(|m| Arc::new(Semaphore::new(m.max(1))));
    let mut stop = ctx.stop.clone();
    let mut jobs = tokio::task::JoinSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let agent_permit = match &agent_slots {
            Some(s) => tokio::select! {
                p = s.clone().acquire_owned() => p.ok(),
                _ = stop.wait_for(|s| *s) => break,
            },
            None => None,
        };
        let permit = tokio::select! {
            p = ctx.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.wait_for(|s| *s) => break,
        };
        let batch = consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_secs(1))
            .messages()
            .await;
        let msg = match batch {
            Ok(mut b) => tokio::select! {
                m = b.next() => m,
                _ = stop.wait_for(|s| *s) => break,
            },
            Err(e) => {
                tracing::warn!(agent = %agent.name, error = %e, "fetch failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        match msg {
            Some(Ok(msg)) => {
                let (ctx, agent) = (ctx.clone(), agent.clone());
                jobs.spawn(async move {
                    handle(ctx, agent, msg).await;
                    drop((permit, agent_permit));
                });
            }
            Some(Err(e)) => tracing::debug!(agent = %agent.name, error = %e, "fetch ended"),
            None => {}
        }
        // Reap finished job tasks without waiting.
        while jobs.try_join_next().is_some() {}
    }
    while jobs.join_next().await.is_some() {}
}

/// Everything a job sends, in order, through one publisher task.
enum Out {
    Msg(WorkerMsg),
    Chunk(&'static str, Vec<u8>),
}

async fn publisher(
    client: async_nats::Client,
    subject: String,
    mut rx: mpsc::UnboundedReceiver<Out>,
) {
    while let Some(o) = rx.recv().await {
        let res = match o {
            Out::Msg(m) => match serde_json::to_vec(&m) {
                Ok(b) => client.publish(subject.clone(), b.into()).await,
                Err(_) => Ok(()),
            },
            Out::Chunk(stream, bytes) => {
                let mut h = async_nats::HeaderMap::new();
                h.insert(STREAM_HEADER, stream);
                client
                    .publish_with_headers(subject.clone(), h, bytes.into())
                    .await
            }
        };
        if let Err(e) = res {
            tracing::warn!(error = %e, "cannot publish to the supervisor");
        }
    }
    let _ = client.flush().await;
}

async fn handle(ctx: Arc<Ctx>, served: Agent, msg: jetstream::Message) {
    let job: Job = match serde_json::from_slice(&msg.payload) {
        Ok(j) => j,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable job dropped");
            let _ = msg.ack_with(jetstream::AckKind::Term).await;
            return;
        }
    };
    // Acknowledge before running, confirmed by the server: with `max_deliver: 1` the job can never
    // be handed to anyone again (see `executor::nats`). No confirmation: do not run it.
    if let Err(e) = msg.double_ack().await {
        tracing::warn!(delegation = %job.delegation_id, error = %e, "cannot acknowledge the job; not running it");
        return;
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let publish = tokio::spawn(publisher(
        ctx.client.clone(),
        ctx.names.events_subject(&job.delegation_id),
        rx,
    ));
    run_job(&ctx, &served, job, &tx).await;
    drop(tx);
    let _ = publish.await;
}

async fn run_job(ctx: &Ctx, served: &Agent, job: Job, tx: &mpsc::UnboundedSender<Out>) {
    let worker = ctx.opts.name.clone();
    let id = job.delegation_id.clone();
    let reject = |reason: String| {
        tracing::info!(delegation = %id, %reason, "job rejected");
        let _ = tx.send(Out::Msg(WorkerMsg::Rejected {
            worker: worker.clone(),
            reason,
        }));
    };
    {
        let mut seen = ctx.seen.lock().unwrap_or_else(|e| e.into_inner());
        if !seen.insert(id.clone()) {
            tracing::warn!(delegation = %id, "job seen before on this worker; not running it twice");
            return;
        }
    }
    if wire::now_ms() > job.expires_at_ms {
        return reject("expired before a worker took it".into());
    }
    // The subject named this worker's agent; the body must name the same one.
    if job.agent != served.name {
        return reject(format!(
            "this worker does not serve agent {:?} (job on the queue of {})",
            job.agent, served.name
        ));
    }
    // Claim it with a request: only a supervisor still waiting for this delegation answers `go`.
    // One that gave up (cancelled, pickup timeout, exited) no longer listens, so nothing runs.
    match claim(ctx, &id, &worker).await {
        Ok(()) => {}
        Err(why) => {
            tracing::info!(delegation = %id, %why, "job not claimed; not running it");
            return;
        }
    }
    let started = Instant::now();
    // Heartbeats until the job ends.
    let hb_tx = tx.clone();
    let hb_worker = worker.clone();
    let every = Duration::from_secs(ctx.opts.nats.heartbeat_secs.max(1));
    let heartbeat = tokio::spawn(async move {
        let mut t = tokio::time::interval(every);
        loop {
            t.tick().await;
            if hb_tx
                .send(Out::Msg(WorkerMsg::Heartbeat {
                    worker: hb_worker.clone(),
                }))
                .is_err()
            {
                break;
            }
        }
    });
    // Cancellation: the job's cancel subject, or the worker stopping.
    let (cancel_tx, mut cancel) = watch::channel(false);
    let cancel_task = match ctx.client.subscribe(ctx.names.cancel_subject(&id)).await {
        Ok(mut sub) => {
            let mut stop = ctx.stop.clone();
            let ctx_tx = cancel_tx.clone();
            Some(tokio::spawn(async move {
                tokio::select! {
                    _ = sub.next() => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
                ctx_tx.send_replace(true);
            }))
        }
        Err(e) => {
            tracing::warn!(delegation = %id, error = %e, "cannot subscribe for cancellation");
            None
        }
    };
    let _ = ctx.client.flush().await;

    let mut agent = served.clone();
    agent.timeout_secs = agent.timeout_secs.min(job.timeout_secs.max(1));
    let jobs_dir = ctx.opts.state_dir.join("jobs");
    let stdout_path = jobs_dir.join(format!("{}.stdout", wire::token(&id)));
    let stderr_path = jobs_dir.join(format!("{}.stderr", wire::token(&id)));
    let spec = RunSpec {
        base_env: None,
        delegation_id: id.clone(),
        session: job.session.clone(),
        agent: agent.clone(),
        task: crate::executor::argv::clean_task(&job.task),
        stdout_path: stdout_path.clone(),
        stderr_path: stderr_path.clone(),
        grace: ctx.opts.grace,
        extra_env: job
            .depth
            .map(|d| {
                (
                    crate::executor::budget::DEPTH_VAR.to_string(),
                    d.to_string(),
                )
            })
            .into_iter()
            .collect(),
        max_output_bytes: ctx.cfg.executor.max_output_bytes,
        // The local backend's ticker (stream-json → progress, at most 1/s, on a change), sent to
        // the supervisor, which emits `delegation.progress`.
        progress: Some(crate::executor::progress::Monitor {
            sink: {
                let (tx, worker) = (tx.clone(), worker.clone());
                Arc::new(move |p: crate::executor::progress::Progress| {
                    let _ = tx.send(Out::Msg(WorkerMsg::Progress {
                        worker: worker.clone(),
                        last_tool: p.last_tool,
                        tokens: p.tokens,
                        elapsed_ms: u64::try_from(p.elapsed.as_millis()).unwrap_or(u64::MAX),
                        stalled: p.stalled,
                    }));
                })
            },
            stall: Duration::from_secs(ctx.cfg.executor.stall_secs),
        }),
    };

    let prepared = prepare_worktree(ctx, &agent, &job).await;
    let (end, attempts, outcome) = match prepared {
        Err(reason) => (JobEnd::Failed { reason }, 0, None),
        Ok(wt) => {
            let cwd = wt
                .as_ref()
                .map(|w| w.path.clone())
                .or_else(|| agent.cwd.clone());
            let (tail_stop, tail_rx) = watch::channel(false);
            let tail = tokio::spawn(tail_outputs(
                [stdout_path.clone(), stderr_path.clone()],
                tx.clone(),
                tail_rx,
            ));
            let start_tx = tx.clone();
            let mut attempt = 0;
            let (end, attempts) = backend::run_attempts(&spec, cwd, &mut cancel, |pid| {
                attempt += 1;
                let _ = start_tx.send(Out::Msg(WorkerMsg::Started {
                    worker: worker.clone(),
                    pid,
                    attempt,
                }));
                let limits = crate::governor::resolve_limits(
                    &ctx.cfg.limits,
                    ctx.cfg
                        .agents
                        .get(&agent.name)
                        .and_then(|a| a.limits.as_ref()),
                );
                let watch = ctx
                    .governor
                    .watch(pid, limits, ctx.bus.clone(), Some(id.clone()));
                Some(Box::new(watch) as crate::executor::SpawnGuard)
            })
            .await;
            tail_stop.send_replace(true);
            let _ = tail.await;
            let outcome = match wt {
                Some(wt) => finish_worktree(ctx, &agent, &job, wt, &id, tx).await,
                None => None,
            };
            let end = match end {
                AttemptEnd::Exited(code) => JobEnd::Exited { code },
                AttemptEnd::TimedOut => JobEnd::TimedOut {
                    timeout_secs: agent.timeout_secs,
                },
                AttemptEnd::Cancelled => JobEnd::Cancelled,
                AttemptEnd::SpawnFailed(reason) => JobEnd::Failed { reason },
            };
            (end, attempts, outcome)
        }
    };
    heartbeat.abort();
    if let Some(t) = cancel_task {
        t.abort();
    }
    tracing::info!(delegation = %id, agent = %agent.name, ?end, "job finished");
    let _ = tx.send(Out::Msg(WorkerMsg::Finished {
        worker,
        end,
        attempts,
        duration_ms: started.elapsed().as_millis() as u64,
        worktree: outcome,
    }));
    for p in [&stdout_path, &stderr_path] {
        let _ = std::fs::remove_file(p);
    }
}

/// How long a worker waits for the supervisor's answer to a claim.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(5);

/// Ask the supervisor whether the job is still wanted.
async fn claim(ctx: &Ctx, id: &str, worker: &str) -> Result<(), String> {
    let body = serde_json::to_vec(&WorkerMsg::Claimed {
        worker: worker.to_string(),
    })
    .map_err(|e| e.to_string())?;
    let reply = tokio::time::timeout(
        CLAIM_TIMEOUT,
        ctx.client
            .request(ctx.names.events_subject(id), body.into()),
    )
    .await
    .map_err(|_| "the supervisor did not answer the claim".to_string())?
    .map_err(|e| format!("the supervisor is gone: {e}"))?;
    match &reply.payload[..] {
        wire::CLAIM_GO => Ok(()),
        other => Err(format!(
            "the supervisor declined: {}",
            String::from_utf8_lossy(other)
        )),
    }
}

/// Follow the output files and send what is new; a last read after `stop`.
async fn tail_outputs(
    paths: [PathBuf; 2],
    tx: mpsc::UnboundedSender<Out>,
    mut stop: watch::Receiver<bool>,
) {
    let mut offsets = [0u64; 2];
    loop {
        let last = *stop.borrow();
        for (i, p) in paths.iter().enumerate() {
            send_new(
                p,
                &mut offsets[i],
                if i == 0 { "stdout" } else { "stderr" },
                &tx,
            );
        }
        if last {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(TAIL_EVERY) => {}
            _ = stop.changed() => {}
        }
    }
}

fn send_new(path: &Path, offset: &mut u64, stream: &'static str, tx: &mpsc::UnboundedSender<Out>) {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return;
    };
    if f.seek(SeekFrom::Start(*offset)).is_err() {
        return;
    }
    let mut buf = vec![0u8; CHUNK];
    loop {
        match f.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                *offset += n as u64;
                let _ = tx.send(Out::Chunk(stream, buf[..n].to_vec()));
            }
        }
    }
}

/// The job's worktree in this worker's mirror, for an isolated agent.
async fn prepare_worktree(
    ctx: &Ctx,
    agent: &Agent,
    job: &Job,
) -> Result<Option<worktree::Worktree>, String> {
    if agent.isolation != Isolation::Worktree {
        return Ok(None);
    }
    let Some(repo) = &job.repo else {
        return Err(format!(
            "agent {} runs in a worktree on this worker, but the job carries no repository",
            agent.name
        ));
    };
    let mirror = wire::mirror_path(&ctx.opts.state_dir.join("mirrors"), &repo.remote);
    {
        let _one_at_a_time = ctx.mirrors.lock().await;
        let (remote, mirror, commit) = (repo.remote.clone(), mirror.clone(), repo.commit.clone());
        tokio::task::spawn_blocking(move || update_mirror(&remote, &mirror, &commit))
            .await
            .map_err(|e| format!("mirror update panicked: {e}"))??;
    }
    let src = Source {
        repo: mirror,
        base: Some(repo.commit.clone()),
        include_from: None,
    };
    backend::isolate(
        agent,
        &job.delegation_id,
        move || src,
        ctx.opts.state_dir.join("worktrees"),
        &ctx.cfg.worktree,
    )
    .await
}

/// Clone the mirror if missing, fetch, and check the commit is there.
fn update_mirror(remote: &str, mirror: &Path, commit: &str) -> Result<(), String> {
    let has =
        |c: &str| worktree::git(mirror, &["cat-file", "-e", &format!("{c}^{{commit}}")]).is_ok();
    if mirror.join("HEAD").is_file() {
        if !has(commit) {
            worktree::git(
                mirror,
                &["fetch", "--quiet", remote, "+refs/heads/*:refs/heads/*"],
            )
            .map_err(|e| format!("cannot fetch {remote}: {e}"))?;
        }
    } else {
        let parent = mirror.parent().unwrap_or(Path::new("."));
        let m = mirror.display().to_string();
        worktree::git(parent, &["clone", "--quiet", "--bare", remote, &m])
            .map_err(|e| format!("cannot clone {remote}: {e}"))?;
    }
    if has(commit) {
        Ok(())
    } else {
        Err(format!(
            "commit {commit} is not on {remote}: push it before delegating to workers"
        ))
    }
}

/// Commit, record, and deliver the branch: push to the remote, else send a bundle back.
async fn finish_worktree(
    ctx: &Ctx,
    agent: &Agent,
    job: &Job,
    wt: worktree::Worktree,
    id: &str,
    tx: &mpsc::UnboundedSender<Out>,
) -> Option<Outcome> {
    let mirror = wt.repo.clone();
    let mut outcome = backend::release(wt, &agent.name, id, &ctx.cfg.worktree).await?;
    let (Some(branch), Some(repo)) = (outcome.branch.clone(), &job.repo) else {
        return Some(outcome);
    };
    let remote = repo.remote.clone();
    let base = outcome.base.clone();
    let bundle = ctx
        .opts
        .state_dir
        .join("jobs")
        .join(format!("{}.bundle", wire::token(id)));
    let delivered = tokio::task::spawn_blocking(move || {
        let refspec = format!("refs/heads/{branch}:refs/heads/{branch}");
        match worktree::git(&mirror, &["push", "--quiet", &remote, &refspec]) {
            Ok(_) => Ok(format!("pushed {branch} to {remote}")),
            Err(push) => {
                let b = bundle.display().to_string();
                let range = format!("{base}..{branch}");
                let made = worktree::git(&mirror, &["bundle", "create", "--quiet", &b, &range])
                    .map_err(|e| format!("bundle failed too ({e})"))
                    .and_then(|_| std::fs::read(&bundle).map_err(|e| e.to_string()));
                let _ = std::fs::remove_file(&bundle);
                Err((push.to_string(), made))
            }
        }
    })
    .await
    .ok()?;
    outcome.delivered = Some(match delivered {
        Ok(msg) => msg,
        Err((push, Ok(bytes))) if bytes.len() <= CHUNK * 3 => {
            let _ = tx.send(Out::Chunk("bundle", bytes));
            format!("push failed ({push}); bundle sent back as {id}.bundle")
        }
        Err((push, Ok(bytes))) => format!(
            "push failed ({push}); bundle of {} bytes too large to send back",
            bytes.len()
        ),
        Err((push, Err(e))) => format!("push failed ({push}); {e}"),
    });
    Some(outcome)
}
