//! One job's results and the values of its settings.

use std::cmp::Ordering;

use sweep_store::{JobRow, PruneRow, Status};

/// A setting's value as recorded: a number or a word.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Integers and floats alike.
    Number(f64),
    /// Choices (`loss = "multi_margin"`) and anything else.
    Text(String),
}

impl Value {
    fn from_json(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
            serde_json::Value::String(s) => Value::Text(s.clone()),
            other => Value::Text(other.to_string()),
        }
    }
}

impl Eq for Value {}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Value) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Value {
    /// Numbers numerically (before words), words alphabetically.
    fn cmp(&self, other: &Value) -> Ordering {
        match (self, other) {
            (Value::Number(x), Value::Number(y)) => x.total_cmp(y),
            (Value::Number(_), Value::Text(_)) => Ordering::Less,
            (Value::Text(_), Value::Number(_)) => Ordering::Greater,
            (Value::Text(x), Value::Text(y)) => x.cmp(y),
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Number(x) => write!(f, "{x}"),
            Value::Text(s) => f.write_str(s),
        }
    }
}

/// A job of a sweep: its stored row, its settings, and the job it repeats.
#[derive(Debug, Clone)]
pub struct Job {
    /// As stored.
    pub row: JobRow,
    /// Its resolved settings (the recorded `config_json`), `fold` included.
    pub config: serde_json::Map<String, serde_json::Value>,
    /// The first job of the sweep whose settings differ from this one's only
    /// in speed-only keys: same results, another time.
    pub same_as: Option<String>,
    /// Where and why the pruner stopped it, when it did.
    pub pruned: Option<PruneRow>,
    /// The job trained for it, when it was not trained itself (its epochs
    /// are that job's).
    pub trained_as: Option<String>,
}

impl Job {
    /// The columns jobs can be sorted by.
    pub const SORT_KEYS: [&'static str; 14] = [
        "job_id",
        "batch_size",
        "workers",
        "lr",
        "momentum",
        "epochs",
        "best_valid_acc",
        "best_epoch",
        "final_train_acc",
        "best_valid_loss",
        "best_train_loss",
        "status",
        "seconds",
        "same_as",
    ];

    pub(crate) fn new(row: JobRow) -> Job {
        let config = match serde_json::from_str::<serde_json::Value>(&row.config_json) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        Job { row, config, same_as: None, pruned: None, trained_as: None }
    }

    /// The k-fold fold this job trains, if any.
    pub fn fold(&self) -> Option<i64> {
        self.config.get("fold")?.as_i64()
    }

    /// A setting's value, `None` when the job's settings lack it.
    pub fn param(&self, key: &str) -> Option<Value> {
        self.config.get(key).map(Value::from_json)
    }

    /// The job's score under `objective`: its best value of that metric
    /// over its recorded epochs; `None` before its first epoch.
    pub fn score(&self, objective: crate::Objective) -> Option<f64> {
        match objective {
            crate::Objective::ValidAcc => self.row.best_valid_acc,
            crate::Objective::ValidLoss => self.row.best_valid_loss,
            crate::Objective::TrainLoss => self.row.best_train_loss,
        }
    }

    /// The status as people read it: a running, interrupted, waiting or pruned job
    /// says how far it got (`running (3/14)`).
    pub fn status_text(&self) -> String {
        match self.row.status {
            Status::Running | Status::Interrupted | Status::Pruned | Status::Waiting => {
                format!("{} ({}/{})", self.row.status.as_str(), self.row.epochs_done, self.row.epochs)
            }
            s => s.as_str().to_owned(),
        }
    }

    /// The settings without the speed-only keys, as one comparable string.
    pub(crate) fn results_key(&self, speed_only: &[&str]) -> String {
        if self.config.is_empty() {
            return self.row.id.clone();
        }
        let mut map = self.config.clone();
        for key in speed_only {
            map.remove(*key);
        }
        serde_json::Value::Object(map).to_string()
    }

    /// The settings without `fold`: the configuration a fold belongs to.
    pub(crate) fn configuration_key(&self) -> String {
        if self.config.is_empty() {
            return self.row.id.clone();
        }
        let mut map = self.config.clone();
        map.remove("fold");
        serde_json::Value::Object(map).to_string()
    }

    /// The value sorted on for a column of [`Job::SORT_KEYS`].
    pub(crate) fn sort_value(&self, key: &str) -> Option<Value> {
        let n = |x: f64| Some(Value::Number(x));
        let i = |x: i64| n(x as f64);
        match key {
            "job_id" => Some(Value::Text(self.row.id.clone())),
            "batch_size" => i(self.row.batch_size),
            "workers" => i(self.row.workers),
            "lr" => n(self.row.lr),
            "momentum" => n(self.row.momentum),
            "epochs" => i(self.row.epochs),
            "best_valid_acc" => self.row.best_valid_acc.and_then(n),
            "best_epoch" => self.row.best_epoch.and_then(i),
            "final_train_acc" => self.row.final_train_acc.and_then(n),
            "best_valid_loss" => self.row.best_valid_loss.and_then(n),
            "best_train_loss" => self.row.best_train_loss.and_then(n),
            "status" => Some(Value::Text(self.row.status.as_str().to_owned())),
            "seconds" => n(self.row.seconds),
            "same_as" => self.same_as.clone().map(Value::Text),
            _ => self.param(key),
        }
    }
}
