//! Local fan-out: which connection of this instance follows which room, and delivery of
//! every bus message to them in `seq` order, exactly once, backfilling gaps from the
//! repository (spec §5). One task owns all of it, so there are no locks on the hot path.
//!
//! A MESSAGE is encoded once per chat message ([`PreparedMessage`]) and the bytes are
//! shared by every subscriber; each connection has a bounded queue, and a connection whose
//! queue is full is told to go (it can resume with `x-resume-after`) instead of stalling
//! the others.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chat_domain::{
    BusEvent, BusEvents, ChatError, ChatMessagePublish, HistoryLimit, HistoryQuery, MessageBus,
    MessageRepository, RoomId, RoomSequencer, SentMessage, Seq, SequenceDecision,
};
use chat_stomp::PreparedMessage;
use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use crate::metrics::Metrics;

/// How long a message that arrived ahead of its predecessors waits for them before the gap
/// is filled from the store. Concurrent senders publish in a racy order, so small reorders
/// are normal; waiting a few milliseconds saves a store query for each of them.
const REORDER_WINDOW: Duration = Duration::from_millis(30);
/// How long to wait before trying again to fill a gap the store could not be read for.
const GAP_RETRY: Duration = Duration::from_millis(250);
/// How often to retry when the bus refuses a new subscription.
const RESUBSCRIBE_INTERVAL: Duration = Duration::from_secs(1);
/// Most messages held ahead of a gap per room; past it the gap is filled at once.
const MAX_HELD_AHEAD: usize = 1024;
/// How long a room that the store showed ahead of us may stay behind before it is
/// backfilled: long enough for messages already on their way through the bus to land,
/// so a busy room does not cost a query at every reconciliation.
const RECONCILE_GRACE: Duration = Duration::from_millis(250);

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
    /// A message stored through this instance: delivered to its clients at once, without
    /// waiting for it to come back from the bus (its copy from the bus is then a duplicate).
    Local(ChatMessagePublish),
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

    /// After a send (STOMP or REST): the stored message goes to this instance's clients
    /// right after the commit, whatever the bus does; other instances get it from the bus,
    /// or from the store by reconciliation when the bus loses it.
    pub(crate) fn deliver_stored(&self, sent: &SentMessage) {
        let _ = self
            .commands
            .send(Command::Local(ChatMessagePublish::from(&sent.message)));
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
}

/// The hub task's state.
pub(crate) struct Hub {
    repository: Arc<dyn MessageRepository>,
    bus: Arc<dyn MessageBus>,
    /// Local subscribers by room, keyed so one leaves in O(1) however full the room is.
    rooms: HashMap<RoomId, HashMap<SubscriptionKey, Subscriber>>,
    /// Which room each subscription is in, and each connection's subscriptions, so an
    /// unsubscribe or a disconnect never scans every room.
    subscription_rooms: HashMap<SubscriptionKey, RoomId>,
    connection_subscriptions: HashMap<ConnectionId, Vec<SubscriptionKey>>,
    sequencer: RoomSequencer,
    metrics: Arc<Metrics>,
    /// Per room, messages that arrived before a predecessor, and when to stop waiting.
    ahead: HashMap<RoomId, (Instant, BTreeMap<Seq, ChatMessagePublish>)>,
    held_limit: usize,
    /// How often the followed rooms are compared with the store.
    reconcile_every: Duration,
    /// Answers of the reconciliation query, which runs beside the hub, not inside it.
    reconciled: (mpsc::Sender<StoreSeqs>, mpsc::Receiver<StoreSeqs>),
    reconciling: bool,
    /// Rooms the store showed ahead of what was delivered here, with the store's seq, and
    /// when to backfill those still behind.
    behind: HashMap<RoomId, Seq>,
    behind_deadline: Option<Instant>,
}

/// The store's answer to a reconciliation: the newest seq of each followed room.
type StoreSeqs = Result<Vec<(RoomId, Seq)>, ChatError>;

/// How the hub is tuned.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HubConfig {
    /// Live messages held per subscription while its replay runs.
    pub(crate) held_limit: usize,
    /// Period of the comparison with the store that catches what the bus never brought.
    pub(crate) reconcile_every: Duration,
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
        config: HubConfig,
        metrics: Arc<Metrics>,
    ) -> (HubHandle, tokio::task::JoinHandle<()>) {
        let (commands, receiver) = mpsc::unbounded_channel();
        let hub = Hub {
            held_limit: config.held_limit,
            reconcile_every: config.reconcile_every.max(Duration::from_millis(10)),
            reconciled: mpsc::channel(1),
            reconciling: false,
            behind: HashMap::new(),
            behind_deadline: None,
            repository,
            bus,
            rooms: HashMap::new(),
            subscription_rooms: HashMap::new(),
            connection_subscriptions: HashMap::new(),
            sequencer: RoomSequencer::new(),
            metrics,
            ahead: HashMap::new(),
        };
        let task = tokio::spawn(hub.run(receiver, events));
        (HubHandle { commands }, task)
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>, mut events: BusEvents) {
        let mut reconcile =
            tokio::time::interval_at(Instant::now() + self.reconcile_every, self.reconcile_every);
        reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let reorder_deadline = self.ahead.values().map(|(deadline, _)| *deadline).min();
            tokio::select! {
                _ = reconcile.tick() => self.start_reconciliation(),
                Some(answer) = self.reconciled.1.recv() => self.on_reconciled(answer),
                () = sleep_until_some(self.behind_deadline) => self.backfill_behind().await,
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command).await,
                    None => return,
                },
                event = events.next() => match event {
                    Some(BusEvent::Message(message)) => self.on_message(message).await,
                    Some(BusEvent::MayHaveMissedMessages) => self.catch_up_all().await,
                    None => events = self.resubscribe().await,
                },
                () = sleep_until_some(reorder_deadline) => self.fill_expired_gaps().await,
            }
        }
    }

    /// The bus stream ended, which a healthy bus never does: keep trying to get a new one,
    /// then backfill whatever was missed meanwhile.
    /// The adapters reconnect with their clients' own backoff; this only covers a bus whose
    /// stream ended outright, so a steady retry is enough.
    async fn resubscribe(&mut self) -> BusEvents {
        loop {
            tracing::error!("the message bus subscription ended; resubscribing");
            match self.bus.subscribe().await {
                Ok(events) => {
                    self.catch_up_all().await;
                    return events;
                }
                Err(error) => {
                    tracing::error!(%error, "cannot resubscribe to the message bus; retrying");
                    tokio::time::sleep(RESUBSCRIBE_INTERVAL).await;
                }
            }
        }
    }

    /// Asks the store for the newest seq of every followed room, in one query that runs
    /// beside the hub (a slow store delays only the answer, not fan-out).
    fn start_reconciliation(&mut self) {
        if self.reconciling {
            return;
        }
        let rooms: Vec<RoomId> = self.rooms.keys().copied().collect();
        if rooms.is_empty() {
            self.metrics.fanout_lag.set(0);
            return;
        }
        self.reconciling = true;
        let repository = self.repository.clone();
        let answer = self.reconciled.0.clone();
        tokio::spawn(async move {
            let seqs = repository.last_seqs(&rooms).await.map_err(ChatError::from);
            let _ = answer.send(seqs).await;
        });
    }

    /// Notes the rooms the store is ahead in; those still behind after a grace period are
    /// backfilled.
    fn on_reconciled(&mut self, answer: StoreSeqs) {
        self.reconciling = false;
        let seqs = match answer {
            Ok(seqs) => seqs,
            Err(error) => {
                tracing::debug!(%error, "reconciliation with the store failed; retrying next period");
                return;
            }
        };
        let mut lag: i64 = 0;
        for (room, stored) in seqs {
            let Some(delivered) = self.sequencer.last_delivered(room) else {
                continue;
            };
            if stored > delivered {
                lag = lag.saturating_add(stored.0 - delivered.0);
                let target = self.behind.entry(room).or_insert(stored);
                *target = (*target).max(stored);
            }
        }
        self.metrics.fanout_lag.set(lag);
        if !self.behind.is_empty() && self.behind_deadline.is_none() {
            self.behind_deadline = Some(Instant::now() + RECONCILE_GRACE);
        }
    }

    /// Backfills the rooms that reconciliation found behind and that the bus has not
    /// caught up since.
    async fn backfill_behind(&mut self) {
        self.behind_deadline = None;
        let behind: Vec<(RoomId, Seq)> = self.behind.drain().collect();
        for (room, stored) in behind {
            let Some(last) = self.sequencer.last_delivered(room) else {
                continue;
            };
            if last >= stored {
                continue;
            }
            tracing::info!(%room, delivered = last.0, stored = stored.0, "the bus never brought some messages of this room; fetching them from the store");
            self.metrics.reconciliations_found.inc();
            self.metrics.gap_backfills.inc();
            self.backfill(room, last, None).await;
            self.deliver_held_in_order(room);
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
            Command::Local(message) => self.on_message(message).await,
            Command::Unsubscribe(key) => {
                if let Some(keys) = self.connection_subscriptions.get_mut(&key.connection) {
                    keys.retain(|k| k != &key);
                }
                self.remove(&key);
            }
            Command::Disconnect(connection) => {
                for key in self
                    .connection_subscriptions
                    .remove(&connection)
                    .unwrap_or_default()
                {
                    self.remove(&key);
                }
            }
        }
    }

    async fn subscribe(
        &mut self,
        key: SubscriptionKey,
        room: RoomId,
        outbox: Arc<Outbox>,
        resume_after: Option<Seq>,
    ) -> Result<Subscribed, ChatError> {
        let followed = self.rooms.contains_key(&room);
        if !followed || resume_after.is_some() {
            // First local subscriber: start following from the room's newest seq, so a gap
            // in the very next bus message is noticed too. A resume point is checked against
            // the store, not against what this instance delivered: the client may come
            // from an instance that is ahead.
            let found = self.repository.find_room(room).await?;
            let found = found.ok_or(ChatError::UnknownRoom(room))?;
            if let Some(after) = resume_after
                && after > found.last_seq
            {
                return Err(ChatError::InvalidResume {
                    room,
                    requested: after,
                    last_seq: found.last_seq,
                });
            }
            if !followed {
                self.sequencer.follow(room, found.last_seq);
            }
        }
        let last = self.sequencer.last_delivered(room).unwrap_or(Seq(0));
        let replay_until = resume_after.filter(|after| *after < last).map(|_| last);
        // The session refuses a duplicate id, so an existing key can only be a leftover.
        self.remove(&key);
        self.subscription_rooms.insert(key.clone(), room);
        self.connection_subscriptions
            .entry(key.connection)
            .or_default()
            .push(key.clone());
        let subscribers = self.rooms.entry(room).or_default();
        subscribers.insert(
            key.clone(),
            Subscriber {
                key,
                outbox,
                skip_through: resume_after.map_or(last, |after| after.max(Seq(0))),
                held: replay_until.map(|_| Vec::new()),
            },
        );
        Ok(Subscribed { replay_until })
    }

    fn release_held(&mut self, key: &SubscriptionKey) {
        let Some(subscriber) = self
            .subscription_rooms
            .get(key)
            .and_then(|room| self.rooms.get_mut(room))
            .and_then(|subscribers| subscribers.get_mut(key))
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

    /// Removes one subscription; the last one of a room stops following the room.
    fn remove(&mut self, key: &SubscriptionKey) {
        let Some(room) = self.subscription_rooms.remove(key) else {
            return;
        };
        if let Some(subscribers) = self.rooms.get_mut(&room) {
            subscribers.remove(key);
            if subscribers.is_empty() {
                self.rooms.remove(&room);
                self.sequencer.forget(room);
                self.ahead.remove(&room);
                self.behind.remove(&room);
            }
        }
    }

    async fn on_message(&mut self, message: ChatMessagePublish) {
        let room = message.chat_room_id;
        match self.sequencer.observe(room, message.seq) {
            SequenceDecision::Deliver => {
                self.fan_out(&message);
                self.deliver_held_in_order(room);
            }
            SequenceDecision::Untracked => self.fan_out(&message),
            SequenceDecision::Duplicate => {}
            SequenceDecision::Gap { .. } => {
                let Some(seq) = message.seq else { return };
                let (_, held) = self
                    .ahead
                    .entry(room)
                    .or_insert_with(|| (Instant::now() + REORDER_WINDOW, BTreeMap::new()));
                held.insert(seq, message);
                if held.len() > MAX_HELD_AHEAD {
                    self.fill_gap(room).await;
                }
            }
        }
    }

    /// Delivers held messages that are now next in line; stops at the next hole.
    fn deliver_held_in_order(&mut self, room: RoomId) {
        loop {
            let Some((_, held)) = self.ahead.get_mut(&room) else {
                return;
            };
            let Some(entry) = held.first_entry() else {
                self.ahead.remove(&room);
                return;
            };
            match self.sequencer.observe(room, Some(*entry.key())) {
                SequenceDecision::Deliver => {
                    let message = entry.remove();
                    self.fan_out(&message);
                }
                SequenceDecision::Duplicate | SequenceDecision::Untracked => {
                    entry.remove();
                }
                SequenceDecision::Gap { .. } => return,
            }
        }
    }

    async fn fill_expired_gaps(&mut self) {
        let now = Instant::now();
        let expired: Vec<RoomId> = self
            .ahead
            .iter()
            .filter(|(_, (deadline, _))| *deadline <= now)
            .map(|(room, _)| *room)
            .collect();
        for room in expired {
            self.fill_gap(room).await;
        }
    }

    /// The missing messages did not arrive over the bus: fetch them from the store, then
    /// deliver what was held behind them.
    async fn fill_gap(&mut self, room: RoomId) {
        let (Some(last), Some(first_held)) = (
            self.sequencer.last_delivered(room),
            self.ahead
                .get(&room)
                .and_then(|(_, held)| held.keys().next().copied()),
        ) else {
            self.ahead.remove(&room);
            return;
        };
        tracing::debug!(%room, after = last.0, before = first_held.0, "gap in room seq; backfilling from the store");
        self.metrics.gap_backfills.inc();
        let filled = self.backfill(room, last, Some(first_held)).await;
        self.deliver_held_in_order(room);
        if let Some((deadline, held)) = self.ahead.get_mut(&room) {
            if held.is_empty() {
                self.ahead.remove(&room);
            } else if filled {
                *deadline = Instant::now() + REORDER_WINDOW;
            } else {
                // The store cannot be read: never skip the gap (that would lose the missing
                // messages for every subscriber here). Keep the position, retry later, and
                // bound what waits by letting go of the newest held messages: the store
                // has them, and the next backfill fetches them in order.
                *deadline = Instant::now() + GAP_RETRY;
                while held.len() > MAX_HELD_AHEAD / 2 {
                    held.pop_last();
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
            self.metrics.gap_backfills.inc();
            self.backfill(room, last, None).await;
            self.deliver_held_in_order(room);
        }
    }

    /// Delivers the stored messages of `room` with `after < seq < before` in order.
    /// Returns false when the store could not be read; the gap then stays.
    async fn backfill(&mut self, room: RoomId, after: Seq, before: Option<Seq>) -> bool {
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
                    return false;
                }
            };
            for message in &messages {
                if message.seq > self.sequencer.last_delivered(room).unwrap_or(Seq(0)) {
                    self.fan_out(&ChatMessagePublish::from(message));
                    self.sequencer.delivered(room, message.seq);
                }
                cursor = message.seq;
            }
            if messages.len() < page().get() as usize {
                return true;
            }
        }
    }

    fn fan_out(&mut self, message: &ChatMessagePublish) {
        let Some(subscribers) = self.rooms.get_mut(&message.chat_room_id) else {
            return;
        };
        let prepared = prepare(message);
        let mut delivered = 0;
        for subscriber in subscribers.values_mut() {
            if message
                .seq
                .is_some_and(|seq| seq <= subscriber.skip_through)
            {
                continue;
            }
            delivered += 1;
            match &mut subscriber.held {
                Some(held) => {
                    held.push(prepared.clone());
                    if held.len() > self.held_limit {
                        subscriber.outbox.mark_overflowed();
                    }
                }
                None => subscriber.outbox.deliver(Outbound {
                    prepared: prepared.clone(),
                    subscription: subscriber.key.id.clone(),
                }),
            }
        }
        self.metrics.messages_delivered.inc_by(delivered);
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use chat_domain::{
        ChatMessage, MessageId, MessageType, MockMessageBus, MockMessageRepository, Room, SenderId,
    };
    use chat_stomp::{Decoder, Item, Limits};

    use super::*;

    const ROOM: RoomId = RoomId(1);

    fn stored(seq: i64) -> ChatMessage {
        ChatMessage {
            id: MessageId(seq),
            room_id: ROOM,
            seq: Seq(seq),
            sender_id: SenderId(1),
            sender_nickname: "a".into(),
            content: format!("m{seq}"),
            message_type: MessageType::Text,
            created_at: chrono::Utc::now(),
        }
    }

    fn published(seq: i64) -> BusEvent {
        BusEvent::Message(ChatMessagePublish::from(&stored(seq)))
    }

    fn repository_with_room(history_calls: usize) -> MockMessageRepository {
        let mut repository = MockMessageRepository::new();
        repository.expect_find_room().returning(|id| {
            Ok(Some(Room {
                id,
                name: "r".into(),
                created_at: chrono::Utc::now(),
                last_seq: Seq(0),
            }))
        });
        repository
            .expect_history()
            .times(history_calls)
            .returning(|_, query| {
                let after = query.after.map_or(0, |s| s.0);
                let before = query.before.map_or(i64::MAX, |s| s.0);
                // The "store" holds seqs 1..=10.
                Ok((after + 1..before.min(11)).map(stored).collect())
            });
        repository
    }

    /// Starts a hub on a scripted bus and subscribes one connection to ROOM.
    async fn hub_with_subscriber(
        repository: MockMessageRepository,
    ) -> (
        mpsc::UnboundedSender<BusEvent>,
        mpsc::Receiver<Outbound>,
        HubHandle,
    ) {
        let (events, receiver) = mpsc::unbounded_channel();
        let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|event| (event, receiver))
        });
        let (hub, _task) = Hub::spawn(
            Arc::new(repository),
            Arc::new(MockMessageBus::new()),
            Box::pin(stream),
            HubConfig {
                held_limit: 64,
                reconcile_every: Duration::from_secs(3600),
            },
            Arc::new(Metrics::new()),
        );
        let (outbox, queue) = Outbox::new(64);
        let key = SubscriptionKey {
            connection: ConnectionId(1),
            id: Arc::from("s"),
        };
        hub.subscribe(key, ROOM, outbox, None).await.unwrap();
        // The caller keeps the handle: the hub stops when every handle is gone.
        (events, queue, hub)
    }

    async fn next_seq(queue: &mut mpsc::Receiver<Outbound>) -> i64 {
        let item = tokio::time::timeout(Duration::from_secs(2), queue.recv())
            .await
            .expect("a delivery")
            .expect("queue open");
        let mut bytes = Vec::new();
        item.prepared
            .write_for_subscription(&item.subscription, &mut bytes);
        let mut decoder = Decoder::new(Limits::default());
        decoder.feed(&bytes);
        let Ok(Some(Item::Frame(frame))) = decoder.next_item() else {
            panic!("not a frame");
        };
        let body: serde_json::Value = serde_json::from_slice(&frame.body).unwrap();
        body["seq"].as_i64().unwrap()
    }

    #[tokio::test]
    async fn a_small_reorder_is_put_right_without_asking_the_store() {
        let (events, mut queue, _hub) = hub_with_subscriber(repository_with_room(0)).await;
        for seq in [2, 1, 4, 3, 3, 1] {
            events.send(published(seq)).unwrap();
        }
        for expected in 1..=4 {
            assert_eq!(next_seq(&mut queue).await, expected);
        }
        tokio::time::sleep(REORDER_WINDOW * 3).await;
        assert!(
            queue.try_recv().is_err(),
            "duplicates must not be delivered"
        );
    }

    #[tokio::test]
    async fn a_gap_that_stays_open_is_filled_from_the_store_once() {
        let (events, mut queue, _hub) = hub_with_subscriber(repository_with_room(1)).await;
        events.send(published(4)).unwrap();
        events.send(published(5)).unwrap();
        for expected in 1..=5 {
            assert_eq!(next_seq(&mut queue).await, expected);
        }
        events.send(published(6)).unwrap();
        assert_eq!(next_seq(&mut queue).await, 6);
    }

    #[tokio::test]
    async fn after_a_bus_interruption_the_followed_rooms_are_backfilled() {
        let (events, mut queue, _hub) = hub_with_subscriber(repository_with_room(1)).await;
        events.send(published(1)).unwrap();
        assert_eq!(next_seq(&mut queue).await, 1);
        events.send(BusEvent::MayHaveMissedMessages).unwrap();
        for expected in 2..=10 {
            assert_eq!(next_seq(&mut queue).await, expected);
        }
        events.send(published(7)).unwrap();
        events.send(published(11)).unwrap();
        assert_eq!(next_seq(&mut queue).await, 11);
    }

    #[tokio::test]
    async fn after_unsubscribe_or_disconnect_a_connection_receives_nothing_more() {
        let (events, mut queue, hub) = hub_with_subscriber(repository_with_room(0)).await;
        let (second_outbox, mut second_queue) = Outbox::new(64);
        let second = SubscriptionKey {
            connection: ConnectionId(2),
            id: Arc::from("s"),
        };
        hub.subscribe(second.clone(), ROOM, second_outbox, None)
            .await
            .unwrap();
        events.send(published(1)).unwrap();
        assert_eq!(next_seq(&mut queue).await, 1);
        assert_eq!(next_seq(&mut second_queue).await, 1);

        hub.disconnect(ConnectionId(1));
        hub.unsubscribe(second);
        // Commands are handled in order: once a later subscription is answered, the two
        // departures above have been handled too.
        let (third_outbox, mut third_queue) = Outbox::new(64);
        let third = SubscriptionKey {
            connection: ConnectionId(3),
            id: Arc::from("s"),
        };
        hub.subscribe(third, ROOM, third_outbox, None)
            .await
            .unwrap();
        // The room was forgotten when its last subscriber left; the newcomer follows it
        // again from the store's position (seq 0 in this mock), so seq 1 is next for it.
        events.send(published(1)).unwrap();
        assert_eq!(next_seq(&mut third_queue).await, 1);
        assert!(queue.try_recv().is_err());
        assert!(second_queue.try_recv().is_err());
    }
}
