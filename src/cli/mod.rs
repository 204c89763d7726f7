//! The command line: clap derive definitions, one file per command, and exit-code mapping.
//!
//! Exit status: 0 success; 1 runtime failure; 2 usage or invalid input (bad flag, bad YAML, bad
//! regex), each with a one-line error naming what is wrong and where. `mpm run` exits with the
//! child's status instead.

mod agents;
mod client;
mod completions;
mod config_cmd;
mod daemon_cmd;
mod delegations;
pub(crate) mod output;
mod patterns_cmd;
mod profiles;
mod prompt_cmd;
mod run;
mod scan;
mod top;
mod trust_cmd;
mod worker_cmd;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use self::output::errln;
use crate::config::{ConfigError, LayeredConfig, Overrides};

/// A supervisor for CLI coding agents: transparent PTY, delegation detection, bounded executor,
/// resource governor.
#[derive(Debug, Parser)]
#[command(name = "mpm", version, about, propagate_version = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// One more configuration file, applied after the environment and before other flags.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Extra pattern file or folder (repeatable; later ones override earlier ones by id).
    #[arg(long = "patterns", global = true, value_name = "PATH")]
    pub patterns: Vec<PathBuf>,
    /// Agent CLI profile (claude, codex, gemini, aider, or one from the config).
    #[arg(long, global = true, value_name = "NAME")]
    pub profile: Option<String>,
    /// Write logs to stderr instead of the log file.
    #[arg(long, global = true)]
    pub log_stderr: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run an agent CLI under a transparent PTY, with detection, executor and governor.
    Run(run::RunArgs),
    /// Run the text pipeline offline over recorded input; print one JSON detection per line.
    Scan(scan::ScanArgs),
    /// Check or list pattern files.
    #[command(subcommand)]
    Patterns(patterns_cmd::PatternsCommand),
    /// The agent registry.
    #[command(subcommand)]
    Agents(agents::AgentsCommand),
    /// Agent CLI profiles: what each does, whether its CLI is installed.
    #[command(subcommand)]
    Profiles(profiles::ProfilesCommand),
    /// The merged configuration.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
    /// The long-running supervisor (a systemd user service) that owns sessions.
    Daemon(daemon_cmd::DaemonArgs),
    /// Daemon status: sessions, delegations, resources.
    Status(client::StatusArgs),
    /// Daemon events.
    Events(client::EventsArgs),
    /// Tickets recorded by the daemon.
    #[command(subcommand)]
    Tickets(client::TicketsCommand),
    /// Stop a daemon session gracefully.
    Stop(client::StopArgs),
    /// Attach this terminal to a daemon session.
    Attach(client::AttachArgs),
    /// Install the systemd user unit.
    #[command(subcommand)]
    Service(daemon_cmd::ServiceCommand),
    /// Delegations of live and past sessions: list, show, logs.
    #[command(subcommand)]
    Delegations(delegations::DelegationsCommand),
    /// Print the delegation protocol that `--mode inject` gives the main agent.
    Prompt(prompt_cmd::PromptArgs),
    /// Called by an agent CLI's own hooks (claude `--settings`): reports to its session over
    /// `MPM_HOOK_SOCKET`.
    Hook(HookArgs),
    /// Run delegations pulled from NATS JetStream (the `nats` executor backend's workers).
    Worker(worker_cmd::WorkerArgs),
    /// Live dashboard: sessions, delegations, tickets, errors, resource warnings.
    Top(top::TopArgs),
    /// Shell completions (bash, zsh, fish), generated from the command definitions.
    Completions(completions::CompletionsArgs),
    /// The man page (roff), generated from the command definitions: `mpm man > mpm.1`.
    Man,
    /// Allow a project's `./.mpm/config.yaml` to choose commands, argv, environment and hooks.
    Trust(trust_cmd::TrustArgs),
    /// Internal: the orphan watchdog of a session (see `pty::watchdog`).
    #[command(name = "__watchdog", hide = true)]
    Watchdog(run::WatchdogArgs),
}

/// `mpm hook EVENT`.
#[derive(Debug, clap::Args)]
pub struct HookArgs {
    /// The hook event (`Stop`, `UserPromptSubmit`, `Notification`, `PreToolUse`, ...).
    pub event: String,
    /// Wait at most SECS for the session's answer (default 10; mpm's Stop hook waits for the
    /// turn's delegations, `orchestration.stop_wait_secs`).
    #[arg(long, value_name = "SECS")]
    pub wait: Option<u64>,
}

/// An error that maps to exit status 2: bad usage or invalid input. The message is one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Parse arguments, run, and return the process exit status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // `--help | head` must not panic either: clap's print returns the error, dropped.
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => 2,
            };
        }
    };
    match dispatch(cli) {
        Ok(code) => code,
        // A closed stdout ends the command quietly (see `output`).
        Err(e) if output::is_closed(&e) => output::CLOSED_STATUS,
        Err(e) => {
            errln!("mpm: {}", one_line(&e));
            exit_code_for(&e)
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let g = cli.global;
    match cli.command {
        Command::Run(a) => run::run(&g, a),
        Command::Scan(a) => scan::scan(&g, a),
        Command::Patterns(c) => patterns_cmd::patterns(&g, c),
        Command::Agents(c) => agents::agents(&g, c),
        Command::Profiles(c) => profiles::profiles(&g, c),
        Command::Config(c) => config_cmd::config(&g, c),
        Command::Daemon(a) => daemon_cmd::daemon(&g, a),
        Command::Worker(a) => worker_cmd::worker(&g, a),
        Command::Service(c) => daemon_cmd::service(&g, c),
        Command::Status(a) => client::status(&g, a),
        Command::Events(a) => client::events(&g, a),
        Command::Tickets(c) => client::tickets(&g, c),
        Command::Stop(a) => client::stop(&g, a),
        Command::Attach(a) => client::attach(&g, a),
        Command::Delegations(c) => delegations::delegations(&g, c),
        Command::Prompt(a) => prompt_cmd::prompt(&g, a),
        Command::Top(a) => top::top(&g, a),
        Command::Completions(a) => completions::completions(a),
        Command::Man => completions::man(),
        Command::Watchdog(a) => run::watchdog(a),
        Command::Hook(a) => Ok(crate::hook::client::run(
            &a.event,
            a.wait.map(std::time::Duration::from_secs),
        )),
        Command::Trust(a) => trust_cmd::trust(a),
    }
}

/// The error chain on one line: `outer: inner: root`.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if parts.last().is_none_or(|last| !last.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ").replace('\n', " ")
}

/// 2 for usage and invalid-input errors anywhere in the chain, else 1.
pub fn exit_code_for(e: &anyhow::Error) -> i32 {
    let invalid_input = e.chain().any(|c| {
        c.downcast_ref::<UsageError>().is_some()
            || c.downcast_ref::<ConfigError>()
                .is_some_and(|ce| !matches!(ce, ConfigError::Io { .. }))
            || c.downcast_ref::<crate::patterns::PatternError>().is_some()
            || c.downcast_ref::<crate::trust::TrustError>()
                .is_some_and(|t| matches!(t, crate::trust::TrustError::NothingToTrust { .. }))
    });
    if invalid_input { 2 } else { 1 }
}

/// Load the layered configuration with the global flags applied, plus command-specific overrides.
pub fn load_config(g: &GlobalArgs, mut extra: Overrides) -> anyhow::Result<LayeredConfig> {
    extra.config_file = g.config.clone();
    if let Some(p) = &g.profile {
        extra
            .values
            .insert(0, ("profile".into(), p.clone().into(), "--profile".into()));
    }
    let layered = crate::config::load(&extra)?;
    for n in &layered.notices {
        errln!("mpm: {n}");
    }
    Ok(layered)
}
