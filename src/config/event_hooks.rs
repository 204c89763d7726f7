//! `hooks:` (user commands run on events) and `notify:` (terminal and desktop notifications).
//! Not to be confused with the agent CLI's own hooks (`mpm hook EVENT`).

use serde::{Deserialize, Serialize};

/// One user hook: `argv` (never a shell) runs with the event as one JSON line on stdin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventHook {
    /// Event kinds (`delegation.finished`) or prefixes ending in `*` (`resource.*`); empty = all.
    pub on: Vec<String>,
    /// The command (never a shell); the event arrives as JSON on its stdin.
    pub argv: Vec<String>,
    /// The hook is stopped (SIGTERM, then SIGKILL) after this long.
    pub timeout_secs: f64,
}

impl Default for EventHook {
    fn default() -> Self {
        EventHook {
            on: Vec::new(),
            argv: Vec::new(),
            timeout_secs: 10.0,
        }
    }
}

/// Notifications when a session needs input, is blocked, a delegation batch finished, or a limit
/// stopped an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// OSC 9 / OSC 777 desktop notification and a bell written to the attached terminal.
    pub terminal: bool,
    /// `notify-send` when it is installed.
    pub desktop: bool,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            terminal: true,
            desktop: true,
        }
    }
}
