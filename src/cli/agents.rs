//! `mpm agents list`. (Owned by the executor work.)

use clap::{Args, Subcommand};

use super::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// The agent registry: name, aliases, argv template.
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long)]
    pub json: bool,
}

pub fn agents(_g: &GlobalArgs, _c: AgentsCommand) -> anyhow::Result<i32> {
    anyhow::bail!("mpm agents is not built yet")
}
