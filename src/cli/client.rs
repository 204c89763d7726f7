//! Daemon clients: status, events, tickets, stop, attach. (Owned by the daemon work.)

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::GlobalArgs;

#[derive(Debug, Clone, Args)]
pub struct SocketArg {
    /// Daemon socket (default `$MPM_SOCKET`, then `$XDG_RUNTIME_DIR/mpm/mpm.sock`).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    /// Keep printing new events as they happen.
    #[arg(long, short)]
    pub follow: bool,
    #[arg(long)]
    pub json: bool,
    /// Only this session's events.
    #[arg(long)]
    pub session: Option<String>,
    /// Only events of this kind (prefix match: `delegation` matches `delegation.finished`).
    #[arg(long)]
    pub kind: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TicketsCommand {
    List(TicketsListArgs),
    Show(TicketArgs),
    Close(TicketArgs),
}

#[derive(Debug, Args)]
pub struct TicketsListArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TicketArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    pub id: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    pub session: String,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    pub session: String,
}

fn not_yet() -> anyhow::Result<i32> {
    anyhow::bail!("the daemon client is not built yet")
}

pub fn status(_g: &GlobalArgs, _a: StatusArgs) -> anyhow::Result<i32> {
    not_yet()
}
pub fn events(_g: &GlobalArgs, _a: EventsArgs) -> anyhow::Result<i32> {
    not_yet()
}
pub fn tickets(_g: &GlobalArgs, _c: TicketsCommand) -> anyhow::Result<i32> {
    not_yet()
}
pub fn stop(_g: &GlobalArgs, _a: StopArgs) -> anyhow::Result<i32> {
    not_yet()
}
pub fn attach(_g: &GlobalArgs, _a: AttachArgs) -> anyhow::Result<i32> {
    not_yet()
}
