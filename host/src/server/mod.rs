//! `host serve`: the JSON API (`/api/v1`) and the dashboard over one
//! journal, SQLite or PostgreSQL. Pages are rendered on the server (maud
//! escapes every journal string), read without JavaScript, and follow
//! changes live through server-sent events when JavaScript runs.

mod api;
mod guard;
mod history_page;
mod live;
mod openapi;
mod pages;
mod talk;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;

use crate::journal::Journal;
use crate::wasm::ComponentLoader;
use crate::worker::Client;

pub use guard::{BindError, check_bind};

/// Request bodies past this size are refused: the API takes small JSON documents and forms.
const BODY_LIMIT: usize = 64 * 1024;

/// Where components are uploaded; the one route that takes large bodies.
const UPLOAD_PATH: &str = "/api/v1/components";

/// The largest component upload (a Python step is ~40 MB).
const UPLOAD_LIMIT: usize = 256 * 1024 * 1024;

/// What every handler shares.
struct AppState {
    journal: Journal,
    /// Required on every request when set.
    token: Option<String>,
    /// The Content-Security-Policy header of every response.
    csp: String,
    /// The dashboard's forms carry it, so another site cannot post them.
    csrf: String,
    /// Renders `/metrics`; `None` if another recorder was installed first.
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Checks and stores uploads and submissions; its engine starts on first use.
    client: std::sync::OnceLock<Result<Client, String>>,
    /// Uploads and submissions compiling at once (each takes a core and its component's size in memory).
    compiling: tokio::sync::Semaphore,
    /// The (status, queue) label sets `/metrics` has exported, so a gone one reads 0.
    seen: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
    /// The journal's notices for the event streams, heard from the first stream on.
    notices: tokio::sync::OnceCell<Option<tokio::sync::watch::Receiver<u64>>>,
}

impl AppState {
    /// The submitting client, its WebAssembly engine started on first use.
    fn client(&self) -> Result<&Client, &str> {
        let client = self.client.get_or_init(|| {
            let engine =
                crate::wasm::new_engine().map_err(|error| format!("cannot start the WebAssembly engine: {error:#}"))?;
            let loader = ComponentLoader::new(&engine, crate::wasm::default_cache_dir());
            Ok(Client::new(self.journal.clone(), loader))
        });
        client.as_ref().map_err(String::as_str)
    }

    /// The journal's notices (PostgreSQL), or `None`: streams poll.
    async fn notices(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.notices.get_or_init(|| live::notices(&self.journal)).await.clone()
    }
}

type Shared = Arc<AppState>;

/// The dashboard, the API and the event stream over `journal`; with
/// `token`, every request must present it.
pub fn router(journal: Journal, token: Option<String>) -> Router {
    let recorder = crate::telemetry::install();
    let state = Arc::new(AppState {
        journal,
        token,
        csp: guard::content_security_policy(pages::STYLE, pages::SCRIPT),
        csrf: guard::new_secret(),
        metrics: recorder,
        client: std::sync::OnceLock::new(),
        compiling: tokio::sync::Semaphore::new(2),
        seen: std::sync::Mutex::default(),
        notices: tokio::sync::OnceCell::new(),
    });
    Router::new()
        .merge(api::routes())
        .merge(pages::routes())
        .merge(live::routes())
        .route("/metrics", axum::routing::get(metrics))
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard::check))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard::secure))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("cannot listen on {bind}: {source}")]
    Listen { bind: SocketAddr, source: std::io::Error },
    #[error("the server stopped: {0}")]
    Stopped(std::io::Error),
}

/// Serves the dashboard and the API of `journal` on `bind` until `shutdown`
/// resolves; `ready` hears the address it listens on (port 0 picks one).
/// Any bind other than loopback needs a token.
pub async fn serve(
    journal: Journal,
    bind: SocketAddr,
    token: Option<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    check_bind(bind, token.as_deref())?;
    let listener = tokio::net::TcpListener::bind(bind).await.map_err(|source| ServeError::Listen { bind, source })?;
    serve_on(journal, listener, token, shutdown, ready).await
}

/// As [`serve`], on a listener already bound (its bind already checked).
pub async fn serve_on(
    journal: Journal,
    listener: tokio::net::TcpListener,
    token: Option<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let local = listener.local_addr().map_err(ServeError::Stopped)?;
    ready(local);
    axum::serve(listener, router(journal, token)).with_graceful_shutdown(shutdown).await.map_err(ServeError::Stopped)
}

/// `/metrics` in Prometheus text format: this process's counters and
/// histograms, and what the journal holds now (workflows by status and
/// queue, queue depths, the oldest due workflow's wait, workers by state).
async fn metrics(axum::extract::State(state): axum::extract::State<Shared>) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let Some(handle) = &state.metrics else {
        return (axum::http::StatusCode::NOT_FOUND, "metrics are off in this process").into_response();
    };
    if let Err(error) = journal_gauges(&state).await {
        tracing::warn!(source = "host", "metrics: cannot read the journal: {error}");
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response()
}

/// Sets the gauges read from the journal; a label set seen before and gone now reads 0.
async fn journal_gauges(state: &AppState) -> Result<(), crate::journal::JournalError> {
    use crate::journal::{WorkerState, WorkflowStatus};
    let now = crate::journal::Timestamp::now();
    let queues = state.journal.queues().await?;
    // The default queue is always there, with nothing in it if need be.
    if !queues.iter().any(|queue| queue.limits.name == crate::journal::DEFAULT_QUEUE) {
        crate::telemetry::queue_depth(crate::journal::DEFAULT_QUEUE, 0, 0, 0, 0);
    }
    for queue in &queues {
        crate::telemetry::queue_depth(&queue.limits.name, queue.ready, queue.delayed, queue.waiting, queue.running);
    }
    let counts = state.journal.counts().await?;
    {
        let mut seen = state.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let current: std::collections::HashSet<(String, String)> =
            counts.by_status.iter().map(|(status, queue, _)| (status.to_string(), queue.clone())).collect();
        for (status, queue) in seen.difference(&current) {
            crate::telemetry::workflows(status, queue, 0);
        }
        for status in WorkflowStatus::ALL {
            if !current.iter().any(|(seen_status, _)| seen_status == status.as_column()) {
                crate::telemetry::workflows(status.as_column(), "", 0);
            }
        }
        for (status, queue, count) in &counts.by_status {
            crate::telemetry::workflows(status.as_column(), queue, *count);
        }
        seen.extend(current);
    }
    for queue in &queues {
        let since = counts.oldest_ready.iter().find(|(name, _)| *name == queue.limits.name).map(|(_, since)| *since);
        crate::telemetry::oldest_ready(
            &queue.limits.name,
            since.map_or(std::time::Duration::ZERO, |since| now.since(since)),
        );
    }
    if !queues.iter().any(|queue| queue.limits.name == crate::journal::DEFAULT_QUEUE) {
        crate::telemetry::oldest_ready(crate::journal::DEFAULT_QUEUE, std::time::Duration::ZERO);
    }
    let workers = state.journal.workers().await?;
    for worker_state in WorkerState::ALL {
        crate::telemetry::workers(
            worker_state.as_column(),
            workers.iter().filter(|w| w.state == *worker_state).count(),
        );
    }
    Ok(())
}

/// The HTTP status of a failure of this disposition: the one place the API
/// and the pages decide it.
pub(crate) fn status(disposition: crate::Disposition) -> axum::http::StatusCode {
    use crate::Disposition;
    use axum::http::StatusCode;
    match disposition {
        Disposition::Refused => StatusCode::BAD_REQUEST,
        Disposition::NotFound => StatusCode::NOT_FOUND,
        Disposition::Conflict | Disposition::Stopped | Disposition::WorkflowFailed => StatusCode::CONFLICT,
        Disposition::Outage => StatusCode::SERVICE_UNAVAILABLE,
        Disposition::Bug => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
