//! The delegation protocol taught to the main agent in `inject` mode (and printed by `mpm prompt`):
//! generated from the agent registry, so it names exactly the agents and forms mpm acts on, and
//! says how results come back for the active profile's feedback setting.

use std::fmt::Write as _;

use crate::config::{Config, FeedbackMode, OrchestrationMode};

/// The message header every feedback message starts with (the prompt tells the model about it).
pub(crate) const FEEDBACK_HEADER: &str = "[mpm] Results of the delegations";

/// The protocol text for the config's active profile.
pub(crate) fn protocol_prompt(cfg: &Config) -> String {
    let feedback = cfg
        .profiles
        .get(&cfg.profile)
        .map(|p| p.feedback)
        .unwrap_or_default();
    let mut s = String::new();
    s.push_str("# Delegating work through mpm\n\n");
    s.push_str(
        "You run under mpm, a supervisor that runs sub-agents for you in parallel. To hand a task \
         to one of the agents below, write it as a line of its own, at the start of the line, in \
         one of these forms:\n\n",
    );
    let example = cfg
        .agents
        .keys()
        .next()
        .cloned()
        .unwrap_or_else(|| "engineer".into());
    let title = title_case(&example);
    let _ = writeln!(s, "    {title} Agent: <the whole task, on this one line>");
    let _ = writeln!(s, "    Delegating to {title} Agent: <task>");
    let _ = writeln!(s, "    Task({title}: <task>)");
    s.push_str("\nAgents (name: what it is for; other names it answers to):\n\n");
    for (name, a) in &cfg.agents {
        let what = if a.description.is_empty() {
            "general tasks"
        } else {
            a.description.as_str()
        };
        let _ = write!(s, "- {}: {what}", title_case(name));
        if !a.aliases.is_empty() {
            let _ = write!(s, " (also: {})", a.aliases.join(", "));
        }
        s.push('\n');
    }
    s.push_str(
        "\nRules:\n\
         - One delegation per line, with everything the agent needs: it does not see this \
         conversation.\n\
         - mpm runs each delegation exactly once; saying the same task again does not run it again.\n\
         - A form quoted in the middle of a sentence, or in a code block, is not a delegation.\n\
         - Your own Agent/Task tool runs inside this CLI; mpm only records those calls.\n",
    );
    let back = match feedback {
        FeedbackMode::OnIdle => format!(
            "- When the delegations of your turn have finished, mpm sends you ONE message starting \
             with \"{FEEDBACK_HEADER}\": per delegation the agent, the task, its status and \
             duration, the first lines of its result, and the path of the full result file. Read \
             that file when you need more. Do not wait or poll for results; end your turn.\n"
        ),
        FeedbackMode::NextPrompt => format!(
            "- Results of finished delegations arrive with the user's next message, in a block \
             starting with \"{FEEDBACK_HEADER}\" (agent, task, status, duration, first lines, \
             result file path).\n"
        ),
        FeedbackMode::Off => "- Results are not sent back to you; each is written to a file \
             `<agent>-<id>.md` that `mpm delegations list` shows.\n"
            .to_string(),
    };
    s.push_str(&back);
    s
}

/// "version-control" → "Version Control".
fn title_case(name: &str) -> String {
    name.split(['-', '_', ' '])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect::<String>(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// In `inject` mode, a claude argv gets the protocol as `--append-system-prompt` (appended to one
/// the user gave). Other modes and other CLIs are returned unchanged.
pub(crate) fn inject_argv(cfg: &Config, mut argv: Vec<String>) -> Vec<String> {
    if cfg.orchestration.mode != OrchestrationMode::Inject || !crate::supervisor::is_claude(&argv) {
        return argv;
    }
    let prompt = protocol_prompt(cfg);
    let flag = "--append-system-prompt";
    if let Some(i) = argv.iter().position(|a| a == flag)
        && let Some(v) = argv.get_mut(i + 1)
    {
        v.push_str("\n\n");
        v.push_str(&prompt);
        return argv;
    }
    if let Some(a) = argv
        .iter_mut()
        .find(|a| a.starts_with("--append-system-prompt="))
    {
        a.push_str("\n\n");
        a.push_str(&prompt);
        return argv;
    }
    argv.push(flag.into());
    argv.push(prompt);
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_lists_every_agent_form_and_channel() {
        let cfg = Config::default();
        let p = protocol_prompt(&cfg);
        for name in ["Engineer", "Qa", "Version Control", "Data Engineer"] {
            assert!(p.contains(&format!("- {name}: ")), "{name} in {p}");
        }
        assert!(p.contains("Quality Assurance"));
        assert!(p.contains("Delegating to") && p.contains("Task("));
        assert!(p.contains(FEEDBACK_HEADER));
        // Every example form is one the built-in patterns detect.
        let engine = crate::supervisor::build_engine(&cfg, &[]).unwrap();
        let mut pipeline = crate::detect::Pipeline::new(engine, 100, 30);
        let mut found = Vec::new();
        for line in [
            "Data Engineer Agent: build it",
            "Delegating to Data Engineer Agent: build that",
            "Task(Data Engineer: build those)",
        ] {
            found.extend(pipeline.feed_line(line, crate::events::TextSource::Text));
        }
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(
            found
                .iter()
                .all(|d| d.agent.as_deref() == Some("data-engineer"))
        );
    }

    #[test]
    fn inject_adds_or_extends_the_system_prompt_for_claude_only() {
        let mut cfg = Config::default();
        let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(inject_argv(&cfg, argv(&["claude"])), argv(&["claude"]));
        cfg.orchestration.mode = OrchestrationMode::Inject;
        let out = inject_argv(&cfg, argv(&["claude", "--model", "x"]));
        assert_eq!(
            out[..4],
            argv(&["claude", "--model", "x", "--append-system-prompt"])
        );
        assert!(out[4].contains("Delegating work through mpm"));
        let out = inject_argv(&cfg, argv(&["claude", "--append-system-prompt", "mine"]));
        assert_eq!(out.len(), 3);
        assert!(out[2].starts_with("mine\n\n# Delegating"));
        assert_eq!(inject_argv(&cfg, argv(&["codex"])), argv(&["codex"]));
    }
}
