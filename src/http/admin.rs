//! Admin endpoints on `listen.admin`: metrics, health, readiness, reload,
//! explain, stats.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::dns::pipeline::Pipeline;
use crate::metrics::Metrics;
use crate::observe::stats::Stats;
use crate::policy::DomainName;
use crate::policy::explain::Explanation;
use crate::reload::{ListStatus, Reloader};

#[derive(Clone)]
pub struct AdminState {
    pub reloader: Arc<Reloader>,
    pub pipeline: Arc<Pipeline>,
    pub metrics: Arc<Metrics>,
    /// The counts behind `/stats`.
    pub stats: Arc<Mutex<Stats>>,
    /// Set once the DNS listeners are up.
    pub ready: Arc<AtomicBool>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/reload", post(reload))
        .route("/explain", get(explain))
        .route("/stats", get(stats))
        .with_state(state)
}

/// Serves the admin API until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

async fn metrics(State(s): State<AdminState>) -> Response {
    let body = s.metrics.encode(s.pipeline.cache().len());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

#[derive(Serialize)]
struct ListReport {
    name: String,
    status: &'static str,
    rules: usize,
    skipped: u64,
    format: Option<&'static str>,
    error: Option<String>,
}

impl From<&ListStatus> for ListReport {
    fn from(l: &ListStatus) -> Self {
        Self {
            name: l.name.clone(),
            status: if l.kept_because.is_some() {
                "kept"
            } else {
                "ok"
            },
            rules: l.rules,
            skipped: l.skipped.count,
            format: l.format.map(|f| f.as_str()),
            error: l.kept_because.clone(),
        }
    }
}

#[derive(Serialize)]
struct Readiness {
    ready: bool,
    lists: Vec<ListReport>,
}

async fn readyz(State(s): State<AdminState>) -> Response {
    let ready = s.ready.load(Ordering::Acquire);
    let lists = s.reloader.statuses().iter().map(ListReport::from).collect();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(Readiness { ready, lists })).into_response()
}

#[derive(Serialize)]
struct ReloadReport {
    ok: bool,
    lists: Vec<ListReport>,
}

async fn reload(State(s): State<AdminState>) -> Response {
    let reloader = s.reloader.clone();
    let Ok(lists) = tokio::task::spawn_blocking(move || reloader.reload()).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "reload task failed\n").into_response();
    };
    let lists: Vec<ListReport> = lists.iter().map(ListReport::from).collect();
    let ok = lists.iter().all(|l| l.error.is_none());
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    (code, axum::Json(ReloadReport { ok, lists })).into_response()
}

#[derive(Deserialize)]
struct ExplainParams {
    name: Option<String>,
    client: Option<String>,
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

async fn explain(
    State(s): State<AdminState>,
    params: Result<Query<ExplainParams>, QueryRejection>,
) -> Response {
    let bad = |msg: String| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(ErrorBody { error: msg }),
        )
            .into_response()
    };
    let Ok(Query(params)) = params else {
        return bad("query string must be name=NAME[&client=IP]".into());
    };
    let Some(name) = params.name else {
        return bad("missing name= parameter".into());
    };
    let name = match DomainName::parse(&name) {
        Ok(n) => n,
        Err(e) => return bad(format!("invalid name {name:?}: {e}")),
    };
    if let Some(c) = &params.client
        && c.parse::<std::net::IpAddr>().is_err()
    {
        return bad(format!("invalid client {c:?}: expected an IP address"));
    }
    let policy = s.reloader.live().load();
    axum::Json(Explanation::new(&policy, &name, params.client)).into_response()
}

/// `GET /stats`: the most blocked names, categories and clients over
/// `stats.window`.
async fn stats(State(s): State<AdminState>) -> Response {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let report = match s.stats.lock() {
        Ok(stats) => stats.report(now),
        Err(_) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "stats unavailable\n").into_response();
        }
    };
    axum::Json(report).into_response()
}
