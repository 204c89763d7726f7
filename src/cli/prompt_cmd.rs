//! `mpm prompt [--profile NAME]`: the delegation protocol `inject` mode gives the main agent.

use clap::Args;

use super::GlobalArgs;

#[derive(Debug, Args)]
pub(crate) struct PromptArgs {}

pub(super) fn prompt(g: &GlobalArgs, _a: PromptArgs) -> anyhow::Result<i32> {
    let cfg = super::load_config(g, crate::config::Overrides::default())?.config;
    cfg.active_profile()?;
    print!("{}", crate::feedback::prompt::protocol_prompt(&cfg));
    Ok(0)
}
