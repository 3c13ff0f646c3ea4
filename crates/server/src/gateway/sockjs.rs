//! SockJS at `/ws` in Spring's `withSockJS()` layout, for front ends that connect with
//! `new SockJS('/ws')`: `GET /ws/info`, and per session `/ws/{server}/{session}/{transport}`
//! with the `websocket`, `xhr_streaming` and `xhr` (polling, with `xhr_send`) transports.
//!
//! SockJS is only another way to carry the same byte stream of STOMP frames: every
//! transport ends in the same [`session::run`] as the raw WebSocket, fed by a channel of
//! WebSocket messages and writing into one, so auth, limits, the drain and the metrics are
//! the raw endpoint's. What is here is framing (`o`, `h`, `a[...]`, `c[...]`) and, for the
//! HTTP transports, the table that ties a session's separate requests together.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::{OwnedMutexGuard, mpsc};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};
use warp::http::{HeaderValue, Method, Request, StatusCode, header};
use warp::reply::{Reply, Response};

use super::context::GatewayContext;
use super::hub::ConnectionId;
use super::session::{self, WebSocket};
use crate::problem;

/// A heart-beat frame goes out when nothing else has for this long (SockJS's default).
const HEARTBEAT: Duration = Duration::from_secs(25);
/// An HTTP session with no receiving request open for this long is gone: its client
/// vanished. Also how long the close frame of an ended session stays available.
pub(crate) const DISCONNECT_DELAY: Duration = Duration::from_secs(5);
/// Bytes one `xhr_streaming` response carries before it ends and the client opens the
/// next one (browsers keep a streamed response's whole body in memory).
const STREAM_LIMIT: usize = 128 * 1024;
/// Largest `xhr_send` body: as large as the largest raw WebSocket message, so an oversized
/// STOMP frame still reaches the decoder and gets its ERROR.
const MAX_SEND_BODY: usize = super::MAX_WEBSOCKET_MESSAGE;
/// SockJS sessions on the HTTP transports one instance holds, ended ones included, even
/// when `CHAT_MAX_CONNECTIONS` is unlimited: one keep-alive connection can open sessions
/// far faster than they expire.
const MAX_HTTP_SESSIONS: usize = 10_000;
/// Server and session ids longer than this are not SockJS's.
const MAX_ID: usize = 64;
/// Writes of the session waiting for the client; past that the session's write timeout
/// applies, as on a socket whose buffers are full.
const OUTBOUND_WRITES: usize = 16;
/// Bytes gathered into one `a[...]` frame.
const BATCH_BYTES: usize = 64 * 1024;
/// The first chunk of an `xhr_streaming` response: some browsers deliver nothing of a
/// streamed response until they have 2 KiB of it.
const STREAMING_PRELUDE: usize = 2048;

/// What the STOMP session writes, as the transports see it.
#[derive(Debug)]
enum Out {
    /// Text of STOMP frames, to go out in an `a[...]` frame.
    Data(String),
    /// The session closed the connection: this `c[...]` frame is the last.
    Close(String),
}

/// The SockJS sessions on the HTTP transports, by session id. Bounded by the gateway's
/// admission (each holds one admitted connection, like a WebSocket) and emptied by each
/// session's own idle timer.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    table: Mutex<HashMap<String, Arc<HttpSession>>>,
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<HttpSession>>> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, id: &str) -> Option<Arc<HttpSession>> {
        self.lock().get(id).cloned()
    }
}

/// One SockJS session on the HTTP transports.
#[derive(Debug)]
struct HttpSession {
    /// Where `xhr_send` puts client input; taken when the session closes or expires, which
    /// ends the STOMP session's input.
    inbound: Arc<Mutex<Option<mpsc::Sender<Message>>>>,
    /// What the session wrote; held by the one receiving request at a time.
    outbound: Arc<tokio::sync::Mutex<mpsc::Receiver<Out>>>,
    /// The `c[...]` frame once the session has closed.
    closed: Mutex<Option<String>>,
    /// When the last receiving request ended.
    last_seen: Mutex<Instant>,
}

impl HttpSession {
    fn closed(&self) -> Option<String> {
        lock(&self.closed).clone()
    }

    fn close_with(&self, frame: String) {
        *lock(&self.closed) = Some(frame);
    }

    /// Nothing is receiving and nothing has for [`DISCONNECT_DELAY`].
    fn expired(&self) -> bool {
        self.outbound.try_lock().is_ok() && lock(&self.last_seen).elapsed() > DISCONNECT_DELAY
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The one request receiving for a session; notes when it ended.
struct Receiving {
    outbound: OwnedMutexGuard<mpsc::Receiver<Out>>,
    session: Arc<HttpSession>,
}

impl Drop for Receiving {
    fn drop(&mut self) {
        *lock(&self.session.last_seen) = Instant::now();
    }
}

impl Receiving {
    /// The next write of the session, with what else is waiting: a frame to send, and
    /// whether it was the last.
    async fn next_frame(&mut self) -> Option<(String, bool)> {
        let first = match self.outbound.recv().await {
            Some(out) => out,
            None => {
                let frame = self.session.closed().unwrap_or_else(go_away);
                return Some((frame, true));
            }
        };
        let frame = gather(first, &mut self.outbound);
        if frame.1 {
            self.session.close_with(frame.0.clone());
        }
        Some(frame)
    }
}

/// `c[3000,"Go away!"]`: the session ended without saying how.
fn go_away() -> String {
    close_frame(3000, "Go away!")
}

fn close_frame(code: u16, reason: &str) -> String {
    format!("c[{code},{}]", serde_json::Value::from(reason))
}

/// One `a[...]` frame of `first` and whatever else is already waiting, or the close frame.
fn gather(first: Out, queue: &mut mpsc::Receiver<Out>) -> (String, bool) {
    let mut texts = match first {
        Out::Data(text) => vec![text],
        Out::Close(frame) => return (frame, true),
    };
    let mut bytes = texts[0].len();
    let mut closing = None;
    while bytes < BATCH_BYTES {
        match queue.try_recv() {
            Ok(Out::Data(text)) => {
                bytes += text.len();
                texts.push(text);
            }
            Ok(Out::Close(frame)) => {
                closing = Some(frame);
                break;
            }
            Err(_) => break,
        }
    }
    let mut frame = String::with_capacity(bytes + 16);
    frame.push('a');
    frame.push_str(&serde_json::to_string(&texts).unwrap_or_else(|_| "[]".to_owned()));
    match closing {
        // The close frame follows the data in the same response.
        Some(close) => {
            frame.push('\n');
            frame.push_str(&close);
            (frame, true)
        }
        None => (frame, false),
    }
}

/// The STOMP session's side of a SockJS transport: a sink that turns its messages into
/// [`Out`]s (taking `inbound` away once it closes, so its input ends) and a stream of
/// client messages.
fn session_link(
    outbound: mpsc::Sender<Out>,
    inbound: Arc<Mutex<Option<mpsc::Sender<Message>>>>,
    mut from_client: mpsc::Receiver<Message>,
) -> (impl session::Outgoing, impl session::Incoming) {
    let sink = futures_util::sink::unfold(
        (outbound, inbound),
        |(outbound, inbound), message: Message| async move {
            let out = match message {
                Message::Text(text) => Out::Data(text.as_str().to_owned()),
                Message::Binary(bytes) => Out::Data(String::from_utf8_lossy(&bytes).into_owned()),
                Message::Close(frame) => {
                    lock(&inbound).take();
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.as_str().to_owned()))
                        .unwrap_or((1000, String::new()));
                    Out::Close(close_frame(code, &reason))
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {
                    return Ok((outbound, inbound));
                }
            };
            outbound
                .send(out)
                .await
                .map_err(|_| tungstenite::Error::ConnectionClosed)?;
            Ok((outbound, inbound))
        },
    );
    let stream =
        futures_util::stream::poll_fn(move |cx| from_client.poll_recv(cx).map(|m| m.map(Ok)));
    (Box::pin(sink), stream)
}

/// The client's frames in one SockJS message: a JSON array of strings, joined into one
/// message (the STOMP decoder reads a byte stream, so where frames were cut does not
/// matter). `None` if it is not one.
fn client_frames(body: &[u8]) -> Option<String> {
    let texts: Vec<String> = serde_json::from_slice(body).ok()?;
    Some(texts.concat())
}

/// Answers a request below `/ws`.
pub(crate) async fn serve(context: &Arc<GatewayContext>, request: Request<Incoming>) -> Response {
    let path = request.uri().path().to_owned();
    let rest = path
        .strip_prefix(super::PATH)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or_default();
    let parts: Vec<&str> = rest.split('/').collect();
    let method = request.method().clone();
    if method == Method::OPTIONS {
        return preflight(context, &request, parts.as_slice() == ["info"]);
    }
    match parts.as_slice() {
        ["info"] if method == Method::GET => info(context, &request),
        [server, id, transport] if valid_id(server) && valid_id(id) => {
            let id = (*id).to_owned();
            match (*transport, method) {
                ("websocket", Method::GET) => {
                    super::upgrade(context, request, super::Framing::SockJs)
                }
                ("xhr", Method::POST) => receive(context, &request, id, false).await,
                ("xhr_streaming", Method::POST) => receive(context, &request, id, true).await,
                ("xhr_send", Method::POST) => send(context, request, &id).await,
                ("websocket" | "xhr" | "xhr_streaming" | "xhr_send", _) => problem::response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "METHOD_NOT_ALLOWED",
                    "SockJS: GET .../websocket, POST .../xhr, .../xhr_streaming and .../xhr_send",
                ),
                _ => not_found(),
            }
        }
        _ => not_found(),
    }
}

fn not_found() -> Response {
    problem::response(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "no such SockJS endpoint; the transports are /ws/{server}/{session}/websocket, xhr, xhr_streaming and xhr_send, and /ws/info",
    )
}

/// SockJS ids: non-empty, no dots, not too long.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID && !id.contains('.')
}

/// The page origin a response may name, if the request came from an allowed one.
fn allowed_origin(context: &GatewayContext, request: &Request<Incoming>) -> Option<HeaderValue> {
    let origin = request.headers().get(header::ORIGIN)?;
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    context
        .origins
        .allows(origin.to_str().ok(), host)
        .then(|| origin.clone())
}

/// Headers every SockJS answer carries: no caching, and CORS for an allowed origin (the
/// client runs the HTTP transports cross-origin when the page is elsewhere).
fn with_common_headers(
    context: &GatewayContext,
    request: &Request<Incoming>,
    mut response: Response,
) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache, no-transform, must-revalidate, max-age=0"),
    );
    if let Some(origin) = allowed_origin(context, request) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

fn preflight(context: &GatewayContext, request: &Request<Incoming>, info: bool) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    let methods = if info {
        "OPTIONS, GET"
    } else {
        "OPTIONS, POST"
    };
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    if let Some(asked) = request
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
    {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("31536000"),
    );
    with_common_headers(context, request, response)
}

/// `GET /ws/info`: what the client needs to pick a transport.
fn info(context: &GatewayContext, request: &Request<Incoming>) -> Response {
    let entropy = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish() as u32;
    let body = serde_json::json!({
        // The WebSocket transport is served wherever this endpoint is.
        "websocket": true,
        "origins": ["*:*"],
        "cookie_needed": false,
        "entropy": entropy,
    });
    let mut response = warp::reply::json(&body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    with_common_headers(context, request, response)
}

/// A SockJS answer with a text body.
fn javascript(
    context: &GatewayContext,
    request: &Request<Incoming>,
    status: StatusCode,
    body: String,
) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/javascript; charset=UTF-8"),
    );
    with_common_headers(context, request, response)
}

/// `POST .../xhr` and `.../xhr_streaming`: opens the session if it is new, else receives
/// what it wrote. One receiving request per session at a time.
async fn receive(
    context: &Arc<GatewayContext>,
    request: &Request<Incoming>,
    id: String,
    streaming: bool,
) -> Response {
    let (session, opened) = match context.sockjs.get(&id) {
        Some(session) => (session, false),
        None => match open(context, request, id) {
            Ok(session) => (session, true),
            Err(refused) => return *refused,
        },
    };
    let Ok(outbound) = session.outbound.clone().try_lock_owned() else {
        let frame = close_frame(2010, "Another connection still open");
        return javascript(context, request, StatusCode::OK, frame + "\n");
    };
    let mut receiving = Receiving { outbound, session };
    if streaming {
        return stream(context, request, receiving, opened);
    }
    if opened {
        return javascript(context, request, StatusCode::OK, "o\n".to_owned());
    }
    if let Some(frame) = receiving.session.closed() {
        return javascript(context, request, StatusCode::OK, frame + "\n");
    }
    let frame = match tokio::time::timeout(HEARTBEAT, receiving.next_frame()).await {
        Ok(Some((frame, _))) => frame,
        Ok(None) => go_away(),
        Err(_) => "h".to_owned(),
    };
    javascript(context, request, StatusCode::OK, frame + "\n")
}

/// An `xhr_streaming` response: the prelude, `o` for a new session, then frames and
/// heart-beats until [`STREAM_LIMIT`] bytes, the session's close, or the client leaves.
fn stream(
    context: &GatewayContext,
    request: &Request<Incoming>,
    mut receiving: Receiving,
    opened: bool,
) -> Response {
    let (chunks, mut body) = mpsc::channel::<Result<Bytes, Infallible>>(2);
    tokio::spawn(async move {
        let mut first = "h".repeat(STREAMING_PRELUDE);
        first.push('\n');
        if opened {
            first.push_str("o\n");
        } else if let Some(frame) = receiving.session.closed() {
            first.push_str(&frame);
            first.push('\n');
            let _ = chunks.send(Ok(first.into())).await;
            return;
        }
        if chunks.send(Ok(first.into())).await.is_err() {
            return;
        }
        let mut sent = 0;
        while sent < STREAM_LIMIT {
            let (frame, last) = tokio::select! {
                () = chunks.closed() => return,
                next = tokio::time::timeout(HEARTBEAT, receiving.next_frame()) => match next {
                    Ok(Some(frame)) => frame,
                    Ok(None) => (go_away(), true),
                    Err(_) => ("h".to_owned(), false),
                },
            };
            sent += frame.len() + 1;
            if chunks.send(Ok(Bytes::from(frame + "\n"))).await.is_err() || last {
                return;
            }
        }
    });
    let body = futures_util::stream::poll_fn(move |cx| body.poll_recv(cx));
    let mut response = warp::reply::stream(body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/javascript; charset=UTF-8"),
    );
    with_common_headers(context, request, response)
}

/// Starts a new session on the HTTP transports: admitted like a WebSocket, run by the
/// same [`session::run`], and gone from the table [`DISCONNECT_DELAY`] after it ended or
/// its client stopped receiving.
fn open(
    context: &Arc<GatewayContext>,
    request: &Request<Incoming>,
    id: String,
) -> Result<Arc<HttpSession>, Box<Response>> {
    let admitted = super::admit_session(context, request)?;
    let credential = super::upgrade_credential(request);
    let (to_session, from_client) = mpsc::channel(OUTBOUND_WRITES);
    let (to_client, outbound) = mpsc::channel(OUTBOUND_WRITES);
    let inbound = Arc::new(Mutex::new(Some(to_session)));
    let session = Arc::new(HttpSession {
        inbound: inbound.clone(),
        outbound: Arc::new(tokio::sync::Mutex::new(outbound)),
        closed: Mutex::new(None),
        last_seen: Mutex::new(Instant::now()),
    });
    {
        let mut table = context.sockjs.lock();
        if table.len() >= MAX_HTTP_SESSIONS {
            context
                .metrics
                .connection_refused(super::admission::Refusal::Instance.as_str());
            return Err(Box::new(problem::response(
                StatusCode::SERVICE_UNAVAILABLE,
                "TOO_MANY_CONNECTIONS",
                "this instance holds as many SockJS sessions on the HTTP transports as it may; try again later, another instance, or the WebSocket transport",
            )));
        }
        if table.contains_key(&id) {
            // Two first requests raced; the loser is told like a second receiver.
            return Err(Box::new(javascript(
                context,
                request,
                StatusCode::OK,
                close_frame(2010, "Another connection still open") + "\n",
            )));
        }
        table.insert(id.clone(), session.clone());
    }
    let (sink, stream) = session_link(to_client, inbound, from_client);
    let context = context.clone();
    let watched = session.clone();
    let connection = super::next_connection();
    tokio::spawn(async move {
        let guard = context.lifecycle.enter();
        let run = session::run(sink, stream, context.clone(), connection, credential);
        tokio::pin!(run);
        let mut check = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = &mut run => break,
                _ = check.tick() => if watched.expired() {
                    // The client vanished: end its input, and the session ends as if it
                    // had closed the connection.
                    lock(&watched.inbound).take();
                }
            }
        }
        // What the session wrote last (a drain's ERROR, its close frame) waits for the
        // client's next poll, for a while, before the instance may count it as closed.
        let collected = async {
            while !watched
                .outbound
                .try_lock()
                .is_ok_and(|queue| queue.is_empty())
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let _ = tokio::time::timeout(DISCONNECT_DELAY, collected).await;
        drop(guard);
        drop(admitted);
        if watched.closed().is_none() {
            watched.close_with(go_away());
        }
        // A client still polling learns how it ended; then the id is forgotten.
        tokio::time::sleep(DISCONNECT_DELAY).await;
        context.sockjs.lock().remove(&id);
    });
    Ok(session)
}

/// `POST .../xhr_send`: a JSON array of strings, the client's STOMP bytes.
async fn send(context: &GatewayContext, request: Request<Incoming>, id: &str) -> Response {
    let (parts, body) = request.into_parts();
    let head = Request::from_parts(parts, ());
    let answer = |status, text: &str| {
        let mut response = Response::new(text.to_owned().into());
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=UTF-8"),
        );
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(
                "no-store, no-cache, no-transform, must-revalidate, max-age=0",
            ),
        );
        if let Some(origin) = head.headers().get(header::ORIGIN).filter(|origin| {
            let host = head
                .headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok());
            context.origins.allows(origin.to_str().ok(), host)
        }) {
            response
                .headers_mut()
                .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            response.headers_mut().insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        response
    };
    let Some(session) = context.sockjs.get(id) else {
        return answer(StatusCode::NOT_FOUND, "no such SockJS session");
    };
    let body = match http_body_util::Limited::new(body, MAX_SEND_BODY)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            return answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the body is larger than one SockJS send may be (1 MiB)",
            );
        }
        Err(_) => return answer(StatusCode::BAD_REQUEST, "the body could not be read"),
    };
    if body.is_empty() {
        return answer(StatusCode::INTERNAL_SERVER_ERROR, "Payload expected.");
    }
    let Some(text) = client_frames(&body) else {
        return answer(StatusCode::INTERNAL_SERVER_ERROR, "Broken JSON encoding.");
    };
    let Some(to_session) = lock(&session.inbound).clone() else {
        return answer(StatusCode::NOT_FOUND, "this SockJS session has ended");
    };
    if !text.is_empty() {
        // A session that does not take input within the write timeout is as stuck as a
        // client that does not read.
        match tokio::time::timeout(context.write_timeout, to_session.send(Message::text(text)))
            .await
        {
            Ok(Ok(())) => {}
            _ => return answer(StatusCode::NOT_FOUND, "this SockJS session has ended"),
        }
    }
    answer(StatusCode::NO_CONTENT, "")
}

/// Writes one SockJS frame; false once the socket failed or the client stopped reading.
async fn write(socket: &mut WebSocket, timeout: Duration, frame: String) -> bool {
    matches!(
        tokio::time::timeout(timeout, socket.send(Message::text(frame))).await,
        Ok(Ok(()))
    )
}

/// The `websocket` transport: SockJS frames on an upgraded WebSocket, unwrapped into the
/// STOMP session's messages by a pump between the two.
pub(crate) async fn run_websocket(
    mut socket: WebSocket,
    context: Arc<GatewayContext>,
    connection: ConnectionId,
    credential: Option<String>,
) {
    let (to_session, from_client) = mpsc::channel(OUTBOUND_WRITES);
    let (to_client, mut outbound) = mpsc::channel(OUTBOUND_WRITES);
    let (sink, stream) = session_link(to_client, Arc::new(Mutex::new(None)), from_client);
    let write_timeout = context.write_timeout;
    let pump = async move {
        if !write(&mut socket, write_timeout, "o".to_owned()).await {
            return;
        }
        // Client input waiting for the session to take it; nothing more is read meanwhile.
        let mut pending: Option<String> = None;
        let mut heartbeat = tokio::time::interval_at(Instant::now() + HEARTBEAT, HEARTBEAT);
        loop {
            tokio::select! {
                out = outbound.recv() => {
                    let (frame, last) = match out {
                        Some(out) => gather(out, &mut outbound),
                        None => (go_away(), true),
                    };
                    heartbeat.reset();
                    if !write(&mut socket, write_timeout, frame).await || last {
                        break;
                    }
                }
                permit = to_session.reserve(), if pending.is_some() => match permit {
                    Ok(permit) => permit.send(Message::text(pending.take().unwrap_or_default())),
                    Err(_) => break,
                },
                incoming = socket.next(), if pending.is_none() => match incoming {
                    Some(Ok(Message::Text(text))) => match client_frames(text.as_bytes()) {
                        Some(text) if text.is_empty() => {}
                        Some(text) => pending = Some(text),
                        None => {
                            let _ = write(&mut socket, write_timeout, close_frame(1002, "Broken JSON encoding.")).await;
                            break;
                        }
                    },
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Binary(_))) => {
                        let _ = write(&mut socket, write_timeout, close_frame(1003, "SockJS frames are text")).await;
                        break;
                    }
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                },
                _ = heartbeat.tick() => if !write(&mut socket, write_timeout, "h".to_owned()).await {
                    break;
                },
            }
        }
        drop(to_session);
        let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
    };
    let run = session::run(sink, stream, context, connection, credential);
    tokio::join!(pump, run);
}
