//! The HTTP surface: REST API, health endpoints and the WebSocket gateway, composed into
//! one warp filter with problem+json for everything that goes wrong.

pub(crate) mod health;
pub(crate) mod rest;

use std::sync::Arc;

use warp::Filter;

use crate::problem;
use crate::state::AppState;

pub(crate) fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible> + Clone {
    health::routes(state.clone())
        .or(rest::routes(state))
        .unify()
        .recover(problem::recover)
        .unify()
}
