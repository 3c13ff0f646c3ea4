//! `/health/live` (the process answers), `/health/ready` (the store answers and the
//! instance is not draining; the bus's state is reported but does not decide), for
//! Kubernetes probes and load balancers, and `/metrics` for Prometheus.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use warp::Filter;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use crate::state::AppState;

/// A dependency slower than this counts as down: a readiness probe must answer quickly.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let live = warp::path!("health" / "live")
        .and(warp::get())
        .map(|| warp::reply::json(&json!({"status": "live"})).into_response());
    let ready_state = state.clone();
    let ready = warp::path!("health" / "ready")
        .and(warp::get())
        .then(move || ready(ready_state.clone()));
    let metrics = warp::path!("metrics").and(warp::get()).map(move || {
        let text = state.metrics.render(state.service.bus().as_ref());
        warp::reply::with_header(
            text,
            "content-type",
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )
        .into_response()
    });
    live.or(ready).unify().or(metrics).unify()
}

async fn ready(state: Arc<AppState>) -> Response {
    let store = tokio::time::timeout(CHECK_TIMEOUT, state.service.repository().check_health());
    let bus = tokio::time::timeout(CHECK_TIMEOUT, state.service.bus().check_health());
    let (store, bus) = tokio::join!(store, bus);
    let describe = |outcome: Result<Result<(), String>, tokio::time::error::Elapsed>| match outcome
    {
        Ok(Ok(())) => "up".to_owned(),
        Ok(Err(why)) => format!("down: {why}"),
        Err(_) => format!("down: no answer within {CHECK_TIMEOUT:?}"),
    };
    let store = describe(store.map(|r| r.map_err(|e| e.to_string())));
    let bus = describe(bus.map(|r| r.map_err(|e| e.to_string())));
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
