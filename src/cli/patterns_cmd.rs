//! `mpm patterns check|list`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::GlobalArgs;
use super::output::{errln, outln};
use crate::patterns::{Engine, EngineBuilder, configured_sources};

#[derive(Debug, Subcommand)]
pub(crate) enum PatternsCommand {
    /// Validate pattern files and run their examples (all configured ones when none are given).
    Check(CheckArgs),
    /// The active patterns with id, category and source file.
    List(ListArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also show disabled patterns.
    #[arg(long)]
    pub all: bool,
}

pub(super) fn patterns(g: &GlobalArgs, c: PatternsCommand) -> anyhow::Result<i32> {
    match c {
        PatternsCommand::Check(a) => check(g, a),
        PatternsCommand::List(a) => list(g, a),
    }
}

/// The engine builder for the configured sources plus `--patterns`, with the configured registry.
fn configured_builder(g: &GlobalArgs) -> anyhow::Result<EngineBuilder> {
    let config = super::load_config(g, Default::default())?;
    Ok(Engine::builder()
        .agents(&config.config.agents)
        .files(configured_sources(&g.patterns)))
}

fn check(g: &GlobalArgs, a: CheckArgs) -> anyhow::Result<i32> {
    let builder = if a.paths.is_empty() {
        configured_builder(g)?
    } else {
        // The given files are checked on top of the built-ins (so overrides of built-in ids make
        // sense) and of any --patterns files.
        let config = super::load_config(g, Default::default())?;
        Engine::builder()
            .agents(&config.config.agents)
            .files(g.patterns.iter().cloned())
            .files(a.paths.iter().cloned())
    };
    let problems = builder.check();
    if problems.is_empty() {
        return Ok(0);
    }
    for p in &problems {
        errln!("{p}");
    }
    Ok(2)
}

fn list(g: &GlobalArgs, a: ListArgs) -> anyhow::Result<i32> {
    let engine = configured_builder(g)?.build()?;
    let shown = engine.patterns().iter().filter(|p| a.all || p.enabled);
    if a.json {
        for p in shown {
            outln!("{}", serde_json::to_string(p)?)?;
        }
        return Ok(0);
    }
    let rows: Vec<_> = shown.collect();
    let w_id = rows.iter().map(|p| p.id.len()).max().unwrap_or(2).max(2);
    let w_cat = rows
        .iter()
        .map(|p| p.category.len())
        .max()
        .unwrap_or(8)
        .max(8);
    outln!("{:w_id$}  {:w_cat$}  SOURCE", "ID", "CATEGORY")?;
    for p in rows {
        let mut source = p.source.clone();
        if !p.enabled {
            source.push_str(" (disabled)");
        }
        outln!("{:w_id$}  {:w_cat$}  {source}", p.id, p.category)?;
    }
    Ok(0)
}
