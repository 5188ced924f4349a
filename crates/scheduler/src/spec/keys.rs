//! The train keys of a sweep file (`[train]`, `[grid]`, `[[configs]]`): their
//! names, the values each takes, their defaults, and a job's resolved set.

use std::fmt;

use sweep_worker::{Loss, TrainConfig};

use super::node::{Node, Value};

/// The train hyperparameters a sweep may set, in canonical order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrainKey {
    /// Mini-batch size of head training.
    BatchSize,
    /// Decode threads for the backbone pass (speed only).
    Workers,
    /// Base learning rate.
    Lr,
    /// SGD momentum.
    Momentum,
    /// Number of epochs.
    Epochs,
    /// The optimizer (`sgd`).
    Optimizer,
    /// L2 penalty added to the gradient.
    WeightDecay,
    /// StepLR step size in epochs.
    StepSize,
    /// StepLR factor.
    Gamma,
    /// Seed of head init and shuffling.
    Seed,
    /// `cross_entropy` or `multi_margin`.
    Loss,
}

impl TrainKey {
    /// All keys, in the order of a plan's columns and of grid expansion.
    pub const ALL: [TrainKey; 11] = [
        TrainKey::BatchSize,
        TrainKey::Workers,
        TrainKey::Lr,
        TrainKey::Momentum,
        TrainKey::Epochs,
        TrainKey::Optimizer,
        TrainKey::WeightDecay,
        TrainKey::StepSize,
        TrainKey::Gamma,
        TrainKey::Seed,
        TrainKey::Loss,
    ];

    /// The key as written in a sweep file.
    pub fn name(self) -> &'static str {
        match self {
            TrainKey::BatchSize => "batch_size",
            TrainKey::Workers => "workers",
            TrainKey::Lr => "lr",
            TrainKey::Momentum => "momentum",
            TrainKey::Epochs => "epochs",
            TrainKey::Optimizer => "optimizer",
            TrainKey::WeightDecay => "weight_decay",
            TrainKey::StepSize => "step_size",
            TrainKey::Gamma => "gamma",
            TrainKey::Seed => "seed",
            TrainKey::Loss => "loss",
        }
    }

    /// The key named `name` in a sweep file.
    pub(super) fn from_name(name: &str) -> Option<TrainKey> {
        TrainKey::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether the key changes only speed, never results.
    pub fn speed_only(self) -> bool {
        self == TrainKey::Workers
    }

    /// Checks a value of this key (its type and range) into a [`Param`].
    pub(super) fn parse(self, node: &Node) -> Result<Param, String> {
        let int = |min: i64, max: i64| -> Result<Param, String> {
            match node.value {
                Value::Int(i) if (min..=max).contains(&i) => Ok(Param::Int(i as u64)),
                Value::Int(i) => Err(format!("must be between {min} and {max}, got {i}")),
                Value::BigInt(ref i) => Err(format!("must be between {min} and {max}, got {i}")),
                ref other => Err(format!("must be an integer, got {}", other.type_name())),
            }
        };
        let float = |check: fn(f64) -> bool, rule: &str| -> Result<Param, String> {
            let x = match node.value {
                Value::Float(x) => x,
                Value::Int(i) => i as f64,
                Value::BigInt(ref i) => big_float(i),
                ref other => return Err(format!("must be a number, got {}", other.type_name())),
            };
            if x.is_finite() && check(x) {
                Ok(Param::Float(x))
            } else {
                Err(format!("must be {rule}, got {x}"))
            }
        };
        let choice = |options: &[&'static str]| -> Result<Param, String> {
            match &node.value {
                Value::Str(s) => options
                    .iter()
                    .find(|o| **o == s.as_str())
                    .map(|o| Param::Choice(o))
                    .ok_or_else(|| format!("must be one of {}, got \"{s}\"", quoted(options))),
                other => Err(format!("must be one of {}, got {}", quoted(options), other.type_name())),
            }
        };
        match self {
            TrainKey::BatchSize => int(1, 1 << 20),
            TrainKey::Workers => int(0, 1024),
            TrainKey::Lr => float(|x| x > 0.0, "> 0"),
            TrainKey::Momentum => float(|x| (0.0..1.0).contains(&x), ">= 0 and < 1"),
            TrainKey::Epochs => int(1, 100_000),
            TrainKey::Optimizer => choice(&["sgd"]),
            TrainKey::WeightDecay => float(|x| x >= 0.0, ">= 0"),
            TrainKey::StepSize => int(1, 100_000),
            TrainKey::Gamma => float(|x| x > 0.0 && x <= 1.0, "> 0 and <= 1"),
            TrainKey::Seed => int(0, i64::MAX),
            TrainKey::Loss => choice(&["cross_entropy", "multi_margin"]),
        }
    }
}

/// A whole number past 64 bits as a float (infinite when not decimal).
pub(super) fn big_float(text: &str) -> f64 {
    let sign = if text.starts_with('-') { -1.0 } else { 1.0 };
    text.replace('_', "").parse().unwrap_or(sign * f64::INFINITY)
}

/// `"a", "b"`: options as an error message lists them.
pub(super) fn quoted(options: &[&str]) -> String {
    options.iter().map(|o| format!("\"{o}\"")).collect::<Vec<_>>().join(", ")
}

/// One hyperparameter value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Param {
    /// A whole number.
    Int(u64),
    /// A real number.
    Float(f64),
    /// One of a fixed set of names.
    Choice(&'static str),
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Param::Int(i) => write!(f, "{i}"),
            Param::Float(x) => write!(f, "{x}"),
            Param::Choice(s) => f.write_str(s),
        }
    }
}

/// The resolved train hyperparameters of one job.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainParams {
    values: [Param; TrainKey::ALL.len()],
    /// The fold this job validates on, in a k-fold sweep.
    pub(super) fold: Option<u32>,
}

impl Default for TrainParams {
    /// The paper's best configuration (batch 16, 2 workers, lr 0.01, momentum 0.9, 14 epochs).
    fn default() -> TrainParams {
        TrainParams {
            values: [
                Param::Int(16),
                Param::Int(2),
                Param::Float(0.01),
                Param::Float(0.9),
                Param::Int(14),
                Param::Choice("sgd"),
                Param::Float(0.0),
                Param::Int(15),
                Param::Float(0.1),
                Param::Int(0),
                Param::Choice("cross_entropy"),
            ],
            fold: None,
        }
    }
}

impl TrainParams {
    /// The value of one key.
    pub fn get(&self, key: TrainKey) -> Param {
        self.values[key as usize]
    }

    pub(super) fn set(&mut self, key: TrainKey, value: Param) {
        self.values[key as usize] = value;
    }

    fn int(&self, key: TrainKey) -> u64 {
        match self.get(key) {
            Param::Int(i) => i,
            other => unreachable!("{} holds {other:?}", key.name()),
        }
    }

    fn float(&self, key: TrainKey) -> f64 {
        match self.get(key) {
            Param::Float(x) => x,
            other => unreachable!("{} holds {other:?}", key.name()),
        }
    }

    /// The fold this job validates on (0-based), in a k-fold sweep.
    pub fn fold(&self) -> Option<usize> {
        self.fold.map(|f| f as usize)
    }

    /// Decode threads for the backbone pass.
    pub fn workers(&self) -> usize {
        self.int(TrainKey::Workers) as usize
    }

    /// What the worker needs to train the head.
    pub fn train_config(&self) -> TrainConfig {
        TrainConfig {
            batch_size: self.int(TrainKey::BatchSize) as usize,
            lr: self.float(TrainKey::Lr),
            momentum: self.float(TrainKey::Momentum),
            epochs: self.int(TrainKey::Epochs) as usize,
            weight_decay: self.float(TrainKey::WeightDecay),
            step_size: self.int(TrainKey::StepSize) as usize,
            gamma: self.float(TrainKey::Gamma),
            seed: self.int(TrainKey::Seed),
            loss: match self.get(TrainKey::Loss) {
                Param::Choice("multi_margin") => Loss::MultiMargin,
                _ => Loss::CrossEntropy,
            },
        }
    }
}
