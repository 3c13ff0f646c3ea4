//! The REST API of spec §3: rooms, history with keyset pagination, and sending a message
//! through the same service path as STOMP (for bots and other services).

use std::collections::HashMap;
use std::sync::Arc;

use chat_domain::{
    Caller, ChatError, ChatMessagePublish, ChatMessageRequest, HistoryQuery, IdempotencyKey,
    Operation, Room, RoomId, RoomListLimit, RoomListQuery, SenderId, ValidationError, Visibility,
};
use chrono::SecondsFormat;
use serde::{Deserialize, Serialize};
use warp::Filter;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use crate::gateway::PeerAddr;
use crate::problem;
use crate::state::{AppState, Creator};

/// Largest JSON body accepted by the REST API.
const MAX_BODY_BYTES: u64 = 64 * 1024;
/// Creators the room-creation limit remembers before it forgets the ones that are back
/// to a full allowance.
const ROOM_LIMIT_KEYS: usize = 10_000;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RoomBody {
    id: i64,
    name: String,
    created_at: String,
    last_seq: i64,
    visibility: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner_id: Option<i64>,
}

impl From<Room> for RoomBody {
    fn from(room: Room) -> Self {
        Self {
            id: room.id.0,
            name: room.name,
            created_at: room.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            last_seq: room.last_seq.0,
            visibility: room.visibility.as_str(),
            owner_id: room.owner.map(SenderId::get),
        }
    }
}

#[derive(Debug, Deserialize)]
struct CreateRoom {
    name: Option<String>,
    visibility: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct MemberBody {
    chat_room_id: i64,
    user_id: i64,
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

/// A JSON request body: `Content-Type: application/json` (with any parameters) and at
/// most [`MAX_BODY_BYTES`]. Anything else is a 415: a form or `text/plain` body is what a
/// page on another site can send without a CORS preflight, so it is never accepted.
fn json_body() -> impl Filter<Extract = (bytes::Bytes,), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("content-type")
        .and_then(|content_type: Option<String>| async move {
            let essence = content_type
                .as_deref()
                .and_then(|value| value.split(';').next())
                .map(|value| value.trim().to_ascii_lowercase());
            if essence.as_deref() == Some("application/json") {
                Ok(())
            } else {
                Err(warp::reject::custom(problem::UnsupportedMediaType))
            }
        })
        .untuple_one()
        .and(warp::body::content_length_limit(MAX_BODY_BYTES))
        .and(warp::body::bytes())
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
    let create_room =
        rooms
            .and(warp::post())
            .and(caller.clone())
            .and(json_body())
            .and(warp::ext::optional::<PeerAddr>())
            .and(state.clone())
            .then(
                |caller: Caller,
                 body: bytes::Bytes,
                 peer: Option<PeerAddr>,
                 state: Arc<AppState>| async move {
                    if let Some(limit) = &state.room_creations {
                        let creator = Creator::of(&caller, peer.map(|p| p.0.ip()));
                        if limit.check_key(&creator).is_err() {
                            let error = ChatError::RateLimited(format!(
                                "at most {} rooms per minute; try again later",
                                state.room_create_rate
                            ));
                            state.metrics.rejected(error.code());
                            return problem::from_chat_error(&error);
                        }
                        if limit.len() > ROOM_LIMIT_KEYS {
                            limit.retain_recent();
                        }
                    }
                    let request: CreateRoom = match serde_json::from_slice(&body) {
                        Ok(request) => request,
                        Err(e) => return invalid(ValidationError::InvalidJson(e.to_string())),
                    };
                    let Some(name) = request.name else {
                        return invalid(ValidationError::MissingField("name"));
                    };
                    let visibility = match request.visibility.as_deref().map(Visibility::parse) {
                        None => Visibility::Public,
                        Some(Ok(visibility)) => visibility,
                        Some(Err(error)) => return invalid(error),
                    };
                    let created = state
                        .service
                        .create_room_as(&caller, &name, visibility)
                        .await;
                    result(StatusCode::CREATED, created.map(RoomBody::from))
                },
            );
    let list_rooms = rooms
        .and(warp::get())
        .and(caller.clone())
        .and(warp::query::<HashMap<String, String>>())
        .and(state.clone())
        .then(
            |caller: Caller, params: HashMap<String, String>, state: Arc<AppState>| async move {
                let query = match room_list_query(&params) {
                    Ok(query) => query,
                    Err(error) => return invalid(error),
                };
                match state.service.list_rooms_as(&caller, query).await {
                    Ok(rooms) => room_page(rooms, query),
                    Err(error) => problem::from_chat_error(&error),
                }
            },
        );
    let get_room = room
        .and(warp::get())
        .and(caller.clone())
        .and(state.clone())
        .then(|id: i64, caller: Caller, state: Arc<AppState>| async move {
            let found = state
                .service
                .authorize(&caller, RoomId(id), Operation::Read)
                .await;
            // The cached copy may be behind on lastSeq; the answer reads it fresh.
            let fresh = match found {
                Ok(_) => state.service.room(RoomId(id)).await,
                Err(error) => Err(error),
            };
            result(StatusCode::OK, fresh.map(RoomBody::from))
        });
    let history =
        messages
            .and(warp::get())
            .and(caller.clone())
            .and(warp::query::<HashMap<String, String>>())
            .and(state.clone())
            .then(
                |id: i64,
                 caller: Caller,
                 params: HashMap<String, String>,
                 state: Arc<AppState>| async move {
                    let query = match history_query(&params) {
                        Ok(query) => query,
                        Err(error) => return invalid(error),
                    };
                    let page = state.service.history_as(&caller, RoomId(id), query).await;
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
        .and(caller.clone())
        .and(json_body())
        .and(warp::header::optional::<String>("idempotency-key"))
        .and(state.clone())
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
        .or(member_routes(caller, state))
        .unify()
}

/// `GET/PUT/DELETE /api/chatrooms/{id}/members/{userId}`: ask, add, remove. The owner or
/// an admin manages members; a user may ask about and end their own membership.
fn member_routes(
    caller: impl Filter<Extract = (Caller,), Error = warp::Rejection> + Clone + Send + Sync + 'static,
    state: impl Filter<Extract = (Arc<AppState>,), Error = std::convert::Infallible>
    + Clone
    + Send
    + Sync
    + 'static,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let member = warp::path!("api" / "chatrooms" / i64 / "members" / i64);
    let body = |room: i64, user: i64| MemberBody {
        chat_room_id: room,
        user_id: user,
    };
    let ask = member
        .and(warp::get())
        .and(caller.clone())
        .and(state.clone())
        .then(
            move |room: i64, user: i64, caller: Caller, state: Arc<AppState>| async move {
                let asked = state
                    .service
                    .is_member_as(&caller, RoomId(room), SenderId(user))
                    .await;
                match asked {
                    Ok(true) => json(StatusCode::OK, &body(room, user)),
                    Ok(false) => not_a_member(room, user),
                    Err(error) => problem::from_chat_error(&error),
                }
            },
        );
    let add = member
        .and(warp::put())
        .and(caller.clone())
        .and(state.clone())
        .then(
            move |room: i64, user: i64, caller: Caller, state: Arc<AppState>| async move {
                let added = state
                    .service
                    .add_member_as(&caller, RoomId(room), SenderId(user))
                    .await;
                match added {
                    Ok(true) => json(StatusCode::CREATED, &body(room, user)),
                    Ok(false) => json(StatusCode::OK, &body(room, user)),
                    Err(error) => problem::from_chat_error(&error),
                }
            },
        );
    let remove = member
        .and(warp::delete())
        .and(caller)
        .and(state)
        .then(
            |room: i64, user: i64, caller: Caller, state: Arc<AppState>| async move {
                let (room_id, user_id) = (RoomId(room), SenderId(user));
                let removed = state
                    .service
                    .remove_member_as(&caller, room_id, user_id)
                    .await;
                match removed {
                    Ok((was_member, published)) => {
                        // This instance's subscriptions end now, whatever the bus does;
                        // the event through the bus ends them on the others.
                        state.gateway.revocations.revoke(room_id, user_id);
                        if let Some(error) = published {
                            tracing::warn!(%error, room, user, "could not tell the other instances about a removed member; they find out when their bus reports the gap");
                        }
                        if was_member {
                            StatusCode::NO_CONTENT.into_response()
                        } else {
                            not_a_member(room, user)
                        }
                    }
                    Err(error) => problem::from_chat_error(&error),
                }
            },
        );
    ask.or(add).unify().or(remove).unify()
}

fn not_a_member(room: i64, user: i64) -> Response {
    problem::response(
        StatusCode::NOT_FOUND,
        "NOT_A_MEMBER",
        &format!("user {user} is not a member of room {room}"),
    )
}

/// The page as a JSON array (what the seed's front end reads), with a `Link` to the next
/// page when this one is full.
fn room_page(rooms: Vec<Room>, query: RoomListQuery) -> Response {
    let next = (rooms.len() >= query.limit.get() as usize)
        .then(|| rooms.last().map(|room| room.id))
        .flatten();
    let body: Vec<RoomBody> = rooms.into_iter().map(RoomBody::from).collect();
    let mut response = json(StatusCode::OK, &body);
    if let Some(last) = next {
        let link = format!(
            "</api/chatrooms?afterId={last}&limit={}>; rel=\"next\"",
            query.limit.get()
        );
        if let Ok(value) = warp::http::HeaderValue::from_str(&link) {
            response
                .headers_mut()
                .insert(warp::http::header::LINK, value);
        }
    }
    response
}

fn room_list_query(params: &HashMap<String, String>) -> Result<RoomListQuery, ValidationError> {
    let after = integer(params, "afterId")?;
    let limit =
        integer(params, "limit")?.map_or(Ok(RoomListLimit::DEFAULT), RoomListLimit::parse)?;
    Ok(RoomListQuery {
        after: after.map(RoomId),
        limit,
        visible_to: None,
    })
}

fn integer(params: &HashMap<String, String>, name: &str) -> Result<Option<i64>, ValidationError> {
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
}

fn history_query(params: &HashMap<String, String>) -> Result<HistoryQuery, ValidationError> {
    HistoryQuery::parse(
        integer(params, "afterSeq")?,
        integer(params, "beforeSeq")?,
        integer(params, "limit")?,
    )
}
