//! The WebSocket STOMP gateway: `GET /ws`, subprotocol negotiation (warp does not do it,
//! and browsers abort the handshake without it), then one [`session`] per connection fed by
//! the [`hub`].

pub(crate) mod hub;
pub(crate) mod session;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use warp::Filter;
use warp::http::StatusCode;
use warp::reply::Reply;

use crate::http::problem;
use crate::state::AppState;
use hub::ConnectionId;

/// Largest WebSocket message accepted. Above the STOMP frame limit on purpose, so that an
/// oversized frame reaches the decoder and gets a proper ERROR frame rather than a bare
/// WebSocket close.
const MAX_WEBSOCKET_MESSAGE: usize = 1024 * 1024;

static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

pub(crate) fn route(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    warp::path("ws")
        .and(warp::path::end())
        .and(warp::get())
        .and(warp::header::optional::<String>("sec-websocket-protocol"))
        .and(warp::ws())
        .map(move |offered: Option<String>, ws: warp::ws::Ws| upgrade(&state, offered, ws))
}

fn upgrade(
    state: &Arc<AppState>,
    offered: Option<String>,
    ws: warp::ws::Ws,
) -> warp::reply::Response {
    if state.is_draining() {
        return problem::response(
            StatusCode::SERVICE_UNAVAILABLE,
            "DRAINING",
            "this instance is shutting down and accepts no new connections; connect to another instance",
        );
    }
    // No header at all: a plain WebSocket client; speak STOMP anyway. A header without any
    // STOMP version: the client wants a protocol we do not have, so say so.
    let selected = match offered.as_deref() {
        None => None,
        Some(offered) => match chat_stomp::version::select_subprotocol(offered) {
            Some(selected) => Some(selected),
            None => {
                return problem::response(
                    StatusCode::BAD_REQUEST,
                    "UNSUPPORTED_SUBPROTOCOL",
                    &format!(
                        "Sec-WebSocket-Protocol offers {offered:?}; this endpoint speaks v12.stomp, v11.stomp or v10.stomp"
                    ),
                );
            }
        },
    };
    let context = state.gateway.clone();
    let sessions = state.sessions.clone();
    let connection = ConnectionId(NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed));
    let reply = ws
        .max_message_size(MAX_WEBSOCKET_MESSAGE)
        .max_frame_size(MAX_WEBSOCKET_MESSAGE)
        .on_upgrade(move |socket| async move {
            let _guard = sessions.enter();
            session::run(socket, context, connection).await;
        });
    match selected {
        Some(protocol) => {
            warp::reply::with_header(reply, "sec-websocket-protocol", protocol).into_response()
        }
        None => reply.into_response(),
    }
}
