//! The published session state: `starting`, `working`, `idle`, `needs_input`, `blocked`, `exited`.
//!
//! [`StateMachine`] is pure and table-driven: each [`Signal`] from a source proposes a state, and the
//! rules below decide whether it is taken. Sources, strongest first:
//! * **hooks** (claude): `UserPromptSubmit` and the tool hooks → working, `Stop` → idle, a `Stop`
//!   that mpm blocked with delegation results ([`STOP_BLOCKED`]) → working, a permission
//!   `Notification` → needs_input. Once a hook was heard, the hooks alone decide between working and
//!   idle (the weaker signals below only fill in needs_input and blocked);
//! * **transcript**: the end of a turn → idle;
//! * **screen** cues ([`cues`]: a small YAML table per profile and CLI version): a spinner → working,
//!   the prompt → idle, a dialog → needs_input, a usage-limit message → blocked (with `resets_at`);
//! * **window title** (OSC 0/2; claude shows `✳ Claude Code` idle and a spinner glyph working).
//!   Once a title was seen (and no hook), the title alone decides between working and idle: the
//!   spinner and end-of-turn cues only move the session out of `starting` and `needs_input`. The
//!   stream's cues are text drawn, not state: the fullscreen renderer repaints an earlier turn's
//!   `✻ Worked for 3s` row with every frame, which read as a cue flips a working session to idle;
//!   the title is sent once per change;
//! * **silence**: no output and no CPU in the agent's tree for a while → idle (a session without
//!   hooks, title or cues still settles).
//!
//! `exited` is final. `blocked` holds until the user submits a prompt or the agent works again by
//! a strong source (hook, spinner), so a limit message is not hidden by the idle prompt drawn below
//! it. `needs_input` holds until something says the agent moved on (a hook, a spinner, the prompt).

pub mod cues;

use crate::events::SessionState;

/// The pseudo hook event for a `Stop` that mpm's answer blocked (claude continues with the
/// results it was given; no `UserPromptSubmit` marks that turn). Its reason is `hook:StopBlocked`.
pub const STOP_BLOCKED: &str = "StopBlocked";

/// One observation about the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// A hook call (`Stop`, `UserPromptSubmit`, `Notification`, `PreToolUse`, ...); for
    /// `Notification`, `permission` says whether it is a permission prompt.
    Hook {
        /// The hook event's name.
        event: String,
        /// A `Notification` that is a permission prompt.
        permission: bool,
    },
    /// The transcript shows the end of a turn.
    TranscriptTurnEnd,
    /// A screen cue of the profile's table.
    Screen {
        /// The state the cue means.
        state: SessionState,
        /// The cue's name.
        cue: String,
        /// For a usage limit: when it resets, as shown.
        resets_at: Option<String>,
    },
    /// The window title says working (`true`) or idle.
    Title {
        /// Working (`true`) or idle.
        working: bool,
    },
    /// No output and no CPU for the configured time.
    Silence,
    /// The agent process ended.
    Exited,
}

/// A change of state, for a `session.state` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The new state.
    pub state: SessionState,
    /// The state before.
    pub previous: Option<SessionState>,
    /// Which signal decided.
    pub reason: String,
    /// For `blocked`: when the limit resets.
    pub resets_at: Option<String>,
}

/// The state of one session.
#[derive(Debug)]
pub struct StateMachine {
    state: SessionState,
    hooks_live: bool,
    /// A window title was seen: the title, not the stream's spinner/turn-done cues, decides
    /// between working and idle (when no hook is live).
    title_live: bool,
    resets_at: Option<String>,
}

impl Default for StateMachine {
    fn default() -> Self {
        StateMachine::new()
    }
}

impl StateMachine {
    /// A session that was just spawned (`starting`).
    pub fn new() -> StateMachine {
        StateMachine {
            state: SessionState::Starting,
            hooks_live: false,
            title_live: false,
            resets_at: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// For `blocked`: when the limit resets, as shown.
    pub fn resets_at(&self) -> Option<&str> {
        self.resets_at.as_deref()
    }

    /// The state `signal` proposes, with its reason, or `None` when it is not taken.
    fn propose(&mut self, signal: &Signal) -> Option<(SessionState, String, Option<String>)> {
        use SessionState::*;
        let now = self.state;
        if now == Exited {
            return None;
        }
        let weak_may_decide = !self.hooks_live;
        // The stream's working/idle cues decide only while neither hooks nor the title do, or to
        // leave `starting` and `needs_input`.
        let cues_may_decide =
            (weak_may_decide && !self.title_live) || matches!(now, Starting | NeedsInput);
        match signal {
            Signal::Exited => Some((Exited, "exit".into(), None)),
            Signal::Hook { event, permission } => {
                self.hooks_live = true;
                let reason = format!("hook:{event}");
                match event.as_str() {
                    "UserPromptSubmit" => Some((Working, reason, None)),
                    STOP_BLOCKED if now != Blocked => Some((Working, reason, None)),
                    "PreToolUse" | "PostToolUse" | "SubagentStop" if now != Blocked => {
                        Some((Working, reason, None))
                    }
                    "Stop" if now != Blocked => Some((Idle, reason, None)),
                    "Notification" if *permission && now != Blocked => {
                        Some((NeedsInput, reason, None))
                    }
                    _ => None,
                }
            }
            Signal::TranscriptTurnEnd => {
                matches!(now, Working | Starting).then(|| (Idle, "transcript".into(), None))
            }
            Signal::Screen {
                state,
                cue,
                resets_at,
            } => {
                let reason = format!("screen:{cue}");
                match state {
                    Blocked => Some((Blocked, reason, resets_at.clone())),
                    NeedsInput if now != Blocked => Some((NeedsInput, reason, None)),
                    Working
                        if now != Blocked
                            && (weak_may_decide || now != Idle)
                            && (cues_may_decide || self.hooks_live) =>
                    {
                        Some((Working, reason, None))
                    }
                    Idle if now == Starting
                        || (weak_may_decide
                            && cues_may_decide
                            && matches!(now, Working | NeedsInput)) =>
                    {
                        Some((Idle, reason, None))
                    }
                    _ => None,
                }
            }
            Signal::Title { working } => {
                if !weak_may_decide && now != Starting {
                    return None;
                }
                self.title_live = true;
                match (working, now) {
                    // A spinner title after a dialog: it was answered, the agent works again.
                    (true, Starting | Idle | NeedsInput) => Some((Working, "title".into(), None)),
                    (false, Starting | Working) => Some((Idle, "title".into(), None)),
                    _ => None,
                }
            }
            Signal::Silence => (weak_may_decide && matches!(now, Starting | Working))
                .then(|| (Idle, "silence".into(), None)),
        }
    }

    /// Apply `signal`; the transition when the state changed (or a `blocked` got a new reset time).
    pub fn on(&mut self, signal: &Signal) -> Option<Transition> {
        let (state, reason, mut resets_at) = self.propose(signal)?;
        // Still blocked: a message without the reset time, or with a shorter form of the one
        // known (`4:25pm` after `4:25pm (UTC)`), keeps the one known.
        if state == SessionState::Blocked
            && self.state == SessionState::Blocked
            && let Some(known) = &self.resets_at
            && resets_at.as_deref().is_none_or(|r| known.starts_with(r))
        {
            resets_at = Some(known.clone());
        }
        if state == self.state && (state != SessionState::Blocked || resets_at == self.resets_at) {
            return None;
        }
        let previous = Some(self.state);
        self.state = state;
        self.resets_at = resets_at.clone();
        Some(Transition {
            state,
            previous,
            reason,
            resets_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SessionState::*;

    fn hook(e: &str) -> Signal {
        Signal::Hook {
            event: e.into(),
            permission: false,
        }
    }
    fn screen(state: SessionState, cue: &str) -> Signal {
        Signal::Screen {
            state,
            cue: cue.into(),
            resets_at: None,
        }
    }

    /// A named sequence of signals, with the state after each (`None`: no change).
    type Case = (&'static str, Vec<(Signal, Option<SessionState>)>);

    /// Each row: the signals in order, and the state after each (`None`: no change).
    #[test]
    fn transition_table() {
        let permission = Signal::Hook {
            event: "Notification".into(),
            permission: true,
        };
        let limit = Signal::Screen {
            state: Blocked,
            cue: "usage-limit".into(),
            resets_at: Some("3pm".into()),
        };
        let cases: Vec<Case> = vec![
            (
                "a hooked turn",
                vec![
                    (screen(Idle, "prompt"), Some(Idle)),
                    (hook("UserPromptSubmit"), Some(Working)),
                    (hook("PreToolUse"), None),
                    (hook("Stop"), Some(Idle)),
                    (Signal::Exited, Some(Exited)),
                    (hook("UserPromptSubmit"), None),
                ],
            ),
            (
                "a Stop blocked with results: claude works on them, then stops again",
                vec![
                    (hook("UserPromptSubmit"), Some(Working)),
                    (hook("Stop"), Some(Idle)),
                    (hook(STOP_BLOCKED), Some(Working)),
                    (hook("Stop"), Some(Idle)),
                ],
            ),
            (
                "with hooks, the prompt and silence do not end a turn",
                vec![
                    (hook("UserPromptSubmit"), Some(Working)),
                    (screen(Idle, "prompt"), None),
                    (Signal::Silence, None),
                    (Signal::Title { working: false }, None),
                    (Signal::TranscriptTurnEnd, Some(Idle)),
                ],
            ),
            (
                "without hooks, the title and silence decide; the stream's cues do not",
                vec![
                    (Signal::Title { working: false }, Some(Idle)),
                    (Signal::Title { working: true }, Some(Working)),
                    (Signal::Silence, Some(Idle)),
                    (screen(Working, "spinner"), None),
                    (Signal::Title { working: true }, Some(Working)),
                    (screen(Idle, "turn-done"), None),
                    (screen(NeedsInput, "dialog"), Some(NeedsInput)),
                    (Signal::Title { working: false }, None),
                    (Signal::Title { working: true }, Some(Working)),
                    (Signal::Title { working: false }, Some(Idle)),
                ],
            ),
            (
                "without hooks or a title, the stream's cues decide",
                vec![
                    (screen(Idle, "prompt"), Some(Idle)),
                    (screen(Working, "spinner"), Some(Working)),
                    (screen(Idle, "turn-done"), Some(Idle)),
                    (screen(Working, "spinner"), Some(Working)),
                    (screen(NeedsInput, "dialog"), Some(NeedsInput)),
                    (screen(Working, "spinner"), Some(Working)),
                ],
            ),
            (
                "a permission dialog, then the tool runs",
                vec![
                    (hook("UserPromptSubmit"), Some(Working)),
                    (permission.clone(), Some(NeedsInput)),
                    (screen(Idle, "prompt"), None),
                    (hook("PostToolUse"), Some(Working)),
                    (screen(NeedsInput, "dialog"), Some(NeedsInput)),
                    (hook("Stop"), Some(Idle)),
                ],
            ),
            (
                "a usage limit holds until the user prompts",
                vec![
                    (hook("UserPromptSubmit"), Some(Working)),
                    (limit.clone(), Some(Blocked)),
                    (limit.clone(), None),
                    (hook("Stop"), None),
                    (screen(Idle, "prompt"), None),
                    (permission, None),
                    (hook("UserPromptSubmit"), Some(Working)),
                ],
            ),
        ];
        for (name, steps) in cases {
            let mut m = StateMachine::new();
            for (i, (signal, want)) in steps.into_iter().enumerate() {
                let got = m.on(&signal).map(|t| t.state);
                assert_eq!(got, want, "{name}: step {i} ({signal:?})");
            }
        }
    }

    /// claude shows a usage limit in several messages: with the reset time and its zone, without
    /// the zone, without a time. The first full one stays.
    #[test]
    fn a_blocked_session_keeps_the_fullest_reset_time() {
        let limit = |r: Option<&str>| Signal::Screen {
            state: Blocked,
            cue: "usage-limit".into(),
            resets_at: r.map(String::from),
        };
        let mut m = StateMachine::new();
        assert!(m.on(&limit(None)).is_some());
        let t = m.on(&limit(Some("4:25pm (UTC)"))).unwrap();
        assert_eq!(t.resets_at.as_deref(), Some("4:25pm (UTC)"));
        assert!(m.on(&limit(Some("4:25pm"))).is_none());
        assert!(m.on(&limit(None)).is_none());
        assert_eq!(m.resets_at(), Some("4:25pm (UTC)"));
        let t = m.on(&limit(Some("5:00pm (UTC)"))).unwrap();
        assert_eq!(t.resets_at.as_deref(), Some("5:00pm (UTC)"));
    }

    #[test]
    fn transitions_carry_previous_reason_and_reset_time() {
        let mut m = StateMachine::new();
        let t = m
            .on(&Signal::Screen {
                state: Blocked,
                cue: "usage-limit".into(),
                resets_at: Some("3pm (UTC)".into()),
            })
            .unwrap();
        assert_eq!(t.previous, Some(Starting));
        assert_eq!(t.reason, "screen:usage-limit");
        assert_eq!(t.resets_at.as_deref(), Some("3pm (UTC)"));
        assert_eq!(m.resets_at(), Some("3pm (UTC)"));
        let t = m.on(&Signal::Exited).unwrap();
        assert_eq!((t.state, t.previous), (Exited, Some(Blocked)));
    }
}
