//! Sub-agent progress (issue 13): `delegation.progress` events from a delegation's stream-json
//! (last tool, tokens so far, elapsed), at most one a second, and `stalled` once the sub-agent shows
//! no output and no CPU for `executor.stall_secs`. Through the real binary, with the fake agent as
//! the main agent and as a sub-agent that prints stream-json, goes silent (sleeping: no CPU), then
//! finishes.

use crate::common::TestEnv;
use crate::executor_support::{STREAM_JSON_STEPS, assert_stream_json_progress};
use crate::loop_support::*;

#[test]
fn stream_json_progress_then_stalled_then_done() {
    let env = TestEnv::new();
    let sub = fake_argv(STREAM_JSON_STEPS);
    let cfg = write_config(
        &env,
        &format!(
            "executor: {{on_session_exit: wait, stall_secs: 2}}\nagents:\n  engineer: {{argv: {sub}}}\n"
        ),
    );
    let (out, events) = run_session(
        &env,
        &cfg,
        &[],
        &["print:Engineer Agent: report progress"],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fin = of_kind(&events, "delegation.finished");
    assert_eq!(fin.len(), 1, "{events:?}");
    let progress = of_kind(&events, "delegation.progress");
    for e in &progress {
        assert_eq!(e["task"], "report progress", "{e}");
        assert!(e["delegation_id"].is_string(), "{e}");
        assert!(e["elapsed_ms"].is_u64(), "{e}");
    }
    let summary: Vec<(String, u64, bool, u64)> = progress
        .iter()
        .map(|e| {
            (
                e["last_tool"].as_str().unwrap_or("").to_string(),
                e["tokens"].as_u64().unwrap_or(0),
                e["stalled"].as_bool().unwrap_or(false),
                e["elapsed_ms"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_stream_json_progress(&summary);
}

#[test]
fn stall_secs_is_range_checked() {
    let env = TestEnv::new();
    let cfg = write_config(&env, "executor: {stall_secs: 0}\n");
    let (code, _out, err) = mpm_cmd(&env, &cfg, &["config", "show"]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("out of range (1 to 86400)"), "{err}");
}
