//! Sub-agent progress: `delegation.progress` events read off a delegation's stream-json output
//! (`claude -p --output-format stream-json`, and anything else that prints such lines), with a
//! `stalled` flag.
//!
//! The stdout reader hands every chunk to a [`Tracker`] (a line buffer and a few counters: cheap
//! next to the file write); stderr only counts as output. A ticker in the attempt
//! ([`Monitor::watch`]) looks once a second and emits at most one event per second per delegation,
//! only when something changed: the last tool called, the tokens so far (input + output of each
//! distinct assistant message, or the final `result`'s usage when larger), or the stalled flag.
//! **Stalled**: no output on either stream AND no CPU used by the sub-agent's process group for
//! `executor.stall_secs`. The CPU is read from `/proc` only while the output is silent, so a
//! chatty sub-agent costs no scan.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A stream-json line longer than this is not parsed (a huge tool result); the rest of it is skipped.
const MAX_LINE: usize = 1 << 20;
/// How often the ticker looks (and the most events per second per delegation).
pub const TICK: Duration = Duration::from_secs(1);

/// What one `delegation.progress` event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The last tool the sub-agent called.
    pub last_tool: Option<String>,
    /// Tokens so far.
    pub tokens: u64,
    /// Since the sub-agent started.
    pub elapsed: Duration,
    /// No output and no CPU for the stall time.
    pub stalled: bool,
}

/// Where progress goes (the executor emits it as an event).
pub type ProgressSink = Arc<dyn Fn(Progress) + Send + Sync>;

/// Progress reporting for one delegation: the sink and the stall time.
#[derive(Clone)]
pub struct Monitor {
    /// Where progress goes.
    pub sink: ProgressSink,
    /// `executor.stall_secs`.
    pub stall: Duration,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("stall", &self.stall)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct State {
    buf: Vec<u8>,
    /// Inside a line longer than [`MAX_LINE`]: drop bytes up to its end.
    skipping: bool,
    last_tool: Option<String>,
    /// Tokens per assistant message id (the last usage seen for it).
    usage: HashMap<String, u64>,
    result_tokens: u64,
    last_output: Instant,
}

/// The parsed state of one attempt's output.
#[derive(Debug)]
pub struct Tracker {
    state: Mutex<State>,
}

impl Tracker {
    /// Nothing seen yet.
    pub fn new() -> Arc<Tracker> {
        Arc::new(Tracker {
            state: Mutex::new(State {
                buf: Vec::new(),
                skipping: false,
                last_tool: None,
                usage: HashMap::new(),
                result_tokens: 0,
                last_output: Instant::now(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes the sub-agent wrote; `parse` for stdout (stream-json lines), not for stderr.
    pub fn output(&self, bytes: &[u8], parse: bool) {
        let mut st = self.lock();
        st.last_output = Instant::now();
        if !parse {
            return;
        }
        let mut rest = bytes;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let (head, tail) = rest.split_at(nl);
            rest = &tail[1..];
            if st.skipping {
                st.skipping = false;
                continue;
            }
            if st.buf.is_empty() {
                line(&mut st, head);
            } else {
                let mut whole = std::mem::take(&mut st.buf);
                whole.extend_from_slice(head);
                line(&mut st, &whole);
                whole.clear();
                st.buf = whole;
            }
        }
        if !st.skipping {
            if st.buf.len() + rest.len() > MAX_LINE {
                st.buf.clear();
                st.skipping = true;
            } else {
                st.buf.extend_from_slice(rest);
            }
        }
    }

    /// Last tool, tokens so far, and when the last output came.
    fn snapshot(&self) -> (Option<String>, u64, Instant) {
        let st = self.lock();
        let per_message: u64 = st.usage.values().sum();
        (
            st.last_tool.clone(),
            per_message.max(st.result_tokens),
            st.last_output,
        )
    }
}

/// The tokens of a `usage` object: input (with cache reads and writes) + output.
fn tokens_of(usage: &Value) -> u64 {
    [
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
    ]
    .iter()
    .filter_map(|k| usage.get(k).and_then(Value::as_u64))
    .sum()
}

/// One stream-json line.
fn line(st: &mut State, bytes: &[u8]) {
    // Cheap rejection: only assistant and result lines matter.
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    if !has(b"\"assistant\"") && !has(b"\"result\"") {
        return;
    }
    let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
        return;
    };
    match v.get("type").and_then(Value::as_str) {
        Some("assistant") => {
            let Some(m) = v.get("message") else { return };
            if let Some(content) = m.get("content").and_then(Value::as_array) {
                for c in content {
                    if c.get("type").and_then(Value::as_str) == Some("tool_use")
                        && let Some(name) = c.get("name").and_then(Value::as_str)
                    {
                        st.last_tool = Some(name.chars().take(200).collect());
                    }
                }
            }
            if let (Some(id), Some(u)) = (m.get("id").and_then(Value::as_str), m.get("usage")) {
                // Bounded: a sub-agent has far fewer messages than this.
                if st.usage.len() < 100_000 || st.usage.contains_key(id) {
                    st.usage.insert(id.to_string(), tokens_of(u));
                }
            }
        }
        Some("result") => {
            if let Some(u) = v.get("usage") {
                st.result_tokens = tokens_of(u);
            }
        }
        _ => {}
    }
}

/// CPU time (clock ticks) used so far by the processes of group `pgid`, from `/proc`.
fn group_cpu(pgid: i32) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut total = 0;
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command (which may hold spaces) start after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // rest[0] = state (field 3), pgrp = field 5, utime = 14, stime = 15.
        if f.get(2).and_then(|p| p.parse::<i32>().ok()) == Some(pgid) {
            total += f.get(11).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
                + f.get(12).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    total
}

impl Monitor {
    /// Watch one attempt (root `pid`, a process-group leader) until the future is dropped: once a
    /// [`TICK`], emit progress when it changed.
    pub async fn watch(self, tracker: Arc<Tracker>, pid: u32) {
        let started = Instant::now();
        let mut last: Option<(Option<String>, u64, bool)> = None;
        // The group's CPU at the last look, and when it last moved (only sampled while silent).
        let mut cpu: Option<u64> = None;
        let mut cpu_moved = Instant::now();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (tool, tokens, last_output) = tracker.snapshot();
            let silent = last_output.elapsed();
            if silent >= TICK {
                let now_cpu = tokio::task::spawn_blocking(move || group_cpu(pid as i32))
                    .await
                    .unwrap_or(0);
                if cpu != Some(now_cpu) {
                    cpu = Some(now_cpu);
                    cpu_moved = Instant::now();
                }
            } else {
                cpu = None;
                cpu_moved = Instant::now();
            }
            let stalled = silent >= self.stall && cpu_moved.elapsed() >= self.stall;
            let now = (tool.clone(), tokens, stalled);
            let changed = match &last {
                None => tool.is_some() || tokens > 0 || stalled,
                Some(prev) => *prev != now,
            };
            if changed {
                (self.sink)(Progress {
                    last_tool: tool,
                    tokens,
                    elapsed: started.elapsed(),
                    stalled,
                });
                last = Some(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_json_lines_give_the_last_tool_and_tokens_across_chunks() {
        let t = Tracker::new();
        let lines = concat!(
            r#"{"type":"system","subtype":"init"}"#,
            "\n",
            r#"{"type":"assistant","message":{"id":"m1","content":[{"type":"tool_use","name":"Bash","input":{}}],"usage":{"input_tokens":10,"output_tokens":5}}}"#,
            "\n",
            r#"{"type":"assistant","message":{"id":"m1","content":[{"type":"text","text":"x"}],"usage":{"input_tokens":10,"output_tokens":7}}}"#,
            "\n",
            r#"{"type":"assistant","message":{"id":"m2","content":[{"type":"tool_use","name":"Read","input":{}}],"usage":{"input_tokens":20,"output_tokens":3,"cache_read_input_tokens":100}}}"#,
            "\n",
            "not json\n",
        );
        // Any chunking gives the same state.
        for size in [1, 7, 64, lines.len()] {
            let t2 = Tracker::new();
            for c in lines.as_bytes().chunks(size) {
                t2.output(c, true);
            }
            let (tool, tokens, _) = t2.snapshot();
            assert_eq!(tool.as_deref(), Some("Read"), "chunk {size}");
            assert_eq!(tokens, 17 + 123, "chunk {size}");
        }
        t.output(
            br#"{"type":"result","subtype":"success","usage":{"input_tokens":500,"output_tokens":40}}
"#,
            true,
        );
        assert_eq!(t.snapshot().1, 540);
        // stderr is output, not parsed.
        t.output(
            b"{\"type\":\"result\",\"usage\":{\"output_tokens\":9999}}\n",
            false,
        );
        assert_eq!(t.snapshot().1, 540);
    }

    #[test]
    fn an_overlong_line_is_skipped_to_its_end() {
        let t = Tracker::new();
        t.output(&vec![b'x'; MAX_LINE + 10], true);
        t.output(b"yyy\n", true);
        t.output(
            br#"{"type":"assistant","message":{"id":"a","content":[{"type":"tool_use","name":"Edit"}]}}
"#,
            true,
        );
        assert_eq!(t.snapshot().0.as_deref(), Some("Edit"));
    }

    #[test]
    fn own_group_cpu_is_read() {
        // This test process's own group: some CPU was used.
        let pgid = nix::unistd::getpgrp().as_raw();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        assert!(group_cpu(pgid) > 0);
    }
}
