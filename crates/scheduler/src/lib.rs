//! The scheduler: sweep files ([`spec`]), their expansion into jobs with
//! stable ids, and the run loop ([`run`]) that joins the worker and the store.
//!
//! It is the only crate that knows both the worker (Candle) and the store
//! (SQLite); the two never meet except through it.

mod pass;
pub mod preflight;
pub mod pruner;
pub mod run;
pub mod spec;
pub mod worker;

pub use run::{lease_owner, resume, run, Error, JobEnd, Observer, RunOptions, RunSummary, DEFAULT_SHARD_IMAGES};
pub use spec::{
    json_schema, Format, Job, Method, Objective, Param, Prune, SpecError, SpecErrors, SweepSpec, TooManyJobs, TrainKey,
    TrainParams, DEFAULT_MAX_JOBS, MAX_JOBS_CEILING,
};
pub use worker::{submit, work, WorkSummary, WorkerOptions};
