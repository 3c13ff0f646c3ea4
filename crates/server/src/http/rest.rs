//! The REST API of spec §3: rooms, history with keyset pagination, and sending a message
//! through the same service path as STOMP (for bots and other services).

use std::collections::HashMap;
use std::sync::Arc;

use chat_domain::{
    Caller, ChatError, ChatMessagePublish, ChatMessageRequest, HistoryQuery, IdempotencyKey,
    MyRoom, Operation, Room, RoomId, RoomListLimit, RoomListQuery, SenderId, ValidationError,
    Visibility,
};
use chrono::SecondsFormat;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use warp::Filter;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use crate::gateway::PeerAddr;
use crate::problem::{self, Problem};
use crate::state::{AppState, Creator};

/// Largest JSON body accepted by the REST API.
const MAX_BODY_BYTES: u64 = 64 * 1024;
/// Creators the room-creation limit remembers before it forgets the ones that are back
/// to a full allowance.
const ROOM_LIMIT_KEYS: usize = 10_000;

/// A chat room.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Room)]
pub(crate) struct RoomBody {
    /// The room's id, as in `/topic/chatroom/{id}`.
    id: i64,
    /// Its name, 1 to 100 characters.
    name: String,
    /// When it was created (RFC 3339, UTC, milliseconds).
    #[schema(format = DateTime)]
    created_at: String,
    /// The seq of its newest message; 0 when it has none. Unread = lastSeq − your last read seq.
    last_seq: i64,
    /// `public` (anyone may read and write) or `private` (members only).
    #[schema(value_type = String, pattern = "^(public|private)$")]
    visibility: &'static str,
    /// The user who created it; absent for rooms created without a signed-in user.
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

/// One of the caller's rooms, with how far they have read it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = MyRoom)]
pub(crate) struct MyRoomBody {
    #[serde(flatten)]
    room: RoomBody,
    /// The caller's read cursor: the seq of the last message they have read (0: none).
    /// It never moves backwards and never passes `lastSeq`.
    last_read_seq: i64,
    /// Messages after the cursor: `lastSeq − lastReadSeq`, never negative.
    unread: i64,
}

impl From<MyRoom> for MyRoomBody {
    fn from(mine: MyRoom) -> Self {
        Self {
            last_read_seq: mine.last_read_seq.get(),
            unread: mine.unread,
            room: RoomBody::from(mine.room),
        }
    }
}

/// The body of `POST /api/chatrooms`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = NewRoom)]
pub(crate) struct CreateRoom {
    /// The room's name, 1 to 100 characters (required).
    #[schema(required = true, value_type = String, min_length = 1, max_length = 100)]
    name: Option<String>,
    /// `public` (the default) or `private`.
    #[schema(value_type = Option<String>, pattern = "^(public|private)$")]
    visibility: Option<String>,
}

/// A member of a room.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Member)]
pub(crate) struct MemberBody {
    /// The room.
    chat_room_id: i64,
    /// The member's user id (a token's `sub`).
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
pub(crate) fn authenticate(
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

/// The errors every endpoint may answer with, as problem+json.
pub(crate) const PROBLEM: &str = "application/problem+json";

pub(crate) fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let caller = authenticate(state.clone());
    let state = warp::any().map(move || state.clone());
    let rooms = warp::path!("api" / "chatrooms");
    let room = warp::path!("api" / "chatrooms" / i64);
    let messages = warp::path!("api" / "chatrooms" / i64 / "messages");
    let member = warp::path!("api" / "chatrooms" / i64 / "members" / i64);
    let my_rooms_path = warp::path!("api" / "me" / "rooms");
    let query = warp::query::<HashMap<String, String>>;
    let create_room = rooms
        .and(warp::post())
        .and(caller.clone())
        .and(json_body())
        .and(warp::ext::optional::<PeerAddr>())
        .and(state.clone())
        .then(create_room);
    let list_rooms = rooms
        .and(warp::get())
        .and(caller.clone())
        .and(query())
        .and(state.clone())
        .then(list_rooms);
    let get_room = room
        .and(warp::get())
        .and(caller.clone())
        .and(state.clone())
        .then(get_room);
    let history = messages
        .and(warp::get())
        .and(caller.clone())
        .and(query())
        .and(state.clone())
        .then(history);
    let post_message = messages
        .and(warp::post())
        .and(caller.clone())
        .and(json_body())
        .and(warp::header::optional::<String>("idempotency-key"))
        .and(state.clone())
        .then(post_message);
    let get_member = member
        .and(warp::get())
        .and(caller.clone())
        .and(state.clone())
        .then(get_member);
    let put_member = member
        .and(warp::put())
        .and(caller.clone())
        .and(state.clone())
        .then(put_member);
    let delete_member = member
        .and(warp::delete())
        .and(caller.clone())
        .and(state.clone())
        .then(delete_member);
    let my_rooms = my_rooms_path
        .and(warp::get())
        .and(caller)
        .and(query())
        .and(state)
        .then(my_rooms);
    create_room
        .or(list_rooms)
        .unify()
        .or(get_room)
        .unify()
        .or(history)
        .unify()
        .or(post_message)
        .unify()
        .or(get_member)
        .unify()
        .or(put_member)
        .unify()
        .or(delete_member)
        .unify()
        .or(my_rooms)
        .unify()
}

/// Creates a room; its creator owns it.
#[utoipa::path(
    post,
    path = "/api/chatrooms",
    tag = "rooms",
    request_body(content = CreateRoom, content_type = "application/json"),
    security((), ("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = RoomBody),
        (status = 400, description = "Invalid JSON, name or visibility (`INVALID_JSON`, `MISSING_FIELD`, `INVALID_ROOM_NAME`, `INVALID_VISIBILITY`)", body = Problem, content_type = PROBLEM),
        (status = 401, description = "jwt mode without a valid token", body = Problem, content_type = PROBLEM),
        (status = 403, description = "A private room without a signed-in user (open mode has none) (`FORBIDDEN`)", body = Problem, content_type = PROBLEM),
        (status = 413, description = "Body larger than 64 KiB", body = Problem, content_type = PROBLEM),
        (status = 415, description = "Body not `application/json`", body = Problem, content_type = PROBLEM),
        (status = 429, description = "More rooms per minute than `CHAT_ROOM_CREATE_RATE` (`RATE_LIMITED`)", body = Problem, content_type = PROBLEM),
        (status = 503, description = "The store is unavailable; nothing was created", body = Problem, content_type = PROBLEM),
    )
)]
pub(crate) async fn create_room(
    caller: Caller,
    body: bytes::Bytes,
    peer: Option<PeerAddr>,
    state: Arc<AppState>,
) -> Response {
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
}

/// The rooms the caller may see, by id, a page at a time; a full page carries a `Link`
/// header (`rel="next"`) to the next one.
#[utoipa::path(
    get,
    path = "/api/chatrooms",
    tag = "rooms",
    params(
        ("afterId" = Option<i64>, Query, description = "Only rooms with a larger id (the last id of the previous page)"),
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 200 (default 50)", minimum = 1, maximum = 200),
    ),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "One page of rooms, by id", body = Vec<RoomBody>,
            headers(("link" = String, description = "`</api/chatrooms?afterId=N&limit=M>; rel=\"next\"` when the page is full"))),
        (status = 400, description = "A query parameter is not an integer (`INVALID_QUERY`) or out of range (`INVALID_PAGINATION`)", body = Problem, content_type = PROBLEM),
        (status = 401, description = "jwt mode without a valid token", body = Problem, content_type = PROBLEM),
        (status = 503, description = "The store is unavailable", body = Problem, content_type = PROBLEM),
    )
)]
pub(crate) async fn list_rooms(
    caller: Caller,
    params: HashMap<String, String>,
    state: Arc<AppState>,
) -> Response {
    let query = match room_list_query(&params) {
        Ok(query) => query,
        Err(error) => return error.into_response(),
    };
    match state.service.list_rooms_as(&caller, query).await {
        Ok(rooms) => room_page(rooms, query),
        Err(error) => problem::from_chat_error(&error),
    }
}

/// One room, with its current `lastSeq`.
#[utoipa::path(
    get,
    path = "/api/chatrooms/{id}",
    tag = "rooms",
    params(("id" = i64, Path, description = "The room's id")),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The room", body = RoomBody),
        (status = 401, description = "jwt mode without a valid token", body = Problem, content_type = PROBLEM),
        (status = 403, description = "A private room the caller is not a member of (`FORBIDDEN`)", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such room (`UNKNOWN_ROOM`)", body = Problem, content_type = PROBLEM),
        (status = 503, description = "The store is unavailable", body = Problem, content_type = PROBLEM),
    )
)]
pub(crate) async fn get_room(id: i64, caller: Caller, state: Arc<AppState>) -> Response {
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
}

/// A room's messages in seq order, a page at a time: the newest page by default,
/// `beforeSeq` to scroll back, `afterSeq` to catch up.
#[utoipa::path(
    get,
    path = "/api/chatrooms/{id}/messages",
    tag = "messages",
    params(
        ("id" = i64, Path, description = "The room's id"),
        ("afterSeq" = Option<i64>, Query, description = "Only messages with a larger seq (catching up)", minimum = 0),
        ("beforeSeq" = Option<i64>, Query, description = "Only messages with a smaller seq (scrolling back)", minimum = 0),
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 200 (default 50)", minimum = 1, maximum = 200),
    ),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Messages in ascending seq", body = Vec<ChatMessagePublish>),
        (status = 400, description = "A query parameter is not an integer (`INVALID_QUERY`), negative or out of range (`INVALID_PAGINATION`)", body = Problem, content_type = PROBLEM),
        (status = 401, description = "jwt mode without a valid token", body = Problem, content_type = PROBLEM),
        (status = 403, description = "A private room the caller is not a member of (`FORBIDDEN`)", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such room (`UNKNOWN_ROOM`)", body = Problem, content_type = PROBLEM),
        (status = 503, description = "The store is unavailable", body = Problem, content_type = PROBLEM),
    )
)]
pub(crate) async fn history(
    id: i64,
    caller: Caller,
    params: HashMap<String, String>,
    state: Arc<AppState>,
) -> Response {
    let query = match history_query(&params) {
        Ok(query) => query,
        Err(error) => return error.into_response(),
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
}

/// Sends a message, as STOMP `SEND /app/chat.sendMessage` does: 201 means stored, with
/// the room's next seq, and delivered to the room's subscribers on every instance.
#[utoipa::path(
    post,
    path = "/api/chatrooms/{id}/messages",
    tag = "messages",
    params(
        ("id" = i64, Path, description = "The room's id; a `chatRoomId` in the body must match it"),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 128 visible ASCII characters: a retry with the same key (per sender and room) returns the stored message and stores nothing new"),
    ),
    request_body(content = ChatMessageRequest, content_type = "application/json"),
    security((), ("bearer" = [])),
    responses(
        (status = 201, description = "Stored", body = ChatMessagePublish),
        (status = 400, description = "Invalid body, content or key (nothing stored)", body = Problem, content_type = PROBLEM),
        (status = 401, description = "jwt mode without a valid token", body = Problem, content_type = PROBLEM),
        (status = 403, description = "`senderId` is not the caller (`SENDER_MISMATCH`), `SYSTEM` without the admin role, or a private room (`FORBIDDEN`)", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such room (`UNKNOWN_ROOM`)", body = Problem, content_type = PROBLEM),
        (status = 413, description = "Body larger than 64 KiB", body = Problem, content_type = PROBLEM),
        (status = 415, description = "Body not `application/json`", body = Problem, content_type = PROBLEM),
        (status = 503, description = "Not stored (`STORE_UNAVAILABLE`), or not known whether stored (`STORE_OUTCOME_UNKNOWN`: retry with the same Idempotency-Key)", body = Problem, content_type = PROBLEM),
    )
)]
pub(crate) async fn post_message(
    id: i64,
    caller: Caller,
    body: bytes::Bytes,
    key: Option<String>,
    state: Arc<AppState>,
) -> Response {
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
}

fn member_body(room: i64, user: i64) -> MemberBody {
    MemberBody {
        chat_room_id: room,
        user_id: user,
    }
}

/// Whether a user is a member of a room. The owner or an admin may ask about anyone, a
/// user about themselves.
#[utoipa::path(
    get,
    path = "/api/chatrooms/{id}/members/{userId}",
    tag = "members",
    params(
        ("id" = i64, Path, description = "The room's id"),
        ("userId" = i64, Path, description = "The user's id"),
    ),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "A member", body = MemberBody),
        (status = 401, description = "jwt mode without a valid token", body = Problem, content_type = PROBLEM),
        (status = 403, description = "Neither the owner, an admin, nor the user (`FORBIDDEN`)", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such room (`UNKNOWN_ROOM`) or not a member (`NOT_A_MEMBER`)", body = Problem, content_type = PROBLEM),
        (status = 503, description = "The store is unavailable", body = Problem, content_type = PROBLEM),
    )
)]
pub(crate) async fn get_member(
    room: i64,
    user: i64,
    caller: Caller,
    state: Arc<AppState>,
) -> Response {
    let asked = state
        .service
        .is_member_as(&caller, RoomId(room), SenderId(user))
        .await;
    match asked {
        Ok(true) => json(StatusCode::OK, &member_body(room, user)),
        Ok(false) => not_a_member(room, user),
        Err(error) => problem::from_chat_error(&error),
    }
}

/// Adds a member (the owner or an admin).
#[utoipa::path(
    put,
    path = "/api/chatrooms/{id}/members/{userId}",
    tag = "members",
    params(
        ("id" = i64, Path, description = "The room's id"),
        ("userId" = i64, Path, description = "The user's id"),
    ),
    security((), ("bearer" = [])),
    responses(
        (status = 201, description = "Added", body = MemberBody),
        (status = 200, description = "Was a member already", body = MemberBody),
        (status = 401, description = "jwt mode without a valid token", body = Problem, content_type = PROBLEM),
        (status = 403, description = "Neither the owner nor an admin (`FORBIDDEN`)", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such room (`UNKNOWN_ROOM`)", body = Problem, content_type = PROBLEM),
        (status = 503, description = "The store is unavailable", body = Problem, content_type = PROBLEM),
    )
)]
pub(crate) async fn put_member(
    room: i64,
    user: i64,
    caller: Caller,
    state: Arc<AppState>,
) -> Response {
    let added = state
        .service
        .add_member_as(&caller, RoomId(room), SenderId(user))
        .await;
    match added {
        Ok(true) => json(StatusCode::CREATED, &member_body(room, user)),
        Ok(false) => json(StatusCode::OK, &member_body(room, user)),
        Err(error) => problem::from_chat_error(&error),
    }
}

/// Removes a member (the owner, an admin, or the user leaving); their live subscriptions
/// to the room end on every instance.
#[utoipa::path(
    delete,
    path = "/api/chatrooms/{id}/members/{userId}",
    tag = "members",
    params(
        ("id" = i64, Path, description = "The room's id"),
        ("userId" = i64, Path, description = "The user's id"),
    ),
    security((), ("bearer" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "jwt mode without a valid token", body = Problem, content_type = PROBLEM),
        (status = 403, description = "Neither the owner, an admin, nor the user (`FORBIDDEN`)", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such room (`UNKNOWN_ROOM`) or not a member (`NOT_A_MEMBER`)", body = Problem, content_type = PROBLEM),
        (status = 503, description = "The store is unavailable", body = Problem, content_type = PROBLEM),
    )
)]
pub(crate) async fn delete_member(
    room: i64,
    user: i64,
    caller: Caller,
    state: Arc<AppState>,
) -> Response {
    let (room_id, user_id) = (RoomId(room), SenderId(user));
    let removed = state
        .service
        .remove_member_as(&caller, room_id, user_id)
        .await;
    match removed {
        Ok((was_member, published)) => {
            // This instance's subscriptions end now, whatever the bus does; the event
            // through the bus ends them on the others.
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
}

fn not_a_member(room: i64, user: i64) -> Response {
    problem::response(
        StatusCode::NOT_FOUND,
        "NOT_A_MEMBER",
        &format!("user {user} is not a member of room {room}"),
    )
}

/// The caller's rooms (those they have read, are a member of, or own, and may still
/// read) with their read cursor and exact unread count, by id, a page at a time; a full
/// page carries a `Link` header (`rel="next"`) to the next one.
#[utoipa::path(
    get,
    path = "/api/me/rooms",
    tag = "rooms",
    params(
        ("afterId" = Option<i64>, Query, description = "Only rooms with a larger id (the last id of the previous page)"),
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 200 (default 50)", minimum = 1, maximum = 200),
        ("userId" = Option<i64>, Query, description = "Whose rooms: required in open mode (CHAT_AUTH=none), where nobody is signed in; with a token it defaults to the token's user, and only admins may name another"),
    ),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "One page of the caller's rooms, by id", body = Vec<MyRoomBody>,
            headers(("link" = String, description = "`</api/me/rooms?afterId=N&limit=M>; rel=\"next\"` when the page is full"))),
        (status = 400, description = "A query parameter is not an integer (`INVALID_QUERY`), out of range (`INVALID_PAGINATION`), or `userId` missing in open mode (`MISSING_USER_ID`)", body = Problem, content_type = PROBLEM),
        (status = 401, description = "jwt mode without a valid token", body = Problem, content_type = PROBLEM),
        (status = 403, description = "Another user's rooms without the admin role (`FORBIDDEN`)", body = Problem, content_type = PROBLEM),
        (status = 503, description = "The store is unavailable", body = Problem, content_type = PROBLEM),
    )
)]
pub(crate) async fn my_rooms(
    caller: Caller,
    params: HashMap<String, String>,
    state: Arc<AppState>,
) -> Response {
    let query = match room_list_query(&params) {
        Ok(query) => query,
        Err(error) => return error.into_response(),
    };
    let named = match integer(&params, "userId") {
        Ok(named) => named.map(SenderId),
        Err(error) => return error.into_response(),
    };
    let user = match (&caller, named) {
        (_, Some(user)) => user,
        (Caller::User(identity), None) => identity.user,
        (Caller::Open, None) => {
            return problem::response(
                StatusCode::BAD_REQUEST,
                "MISSING_USER_ID",
                "this server runs without sign-in (CHAT_AUTH=none): say whose rooms with ?userId=<id>",
            );
        }
    };
    match state.service.my_rooms(&caller, user, query).await {
        Ok(rooms) => {
            let last = rooms.last().map(|mine| mine.room.id);
            let body: Vec<MyRoomBody> = rooms.into_iter().map(MyRoomBody::from).collect();
            let user_part = named.map_or_else(String::new, |user| format!("&userId={user}"));
            keyset_page(&body, last, query, |after, limit| {
                format!("/api/me/rooms?afterId={after}&limit={limit}{user_part}")
            })
        }
        Err(error) => problem::from_chat_error(&error),
    }
}

/// The page as a JSON array (what the seed's front end reads), with a `Link` to the next
/// page when this one is full.
fn room_page(rooms: Vec<Room>, query: RoomListQuery) -> Response {
    let last = rooms.last().map(|room| room.id);
    let body: Vec<RoomBody> = rooms.into_iter().map(RoomBody::from).collect();
    keyset_page(&body, last, query, |after, limit| {
        format!("/api/chatrooms?afterId={after}&limit={limit}")
    })
}

/// One page of a list keyed by room id, as a JSON array; a full page carries a `Link`
/// header (`rel="next"`) to the URL `next(last id, limit)`.
fn keyset_page<T: Serialize>(
    body: &[T],
    last: Option<RoomId>,
    query: RoomListQuery,
    next: impl FnOnce(RoomId, u32) -> String,
) -> Response {
    let mut response = json(StatusCode::OK, &body);
    let limit = query.limit.get();
    if let Some(last) = last.filter(|_| body.len() >= limit as usize) {
        let link = format!("<{}>; rel=\"next\"", next(last, limit));
        if let Ok(value) = warp::http::HeaderValue::from_str(&link) {
            response
                .headers_mut()
                .insert(warp::http::header::LINK, value);
        }
    }
    response
}

/// What is wrong with a query string.
#[derive(Debug)]
enum QueryError {
    /// A parameter that must be an integer is not: `INVALID_QUERY`, naming it. There is
    /// no JSON in a query string, so this is not `INVALID_JSON`.
    NotAnInteger { name: &'static str, raw: String },
    /// A number out of range (`INVALID_PAGINATION`).
    Invalid(ValidationError),
}

impl QueryError {
    fn into_response(self) -> Response {
        match self {
            Self::NotAnInteger { name, raw } => problem::response(
                StatusCode::BAD_REQUEST,
                "INVALID_QUERY",
                &format!("query parameter {name}={raw:?} is not an integer"),
            ),
            Self::Invalid(error) => invalid(error),
        }
    }
}

/// The room list's paging.
fn room_list_query(params: &HashMap<String, String>) -> Result<RoomListQuery, QueryError> {
    let after = integer(params, "afterId")?;
    let limit = integer(params, "limit")?
        .map_or(Ok(RoomListLimit::DEFAULT), RoomListLimit::parse)
        .map_err(QueryError::Invalid)?;
    Ok(RoomListQuery {
        after: after.map(RoomId),
        limit,
        visible_to: None,
    })
}

/// An optional integer query parameter.
fn integer(
    params: &HashMap<String, String>,
    name: &'static str,
) -> Result<Option<i64>, QueryError> {
    params
        .get(name)
        .map(|raw| {
            raw.parse::<i64>().map_err(|_| QueryError::NotAnInteger {
                name,
                raw: raw.clone(),
            })
        })
        .transpose()
}

/// The history page asked for.
fn history_query(params: &HashMap<String, String>) -> Result<HistoryQuery, QueryError> {
    HistoryQuery::parse(
        integer(params, "afterSeq")?,
        integer(params, "beforeSeq")?,
        integer(params, "limit")?,
    )
    .map_err(QueryError::Invalid)
}
