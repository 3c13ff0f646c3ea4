//! The driver of the delivery engine ([`chat_domain::DeliveryEngine`]): it holds no
//! decisions. It runs one engine per shard of the rooms (by default one per core), each in
//! its own task; feeds it subscriptions, bus messages and the answers of its fetches; runs
//! those fetches beside it, concurrently and bounded in total, so a slow query delays only
//! its own room; and moves what the engine decides to deliver into the connections' queues.
//!
//! A MESSAGE is encoded once per chat message and shard ([`PreparedMessage`]); the bytes
//! are shared by every subscriber. Each connection has a bounded queue; a connection whose
//! queue is full, or that the engine lets go, is told why and closed (it can resume).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chat_domain::{
    Action, BusEvent, BusEvents, ChatError, ChatMessagePublish, DeliveryEngine, DisconnectReason,
    EngineConfig, EngineStats, Fetch, Fetched, HistoryQuery, MessageBus, MessageRepository, RoomId,
    SentMessage, Seq,
};
use chat_stomp::PreparedMessage;
use futures_util::StreamExt;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use super::revocations::Revocations;
use super::topics::Topics;
use crate::metrics::Metrics;

pub(crate) use chat_domain::{ConnectionId, SubscriptionKey};

/// How often to retry when the bus refuses a new subscription.
const RESUBSCRIBE_INTERVAL: Duration = Duration::from_secs(1);
/// Store queries of all shards in flight at once; more wait their turn.
const MAX_FETCHES_IN_FLIGHT: usize = 32;

/// One MESSAGE for one subscription, waiting in a connection's queue.
#[derive(Debug)]
pub(crate) struct Outbound {
    pub(crate) prepared: Arc<PreparedMessage>,
    pub(crate) subscription: Arc<str>,
}

impl Outbound {
    /// Bytes this item adds to the connection's backlog.
    pub(crate) fn bytes(&self) -> usize {
        self.prepared.encoded_len_hint() + self.subscription.len()
    }
}

/// The sending side of a connection's bounded queue: bounded in frames by the channel and
/// in bytes by a count (a few large messages are as much backlog as many small ones).
#[derive(Debug)]
pub(crate) struct Outbox {
    queue: mpsc::Sender<Outbound>,
    evicted: OnceLock<DisconnectReason>,
    notify: Notify,
    queued_bytes: AtomicUsize,
    max_bytes: usize,
}

impl Outbox {
    pub(crate) fn new(capacity: usize, max_bytes: usize) -> (Arc<Self>, mpsc::Receiver<Outbound>) {
        let (queue, receiver) = mpsc::channel(capacity.max(1));
        let outbox = Self {
            queue,
            evicted: OnceLock::new(),
            notify: Notify::new(),
            queued_bytes: AtomicUsize::new(0),
            max_bytes: max_bytes.max(1),
        };
        (Arc::new(outbox), receiver)
    }

    pub(crate) fn deliver(&self, item: Outbound) {
        let bytes = item.bytes();
        if self.queued_bytes.load(Ordering::Relaxed) + bytes > self.max_bytes {
            self.evict(DisconnectReason::SlowConsumer);
            return;
        }
        match self.queue.try_send(item) {
            Ok(()) => {
                self.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(_)) => self.evict(DisconnectReason::SlowConsumer),
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// The connection took `item` off its queue to write it.
    pub(crate) fn taken(&self, item: &Outbound) {
        self.queued_bytes.fetch_sub(item.bytes(), Ordering::Relaxed);
    }

    fn evict(&self, why: DisconnectReason) {
        if self.evicted.set(why).is_ok() {
            self.notify.notify_one();
        }
    }

    /// Resolves once the connection must go, with the reason.
    pub(crate) async fn evicted(&self) -> DisconnectReason {
        loop {
            if let Some(why) = self.evicted.get() {
                return why.clone();
            }
            self.notify.notified().await;
        }
    }
}

enum Command {
    Subscribe {
        key: SubscriptionKey,
        room: RoomId,
        outbox: Arc<Outbox>,
        resume_after: Option<Seq>,
        reply: oneshot::Sender<Result<(), ChatError>>,
    },
    /// From the bus, or stored through this instance (delivered at once; its copy from the
    /// bus is then a duplicate).
    Message(ChatMessagePublish),
    BusGap,
    /// The bus carries this room only from now on.
    RoomGap(RoomId),
    Unsubscribe(SubscriptionKey),
    Disconnect(ConnectionId),
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("hub command")
    }
}

/// How the sessions talk to the hub's shards.
#[derive(Debug, Clone)]
pub(crate) struct HubHandle {
    shards: Arc<[mpsc::UnboundedSender<Command>]>,
}

fn shard_of(room: RoomId, shards: usize) -> usize {
    let shards = i64::try_from(shards).unwrap_or(i64::MAX).max(1);
    usize::try_from(room.get().rem_euclid(shards)).unwrap_or(0)
}

impl HubHandle {
    fn shard(&self, room: RoomId) -> &mpsc::UnboundedSender<Command> {
        &self.shards[shard_of(room, self.shards.len())]
    }

    pub(crate) async fn subscribe(
        &self,
        key: SubscriptionKey,
        room: RoomId,
        outbox: Arc<Outbox>,
        resume_after: Option<Seq>,
    ) -> Result<(), ChatError> {
        let (reply, answer) = oneshot::channel();
        let sent = self.shard(room).send(Command::Subscribe {
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

    /// After a send (STOMP or REST): the stored message goes to this instance's clients
    /// right after the commit, whatever the bus does; other instances get it from the bus,
    /// or from the store by reconciliation when the bus loses it.
    pub(crate) fn deliver_stored(&self, sent: &SentMessage) {
        let message = ChatMessagePublish::from(&sent.message);
        let _ = self
            .shard(message.chat_room_id)
            .send(Command::Message(message));
    }

    pub(crate) fn unsubscribe(&self, key: SubscriptionKey, room: RoomId) {
        let _ = self.shard(room).send(Command::Unsubscribe(key));
    }

    pub(crate) fn disconnect(&self, connection: ConnectionId) {
        for shard in self.shards.iter() {
            let _ = shard.send(Command::Disconnect(connection));
        }
    }
}

/// How the hub is tuned.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HubConfig {
    /// Live messages held per subscription while its replay runs.
    pub(crate) held_limit: usize,
    /// Period of the comparison with the store that catches what the bus never brought.
    pub(crate) reconcile_every: Duration,
}

/// Encodes a chat message as the shared part of its MESSAGE frame.
pub(crate) fn prepare(message: &ChatMessagePublish) -> Arc<PreparedMessage> {
    Arc::new(PreparedMessage::new(
        &chat_session::destination::room(message.chat_room_id),
        &message.message_id.to_string(),
        "application/json",
        &[],
        &message.to_json(),
    ))
}

/// Engine shards: one per core.
fn default_shards() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

pub(crate) struct Hub;

impl Hub {
    /// Starts the hub on `events` (already subscribed, so nothing published after start-up
    /// is missed), one shard per core, and returns the handle sessions use.
    pub(crate) fn spawn(
        repository: Arc<dyn MessageRepository>,
        bus: Arc<dyn MessageBus>,
        events: BusEvents,
        config: HubConfig,
        metrics: Arc<Metrics>,
        revocations: Arc<Revocations>,
        topics: Arc<Topics>,
    ) -> (HubHandle, tokio::task::JoinHandle<()>) {
        let shards = default_shards();
        let engine_config = EngineConfig {
            held_limit: config.held_limit,
            reconcile_every: config.reconcile_every.max(Duration::from_millis(10)),
            ..EngineConfig::default()
        };
        let fetch_slots = Arc::new(Semaphore::new(MAX_FETCHES_IN_FLIGHT));
        let mut senders = Vec::with_capacity(shards);
        for _ in 0..shards {
            let (commands, receiver) = mpsc::unbounded_channel();
            let (answers, answered) = mpsc::unbounded_channel();
            let shard = Shard {
                engine: DeliveryEngine::new(engine_config),
                outboxes: HashMap::new(),
                replies: HashMap::new(),
                repository: repository.clone(),
                bus: bus.clone(),
                metrics: metrics.clone(),
                fetch_slots: fetch_slots.clone(),
                answers,
                reported: EngineStats::default(),
            };
            tokio::spawn(shard.run(receiver, answered));
            senders.push(commands);
        }
        let weak = senders.iter().map(|s| s.downgrade()).collect();
        let task = tokio::spawn(dispatch(events, bus, weak, revocations, topics));
        (
            HubHandle {
                shards: senders.into(),
            },
            task,
        )
    }
}

/// Routes bus events to the shards and control events to the revocations and the topics
/// (presence, typing, per-user queues), and resubscribes when the bus stream ends. Holds the shards only weakly: they stop when the
/// last handle is gone.
async fn dispatch(
    mut events: BusEvents,
    bus: Arc<dyn MessageBus>,
    shards: Vec<mpsc::WeakUnboundedSender<Command>>,
    revocations: Arc<Revocations>,
    topics: Arc<Topics>,
) {
    let to_all = |shards: &[mpsc::WeakUnboundedSender<Command>]| {
        topics.handle_bus_gap();
        let revocations = revocations.clone();
        tokio::spawn(async move { revocations.handle_bus_gap().await });
        let mut alive = false;
        for shard in shards {
            if let Some(shard) = shard.upgrade() {
                alive |= shard.send(Command::BusGap).is_ok();
            }
        }
        alive
    };
    loop {
        let alive = match events.next().await {
            Some(BusEvent::Message(message)) => shards
                [shard_of(message.chat_room_id, shards.len())]
            .upgrade()
            .is_some_and(|shard| shard.send(Command::Message(message)).is_ok()),
            Some(BusEvent::Control(event)) => {
                revocations.handle_control(&event);
                topics.handle_control(&event);
                true
            }
            Some(BusEvent::MayHaveMissedMessages) => to_all(&shards),
            Some(BusEvent::MayHaveMissedRoom(room)) => shards[shard_of(room, shards.len())]
                .upgrade()
                .is_some_and(|shard| shard.send(Command::RoomGap(room)).is_ok()),
            None => {
                events = resubscribe(bus.as_ref()).await;
                to_all(&shards)
            }
        };
        if !alive && shards.iter().all(|s| s.upgrade().is_none()) {
            return;
        }
    }
}

/// The bus stream ended, which a healthy bus never does: keep trying to get a new one. The
/// adapters reconnect with their own backoff; this only covers a stream that ended
/// outright, so a steady retry is enough.
async fn resubscribe(bus: &dyn MessageBus) -> BusEvents {
    loop {
        tracing::error!("the message bus subscription ended; resubscribing");
        match bus.subscribe().await {
            Ok(events) => return events,
            Err(error) => {
                tracing::error!(%error, "cannot resubscribe to the message bus; retrying");
                tokio::time::sleep(RESUBSCRIBE_INTERVAL).await;
            }
        }
    }
}

/// One shard: an engine, the queues of the connections it delivers to, and its fetches.
struct Shard {
    engine: DeliveryEngine,
    outboxes: HashMap<ConnectionId, Arc<Outbox>>,
    replies: HashMap<SubscriptionKey, oneshot::Sender<Result<(), ChatError>>>,
    repository: Arc<dyn MessageRepository>,
    bus: Arc<dyn MessageBus>,
    metrics: Arc<Metrics>,
    fetch_slots: Arc<Semaphore>,
    answers: mpsc::UnboundedSender<(Fetch, Fetched)>,
    reported: EngineStats,
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

impl Shard {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut answered: mpsc::UnboundedReceiver<(Fetch, Fetched)>,
    ) {
        loop {
            self.execute();
            let deadline = self.engine.poll_timeout().map(Instant::from_std);
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => return,
                },
                Some((fetch, fetched)) = answered.recv() => {
                    self.engine.handle_fetched(&fetch, fetched, now());
                }
                () = sleep_until_some(deadline) => self.engine.handle_timeout(now()),
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Subscribe {
                key,
                room,
                outbox,
                resume_after,
                reply,
            } => {
                self.outboxes.insert(key.connection, outbox);
                self.replies.insert(key.clone(), reply);
                self.engine.handle_subscribe(key, room, resume_after, now());
            }
            Command::Message(message) => self.engine.handle_bus_message(message, now()),
            Command::BusGap => {
                tracing::warn!(
                    rooms = self.engine.room_count(),
                    "the message bus may have dropped messages; catching followed rooms up from the store"
                );
                self.engine.handle_bus_gap();
            }
            Command::RoomGap(room) => self.engine.handle_room_gap(room),
            Command::Unsubscribe(key) => self.engine.handle_unsubscribe(&key),
            Command::Disconnect(connection) => {
                self.engine.handle_disconnect(connection);
                self.outboxes.remove(&connection);
            }
        }
    }

    /// Carries out everything the engine decided, then brings the metrics up to date.
    fn execute(&mut self) {
        while let Some(action) = self.engine.poll_action() {
            match action {
                Action::Deliver { message, to } => {
                    let prepared = prepare(&message);
                    for key in to {
                        if let Some(outbox) = self.outboxes.get(&key.connection) {
                            outbox.deliver(Outbound {
                                prepared: prepared.clone(),
                                subscription: key.id,
                            });
                        }
                    }
                }
                Action::Fetch(fetch) => self.start_fetch(fetch),
                Action::Subscribed { key, result } => {
                    if let Some(reply) = self.replies.remove(&key) {
                        let _ = reply.send(result);
                    }
                }
                Action::Disconnect { connection, reason } => {
                    if let Some(outbox) = self.outboxes.get(&connection) {
                        outbox.evict(reason);
                    }
                }
                Action::Watch(room) => self.bus.watch_room(room),
                Action::Unwatch(room) => self.bus.unwatch_room(room),
            }
        }
        let stats = self.engine.stats();
        let reported = std::mem::replace(&mut self.reported, stats);
        self.metrics
            .messages_delivered
            .inc_by(stats.delivered - reported.delivered);
        self.metrics
            .gap_backfills
            .inc_by(stats.gap_fetches - reported.gap_fetches);
        self.metrics
            .reconciliations_found
            .inc_by(stats.reconciliations_found - reported.reconciliations_found);
        self.metrics.fanout_lag.inc_by(stats.lag - reported.lag);
        self.metrics
            .bus_unconfirmed_dropped
            .inc_by(stats.unconfirmed_dropped - reported.unconfirmed_dropped);
    }

    /// Runs one fetch beside the shard; its answer comes back through `answers`.
    fn start_fetch(&self, fetch: Fetch) {
        let repository = self.repository.clone();
        let slots = self.fetch_slots.clone();
        let answers = self.answers.clone();
        let replay_to = match &fetch {
            Fetch::Replay { key, .. } => self.outboxes.get(&key.connection).cloned(),
            _ => None,
        };
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let fetched = match &fetch {
                Fetch::Room { room, .. } => {
                    let _slot = slots.acquire().await;
                    Fetched::Room(repository.find_room(*room).await.map_err(ChatError::from))
                }
                Fetch::Range {
                    room,
                    after,
                    before,
                    limit,
                    ..
                } => {
                    let _slot = slots.acquire().await;
                    let query = HistoryQuery::range(*after, *before, *limit);
                    Fetched::Range(
                        repository
                            .history(*room, query)
                            .await
                            .map(|page| page.iter().map(ChatMessagePublish::from).collect())
                            .map_err(ChatError::from),
                    )
                }
                Fetch::LastSeqs { rooms, .. } => {
                    let _slot = slots.acquire().await;
                    Fetched::LastSeqs(repository.last_seqs(rooms).await.map_err(ChatError::from))
                }
                Fetch::Replay {
                    key,
                    room,
                    after,
                    until,
                    ..
                } => Fetched::Replayed(match replay_to {
                    Some(outbox) => {
                        replay(
                            &*repository,
                            &slots,
                            &outbox,
                            key,
                            *room,
                            *after,
                            *until,
                            &metrics,
                        )
                        .await
                    }
                    None => Ok(()),
                }),
            };
            let _ = answers.send((fetch, fetched));
        });
    }
}

/// Writes the stored messages `after < seq <= until` of `room` into one subscription's
/// queue, page by page, waiting for room in the queue: the replay goes at the pace of the
/// client's socket, and the engine holds that subscription's live messages meanwhile.
#[allow(clippy::too_many_arguments)]
async fn replay(
    repository: &dyn MessageRepository,
    slots: &Semaphore,
    outbox: &Outbox,
    key: &SubscriptionKey,
    room: RoomId,
    after: Seq,
    until: Seq,
    metrics: &Metrics,
) -> Result<(), ChatError> {
    let mut query = Some(HistoryQuery::range(
        after,
        Some(until.next()),
        EngineConfig::default().page,
    ));
    while let Some(this_page) = query {
        let page = {
            let _slot = slots.acquire().await;
            repository.history(room, this_page).await?
        };
        let Some(last) = page.last() else { break };
        query = this_page.next_page(page.len(), last.seq);
        for message in &page {
            let item = Outbound {
                prepared: prepare(&ChatMessagePublish::from(message)),
                subscription: key.id.clone(),
            };
            let bytes = item.bytes();
            if outbox.queue.send(item).await.is_err() {
                // The connection is gone; nothing left to replay to.
                return Ok(());
            }
            outbox.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        metrics.messages_delivered.inc_by(page.len() as u64);
    }
    Ok(())
}

/// Sleeps until `deadline`, or forever when there is none.
pub(crate) async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
