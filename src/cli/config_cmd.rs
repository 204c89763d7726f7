//! `mpm config show`: the merged configuration and where each value came from.

use clap::{Args, Subcommand};

use super::output::{out, outln};
use super::{GlobalArgs, load_config};
use crate::config::Overrides;

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print the merged configuration; each value with the layer that set it.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// JSON: `{"key": {"value": ..., "origin": ...}}`.
    #[arg(long)]
    pub json: bool,
}

pub(super) fn config(g: &GlobalArgs, cmd: ConfigCommand) -> anyhow::Result<i32> {
    match cmd {
        ConfigCommand::Show(a) => {
            let layered = load_config(g, Overrides::default())?;
            if a.json {
                outln!("{}", serde_json::to_string_pretty(&layered.show_json())?)?;
            } else {
                for f in &layered.files {
                    outln!("# read {}", f.display())?;
                }
                out!("{}", layered.show())?;
            }
            Ok(0)
        }
    }
}
