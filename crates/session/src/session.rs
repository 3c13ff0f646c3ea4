//! The session state machine. Inputs are `handle_*`, outputs are `poll_*`; between them
//! nothing blocks and nothing reads a clock.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_domain::{
    Caller, ChatError, ChatMessageRequest, ConnectionId, DisconnectReason, IdempotencyKey, RoomId,
    SenderId, SenderNickname, Seq, SubscriptionKey, ValidationError,
};
use chat_stomp::heartbeat::{self, HeartBeatMonitor};
use chat_stomp::{
    Command, DecodeError, Decoder, Frame, HEARTBEAT_EOL, HeartBeat, HeartBeatAction, Item, Limits,
    encode, version,
};

use crate::destination;

/// How a session is tuned; the same for every session of an instance.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The heart-beat this server offers in CONNECTED.
    pub server_heartbeat: HeartBeat,
    /// How many of the client's promised intervals it may stay silent.
    pub heartbeat_grace: f32,
    /// Frame limits for the decoder.
    pub limits: Limits,
    /// How long a new connection may take to send CONNECT.
    pub connect_timeout: Duration,
    /// Names this instance in the CONNECTED `session` header.
    pub instance: String,
    /// SEND frames being stored at once; past it the session stops decoding (and its
    /// driver stops reading), which pushes back on the client through TCP. Counted in
    /// frames, however many of them one WebSocket message holds.
    pub max_sends_in_flight: usize,
    /// Subscriptions one connection may hold (the errors queue included).
    pub max_subscriptions: usize,
    /// Longest subscription id, in bytes.
    pub max_subscription_id_bytes: usize,
    /// A connected client that sends nothing at all for this long is disconnected, also
    /// when it negotiated no heart-beats.
    pub idle_timeout: Duration,
}

impl SessionConfig {
    /// Subscriptions per connection by default.
    pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 64;
    /// Subscription id length by default.
    pub const DEFAULT_MAX_SUBSCRIPTION_ID_BYTES: usize = 128;
    /// Idle limit by default.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
}

/// Names one SEND handed to the chat service, so its answer finds its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SendId(pub u64);

/// Why a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// DISCONNECT, or the client closed the WebSocket.
    ClientClosed,
    /// A malformed frame, a frame out of place, or no CONNECT in time.
    ProtocolError,
    /// The delivery engine let the connection go: it fell too far behind, or its resume
    /// could not be replayed.
    SlowConsumer,
    /// No heart-beat or frame from the client within the negotiated interval, or nothing
    /// at all for the idle limit.
    HeartbeatTimeout,
    /// This instance is draining.
    ServerShutdown,
    /// The socket failed under the session.
    ConnectionLost,
    /// CONNECT carried no valid credential.
    Unauthenticated,
    /// The session's token expired.
    TokenExpired,
    /// Nothing at all from the client for the idle limit.
    IdleTimeout,
    /// A text WebSocket message that is not UTF-8 (the WebSocket closes with 1007).
    InvalidText,
}

impl CloseReason {
    /// The label used in logs and metrics.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientClosed => "client_closed",
            Self::ProtocolError => "protocol_error",
            Self::SlowConsumer => "slow_consumer",
            Self::HeartbeatTimeout => "heartbeat_timeout",
            Self::ServerShutdown => "server_shutdown",
            Self::ConnectionLost => "connection_lost",
            Self::Unauthenticated => "unauthenticated",
            Self::TokenExpired => "token_expired",
            Self::IdleTimeout => "idle_timeout",
            Self::InvalidText => "invalid_text",
        }
    }
}

/// Who a CONNECT authenticated, as the driver's authenticator found it.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub caller: Arc<Caller>,
    /// When the credential stops being valid; the session ends then.
    pub expires_at: Option<Instant>,
}

/// Who a connection is, for presence, typing and read cursors: the token's user, or in
/// open mode the user the CONNECT frame's `login` header names (nickname from
/// `x-nickname`). A session without one is anonymous: it may watch, and is never counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user: SenderId,
    pub nickname: String,
}

impl Member {
    /// The member of an authenticated caller, or of an open-mode CONNECT's `login` and
    /// `x-nickname` (a `login` that is not an int64 is some other broker's user name,
    /// and leaves the session anonymous).
    fn of(caller: &Caller, login: Option<&str>, nickname: Option<&str>) -> Option<Self> {
        let (user, nickname) = match caller {
            Caller::User(identity) => (identity.user, identity.nickname.clone()),
            Caller::Open => (
                SenderId(login?.trim().parse::<i64>().ok()?),
                nickname.map(str::to_owned),
            ),
        };
        let nickname = nickname
            .and_then(|n| SenderNickname::parse(n).ok())
            .map_or_else(|| format!("user {user}"), SenderNickname::into_inner);
        Some(Self { user, nickname })
    }
}

/// What a subscription watches besides a room's messages (those go through the delivery
/// engine): events the driver fans out itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `/topic/chatroom/{id}/presence`: a snapshot, then joins and leaves.
    Presence(RoomId),
    /// `/topic/chatroom/{id}/typing`.
    Typing(RoomId),
    /// `/user/queue/read`: this user's read cursors, from any of their sessions.
    Reads(SenderId),
}

impl Topic {
    /// The room whose access the topic needs, if any.
    #[must_use]
    pub fn room(self) -> Option<RoomId> {
        match self {
            Self::Presence(room) | Self::Typing(room) => Some(room),
            Self::Reads(_) => None,
        }
    }
}

/// What the driver must do next.
#[derive(Debug)]
pub enum Action {
    /// Write these bytes to the client, as one WebSocket message.
    Write(Vec<u8>),
    /// Check this credential (the CONNECT's `Authorization: Bearer …` or `passcode`
    /// header, else the one the WebSocket upgrade carried; `None`: there was none) and
    /// answer with [`Session::handle_authenticated`]. Nothing else is decoded until then.
    Authenticate { credential: Option<String> },
    /// Subscribe in the delivery engine; answer with [`Session::handle_subscribed`]. The
    /// session decodes nothing more until then, so the RECEIPT precedes a resume's
    /// history and later frames keep their order.
    Subscribe {
        key: SubscriptionKey,
        room: RoomId,
        resume_after: Option<Seq>,
    },
    /// Unsubscribe in the delivery engine; there is no answer.
    Unsubscribe { key: SubscriptionKey, room: RoomId },
    /// Register the subscription on `topic` (checking first that the caller may read its
    /// room); answer with [`Session::handle_subscribed`]. Nothing is decoded until then.
    Watch { key: SubscriptionKey, topic: Topic },
    /// End a [`Action::Watch`]; there is no answer.
    Unwatch { key: SubscriptionKey, topic: Topic },
    /// This connection is now in `room` (its first subscription there opened): count it in
    /// the room's presence.
    Enter { room: RoomId, member: Member },
    /// This connection is no longer in `room` (its last subscription there ended, or the
    /// session closes).
    Leave { room: RoomId, user: SenderId },
    /// `member` types in `room`; answer with [`Session::handle_send_done`].
    Typing {
        id: SendId,
        member: Member,
        room: RoomId,
    },
    /// Move `member`'s read cursor in `room` to `seq`; answer with
    /// [`Session::handle_send_done`] once it is stored.
    Read {
        id: SendId,
        member: Member,
        room: RoomId,
        seq: Seq,
    },
    /// Store and publish through the chat service; answer with
    /// [`Session::handle_send_done`]. Several may run at once; their RECEIPTs and errors
    /// go out in the order the SENDs came in.
    Send {
        id: SendId,
        caller: Arc<Caller>,
        request: ChatMessageRequest,
        idempotency_key: Option<IdempotencyKey>,
    },
    /// Stop reading and stop delivering; once [`Session::sends_pending`] is zero (keep
    /// answering the SENDs under way and writing what they produce), close the socket.
    Close(CloseReason),
}

/// What happened, for metrics; it changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    FrameReceived(Command),
    FrameSent(Command),
    SendReceived,
    /// An application error was answered with this code.
    Rejected(&'static str),
    SubscriptionOpened,
    SubscriptionClosed,
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
    #[error(
        "nothing received from the client for {0:?}; closing (send heart-beats to stay connected)"
    )]
    Idle(Duration),
}

fn violation(message: impl Into<String>) -> ProtocolError {
    ProtocolError::Violation(message.into())
}

/// An application error: it goes to `/user/queue/errors` and the session carries on.
#[derive(Debug)]
struct AppError {
    code: &'static str,
    message: String,
}

impl From<ChatError> for AppError {
    fn from(error: ChatError) -> Self {
        Self {
            code: error.code(),
            message: error.to_string(),
        }
    }
}

/// What a subscription of this session points at.
#[derive(Debug, Clone, Copy)]
enum Target {
    Room(RoomId),
    Errors,
    Watch(Topic),
}

#[derive(Debug)]
enum Phase {
    AwaitingConnect {
        deadline: Instant,
    },
    /// CONNECT was valid; its credential is being checked.
    Authenticating {
        deadline: Instant,
        version: version::Version,
        client_heartbeat: HeartBeat,
        /// The CONNECT's `login` and `x-nickname`, for an open-mode member.
        login: Option<String>,
        nickname: Option<String>,
    },
    Connected {
        heartbeat: HeartBeatMonitor,
        caller: Arc<Caller>,
        member: Option<Member>,
        expires_at: Option<Instant>,
        /// When the client last sent anything (or we last stopped reading it).
        last_input: Instant,
    },
}

/// A SEND in arrival order; `outcome` is filled when its answer comes.
#[derive(Debug)]
struct PendingSend {
    id: SendId,
    receipt: Option<String>,
    outcome: Option<Result<(), AppError>>,
}

#[derive(Debug)]
struct PendingSubscribe {
    id: Arc<str>,
    target: Target,
    receipt: Option<String>,
}

/// One STOMP session of one connection.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    connection: ConnectionId,
    decoder: Decoder,
    phase: Phase,
    /// The credential the WebSocket upgrade carried, if any.
    upgrade_credential: Option<String>,
    subscriptions: HashMap<Arc<str>, Target>,
    errors_subscription: Option<Arc<str>>,
    /// Subscriptions to each room's messages; the connection is in the rooms listed.
    rooms: HashMap<RoomId, usize>,
    sends: VecDeque<PendingSend>,
    next_send: u64,
    subscribing: Option<PendingSubscribe>,
    /// DISCONNECT arrived (with this receipt); it is answered once the SENDs before it are.
    disconnecting: Option<Option<String>>,
    reconnect_at: Option<Instant>,
    /// Decoding stopped with frames possibly left in the buffer, until an answer comes.
    paused: bool,
    closed: bool,
    errors_sent: u64,
    actions: VecDeque<Action>,
    notes: VecDeque<Note>,
}

impl Session {
    /// A session for a connection that opened at `now`: it expects CONNECT within the
    /// configured timeout. `upgrade_credential` is a token the WebSocket upgrade carried
    /// (its `Authorization` header or `access_token` parameter), used when CONNECT has none.
    #[must_use]
    pub fn new(
        config: SessionConfig,
        connection: ConnectionId,
        upgrade_credential: Option<String>,
        now: Instant,
    ) -> Self {
        let deadline = now + config.connect_timeout;
        Self {
            decoder: Decoder::new(config.limits),
            config,
            connection,
            phase: Phase::AwaitingConnect { deadline },
            upgrade_credential,
            subscriptions: HashMap::new(),
            errors_subscription: None,
            rooms: HashMap::new(),
            sends: VecDeque::new(),
            next_send: 0,
            subscribing: None,
            disconnecting: None,
            reconnect_at: None,
            paused: false,
            closed: false,
            errors_sent: 0,
            actions: VecDeque::new(),
            notes: VecDeque::new(),
        }
    }

    // --- getters ---------------------------------------------------------------------

    /// Whether the driver should read more from the client. False while the session
    /// waits for answers with frames still buffered, and once it closes.
    #[must_use]
    pub fn wants_input(&self) -> bool {
        !self.closed && !self.paused && self.disconnecting.is_none()
    }

    /// Whether the session has decided to close.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// SENDs handed to the service and not answered yet.
    #[must_use]
    pub fn sends_pending(&self) -> usize {
        self.sends.iter().filter(|s| s.outcome.is_none()).count()
    }

    /// Open subscriptions, the errors queue included.
    #[must_use]
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.len()
    }

    // --- inputs ----------------------------------------------------------------------

    /// Bytes from one WebSocket message (text or binary).
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        if self.closed {
            return;
        }
        if let Phase::Connected {
            heartbeat,
            last_input,
            ..
        } = &mut self.phase
        {
            heartbeat.on_bytes_received(now);
            *last_input = now;
        }
        self.decoder.feed(bytes);
        self.decode();
    }

    /// The client closed the WebSocket.
    pub fn handle_client_closed(&mut self) {
        self.close(CloseReason::ClientClosed);
    }

    /// A text WebSocket message was not UTF-8: an ERROR saying so, then a close (the
    /// driver closes the WebSocket with 1007).
    pub fn handle_invalid_text(&mut self) {
        if self.closed {
            return;
        }
        self.error_and_close(
            CloseReason::InvalidText,
            "a text WebSocket message was not valid UTF-8; send STOMP frames as UTF-8 text or as binary messages",
        );
    }

    /// The socket failed under the session.
    pub fn handle_connection_lost(&mut self) {
        self.close(CloseReason::ConnectionLost);
    }

    /// Bytes were written to the client at `now` (anything written counts as a
    /// heart-beat).
    pub fn handle_written(&mut self, now: Instant) {
        if let Phase::Connected { heartbeat, .. } = &mut self.phase {
            heartbeat.on_bytes_sent(now);
        }
    }

    /// The authenticator's answer to [`Action::Authenticate`]: CONNECTED, or an ERROR
    /// saying why and a close.
    pub fn handle_authenticated(&mut self, result: Result<Authenticated, String>, now: Instant) {
        let Phase::Authenticating {
            version,
            client_heartbeat,
            ref login,
            ref nickname,
            ..
        } = self.phase
        else {
            return;
        };
        let (login, nickname) = (login.clone(), nickname.clone());
        let authenticated = match result {
            Ok(authenticated) => authenticated,
            Err(why) => {
                self.error_and_close(CloseReason::Unauthenticated, &why);
                return;
            }
        };
        let server = self.config.server_heartbeat;
        let negotiated = heartbeat::negotiate(client_heartbeat, server);
        let mut connected = Frame::new(Command::Connected)
            .with_header("version", version.as_str())
            .with_header("heart-beat", server.to_header_value())
            .with_header(
                "server",
                concat!("chat-service/", env!("CARGO_PKG_VERSION")),
            )
            .with_header(
                "session",
                format!("{}-{}", self.config.instance, self.connection.0),
            );
        if let Caller::User(identity) = authenticated.caller.as_ref() {
            connected = connected.with_header("user-name", identity.user.to_string());
        }
        let member = Member::of(&authenticated.caller, login.as_deref(), nickname.as_deref());
        self.phase = Phase::Connected {
            heartbeat: HeartBeatMonitor::new(negotiated, now, self.config.heartbeat_grace),
            member,
            caller: authenticated.caller,
            expires_at: authenticated.expires_at,
            last_input: now,
        };
        self.write_frame(&connected);
        self.decode();
    }

    /// The delivery engine's answer to [`Action::Subscribe`].
    pub fn handle_subscribed(&mut self, result: Result<(), ChatError>) {
        let Some(pending) = self.subscribing.take() else {
            return;
        };
        match result {
            Ok(()) => {
                self.subscriptions.insert(pending.id, pending.target);
                if let Target::Room(room) = pending.target {
                    self.room_subscription_opened(room);
                }
                self.notes.push_back(Note::SubscriptionOpened);
                // The RECEIPT says "subscribed"; a resume's history follows it.
                self.receipt(pending.receipt.as_deref());
            }
            Err(error) => self.app_error(&error.into(), pending.receipt.as_deref()),
        }
        self.decode();
    }

    /// The chat service's answer to [`Action::Send`]: `Ok` once the message is stored.
    pub fn handle_send_done(&mut self, id: SendId, result: Result<(), ChatError>) {
        if let Some(send) = self.sends.iter_mut().find(|s| s.id == id) {
            send.outcome = Some(result.map_err(AppError::from));
        }
        self.answer_sends();
        self.decode();
    }

    /// The caller lost access to `room` (removed from its members): every subscription to
    /// it ends now, and the client hears why on `/user/queue/errors` (`FORBIDDEN`). The
    /// connection and its other subscriptions carry on.
    pub fn handle_revoked(&mut self, room: RoomId) {
        if self.closed {
            return;
        }
        let mut ended: Vec<Arc<str>> = self
            .subscriptions
            .iter()
            .filter(|(_, target)| match target {
                Target::Room(r) => *r == room,
                Target::Watch(topic) => topic.room() == Some(room),
                Target::Errors => false,
            })
            .map(|(id, _)| id.clone())
            .collect();
        if ended.is_empty() {
            return;
        }
        ended.sort();
        for id in &ended {
            if let Some(target) = self.subscriptions.remove(id) {
                self.notes.push_back(Note::SubscriptionClosed);
                self.end_subscription(id.clone(), target);
            }
        }
        let ids: Vec<&str> = ended.iter().map(AsRef::as_ref).collect();
        let error = AppError {
            code: "FORBIDDEN",
            message: format!(
                "you are no longer a member of room {room}; subscription {} to it ended",
                ids.join(", ")
            ),
        };
        self.app_error(&error, None);
    }

    /// The engine lets this connection go.
    pub fn handle_evicted(&mut self, reason: &DisconnectReason) {
        if self.closed {
            return;
        }
        let message = match reason {
            DisconnectReason::SlowConsumer => "slow consumer: this client fell too far behind and was disconnected; reconnect and resubscribe with x-resume-after to catch up".to_owned(),
            DisconnectReason::ReplayFailed(why) => format!("the history for x-resume-after could not be read ({why}); reconnect and resubscribe with the same x-resume-after"),
        };
        self.error_and_close(CloseReason::SlowConsumer, &message);
    }

    /// The instance drains: keep serving until `now + delay`, then tell the client to
    /// reconnect elsewhere and close.
    pub fn handle_shutdown(&mut self, delay: Duration, now: Instant) {
        if self.reconnect_at.is_none() {
            self.reconnect_at = Some(now + delay);
        }
    }

    /// Time passed; call at [`poll_timeout`](Self::poll_timeout) (earlier is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        if self.reconnect_at.is_some_and(|at| now >= at) {
            self.error_and_close(
                CloseReason::ServerShutdown,
                "the server is shutting down; reconnect to continue",
            );
            return;
        }
        if let Phase::Connected {
            expires_at: Some(at),
            ..
        } = self.phase
            && now >= at
        {
            self.error_and_close(
                CloseReason::TokenExpired,
                "your token expired; reconnect with a fresh token and resubscribe with x-resume-after to miss nothing",
            );
            return;
        }
        let paused = self.paused;
        let verdict = match &mut self.phase {
            Phase::AwaitingConnect { deadline } | Phase::Authenticating { deadline, .. }
                if now >= *deadline =>
            {
                Err(violation("no CONNECT frame received in time; closing"))
            }
            Phase::AwaitingConnect { .. } | Phase::Authenticating { .. } => Ok(false),
            Phase::Connected {
                heartbeat,
                last_input,
                ..
            } => {
                if paused {
                    // Not reading is our choice, not the client's silence.
                    heartbeat.on_bytes_received(now);
                    *last_input = now;
                }
                let idle = self.config.idle_timeout;
                if now.saturating_duration_since(*last_input) >= idle {
                    Err(ProtocolError::Idle(idle))
                } else {
                    match heartbeat.poll(now) {
                        HeartBeatAction::Idle => Ok(false),
                        HeartBeatAction::SendHeartBeat => Ok(true),
                        HeartBeatAction::PeerTimedOut => Err(ProtocolError::HeartbeatTimeout),
                    }
                }
            }
        };
        match verdict {
            Ok(false) => {}
            Ok(true) => self
                .actions
                .push_back(Action::Write(HEARTBEAT_EOL.to_vec())),
            Err(error) => self.fail(&error),
        }
    }

    // --- outputs ---------------------------------------------------------------------

    /// The next thing to do, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next thing to count.
    pub fn poll_note(&mut self) -> Option<Note> {
        self.notes.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due; `None`: never.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let timer = match &self.phase {
            Phase::AwaitingConnect { deadline } | Phase::Authenticating { deadline, .. } => {
                Some(*deadline)
            }
            Phase::Connected {
                heartbeat,
                expires_at,
                last_input,
                ..
            } => [
                heartbeat.next_deadline(),
                *expires_at,
                last_input.checked_add(self.config.idle_timeout),
            ]
            .into_iter()
            .flatten()
            .min(),
        };
        match (timer, self.reconnect_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // --- frames in -------------------------------------------------------------------

    fn decode(&mut self) {
        loop {
            if self.closed || self.disconnecting.is_some() {
                return;
            }
            if self.subscribing.is_some()
                || matches!(self.phase, Phase::Authenticating { .. })
                || self.sends.len() >= self.config.max_sends_in_flight
            {
                self.paused = true;
                return;
            }
            match self.decoder.next_item() {
                Ok(None) => {
                    self.paused = false;
                    return;
                }
                Ok(Some(Item::HeartBeat)) => {}
                Ok(Some(Item::Frame(frame))) => {
                    if let Err(error) = self.on_frame(frame) {
                        self.fail(&error);
                    }
                }
                Err(error) => self.fail(&error.into()),
            }
        }
    }

    fn on_frame(&mut self, frame: Frame) -> Result<(), ProtocolError> {
        self.notes.push_back(Note::FrameReceived(frame.command));
        let connected = matches!(self.phase, Phase::Connected { .. });
        match frame.command {
            Command::Connect | Command::Stomp if !connected => self.on_connect(&frame),
            Command::Connect | Command::Stomp => Err(violation(
                "this session is already connected; CONNECT was sent twice",
            )),
            _ if !connected => Err(violation(format!(
                "{} before CONNECT: the first frame of a session must be CONNECT or STOMP",
                frame.command.as_str()
            ))),
            Command::Subscribe => self.on_subscribe(&frame),
            Command::Unsubscribe => self.on_unsubscribe(&frame),
            Command::Send => self.on_send(&frame),
            Command::Ack | Command::Nack => {
                // Subscriptions are ack:auto; acknowledgements are accepted and do nothing.
                self.receipt(frame.header("receipt"));
                Ok(())
            }
            Command::Disconnect => {
                // Answered once the SENDs before it are, so its RECEIPT means "all stored".
                self.disconnecting = Some(frame.header("receipt").map(str::to_owned));
                self.answer_sends();
                Ok(())
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

    fn on_connect(&mut self, frame: &Frame) -> Result<(), ProtocolError> {
        let Phase::AwaitingConnect { deadline } = self.phase else {
            return Err(violation(
                "this session is already connected; CONNECT was sent twice",
            ));
        };
        let Some(version) = version::negotiate(frame.header("accept-version")) else {
            return Err(violation(
                "no common STOMP version: this server supports 1.0, 1.1 and 1.2",
            ));
        };
        let client_heartbeat = match frame.header("heart-beat") {
            Some(value) => HeartBeat::parse(value).map_err(|e| violation(e.to_string()))?,
            None => HeartBeat::DISABLED,
        };
        let credential = frame
            .header("Authorization")
            .or_else(|| frame.header("authorization"))
            .map(|value| bearer_token(value).to_owned())
            .or_else(|| frame.header("passcode").map(str::to_owned))
            .or_else(|| self.upgrade_credential.take());
        self.phase = Phase::Authenticating {
            deadline,
            version,
            client_heartbeat,
            login: frame.header("login").map(str::to_owned),
            nickname: frame.header("x-nickname").map(str::to_owned),
        };
        self.actions.push_back(Action::Authenticate { credential });
        Ok(())
    }

    fn on_subscribe(&mut self, frame: &Frame) -> Result<(), ProtocolError> {
        let id: Arc<str> = Arc::from(required(frame, "id")?);
        let destination = required(frame, "destination")?;
        let receipt = frame.header("receipt");
        if id.len() > self.config.max_subscription_id_bytes {
            let error = AppError {
                code: "INVALID_SUBSCRIPTION_ID",
                message: format!(
                    "subscription ids are at most {} bytes, this one has {}",
                    self.config.max_subscription_id_bytes,
                    id.len()
                ),
            };
            self.app_error(&error, receipt);
            return Ok(());
        }
        if self.subscriptions.contains_key(&id) {
            let error = AppError {
                code: "DUPLICATE_SUBSCRIPTION",
                message: format!("subscription id {id:?} is already in use on this connection"),
            };
            self.app_error(&error, receipt);
            return Ok(());
        }
        if self.subscriptions.len() >= self.config.max_subscriptions {
            let error = AppError {
                code: "TOO_MANY_SUBSCRIPTIONS",
                message: format!(
                    "a connection holds at most {} subscriptions; UNSUBSCRIBE one first",
                    self.config.max_subscriptions
                ),
            };
            self.app_error(&error, receipt);
            return Ok(());
        }
        if destination == destination::ERRORS {
            self.subscriptions.insert(id.clone(), Target::Errors);
            self.errors_subscription = Some(id);
            self.notes.push_back(Note::SubscriptionOpened);
            self.receipt(receipt);
            return Ok(());
        }
        let topic = if destination == destination::READ_QUEUE {
            match self.member() {
                Some(member) => Some(Topic::Reads(member.user)),
                None => {
                    self.app_error(&identity_required(), receipt);
                    return Ok(());
                }
            }
        } else {
            destination::parse_presence(destination)
                .map(Topic::Presence)
                .or_else(|| destination::parse_typing(destination).map(Topic::Typing))
        };
        if let Some(topic) = topic {
            self.subscribing = Some(PendingSubscribe {
                id: id.clone(),
                target: Target::Watch(topic),
                receipt: receipt.map(str::to_owned),
            });
            let key = SubscriptionKey {
                connection: self.connection,
                id,
            };
            self.actions.push_back(Action::Watch { key, topic });
            return Ok(());
        }
        let Some(room) = destination::parse_room(destination) else {
            let error = AppError {
                code: "UNKNOWN_DESTINATION",
                message: format!(
                    "cannot subscribe to {destination:?}: use {p}{{roomId}}, {p}{{roomId}}{}, {p}{{roomId}}{}, {} or {}",
                    destination::PRESENCE_SUFFIX,
                    destination::TYPING_SUFFIX,
                    destination::ERRORS,
                    destination::READ_QUEUE,
                    p = destination::ROOM_PREFIX,
                ),
            };
            self.app_error(&error, receipt);
            return Ok(());
        };
        let resume_after = match frame.header("x-resume-after").map(str::parse::<i64>) {
            None => None,
            Some(Ok(seq)) if seq >= 0 => Some(Seq(seq)),
            Some(_) => {
                let error = AppError {
                    code: "INVALID_RESUME",
                    message: "x-resume-after must be a non-negative seq".to_owned(),
                };
                self.app_error(&error, receipt);
                return Ok(());
            }
        };
        let key = SubscriptionKey {
            connection: self.connection,
            id: id.clone(),
        };
        self.subscribing = Some(PendingSubscribe {
            id,
            target: Target::Room(room),
            receipt: receipt.map(str::to_owned),
        });
        self.actions.push_back(Action::Subscribe {
            key,
            room,
            resume_after,
        });
        Ok(())
    }

    fn on_unsubscribe(&mut self, frame: &Frame) -> Result<(), ProtocolError> {
        let id = required(frame, "id")?;
        if let Some((id, target)) = self.subscriptions.remove_entry(id) {
            self.notes.push_back(Note::SubscriptionClosed);
            self.end_subscription(id, target);
        }
        self.receipt(frame.header("receipt"));
        Ok(())
    }

    fn on_send(&mut self, frame: &Frame) -> Result<(), ProtocolError> {
        let destination = required(frame, "destination")?;
        self.notes.push_back(Note::SendReceived);
        let id = SendId(self.next_send);
        self.next_send += 1;
        let mut send = PendingSend {
            id,
            receipt: frame.header("receipt").map(str::to_owned),
            outcome: None,
        };
        if destination == destination::TYPING_SEND || destination == destination::READ_SEND {
            match self.signal_action(id, destination, &frame.body) {
                Ok(action) => self.actions.push_back(action),
                Err(error) => send.outcome = Some(Err(error)),
            }
        } else if destination != destination::SEND {
            send.outcome = Some(Err(AppError {
                code: "UNKNOWN_DESTINATION",
                message: format!(
                    "cannot send to {destination:?}: chat messages go to {}, typing to {}, read cursors to {}",
                    destination::SEND,
                    destination::TYPING_SEND,
                    destination::READ_SEND,
                ),
            }));
        } else {
            let parsed = ChatMessageRequest::from_json(&frame.body).and_then(|request| {
                let key = frame
                    .header("x-idempotency-key")
                    .map(IdempotencyKey::parse)
                    .transpose()?;
                Ok((request, key))
            });
            match parsed {
                Ok((request, idempotency_key)) => {
                    let caller = match &self.phase {
                        Phase::Connected { caller, .. } => caller.clone(),
                        _ => Arc::new(Caller::Open),
                    };
                    self.actions.push_back(Action::Send {
                        id,
                        caller,
                        request,
                        idempotency_key,
                    });
                }
                Err(invalid) => send.outcome = Some(Err(ChatError::Invalid(invalid).into())),
            }
        }
        // Queued in arrival order, answered or not, so RECEIPTs and errors go out in the
        // order the SENDs came in.
        self.sends.push_back(send);
        self.answer_sends();
        Ok(())
    }

    /// The typing or read-cursor SEND `body` names: what to do, or why not.
    fn signal_action(
        &self,
        id: SendId,
        destination: &str,
        body: &[u8],
    ) -> Result<Action, AppError> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Body {
            chat_room_id: Option<i64>,
            seq: Option<i64>,
        }
        let member = self.member().cloned().ok_or_else(identity_required)?;
        let invalid = |e: ValidationError| AppError::from(ChatError::Invalid(e));
        let body: Body = serde_json::from_slice(body)
            .map_err(|e| invalid(ValidationError::InvalidJson(e.to_string())))?;
        let room = RoomId(
            body.chat_room_id
                .ok_or_else(|| invalid(ValidationError::MissingField("chatRoomId")))?,
        );
        if destination == destination::TYPING_SEND {
            return Ok(Action::Typing { id, member, room });
        }
        match body.seq {
            None => Err(invalid(ValidationError::MissingField("seq"))),
            Some(seq) if seq < 0 => Err(AppError {
                code: "INVALID_SEQ",
                message: "seq is a message's position in its room, 0 or more".to_owned(),
            }),
            Some(seq) => Ok(Action::Read {
                id,
                member,
                room,
                seq: Seq(seq),
            }),
        }
    }

    /// Who this session is for presence, typing and read cursors, once connected.
    #[must_use]
    pub fn member(&self) -> Option<&Member> {
        match &self.phase {
            Phase::Connected { member, .. } => member.as_ref(),
            _ => None,
        }
    }

    /// A subscription was opened on `room`'s messages: the first one puts the
    /// connection in the room.
    fn room_subscription_opened(&mut self, room: RoomId) {
        let count = self.rooms.entry(room).or_default();
        *count += 1;
        if *count == 1
            && let Some(member) = self.member().cloned()
        {
            self.actions.push_back(Action::Enter { room, member });
        }
    }

    /// What ending subscription `id` on `target` takes: the engine or the driver lets go
    /// of it, the last one on a room takes the connection out of the room, and errors go
    /// to another errors subscription if there is one.
    fn end_subscription(&mut self, id: Arc<str>, target: Target) {
        let key = SubscriptionKey {
            connection: self.connection,
            id: id.clone(),
        };
        match target {
            Target::Room(room) => {
                self.actions.push_back(Action::Unsubscribe { key, room });
                if let Some(count) = self.rooms.get_mut(&room) {
                    *count -= 1;
                    if *count == 0 {
                        self.rooms.remove(&room);
                        if let Some(user) = self.member().map(|m| m.user) {
                            self.actions.push_back(Action::Leave { room, user });
                        }
                    }
                }
            }
            Target::Watch(topic) => self.actions.push_back(Action::Unwatch { key, topic }),
            Target::Errors => {
                // Errors go to the newest errors subscription; ending an older one
                // changes nothing, ending that one hands them to another if any.
                if self.errors_subscription.as_ref() == Some(&id) {
                    self.errors_subscription = self
                        .subscriptions
                        .iter()
                        .find(|(_, target)| matches!(target, Target::Errors))
                        .map(|(other, _)| other.clone());
                }
            }
        }
    }

    /// Answers the SENDs at the front whose outcome is known, then a DISCONNECT that waits
    /// for them.
    fn answer_sends(&mut self) {
        while self.sends.front().is_some_and(|s| s.outcome.is_some()) {
            let Some(PendingSend {
                receipt,
                outcome: Some(outcome),
                ..
            }) = self.sends.pop_front()
            else {
                break;
            };
            match outcome {
                Ok(()) => self.receipt(receipt.as_deref()),
                Err(error) => self.app_error(&error, receipt.as_deref()),
            }
        }
        if self.sends.is_empty()
            && !self.closed
            && let Some(receipt) = self.disconnecting.take()
        {
            self.receipt(receipt.as_deref());
            self.close(CloseReason::ClientClosed);
        }
    }

    // --- frames out ------------------------------------------------------------------

    fn write_frame(&mut self, frame: &Frame) {
        let mut bytes = Vec::with_capacity(128 + frame.body.len());
        encode(frame, &mut bytes);
        self.notes.push_back(Note::FrameSent(frame.command));
        self.actions.push_back(Action::Write(bytes));
    }

    fn receipt(&mut self, receipt: Option<&str>) {
        if let Some(id) = receipt {
            let frame = Frame::new(Command::Receipt).with_header("receipt-id", id);
            self.write_frame(&frame);
        }
    }

    /// A MESSAGE on the client's `/user/queue/errors` subscription; without one the
    /// client asked not to hear about errors, so only the count sees it.
    fn app_error(&mut self, error: &AppError, receipt: Option<&str>) {
        self.notes.push_back(Note::Rejected(error.code));
        let Some(subscription) = self.errors_subscription.clone() else {
            return;
        };
        self.errors_sent += 1;
        let body = serde_json::json!({
            "code": error.code,
            "message": error.message,
            "receiptId": receipt,
        });
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let frame = Frame::new(Command::Message)
            .with_header("subscription", subscription.as_ref())
            .with_header(
                "message-id",
                format!("error-{}-{}", self.connection.0, self.errors_sent),
            )
            .with_header("destination", destination::ERRORS)
            .with_header("content-type", "application/json")
            .with_header("content-length", body.len().to_string())
            .with_body(body);
        self.write_frame(&frame);
    }

    /// An ERROR frame, then the close. `x-close-reason` carries `reason`'s label, so a
    /// client can tell "reconnect and resume" (`server_shutdown`, `slow_consumer`,
    /// `token_expired`, `heartbeat_timeout`, `idle_timeout`) from "fix the client"
    /// (`protocol_error`, `unauthenticated`, `invalid_text`) without parsing the text.
    fn error_and_close(&mut self, reason: CloseReason, message: &str) {
        let frame = Frame::new(Command::Error)
            .with_header("message", message)
            .with_header("x-close-reason", reason.as_str())
            .with_header("content-type", "text/plain")
            .with_header("content-length", message.len().to_string())
            .with_body(message.as_bytes().to_vec());
        self.write_frame(&frame);
        self.close(reason);
    }

    fn fail(&mut self, error: &ProtocolError) {
        if self.closed {
            return;
        }
        let reason = match error {
            ProtocolError::HeartbeatTimeout => CloseReason::HeartbeatTimeout,
            ProtocolError::Idle(_) => CloseReason::IdleTimeout,
            _ => CloseReason::ProtocolError,
        };
        self.error_and_close(reason, &error.to_string());
    }

    fn close(&mut self, reason: CloseReason) {
        if !self.closed {
            self.closed = true;
            // The connection leaves every room it was in before it goes.
            if let Some(user) = self.member().map(|m| m.user) {
                let mut rooms: Vec<RoomId> = self.rooms.keys().copied().collect();
                rooms.sort();
                for room in rooms {
                    self.actions.push_back(Action::Leave { room, user });
                }
            }
            self.rooms.clear();
            self.actions.push_back(Action::Close(reason));
        }
    }
}

fn identity_required() -> AppError {
    AppError {
        code: "IDENTITY_REQUIRED",
        message: "this needs to know who you are: sign in with a token, or in open mode send CONNECT with a numeric `login` header (and optionally `x-nickname`)".to_owned(),
    }
}

fn required<'f>(frame: &'f Frame, name: &str) -> Result<&'f str, ProtocolError> {
    frame.header(name).ok_or_else(|| {
        violation(format!(
            "{} without the required `{name}` header",
            frame.command.as_str()
        ))
    })
}

/// The token of an `Authorization` value: after `Bearer ` (any case), or the whole value.
#[must_use]
pub fn bearer_token(value: &str) -> &str {
    let value = value.trim();
    match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => value[7..].trim_start(),
        _ => value,
    }
}
