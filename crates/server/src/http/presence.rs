//! `GET /api/chatrooms/{id}/presence`: who is in a room now, across every instance, as
//! this instance's merged view has it (the same snapshot a STOMP presence subscription
//! starts with).

use std::sync::Arc;

use chat_domain::{Caller, Operation, RoomId};
use serde::Serialize;
use utoipa::ToSchema;
use warp::Filter;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use super::rest::{PROBLEM, authenticate};
use crate::problem::{self, Problem};
use crate::state::AppState;

/// One member of a room.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PresenceMemberBody {
    user_id: i64,
    nickname: String,
    /// The user's connections to the room, on all instances.
    connections: u32,
}

/// Who is in a room.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PresenceBody {
    /// Always `snapshot`.
    r#type: &'static str,
    chat_room_id: i64,
    /// By user id.
    members: Vec<PresenceMemberBody>,
}

pub(crate) fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let caller = authenticate(state.clone());
    let state = warp::any().map(move || state.clone());
    warp::path!("api" / "chatrooms" / i64 / "presence")
        .and(warp::get())
        .and(caller)
        .and(state)
        .then(room_presence)
}

/// Who is in a room now: users with at least one connection subscribed to it, on any
/// instance, with their number of connections.
#[utoipa::path(
    get,
    path = "/api/chatrooms/{id}/presence",
    tag = "rooms",
    params(("id" = i64, Path, description = "The room's id")),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The room's members now", body = PresenceBody),
        (status = 401, description = "jwt mode without a valid token", body = Problem, content_type = PROBLEM),
        (status = 403, description = "A private room the caller is not a member of (`FORBIDDEN`)", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such room (`UNKNOWN_ROOM`)", body = Problem, content_type = PROBLEM),
        (status = 503, description = "The store is unavailable", body = Problem, content_type = PROBLEM),
    )
)]
pub(crate) async fn room_presence(id: i64, caller: Caller, state: Arc<AppState>) -> Response {
    let room = RoomId(id);
    if let Err(error) = state
        .service
        .authorize(&caller, room, Operation::Read)
        .await
    {
        return problem::from_chat_error(&error);
    }
    let members = state
        .gateway
        .topics
        .snapshot(room)
        .into_iter()
        .map(|m| PresenceMemberBody {
            user_id: m.user_id.get(),
            nickname: m.nickname,
            connections: m.connections,
        })
        .collect();
    let body = PresenceBody {
        r#type: "snapshot",
        chat_room_id: id,
        members,
    };
    warp::reply::with_status(warp::reply::json(&body), StatusCode::OK).into_response()
}
