//! `/health/live` (the process answers), `/health/ready` (the store answers and the
//! instance is not draining; the bus's state is reported but does not decide), for
//! Kubernetes probes and load balancers, and `/metrics` for Prometheus.
//!
//! Readiness says which dependency is down, never why: the reason names hosts, users and
//! databases, so it goes to the log, once when the dependency goes down and once when it
//! comes back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;
use warp::Filter;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use crate::state::AppState;

/// A dependency slower than this counts as down: a readiness probe must answer quickly.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// `/health/live` and `/health/ready`: what probes and load balancers ask, on every
/// listener.
pub(crate) fn probes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let live = warp::path!("health" / "live").and(warp::get()).then(live);
    let ready = warp::path!("health" / "ready")
        .and(warp::get())
        .then(move || ready(state.clone()));
    live.or(ready).unify()
}

/// `/metrics` and `/health/details` (why a dependency is down, with its host): for
/// operators, on the admin listener when there is one.
pub(crate) fn admin(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let details_state = state.clone();
    let details = warp::path!("health" / "details")
        .and(warp::get())
        .then(move || details(details_state.clone()));
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .then(move || metrics(state.clone()));
    metrics.or(details).unify()
}

/// The answer of `/health/live`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Liveness {
    /// Always `live`.
    status: &'static str,
}

/// The answer of `/health/ready`: which dependency is down, never why.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Readiness {
    /// `ready` or `not ready`.
    status: &'static str,
    /// The message store: `up` or `down`. Down makes the instance not ready.
    store: &'static str,
    /// The bus: `up` or `down`. Reported only: without it the instance still stores and
    /// delivers, and catches up from the store.
    bus: &'static str,
    /// Shutting down: not ready, so load balancers send new clients elsewhere.
    draining: bool,
    /// Open STOMP sessions.
    sessions: usize,
}

/// The answer of `/health/details`: like readiness, with the reason a dependency is
/// down (hosts included, so it is for operators).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Details {
    /// `up`, or `down: <why>`.
    store: String,
    /// `up`, or `down: <why>`.
    bus: String,
    /// Shutting down.
    draining: bool,
    /// Open STOMP sessions.
    sessions: usize,
}

/// The process answers.
#[utoipa::path(
    get,
    path = "/health/live",
    tag = "health",
    responses((status = 200, description = "The process runs", body = Liveness))
)]
pub(crate) async fn live() -> Response {
    warp::reply::json(&Liveness { status: "live" }).into_response()
}

/// Prometheus metrics (admin: on `CHAT_ADMIN_BIND` when set, else here).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "admin",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain; version=0.0.4"))
)]
pub(crate) async fn metrics(state: Arc<AppState>) -> Response {
    let text = state.metrics.render(state.service.bus().as_ref());
    warp::reply::with_header(
        text,
        "content-type",
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
    )
    .into_response()
}

/// Asks the store and the bus at once, each bounded by [`CHECK_TIMEOUT`]: `Err(why)` for
/// a dependency that is down.
async fn check_dependencies(state: &AppState) -> (Result<(), String>, Result<(), String>) {
    let bounded = |outcome: Result<Result<(), String>, tokio::time::error::Elapsed>| {
        outcome.unwrap_or_else(|_| Err(format!("no answer within {CHECK_TIMEOUT:?}")))
    };
    let store = tokio::time::timeout(CHECK_TIMEOUT, state.service.repository().check_health());
    let bus = tokio::time::timeout(CHECK_TIMEOUT, state.service.bus().check_health());
    let (store, bus) = tokio::join!(store, bus);
    (
        bounded(store.map(|r| r.map_err(|e| e.to_string()))),
        bounded(bus.map(|r| r.map_err(|e| e.to_string()))),
    )
}

/// Why a dependency is down (admin: on `CHAT_ADMIN_BIND` when set, else here).
#[utoipa::path(
    get,
    path = "/health/details",
    tag = "admin",
    responses((status = 200, description = "Each dependency's state and the reason it is down", body = Details))
)]
pub(crate) async fn details(state: Arc<AppState>) -> Response {
    let (store, bus) = check_dependencies(&state).await;
    let why = |outcome: Result<(), String>| match outcome {
        Ok(()) => "up".to_owned(),
        Err(why) => format!("down: {why}"),
    };
    let body = Details {
        store: why(store),
        bus: why(bus),
        draining: state.is_draining(),
        sessions: state.gateway.lifecycle.open(),
    };
    warp::reply::json(&body).into_response()
}

/// Whether each dependency was down at the last probe, so its outage is logged once.
static STORE_DOWN: AtomicBool = AtomicBool::new(false);
static BUS_DOWN: AtomicBool = AtomicBool::new(false);

/// "up" or "down"; the reason goes to the log when the state changes.
fn describe(
    what: &'static str,
    was_down: &AtomicBool,
    outcome: Result<(), String>,
) -> &'static str {
    let down = outcome.is_err();
    if was_down.swap(down, Ordering::Relaxed) != down {
        match outcome {
            Err(why) => tracing::warn!(dependency = what, %why, "readiness: down"),
            Ok(()) => tracing::info!(dependency = what, "readiness: up again"),
        }
    }
    if down { "down" } else { "up" }
}

/// Whether this instance should get traffic: the store answers and it is not draining.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "health",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready: the store is down or the instance is draining", body = Readiness),
    )
)]
pub(crate) async fn ready(state: Arc<AppState>) -> Response {
    let (store, bus) = check_dependencies(&state).await;
    let store = describe("store", &STORE_DOWN, store);
    let bus = describe("bus", &BUS_DOWN, bus);
    let draining = state.is_draining();
    // The bus is not part of readiness: while Redis is down every instance still stores,
    // delivers locally and catches up from the store each reconciliation period, so the
    // outage costs cross-instance latency. Failing readiness would take every replica out
    // of the Service at once and turn that into a full outage.
    let ready = store == "up" && !draining;
    let body = Readiness {
        status: if ready { "ready" } else { "not ready" },
        store,
        bus,
        draining,
        sessions: state.gateway.lifecycle.open(),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}
