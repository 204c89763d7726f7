//! The agent registry: delegation targets by name, resolved from the free text a model writes.
//!
//! Built from `config.agents` (built-ins from the embedded defaults, merged key by key with the
//! user's files by `config::load`). A name resolves through [`AgentResolver`], the one resolver the
//! pattern engine uses too: case-insensitively against registry names and aliases, with or without
//! a trailing "Agent", and with `-`, `_` and spaces ignored, so "QA Agent", "quality assurance" and
//! "Version-Control" all find their agent.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::config::{AgentConfig, Config, HeadlessOutput, RetryConfig, UnknownAgentPolicy};
use crate::patterns::AgentResolver;

use super::argv::{self, TemplateError};

/// Whether a template element takes the role prompt (`{role}` or `{role_toml}`).
fn has_role(element: &str) -> bool {
    element.contains("{role}") || element.contains("{role_toml}")
}

/// One agent of the registry, with every default applied.
#[derive(Debug, Clone, Serialize)]
pub struct Agent {
    /// The registry name.
    pub name: String,
    /// Other names it answers to.
    pub aliases: Vec<String>,
    /// What it is for.
    pub description: String,
    /// Role prompt, substituted for `{role}`.
    pub role: String,
    /// argv template (the headless form of its profile when the config left it empty).
    pub argv: Vec<String>,
    /// The agent CLI profile it runs with (`agents.<name>.profile`, else
    /// `executor.default_profile`): its headless form when `argv` is unset, its output format.
    pub profile: String,
    /// How its stdout is read (the profile's `headless_output`; `text` for an unknown profile).
    pub output: HeadlessOutput,
    /// The role prompt goes before the task (`ROLE\n\nTASK`) because the profile's headless form
    /// has no `{role}` (the CLI has no system-prompt flag).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub role_in_task: bool,
    /// Working directory of its delegations (`None`: the session's).
    pub cwd: Option<PathBuf>,
    /// Environment added to its delegations.
    pub env: BTreeMap<String, String>,
    /// Per-attempt timeout, seconds (the agent's, else `executor.timeout_secs`).
    pub timeout_secs: u64,
    /// Delegations of this agent running at once; `None` = only the global limit.
    pub max_parallel: Option<usize>,
    /// Retries of transient failures.
    pub retry: RetryConfig,
    /// setrlimit values for this agent's sub-agents (its own `limits.rlimits`, else the global ones
    /// when any is set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rlimits: Option<crate::config::Rlimits>,
    /// Why this agent cannot run (a bad argv template); its delegations are rejected with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
    /// `none` or `worktree` (a git worktree per delegation).
    pub isolation: crate::config::Isolation,
}

impl Agent {
    /// The per-attempt timeout as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1))
    }
}

/// How a name from a detection was resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// A registry name or alias matched.
    Known(String),
    /// Unknown; routed to the default agent by `on_unknown_agent: default`.
    Defaulted {
        /// The name the model used.
        requested: String,
        /// The default agent it goes to.
        agent: String,
    },
    /// Unknown and rejected (policy `reject`, or the default agent itself is missing).
    Rejected {
        /// The name the model used.
        requested: String,
        /// Why it is rejected.
        reason: String,
    },
}

/// The registry: agents by name, plus the resolver of spoken names and aliases.
#[derive(Debug, Clone)]
pub struct AgentRegistry {
    agents: BTreeMap<String, Agent>,
    resolver: AgentResolver,
    policy: UnknownAgentPolicy,
    default_agent: String,
}

impl AgentRegistry {
    /// Build the registry from the merged configuration. Agents with an invalid argv template are
    /// kept (so `mpm agents list` shows them) but marked `invalid`.
    pub fn from_config(cfg: &Config) -> Self {
        let mut agents = BTreeMap::new();
        for (name, ac) in &cfg.agents {
            let agent = Self::agent_from(name, ac, cfg);
            if let Some(why) = &agent.invalid {
                tracing::warn!(agent = %name, reason = %why, "agent has an invalid argv template");
            }
            agents.insert(name.clone(), agent);
        }
        AgentRegistry {
            agents,
            resolver: AgentResolver::new(&cfg.agents),
            policy: cfg.executor.on_unknown_agent,
            default_agent: cfg.executor.default_agent.clone(),
        }
    }

    fn agent_from(name: &str, ac: &AgentConfig, cfg: &Config) -> Agent {
        let profile_name = ac
            .profile
            .clone()
            .unwrap_or_else(|| cfg.executor.default_profile.clone());
        let profile = cfg.profiles.get(&profile_name);
        let mut invalid = None;
        let mut role_in_task = false;
        let argv = match profile {
            _ if !ac.argv.is_empty() => ac.argv.clone(),
            None => {
                invalid = Some(format!(
                    "unknown profile {profile_name:?} (known: {})",
                    cfg.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
                Vec::new()
            }
            Some(p) if p.headless.is_empty() => {
                invalid = Some(format!(
                    "profile {profile_name:?} has no headless form (profiles.{profile_name}.headless)"
                ));
                Vec::new()
            }
            Some(p) => {
                role_in_task = !p.headless.iter().any(|e| has_role(e));
                p.headless.clone()
            }
        };
        if invalid.is_none() {
            invalid = argv::validate_template(&argv)
                .err()
                .map(|e: TemplateError| e.to_string());
        }
        // The profile's environment (e.g. CODEX_HOME), then the agent's own on top.
        let mut env = profile.map(|p| p.env.clone()).unwrap_or_default();
        env.extend(ac.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        Agent {
            name: name.to_string(),
            aliases: ac.aliases.clone(),
            description: ac.description.clone(),
            role: ac.role.clone(),
            argv,
            profile: profile_name,
            output: profile.map_or(HeadlessOutput::Text, |p| p.headless_output),
            role_in_task,
            cwd: ac.cwd.clone(),
            env,
            timeout_secs: ac.timeout_secs.unwrap_or(cfg.executor.timeout_secs),
            max_parallel: ac.max_parallel,
            retry: ac.retry.clone(),
            rlimits: ac
                .limits
                .as_ref()
                .and_then(|l| l.rlimits.clone())
                .or_else(|| Some(cfg.limits.rlimits.clone()).filter(|r| *r != Default::default())),
            invalid,
            isolation: ac.isolation,
        }
    }

    /// The text substituted for `{task}`: the task, after the role prompt when the profile's
    /// headless form has no `{role}`.
    pub fn task_text(agent: &Agent, task: &str) -> String {
        if agent.role_in_task && !agent.role.trim().is_empty() {
            format!("{}\n\n{task}", agent.role.trim_end())
        } else {
            task.to_string()
        }
    }

    /// Every agent, by name.
    pub fn agents(&self) -> impl Iterator<Item = &Agent> {
        self.agents.values()
    }

    /// The agent with this exact registry name.
    pub fn get(&self, name: &str) -> Option<&Agent> {
        self.agents.get(name)
    }

    /// The registry name for a name or alias, if known.
    pub fn lookup(&self, requested: &str) -> Option<&str> {
        self.resolver.resolve(requested)
    }

    /// Resolve a requested agent name, applying `on_unknown_agent`.
    pub fn resolve(&self, requested: &str) -> Resolution {
        if let Some(name) = self.lookup(requested) {
            return Resolution::Known(name.to_string());
        }
        match self.policy {
            UnknownAgentPolicy::Reject => Resolution::Rejected {
                requested: requested.to_string(),
                reason: format!("unknown agent {requested:?} (on_unknown_agent: reject)"),
            },
            UnknownAgentPolicy::Default => match self.lookup(&self.default_agent) {
                Some(name) => Resolution::Defaulted {
                    requested: requested.to_string(),
                    agent: name.to_string(),
                },
                None => Resolution::Rejected {
                    requested: requested.to_string(),
                    reason: format!(
                        "unknown agent {requested:?} and default_agent {:?} is not in the registry",
                        self.default_agent
                    ),
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(policy: UnknownAgentPolicy) -> AgentRegistry {
        let mut cfg = Config::default();
        cfg.executor.on_unknown_agent = policy;
        AgentRegistry::from_config(&cfg)
    }

    #[test]
    fn resolves_names_and_aliases_case_insensitively() {
        let r = reg(UnknownAgentPolicy::Reject);
        for (q, want) in [
            ("engineer", "engineer"),
            ("Engineer Agent", "engineer"),
            ("ENGINEER", "engineer"),
            ("QA", "qa"),
            ("Quality Assurance Agent", "qa"),
            ("Version Control Agent", "version-control"),
            ("version_control", "version-control"),
            ("Data Engineer", "data-engineer"),
            ("Documentation Agent", "documentation"),
        ] {
            assert_eq!(r.resolve(q), Resolution::Known(want.into()), "{q}");
        }
    }

    #[test]
    fn unknown_agent_follows_policy() {
        let r = reg(UnknownAgentPolicy::Reject);
        assert!(matches!(
            r.resolve("Wizard Agent"),
            Resolution::Rejected { .. }
        ));
        let r = reg(UnknownAgentPolicy::Default);
        assert_eq!(
            r.resolve("Wizard Agent"),
            Resolution::Defaulted {
                requested: "Wizard Agent".into(),
                agent: "engineer".into()
            }
        );
    }

    #[test]
    fn builtins_use_default_argv_and_timeouts() {
        let r = reg(UnknownAgentPolicy::Default);
        assert_eq!(r.agents().count(), 8);
        let e = r.get("engineer").unwrap();
        assert_eq!(e.argv, crate::config::default_agent_argv());
        assert_eq!(e.profile, "claude");
        assert_eq!(e.output, HeadlessOutput::Claude);
        assert!(!e.role_in_task);
        assert_eq!(e.timeout_secs, 300);
        assert!(e.invalid.is_none());
    }

    #[test]
    fn user_agent_with_bad_template_is_marked_invalid() {
        let mut cfg = Config::default();
        cfg.agents.insert(
            "shell".into(),
            AgentConfig {
                argv: vec!["{task}".into()],
                ..AgentConfig::default()
            },
        );
        let r = AgentRegistry::from_config(&cfg);
        assert!(r.get("shell").unwrap().invalid.is_some());
    }

    #[test]
    fn agent_profile_picks_the_headless_form_and_output() {
        let mut cfg = Config::default();
        cfg.agents.get_mut("qa").unwrap().profile = Some("gemini".into());
        cfg.agents.get_mut("research").unwrap().profile = Some("codex".into());
        cfg.executor.default_profile = "aider".into();
        cfg.profiles
            .get_mut("gemini")
            .unwrap()
            .env
            .insert("GEMINI_API_KEY".into(), "k".into());
        cfg.agents
            .get_mut("qa")
            .unwrap()
            .env
            .insert("GEMINI_API_KEY".into(), "mine".into());
        let r = AgentRegistry::from_config(&cfg);
        let qa = r.get("qa").unwrap();
        assert_eq!(qa.argv[0], "gemini");
        assert_eq!(qa.output, HeadlessOutput::Gemini);
        assert!(qa.role_in_task, "gemini has no system-prompt flag");
        assert_eq!(qa.env["GEMINI_API_KEY"], "mine", "the agent's env wins");
        assert_eq!(
            AgentRegistry::task_text(qa, "test fib()"),
            format!("{}\n\ntest fib()", qa.role)
        );
        let research = r.get("research").unwrap();
        assert_eq!(&research.argv[..2], ["codex", "exec"]);
        assert!(
            !research.role_in_task,
            "codex takes the role as developer_instructions"
        );
        assert_eq!(AgentRegistry::task_text(research, "x"), "x");
        let eng = r.get("engineer").unwrap();
        assert_eq!(eng.profile, "aider", "executor.default_profile");
        assert_eq!(eng.output, HeadlessOutput::Aider);
        assert!(eng.invalid.is_none());
    }

    #[test]
    fn unknown_profile_or_one_without_headless_form_is_invalid() {
        let mut cfg = Config::default();
        cfg.agents.get_mut("qa").unwrap().profile = Some("nope".into());
        cfg.agents.get_mut("ops").unwrap().profile = Some("shell".into());
        let r = AgentRegistry::from_config(&cfg);
        let why = r.get("qa").unwrap().invalid.clone().unwrap();
        assert!(why.contains("unknown profile \"nope\""), "{why}");
        let why = r.get("ops").unwrap().invalid.clone().unwrap();
        assert!(why.contains("no headless form"), "{why}");
        // An explicit argv needs no headless form; the profile still names the output format.
        cfg.agents.get_mut("ops").unwrap().argv = vec!["my-agent".into(), "{task}".into()];
        let r = AgentRegistry::from_config(&cfg);
        assert!(r.get("ops").unwrap().invalid.is_none());
        assert_eq!(r.get("ops").unwrap().output, HeadlessOutput::Text);
    }
}
