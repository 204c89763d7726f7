//! `orchestration:`: how mpm acts on what the main agent says, and how results get back to it.

use serde::{Deserialize, Serialize};

/// What mpm does with delegations (`--mode` / `orchestration.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OrchestrationMode {
    /// Detect, run, and feed results back.
    #[default]
    Intercept,
    /// As `intercept`, and the main agent is taught the protocol (claude: `--append-system-prompt`).
    Inject,
    /// Detect and record, never run (`--no-exec`).
    Observe,
    /// No detection at all (`--no-detect`).
    Passthrough,
}

impl OrchestrationMode {
    /// The mode's name, as in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            OrchestrationMode::Intercept => "intercept",
            OrchestrationMode::Inject => "inject",
            OrchestrationMode::Observe => "observe",
            OrchestrationMode::Passthrough => "passthrough",
        }
    }
}

/// How finished results reach a profile's main agent (`profiles.<name>.feedback`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeedbackMode {
    /// Never: results are only listed (`mpm delegations`).
    #[default]
    Off,
    /// When the batch has finished: claude's Stop hook when it can, else one bracketed paste while
    /// the session is idle and the user is not typing.
    OnIdle,
    /// With the user's next prompt (claude's UserPromptSubmit hook adds them as context).
    NextPrompt,
}

impl FeedbackMode {
    /// The mode's name, as in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackMode::Off => "off",
            FeedbackMode::OnIdle => "on-idle",
            FeedbackMode::NextPrompt => "next-prompt",
        }
    }
}

/// The `orchestration:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrchestrationConfig {
    /// `intercept`, `inject`, `observe` or `passthrough`.
    pub mode: OrchestrationMode,
    /// Feedback messages per session at most; later batches stay pending, so a model that
    /// delegates in every turn cannot make mpm feed it forever.
    pub max_feedback_per_session: u32,
    /// Largest feedback message, bytes.
    pub feedback_max_bytes: usize,
    /// Result lines quoted per delegation in a feedback message.
    pub feedback_lines: usize,
    /// Without `session.state` events: the agent counts as idle after this much output silence.
    pub idle_quiet_ms: u64,
    /// No paste until the user has not typed for this long (and the input line is empty).
    pub typing_quiet_ms: u64,
    /// Without `session.state` events: delegations detected this close together form one batch.
    pub batch_window_ms: u64,
    /// How long claude's Stop hook may wait for the turn's delegations to finish.
    pub stop_wait_secs: u64,
}

impl Default for OrchestrationConfig {
    fn default() -> Self {
        OrchestrationConfig {
            mode: OrchestrationMode::Intercept,
            max_feedback_per_session: 10,
            feedback_max_bytes: 4096,
            feedback_lines: 5,
            idle_quiet_ms: 1500,
            typing_quiet_ms: 2000,
            batch_window_ms: 2000,
            stop_wait_secs: 55,
        }
    }
}

impl OrchestrationConfig {
    /// `run.detect` / `run.exec` as the mode leaves them: `observe` never runs, `passthrough`
    /// never detects.
    pub fn detect_exec(&self, detect: bool, exec: bool) -> (bool, bool) {
        match self.mode {
            OrchestrationMode::Passthrough => (false, false),
            OrchestrationMode::Observe => (detect, false),
            _ => (detect, exec),
        }
    }
}
