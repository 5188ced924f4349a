//! The store's tests, one module per concern, with the helpers they share.

mod binding;
mod busy;
mod lease;
mod migrations;
mod open;
mod prune;
mod read_only;
mod write;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::*;

fn job(id: &str) -> NewJob<'_> {
    NewJob { id, config_json: "{}", batch_size: 16, workers: 2, lr: 0.01, momentum: 0.9, epochs: 3 }
}

fn epoch(n: i64) -> EpochRow {
    EpochRow {
        epoch: n,
        train_loss: 1.0,
        train_acc: 0.5,
        valid_loss: 1.1,
        valid_acc: 0.4 + n as f64 / 100.0,
        lr: 0.01,
        seconds: 0.5,
    }
}

fn sweep(id: &str) -> NewSweep<'_> {
    NewSweep { id, name: "n", spec_json: "{}", source: None, source_path: None }
}
