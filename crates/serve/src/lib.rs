//! `sweep serve`: a live, local, read-only dashboard of a sweep database.
//!
//! An axum server on the caller's tokio runtime. The page (HTML, CSS and a
//! small vanilla JavaScript file that draws its charts as SVG) is embedded in
//! the binary at build time: nothing is fetched from a CDN, nothing is built
//! with npm. The page reads one JSON endpoint per thing it shows (`api`), and
//! polls them every few seconds while a sweep runs.
//!
//! Read-only: the database is opened with `Store::open_read_only` (a WAL
//! reader beside a running sweep, which leaves the file byte-identical) and
//! no endpoint writes; every number comes from `sweep-results`.
//!
//! This crate knows no Candle, worker, scheduler or clap (checked): the cli
//! parses the arguments and hands in the speed-only keys.

mod api;
mod assets;
mod state;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;

pub use state::State;

/// What can go wrong serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed (opening the database).
    #[error(transparent)]
    Store(#[from] sweep_store::Error),
    /// The address could not be bound or served.
    #[error("{addr}: {source}")]
    Io {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// What the server reads and how.
#[derive(Debug, Clone)]
pub struct Config {
    /// The database: an SQLite file or a PostgreSQL URL.
    pub db: sweep_store::Location,
    /// The settings that change only speed (for Same As), from the caller's
    /// sweep-file vocabulary.
    pub speed_only: Vec<String>,
}

/// A bound, not yet serving, dashboard.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    state: Arc<State>,
}

impl Server {
    /// Opens the database read-only (refusing a foreign, damaged or newer
    /// file before binding) and binds `addr` (port 0: any free port).
    pub async fn bind(addr: SocketAddr, config: Config) -> Result<Server, Error> {
        let state = Arc::new(State::open(config)?);
        let listener = TcpListener::bind(addr).await.map_err(|source| Error::Io { addr, source })?;
        let addr = listener.local_addr().map_err(|source| Error::Io { addr, source })?;
        Ok(Server { listener, addr, state })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), Error> {
        let addr = self.addr;
        let app = router(self.state);
        let app = if addr.ip().is_loopback() { app.layer(axum::middleware::from_fn(loopback_host_only)) } else { app };
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|source| Error::Io { addr, source })
    }
}

/// On a loopback address, answers only requests addressed to a loopback
/// name (`localhost`, `127.0.0.1`, `[::1]`): a web page elsewhere whose name
/// its owner points at 127.0.0.1 (DNS rebinding) cannot read the results.
async fn loopback_host_only(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse;
    let host = request.headers().get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    let loopback =
        name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        next.run(request).await
    } else {
        (
            axum::http::StatusCode::FORBIDDEN,
            "403: this dashboard answers only to localhost (see `sweep serve --bind`)\n",
        )
            .into_response()
    }
}

/// Every route: the pages, their assets, the JSON API; anything else is 404.
pub fn router(state: Arc<State>) -> Router {
    assets::layer(assets::routes().merge(api::routes()).fallback(assets::not_found)).with_state(state)
}
