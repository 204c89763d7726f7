//! Agent-name resolution, the one definition: what a model calls an agent ("Version Control
//! Agent", "qa", "Docs", "the Ops Agent") to the registry name (`version-control`, `qa`,
//! `documentation`, `ops`). The pattern engine resolves `agent` captures with it and the
//! executor's registry resolves delegation targets with it, so both agree on every name.

use std::collections::{BTreeMap, HashMap};

use foldhash::fast::RandomState;

use crate::config::AgentConfig;

/// Maps spoken agent names to registry names through names and aliases, by [`agent_key`].
#[derive(Debug, Clone, Default)]
pub struct AgentResolver {
    /// [`agent_key`] of a name or alias -> registry name.
    names: HashMap<String, String, RandomState>,
}

impl AgentResolver {
    /// A resolver over a registry: each name and each alias.
    pub fn new(agents: &BTreeMap<String, AgentConfig>) -> Self {
        let mut names = HashMap::default();
        // Aliases first, names last: a registry name always wins over another agent's alias.
        for (name, agent) in agents {
            for alias in &agent.aliases {
                names
                    .entry(agent_key(alias))
                    .or_insert_with(|| name.clone());
            }
        }
        for name in agents.keys() {
            names.insert(agent_key(name), name.clone());
        }
        names.remove("");
        AgentResolver { names }
    }

    /// The registry name for a spoken name, with or without a trailing "Agent"; `None` when the
    /// registry has no such agent.
    pub fn resolve(&self, spoken: &str) -> Option<&str> {
        let key = agent_key(spoken);
        if key.is_empty() {
            return None;
        }
        if let Some(n) = self.names.get(&key) {
            return Some(n);
        }
        let stripped = key.strip_suffix("agent").filter(|s| !s.is_empty())?;
        self.names.get(stripped).map(String::as_str)
    }
}

/// The key two spellings of one agent name share: lower case, with whitespace, `-` and `_`
/// removed and a leading "the" word dropped ("The Version-Control Agent" and "version control
/// agent" both give `versioncontrolagent`). A trailing "agent" is tried with and without by
/// [`AgentResolver::resolve`].
pub fn agent_key(name: &str) -> String {
    let mut words = name
        .split(|c: char| c.is_whitespace() || c == '-' || c == '_')
        .filter(|w| !w.is_empty())
        .peekable();
    let mut key = String::with_capacity(name.len());
    if let Some(first) = words.next()
        && !(first.eq_ignore_ascii_case("the") && words.peek().is_some())
    {
        super::push_lowercase(first, &mut key);
    }
    for w in words {
        super::push_lowercase(w, &mut key);
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn keys_fold_case_separators_and_the() {
        assert_eq!(
            agent_key("  Version-Control   Agent "),
            "versioncontrolagent"
        );
        assert_eq!(agent_key("data_engineer"), "dataengineer");
        assert_eq!(agent_key("The Ops Agent"), "opsagent");
        assert_eq!(agent_key("the"), "the");
        assert_eq!(agent_key(""), "");
        assert_eq!(agent_key("Ingénieur"), "ingénieur");
    }

    #[test]
    fn resolves_names_and_aliases() {
        let r = AgentResolver::new(&Config::default().agents);
        let cases: &[(&str, Option<&str>)] = &[
            ("Engineer", Some("engineer")),
            ("Engineer Agent", Some("engineer")),
            ("engineer agent", Some("engineer")),
            ("ENGINEER", Some("engineer")),
            ("EngineerAgent", Some("engineer")),
            ("QA", Some("qa")),
            ("QA Agent", Some("qa")),
            ("Quality Assurance Agent", Some("qa")),
            ("Documentation", Some("documentation")),
            ("Docs", Some("documentation")),
            ("Version Control", Some("version-control")),
            ("Version Control Agent", Some("version-control")),
            ("version-control", Some("version-control")),
            ("version_control", Some("version-control")),
            ("VersionControl", Some("version-control")),
            ("Data Engineer Agent", Some("data-engineer")),
            ("the Ops Agent", Some("ops")),
            ("  Research   Agent ", Some("research")),
            ("Context", None),
            ("Summary", None),
            ("Task", None),
            ("Agent", None),
            ("", None),
        ];
        for (spoken, want) in cases {
            assert_eq!(r.resolve(spoken), *want, "spoken {spoken:?}");
        }
    }
}
