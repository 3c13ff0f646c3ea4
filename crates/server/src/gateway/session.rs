//! The shell around one [`chat_session::Session`]: it moves bytes between the WebSocket and
//! the session, carries out what the session decides (writes, subscriptions in the hub,
//! sends through the chat service) and feeds the answers and the time back. It decides
//! nothing itself.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chat_domain::{
    Caller, ChatError, ChatMessageRequest, ControlEvent, IdempotencyKey, Operation, RoomId,
    SenderId, Seq,
};
use chat_session::{Action, Authenticated, CloseReason, Member, Note, SendId, Session, Topic};
use futures_util::stream::FuturesUnordered;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::context::GatewayContext;
use super::hub::{ConnectionId, Outbound, Outbox, sleep_until_some};
use super::revocations::{RevokedSender, revocable};
use crate::metrics::Metrics;

/// The upgraded connection a raw WebSocket session runs on.
pub(crate) type WebSocket = WebSocketStream<TokioIo<Upgraded>>;

/// What a session reads: WebSocket messages, whatever carries them (a raw WebSocket, or a
/// SockJS transport that unwraps its frames into the same messages).
pub(crate) trait Incoming:
    Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin + Send
{
}
impl<T> Incoming for T where
    T: Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin + Send
{
}

/// Where a session writes: text messages with STOMP frames, then a Close.
pub(crate) trait Outgoing:
    Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin + Send
{
}
impl<T> Outgoing for T where
    T: Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin + Send
{
}

/// Bytes gathered into one WebSocket message when many MESSAGEs are waiting.
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// How long a closing session waits for the client's Close reply.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

type SendDone = (SendId, Result<(), ChatError>);
type PendingSend = Pin<Box<dyn Future<Output = SendDone> + Send>>;

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// The monotonic instant at which wall-clock `at` arrives (now, if it has passed).
fn until_instant(at: std::time::SystemTime) -> std::time::Instant {
    let left = at
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    now() + left
}

/// The I/O half of a session.
struct Shell<W> {
    context: Arc<GatewayContext>,
    outbox: Arc<Outbox>,
    sink: W,
    /// The socket failed; nothing more is written to it.
    broken: bool,
    sends: FuturesUnordered<PendingSend>,
    connection: ConnectionId,
    /// Who the session authenticated, once it has.
    caller: Option<Arc<Caller>>,
    /// Where the revocations reach this session, and what it registered there.
    revoked: RevokedSender,
    watched: Vec<(RoomId, SenderId)>,
    /// The topics this connection watches (presence, typing, its user's queues).
    topics: Vec<Topic>,
    /// The rooms this connection is in, for presence.
    present: Vec<(RoomId, SenderId)>,
    /// SENDs per second this connection may make (`None`: unlimited).
    send_rate: Option<governor::DefaultDirectRateLimiter>,
}

/// Runs one session until the client leaves, breaks the protocol, falls too far behind or
/// the instance shuts down.
pub(crate) async fn run(
    sink: impl Outgoing,
    mut stream: impl Incoming,
    context: Arc<GatewayContext>,
    connection: ConnectionId,
    upgrade_credential: Option<String>,
) {
    let (outbox, mut queue) = Outbox::new(context.outbound_queue, context.outbound_queue_bytes);
    let mut shutdown = context.shutdown.clone();
    let mut session = Session::new(
        context.session.clone(),
        connection,
        upgrade_credential,
        now(),
    );
    let metrics = context.metrics.clone();
    metrics.connections_opened.inc();
    metrics.connections_current.inc();
    let (revoked, mut revocations) = mpsc::unbounded_channel();
    let send_rate = context.send_rate.map(governor::RateLimiter::direct);
    let mut shell = Shell {
        context,
        outbox,
        sink,
        broken: false,
        sends: FuturesUnordered::new(),
        connection,
        caller: None,
        revoked,
        watched: Vec::new(),
        topics: Vec::new(),
        present: Vec::new(),
        send_rate,
    };
    let mut draining = false;
    let reason = loop {
        if let Some(reason) = shell.carry_out(&mut session).await {
            break reason;
        }
        let deadline = session.poll_timeout().map(Instant::from_std);
        let outbox = shell.outbox.clone();
        tokio::select! {
            _ = async { shutdown.wait_for(|stopping| *stopping).await.map(|_| ()) }, if !draining => {
                draining = true;
                session.handle_shutdown(shell.context.lifecycle.reconnect_delay(), now());
            }
            why = outbox.evicted() => {
                session.handle_evicted(&crate::incident::conceal_disconnect(why));
            }
            Some(room) = revocations.recv() => session.handle_revoked(room),
            Some(item) = queue.recv() => {
                if shell.write_queued(item, &mut queue).await {
                    session.handle_written(now());
                } else {
                    session.handle_connection_lost();
                }
            }
            incoming = stream.next(), if session.wants_input() => match incoming {
                Some(Ok(Message::Text(text))) => session.handle_input(text.as_bytes(), now()),
                Some(Ok(Message::Binary(bytes))) => session.handle_input(&bytes, now()),
                // Pings are answered by tungstenite itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | None => session.handle_client_closed(),
                Some(Err(tokio_tungstenite::tungstenite::Error::Utf8(_))) => {
                    session.handle_invalid_text();
                }
                Some(Err(error)) => {
                    tracing::debug!(%error, "websocket read failed");
                    session.handle_connection_lost();
                }
            },
            Some((id, result)) = shell.sends.next(), if !shell.sends.is_empty() => {
                session.handle_send_done(id, result);
            }
            () = sleep_until_some(deadline) => session.handle_timeout(now()),
        }
    };
    shell.context.hub.disconnect(connection);
    shell.context.revocations.forget(connection, &shell.watched);
    shell.context.topics.forget(connection, &shell.topics);
    // The session leaves its rooms as it closes; this only covers what it could not say.
    for (room, user) in std::mem::take(&mut shell.present) {
        shell.context.topics.leave(room, user);
    }
    // Let already accepted SENDs finish storing before the socket goes: a message whose
    // RECEIPT could still be sent should not be cut off half-way.
    while let Some((id, result)) = shell.sends.next().await {
        session.handle_send_done(id, result);
        let _ = shell.carry_out(&mut session).await;
    }
    shell.close(&mut stream, reason).await;
    metrics.connections_current.dec();
    metrics.connection_closed(reason);
    metrics
        .subscriptions_current
        .dec_by(i64::try_from(session.subscription_count()).unwrap_or(0));
    tracing::debug!(
        connection = connection.0,
        reason = reason.as_str(),
        "session ended"
    );
}

impl<W: Outgoing> Shell<W> {
    /// Carries out everything the session decided; returns the close reason once it has
    /// decided to close.
    async fn carry_out(&mut self, session: &mut Session) -> Option<CloseReason> {
        let mut closing = None;
        while let Some(action) = session.poll_action() {
            match action {
                Action::Write(bytes) => {
                    if self.write(bytes).await {
                        session.handle_written(now());
                    } else {
                        session.handle_connection_lost();
                    }
                }
                Action::Authenticate { credential } => {
                    let verified = self
                        .context
                        .auth
                        .verify(credential.as_deref())
                        .map(|verified| Authenticated {
                            caller: Arc::new(verified.caller),
                            expires_at: verified.expires_at.map(until_instant),
                        })
                        .map_err(|error| error.to_string());
                    match &verified {
                        Ok(authenticated) => self.caller = Some(authenticated.caller.clone()),
                        Err(_) => self.context.metrics.rejected("UNAUTHENTICATED"),
                    }
                    session.handle_authenticated(verified, now());
                }
                Action::Subscribe {
                    key,
                    room,
                    resume_after,
                } => {
                    let answer = self.subscribe(key, room, resume_after).await;
                    session.handle_subscribed(
                        answer.map_err(|e| crate::incident::conceal(e, "a SUBSCRIBE")),
                    );
                }
                Action::Unsubscribe { key, room } => self.context.hub.unsubscribe(key, room),
                Action::Watch { key, topic } => {
                    let answer = self.watch(key, topic).await;
                    session.handle_subscribed(
                        answer.map_err(|e| crate::incident::conceal(e, "a SUBSCRIBE")),
                    );
                }
                Action::Unwatch { key, topic } => {
                    self.context.topics.unwatch(key.connection, &key.id, topic);
                }
                Action::Enter { room, member } => {
                    self.context.topics.enter(room, &member);
                    self.present.push((room, member.user));
                }
                Action::Leave { room, user } => {
                    if let Some(at) = self.present.iter().position(|p| *p == (room, user)) {
                        self.present.swap_remove(at);
                        self.context.topics.leave(room, user);
                    }
                }
                Action::Typing { id, member, room } => self.start_typing(id, member, room),
                Action::Read {
                    id,
                    member,
                    room,
                    seq,
                } => self.start_read(id, &member, room, seq),
                Action::Send {
                    id,
                    caller,
                    request,
                    idempotency_key,
                } => self.start_send(id, caller, request, idempotency_key),
                Action::Close(reason) => closing = Some(reason),
            }
        }
        count(&self.context.metrics, session);
        closing
    }

    /// Checks access (the replay of a resume is covered by the same check), registers a
    /// subscription that a removal from the room's members must end, then subscribes in
    /// the hub.
    async fn subscribe(
        &mut self,
        key: super::hub::SubscriptionKey,
        room: RoomId,
        resume_after: Option<chat_domain::Seq>,
    ) -> Result<(), ChatError> {
        self.authorize_read(room).await?;
        self.context
            .hub
            .subscribe(key, room, self.outbox.clone(), resume_after)
            .await
    }

    /// A presence, typing or per-user subscription: the room's topics need read access
    /// (and end with it, like the room's own subscriptions).
    async fn watch(
        &mut self,
        key: super::hub::SubscriptionKey,
        topic: Topic,
    ) -> Result<(), ChatError> {
        if let Some(room) = topic.room() {
            self.authorize_read(room).await?;
        }
        self.context
            .topics
            .watch(key.connection, key.id, topic, self.outbox.clone());
        if !self.topics.contains(&topic) {
            self.topics.push(topic);
        }
        Ok(())
    }

    fn caller(&self) -> Arc<Caller> {
        self.caller
            .clone()
            .unwrap_or_else(|| Arc::new(Caller::Open))
    }

    /// Checks that the caller may read `room`, and registers what a removal from the
    /// room's members must end.
    async fn authorize_read(&mut self, room: RoomId) -> Result<(), ChatError> {
        let caller = self.caller();
        let found = self
            .context
            .service
            .authorize(&caller, room, Operation::Read)
            .await?;
        if let Some(user) = revocable(&caller, &found) {
            self.context.revocations.watch(
                room,
                user,
                self.connection,
                caller.clone(),
                self.revoked.clone(),
            );
            if !self.watched.contains(&(room, user)) {
                self.watched.push((room, user));
            }
            // A removal that landed between the check and the registration found nothing
            // to end; asking again now sees it (its cache entry went before the watches).
            self.context
                .service
                .authorize(&caller, room, Operation::Read)
                .await?;
        }
        Ok(())
    }

    /// Typing: checked like a send, then published at most once per second per user and
    /// room (the rest are dropped without a word); never stored. The RECEIPT does not wait
    /// for the bus.
    fn start_typing(&self, id: SendId, member: Member, room: RoomId) {
        if self.refused_over_rate(id) {
            return;
        }
        let service = self.context.service.clone();
        let topics = self.context.topics.clone();
        let metrics = self.context.metrics.clone();
        let caller = self.caller();
        self.sends.push(Box::pin(async move {
            let allowed = service.authorize(&caller, room, Operation::Write).await;
            if allowed.is_ok() && topics.may_announce_typing(room, member.user) {
                metrics.typing_sent.inc();
                let bus = service.bus().clone();
                tokio::spawn(async move {
                    let event = ControlEvent::Typing {
                        chat_room_id: room,
                        user_id: member.user,
                        nickname: member.nickname,
                    };
                    if let Err(error) = bus.publish_control(&event).await {
                        tracing::debug!(%error, "a typing event was not published");
                    }
                });
            }
            let result = allowed
                .map(|_| ())
                .map_err(|e| crate::incident::conceal(e, "a typing SEND"));
            (id, result)
        }));
    }

    /// A read cursor: stored (in a batch with others), then every session of the user
    /// hears it through the bus.
    fn start_read(&self, id: SendId, member: &Member, room: RoomId, seq: Seq) {
        if self.refused_over_rate(id) {
            return;
        }
        let service = self.context.service.clone();
        let caller = self.caller();
        let user = member.user;
        self.sends.push(Box::pin(async move {
            let result = service
                .mark_read(&caller, user, room, seq)
                .await
                .map(|_| ())
                .map_err(|e| crate::incident::conceal(e, "a read cursor"));
            (id, result)
        }));
    }

    /// Every SEND (chat message, typing, read cursor) counts against the connection's
    /// rate: each costs an access check and most a write. Over it, the SEND is answered
    /// `RATE_LIMITED` in its turn and nothing is done.
    fn refused_over_rate(&self, id: SendId) -> bool {
        let Some(limiter) = &self.send_rate else {
            return false;
        };
        if limiter.check().is_ok() {
            return false;
        }
        let refused = Err(ChatError::RateLimited(format!(
            "more than {} SENDs per second on this connection; slow down",
            self.context.send_rate_per_sec
        )));
        self.sends.push(Box::pin(std::future::ready((id, refused))));
        true
    }

    /// session → service → store → bus, then the hub delivers it here in seq order.
    fn start_send(
        &self,
        id: SendId,
        caller: Arc<Caller>,
        request: ChatMessageRequest,
        idempotency_key: Option<IdempotencyKey>,
    ) {
        if self.refused_over_rate(id) {
            return;
        }
        let service = self.context.service.clone();
        let hub = self.context.hub.clone();
        self.sends.push(Box::pin(async move {
            let result = service.send_as(&caller, request, idempotency_key).await;
            // Delivered as soon as it is committed, not when its turn for a RECEIPT comes;
            // the hub puts it in seq order.
            if let Ok(sent) = &result {
                hub.deliver_stored(sent);
            }
            let result = result
                .map(|_| ())
                .map_err(|e| crate::incident::conceal(e, "a SEND"));
            (id, result)
        }));
    }

    /// Writes one queued MESSAGE and whatever else is already waiting, as one WebSocket
    /// message: fewer syscalls and WebSocket frames under load, no added latency when idle.
    async fn write_queued(
        &mut self,
        first: Outbound,
        queue: &mut mpsc::Receiver<Outbound>,
    ) -> bool {
        let mut out = Vec::with_capacity(first.prepared.encoded_len_hint() + 64);
        let mut frames = 1;
        self.outbox.taken(&first);
        first
            .prepared
            .write_for_subscription(&first.subscription, &mut out);
        while out.len() < WRITE_BATCH_BYTES {
            let Ok(next) = queue.try_recv() else { break };
            frames += 1;
            self.outbox.taken(&next);
            next.prepared
                .write_for_subscription(&next.subscription, &mut out);
        }
        self.context.metrics.message_frames_sent.inc_by(frames);
        self.write(out).await
    }

    /// False once the socket has failed.
    async fn write(&mut self, bytes: Vec<u8>) -> bool {
        if self.broken {
            return false;
        }
        // Everything we write is UTF-8 (JSON bodies, our own headers), so it goes as text,
        // as STOMP-over-WebSocket clients expect; binary only if a header ever was not.
        let message = match String::from_utf8(bytes) {
            Ok(text) => Message::text(text),
            Err(not_text) => Message::binary(not_text.into_bytes()),
        };
        // A client that stops reading fills its socket buffers and then every write
        // waits; past the write timeout the connection counts as lost.
        match tokio::time::timeout(self.context.write_timeout, self.sink.send(message)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(%error, "cannot write to the client");
                self.broken = true;
            }
            Err(_) => {
                tracing::debug!(
                    timeout = ?self.context.write_timeout,
                    "the client stopped reading; dropping the connection"
                );
                self.context.metrics.write_timeouts.inc();
                self.broken = true;
            }
        }
        !self.broken
    }

    /// A lingering close: send Close, then read (and drop) what the client still sends
    /// until its Close reply, for a bounded time. Dropping the socket with unread input
    /// makes the kernel answer with a TCP RST, and the client's kernel then discards the
    /// ERROR, RECEIPTs and Close frame it has not read yet.
    async fn close(&mut self, stream: &mut impl Incoming, reason: CloseReason) {
        if !self.broken {
            let code = match reason {
                CloseReason::InvalidText => CloseCode::Invalid,
                _ => CloseCode::Normal,
            };
            let frame = CloseFrame {
                code,
                reason: "".into(),
            };
            let _ = tokio::time::timeout(
                self.context.write_timeout,
                self.sink.send(Message::Close(Some(frame))),
            )
            .await;
            let _ = tokio::time::timeout(CLOSE_LINGER, async {
                while let Some(Ok(message)) = stream.next().await {
                    if message.is_close() {
                        break;
                    }
                }
            })
            .await;
        }
        let _ = tokio::time::timeout(CLOSE_LINGER, self.sink.close()).await;
    }
}

/// Brings the metrics up to date with what the session noted.
fn count(metrics: &Metrics, session: &mut Session) {
    while let Some(note) = session.poll_note() {
        match note {
            Note::FrameReceived(command) => metrics.frame_received(command.as_str()),
            Note::FrameSent(command) => metrics.frames_sent(command.as_str(), 1),
            Note::SendReceived => {
                metrics.messages_received.inc();
            }
            Note::Rejected(code) => metrics.rejected(code),
            Note::SubscriptionOpened => {
                metrics.subscriptions_current.inc();
            }
            Note::SubscriptionClosed => {
                metrics.subscriptions_current.dec();
            }
        }
    }
}
