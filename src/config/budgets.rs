//! `executor.budgets` and `agents.<name>.budget`: what delegations may spend.

use serde::{Deserialize, Serialize};

/// Session-wide delegation budgets (`executor.budgets`). `null` = no limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetsConfig {
    /// Tokens all delegations of a session may use (from the sub-agents' stream-json `usage`).
    pub tokens_per_session: Option<u64>,
    /// Dollars all delegations of a session may cost (stream-json `total_cost_usd`).
    pub cost_usd_per_session: Option<f64>,
    /// Deepest nesting of sub-agents: a session at depth `MPM_DEPTH` runs delegations at depth
    /// `MPM_DEPTH + 1`, which must not exceed this.
    pub max_depth: Option<u32>,
}

impl Default for BudgetsConfig {
    fn default() -> Self {
        BudgetsConfig {
            tokens_per_session: None,
            cost_usd_per_session: None,
            max_depth: Some(2),
        }
    }
}

/// One agent's budget within a session (`agents.<name>.budget`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentBudget {
    /// Tokens (input + output) its delegations may use per session.
    pub tokens: Option<u64>,
    /// Cost in USD its delegations may spend per session.
    pub cost_usd: Option<f64>,
}
