//! Local fan-out: which connection of this instance follows which room, and delivery of
//! every bus message to them in `seq` order, exactly once, backfilling gaps from the
//! repository (spec §5). One task owns all of it, so there are no locks on the hot path.
//!
//! A MESSAGE is encoded once per chat message ([`PreparedMessage`]) and the bytes are
//! shared by every subscriber; each connection has a bounded queue, and a connection whose
//! queue is full is told to go (it can resume with `x-resume-after`) instead of stalling
//! the others.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chat_domain::{
    BusEvent, BusEvents, ChatError, ChatMessagePublish, HistoryLimit, HistoryQuery, MessageBus,
    MessageRepository, RoomId, RoomSequencer, Seq, SequenceDecision,
};
use chat_stomp::PreparedMessage;
use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc, oneshot};

/// A connection's id, unique within this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ConnectionId(pub(crate) u64);

/// A subscription: the connection and the client's `id` header.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SubscriptionKey {
    pub(crate) connection: ConnectionId,
    pub(crate) id: Arc<str>,
}

/// One MESSAGE for one subscription, waiting in a connection's queue.
#[derive(Debug)]
pub(crate) struct Outbound {
    pub(crate) prepared: Arc<PreparedMessage>,
    pub(crate) subscription: Arc<str>,
}

/// The sending side of a connection's bounded queue.
#[derive(Debug)]
pub(crate) struct Outbox {
    queue: mpsc::Sender<Outbound>,
    overflowed: AtomicBool,
    overflow: Notify,
}

impl Outbox {
    pub(crate) fn new(capacity: usize) -> (Arc<Self>, mpsc::Receiver<Outbound>) {
        let (queue, receiver) = mpsc::channel(capacity.max(1));
        let outbox = Self {
            queue,
            overflowed: AtomicBool::new(false),
            overflow: Notify::new(),
        };
        (Arc::new(outbox), receiver)
    }

    fn deliver(&self, item: Outbound) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.queue.try_send(item) {
            self.mark_overflowed();
        }
    }

    fn mark_overflowed(&self) {
        if !self.overflowed.swap(true, Ordering::AcqRel) {
            self.overflow.notify_one();
        }
    }

    /// Resolves once the queue has overflowed: the connection is too slow.
    pub(crate) async fn overflowed(&self) {
        self.overflow.notified().await;
    }
}

/// What the hub answers to a subscription.
#[derive(Debug)]
pub(crate) struct Subscribed {
    /// `Some(last)`: the client asked to resume from an older seq. The session must send
    /// the stored messages up to and including `last` itself, then call
    /// [`HubHandle::caught_up`]; newer messages wait in the hub meanwhile.
    pub(crate) replay_until: Option<Seq>,
}

enum Command {
    Subscribe {
        key: SubscriptionKey,
        room: RoomId,
        outbox: Arc<Outbox>,
        resume_after: Option<Seq>,
        reply: oneshot::Sender<Result<Subscribed, ChatError>>,
    },
    CaughtUp(SubscriptionKey),
    Unsubscribe(SubscriptionKey),
    Disconnect(ConnectionId),
}

/// How the sessions talk to the hub task.
#[derive(Debug, Clone)]
pub(crate) struct HubHandle {
    commands: mpsc::UnboundedSender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("hub command")
    }
}

impl HubHandle {
    pub(crate) async fn subscribe(
        &self,
        key: SubscriptionKey,
        room: RoomId,
        outbox: Arc<Outbox>,
        resume_after: Option<Seq>,
    ) -> Result<Subscribed, ChatError> {
        let (reply, answer) = oneshot::channel();
        let sent = self.commands.send(Command::Subscribe {
            key,
            room,
            outbox,
            resume_after,
            reply,
        });
        let stopped = || ChatError::BusUnavailable("this instance is shutting down".into());
        sent.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    pub(crate) fn caught_up(&self, key: SubscriptionKey) {
        let _ = self.commands.send(Command::CaughtUp(key));
    }

    pub(crate) fn unsubscribe(&self, key: SubscriptionKey) {
        let _ = self.commands.send(Command::Unsubscribe(key));
    }

    pub(crate) fn disconnect(&self, connection: ConnectionId) {
        let _ = self.commands.send(Command::Disconnect(connection));
    }
}

struct Subscriber {
    key: SubscriptionKey,
    outbox: Arc<Outbox>,
    /// Messages up to this seq are the client's already (from its resume point or replay).
    skip_through: Seq,
    /// `Some` while the session replays history: live messages wait here, in order.
    held: Option<Vec<Arc<PreparedMessage>>>,
    /// Most messages one subscriber may hold during a replay before it counts as slow.
    held_limit: usize,
}

/// The hub task's state.
pub(crate) struct Hub {
    repository: Arc<dyn MessageRepository>,
    bus: Arc<dyn MessageBus>,
    rooms: HashMap<RoomId, Vec<Subscriber>>,
    sequencer: RoomSequencer,
    held_limit: usize,
}

/// A page size for backfills: the largest the repository serves.
fn page() -> HistoryLimit {
    HistoryLimit::parse(i64::from(HistoryLimit::MAX)).unwrap_or(HistoryLimit::DEFAULT)
}

pub(crate) fn destination(room: RoomId) -> String {
    format!("/topic/chatroom/{room}")
}

/// Encodes a chat message as the shared part of its MESSAGE frame.
pub(crate) fn prepare(message: &ChatMessagePublish) -> Arc<PreparedMessage> {
    Arc::new(PreparedMessage::new(
        &destination(message.chat_room_id),
        &message.message_id.to_string(),
        "application/json",
        &[],
        &message.to_json(),
    ))
}

impl Hub {
    /// Starts the hub task on `events` (already subscribed, so nothing published after
    /// start-up is missed) and returns the handle sessions use.
    pub(crate) fn spawn(
        repository: Arc<dyn MessageRepository>,
        bus: Arc<dyn MessageBus>,
        events: BusEvents,
        held_limit: usize,
    ) -> (HubHandle, tokio::task::JoinHandle<()>) {
        let (commands, receiver) = mpsc::unbounded_channel();
        let hub = Hub {
            repository,
            bus,
            rooms: HashMap::new(),
            sequencer: RoomSequencer::new(),
            held_limit,
        };
        let task = tokio::spawn(hub.run(receiver, events));
        (HubHandle { commands }, task)
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>, mut events: BusEvents) {
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command).await,
                    None => return,
                },
                event = events.next() => match event {
                    Some(BusEvent::Message(message)) => self.on_message(message).await,
                    Some(BusEvent::MayHaveMissedMessages) => self.catch_up_all().await,
                    None => events = self.resubscribe().await,
                },
            }
        }
    }

    /// The bus stream ended, which a healthy bus never does: keep trying to get a new one,
    /// then backfill whatever was missed meanwhile.
    async fn resubscribe(&mut self) -> BusEvents {
        let mut wait = Duration::from_millis(100);
        loop {
            tracing::error!("the message bus subscription ended; resubscribing");
            match self.bus.subscribe().await {
                Ok(events) => {
                    self.catch_up_all().await;
                    return events;
                }
                Err(error) => {
                    tracing::error!(%error, "cannot resubscribe to the message bus; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::Subscribe {
                key,
                room,
                outbox,
                resume_after,
                reply,
            } => {
                let result = self.subscribe(key, room, outbox, resume_after).await;
                let _ = reply.send(result);
            }
            Command::CaughtUp(key) => self.release_held(&key),
            Command::Unsubscribe(key) => self.remove(|s| s.key == key),
            Command::Disconnect(connection) => self.remove(|s| s.key.connection == connection),
        }
    }

    async fn subscribe(
        &mut self,
        key: SubscriptionKey,
        room: RoomId,
        outbox: Arc<Outbox>,
        resume_after: Option<Seq>,
    ) -> Result<Subscribed, ChatError> {
        if !self.rooms.contains_key(&room) {
            // First local subscriber: start following from the room's newest seq, so a gap
            // in the very next bus message is noticed too.
            let found = self.repository.find_room(room).await?;
            let found = found.ok_or(ChatError::UnknownRoom(room))?;
            self.sequencer.follow(room, found.last_seq);
        }
        let last = self.sequencer.last_delivered(room).unwrap_or(Seq(0));
        let replay_until = resume_after.filter(|after| *after < last).map(|_| last);
        let subscribers = self.rooms.entry(room).or_default();
        subscribers.retain(|s| s.key != key);
        subscribers.push(Subscriber {
            key,
            outbox,
            skip_through: resume_after.map_or(last, |after| after.max(Seq(0))),
            held: replay_until.map(|_| Vec::new()),
            held_limit: self.held_limit,
        });
        Ok(Subscribed { replay_until })
    }

    fn release_held(&mut self, key: &SubscriptionKey) {
        let Some(subscriber) = self
            .rooms
            .values_mut()
            .flat_map(|subs| subs.iter_mut())
            .find(|s| &s.key == key)
        else {
            return;
        };
        for prepared in subscriber.held.take().unwrap_or_default() {
            subscriber.outbox.deliver(Outbound {
                prepared,
                subscription: subscriber.key.id.clone(),
            });
        }
    }

    fn remove(&mut self, leaving: impl Fn(&Subscriber) -> bool) {
        self.rooms.retain(|room, subscribers| {
            subscribers.retain(|s| !leaving(s));
            if subscribers.is_empty() {
                self.sequencer.forget(*room);
            }
            !subscribers.is_empty()
        });
    }

    async fn on_message(&mut self, message: ChatMessagePublish) {
        let room = message.chat_room_id;
        match self.sequencer.observe(room, message.seq) {
            SequenceDecision::Deliver | SequenceDecision::Untracked => self.fan_out(&message),
            SequenceDecision::Duplicate => {}
            SequenceDecision::Gap { first, last } => {
                tracing::debug!(%room, first = first.0, last = last.0, "gap in room seq; backfilling");
                self.backfill(room, Seq(first.0 - 1), Some(last.next()))
                    .await;
                self.fan_out(&message);
                if let Some(seq) = message.seq {
                    self.sequencer.delivered(room, seq);
                }
            }
        }
    }

    /// After a bus interruption: every followed room may have missed messages.
    async fn catch_up_all(&mut self) {
        let followed: Vec<_> = self.sequencer.followed().collect();
        tracing::warn!(
            rooms = followed.len(),
            "the message bus may have dropped messages; backfilling followed rooms from the store"
        );
        for (room, last) in followed {
            self.backfill(room, last, None).await;
        }
    }

    /// Delivers the stored messages of `room` with `after < seq < before` in order.
    /// If the store is down the gap stays: clients see the jump in `seq` and can resume.
    async fn backfill(&mut self, room: RoomId, after: Seq, before: Option<Seq>) {
        let mut cursor = after;
        loop {
            let query = HistoryQuery {
                after: Some(cursor),
                before,
                limit: page(),
            };
            let messages = match self.repository.history(room, query).await {
                Ok(messages) => messages,
                Err(error) => {
                    tracing::warn!(%room, %error, "cannot backfill a gap: the store is unavailable; clients may see a jump in seq");
                    break;
                }
            };
            for message in &messages {
                self.fan_out(&ChatMessagePublish::from(message));
                cursor = message.seq;
            }
            self.sequencer.delivered(room, cursor);
            if messages.len() < page().get() as usize {
                break;
            }
        }
    }

    fn fan_out(&mut self, message: &ChatMessagePublish) {
        let Some(subscribers) = self.rooms.get_mut(&message.chat_room_id) else {
            return;
        };
        let prepared = prepare(message);
        for subscriber in subscribers {
            if message
                .seq
                .is_some_and(|seq| seq <= subscriber.skip_through)
            {
                continue;
            }
            match &mut subscriber.held {
                Some(held) => {
                    held.push(prepared.clone());
                    if held.len() > subscriber.held_limit {
                        subscriber.outbox.mark_overflowed();
                    }
                }
                None => subscriber.outbox.deliver(Outbound {
                    prepared: prepared.clone(),
                    subscription: subscriber.key.id.clone(),
                }),
            }
        }
    }
}
