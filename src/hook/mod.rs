//! Claude's hooks as a signal source.
//!
//! For the claude profile the supervisor starts claude with `--settings <file>` ([`settings_json`])
//! adding hooks (Stop, Notification, UserPromptSubmit, PreToolUse/PostToolUse for `Agent|Task`,
//! SubagentStop) that run `mpm hook EVENT`. Claude merges `--settings` with the user's own settings
//! files, so the user's hooks keep running next to mpm's. `mpm hook` ([`client::run`]) reads the
//! hook's JSON on stdin and reports it over the per-session Unix socket named in `MPM_HOOK_SOCKET`
//! (mode 0600, in the session's runtime dir) to the session's [`server::HookServer`]; what the
//! session answers is the hook's JSON response, printed on stdout for claude.
//!
//! Wire protocol (one connection per hook call): the client writes one JSON line
//! `{"event": "Stop", "payload": {...}}` and half-closes; the server answers one JSON line
//! `{"stdout": "..."}` (possibly empty) and closes. Both sides bound sizes and time: the client never
//! holds claude for longer than [`client::REPLY_TIMEOUT`], and exits 0 with no output when no session
//! listens.
//!
//! The session side of the answers is a [`HookResponder`]: the Stop hook may answer a `reason` (claude
//! then continues with it as the next user turn: `{"decision":"block","reason":...}`) and
//! UserPromptSubmit may add context. The default, [`NoResponse`], answers nothing.

pub(crate) mod client;
pub mod server;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The environment variable naming the session's hook socket.
pub const SOCKET_ENV: &str = "MPM_HOOK_SOCKET";

/// The hook events mpm registers, with the tool matcher for the tool events.
pub const EVENTS: &[(&str, Option<&str>)] = &[
    ("Stop", None),
    ("Notification", None),
    ("UserPromptSubmit", None),
    ("PreToolUse", Some("Agent|Task")),
    ("PostToolUse", Some("Agent|Task")),
    ("SubagentStop", None),
];

/// Errors of the hook channel.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The per-session socket cannot be created or reached.
    #[error("hook socket {path}: {source}")]
    Socket {
        /// The socket's path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The settings file that adds mpm's hooks cannot be written.
    #[error("hook settings file {path}: {source}")]
    Settings {
        /// The file's path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The Stop hook's input (fields mpm reads; others are ignored).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct StopPayload {
    /// claude's session id.
    pub session_id: Option<String>,
    /// claude's transcript file (JSONL) for this session.
    pub transcript_path: Option<String>,
    /// True when claude already continues because of a Stop hook's block (answer nothing to avoid
    /// a loop).
    pub stop_hook_active: bool,
    /// The exact markdown of the turn's final assistant message.
    pub last_assistant_message: Option<String>,
}

/// The UserPromptSubmit hook's input.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct PromptPayload {
    /// claude's session id.
    pub session_id: Option<String>,
    /// claude's transcript file (JSONL) for this session.
    pub transcript_path: Option<String>,
    /// What the user typed.
    pub prompt: String,
}

/// The Notification hook's input.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct NotificationPayload {
    /// What claude says (e.g. that it needs permission).
    pub message: String,
    /// `permission_prompt`, `idle_prompt`, ... when claude sends one.
    pub notification_type: Option<String>,
}

impl NotificationPayload {
    /// A permission prompt waits for the user (by its type, or by claude's wording).
    pub fn is_permission(&self) -> bool {
        self.notification_type.as_deref() == Some("permission_prompt")
            || self.message.to_lowercase().contains("permission")
    }
}

/// The tool hooks' input (PreToolUse, PostToolUse).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct ToolPayload {
    /// The tool's name (`Agent`, `Task`, `Bash`, ...).
    pub tool_name: String,
    /// The tool's input, as claude sent it.
    pub tool_input: Value,
}

/// One hook call, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum HookEvent {
    /// The turn ended (with the final assistant message).
    Stop(StopPayload),
    /// The user submitted a prompt.
    UserPromptSubmit(PromptPayload),
    /// claude needs the user (a permission dialog, an idle prompt).
    Notification(NotificationPayload),
    /// A tool is about to run.
    PreToolUse(ToolPayload),
    /// A tool ran.
    PostToolUse(ToolPayload),
    /// One of claude's own sub-agents ended.
    SubagentStop,
    /// Any other event name (kept for logs).
    Other(String),
}

impl HookEvent {
    /// Parse `payload` as the input of hook `event`; a payload that does not fit gives the event with
    /// default fields (a hook must never fail because claude added or renamed a field).
    pub fn parse(event: &str, payload: &Value) -> HookEvent {
        fn get<T: for<'de> Deserialize<'de> + Default>(v: &Value) -> T {
            serde_json::from_value(v.clone()).unwrap_or_default()
        }
        match event {
            "Stop" => HookEvent::Stop(get(payload)),
            "UserPromptSubmit" => HookEvent::UserPromptSubmit(get(payload)),
            "Notification" => HookEvent::Notification(get(payload)),
            "PreToolUse" => HookEvent::PreToolUse(get(payload)),
            "PostToolUse" => HookEvent::PostToolUse(get(payload)),
            "SubagentStop" => HookEvent::SubagentStop,
            other => HookEvent::Other(other.to_string()),
        }
    }

    /// The event's name as claude spells it.
    pub fn name(&self) -> &str {
        match self {
            HookEvent::Stop(_) => "Stop",
            HookEvent::UserPromptSubmit(_) => "UserPromptSubmit",
            HookEvent::Notification(_) => "Notification",
            HookEvent::PreToolUse(_) => "PreToolUse",
            HookEvent::PostToolUse(_) => "PostToolUse",
            HookEvent::SubagentStop => "SubagentStop",
            HookEvent::Other(n) => n,
        }
    }
}

/// The session's answers to claude's hooks. Called on the hook server's thread; keep it fast (claude
/// waits for the answer, and `mpm hook` gives up after [`client::REPLY_TIMEOUT`]).
pub trait HookResponder: Send + Sync {
    /// The turn ended. `Some(reason)` makes claude continue with `reason` as the next user turn.
    /// Also called when `stop_hook_active` (this turn continued because of an earlier block): a
    /// turn that results continued may delegate again, and its results come back the same way.
    /// What keeps that from looping is the responder's cap (`max_feedback_per_session`), and that
    /// it blocks only with results it has not handed out yet.
    fn on_stop(&self, payload: &StopPayload) -> Option<String>;
    /// The user submitted a prompt. `Some(context)` is added to what the model sees with it.
    fn on_user_prompt(&self, payload: &PromptPayload) -> Option<String>;
}

/// The default responder: answers nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoResponse;

impl HookResponder for NoResponse {
    fn on_stop(&self, _: &StopPayload) -> Option<String> {
        None
    }
    fn on_user_prompt(&self, _: &PromptPayload) -> Option<String> {
        None
    }
}

/// The hook's stdout for claude: the responder's answer as the event's JSON response, or nothing.
pub fn response(responder: &dyn HookResponder, event: &HookEvent) -> Option<String> {
    match event {
        HookEvent::Stop(p) => {
            let reason = responder.on_stop(p)?;
            Some(serde_json::json!({"decision": "block", "reason": reason}).to_string())
        }
        HookEvent::UserPromptSubmit(p) => {
            let context = responder.on_user_prompt(p)?;
            Some(
                serde_json::json!({"hookSpecificOutput": {
                    "hookEventName": "UserPromptSubmit",
                    "additionalContext": context,
                }})
                .to_string(),
            )
        }
        _ => None,
    }
}

/// Quote `s` for a POSIX shell (claude runs a hook's `command` through one).
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The `--settings` JSON adding mpm's hooks: each runs `<mpm> hook <EVENT>` with a timeout (seconds)
/// a little above the client's own, so claude never waits long on mpm. The Stop hook waits for the
/// turn's delegations (`stop_wait`, `orchestration.stop_wait_secs`): its client is told to wait
/// that long (`--wait`), and claude a little longer, or the results would reach a hook that gave
/// up.
pub fn settings_json(mpm: &std::path::Path, stop_wait: std::time::Duration) -> String {
    let exe = shell_quote(&mpm.to_string_lossy());
    let mut hooks = serde_json::Map::new();
    for (event, matcher) in EVENTS {
        let (command, wait) = if *event == "Stop" && stop_wait > client::REPLY_TIMEOUT {
            // The responder answers within stop_wait + 1 s; the client allows one more.
            let wait = stop_wait.as_secs() + 2;
            (format!("{exe} hook {event} --wait {wait}"), wait)
        } else {
            (
                format!("{exe} hook {event}"),
                client::REPLY_TIMEOUT.as_secs(),
            )
        };
        let mut entry = serde_json::json!({
            "hooks": [{
                "type": "command",
                "command": command,
                "timeout": wait + 5,
            }]
        });
        if let Some(m) = matcher {
            entry["matcher"] = Value::String((*m).to_string());
        }
        hooks.insert((*event).to_string(), Value::Array(vec![entry]));
    }
    serde_json::json!({ "hooks": hooks }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Answers;
    impl HookResponder for Answers {
        fn on_stop(&self, p: &StopPayload) -> Option<String> {
            Some(format!(
                "results for {}",
                p.session_id.as_deref().unwrap_or("")
            ))
        }
        fn on_user_prompt(&self, p: &PromptPayload) -> Option<String> {
            Some(format!("context for {}", p.prompt))
        }
    }

    #[test]
    fn parses_payloads_and_tolerates_unknown_fields() {
        let stop = serde_json::json!({"session_id": "s", "stop_hook_active": false,
            "last_assistant_message": "QA Agent: test", "new_field": [1]});
        match HookEvent::parse("Stop", &stop) {
            HookEvent::Stop(p) => {
                assert_eq!(p.last_assistant_message.as_deref(), Some("QA Agent: test"));
                assert_eq!(p.session_id.as_deref(), Some("s"));
            }
            other => panic!("{other:?}"),
        }
        // A wrong type gives defaults, not an error.
        assert_eq!(
            HookEvent::parse("Stop", &serde_json::json!({"stop_hook_active": "yes"})),
            HookEvent::Stop(StopPayload::default())
        );
        let n = serde_json::json!({"message": "Claude needs your permission to use Bash"});
        match HookEvent::parse("Notification", &n) {
            HookEvent::Notification(p) => assert!(p.is_permission()),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            HookEvent::parse("SessionEnd", &Value::Null).name(),
            "SessionEnd"
        );
    }

    #[test]
    fn responses_are_claudes_hook_json() {
        let stop = HookEvent::Stop(StopPayload {
            session_id: Some("s".into()),
            ..Default::default()
        });
        let r: Value = serde_json::from_str(&response(&Answers, &stop).unwrap()).unwrap();
        assert_eq!(r["decision"], "block");
        assert_eq!(r["reason"], "results for s");
        // A turn that continued because of a block may block again (new results; the cap
        // bounds it): the responder decides.
        let active = HookEvent::Stop(StopPayload {
            stop_hook_active: true,
            ..Default::default()
        });
        assert!(response(&Answers, &active).is_some());
        assert_eq!(response(&NoResponse, &active), None);
        let prompt = HookEvent::UserPromptSubmit(PromptPayload {
            prompt: "go".into(),
            ..Default::default()
        });
        let r: Value = serde_json::from_str(&response(&Answers, &prompt).unwrap()).unwrap();
        assert_eq!(
            r["hookSpecificOutput"]["additionalContext"],
            "context for go"
        );
        assert_eq!(response(&NoResponse, &stop), None);
        assert_eq!(response(&NoResponse, &prompt), None);
    }

    #[test]
    fn settings_register_every_event() {
        let s: Value = serde_json::from_str(&settings_json(
            std::path::Path::new("/opt/it's/mpm"),
            std::time::Duration::from_secs(55),
        ))
        .unwrap();
        for (event, matcher) in EVENTS {
            let e = &s["hooks"][event][0];
            let cmd = e["hooks"][0]["command"].as_str().unwrap();
            let timeout = e["hooks"][0]["timeout"].as_u64().unwrap();
            if *event == "Stop" {
                // The Stop hook outlasts the wait for the turn's delegations.
                assert_eq!(cmd, r"'/opt/it'\''s/mpm' hook Stop --wait 57");
                assert_eq!(timeout, 62);
            } else {
                assert_eq!(cmd, format!(r"'/opt/it'\''s/mpm' hook {event}"));
                assert_eq!(timeout, 15);
            }
            assert_eq!(e["matcher"].as_str(), *matcher);
        }
    }
}
