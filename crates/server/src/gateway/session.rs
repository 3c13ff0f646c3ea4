//! One STOMP session over one WebSocket: decodes what the client sends, answers CONNECT,
//! SUBSCRIBE, SEND and the rest, writes MESSAGEs from the hub, and keeps heart-beats in
//! both directions. Protocol violations end in an ERROR frame and a close; application
//! errors go to `/user/queue/errors` and the session carries on.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chat_domain::{
    ChatError, ChatMessageRequest, ChatService, IdempotencyKey, RoomId, SentMessage, Seq,
};
use chat_stomp::heartbeat::{self, HeartBeatMonitor};
use chat_stomp::{
    Command, DecodeError, Decoder, Frame, HeartBeat, HeartBeatAction, Item, Limits, encode, version,
};
use futures_util::stream::{FuturesOrdered, SplitSink};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The upgraded connection a session runs on.
pub(crate) type WebSocket = WebSocketStream<TokioIo<Upgraded>>;

use crate::metrics::{CloseReason, Metrics};
use crate::state::DrainSchedule;

use super::hub::{
    ConnectionId, Eviction, HubHandle, Outbound, Outbox, Subscribed, SubscriptionKey,
};

/// The only destination clients send chat messages to.
const SEND_DESTINATION: &str = "/app/chat.sendMessage";
/// Where per-session application errors go.
const ERRORS_DESTINATION: &str = "/user/queue/errors";
const ROOM_PREFIX: &str = "/topic/chatroom/";
/// SENDs of one connection being stored at once; past it the session stops reading, which
/// pushes back on the client through TCP instead of queueing without bound.
const MAX_SENDS_IN_FLIGHT: usize = 64;
/// Bytes gathered into one WebSocket message when many frames are waiting.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// What every session of this instance shares.
#[derive(Debug)]
pub(crate) struct GatewayContext {
    pub(crate) service: ChatService,
    pub(crate) hub: HubHandle,
    pub(crate) server_heartbeat: HeartBeat,
    pub(crate) heartbeat_grace: f32,
    pub(crate) limits: Limits,
    pub(crate) outbound_queue: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) instance: String,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) drain: DrainSchedule,
    pub(crate) metrics: Arc<Metrics>,
}

/// Why the session closes with an ERROR frame.
#[derive(Debug, thiserror::Error)]
enum ProtocolError {
    #[error("{0}")]
    Decode(#[from] DecodeError),
    #[error("{0}")]
    Violation(String),
    #[error("no heart-beat or frame from the client within the negotiated interval; closing")]
    HeartbeatTimeout,
}

fn violation(message: impl Into<String>) -> ProtocolError {
    ProtocolError::Violation(message.into())
}

/// What a subscription of this session points at.
#[derive(Debug, Clone, Copy)]
enum Target {
    Room(RoomId),
    Errors,
}

type SendResult = (Option<String>, Result<SentMessage, ChatError>);
type PendingSend = Pin<Box<dyn Future<Output = SendResult> + Send>>;

struct Session {
    context: Arc<GatewayContext>,
    connection: ConnectionId,
    sink: SplitSink<WebSocket, Message>,
    outbox: Arc<Outbox>,
    decoder: Decoder,
    version: Option<version::Version>,
    heartbeat: Option<HeartBeatMonitor>,
    subscriptions: HashMap<Arc<str>, Target>,
    errors_subscription: Option<Arc<str>>,
    sends: FuturesOrdered<PendingSend>,
    error_count: u64,
}

/// How long a closing session waits for the client's Close reply.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Runs one session until the client leaves, breaks the protocol, falls too far behind or
/// the instance shuts down.
pub(crate) async fn run(socket: WebSocket, context: Arc<GatewayContext>, connection: ConnectionId) {
    let (sink, mut stream) = socket.split();
    let (outbox, mut queue) = Outbox::new(context.outbound_queue);
    let mut shutdown = context.shutdown.clone();
    let connect_deadline = Instant::now() + context.connect_timeout;
    let mut session = Session {
        decoder: Decoder::new(context.limits),
        context,
        connection,
        sink,
        outbox,
        version: None,
        heartbeat: None,
        subscriptions: HashMap::new(),
        errors_subscription: None,
        sends: FuturesOrdered::new(),
        error_count: 0,
    };
    let metrics = session.context.metrics.clone();
    metrics.connections_opened.inc();
    metrics.connections_current.inc();
    let outbox = session.outbox.clone();
    // Set when the instance drains: until then the session keeps serving as usual.
    let mut reconnect_at: Option<Instant> = None;
    let reason = loop {
        let deadline = session.next_deadline(connect_deadline);
        let step: Result<bool, ProtocolError> = tokio::select! {
            _ = async { shutdown.wait_for(|stopping| *stopping).await.map(|_| ()) }, if reconnect_at.is_none() => {
                reconnect_at = Some(Instant::now() + session.context.drain.delay());
                Ok(true)
            }
            () = async { tokio::time::sleep_until(reconnect_at.unwrap_or_else(Instant::now)).await }, if reconnect_at.is_some() => {
                let _ = session.send_error("the server is shutting down; reconnect to continue", None).await;
                break CloseReason::ServerShutdown;
            }
            why = outbox.evicted() => {
                let message = match why {
                    Eviction::SlowConsumer => "slow consumer: this client fell too far behind and was disconnected; reconnect and resubscribe with x-resume-after to catch up".to_owned(),
                    Eviction::ReplayFailed(reason) => format!("the history for x-resume-after could not be read ({reason}); reconnect and resubscribe with the same x-resume-after"),
                };
                let _ = session.send_error(&message, None).await;
                break CloseReason::SlowConsumer;
            }
            Some(item) = queue.recv() => session.write_queued(item, &mut queue).await.map(|()| true),
            incoming = stream.next(), if session.sends.len() < MAX_SENDS_IN_FLIGHT => match incoming {
                Some(Ok(message)) => session.on_message(message).await,
                Some(Err(error)) => {
                    tracing::debug!(%error, "websocket read failed");
                    break CloseReason::ConnectionLost;
                }
                None => break CloseReason::ClientClosed,
            },
            Some((receipt, result)) = session.sends.next(), if !session.sends.is_empty() => {
                session.on_send_done(receipt, result).await.map(|()| true)
            }
            () = tokio::time::sleep_until(deadline) => session.on_timer(connect_deadline).await,
        };
        match step {
            Ok(true) => {}
            Ok(false) => break CloseReason::ClientClosed,
            Err(error) => {
                tracing::debug!(%error, "protocol error; closing");
                let _ = session.send_error(&error.to_string(), None).await;
                break match error {
                    ProtocolError::HeartbeatTimeout => CloseReason::HeartbeatTimeout,
                    _ => CloseReason::ProtocolError,
                };
            }
        }
    };
    session.context.hub.disconnect(session.connection);
    // Let already accepted SENDs finish storing before the socket goes: a message whose
    // RECEIPT could still be sent should not be cut off half-way.
    while let Some((receipt, result)) = session.sends.next().await {
        let _ = session.on_send_done(receipt, result).await;
    }
    let normal = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = session.sink.send(Message::Close(Some(normal))).await;
    // Lingering close: read (and drop) what the client still sends until its Close reply,
    // for a bounded time. Dropping the socket with unread input makes the kernel answer with
    // a TCP RST, and the client's kernel then discards the ERROR, RECEIPTs and Close frame
    // it has not read yet.
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while let Some(Ok(message)) = stream.next().await {
            if message.is_close() {
                break;
            }
        }
    })
    .await;
    let _ = session.sink.close().await;
    metrics.connections_current.dec();
    metrics.connection_closed(reason);
    metrics
        .subscriptions_current
        .dec_by(i64::try_from(session.subscriptions.len()).unwrap_or(0));
    tracing::debug!(
        connection = session.connection.0,
        reason = reason.as_str(),
        "session ended"
    );
}

impl Session {
    fn next_deadline(&self, connect_deadline: Instant) -> Instant {
        match &self.heartbeat {
            Some(monitor) => monitor.next_deadline().map_or_else(
                || Instant::now() + Duration::from_secs(3600),
                Instant::from_std,
            ),
            None if self.version.is_none() => connect_deadline,
            None => Instant::now() + Duration::from_secs(3600),
        }
    }

    async fn on_timer(&mut self, connect_deadline: Instant) -> Result<bool, ProtocolError> {
        let now = Instant::now();
        if self.version.is_none() {
            if now >= connect_deadline {
                return Err(violation("no CONNECT frame received in time; closing"));
            }
            return Ok(true);
        }
        let Some(monitor) = self.heartbeat.as_mut() else {
            return Ok(true);
        };
        match monitor.poll(now.into_std()) {
            HeartBeatAction::Idle => Ok(true),
            HeartBeatAction::SendHeartBeat => {
                self.send_raw(chat_stomp::HEARTBEAT_EOL.to_vec()).await?;
                Ok(true)
            }
            HeartBeatAction::PeerTimedOut => Err(ProtocolError::HeartbeatTimeout),
        }
    }

    /// Writes one queued MESSAGE and whatever else is already waiting, as one WebSocket
    /// message: fewer syscalls and WebSocket frames under load, no added latency when idle.
    async fn write_queued(
        &mut self,
        first: Outbound,
        queue: &mut mpsc::Receiver<Outbound>,
    ) -> Result<(), ProtocolError> {
        let mut out = Vec::with_capacity(first.prepared.encoded_len_hint() + 64);
        let mut frames = 1;
        first
            .prepared
            .write_for_subscription(&first.subscription, &mut out);
        while out.len() < WRITE_BATCH_BYTES {
            let Ok(next) = queue.try_recv() else { break };
            frames += 1;
            next.prepared
                .write_for_subscription(&next.subscription, &mut out);
        }
        self.context.metrics.message_frames_sent.inc_by(frames);
        self.send_raw(out).await
    }

    async fn send_raw(&mut self, bytes: Vec<u8>) -> Result<(), ProtocolError> {
        // Everything we write is UTF-8 (JSON bodies, our own headers), so it goes as text,
        // as STOMP-over-WebSocket clients expect; binary only if a header ever was not.
        let message = match String::from_utf8(bytes) {
            Ok(text) => Message::text(text),
            Err(not_text) => Message::binary(not_text.into_bytes()),
        };
        self.sink
            .send(message)
            .await
            .map_err(|e| violation(format!("cannot write to the client: {e}")))?;
        if let Some(monitor) = self.heartbeat.as_mut() {
            monitor.on_bytes_sent(std::time::Instant::now());
        }
        Ok(())
    }

    async fn send_frame(&mut self, frame: &Frame) -> Result<(), ProtocolError> {
        let mut bytes = Vec::with_capacity(128 + frame.body.len());
        encode(frame, &mut bytes);
        self.context.metrics.frames_sent(frame.command.as_str(), 1);
        self.send_raw(bytes).await
    }

    /// Sends an ERROR frame; the caller then closes the connection.
    async fn send_error(
        &mut self,
        message: &str,
        receipt: Option<&str>,
    ) -> Result<(), ProtocolError> {
        let mut frame = Frame::new(Command::Error)
            .with_header("message", message)
            .with_header("content-type", "text/plain")
            .with_header("content-length", message.len().to_string())
            .with_body(message.as_bytes().to_vec());
        if let Some(receipt) = receipt {
            frame = frame.with_header("receipt-id", receipt);
        }
        self.send_frame(&frame).await
    }

    async fn send_receipt(&mut self, receipt: Option<&str>) -> Result<(), ProtocolError> {
        match receipt {
            Some(id) => {
                let frame = Frame::new(Command::Receipt).with_header("receipt-id", id);
                self.send_frame(&frame).await
            }
            None => Ok(()),
        }
    }

    /// An application error: a MESSAGE on the client's `/user/queue/errors` subscription.
    /// The connection stays open. Without such a subscription the client has asked not to
    /// hear about errors, so it is only logged.
    async fn send_app_error(
        &mut self,
        code: &str,
        message: &str,
        receipt: Option<&str>,
    ) -> Result<(), ProtocolError> {
        let Some(subscription) = self.errors_subscription.clone() else {
            tracing::debug!(
                code,
                message,
                "application error for a client without an errors subscription"
            );
            return Ok(());
        };
        self.error_count += 1;
        let body = serde_json::json!({"code": code, "message": message, "receiptId": receipt});
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let frame = Frame::new(Command::Message)
            .with_header("subscription", subscription.as_ref())
            .with_header(
                "message-id",
                format!("error-{}-{}", self.connection.0, self.error_count),
            )
            .with_header("destination", ERRORS_DESTINATION)
            .with_header("content-type", "application/json")
            .with_header("content-length", body.len().to_string())
            .with_body(body);
        self.send_frame(&frame).await
    }

    async fn on_message(&mut self, message: Message) -> Result<bool, ProtocolError> {
        let bytes = match &message {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(bytes) => bytes,
            Message::Close(_) => return Ok(false),
            // Pings are answered by tungstenite itself.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return Ok(true),
        };
        if let Some(monitor) = self.heartbeat.as_mut() {
            monitor.on_bytes_received(std::time::Instant::now());
        }
        self.decoder.feed(bytes);
        loop {
            match self.decoder.next_item()? {
                None => return Ok(true),
                Some(Item::HeartBeat) => {}
                Some(Item::Frame(frame)) => {
                    if !self.on_frame(frame).await? {
                        return Ok(false);
                    }
                }
            }
        }
    }

    async fn on_frame(&mut self, frame: Frame) -> Result<bool, ProtocolError> {
        self.context.metrics.frame_received(frame.command.as_str());
        let connected = self.version.is_some();
        match frame.command {
            Command::Connect | Command::Stomp if !connected => self.on_connect(&frame).await,
            Command::Connect | Command::Stomp => Err(violation(
                "this session is already connected; CONNECT was sent twice",
            )),
            _ if !connected => Err(violation(format!(
                "{} before CONNECT: the first frame of a session must be CONNECT or STOMP",
                frame.command.as_str()
            ))),
            Command::Subscribe => self.on_subscribe(&frame).await.map(|()| true),
            Command::Unsubscribe => self.on_unsubscribe(&frame).await.map(|()| true),
            Command::Send => self.on_send(frame).await.map(|()| true),
            Command::Ack | Command::Nack => {
                // Subscriptions are ack:auto; acknowledgements are accepted and have no effect.
                self.send_receipt(frame.header("receipt"))
                    .await
                    .map(|()| true)
            }
            Command::Disconnect => {
                // Finish the SENDs before this DISCONNECT so its RECEIPT means "all stored".
                while let Some((receipt, result)) = self.sends.next().await {
                    self.on_send_done(receipt, result).await?;
                }
                self.send_receipt(frame.header("receipt")).await?;
                Ok(false)
            }
            Command::Begin | Command::Commit | Command::Abort => Err(violation(
                "transactions (BEGIN/COMMIT/ABORT) are not supported by chat-service; send each message on its own",
            )),
            Command::Connected | Command::Message | Command::Receipt | Command::Error => {
                Err(violation(format!(
                    "{} is a server frame; a client may not send it",
                    frame.command.as_str()
                )))
            }
        }
    }

    async fn on_connect(&mut self, frame: &Frame) -> Result<bool, ProtocolError> {
        let Some(version) = version::negotiate(frame.header("accept-version")) else {
            return Err(violation(
                "no common STOMP version: this server supports 1.0, 1.1 and 1.2",
            ));
        };
        let client_heartbeat = match frame.header("heart-beat") {
            Some(value) => HeartBeat::parse(value).map_err(|e| violation(e.to_string()))?,
            None => HeartBeat::DISABLED,
        };
        let server = self.context.server_heartbeat;
        let negotiated = heartbeat::negotiate(client_heartbeat, server);
        self.heartbeat = Some(HeartBeatMonitor::new(
            negotiated,
            std::time::Instant::now(),
            self.context.heartbeat_grace,
        ));
        self.version = Some(version);
        let connected = Frame::new(Command::Connected)
            .with_header("version", version.as_str())
            .with_header("heart-beat", server.to_header_value())
            .with_header(
                "server",
                concat!("chat-service/", env!("CARGO_PKG_VERSION")),
            )
            .with_header(
                "session",
                format!("{}-{}", self.context.instance, self.connection.0),
            );
        self.send_frame(&connected).await?;
        Ok(true)
    }

    fn required<'f>(frame: &'f Frame, name: &str) -> Result<&'f str, ProtocolError> {
        frame.header(name).ok_or_else(|| {
            violation(format!(
                "{} without the required `{name}` header",
                frame.command.as_str()
            ))
        })
    }

    async fn on_subscribe(&mut self, frame: &Frame) -> Result<(), ProtocolError> {
        let id: Arc<str> = Arc::from(Self::required(frame, "id")?);
        let destination = Self::required(frame, "destination")?;
        let receipt = frame.header("receipt");
        if self.subscriptions.contains_key(&id) {
            return self
                .send_app_error(
                    "DUPLICATE_SUBSCRIPTION",
                    &format!("subscription id {id:?} is already in use on this connection"),
                    receipt,
                )
                .await;
        }
        if destination == ERRORS_DESTINATION {
            self.subscriptions.insert(id.clone(), Target::Errors);
            self.context.metrics.subscriptions_current.inc();
            self.errors_subscription = Some(id);
            return self.send_receipt(receipt).await;
        }
        let Some(room) = destination
            .strip_prefix(ROOM_PREFIX)
            .and_then(|id| id.parse::<i64>().ok())
            .map(RoomId)
        else {
            return self
                .send_app_error(
                    "UNKNOWN_DESTINATION",
                    &format!("cannot subscribe to {destination:?}: use /topic/chatroom/{{roomId}} or {ERRORS_DESTINATION}"),
                    receipt,
                )
                .await;
        };
        let resume_after = match frame.header("x-resume-after").map(str::parse::<i64>) {
            None => None,
            Some(Ok(seq)) if seq >= 0 => Some(Seq(seq)),
            Some(_) => {
                return self
                    .send_app_error(
                        "INVALID_RESUME",
                        "x-resume-after must be a non-negative seq",
                        receipt,
                    )
                    .await;
            }
        };
        let key = SubscriptionKey {
            connection: self.connection,
            id: id.clone(),
        };
        let subscribed = self
            .context
            .hub
            .subscribe(key.clone(), room, self.outbox.clone(), resume_after)
            .await;
        match subscribed {
            Err(error) => {
                self.send_app_error(error.code(), &error.to_string(), receipt)
                    .await
            }
            Ok(Subscribed) => {
                self.subscriptions.insert(id.clone(), Target::Room(room));
                self.context.metrics.subscriptions_current.inc();
                // The RECEIPT says "subscribed". A resume's history follows it through the
                // connection's queue (the hub replays it), then the live messages.
                self.send_receipt(receipt).await
            }
        }
    }

    async fn on_unsubscribe(&mut self, frame: &Frame) -> Result<(), ProtocolError> {
        let id = Self::required(frame, "id")?;
        if let Some((id, target)) = self.subscriptions.remove_entry(id) {
            self.context.metrics.subscriptions_current.dec();
            match target {
                Target::Room(room) => self.context.hub.unsubscribe(
                    SubscriptionKey {
                        connection: self.connection,
                        id,
                    },
                    room,
                ),
                Target::Errors => self.errors_subscription = None,
            }
        }
        self.send_receipt(frame.header("receipt")).await
    }

    async fn on_send(&mut self, frame: Frame) -> Result<(), ProtocolError> {
        let destination = Self::required(&frame, "destination")?;
        let receipt = frame.header("receipt").map(str::to_owned);
        self.context.metrics.messages_received.inc();
        if destination != SEND_DESTINATION {
            self.context.metrics.rejected("UNKNOWN_DESTINATION");
            let message =
                format!("cannot send to {destination:?}: chat messages go to {SEND_DESTINATION}");
            return self
                .send_app_error("UNKNOWN_DESTINATION", &message, receipt.as_deref())
                .await;
        }
        let request = ChatMessageRequest::from_json(&frame.body).and_then(|request| {
            let key = frame
                .header("x-idempotency-key")
                .map(IdempotencyKey::parse)
                .transpose()?;
            Ok((request, key))
        });
        let service = self.context.service.clone();
        let hub = self.context.hub.clone();
        // Queued in order, so RECEIPTs and errors come back in the order the SENDs came in.
        self.sends.push_back(Box::pin(async move {
            let result = match request {
                Ok((request, key)) => service.send(request, key).await,
                Err(invalid) => Err(ChatError::Invalid(invalid)),
            };
            // Delivered here as soon as it is committed, not when its turn for a RECEIPT
            // comes; the hub puts it in seq order.
            if let Ok(sent) = &result {
                hub.deliver_stored(sent);
            }
            (receipt, result)
        }));
        Ok(())
    }

    async fn on_send_done(
        &mut self,
        receipt: Option<String>,
        result: Result<SentMessage, ChatError>,
    ) -> Result<(), ProtocolError> {
        match result {
            Ok(_) => self.send_receipt(receipt.as_deref()).await,
            Err(error) => {
                self.context.metrics.rejected(error.code());
                if matches!(
                    error,
                    ChatError::StoreUnavailable(_) | ChatError::StoreOutcomeUnknown(_)
                ) {
                    tracing::warn!(%error, "a SEND could not be stored");
                }
                self.send_app_error(error.code(), &error.to_string(), receipt.as_deref())
                    .await
            }
        }
    }
}
