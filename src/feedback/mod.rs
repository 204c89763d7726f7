//! Closing the loop: delegation results back to the main agent, and what the user sees of them.
//!
//! - [`ledger`]: one record per delegation folded from events (`mpm delegations`, `mpm top`).
//! - [`prompt`]: the delegation protocol `inject` mode teaches the main agent (`mpm prompt`).
//! - [`summary`]: the end-of-session summary of `mpm run`.

pub mod ledger;
pub mod prompt;
pub mod summary;
