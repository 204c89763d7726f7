//! PTY sessions: spawn an agent CLI on a fresh pseudo-terminal, relay bytes, resize, restore the
//! user's terminal, stop the whole process tree, and never leave orphans.
//!
//! Layers, lowest first:
//! - [`spawn`]: resolve the command (127/126 before anything is touched), allocate the PTY, fork
//!   and exec the child as a session leader with the PTY slave as its controlling terminal.
//! - [`PtyRun`]: one spawn of the agent on a PTY (a session has one per restart) — the master
//!   fd, a blocking reader thread that hands every chunk to an [`OutputSink`] (the terminal, or a
//!   daemon's socket), to the asciicast [`record`]er and to the [`tap`] (a bounded, never-blocking
//!   queue to the text pipeline), and a waiter thread that drains the master after the child exits, stops the rest of
//!   the tree and reaps. It knows nothing about the user's terminal, so `mpm daemon` can host it
//!   behind a socket.
//! - [`terminal`]: the user's side — raw mode with a restore guard (also used by the panic hook and
//!   the signal path), window sizes.
//! - [`signals`]: one thread turning SIGWINCH/SIGTERM/SIGHUP/SIGINT/SIGQUIT into callbacks.
//! - [`watchdog`]: a separate `mpm __watchdog` process that stops the tree if mpm is SIGKILLed.
//!
//! Why nix `posix_openpt` + `std::process::Command::pre_exec` instead of portable-pty:
//! portable-pty's `ExitStatus` reports a signal only by name, while mpm must exit with exactly
//! 128+N and report `signal: N`; mpm needs a pre-exec hook to apply `setrlimit` at spawn (the
//! governor's `limits.rlimits`) and for fd hygiene (every inherited fd above 2 is marked
//! close-on-exec in the child); and the master and slave are opened `O_CLOEXEC` atomically, so a
//! process spawned concurrently by another thread (the executor) never inherits them.
//!
//! Why blocking threads instead of tokio: measured on this project, a blocking relay keeps ~96% of a
//! raw PTY drain, a tokio `AsyncFd` reader ~80%, and `tokio::io::stdout()` costs 2.5x the CPU of a
//! blocking writer. Every thread blocks in `read`/`write`/`recv`: an idle session costs no CPU.

pub(crate) mod fdio;
pub mod keys;
pub(crate) mod record;
mod session;
pub(crate) mod signals;
pub(crate) mod spawn;
pub(crate) mod tap;
pub(crate) mod terminal;
pub(crate) mod watchdog;

pub use session::{DRAIN_MAX, OutputSink, PtyConfig, PtyExit, PtyRun};
pub use spawn::{PtyError, WinSize, resolve_command};
pub use tap::{OutputConsumer, QUIET};
