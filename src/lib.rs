//! mpm: a subprocess supervisor for CLI coding agents.
//!
//! `mpm run` wraps an agent CLI in a PTY and stays out of the way while every output byte also flows
//! through a text pipeline (screen model → lines → compiled pattern engine) that spots delegations,
//! tickets and errors. Delegations go to a bounded executor, a governor watches every process tree,
//! and `mpm daemon` hosts the same supervisor behind a Unix socket. Module map:
//!
//! | module | concern |
//! | --- | --- |
//! | [`cli`] | command line (clap), exit codes |
//! | [`config`] | settings, defaults, layering with provenance |
//! | [`event_hooks`] | user commands run on events (`hooks:`) |
//! | [`events`] | the event type, bus and events-file sink |
//! | [`process`] | process trees: membership (tags, subreaper), graceful stop |
//! | [`trust`] | project configuration trusted per folder and file digest |
//! | [`pty`] | PTY spawn, terminal relay, raw mode, resize, signals, watchdog |
//! | [`session`] | one supervised agent: wires relay, pipeline, executor, governor |
//! | [`screen`] | VT screen model, rows to logical lines |
//! | [`patterns`] | YAML pattern packs, compiled engine |
//! | [`detect`] | text sources → engine → dedup → detections |
//! | [`executor`] | agent registry, bounded parallel delegation runner |
//! | [`feedback`] | results back to the main agent; delegation records for the user |
//! | [`governor`] | resource sampling, thresholds, actions, cgroups |
//! | [`store`] | SQLite store of sessions, events, delegations, tickets |
//! | [`protocol`] | daemon socket frames and messages |
//! | [`daemon`] | the long-running supervisor and its socket server |
//! | [`hook`] | claude's hooks: `mpm hook`, the per-session hook socket, the responder trait |
//! | [`state`] | the published session state: signals, state machine, screen cue tables |
//! | [`supervisor`] | assembles one session: engine, pipeline, transcript, executor, governor |
//! | [`notify`] | terminal (OSC 9/777, bell) and desktop notifications |
//! | [`top`] | `mpm top`, the live dashboard |
//! | [`logging`] | tracing setup |
//!
//! **Platform boundary.** mpm runs on Linux. The Linux-only pieces are compiled under
//! `cfg(target_os = "linux")`: the one `/proc` reader ([`process::procfs`]), cgroup v2
//! ([`governor::cgroup`]), the child subreaper (`prctl`), the parent-death signal of delegations
//! and `malloc_trim`. A port starts with these; everything else is POSIX (PTYs, signals, Unix
//! sockets) or portable (sysinfo measures processes).

// Dependencies the library does not use (dev-dependencies are for the tests: not in unit tests).
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "mpm supports Linux only: process::procfs, governor::cgroup and the subreaper have no port yet"
);

pub mod cli;
pub mod config;
pub mod daemon;
pub mod detect;
pub(crate) mod event_hooks;
pub mod events;
pub mod executor;
pub(crate) mod feedback;
pub mod governor;
pub mod hook;
pub mod live;
pub(crate) mod logging;
pub(crate) mod notify;
pub mod patterns;
pub mod process;
pub mod protocol;
pub mod pty;
pub mod screen;
pub(crate) mod session;
pub mod state;
pub mod store;
pub(crate) mod supervisor;
pub(crate) mod top;
pub(crate) mod trust;
pub(crate) mod worker;
pub mod worktree;
