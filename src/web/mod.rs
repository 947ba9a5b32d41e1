//! The web console and its JSON API, over HTTP (axum on tokio): projects, environments,
//! activities (every job: pushes, redeploys, rollbacks, cancellations, syncs, deletions) with
//! their logs, whole or live as Server-Sent Events, and the actions a developer takes on them.
//!
//! `pushgate-runner serve --http ADDR` serves it beside the workers; `pushgate-runner web --http
//! ADDR` serves it alone (the console on the git server, runners elsewhere). It reads the same
//! store as the hooks and runners; an action queues a job and wakes the runners, as a push does.
//! Who may do what: [`auth`].

mod api;
mod auth;
mod log;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::routing::{get, post};
use axum::Router;

use crate::queue::{Location, QueueError, Store};
use crate::store::DataDir;

/// The service's state, shared by its handlers.
pub struct Web {
    data: DataDir,
    /// One connection: SQLite serves one writer at a time anyway, and reads take microseconds.
    store: Mutex<Box<dyn Store>>,
    sessions: auth::Sessions,
    /// Live logs open, per token: each polls the log, so their number is bounded.
    streams: log::Streams,
    /// Logs are read from the store (runners elsewhere ship them there), not from files here.
    logs_in_store: bool,
}

impl Web {
    pub fn open(data: &Path, queue: &Location) -> Result<Web, QueueError> {
        let store = queue.open(crate::store::QUEUE_TIMEOUT)?;
        Ok(Web {
            data: DataDir::new(data),
            store: Mutex::new(store),
            sessions: auth::Sessions::default(),
            streams: log::Streams::default(),
            logs_in_store: !queue.is_embedded(),
        })
    }

    /// Runs an operation (`crate::ops`) with the store, on a blocking thread (off the async
    /// workers); its error is mapped to an HTTP status once, by `From<ops::Error> for ApiError`.
    async fn op<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut dyn Store) -> Result<T, crate::ops::Error> + Send + 'static,
    ) -> Result<T, api::ApiError> {
        let web = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = web.store.lock().unwrap_or_else(|p| p.into_inner());
            f(store.as_mut())
        })
        .await
        .map_err(|e| api::ApiError::internal(e.to_string()))?
        .map_err(api::ApiError::from)
    }

    /// Runs `f` on the store, on a blocking thread, as [`Web::op`] does.
    async fn with_store<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut dyn Store) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, api::ApiError> {
        self.op(move |s| f(s).map_err(crate::ops::Error::from)).await
    }
}

impl Web {
    /// A job's log from `offset`: its file here, or what runners shipped to the store.
    async fn log_from(self: &Arc<Self>, job: crate::core::JobId, offset: u64) -> Result<Vec<u8>, api::ApiError> {
        if self.logs_in_store {
            return self.with_store(move |s| s.log_from(job, offset)).await;
        }
        let path = self.data.log(job);
        tokio::task::spawn_blocking(move || crate::follow::read_file_from(&path, offset))
            .await
            .map_err(|e| api::ApiError::internal(e.to_string()))?
            .map_err(|e| api::ApiError::internal(format!("reading the log of activity #{job}: {e}")))
    }
}

/// The routes of the console and the API.
pub fn router(web: Arc<Web>) -> Router {
    Router::new()
        .route("/", get(api::console))
        .route("/api/login", post(auth::login))
        .route("/api/logout", post(auth::logout))
        .route("/api/session", get(auth::session))
        .route("/api/projects", get(api::projects))
        .route("/api/projects/{project}/environments", get(api::environments))
        .route("/api/projects/{project}/activities", get(api::activities))
        .route("/api/projects/{project}/environments/{environment}/redeploy", post(api::redeploy))
        .route("/api/projects/{project}/environments/{environment}/rollback", post(api::rollback))
        .route("/api/projects/{project}/environments/{environment}/promote", post(api::promote))
        .route("/api/activities/{id}", get(api::activity_one))
        .route("/api/activities/{id}/log", get(log::log))
        .route("/api/activities/{id}/cancel", post(api::cancel))
        .with_state(web)
}

/// Where the console answers, recorded for the hooks so that a push names its activity's URL
/// (`DATA/web.json`).
pub fn record_url(data: &DataDir, url: &str) -> Result<(), String> {
    std::fs::create_dir_all(data.root()).map_err(|e| e.to_string())?;
    crate::platform::write_if_changed(&web_file(data), &serde_json::json!({ "url": url }).to_string(), 0o644)
        .map(|_| ())
}

/// The console's URL the hooks name, if one was recorded.
pub fn console_url(data: &Path) -> Option<String> {
    let text = std::fs::read_to_string(web_file(&DataDir::new(data))).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("url")?.as_str().map(|u| u.trim_end_matches('/').to_owned())
}

fn web_file(data: &DataDir) -> PathBuf {
    data.root().join("web.json")
}

/// Serves the console and API on `addr` until the process ends. `public_url` is what pushes
/// name (default: `http://ADDR`).
pub fn serve(data: &Path, queue: &Location, addr: SocketAddr, public_url: Option<&str>) -> Result<(), String> {
    // Opened before the runtime starts: the PostgreSQL client runs a runtime of its own, which
    // cannot be started from async code (the handlers reach it through spawn_blocking).
    let web = Arc::new(Web::open(data, queue).map_err(|e| e.to_string())?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("starting the web service: {e}"))?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("the web service cannot listen on {addr}: {e}"))?;
        serve_on(web, listener, public_url).await
    })
}

/// Serves on a bound listener.
pub async fn serve_on(
    web: Arc<Web>,
    listener: tokio::net::TcpListener,
    public_url: Option<&str>,
) -> Result<(), String> {
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let url = public_url.map(str::to_owned).unwrap_or_else(|| format!("http://{addr}"));
    record_url(&web.data, &url).map_err(|e| format!("recording the console's URL: {e}"))?;
    tracing::info!(%addr, %url, "web console and API listening");
    axum::serve(listener, router(web)).await.map_err(|e| format!("the web service stopped: {e}"))
}
