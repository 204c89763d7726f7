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
    /// registry has no such agent. A short ASCII name (every name seen in practice) is folded on
    /// the stack: this runs for every delegation a pattern finds, and for every bold label.
    pub fn resolve(&self, spoken: &str) -> Option<&str> {
        let mut buf = [0u8; STACK_NAME];
        let heap;
        let folded = match fold_ascii(spoken, &mut buf) {
            Some(f) => f,
            None => {
                heap = fold(spoken);
                heap.as_str()
            }
        };
        if folded.is_empty() {
            return None;
        }
        let stripped = folded
            .strip_suffix(" agent")
            .or_else(|| folded.strip_suffix("agent").filter(|s| !s.is_empty()))
            .map(str::trim_end);
        let candidates = [Some(folded), stripped];
        for c in candidates.into_iter().flatten() {
            if let Some(n) = self.names.get(c) {
                return Some(n);
            }
            let mut buf = [0u8; STACK_NAME];
            let squeezed = squeeze(c, &mut buf);
            let key = match &squeezed {
                Ok(k) => k,
                Err(heap) => heap.as_str(),
            };
            if let Some(n) = self.names.get(key) {
                return Some(n);
            }
        }
        None
    }
}

/// Names up to this many bytes are folded on the stack.
const STACK_NAME: usize = 64;

/// Lower case, `-`/`_` kept, runs of whitespace as one space, trimmed; a leading "the " dropped.
fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    super::push_lower_words(s, &mut out);
    match out.strip_prefix("the ") {
        Some(rest) => rest.to_string(),
        None => out,
    }
}

/// [`fold`] into `buf` for an ASCII name that fits; `None` otherwise.
fn fold_ascii<'b>(s: &str, buf: &'b mut [u8; STACK_NAME]) -> Option<&'b str> {
    if !s.is_ascii() {
        return None;
    }
    let mut n = 0;
    for word in s.split_whitespace() {
        let at = n + usize::from(n > 0);
        let end = at + word.len();
        let dst = buf.get_mut(at..end)?;
        dst.copy_from_slice(word.as_bytes());
        dst.make_ascii_lowercase();
        if n > 0 {
            buf[n] = b' ';
        }
        n = end;
    }
    let folded = std::str::from_utf8(&buf[..n]).ok()?;
    Some(folded.strip_prefix("the ").unwrap_or(folded))
}

/// `c` without `-`, `_` and spaces ("version-control" and "Version Control" both as
/// "versioncontrol"): on the stack when it fits, `Err` with a heap copy when not.
fn squeeze<'b>(c: &str, buf: &'b mut [u8; STACK_NAME]) -> Result<&'b str, String> {
    let drop = |b: &u8| matches!(b, b'-' | b'_' | b' ');
    if c.len() > STACK_NAME {
        return Err(c.replace(['-', '_', ' '], ""));
    }
    let mut n = 0;
    for &b in c.as_bytes().iter().filter(|b| !drop(b)) {
        buf[n] = b;
        n += 1;
    }
    // Only ASCII bytes were removed, so what is left is still UTF-8.
    std::str::from_utf8(&buf[..n]).map_err(|_| c.replace(['-', '_', ' '], ""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use proptest::prelude::*;

    proptest! {
        /// The stack folds agree with the heap ones wherever they apply.
        #[test]
        fn stack_folds_agree(s in "(?:[ -~]|\t|\x0b|é){0,80}") {
            let mut buf = [0u8; STACK_NAME];
            if let Some(f) = fold_ascii(&s, &mut buf) {
                prop_assert_eq!(f, fold(&s));
            } else {
                prop_assert!(!s.is_ascii() || fold(&s).len() + 4 > STACK_NAME);
            }
            let mut buf = [0u8; STACK_NAME];
            let want = s.replace(['-', '_', ' '], "");
            match squeeze(&s, &mut buf) {
                Ok(k) => prop_assert_eq!(k, want),
                Err(h) => prop_assert_eq!(h, want),
            }
        }
    }

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
