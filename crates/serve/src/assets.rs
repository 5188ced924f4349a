//! The page and its files, embedded at build time, and the 404 for anything
//! else. Every page is the same HTML, which reads its path and asks the API
//! for what it shows; a page of an unknown sweep or job is a 404 already here.

use std::sync::Arc;

use axum::extract::{Path, State as Extract};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::map_response;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::State;

const INDEX: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

/// Only this server's own files run or style the page; nothing is framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

pub(crate) fn routes() -> Router<Arc<State>> {
    Router::new()
        .route("/", get(page))
        .route("/sweeps/{id}", get(sweep_page))
        .route("/jobs/{id}", get(job_page))
        .route("/assets/app.js", get(|| async { file("text/javascript; charset=utf-8", APP_JS) }))
        .route("/assets/app.css", get(|| async { file("text/css; charset=utf-8", APP_CSS) }))
}

/// Every response's headers (pages, files, API, 404).
pub(crate) fn layer<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router.layer(map_response(headers))
}

fn file(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

async fn headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

async fn page() -> Response {
    file("text/html; charset=utf-8", INDEX)
}

/// The page of a sweep that exists (by its exact id), else 404.
async fn sweep_page(Extract(state): Extract<Arc<State>>, Path(id): Path<String>) -> Response {
    exists(state, move |store| Ok(store.find_sweep(Some(&id))?.id == id)).await
}

/// The page of a job that exists (by its exact id), else 404.
async fn job_page(Extract(state): Extract<Arc<State>>, Path(id): Path<String>) -> Response {
    exists(state, move |store| Ok(store.job(&id)?.is_some())).await
}

async fn exists(
    state: Arc<State>,
    f: impl FnOnce(&sweep_store::Store) -> Result<bool, sweep_store::Error> + Send + 'static,
) -> Response {
    let found = tokio::task::spawn_blocking(move || {
        let store = state.store().map_err(|e| e.to_string())?;
        match f(&store) {
            Ok(found) => Ok(found),
            Err(sweep_store::Error::NotFound(_)) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    match found {
        Ok(true) => page().await,
        Ok(false) => not_found().await,
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

/// Anything that is neither a page, a file nor an endpoint.
pub(crate) async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "404 not found: sweep serve has /, /sweeps/ID, /jobs/ID and /api/…\n",
    )
        .into_response()
}
