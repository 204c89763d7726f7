//! Agent-name resolution: what a model calls an agent ("Version Control Agent", "qa", "Docs") to
//! the registry name (`version-control`, `qa`, `documentation`).

use std::collections::{BTreeMap, HashMap};

use foldhash::fast::RandomState;

use crate::config::AgentConfig;

/// Maps spoken agent names to registry names, case-insensitively, through names and aliases.
#[derive(Debug, Clone, Default)]
pub struct AgentResolver {
    /// Folded spoken form -> registry name.
    names: HashMap<String, String, RandomState>,
}

impl AgentResolver {
    /// A resolver over a registry: each name (also with `-`/`_` read as spaces) and each alias.
    pub fn new(agents: &BTreeMap<String, AgentConfig>) -> Self {
        let mut names = HashMap::default();
        // Aliases first, names last: a registry name always wins over another agent's alias.
        for (name, agent) in agents {
            for alias in &agent.aliases {
                names.entry(fold(alias)).or_insert_with(|| name.clone());
                names
                    .entry(fold(alias).replace(' ', ""))
                    .or_insert_with(|| name.clone());
            }
        }
        for name in agents.keys() {
            names.insert(fold(name), name.clone());
            names.insert(fold(&name.replace(['-', '_'], " ")), name.clone());
            names.insert(fold(name).replace(['-', '_', ' '], ""), name.clone());
        }
        AgentResolver { names }
    }

    /// The registry name for a spoken name, with or without a trailing "Agent"; `None` when the
    /// registry has no such agent.
    pub fn resolve(&self, spoken: &str) -> Option<&str> {
        let folded = fold(spoken);
        if folded.is_empty() {
            return None;
        }
        let stripped = folded
            .strip_suffix(" agent")
            .or_else(|| folded.strip_suffix("agent").filter(|s| !s.is_empty()))
            .map(str::trim_end);
        let candidates = [Some(folded.as_str()), stripped];
        for c in candidates.into_iter().flatten() {
            if let Some(n) = self.names.get(c) {
                return Some(n);
            }
            if let Some(n) = self.names.get(&c.replace(['-', '_', ' '], "")) {
                return Some(n);
            }
        }
        None
    }
}

/// Lower case, `-`/`_` kept, runs of whitespace as one space, trimmed; a leading "the " dropped.
fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    super::push_lower_words(s, &mut out);
    match out.strip_prefix("the ") {
        Some(rest) => rest.to_string(),
        None => out,
    }
}

#[cfg(test)]
mod tests {
    use super::AgentResolver;
    use crate::config::Config;

    #[test]
    fn resolves_names_and_aliases() {
        let r = AgentResolver::new(&Config::default().agents);
        let cases: &[(&str, Option<&str>)] = &[
            ("Engineer", Some("engineer")),
            ("Engineer Agent", Some("engineer")),
            ("engineer agent", Some("engineer")),
            ("QA", Some("qa")),
            ("QA Agent", Some("qa")),
            ("Documentation", Some("documentation")),
            ("Docs", Some("documentation")),
            ("Version Control", Some("version-control")),
            ("Version Control Agent", Some("version-control")),
            ("version-control", Some("version-control")),
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
