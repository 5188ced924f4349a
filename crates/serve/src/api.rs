//! The JSON API: one endpoint per thing the page shows. Every handler reads
//! through `sweep-results` on a blocking thread; none writes.
//!
//! - `GET /api/sweeps`: every sweep's summary.
//! - `GET /api/sweeps/{id}`: one sweep: summary, varying keys, best job.
//! - `GET /api/sweeps/{id}/jobs?offset=&limit=&sort=&order=&status=`: one
//!   page of its jobs table (only the table's columns), filtered by status
//!   and sorted here, and how many jobs match: the page never holds them all.
//! - `GET /api/sweeps/{id}/curves?limit=`: learning curves of the jobs worth
//!   watching (the best, the running, then by accuracy).
//! - `GET /api/sweeps/{id}/importance`: each key's first-order importance.
//! - `GET /api/sweeps/{id}/search`: the trials (done and pruned jobs) as
//!   columns: `jobs`, `objective`, `pruned` once, each varying key's
//!   `values` and scale (log, linear or choice); best so far. The page draws
//!   the objective against each key and the parallel coordinates from it.
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
/// Jobs in a page of the jobs table when the page does not say.
const DEFAULT_PAGE: usize = 100;
/// The most jobs one page may ask for.
const MAX_PAGE: usize = 1000;
/// The jobs table's columns a page may sort by, besides the varying keys.
const JOB_COLUMNS: [&str; 7] = ["id", "best_valid_acc", "best_epoch", "epochs_done", "status", "seconds", "same_as"];

pub(crate) fn routes() -> Router<Arc<State>> {
    Router::new()
        .route("/api/sweeps", get(sweeps))
        .route("/api/sweeps/{id}", get(sweep))
        .route("/api/sweeps/{id}/jobs", get(jobs))
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

/// The job's values of `keys`, null where it has none.
fn params_json(job: &Job, keys: &[String]) -> Map<String, Json_> {
    keys.iter().map(|k| (k.clone(), job.param(k).as_ref().map_or(Json_::Null, value_json))).collect()
}

fn job_json(job: &Job, keys: &[String]) -> Json_ {
    let params = params_json(job, keys);
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
    check_query(&q, &[])?;
    with_store(state, move |state, store| {
        let results = load(state, store, &id)?;
        let best = results.best().map(|b| {
            json!({
                "id": b.row.id,
                "best_valid_acc": b.row.best_valid_acc,
                "best_epoch": b.row.best_epoch,
                "config": b.config,
            })
        });
        Ok(json!({
            "sweep": summary(&results),
            "keys": results.varying_keys(),
            "best": best,
        }))
    })
    .await
}

/// `status=`: one status, or every one (absent, empty or `all`).
fn parse_status(text: Option<&str>) -> Result<Option<Status>, ApiError> {
    match text {
        None | Some("") | Some("all") => Ok(None),
        Some(s) => Status::ALL.into_iter().find(|st| st.as_str() == s).map(Some).ok_or_else(|| {
            let known: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::BadRequest(format!("status: no such status `{s}` (one of all, {})", known.join(", ")))
        }),
    }
}

/// A whole-number query parameter from `lo` to `hi`, `default` when absent.
fn parse_count(
    q: &HashMap<String, String>,
    name: &str,
    default: usize,
    lo: usize,
    hi: usize,
) -> Result<usize, ApiError> {
    match q.get(name) {
        None => Ok(default),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(n),
            _ if hi == usize::MAX => Err(ApiError::BadRequest(format!("{name}: `{text}` is not a whole number"))),
            _ => Err(ApiError::BadRequest(format!("{name}: `{text}` is not a whole number from {lo} to {hi}"))),
        },
    }
}

/// A job's value in a column of the jobs table (`JOB_COLUMNS` or a key).
fn column_value(job: &Job, column: &str) -> Option<Value> {
    let number = |x: f64| Some(Value::Number(x));
    match column {
        "id" => Some(Value::Text(job.row.id.clone())),
        "best_valid_acc" => job.row.best_valid_acc.and_then(number),
        "best_epoch" => job.row.best_epoch.and_then(|e| number(e as f64)),
        "epochs_done" => number(job.row.epochs_done as f64),
        "status" => Some(Value::Text(job.row.status.as_str().to_owned())),
        "seconds" => number(job.row.seconds),
        "same_as" => job.same_as.clone().map(Value::Text),
        key => job.param(key),
    }
}

/// A row of the jobs table: only what the table shows.
fn row_json(job: &Job, keys: &[String]) -> Json_ {
    let params = params_json(job, keys);
    let r = &job.row;
    json!({
        "id": r.id,
        "status": r.status.as_str(),
        "status_text": job.status_text(),
        "params": params,
        "best_valid_acc": r.best_valid_acc,
        "best_epoch": r.best_epoch,
        "epochs_done": r.epochs_done,
        "epochs": r.epochs,
        "seconds": r.seconds,
        "same_as": job.same_as,
    })
}

async fn jobs(
    Extract(state): Extract<Arc<State>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    check_query(&q, &["offset", "limit", "sort", "order", "status"])?;
    let status = parse_status(q.get("status").map(String::as_str))?;
    let offset = parse_count(&q, "offset", 0, 0, usize::MAX)?;
    let limit = parse_count(&q, "limit", DEFAULT_PAGE, 1, MAX_PAGE)?;
    let sort = q.get("sort").cloned().unwrap_or_else(|| "best_valid_acc".to_owned());
    let descending = match q.get("order").map(String::as_str) {
        None => sort == "best_valid_acc",
        Some("asc") => false,
        Some("desc") => true,
        Some(other) => return Err(ApiError::BadRequest(format!("order: `{other}` is neither `asc` nor `desc`"))),
    };
    with_store(state, move |state, store| {
        let results = load(state, store, &id)?;
        let keys = results.varying_keys();
        if !JOB_COLUMNS.contains(&sort.as_str()) && !keys.contains(&sort) {
            let mut known: Vec<&str> = JOB_COLUMNS.to_vec();
            known.extend(keys.iter().map(String::as_str));
            return Err(ApiError::BadRequest(format!("sort: no such column `{sort}` (one of {})", known.join(", "))));
        }
        // Sorted here, once per request: each job's value is read once;
        // missing values last either way, ties in expansion order.
        let mut rows: Vec<(&Job, Option<Value>)> = results
            .jobs
            .iter()
            .filter(|j| status.is_none_or(|s| j.row.status == s))
            .map(|j| (j, column_value(j, &sort)))
            .collect();
        rows.sort_by(|(_, x), (_, y)| match (x, y) {
            (None, None) => std::cmp::Ordering::Equal,
            (None, _) => std::cmp::Ordering::Greater,
            (_, None) => std::cmp::Ordering::Less,
            (Some(x), Some(y)) if descending => y.cmp(x),
            (Some(x), Some(y)) => x.cmp(y),
        });
        let page: Vec<Json_> = rows.iter().skip(offset).take(limit).map(|(j, _)| row_json(j, &keys)).collect();
        Ok(json!({
            "total": rows.len(),
            "offset": offset,
            "limit": limit,
            "sort": sort,
            "order": if descending { "desc" } else { "asc" },
            "keys": keys,
            "best": results.best().map(|b| b.row.id.clone()),
            "jobs": page,
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
    let limit = parse_count(&q, "limit", DEFAULT_CURVES, 1, MAX_CURVES)?;
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

/// How a varying key's axis is drawn: `choice` (categories) when the sweep
/// samples it from a list, `log` when it samples it log-uniformly or its
/// positive values span a factor of `LOG_SPAN`, else `linear`.
fn scale_of(spec: &Json_, key: &str, values: &[Option<Value>]) -> &'static str {
    let sampled = spec.get("space").and_then(|s| s.get(key));
    if sampled.is_some_and(|d| d.get("choice").is_some()) {
        return "choice";
    }
    if sampled.is_some_and(|d| d.get("log_uniform").is_some()) {
        return "log";
    }
    let mut numbers = values.iter().flatten().map(|v| match v {
        Value::Number(x) => *x,
        Value::Text(_) => f64::NAN,
    });
    let (mut lo, mut hi, mut any) = (f64::INFINITY, f64::NEG_INFINITY, false);
    let positive = numbers.all(|x| {
        (lo, hi, any) = (lo.min(x), hi.max(x), true);
        x > 0.0
    });
    if any && positive && hi / lo >= sweep_results::LOG_SPAN {
        "log"
    } else {
        "linear"
    }
}

async fn search(
    Extract(state): Extract<Arc<State>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    check_query(&q, &[])?;
    with_store(state, move |state, store| {
        let results = load(state, store, &id)?;
        // Columns, not one object a point: the trials (done and pruned jobs
        // with an objective) once, each key its values in the same order,
        // null where a job does not record it.
        let trials: Vec<(&Job, f64)> = results
            .jobs
            .iter()
            .filter(|j| j.row.status == Status::Done || j.row.status.stopped_early())
            .filter_map(|j| Some((j, j.row.best_valid_acc.filter(|y| y.is_finite())?)))
            .collect();
        let spec: Json_ = serde_json::from_str(&results.sweep.spec_json).unwrap_or_default();
        let axes: Vec<Json_> = results
            .varying_keys()
            .into_iter()
            .map(|key| {
                let values: Vec<Option<Value>> = trials.iter().map(|(j, _)| j.param(&key)).collect();
                let scale = scale_of(&spec, &key, &values);
                let values: Vec<Json_> = values.iter().map(|v| v.as_ref().map_or(Json_::Null, value_json)).collect();
                json!({ "key": key, "scale": scale, "log": scale == "log", "values": values })
            })
            .collect();
        let pruned: HashMap<&str, bool> =
            results.jobs.iter().map(|j| (j.row.id.as_str(), j.row.status.stopped_early())).collect();
        let so_far = results.best_so_far();
        let so_far = json!({
            "number": so_far.iter().map(|t| t.number).collect::<Vec<_>>(),
            "job": so_far.iter().map(|t| t.job_id.as_str()).collect::<Vec<_>>(),
            "objective": so_far.iter().map(|t| t.objective).collect::<Vec<_>>(),
            "best_so_far": so_far.iter().map(|t| t.best_so_far).collect::<Vec<_>>(),
            "pruned": so_far.iter().map(|t| pruned.get(t.job_id.as_str()) == Some(&true)).collect::<Vec<_>>(),
        });
        Ok(json!({
            "objective_name": "best_valid_acc",
            "jobs": trials.iter().map(|(j, _)| j.row.id.as_str()).collect::<Vec<_>>(),
            "objective": trials.iter().map(|(_, y)| *y).collect::<Vec<_>>(),
            "pruned": trials.iter().map(|(j, _)| j.row.status.stopped_early()).collect::<Vec<_>>(),
            "axes": axes,
            "best_so_far": so_far,
        }))
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
