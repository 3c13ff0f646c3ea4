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

use serde_json::json;
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
    let live = warp::path!("health" / "live")
        .and(warp::get())
        .map(|| warp::reply::json(&json!({"status": "live"})).into_response());
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
    let metrics = warp::path!("metrics").and(warp::get()).map(move || {
        let text = state.metrics.render(state.service.bus().as_ref());
        warp::reply::with_header(
            text,
            "content-type",
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )
        .into_response()
    });
    metrics.or(details).unify()
}

async fn details(state: Arc<AppState>) -> Response {
    let store = tokio::time::timeout(CHECK_TIMEOUT, state.service.repository().check_health());
    let bus = tokio::time::timeout(CHECK_TIMEOUT, state.service.bus().check_health());
    let (store, bus) = tokio::join!(store, bus);
    let why = |outcome: Result<Result<(), String>, tokio::time::error::Elapsed>| match outcome {
        Ok(Ok(())) => "up".to_owned(),
        Ok(Err(why)) => format!("down: {why}"),
        Err(_) => format!("down: no answer within {CHECK_TIMEOUT:?}"),
    };
    let body = json!({
        "store": why(store.map(|r| r.map_err(|e| e.to_string()))),
        "bus": why(bus.map(|r| r.map_err(|e| e.to_string()))),
        "draining": state.is_draining(),
        "sessions": state.gateway.lifecycle.open(),
    });
    warp::reply::json(&body).into_response()
}

/// Whether each dependency was down at the last probe, so its outage is logged once.
static STORE_DOWN: AtomicBool = AtomicBool::new(false);
static BUS_DOWN: AtomicBool = AtomicBool::new(false);

/// "up" or "down"; the reason goes to the log when the state changes.
fn describe(
    what: &'static str,
    was_down: &AtomicBool,
    outcome: Result<Result<(), String>, tokio::time::error::Elapsed>,
) -> &'static str {
    let why = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(why)) => Some(why),
        Err(_) => Some(format!("no answer within {CHECK_TIMEOUT:?}")),
    };
    let down = why.is_some();
    if was_down.swap(down, Ordering::Relaxed) != down {
        match why {
            Some(why) => tracing::warn!(dependency = what, %why, "readiness: down"),
            None => tracing::info!(dependency = what, "readiness: up again"),
        }
    }
    if down { "down" } else { "up" }
}

async fn ready(state: Arc<AppState>) -> Response {
    let store = tokio::time::timeout(CHECK_TIMEOUT, state.service.repository().check_health());
    let bus = tokio::time::timeout(CHECK_TIMEOUT, state.service.bus().check_health());
    let (store, bus) = tokio::join!(store, bus);
    let store = describe(
        "store",
        &STORE_DOWN,
        store.map(|r| r.map_err(|e| e.to_string())),
    );
    let bus = describe("bus", &BUS_DOWN, bus.map(|r| r.map_err(|e| e.to_string())));
    let draining = state.is_draining();
    // The bus is not part of readiness: while Redis is down every instance still stores,
    // delivers locally and catches up from the store each reconciliation period, so the
    // outage costs cross-instance latency. Failing readiness would take every replica out
    // of the Service at once and turn that into a full outage.
    let ready = store == "up" && !draining;
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "store": store,
        "bus": bus,
        "draining": draining,
        "sessions": state.gateway.lifecycle.open(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}
