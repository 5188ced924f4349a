//! The JSON API: one endpoint per thing the page shows. Every handler reads
//! through `sweep-results` on a blocking thread; none writes.
//!
//! - `GET /api/sweeps`: every sweep's summary.
//! - `GET /api/sweeps/{id}?status=&sort=`: one sweep: summary, varying keys,
//!   best job, its jobs.
//! - `GET /api/sweeps/{id}/curves?limit=`: learning curves of the jobs worth
//!   watching (the best, the running, then by accuracy).
//! - `GET /api/sweeps/{id}/importance`: each key's first-order importance.
//! - `GET /api/sweeps/{id}/search`: objective against each key; best so far
//!   (as columns: `jobs` and `objective` once, each axis its `values`).
//! - `GET /api/jobs/{id}`: one job: settings, epochs, checkpoints, error.
//!
//! An unknown sweep or job is a 404, a bad or unknown query parameter a 400,
//! each with `{"error": message}`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State as Extract};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value as Json_};
use sweep_results::{Features, Job, JobDetail, SweepResults, Value};
use sweep_store::{Status, Store, SweepRow};

use crate::State;

/// Curves drawn when the page does not say.
const DEFAULT_CURVES: usize = 12;
/// The most curves one request may ask for.
const MAX_CURVES: usize = 200;

pub(crate) fn routes() -> Router<Arc<State>> {
    Router::new()
        .route("/api/sweeps", get(sweeps))
        .route("/api/sweeps/{id}", get(sweep))
        .route("/api/sweeps/{id}/curves", get(curves))
        .route("/api/sweeps/{id}/importance", get(importance))
        .route("/api/sweeps/{id}/search", get(search))
        .route("/api/jobs/{id}", get(job))
}

/// An API error: its status and message, sent as `{"error": message}`.
#[derive(Debug)]
pub(crate) enum ApiError {
    NotFound(String),
    BadRequest(String),
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, m),
        };
        (status, Json(json!({ "error": message }))).into_response()
    }
}

impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> ApiError {
        ApiError::Internal(e.to_string())
    }
}

impl From<sweep_results::Error> for ApiError {
    fn from(e: sweep_results::Error) -> ApiError {
        match e {
            sweep_results::Error::UnknownKey { .. } => ApiError::BadRequest(e.to_string()),
            sweep_results::Error::Store(e) => e.into(),
        }
    }
}

impl From<sweep_store::Error> for ApiError {
    fn from(e: sweep_store::Error) -> ApiError {
        match e {
            sweep_store::Error::NotFound(m) => ApiError::NotFound(m),
            e => ApiError::Internal(e.to_string()),
        }
    }
}

type ApiResult = Result<Json<Json_>, ApiError>;

/// Runs `f` with the store on a blocking thread.
async fn with_store(
    state: Arc<State>,
    f: impl FnOnce(&State, &Store) -> Result<Json_, ApiError> + Send + 'static,
) -> ApiResult {
    let value = tokio::task::spawn_blocking(move || {
        let guard = state.store()?;
        f(&state, &guard)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("a request failed: {e}")))??;
    Ok(Json(value))
}

/// Refuses query parameters other than `allowed`.
fn check_query(query: &HashMap<String, String>, allowed: &[&str]) -> Result<(), ApiError> {
    let mut unknown: Vec<&String> = query.keys().filter(|k| !allowed.contains(&k.as_str())).collect();
    unknown.sort();
    match unknown.first() {
        None => Ok(()),
        Some(k) if allowed.is_empty() => {
            Err(ApiError::BadRequest(format!("unknown query parameter `{k}` (none is taken)")))
        }
        Some(k) => Err(ApiError::BadRequest(format!("unknown query parameter `{k}` (one of {})", allowed.join(", ")))),
    }
}

/// A sweep by its exact id.
fn find_sweep(store: &Store, id: &str) -> Result<SweepRow, ApiError> {
    let missing = || ApiError::NotFound(format!("no sweep with id `{id}`"));
    match store.find_sweep(Some(id)) {
        Ok(row) if row.id == id => Ok(row),
        Ok(_) | Err(sweep_store::Error::NotFound(_)) => Err(missing()),
        Err(e) => Err(e.into()),
    }
}

fn load(state: &State, store: &Store, id: &str) -> Result<Arc<SweepResults>, ApiError> {
    let row = find_sweep(store, id)?;
    Ok(state.results(store, row)?)
}

/// A setting's value as JSON (non-finite numbers are `null`).
fn value_json(v: &Value) -> Json_ {
    match v {
        Value::Number(x) => json!(x),
        Value::Text(s) => json!(s),
    }
}

fn summary(results: &SweepResults) -> Json_ {
    let s = &results.sweep;
    let counts: Map<String, Json_> = Status::ALL
        .iter()
        .map(|st| (st.as_str().to_owned(), json!(s.counts.iter().find(|c| c.0 == *st).map_or(0, |c| c.1))))
        .collect();
    let p = results.progress();
    json!({
        "id": s.id,
        "name": s.name,
        "created_at": s.created_at,
        "jobs": results.jobs.len(),
        "counts": counts,
        "features": results.features.as_ref().map(features_json),
        "progress": {
            "epochs_done": p.epochs_done,
            "epochs_total": p.epochs_total,
            "elapsed_seconds": p.elapsed_seconds,
            "remaining_seconds": p.remaining_seconds,
        },
    })
}

fn features_json(f: &Features) -> Json_ {
    json!({
        "source": if f.reused { "reused" } else { "computed" },
        "images": f.images,
        "pass_seconds": f.pass.as_ref().and_then(|p| p.seconds),
        "images_per_second": f.images_per_second(),
    })
}

fn job_json(job: &Job, keys: &[String]) -> Json_ {
    let params: Map<String, Json_> =
        keys.iter().map(|k| (k.clone(), job.param(k).as_ref().map_or(Json_::Null, value_json))).collect();
    let r = &job.row;
    json!({
        "id": r.id,
        "status": r.status.as_str(),
        "status_text": job.status_text(),
        "params": params,
        "fold": job.fold(),
        "best_valid_acc": r.best_valid_acc,
        "best_epoch": r.best_epoch,
        "final_train_acc": r.final_train_acc,
        "epochs_done": r.epochs_done,
        "epochs": r.epochs,
        "seconds": r.seconds,
        "attempts": r.attempts,
        "same_as": job.same_as,
        "trained_as": job.trained_as,
        "prune_epoch": job.pruned.as_ref().map(|p| p.epoch),
        "prune_reason": job.pruned.as_ref().map(|p| p.reason.as_str()),
    })
}

async fn sweeps(Extract(state): Extract<Arc<State>>, Query(q): Query<HashMap<String, String>>) -> ApiResult {
    check_query(&q, &[])?;
    with_store(state, |state, store| {
        let mut out = Vec::new();
        for row in store.sweeps()? {
            let results = state.results(store, row)?;
            out.push(summary(&results));
        }
        Ok(Json_::Array(out))
    })
    .await
}

async fn sweep(
    Extract(state): Extract<Arc<State>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    check_query(&q, &["status", "sort"])?;
    let status = match q.get("status").map(String::as_str) {
        None | Some("") | Some("all") => None,
        Some(s) => Some(Status::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| {
            let known: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::BadRequest(format!("status: no such status `{s}` (one of all, {})", known.join(", ")))
        })?),
    };
    let sort = q.get("sort").cloned();
    with_store(state, move |state, store| {
        let cached = load(state, store, &id)?;
        let sorted;
        let results: &SweepResults = match &sort {
            None => &cached,
            Some(key) => {
                let mut copy = SweepResults::clone(&cached);
                copy.sort_by(key).map_err(|e| ApiError::BadRequest(format!("sort: {e}")))?;
                sorted = copy;
                &sorted
            }
        };
        let keys = results.varying_keys();
        let best = results.best().map(|b| {
            json!({
                "id": b.row.id,
                "best_valid_acc": b.row.best_valid_acc,
                "best_epoch": b.row.best_epoch,
                "config": b.config,
            })
        });
        let jobs: Vec<Json_> = results
            .jobs
            .iter()
            .filter(|j| status.is_none_or(|s| j.row.status == s))
            .map(|j| job_json(j, &keys))
            .collect();
        Ok(json!({
            "sweep": summary(results),
            "keys": keys,
            "best": best,
            "jobs": jobs,
        }))
    })
    .await
}

async fn curves(
    Extract(state): Extract<Arc<State>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    check_query(&q, &["limit"])?;
    let limit = match q.get("limit") {
        None => DEFAULT_CURVES,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_CURVES).contains(&n) => n,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "limit: `{text}` is not a whole number from 1 to {MAX_CURVES}"
                )))
            }
        },
    };
    with_store(state, move |state, store| {
        let results = load(state, store, &id)?;
        let keys = results.varying_keys();
        let watched = results.watched(limit);
        let best = results.best().map(|b| b.row.id.clone());
        let series: Vec<Json_> = results
            .curves_of(store, &watched)?
            .into_iter()
            .map(|(job, epochs)| {
                let column = |f: fn(&sweep_store::EpochRow) -> f64| -> Vec<Json_> {
                    epochs.iter().map(|e| json!(f(e))).collect()
                };
                let mut o = job_json(job, &keys);
                o["epoch"] = json!(epochs.iter().map(|e| e.epoch).collect::<Vec<_>>());
                o["train_loss"] = Json_::Array(column(|e| e.train_loss));
                o["valid_loss"] = Json_::Array(column(|e| e.valid_loss));
                o["train_acc"] = Json_::Array(column(|e| e.train_acc));
                o["valid_acc"] = Json_::Array(column(|e| e.valid_acc));
                o["best"] = json!(best.as_deref() == Some(job.row.id.as_str()));
                o
            })
            .collect();
        Ok(json!({ "best": best, "keys": keys, "jobs": series }))
    })
    .await
}

async fn importance(
    Extract(state): Extract<Arc<State>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    check_query(&q, &[])?;
    with_store(state, move |state, store| {
        let imp = load(state, store, &id)?.importance();
        let keys: Vec<Json_> =
            imp.keys.iter().map(|k| json!({ "key": k.key, "score": k.score, "levels": k.levels })).collect();
        Ok(json!({
            "objective": imp.objective,
            "method": sweep_results::Importance::METHOD,
            "jobs": imp.jobs,
            "variance": imp.variance,
            "unexplained": imp.unexplained(),
            "keys": keys,
        }))
    })
    .await
}

async fn search(
    Extract(state): Extract<Arc<State>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    check_query(&q, &[])?;
    with_store(state, move |state, store| {
        let results = load(state, store, &id)?;
        // Columns, not one object a point: the done jobs once, each axis
        // their values in the same order (10,000 jobs stay well under 1 MB).
        let axes = results.search();
        let jobs: Vec<&str> = axes.first().map_or_else(Vec::new, |a| a.points.iter().map(|p| p.2.as_str()).collect());
        let objective: Vec<f64> = axes.first().map_or_else(Vec::new, |a| a.points.iter().map(|p| p.1).collect());
        let axes_json: Vec<Json_> = axes
            .iter()
            .map(|axis| {
                // Every done job has every varying key unless the sweep's
                // jobs differ in which keys they record: then say which.
                let aligned = axis.points.len() == jobs.len() && axis.points.iter().zip(&jobs).all(|(p, j)| p.2 == *j);
                let values: Vec<Json_> = axis.points.iter().map(|p| value_json(&p.0)).collect();
                let mut o = json!({ "key": axis.key, "log": axis.log, "values": values });
                if !aligned {
                    o["jobs"] = json!(axis.points.iter().map(|p| p.2.as_str()).collect::<Vec<_>>());
                    o["objective"] = json!(axis.points.iter().map(|p| p.1).collect::<Vec<_>>());
                }
                o
            })
            .collect();
        let trials = results.best_so_far();
        let trials = json!({
            "number": trials.iter().map(|t| t.number).collect::<Vec<_>>(),
            "job": trials.iter().map(|t| t.job_id.as_str()).collect::<Vec<_>>(),
            "objective": trials.iter().map(|t| t.objective).collect::<Vec<_>>(),
            "best_so_far": trials.iter().map(|t| t.best_so_far).collect::<Vec<_>>(),
        });
        Ok(json!({ "objective_name": "best_valid_acc", "jobs": jobs, "objective": objective, "axes": axes_json, "best_so_far": trials }))
    })
    .await
}

async fn job(
    Extract(state): Extract<Arc<State>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    check_query(&q, &[])?;
    with_store(state, move |_, store| {
        let detail =
            JobDetail::load(store, &id)?.ok_or_else(|| ApiError::NotFound(format!("no job with id `{id}`")))?;
        let mut sweeps = Vec::new();
        for sid in &detail.sweeps {
            let row = store.find_sweep(Some(sid))?;
            sweeps.push(json!({ "id": row.id, "name": row.name }));
        }
        let mut o = job_json(&detail.job, &[]);
        o["config"] = Json_::Object(detail.job.config.clone());
        o["error"] = json!(detail.job.row.error);
        o["sweeps"] = Json_::Array(sweeps);
        o["checkpoints"] =
            detail.checkpoints.iter().map(|c| json!({ "kind": c.kind, "epoch": c.epoch, "bytes": c.bytes })).collect();
        o["epoch_rows"] = detail
            .epochs
            .iter()
            .map(|e| {
                json!({
                    "epoch": e.epoch, "train_loss": e.train_loss, "train_acc": e.train_acc,
                    "valid_loss": e.valid_loss, "valid_acc": e.valid_acc, "lr": e.lr, "seconds": e.seconds,
                })
            })
            .collect();
        if let Some(m) = o.as_object_mut() {
            m.remove("params");
        }
        Ok(o)
    })
    .await
}
