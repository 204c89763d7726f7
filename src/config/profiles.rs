//! The built-in agent CLI profiles (claude, codex, gemini, aider, opencode, shell) and how a
//! profile's headless output is read.
//!
//! A [`super::Profile`] says how to start one agent CLI interactively (command, the flags mpm adds,
//! environment, transcript, feedback) and how to run it headless for a sub-agent: an argv template
//! (the task is always exactly one argv element, never a shell: [`crate::executor::argv`]) and the
//! format of what it prints ([`HeadlessOutput`]), from which the executor reads the final answer
//! and the token usage (`crate::executor::headless`). Built-ins are defaults like every other
//! setting: `profiles.<name>.<field>` in a config file overrides one field, and a new name adds a
//! profile.
//!
//! Every flag below was checked against the pinned versions (`.ci/install-clis.sh`); what each
//! version does headless is written down in `fixtures/README.md` ("Headless forms").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{FeedbackMode, Profile};

/// How a profile's headless output is read for the result file and the budgets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadlessOutput {
    /// claude `-p --output-format stream-json` (or `json`): the `result` line's text, `usage` and
    /// `total_cost_usd`.
    Claude,
    /// codex `exec --json`: the last `item.completed` `agent_message`, usage summed over
    /// `turn.completed` (input + output tokens).
    Codex,
    /// gemini `-p -o stream-json`: the assistant `message` deltas, the `result` line's
    /// `stats.total_tokens`.
    Gemini,
    /// opencode `run --format json`: the `text` parts of the last step, tokens and cost summed
    /// over `step_finish`.
    Opencode,
    /// aider `--message --no-pretty`: the text between the start-up banner and the last
    /// `Tokens: N sent, M received.` line, which gives the usage (`2.4k` = 2400).
    Aider,
    /// Anything else: stdout as it is, no usage (the default for a new profile).
    #[default]
    Text,
}

impl HeadlessOutput {
    /// The name used in configuration files.
    pub fn as_str(self) -> &'static str {
        match self {
            HeadlessOutput::Claude => "claude",
            HeadlessOutput::Codex => "codex",
            HeadlessOutput::Gemini => "gemini",
            HeadlessOutput::Opencode => "opencode",
            HeadlessOutput::Aider => "aider",
            HeadlessOutput::Text => "text",
        }
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// claude's headless form (also [`super::default_agent_argv`]): `-p` is a boolean flag and the
/// prompt positional, so a task starting with `-` is guarded by the executor's argv rules.
pub(crate) const CLAUDE_HEADLESS: &[&str] = &[
    "claude",
    "-p",
    "{task}",
    "--append-system-prompt",
    "{role}",
    "--output-format",
    "stream-json",
    "--verbose",
    "--permission-mode",
    "acceptEdits",
];

/// The built-in profiles by name.
pub(crate) fn builtin() -> BTreeMap<String, Profile> {
    let mut p = BTreeMap::new();
    p.insert(
        "claude".to_string(),
        Profile {
            description: "Claude Code (claude); transcript and hooks are exact sources".into(),
            command: strings(&["claude"]),
            transcript: true,
            feedback: FeedbackMode::OnIdle,
            headless: strings(CLAUDE_HEADLESS),
            headless_output: HeadlessOutput::Claude,
            ..Profile::default()
        },
    );
    // `codex exec` never starts the shared app-server daemon (checked with 0.171.0); the TUI does
    // (`app-server --managed-daemon`, outside mpm's tree), so mpm starts it with `--no-daemon`.
    // `--ephemeral`: no rollout file per sub-agent. The role arrives as a developer message
    // (`-c developer_instructions=...`, the value read as TOML: `{role_toml}` quotes it).
    // `--sandbox workspace-write`: it may edit the working folder, like claude's `acceptEdits`.
    p.insert(
        "codex".to_string(),
        Profile {
            description: "OpenAI Codex CLI (codex)".into(),
            command: strings(&["codex"]),
            args: strings(&["--no-daemon"]),
            headless: strings(&[
                "codex",
                "exec",
                "--skip-git-repo-check",
                "--ephemeral",
                "--json",
                "--sandbox",
                "workspace-write",
                "-c",
                "developer_instructions={role_toml}",
                "{task}",
            ]),
            headless_output: HeadlessOutput::Codex,
            ..Profile::default()
        },
    );
    // gemini has no system-prompt flag (GEMINI_SYSTEM_MD replaces the whole system prompt), so the
    // role is prepended to the task (the template has no `{role}`). `-p` takes the prompt as its
    // value, so a task starting with `-` is guarded (a leading space).
    p.insert(
        "gemini".to_string(),
        Profile {
            description: "Google Gemini CLI (gemini)".into(),
            command: strings(&["gemini"]),
            headless: strings(&[
                "gemini",
                "--approval-mode",
                "auto_edit",
                "-o",
                "stream-json",
                "-p",
                "{task}",
            ]),
            headless_output: HeadlessOutput::Gemini,
            ..Profile::default()
        },
    );
    // aider has no system-prompt flag either: the role goes into the message.
    p.insert(
        "aider".to_string(),
        Profile {
            description: "aider (aider-chat)".into(),
            command: strings(&["aider"]),
            headless: strings(&[
                "aider",
                "--no-pretty",
                "--yes-always",
                "--no-check-update",
                "--no-show-release-notes",
                "--message",
                "{task}",
            ]),
            headless_output: HeadlessOutput::Aider,
            ..Profile::default()
        },
    );
    // opencode's `--agent` needs an agent defined in its own config; the role goes into the
    // message. The message is positional: after `--`, so a task starting with `-` stays text.
    p.insert(
        "opencode".to_string(),
        Profile {
            description: "opencode (opencode-ai)".into(),
            command: strings(&["opencode"]),
            headless: strings(&["opencode", "run", "--format", "json", "--", "{task}"]),
            headless_output: HeadlessOutput::Opencode,
            ..Profile::default()
        },
    );
    // Any other command: `mpm --profile shell run -- CMD`. The screen is scanned; there is no
    // headless form (its sessions' sub-agents use `executor.default_profile`).
    p.insert(
        "shell".to_string(),
        Profile {
            description: "any other command (give it after `--`); screen detection only".into(),
            command: strings(&["sh"]),
            headless_output: HeadlessOutput::Text,
            ..Profile::default()
        },
    );
    p
}

#[cfg(test)]
mod tests {
    use super::super::{Overrides, load_from};
    use super::*;

    #[test]
    fn every_builtin_headless_form_is_a_valid_template() {
        let p = builtin();
        for name in ["claude", "codex", "gemini", "aider", "opencode", "shell"] {
            assert!(p.contains_key(name), "{name}");
        }
        for (name, prof) in &p {
            if prof.headless.is_empty() {
                assert_eq!(name, "shell");
                continue;
            }
            crate::executor::argv::validate_template(&prof.headless)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(prof.headless[0], prof.command[0], "{name}: same program");
        }
        assert_eq!(p["codex"].session_command(), ["codex", "--no-daemon"]);
        assert_eq!(p["claude"].session_command(), ["claude"]);
    }

    #[test]
    fn a_command_after_double_dash_gets_its_clis_flags_once() {
        let cfg = super::super::Config::default();
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            cfg.with_profile_args(&v(&["/opt/bin/codex", "exec", "x"])),
            v(&["/opt/bin/codex", "--no-daemon", "exec", "x"])
        );
        assert_eq!(
            cfg.with_profile_args(&v(&["codex", "--no-daemon"])),
            v(&["codex", "--no-daemon"])
        );
        assert_eq!(cfg.with_profile_args(&v(&["bash"])), v(&["bash"]));
        assert_eq!(
            cfg.with_profile_args(&v(&["claude", "--model", "x"])),
            v(&["claude", "--model", "x"])
        );
        assert!(cfg.with_profile_args(&[]).is_empty());
    }

    #[test]
    fn user_config_overrides_one_field_and_adds_profiles() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yaml");
        std::fs::write(
            &f,
            "profiles:\n  codex:\n    env: {CODEX_HOME: /x}\n  mine:\n    command: [my-cli]\n    headless: [my-cli, --ask, '{task}']\n    headless_output: text\nexecutor:\n  default_profile: gemini\nagents:\n  qa:\n    profile: mine\n",
        )
        .unwrap();
        let c = load_from(&[f], Vec::new(), &Overrides::default())
            .unwrap()
            .config;
        let codex = &c.profiles["codex"];
        assert_eq!(codex.env["CODEX_HOME"], "/x");
        assert_eq!(codex.headless_output, HeadlessOutput::Codex, "kept");
        assert_eq!(codex.args, ["--no-daemon"], "kept");
        assert_eq!(c.profiles["mine"].headless_output, HeadlessOutput::Text);
        assert_eq!(c.executor.default_profile, "gemini");
        assert_eq!(c.agents["qa"].profile.as_deref(), Some("mine"));
        let r = crate::executor::AgentRegistry::from_config(&c);
        assert_eq!(r.get("qa").unwrap().argv, ["my-cli", "--ask", "{task}"]);
        assert_eq!(r.get("engineer").unwrap().argv[0], "gemini");
    }
}
