//! `mpm patterns check|list`. (Owned by the pattern-engine work.)

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum PatternsCommand {
    /// Validate pattern files and run their examples (all configured ones when none are given).
    Check(CheckArgs),
    /// The active patterns with id, category and source file.
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long)]
    pub json: bool,
}

pub fn patterns(_g: &GlobalArgs, _c: PatternsCommand) -> anyhow::Result<i32> {
    anyhow::bail!("mpm patterns is not built yet")
}
