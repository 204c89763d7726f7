//! Configuration of isolated delegations (git worktrees) and of the executor backend that runs them
//! (`local` in this process, or `nats`: workers on other machines through NATS JetStream).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where one agent's delegations run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// In the agent's `cwd` (or the session's working directory), shared by all delegations.
    #[default]
    None,
    /// In a fresh `git worktree` per delegation, on branch `mpm/<agent>-<short id>`.
    Worktree,
}

/// `worktree:`: how isolated delegations get and give back their checkout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorktreeConfig {
    /// Seconds a finished delegation's worktree is kept (for inspection) before it is removed;
    /// 0 = removed as soon as the delegation ends. Branches outlive worktrees unless empty.
    pub retention_secs: u64,
    /// Commands run in the new worktree before the sub-agent starts, each an argv (never a shell).
    pub setup: Vec<Vec<String>>,
    /// Commands run in the worktree after the sub-agent ended, before it is committed and removed.
    pub teardown: Vec<Vec<String>>,
    /// Files (paths relative to the repository root) copied from the checkout into each worktree,
    /// e.g. `.env`: ignored files a worktree would otherwise lack. Lines of `.worktreeinclude` in the
    /// repository root are added to these.
    pub include: Vec<String>,
    /// Where worktrees are created; default `<state dir>/worktrees`.
    pub dir: Option<PathBuf>,
}

impl Default for WorktreeConfig {
    fn default() -> Self {
        WorktreeConfig {
            retention_secs: 3600,
            setup: Vec::new(),
            teardown: Vec::new(),
            include: Vec::new(),
            dir: None,
        }
    }
}

/// `executor.backend`: what runs delegations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Child processes of this session (the default).
    #[default]
    Local,
    /// Jobs on a NATS JetStream work queue, run by `mpm worker` processes.
    Nats,
}

/// `executor.nats`: the NATS connection and the JetStream names both sides use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// The server (`nats://host:port` or `tls://host:port`).
    pub url: String,
    /// A `.creds` file (JWT + nkey seed), read by the client; never sent in a job.
    pub creds: Option<PathBuf>,
    /// CA certificate to trust for `tls://` servers.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key (mutual TLS).
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's key.
    pub tls_key: Option<PathBuf>,
    /// Require TLS even for a `nats://` URL.
    pub tls_required: bool,
    /// The JetStream stream holding jobs; subjects are `<subject_prefix>.jobs.<agent>`.
    pub stream: String,
    /// The first token of every subject mpm uses.
    pub subject_prefix: String,
    /// Seconds a published job may wait for a worker before it fails (`no worker took it`).
    pub pickup_timeout_secs: u64,
    /// Seconds between a worker's heartbeats for a running delegation.
    pub heartbeat_secs: u64,
    /// Missed-heartbeat window: a delegation whose worker was silent this long ends `failed`.
    pub heartbeat_timeout_secs: u64,
    /// The git remote (name or URL) workers fetch the base commit from, for `isolation: worktree`.
    pub git_remote: String,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: "nats://127.0.0.1:4222".into(),
            creds: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            tls_required: false,
            stream: "MPM_JOBS".into(),
            subject_prefix: "mpm".into(),
            pickup_timeout_secs: 120,
            heartbeat_secs: 1,
            heartbeat_timeout_secs: 5,
            git_remote: "origin".into(),
        }
    }
}
