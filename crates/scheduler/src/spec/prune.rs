//! `[prune]`: early stopping of trials that are clearly behind, checked into
//! a [`Prune`] (the rules themselves are in `crate::pruner`).
//!
//! Part of the sweep's id (its canonical JSON gains `prune` when the table is
//! there), never of a job's: a pruned job is the same configuration, pruning
//! only decides how far it runs.

use serde_json::json;

use super::check::Checker;
use super::node::Node;

/// Optuna's MedianPruner defaults.
const MEDIAN_KEYS: [&str; 3] = ["startup_trials", "warmup_epochs", "interval"];
/// Asynchronous successive halving.
const ASHA_KEYS: [&str; 3] = ["min_epochs", "eta", "brackets"];

/// `[prune]`, checked, defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prune {
    /// Optuna's median stopping rule.
    Median {
        /// No pruning until this many trials of the sweep are done (Optuna's `n_startup_trials`, 5).
        startup_trials: u64,
        /// No pruning during a trial's first `warmup_epochs` epochs (`n_warmup_steps`, 0).
        warmup_epochs: u64,
        /// A check every `interval` epochs after the warm-up (`interval_steps`, 1).
        interval: u64,
    },
    /// Asynchronous successive halving, in one bracket or Hyperband's.
    Asha {
        /// The first rung, in epochs (1).
        min_epochs: u64,
        /// The reduction factor: rungs at `min_epochs × eta^k`, the top
        /// `1/eta` of a rung going on (3).
        eta: u64,
        /// Hyperband's brackets (1): trial `i` (in the sweep's order) is in
        /// bracket `s = i mod brackets`, whose rungs are at
        /// `min_epochs × eta^(k + s)`, and is compared only with its bracket's trials.
        brackets: u64,
    },
}

impl Prune {
    /// The method as written.
    pub fn method(&self) -> &'static str {
        match self {
            Prune::Median { .. } => "median",
            Prune::Asha { .. } => "asha",
        }
    }

    /// The canonical JSON: every setting, defaults included.
    pub(super) fn canonical(&self) -> serde_json::Value {
        match *self {
            Prune::Median { startup_trials, warmup_epochs, interval } => json!({
                "method": "median",
                "startup_trials": startup_trials,
                "warmup_epochs": warmup_epochs,
                "interval": interval,
            }),
            Prune::Asha { min_epochs, eta, brackets } => {
                let mut asha = json!({ "method": "asha", "min_epochs": min_epochs, "eta": eta });
                if brackets > 1 {
                    asha["brackets"] = json!(brackets);
                }
                asha
            }
        }
    }
}

impl Checker {
    /// `[prune]`: the method and its settings, every problem at its line.
    pub(super) fn prune(&mut self, node: &Node) -> Option<Prune> {
        let mut t = self.table("prune", node)?;
        let method_line = t.line_of("method");
        let given = t.entries.iter().any(|e| e.0 == "method");
        let method = self.string(&mut t, "method");
        let (own, other, name): (&[&str], &[&str], &str) = match method.as_deref() {
            Some("median") => (&MEDIAN_KEYS, &ASHA_KEYS, "median"),
            Some("asha") => (&ASHA_KEYS, &MEDIAN_KEYS, "asha"),
            Some(other) => {
                self.error(method_line, "prune.method", format!("must be \"median\" or \"asha\", got \"{other}\""));
                return None;
            }
            None => {
                if !given {
                    self.error(t.line, "prune.method", "missing: \"median\" or \"asha\"");
                }
                return None;
            }
        };
        for key in other {
            if t.entries.iter().any(|e| e.0 == *key) {
                let line = t.line_of(key);
                let owner = if name == "median" { "asha" } else { "median" };
                self.error(line, t.key(key), format!("applies to method = \"{owner}\" only"));
                t.take(key);
            }
        }
        let prune = match name {
            "median" => Prune::Median {
                startup_trials: self.int(&mut t, "startup_trials", 0, 1_000_000).unwrap_or(5),
                warmup_epochs: self.int(&mut t, "warmup_epochs", 0, 100_000).unwrap_or(0),
                interval: self.int(&mut t, "interval", 1, 100_000).unwrap_or(1),
            },
            _ => Prune::Asha {
                min_epochs: self.int(&mut t, "min_epochs", 1, 100_000).unwrap_or(1),
                eta: self.int(&mut t, "eta", 2, 100).unwrap_or(3),
                brackets: self.int(&mut t, "brackets", 1, 100).unwrap_or(1),
            },
        };
        let known: Vec<&str> = ["method"].into_iter().chain(own.iter().copied()).collect();
        self.finish(t, &known);
        Some(prune)
    }
}
