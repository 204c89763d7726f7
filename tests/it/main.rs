//! mpm's integration tests, linked into one test binary (one link step, shared support code).
//!
//! Support modules: `common` (the real binary on a real PTY), `daemon_support`,
//! `executor_support`, `governor_support`, `realclient` (the pinned claude CLI and the fake API
//! server). Every other module is one area's tests.

mod common;
mod daemon_support;
mod executor_support;
mod governor_support;
mod loop_support;
mod nats_creds;
mod nats_loop;
mod nats_support;
mod nats_tls;
mod realclient;

mod captures_exact;
mod clis_captures;
mod clis_live;
mod daemon_binary;
mod daemon_executor;
mod daemon_inprocess;
mod daemon_reads;
mod daemon_redraw;
mod daemon_signals;
mod exact_code;
mod exact_hook;
mod exact_live;
mod exact_progress;
mod exact_props;
mod exact_screenreader;
mod executor_cli;
mod executor_realcli;
mod executor_run;
mod fake_llm;
mod governor_cgroup;
mod governor_polling;
mod governor_rlimits;
mod harden_daemon;
mod harden_files;
mod harden_pipe;
mod harden_trees;
mod harden_trust;
mod loop_delegations;
mod loop_feedback;
mod loop_hooks;
mod loop_modes;
mod loop_realclaude;
mod loop_top;
mod nats_backend;
mod nats_worktree;
mod patterns_cli;
mod patterns_contain;
mod patterns_engine;
mod patterns_limits;
mod patterns_props;
mod profiles_cli;
mod profiles_headless;
mod profiles_trees;
mod run_completions;
mod run_detach;
mod run_io;
mod run_pty;
mod run_realclient;
mod run_relay;
mod scan_captures;
mod scan_input;
mod scan_split;
mod screen_captures;
mod screen_final;
mod screen_fuzz;
mod screen_lines;
mod status_live;
mod worktree;
