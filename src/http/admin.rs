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

use crate::config::AdminToken;
use crate::dns::pipeline::Pipeline;
use crate::dns::upstream::Servers;
use crate::metrics::Metrics;
use crate::observe::clock::Utc;
use crate::observe::stats::Stats;
use crate::policy::DomainName;
use crate::policy::explain::Explanation;
use crate::reload::trigger::{Reloads, Which};
use crate::reload::{ListStatus, Reloader};

#[derive(Clone)]
pub struct AdminState {
    pub reloader: Arc<Reloader>,
    /// Where `POST /reload` asks (the one reload path).
    pub reloads: Reloads,
    pub pipeline: Arc<Pipeline>,
    pub metrics: Arc<Metrics>,
    /// Each upstream's health, for `sinkhole_upstream_up`.
    pub upstreams: Arc<Servers>,
    /// The counts behind `/stats`.
    pub stats: Arc<Mutex<Stats>>,
    /// Set once the DNS listeners are up.
    pub ready: Arc<AtomicBool>,
    /// `listen.admin_token_file`: what `POST /reload` must present.
    pub token: Option<Arc<AdminToken>>,
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
    axum::serve(super::limits::Limited::new(listener), router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

async fn metrics(State(s): State<AdminState>) -> Response {
    let body = s
        .metrics
        .encode(s.pipeline.cache().len(), |i| s.upstreams.in_service(i));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// One list in `/readyz` and `/reload` (SPEC "Status").
#[derive(Serialize)]
struct ListReport {
    name: String,
    /// ok, kept or missing.
    status: &'static str,
    rules: usize,
    /// file, url or disk; absent while the list has no version.
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// RFC 3339 time the version in service was taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    updated: Option<String>,
    skipped: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
}

impl From<&ListStatus> for ListReport {
    fn from(l: &ListStatus) -> Self {
        Self {
            name: l.name.clone(),
            status: l.health.as_str(),
            rules: l.rules,
            source: l.source.map(|s| s.as_str()),
            error: l.health.error().map(str::to_owned),
            updated: l.updated.map(|t| Utc::from(t).rfc3339()),
            skipped: l.skipped.count,
            format: l.format.map(|f| f.as_str()),
            url: l.url.clone(),
        }
    }
}

#[derive(Serialize)]
struct Readiness {
    ready: bool,
    lists: Vec<ListReport>,
}

/// Ready once the DNS listeners are up and every list has a version (a
/// remote list never fetched keeps it at 503, while DNS already answers).
async fn readyz(State(s): State<AdminState>) -> Response {
    let ready = s.ready.load(Ordering::Acquire) && s.reloader.complete();
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

#[derive(Deserialize)]
struct ReloadParams {
    force: Option<String>,
}

/// `POST /reload[?force=true]`: every list now, through the one reload
/// path; concurrent calls share a rebuild. 200 when every list is ok, 422
/// when any was kept (or is missing), naming it and why.
async fn reload(
    State(s): State<AdminState>,
    headers: axum::http::HeaderMap,
    params: Result<Query<ReloadParams>, QueryRejection>,
) -> Response {
    if let Some(token) = &s.token {
        let offered = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if !offered.is_some_and(|t| token.matches(t)) {
            return (
                StatusCode::UNAUTHORIZED,
                [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
                axum::Json(ErrorBody {
                    error: "POST /reload needs Authorization: Bearer <the token in listen.admin_token_file>".into(),
                }),
            )
                .into_response();
        }
    }
    let bad = |msg: &str| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(ErrorBody { error: msg.into() }),
        )
            .into_response()
    };
    let force = match params {
        Err(_) => return bad("query string must be empty or force=true"),
        Ok(Query(p)) => match p.force.as_deref() {
            None | Some("false" | "0") => false,
            Some("true" | "1" | "") => true,
            Some(_) => return bad("force must be true or false"),
        },
    };
    let Some(lists) = s.reloads.reload(Which::All, force).await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
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
    let admission = match &params.client {
        None => None,
        Some(c) => match c.parse::<std::net::IpAddr>() {
            Ok(ip) => Some(s.pipeline.access().check(ip).as_str()),
            Err(_) => return bad(format!("invalid client {c:?}: expected an IP address")),
        },
    };
    let policy = s.reloader.live().load();
    let mut e = Explanation::new(&policy, &name, params.client);
    e.access = admission;
    axum::Json(e).into_response()
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
