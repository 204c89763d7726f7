//! `mpm agents list [--json]`: the agent registry as the executor sees it (defaults applied).

use std::fmt::Write as _;
use std::io::Write as _;

use clap::{Args, Subcommand};

use super::{GlobalArgs, load_config};
use crate::config::Overrides;
use crate::executor::AgentRegistry;

#[derive(Debug, Subcommand)]
pub(crate) enum AgentsCommand {
    /// The agent registry: name, aliases, argv template.
    List(ListArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// One JSON array: name, aliases, description, argv, timeout_secs, max_parallel, ...
    #[arg(long)]
    pub json: bool,
}

pub(super) fn agents(g: &GlobalArgs, c: AgentsCommand) -> anyhow::Result<i32> {
    match c {
        AgentsCommand::List(a) => {
            let layered = load_config(g, Overrides::default())?;
            let registry = AgentRegistry::from_config(&layered.config);
            let agents: Vec<_> = registry.agents().collect();
            let mut out = String::new();
            if a.json {
                out = serde_json::to_string_pretty(&agents)?;
                out.push('\n');
            }
            for agent in agents.iter().filter(|_| !a.json) {
                let _ = writeln!(out, "{}", agent.name);
                if !agent.description.is_empty() {
                    let _ = writeln!(out, "  description:  {}", agent.description);
                }
                let _ = writeln!(out, "  aliases:      {}", agent.aliases.join(", "));
                let _ = writeln!(
                    out,
                    "  profile:      {} (output: {}{})",
                    agent.profile,
                    agent.output.as_str(),
                    if agent.role_in_task {
                        ", role before the task"
                    } else {
                        ""
                    }
                );
                let _ = writeln!(
                    out,
                    "  argv:         {}",
                    serde_json::to_string(&agent.argv)?
                );
                let parallel = agent
                    .max_parallel
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "global limit".into());
                let _ = writeln!(
                    out,
                    "  timeout:      {}s   max_parallel: {parallel}",
                    agent.timeout_secs
                );
                if let Some(why) = &agent.invalid {
                    let _ = writeln!(out, "  INVALID:      {why}");
                }
            }
            // A closed pipe (`mpm agents list | head`) ends quietly (see `output`).
            std::io::stdout()
                .lock()
                .write_all(out.as_bytes())
                .map_err(super::output::stdout_error)?;
            Ok(0)
        }
    }
}
