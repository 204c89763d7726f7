//! `mpm completions bash|zsh|fish` and `mpm man`: generated from the clap definitions, so they
//! can never disagree with the real flags.

use std::io::Write;

use clap::{Args, CommandFactory, ValueEnum};

use super::Cli;

/// The shells `mpm completions` writes a script for.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
#[command(
    after_help = "bash: mpm completions bash > ~/.local/share/bash-completion/completions/mpm\n\
                        zsh:  mpm completions zsh > \"${fpath[1]}/_mpm\"\n\
                        fish: mpm completions fish > ~/.config/fish/completions/mpm.fish"
)]
pub(crate) struct CompletionsArgs {
    pub shell: Shell,
}

/// Write the completion script for `a.shell` to stdout.
pub(super) fn completions(a: CompletionsArgs) -> anyhow::Result<i32> {
    let shell = match a.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "mpm", &mut buf);
    write_out(&buf)
}

/// Write the man page (roff, section 1) to stdout: `mpm man > mpm.1`.
pub(super) fn man() -> anyhow::Result<i32> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut buf)?;
    write_out(&buf)
}

/// Stdout into a closed pipe (`mpm man | head`) ends quietly.
fn write_out(buf: &[u8]) -> anyhow::Result<i32> {
    let mut out = std::io::stdout().lock();
    match out.write_all(buf).and_then(|_| out.flush()) {
        Ok(()) => Ok(0),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(141),
        Err(e) => Err(e.into()),
    }
}
