//! `[adaptive]`: when the lattice may move a callee next to its caller.
//!
//! A component that lists `may_run` (a label selector wider than its
//! `placement`) may get an extra replica on a caller's host when the
//! caller's remote link to it is hot: at least `hot` calls per second for
//! `hold_ms`. The extra replica stops when the link stays under `cold` calls
//! per second for `hold_ms`. `hot` above `cold` and the hold time are the
//! hysteresis that keeps a steady load from flapping. The decisions
//! themselves are [`crate::lattice::adapt`]'s.

use serde::Deserialize;
use std::collections::BTreeMap;

/// `[adaptive]` of an app.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveSpec {
    /// Calls per second over a remote link at or above which the callee is
    /// started on the caller's host.
    #[serde(default = "default_hot")]
    pub hot: f64,
    /// Calls per second under which an extra replica is stopped again.
    #[serde(default = "default_cold")]
    pub cold: f64,
    /// How long a link must stay hot (or cold) before anything moves.
    #[serde(default = "default_hold_ms")]
    pub hold_ms: u64,
}

fn default_hot() -> f64 {
    100.0
}
fn default_cold() -> f64 {
    10.0
}
fn default_hold_ms() -> u64 {
    3_000
}

impl Default for AdaptiveSpec {
    fn default() -> AdaptiveSpec {
        AdaptiveSpec {
            hot: default_hot(),
            cold: default_cold(),
            hold_ms: default_hold_ms(),
        }
    }
}

impl AdaptiveSpec {
    /// What is wrong with the thresholds, each naming its field.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(self.hot.is_finite() && self.hot > 0.0) {
            problems.push(format!(
                "adaptive.hot: {} must be a positive number of calls per second",
                self.hot
            ));
        }
        if !(self.cold.is_finite() && self.cold >= 0.0 && self.cold < self.hot) {
            problems.push(format!(
                "adaptive.cold: {} must be at least 0 and below adaptive.hot ({}), or the placement would flap",
                self.cold, self.hot
            ));
        }
        if !(100..=3_600_000).contains(&self.hold_ms) {
            problems.push(format!("adaptive.hold_ms: {} must be 100..=3600000", self.hold_ms));
        }
        problems
    }
}

/// What is wrong with component `name`'s `may_run` given its `placement`:
/// it must be wider, so every key it names must be in `placement` with the
/// same value (`{}` is every host).
pub fn may_run_problems(
    name: &str,
    may_run: &BTreeMap<String, String>,
    placement: &BTreeMap<String, String>,
) -> Vec<String> {
    may_run
        .iter()
        .filter(|(k, v)| placement.get(*k) != Some(*v))
        .map(|(k, v)| {
            format!(
                "components.{name}.may_run: `{k} = {v:?}` is narrower than placement {placement:?}: \
                 may_run must hold every host placement does (drop the key, or add it to placement)"
            )
        })
        .collect()
}
