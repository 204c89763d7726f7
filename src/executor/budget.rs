//! Delegation budgets: tokens and cost per session and per agent, and the nesting depth.
//!
//! Spending is known only after a delegation ends (the sub-agent's stream-json `result` line
//! reports `usage` and `total_cost_usd`), so a budget is checked at admission against what the
//! session's finished delegations have spent: the delegation that crosses a budget runs to its end,
//! the next one is rejected with a reason that names the budget. Depth: mpm reads `MPM_DEPTH` from
//! its own environment (0 when unset) and gives each sub-agent `MPM_DEPTH = depth + 1`, so an mpm
//! started inside a sub-agent knows how deep it is; with `max_depth: 2` a session at depth 2 runs no
//! delegations.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::config::{AgentBudget, BudgetsConfig, Config};

/// The environment variable that carries the nesting depth.
pub(crate) const DEPTH_VAR: &str = "MPM_DEPTH";

/// This process's nesting depth: `MPM_DEPTH`, 0 when unset or unreadable.
pub(crate) fn own_depth() -> u32 {
    std::env::var(DEPTH_VAR)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[derive(Debug, Default, Clone, Copy)]
struct Spent {
    tokens: u64,
    cost_usd: f64,
}

/// One session's budgets and what its delegations have spent. One owner: the executor.
pub(crate) struct Budgets {
    session: BudgetsConfig,
    agents: HashMap<String, AgentBudget>,
    depth: u32,
    spent: Mutex<(Spent, HashMap<String, Spent>)>,
}

impl Budgets {
    /// Budgets from the config for a session running at `depth`.
    pub(crate) fn new(cfg: &Config, depth: u32) -> Self {
        Budgets {
            session: cfg.executor.budgets.clone(),
            agents: cfg
                .agents
                .iter()
                .filter_map(|(n, a)| a.budget.clone().map(|b| (n.clone(), b)))
                .collect(),
            depth,
            spent: Mutex::new((Spent::default(), HashMap::new())),
        }
    }

    /// The depth this session's sub-agents run at.
    pub(crate) fn child_depth(&self) -> u32 {
        self.depth.saturating_add(1)
    }

    /// `Some(reason)` when a delegation to `agent` must be rejected; the reason names the budget
    /// and the figures.
    pub(crate) fn check(&self, agent: &str) -> Option<String> {
        if let Some(max) = self.session.max_depth
            && self.child_depth() > max
        {
            return Some(format!(
                "budget executor.budgets.max_depth ({max}) reached: this session runs at depth {} ({DEPTH_VAR}), its delegations would run at depth {}",
                self.depth,
                self.child_depth()
            ));
        }
        let spent = self.spent.lock().unwrap_or_else(|e| e.into_inner());
        let (total, by_agent) = &*spent;
        if let Some(max) = self.session.tokens_per_session
            && total.tokens >= max
        {
            return Some(format!(
                "budget executor.budgets.tokens_per_session ({max}) used up: {} tokens spent",
                total.tokens
            ));
        }
        if let Some(max) = self.session.cost_usd_per_session
            && total.cost_usd >= max
        {
            return Some(format!(
                "budget executor.budgets.cost_usd_per_session (${max:.2}) used up: ${:.4} spent",
                total.cost_usd
            ));
        }
        if let Some(b) = self.agents.get(agent) {
            let mine = by_agent.get(agent).copied().unwrap_or_default();
            if let Some(max) = b.tokens
                && mine.tokens >= max
            {
                return Some(format!(
                    "budget agents.{agent}.budget.tokens ({max}) used up: {} tokens spent",
                    mine.tokens
                ));
            }
            if let Some(max) = b.cost_usd
                && mine.cost_usd >= max
            {
                return Some(format!(
                    "budget agents.{agent}.budget.cost_usd (${max:.2}) used up: ${:.4} spent",
                    mine.cost_usd
                ));
            }
        }
        None
    }

    /// Add what one finished delegation of `agent` spent.
    pub(crate) fn record(&self, agent: &str, tokens: u64, cost_usd: Option<f64>) {
        let cost = cost_usd
            .filter(|c| c.is_finite() && *c > 0.0)
            .unwrap_or(0.0);
        let mut spent = self.spent.lock().unwrap_or_else(|e| e.into_inner());
        let (total, by_agent) = &mut *spent;
        total.tokens = total.tokens.saturating_add(tokens);
        total.cost_usd += cost;
        let mine = by_agent.entry(agent.to_string()).or_default();
        mine.tokens = mine.tokens.saturating_add(tokens);
        mine.cost_usd += cost;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_tokens_reject_after_they_are_used_up() {
        let mut cfg = Config::default();
        cfg.executor.budgets.tokens_per_session = Some(100);
        let b = Budgets::new(&cfg, 0);
        assert_eq!(b.check("qa"), None);
        b.record("qa", 60, None);
        assert_eq!(b.check("qa"), None);
        b.record("engineer", 50, None);
        let why = b.check("qa").expect("over budget");
        assert!(
            why.contains("tokens_per_session (100)") && why.contains("110"),
            "{why}"
        );
    }

    #[test]
    fn agent_cost_only_limits_that_agent() {
        let mut cfg = Config::default();
        cfg.agents.get_mut("qa").unwrap().budget = Some(AgentBudget {
            tokens: None,
            cost_usd: Some(0.5),
        });
        let b = Budgets::new(&cfg, 0);
        b.record("qa", 10, Some(0.6));
        assert!(b.check("qa").unwrap().contains("agents.qa.budget.cost_usd"));
        assert_eq!(b.check("engineer"), None);
    }

    #[test]
    fn depth_beyond_max_rejects() {
        let cfg = Config::default();
        assert_eq!(Budgets::new(&cfg, 1).check("qa"), None);
        let why = Budgets::new(&cfg, 2).check("qa").unwrap();
        assert!(
            why.contains("max_depth (2)") && why.contains("depth 3"),
            "{why}"
        );
        assert_eq!(Budgets::new(&cfg, 0).child_depth(), 1);
    }
}
