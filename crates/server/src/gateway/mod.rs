//! The WebSocket STOMP gateway: the `GET /ws` upgrade, subprotocol negotiation (browsers
//! abort the handshake without it), then one session per connection: the
//! [`chat_session::Session`] state machine, driven over the socket by [`session`] and fed by
//! the [`hub`].
//!
//! The upgrade is done here on hyper directly rather than with `warp::ws`, because warp
//! cannot set tungstenite's read buffer: its 128 KiB default is zero-filled on every read
//! poll and stays resident per connection (docs/benchmarks.md measures both).

pub(crate) mod admission;
mod context;
#[cfg(test)]
mod fault_tests;
pub(crate) mod hub;
pub(crate) mod revocations;
mod session;
pub(crate) mod sockjs;
pub(crate) mod topics;

pub(crate) use context::{GatewayContext, Lifecycle};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use warp::http::{HeaderValue, Request, StatusCode, header};
use warp::reply::{Reply, Response};

use crate::problem;
use hub::ConnectionId;

/// The path of the STOMP endpoint.
pub(crate) const PATH: &str = "/ws";

/// Whether a request path belongs to the gateway: the raw WebSocket at [`PATH`] and the
/// SockJS endpoints below it.
pub(crate) fn serves(path: &str) -> bool {
    path.strip_prefix(PATH)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The client address of a request, put in its extensions by the listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerAddr(pub(crate) std::net::SocketAddr);

/// Largest WebSocket message accepted. Above the STOMP frame limit on purpose, so that an
/// oversized frame reaches the decoder and gets a proper ERROR frame rather than a bare
/// WebSocket close.
const MAX_WEBSOCKET_MESSAGE: usize = 1024 * 1024;
/// Read buffer per connection. Client frames are small (SENDs of a few hundred bytes,
/// heart-beats); a bigger frame is simply read in several steps.
const READ_BUFFER: usize = 4 * 1024;
/// Bytes written per socket write before tungstenite flushes; frames are batched by the
/// session already.
const WRITE_BUFFER: usize = 64 * 1024;

static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WEBSOCKET_MESSAGE * 4)
        .max_message_size(Some(MAX_WEBSOCKET_MESSAGE))
        .max_frame_size(Some(MAX_WEBSOCKET_MESSAGE))
}

fn header_has_token(request: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    request
        .headers()
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|part| part.trim().eq_ignore_ascii_case(token))
}

/// A token on the upgrade request: its `Authorization: Bearer` header, else its
/// `access_token` query parameter (browsers cannot set headers on a WebSocket).
fn upgrade_credential(request: &Request<Incoming>) -> Option<String> {
    if let Some(value) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return Some(chat_session::bearer_token(value).to_owned());
    }
    let query = request.uri().query()?;
    url_query_value(query, "access_token")
}

/// One parameter of a query string, percent-decoded.
fn url_query_value(query: &str, name: &str) -> Option<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .ok()?
        .into_iter()
        .find_map(|(key, value)| (key == name).then_some(value))
}

/// Answers a request for [`PATH`] or below it: the raw WebSocket at [`PATH`] itself, the
/// SockJS endpoints under it.
pub(crate) async fn serve(context: &Arc<GatewayContext>, request: Request<Incoming>) -> Response {
    if request.uri().path() == PATH {
        upgrade(context, request, Framing::Raw)
    } else {
        sockjs::serve(context, request).await
    }
}

/// How STOMP frames travel in the messages of an upgraded WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// One or more STOMP frames per text message (`/ws`).
    Raw,
    /// SockJS frames (`o`, `h`, `a[...]`, `c[...]`) around them (`/ws/{server}/{session}/websocket`).
    SockJs,
}

/// Why a new session may not start here now: the origin, a drain or the connection caps.
/// Shared by every transport, so they all refuse the same way.
fn admit_session(
    context: &GatewayContext,
    request: &Request<Incoming>,
) -> Result<admission::Admitted, Box<Response>> {
    let header = |name| {
        request
            .headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if !context
        .origins
        .allows(header(header::ORIGIN), header(header::HOST))
    {
        return Err(Box::new(problem::response(
            StatusCode::FORBIDDEN,
            "ORIGIN_NOT_ALLOWED",
            "pages from this origin may not open a chat WebSocket here; the server's CHAT_ALLOWED_ORIGINS lists the ones that may",
        )));
    }
    if context.lifecycle.is_draining() {
        return Err(Box::new(problem::response(
            StatusCode::SERVICE_UNAVAILABLE,
            "DRAINING",
            "this instance is shutting down and accepts no new connections; connect to another instance",
        )));
    }
    let peer = request.extensions().get::<PeerAddr>().map(|p| p.0.ip());
    context.admission.admit(peer).map_err(|refusal| {
        context.metrics.connection_refused(refusal.as_str());
        let detail = match refusal {
            admission::Refusal::Instance => {
                "this instance serves as many connections as it is allowed to (CHAT_MAX_CONNECTIONS); try again later or another instance"
            }
            admission::Refusal::Address => {
                "your address holds as many connections as one address may (CHAT_MAX_CONNECTIONS_PER_IP); close one first"
            }
        };
        Box::new(problem::response(
            StatusCode::SERVICE_UNAVAILABLE,
            "TOO_MANY_CONNECTIONS",
            detail,
        ))
    })
}

/// A fresh connection id.
fn next_connection() -> ConnectionId {
    ConnectionId(NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed))
}

/// Answers a WebSocket upgrade that becomes a STOMP session, or a problem+json saying why
/// not.
fn upgrade(
    context: &Arc<GatewayContext>,
    mut request: Request<Incoming>,
    framing: Framing,
) -> Response {
    let is_upgrade = request.method() == warp::http::Method::GET
        && header_has_token(&request, header::CONNECTION, "upgrade")
        && header_has_token(&request, header::UPGRADE, "websocket");
    let key = request.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let (true, Some(key)) = (is_upgrade, key) else {
        return problem::response(
            StatusCode::BAD_REQUEST,
            "NOT_A_WEBSOCKET_UPGRADE",
            "GET /ws with a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket, Sec-WebSocket-Key) and Sec-WebSocket-Protocol: v12.stomp",
        );
    };
    if request
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        let mut response = problem::response(
            StatusCode::UPGRADE_REQUIRED,
            "UNSUPPORTED_WEBSOCKET_VERSION",
            "this endpoint speaks WebSocket version 13 (RFC 6455)",
        );
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return response;
    }
    // No header at all: a plain WebSocket client; speak STOMP anyway. A header without any
    // STOMP version: the client wants a protocol we do not have, so say so.
    let offered = request
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .map(|v| v.to_str().unwrap_or_default().to_owned());
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

    let admitted = match admit_session(context, &request) {
        Ok(admitted) => admitted,
        Err(refused) => return *refused,
    };
    let credential = upgrade_credential(&request);
    let on_upgrade = hyper::upgrade::on(&mut request);
    let context = context.clone();
    let connection = next_connection();
    tokio::spawn(async move {
        let _admitted = admitted;
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "the WebSocket upgrade did not complete");
                return;
            }
        };
        let _guard = context.lifecycle.enter();
        let socket = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            Some(websocket_config()),
        )
        .await;
        match framing {
            Framing::Raw => {
                let (sink, stream) = futures_util::StreamExt::split(socket);
                session::run(sink, stream, context, connection, credential).await;
            }
            Framing::SockJs => sockjs::run_websocket(socket, context, connection, credential).await,
        }
    });

    let mut response = warp::reply::reply().into_response();
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Some(protocol) = selected {
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(protocol),
        );
    }
    response
}
