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
//! | [`events`] | the event type, bus and events-file sink |
//! | [`process`] | process trees: membership (tags, subreaper), graceful stop |
//! | [`trust`] | project configuration trusted per folder and file digest |
//! | [`pty`] | PTY spawn, terminal relay, raw mode, resize, signals, watchdog |
//! | [`session`] | one supervised agent: wires relay, pipeline, executor, governor |
//! | [`screen`] | VT screen model, rows to logical lines |
//! | [`patterns`] | YAML pattern packs, compiled engine |
//! | [`detect`] | text sources → engine → dedup → detections |
//! | [`executor`] | agent registry, bounded parallel delegation runner |
//! | [`governor`] | resource sampling, thresholds, actions, cgroups |
//! | [`store`] | SQLite store of sessions, events, delegations, tickets |
//! | [`protocol`] | daemon socket frames and messages |
//! | [`daemon`] | the long-running supervisor and its socket server |
//! | [`supervisor`] | assembles one session: engine, pipeline, transcript, executor, governor |
//! | [`logging`] | tracing setup |

pub mod cli;
pub mod config;
pub mod daemon;
pub mod detect;
pub mod events;
pub mod executor;
pub mod governor;
pub mod logging;
pub mod patterns;
pub mod process;
pub mod protocol;
pub mod pty;
pub mod screen;
pub mod session;
pub mod store;
pub mod supervisor;
pub mod trust;
