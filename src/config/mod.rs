//! Configuration: typed settings, built-in defaults, and layering with provenance.
//!
//! Layers, lowest first (the contract): built-in defaults < `$XDG_CONFIG_HOME/mpm/config.yaml` <
//! `./.mpm/config.yaml` < `MPM_*` environment variables < command-line flags. Maps merge key by key
//! (so a user can override one field of a built-in agent); scalars and lists replace. Every leaf of the
//! merged tree remembers which layer set it, which `mpm config show` prints.
//!
//! Each file is first checked on its own against the typed schema (unknown keys are errors), so a
//! mistake is reported as `file:line:col: message` from the YAML parser's own positions.

mod budgets;
mod distributed;
mod event_hooks;
mod layers;
mod orchestration;
mod profiles;
mod ranges;

pub use budgets::{AgentBudget, BudgetsConfig};
pub use event_hooks::{EventHook, NotifyConfig};
pub use orchestration::{FeedbackMode, OrchestrationConfig, OrchestrationMode};
pub use profiles::HeadlessOutput;

pub use distributed::{BackendKind, Isolation, NatsConfig, WorktreeConfig};

/// Shared with the pattern loader, which reports YAML errors the same way.
pub(crate) use layers::first_line_message;
pub use layers::{ConfigError, LayeredConfig, Origin, Overrides, load, load_from};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The whole configuration. Every section has defaults, so an empty file is valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The agent CLI profile `mpm run` uses when no command is given.
    pub profile: String,
    /// Agent CLI profiles by name (claude, codex, gemini, aider, ...).
    pub profiles: BTreeMap<String, Profile>,
    /// `run:` how `mpm run` relays, detects and stops.
    pub run: RunConfig,
    /// `executor:` how delegations are run.
    pub executor: ExecutorConfig,
    /// The agent registry: delegation targets by name.
    pub agents: BTreeMap<String, AgentConfig>,
    /// `limits:` the resource governor's thresholds.
    pub limits: LimitsConfig,
    /// `log:` where mpm's own log goes.
    pub log: LogConfig,
    /// `daemon:` the daemon's socket, store and limits.
    pub daemon: DaemonConfig,
    /// `orchestration:` modes and result feedback.
    pub orchestration: OrchestrationConfig,
    /// User commands run on events (argv, never a shell; the event as JSON on stdin).
    pub hooks: Vec<EventHook>,
    /// `notify:` terminal and desktop notifications.
    pub notify: NotifyConfig,
    /// `worktree:` isolated delegations' checkouts.
    pub worktree: WorktreeConfig,
}

/// How to start one agent CLI and read its output, interactively (`mpm run`) and headless (a
/// sub-agent run by the executor). The built-ins are in `config::profiles`; every field can be
/// overridden from a config file (`profiles.<name>.<field>`), and new names add profiles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Profile {
    /// argv of the agent CLI; extra arguments after `--` replace everything after `argv[0]`.
    pub command: Vec<String>,
    /// Environment added to the agent's.
    pub env: BTreeMap<String, String>,
    /// Tail claude's session transcript (`--session-id`, `~/.claude/projects/...`).
    pub transcript: bool,
    /// Scan the screen model of the PTY output.
    pub screen: bool,
    /// How finished delegation results reach this CLI's main agent (opt-in except for claude).
    pub feedback: FeedbackMode,
    /// What this profile is for (shown by `mpm profiles`).
    pub description: String,
    /// Flags mpm puts after the program whenever it starts this CLI (e.g. codex's `--no-daemon`):
    /// after the profile's own `command`, and after a command given after `--` whose program has
    /// the same name as this profile's (flags it already has are not repeated).
    pub args: Vec<String>,
    /// The headless form for sub-agents: an argv template like an agent's `argv` (`{task}` exactly
    /// once, always one argv element; `{role}`, `{role_toml}`, `{agent}`, `{session}`,
    /// `{delegation_id}`). Without `{role}` or `{role_toml}` the role prompt is put before the task (`ROLE\n\nTASK`). Empty: this profile cannot
    /// run sub-agents.
    pub headless: Vec<String>,
    /// How the headless output is read: the final answer for the result file, the token usage for
    /// the budgets.
    pub headless_output: HeadlessOutput,
}

impl Profile {
    /// The argv `mpm run` starts for this profile when no command is given: `command` with
    /// `args` after the program.
    pub fn session_command(&self) -> Vec<String> {
        let mut argv = self.command.clone();
        if !argv.is_empty() {
            argv.splice(1..1, self.args.iter().cloned());
        }
        argv
    }
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            command: Vec::new(),
            env: BTreeMap::new(),
            transcript: false,
            screen: true,
            feedback: FeedbackMode::Off,
            description: String::new(),
            args: Vec::new(),
            headless: Vec::new(),
            headless_output: HeadlessOutput::default(),
        }
    }
}

/// `mpm run` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Seconds between SIGTERM and SIGKILL when a process tree is stopped.
    #[serde(deserialize_with = "ranges::secs_f64::<_, 3600>")]
    pub grace_secs: f64,
    /// Bytes the output tap may hold for the text pipeline before it counts an overrun.
    #[serde(deserialize_with = "ranges::usize_in::<_, 4096, { 1 << 30 }>")]
    pub tap_capacity_bytes: usize,
    /// Run the text pipeline (detection) at all.
    pub detect: bool,
    /// Run detected delegations (false = record only).
    pub exec: bool,
    /// Print one line per delegation after the session.
    pub summary: bool,
    /// Accepted for compatibility and ignored: no wall-clock window decides what a delegation says
    /// any more (only final detections dispatch; see `detect::dispatch`).
    #[serde(deserialize_with = "ranges::u64_in::<_, 0, 60_000>")]
    pub settle_ms: u64,
    /// The key sequence that detaches a daemon client from its session (`ctrl-X` or a character,
    /// comma-separated); typed twice, the agent gets it.
    pub detach_keys: String,
    /// After the agent exited, output the reader has not taken yet is held up to this many bytes
    /// (more is dropped and counted), so a stalled reader loses no tail.
    pub tail_bytes: usize,
}

impl RunConfig {
    /// `grace_secs` as a duration (the one place it is converted; the value is range-checked
    /// when the configuration is read, the clamp only guards values set in code).
    pub fn grace(&self) -> Duration {
        Duration::try_from_secs_f64(self.grace_secs.clamp(0.0, 3600.0))
            .unwrap_or(Duration::from_secs(3))
    }
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            grace_secs: 3.0,
            tap_capacity_bytes: 8 << 20,
            detect: true,
            exec: true,
            summary: true,
            settle_ms: 500,
            detach_keys: crate::pty::keys::DEFAULT_DETACH_KEYS.to_string(),
            tail_bytes: 64 << 20,
        }
    }
}

/// What to do with a delegation to an agent the registry does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownAgentPolicy {
    /// Send it to `executor.default_agent`.
    Default,
    /// Reject it (`delegation.finished` `rejected`).
    Reject,
}

/// What happens to delegations when the session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionExitPolicy {
    /// Stop queued and running delegations (SIGTERM, grace, SIGKILL).
    Cancel,
    /// Let queued and running delegations finish before the session ends.
    Wait,
}

/// The bounded parallel executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecutorConfig {
    /// Delegations running at once, all agents together.
    #[serde(deserialize_with = "ranges::usize_in::<_, 1, 1024>")]
    pub max_parallel: usize,
    /// Delegations waiting to start; a full queue rejects new ones (`delegation.finished` `rejected`).
    #[serde(deserialize_with = "ranges::usize_in::<_, 1, 1_000_000>")]
    pub queue_capacity: usize,
    /// Per-attempt timeout when the agent sets none.
    #[serde(deserialize_with = "ranges::u64_in::<_, 1, { ranges::WEEK }>")]
    pub timeout_secs: u64,
    /// Delegations admitted per minute per session (sliding window); 0 = no cap.
    #[serde(deserialize_with = "ranges::u32_in::<_, 0, 1_000_000>")]
    pub rate_per_minute: u32,
    /// A delegation to an agent the registry does not know: `default` or `reject`.
    pub on_unknown_agent: UnknownAgentPolicy,
    /// Where unknown agent names go under `on_unknown_agent: default`.
    pub default_agent: String,
    /// The profile whose headless form runs the delegations of agents that name none
    /// (`agents.<name>.profile`) and set no `argv`.
    pub default_profile: String,
    /// Delegations still queued or running when the session ends: `cancel` or `wait`.
    pub on_session_exit: SessionExitPolicy,
    /// Consecutive failures that open an agent's circuit breaker.
    #[serde(deserialize_with = "ranges::u32_in::<_, 1, 1_000_000>")]
    pub breaker_failures: u32,
    /// Seconds an open breaker rejects before it lets one delegation try again.
    #[serde(deserialize_with = "ranges::u64_in::<_, 0, { ranges::DAY }>")]
    pub breaker_cooldown_secs: u64,
    /// Where delegation output goes; default `$XDG_STATE_HOME/mpm/sessions/<session>/`.
    pub output_dir: Option<PathBuf>,
    /// Token, cost and depth budgets.
    pub budgets: BudgetsConfig,
    /// Bytes kept of each output stream (stdout, stderr) of one delegation attempt; the rest is
    /// read and dropped, and the file ends with a note saying how much was dropped.
    #[serde(deserialize_with = "ranges::u64_in::<_, 4096, { 1 << 40 }>")]
    pub max_output_bytes: u64,
    /// `local` (child processes) or `nats` (workers through NATS JetStream).
    pub backend: BackendKind,
    /// The NATS connection, for `backend: nats`.
    pub nats: NatsConfig,
    /// A sub-agent with no output and no CPU for this long is reported `stalled` in its
    /// `delegation.progress` events.
    #[serde(deserialize_with = "ranges::u64_in::<_, 1, { ranges::DAY }>")]
    pub stall_secs: u64,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            max_parallel: 4,
            queue_capacity: 64,
            timeout_secs: 300,
            rate_per_minute: 30,
            on_unknown_agent: UnknownAgentPolicy::Default,
            default_agent: "engineer".into(),
            default_profile: "claude".into(),
            on_session_exit: SessionExitPolicy::Cancel,
            breaker_failures: 5,
            breaker_cooldown_secs: 60,
            output_dir: None,
            budgets: BudgetsConfig::default(),
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            backend: BackendKind::Local,
            nats: NatsConfig::default(),
            stall_secs: 120,
        }
    }
}

/// `executor.max_output_bytes` by default: 16 MiB per stream, far above what an agent's report
/// needs, far below what a runaway loop writes in a second.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 16 << 20;

/// Retry policy for one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Extra attempts after the first.
    #[serde(deserialize_with = "ranges::u32_in::<_, 0, 100>")]
    pub max_retries: u32,
    /// Exit codes that count as transient (worth a retry).
    pub transient_exit_codes: Vec<i32>,
    /// First backoff; doubles per attempt.
    #[serde(deserialize_with = "ranges::u64_in::<_, 0, { ranges::HOUR_MS }>")]
    pub backoff_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: 0,
            transient_exit_codes: Vec::new(),
            backoff_ms: 1000,
        }
    }
}

/// One agent of the registry. Every field may be overridden key by key in a config file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Other names the model may use for this agent (matched case-, space- and dash-insensitively).
    pub aliases: Vec<String>,
    /// What the agent is for (shown in `mpm agents list` and the inject-mode prompt).
    pub description: String,
    /// Role prompt, substituted for `{role}`.
    pub role: String,
    /// argv template; `{task}`, `{role}`, `{role_toml}`, `{agent}`, `{session}`, `{delegation_id}`
    /// are substituted inside elements. Empty = the headless form of the agent's profile.
    pub argv: Vec<String>,
    /// The agent CLI profile whose headless form runs this agent's delegations (when `argv` is
    /// empty) and whose output format is read; default `executor.default_profile`.
    pub profile: Option<String>,
    /// Working directory of its delegations; default the session's.
    pub cwd: Option<PathBuf>,
    /// Environment added to its delegations.
    pub env: BTreeMap<String, String>,
    /// Per-delegation timeout; default the executor's.
    #[serde(deserialize_with = "ranges::opt_u64_in::<_, 1, { ranges::WEEK }>")]
    pub timeout_secs: Option<u64>,
    /// Delegations of this agent running at once; default unlimited (the global limit applies).
    #[serde(deserialize_with = "ranges::opt_usize_in::<_, 1, 1024>")]
    pub max_parallel: Option<usize>,
    /// Retries of transient failures.
    pub retry: RetryConfig,
    /// Resource limits for this agent's delegations; unset fields fall back to `limits`.
    pub limits: Option<AgentLimits>,
    /// What this agent's delegations may spend per session.
    pub budget: Option<AgentBudget>,
    /// `none` (default) or `worktree`: a fresh git worktree per delegation.
    pub isolation: Isolation,
}

/// Per-agent overrides of the governor's thresholds and spawn rlimits.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentLimits {
    /// Memory thresholds for this agent's trees.
    pub memory_mb: Option<MemoryLimits>,
    /// CPU thresholds for this agent's trees.
    pub cpu: Option<CpuLimits>,
    /// setrlimit values for this agent's sub-agents.
    pub rlimits: Option<Rlimits>,
}

/// Resource governor thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Sampling interval.
    #[serde(deserialize_with = "ranges::u64_in::<_, 10, { ranges::HOUR_MS }>")]
    pub interval_ms: u64,
    /// Whole-tree memory thresholds.
    pub memory_mb: MemoryLimits,
    /// Sustained CPU thresholds.
    pub cpu: CpuLimits,
    /// setrlimit values applied at spawn.
    pub rlimits: Rlimits,
    /// Use a delegated cgroup v2 when one is writable (`auto`), never (`off`), or a given path.
    pub cgroup: String,
    /// Restart policy for the main session after a limit kill.
    pub restart: RestartConfig,
    /// Polling mode: a rescan for tree members that escaped the parent links (double fork) runs
    /// every this many samples (mpm's own children when it is the trees' subreaper, else a full
    /// `/proc` scan); 0 = only at the first sample.
    pub rescan_ticks: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            interval_ms: 1000,
            memory_mb: MemoryLimits::default(),
            cpu: CpuLimits::default(),
            rlimits: Rlimits::default(),
            cgroup: "auto".into(),
            restart: RestartConfig::default(),
            rescan_ticks: 10,
        }
    }
}

/// Whole-tree RSS thresholds in MB; `null` disables one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryLimits {
    /// A `resource.warning` event above this.
    #[serde(deserialize_with = "ranges::opt_u64_in::<_, 1, { ranges::MAX_MB }>")]
    pub warning: Option<u64>,
    /// A `resource.critical` event above this.
    #[serde(deserialize_with = "ranges::opt_u64_in::<_, 1, { ranges::MAX_MB }>")]
    pub critical: Option<u64>,
    /// The tree is stopped above this (`resource.limit`).
    #[serde(deserialize_with = "ranges::opt_u64_in::<_, 1, { ranges::MAX_MB }>")]
    pub hard: Option<u64>,
}

impl Default for MemoryLimits {
    fn default() -> Self {
        MemoryLimits {
            warning: Some(512),
            critical: Some(1024),
            hard: Some(2048),
        }
    }
}

/// Sustained CPU thresholds, percent of one core over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CpuLimits {
    /// A `resource.warning` event when the tree's CPU stays above this for `window_secs`.
    #[serde(deserialize_with = "ranges::opt_percent")]
    pub warning_percent: Option<f64>,
    /// The window over which CPU is averaged.
    #[serde(deserialize_with = "ranges::u64_in::<_, 1, { ranges::DAY }>")]
    pub window_secs: u64,
    /// The tree is stopped when its CPU stays above this for `window_secs`.
    #[serde(deserialize_with = "ranges::opt_percent")]
    pub hard_percent: Option<f64>,
}

impl Default for CpuLimits {
    fn default() -> Self {
        CpuLimits {
            warning_percent: Some(90.0),
            window_secs: 60,
            hard_percent: None,
        }
    }
}

/// Limits set with setrlimit in the child before exec; `null` leaves the inherited value.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rlimits {
    /// Open files (RLIMIT_NOFILE).
    #[serde(deserialize_with = "ranges::opt_u64_in::<_, 1, { 1 << 30 }>")]
    pub nofile: Option<u64>,
    /// Core dump size (RLIMIT_CORE), MB.
    #[serde(deserialize_with = "ranges::opt_u64_in::<_, 0, { ranges::MAX_MB }>")]
    pub core_mb: Option<u64>,
    /// Address space (RLIMIT_AS), MB.
    #[serde(deserialize_with = "ranges::opt_u64_in::<_, 1, { ranges::MAX_MB }>")]
    pub address_space_mb: Option<u64>,
}

/// Restart of the main session after the governor killed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestartConfig {
    /// Restart the main agent after the governor stopped it.
    pub enabled: bool,
    /// Restarts allowed per hour.
    #[serde(deserialize_with = "ranges::u32_in::<_, 0, 3600>")]
    pub max_per_hour: u32,
    /// Delay before a restart.
    #[serde(deserialize_with = "ranges::u64_in::<_, 0, { ranges::HOUR_MS }>")]
    pub backoff_ms: u64,
}

impl Default for RestartConfig {
    fn default() -> Self {
        RestartConfig {
            enabled: false,
            max_per_hour: 3,
            backoff_ms: 2000,
        }
    }
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter (`info`, `mpm=debug`, ...).
    pub level: String,
    /// Log file; default `$XDG_STATE_HOME/mpm/mpm.log`.
    pub file: Option<PathBuf>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            file: None,
        }
    }
}

/// The daemon and its store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// Socket path; default `$XDG_RUNTIME_DIR/mpm/mpm.sock`.
    pub socket: Option<PathBuf>,
    /// State folder (database, session output); default `$XDG_STATE_HOME/mpm`.
    pub state_dir: Option<PathBuf>,
    /// Events older than this are pruned from the store.
    #[serde(deserialize_with = "ranges::u32_in::<_, 1, 36_500>")]
    pub retention_days: u32,
    /// Largest protocol frame accepted, bytes.
    #[serde(deserialize_with = "ranges::usize_in::<_, 4096, { 256 << 20 }>")]
    pub max_frame_bytes: usize,
    /// Seconds a session gets between SIGTERM and SIGKILL on `mpm stop` and daemon shutdown.
    #[serde(deserialize_with = "ranges::secs_f64::<_, 3600>")]
    pub stop_grace_secs: f64,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            socket: None,
            state_dir: None,
            retention_days: 30,
            max_frame_bytes: 1 << 20,
            stop_grace_secs: 5.0,
        }
    }
}

fn s(v: &str) -> String {
    v.to_string()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// The default argv template for built-in agents: the real CLI, headless. claude's `-p` is a boolean
/// flag (the prompt is positional), so a task starting with `-` is guarded by the executor's argv
/// rules (`executor::argv`: a leading space), never read as a flag.
pub fn default_agent_argv() -> Vec<String> {
    strings(profiles::CLAUDE_HEADLESS)
}

fn agent(aliases: &[&str], description: &str, role: &str) -> AgentConfig {
    AgentConfig {
        aliases: strings(aliases),
        description: s(description),
        role: s(role),
        ..AgentConfig::default()
    }
}

impl Default for Config {
    fn default() -> Self {
        let profiles = profiles::builtin();
        // Aliases are what a model calls an agent. Words that are also common section labels
        // ("Testing", "Deployment", "Data", "Analysis") are left out on purpose: `**X**:` starts an
        // agent when X is a registered name or alias, and a bold label must not.
        let mut agents = BTreeMap::new();
        agents.insert(
            s("engineer"),
            agent(
                &["Engineer", "Software Engineer", "Developer"],
                "Implements code changes",
                "You are the Engineer Agent. Implement the task you are given with focused, tested code changes, then report what you changed.",
            ),
        );
        agents.insert(
            s("qa"),
            agent(
                &["QA", "Quality Assurance", "Tester", "QA Engineer"],
                "Tests and verifies",
                "You are the QA Agent. Test and verify the work described in the task; report failures precisely.",
            ),
        );
        agents.insert(
            s("research"),
            agent(
                &["Research", "Researcher", "Analyst"],
                "Investigates and reports",
                "You are the Research Agent. Investigate the question in the task and report findings with sources.",
            ),
        );
        agents.insert(
            s("documentation"),
            agent(
                &["Documentation", "Docs", "Documenter", "Technical Writer", "Writer"],
                "Writes documentation",
                "You are the Documentation Agent. Write or update the documentation the task asks for.",
            ),
        );
        agents.insert(
            s("ops"),
            agent(
                &["Ops", "DevOps", "Operations Engineer", "SRE"],
                "Builds, deploys and operates",
                "You are the Ops Agent. Handle the build, deployment or operations task you are given.",
            ),
        );
        agents.insert(
            s("security"),
            agent(
                &["Security", "Security Engineer", "SecOps"],
                "Reviews security",
                "You are the Security Agent. Review the task's subject for security problems and report them.",
            ),
        );
        agents.insert(
            s("version-control"),
            agent(
                &["Version Control", "VersionControl", "VCS"],
                "Manages branches, commits and merges",
                "You are the Version Control Agent. Perform the git task you are given and report the result.",
            ),
        );
        agents.insert(
            s("data-engineer"),
            agent(
                &["Data Engineer"],
                "Builds data pipelines and schemas",
                "You are the Data Engineer Agent. Implement the data pipeline or schema task you are given.",
            ),
        );
        Config {
            profile: s("claude"),
            profiles,
            run: RunConfig::default(),
            executor: ExecutorConfig::default(),
            agents,
            limits: LimitsConfig::default(),
            log: LogConfig::default(),
            daemon: DaemonConfig::default(),
            orchestration: OrchestrationConfig::default(),
            hooks: Vec::new(),
            notify: NotifyConfig::default(),
            worktree: WorktreeConfig::default(),
        }
    }
}

impl Config {
    /// `argv` (a command given after `--`) with the flags mpm adds for its CLI: the `args` of the
    /// profile whose program has the same file name as `argv[0]` (the active profile first), each
    /// one not already in `argv`, put after the program.
    pub fn with_profile_args(&self, argv: &[String]) -> Vec<String> {
        let base = |p: &str| {
            std::path::Path::new(p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        };
        let mut out = argv.to_vec();
        let Some(prog) = argv.first().and_then(|p| base(p)) else {
            return out;
        };
        let active = self.profiles.get(&self.profile).into_iter();
        let profile = active.chain(self.profiles.values()).find(|p| {
            !p.args.is_empty() && p.command.first().and_then(|c| base(c)).as_ref() == Some(&prog)
        });
        if let Some(p) = profile {
            let add: Vec<String> = p
                .args
                .iter()
                .filter(|a| !argv[1..].contains(a))
                .cloned()
                .collect();
            out.splice(1..1, add);
        }
        out
    }

    /// The active profile, or an error naming the unknown profile and the known ones.
    pub fn active_profile(&self) -> Result<&Profile, ConfigError> {
        self.profiles
            .get(&self.profile)
            .ok_or_else(|| ConfigError::UnknownProfile {
                name: self.profile.clone(),
                known: self.profiles.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }
}

/// Well-known folders, following the XDG base directory rules.
pub mod paths {
    use std::path::PathBuf;

    fn home() -> PathBuf {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"))
    }

    fn xdg(var: &str, fallback: &[&str]) -> PathBuf {
        match std::env::var_os(var) {
            Some(v) if !v.is_empty() && PathBuf::from(&v).is_absolute() => PathBuf::from(v),
            _ => fallback.iter().fold(home(), |p, c| p.join(c)),
        }
    }

    /// `$XDG_CONFIG_HOME/mpm` (default `~/.config/mpm`).
    pub fn config_dir() -> PathBuf {
        xdg("XDG_CONFIG_HOME", &[".config"]).join("mpm")
    }

    /// `$XDG_STATE_HOME/mpm` (default `~/.local/state/mpm`).
    pub fn state_dir() -> PathBuf {
        xdg("XDG_STATE_HOME", &[".local", "state"]).join("mpm")
    }

    /// `$XDG_RUNTIME_DIR/mpm` (default `/tmp/mpm-<uid>` when the runtime dir is unset).
    pub fn runtime_dir() -> PathBuf {
        match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(v) if !v.is_empty() => PathBuf::from(v).join("mpm"),
            _ => std::env::temp_dir().join(format!("mpm-{}", nix::unistd::getuid())),
        }
    }

    /// Create `dir` and any missing parents with mode 0700 (state holds prompts, output and
    /// logs: private to the user). An existing leaf folder is tightened to 0700 when it is ours.
    pub fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let meta = std::fs::metadata(dir)?;
        if meta.uid() == nix::unistd::getuid().as_raw() && meta.mode() & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }

    /// Options that create a file with mode 0600 (the mode of an existing file is kept; see
    /// [`make_private`]).
    pub fn private_file() -> std::fs::OpenOptions {
        use std::os::unix::fs::OpenOptionsExt;
        let mut o = std::fs::OpenOptions::new();
        o.mode(0o600);
        o
    }

    /// Tighten an existing file of ours to 0600 (files created by older versions were 0644).
    pub fn make_private(path: &std::path::Path) -> std::io::Result<()> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = std::fs::metadata(path)?;
        if meta.uid() == nix::unistd::getuid().as_raw() && meta.mode() & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(())
    }

    /// The daemon socket: `--socket`, then `MPM_SOCKET`, then `$XDG_RUNTIME_DIR/mpm/mpm.sock`.
    pub fn socket(flag: Option<&std::path::Path>) -> PathBuf {
        if let Some(p) = flag {
            return p.to_path_buf();
        }
        match std::env::var_os("MPM_SOCKET") {
            Some(v) if !v.is_empty() => PathBuf::from(v),
            _ => runtime_dir().join("mpm.sock"),
        }
    }
}
