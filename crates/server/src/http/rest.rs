//! The REST API of spec §3: rooms, history with keyset pagination, and sending a message
//! through the same service path as STOMP (for bots and other services).

use std::collections::HashMap;
use std::sync::Arc;

use chat_domain::{
    Caller, ChatError, ChatMessagePublish, ChatMessageRequest, HistoryQuery, IdempotencyKey, Room,
    RoomId, ValidationError,
};
use chrono::SecondsFormat;
use serde::{Deserialize, Serialize};
use warp::Filter;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use crate::problem;
use crate::state::AppState;

/// Largest JSON body accepted by the REST API.
const MAX_BODY_BYTES: u64 = 64 * 1024;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RoomBody {
    id: i64,
    name: String,
    created_at: String,
    last_seq: i64,
}

impl From<Room> for RoomBody {
    fn from(room: Room) -> Self {
        Self {
            id: room.id.0,
            name: room.name,
            created_at: room.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            last_seq: room.last_seq.0,
        }
    }
}

#[derive(Debug, Deserialize)]
struct CreateRoom {
    name: Option<String>,
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    warp::reply::with_status(warp::reply::json(value), status).into_response()
}

fn result<T: Serialize>(status: StatusCode, outcome: Result<T, ChatError>) -> Response {
    match outcome {
        Ok(value) => json(status, &value),
        Err(error) => problem::from_chat_error(&error),
    }
}

fn invalid(error: ValidationError) -> Response {
    problem::from_chat_error(&ChatError::Invalid(error))
}

/// The caller of an API request: `Authorization: Bearer` verified in jwt mode (401
/// problem+json without a valid one), [`Caller::Open`] in open mode.
fn authenticate(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Caller,), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("authorization").and_then(move |header: Option<String>| {
        let state = state.clone();
        async move {
            let credential = header.as_deref().map(chat_session::bearer_token);
            match state.gateway.auth.verify(credential) {
                Ok(verified) => Ok(verified.caller),
                Err(error) => {
                    state.metrics.rejected("UNAUTHENTICATED");
                    Err(warp::reject::custom(problem::Unauthenticated(
                        error.to_string(),
                    )))
                }
            }
        }
    })
}

pub(crate) fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let caller = authenticate(state.clone());
    let state = warp::any().map(move || state.clone());
    let rooms = warp::path!("api" / "chatrooms");
    let room = warp::path!("api" / "chatrooms" / i64);
    let messages = warp::path!("api" / "chatrooms" / i64 / "messages");
    let body = warp::body::content_length_limit(MAX_BODY_BYTES).and(warp::body::bytes());

    let create_room = rooms
        .and(warp::post())
        .and(caller.clone())
        .and(body)
        .and(state.clone())
        .then(
            |_caller: Caller, body: bytes::Bytes, state: Arc<AppState>| async move {
                let request: CreateRoom = match serde_json::from_slice(&body) {
                    Ok(request) => request,
                    Err(e) => return invalid(ValidationError::InvalidJson(e.to_string())),
                };
                let Some(name) = request.name else {
                    return invalid(ValidationError::MissingField("name"));
                };
                result(
                    StatusCode::CREATED,
                    state.service.create_room(&name).await.map(RoomBody::from),
                )
            },
        );
    let list_rooms = rooms
        .and(warp::get())
        .and(caller.clone())
        .and(state.clone())
        .then(|_caller: Caller, state: Arc<AppState>| async move {
            let rooms = state.service.list_rooms().await;
            result(
                StatusCode::OK,
                rooms.map(|r| r.into_iter().map(RoomBody::from).collect::<Vec<_>>()),
            )
        });
    let get_room = room
        .and(warp::get())
        .and(caller.clone())
        .and(state.clone())
        .then(
            |id: i64, _caller: Caller, state: Arc<AppState>| async move {
                result(
                    StatusCode::OK,
                    state.service.room(RoomId(id)).await.map(RoomBody::from),
                )
            },
        );
    let history =
        messages
            .and(warp::get())
            .and(caller.clone())
            .and(warp::query::<HashMap<String, String>>())
            .and(state.clone())
            .then(
                |id: i64,
                 _caller: Caller,
                 params: HashMap<String, String>,
                 state: Arc<AppState>| async move {
                    let query = match history_query(&params) {
                        Ok(query) => query,
                        Err(error) => return invalid(error),
                    };
                    let page = state.service.history(RoomId(id), query).await;
                    result(
                        StatusCode::OK,
                        page.map(|messages| {
                            messages
                                .iter()
                                .map(ChatMessagePublish::from)
                                .collect::<Vec<_>>()
                        }),
                    )
                },
            );
    let post_message = messages
        .and(warp::post())
        .and(caller)
        .and(warp::body::content_length_limit(MAX_BODY_BYTES).and(warp::body::bytes()))
        .and(warp::header::optional::<String>("idempotency-key"))
        .and(state)
        .then(
            |id: i64,
             caller: Caller,
             body: bytes::Bytes,
             key: Option<String>,
             state: Arc<AppState>| async move {
                state.metrics.messages_received.inc();
                let key = match key.as_deref().map(IdempotencyKey::parse).transpose() {
                    Ok(key) => key,
                    Err(error) => {
                        state.metrics.rejected(error.code());
                        return invalid(error);
                    }
                };
                let mut request = match ChatMessageRequest::from_json(&body) {
                    Ok(request) => request,
                    Err(error) => {
                        state.metrics.rejected(error.code());
                        return invalid(error);
                    }
                };
                // The path names the room; a body that names another one is a mistake to report.
                match request.chat_room_id {
                    Some(room) if room != RoomId(id) => {
                        return invalid(ValidationError::InvalidJson(format!(
                            "chatRoomId {room} in the body does not match room {id} in the path"
                        )));
                    }
                    _ => request.chat_room_id = Some(RoomId(id)),
                }
                let sent = state.service.send_as(&caller, request, key).await;
                match &sent {
                    Ok(sent) => state.gateway.hub.deliver_stored(sent),
                    Err(error) => state.metrics.rejected(error.code()),
                }
                result(
                    StatusCode::CREATED,
                    sent.map(|s| ChatMessagePublish::from(&s.message)),
                )
            },
        );

    create_room
        .or(list_rooms)
        .unify()
        .or(get_room)
        .unify()
        .or(history)
        .unify()
        .or(post_message)
        .unify()
}

fn history_query(params: &HashMap<String, String>) -> Result<HistoryQuery, ValidationError> {
    let number = |name: &str| -> Result<Option<i64>, ValidationError> {
        params
            .get(name)
            .map(|raw| {
                raw.parse::<i64>().map_err(|_| {
                    ValidationError::InvalidJson(format!(
                        "query parameter {name}={raw:?} is not an integer"
                    ))
                })
            })
            .transpose()
    };
    HistoryQuery::parse(number("afterSeq")?, number("beforeSeq")?, number("limit")?)
}
