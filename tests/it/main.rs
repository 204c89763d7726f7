//! mpm's integration tests, linked into one test binary (one link step, shared support code).
//!
//! Support modules: `common` (the real binary on a real PTY), `daemon_support`,
//! `executor_support`, `governor_support`, `realclient` (the pinned claude CLI and the fake API
//! server). Every other module is one area's tests.

mod common;
mod daemon_support;
mod executor_support;
mod governor_support;
mod realclient;

mod daemon_binary;
mod daemon_inprocess;
mod executor_cli;
mod executor_realcli;
mod executor_run;
mod governor_cgroup;
mod governor_polling;
mod governor_rlimits;
mod harden_daemon;
mod harden_files;
mod harden_pipe;
mod harden_trees;
mod harden_trust;
mod patterns_cli;
mod patterns_engine;
mod patterns_props;
mod run_io;
mod run_pty;
mod run_realclient;
mod scan_captures;
mod scan_input;
mod scan_split;
