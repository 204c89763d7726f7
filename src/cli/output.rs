//! The one road to stdout and stderr for every command, so that I/O errors never panic.
//!
//! `println!` panics when stdout is a closed pipe (`mpm events | head -1`) and `eprintln!` panics
//! when stderr cannot be written (`2>/dev/full`, a terminal closed while the delegation summary is
//! pending): both end in exit 101 and a backtrace. The rule, the same for every command:
//!
//! - stdout: [`outln!`]/[`out!`] return an error; a closed pipe becomes [`StdoutClosed`], which
//!   `cli::main` turns into a quiet exit with status 141 (128 + SIGPIPE, what a tool killed by
//!   SIGPIPE reports, so `set -o pipefail` scripts see the cut). Any other write error (a full
//!   disk) is a runtime failure with a message (status 1).
//! - stderr: [`errln!`]/[`err!`] ignore write errors: there is nowhere left to report them.

use std::fmt;
use std::io::{self, Write};

/// Stdout is a closed pipe: the reader went away. Ends the command quietly with [`CLOSED_STATUS`].
#[derive(Debug, thiserror::Error)]
#[error("standard output is closed")]
pub(crate) struct StdoutClosed;

/// The exit status of a command whose stdout was closed under it: 128 + SIGPIPE.
pub(crate) const CLOSED_STATUS: i32 = 128 + libc::SIGPIPE;

/// Map a stdout write error: a closed pipe to [`StdoutClosed`], anything else to a message.
pub(crate) fn stdout_error(e: io::Error) -> anyhow::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        StdoutClosed.into()
    } else {
        anyhow::Error::new(e).context("cannot write to standard output")
    }
}

/// Write formatted text to stdout and flush it (commands that follow a stream are read live).
pub(crate) fn write_out(args: fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

/// Write formatted text to stderr; errors are dropped (stderr is the last resort).
pub(crate) fn write_err(args: fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.flush());
}

/// `println!` to stdout that returns `anyhow::Result<()>` instead of panicking.
macro_rules! outln {
    () => { $crate::cli::output::write_out(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::cli::output::write_out(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` to stdout that returns `anyhow::Result<()>` instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::output::write_out(format_args!($($arg)*)) };
}

/// `eprintln!` that never panics.
macro_rules! errln {
    ($($arg:tt)*) => { $crate::cli::output::write_err(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `eprint!` that never panics.
macro_rules! err {
    ($($arg:tt)*) => { $crate::cli::output::write_err(format_args!($($arg)*)) };
}

pub(crate) use {err, errln, out, outln};

/// Whether an error chain says stdout was closed.
pub(crate) fn is_closed(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| c.downcast_ref::<StdoutClosed>().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_pipe_is_closed_and_others_are_messages() {
        let closed = stdout_error(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(is_closed(&closed));
        let full = stdout_error(io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(!is_closed(&full));
        assert!(full.to_string().contains("standard output"));
    }
}
