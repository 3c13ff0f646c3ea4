//! The HTTP surface: REST API, health endpoints, the chat page and the WebSocket gateway,
//! composed into one warp filter with problem+json for everything that goes wrong.

pub(crate) mod health;
pub(crate) mod openapi;
pub(crate) mod presence;
pub(crate) mod rest;
pub(crate) mod web;

use std::sync::Arc;

use warp::Filter;
use warp::filters::BoxedFilter;

use crate::origin::OriginPolicy;
use crate::problem;
use crate::state::AppState;

/// What one listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Surface {
    /// The API, the WebSocket, the probes, and (without an admin listener) the admin routes.
    Public { with_admin: bool },
    /// `CHAT_ADMIN_BIND`: the probes and the admin routes only.
    Admin,
}

pub(crate) fn routes(
    state: Arc<AppState>,
    surface: Surface,
) -> BoxedFilter<(warp::reply::Response,)> {
    if surface == Surface::Admin {
        return health::probes(state.clone())
            .or(health::admin(state))
            .unify()
            .recover(problem::recover)
            .unify()
            .boxed();
    }
    let cors = cors(&state.gateway.origins);
    let public = health::probes(state.clone())
        .or(rest::routes(state.clone()))
        .unify()
        .or(presence::routes(state.clone()))
        .unify()
        .or(openapi::route())
        .unify()
        .or(web::routes())
        .unify()
        .boxed();
    let public = match surface {
        Surface::Public { with_admin: true } => public.or(health::admin(state)).unify().boxed(),
        _ => public,
    };
    let api = public.recover(problem::recover).unify();
    match cors {
        Some(cors) => api
            .with(cors)
            .map(warp::Reply::into_response)
            .recover(problem::recover)
            .unify()
            .boxed(),
        None => api.boxed(),
    }
}

/// The CORS policy for the API, from the same origins as the WebSocket (warp's own
/// preflight handling). Same-host only needs none: a page's own origin is not cross-origin.
fn cors(origins: &OriginPolicy) -> Option<warp::cors::Builder> {
    let base = warp::cors()
        .allow_methods(["GET", "POST", "PUT", "DELETE", "OPTIONS"])
        .allow_headers(["authorization", "content-type", "idempotency-key"])
        .max_age(600);
    match origins {
        OriginPolicy::Any => Some(base.allow_any_origin()),
        OriginPolicy::List(list) => Some(base.allow_origins(list.iter().map(String::as_str))),
        OriginPolicy::SameHost => None,
    }
}
