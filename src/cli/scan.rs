//! `mpm scan`: the text pipeline offline. (Owned by the detection work.)

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::GlobalArgs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InputKind {
    /// Bytes a program wrote to a PTY, replayed through the screen model.
    Raw,
    /// Plain text lines.
    Text,
    /// claude's session transcript (JSONL).
    ClaudeJsonl,
    /// `claude -p --output-format stream-json` output.
    StreamJson,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Screen columns for `--input raw`.
    #[arg(long, default_value_t = 100)]
    pub cols: u16,
    /// Screen rows for `--input raw`.
    #[arg(long, default_value_t = 30)]
    pub rows: u16,
    #[arg(long, value_enum, default_value_t = InputKind::Raw)]
    pub input: InputKind,
    /// Input files; `-` reads stdin.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

pub fn scan(_g: &GlobalArgs, _a: ScanArgs) -> anyhow::Result<i32> {
    anyhow::bail!("mpm scan is not built yet")
}
