//! Prometheus metrics of one instance, and the decorators that measure the store and the
//! bus from the outside, so the domain stays free of instrumentation.
//!
//! Everything lives in one [`Metrics`] value per application (no global registry), so
//! several applications in one test process count separately.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chat_domain::{
    BusError, BusEvents, ChatMessage, ChatMessagePublish, ControlEvent, HistoryQuery, MessageBus,
    MessageRepository, NewChatMessage, NewRoom, RepositoryError, Room, RoomId, RoomListQuery, Seq,
};
use chat_session::CloseReason;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Label = [(&'static str, &'static str); 1];

/// Every metric of the instance.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) connections_current: Gauge,
    pub(crate) connections_opened: Counter,
    pub(crate) connections_closed: Family<Label, Counter>,
    pub(crate) subscriptions_current: Gauge,
    pub(crate) frames_received: Family<Label, Counter>,
    pub(crate) frames_sent: Family<Label, Counter>,
    /// `frames_sent{command="MESSAGE"}`, resolved once: it is counted on every write to a
    /// subscriber, where a label lookup under a lock would be wasted work.
    pub(crate) message_frames_sent: Counter,
    pub(crate) messages_received: Counter,
    pub(crate) messages_rejected: Family<Label, Counter>,
    pub(crate) messages_stored: Counter,
    pub(crate) messages_published: Counter,
    pub(crate) publish_failures: Counter,
    pub(crate) messages_delivered: Counter,
    pub(crate) store_latency: Histogram,
    pub(crate) publish_latency: Histogram,
    bus_reconnects: Counter,
    bus_decode_failures: Counter,
    bus_received: Counter,
    bus_rooms_watched: Gauge,
    pub(crate) slow_consumer_disconnects: Counter,
    /// Writes to a client that timed out (it stopped reading).
    pub(crate) write_timeouts: Counter,
    /// WebSocket upgrades refused by a connection limit, by limit.
    connections_refused: Family<Label, Counter>,
    /// Bus messages dropped because the store did not confirm them.
    pub(crate) bus_unconfirmed_dropped: Counter,
    /// Failed accepts of the listener (out of file descriptors and the like).
    pub(crate) accept_errors: Counter,
    pub(crate) gap_backfills: Counter,
    /// Stored messages not handed to the bus because its queue was full.
    pub(crate) publish_dropped: Counter,
    /// Presence signals not published because their queue was full (healed by resync).
    pub(crate) presence_gossip_dropped: Counter,
    /// Other instances this one hears presence from.
    pub(crate) presence_instances: Gauge,
    /// (room, user) presence entries held, of every instance.
    pub(crate) presence_entries: Gauge,
    pub(crate) presence_instances_expired: Counter,
    pub(crate) presence_resyncs_requested: Counter,
    /// Entries an instance claimed beyond what a real one holds (forged gossip).
    pub(crate) presence_entries_refused: Counter,
    /// Joins and leaves this instance's presence saw (all rooms, watched or not).
    pub(crate) presence_joins: Counter,
    pub(crate) presence_leaves: Counter,
    /// Typing events sent on by this instance (after the one-per-second rule).
    pub(crate) typing_sent: Counter,
    /// Messages the store holds that this instance had not delivered, at the last check.
    pub(crate) fanout_lag: Gauge,
    /// Reconciliations that found messages the bus never brought.
    pub(crate) reconciliations_found: Counter,
}

/// Latency buckets from 100 µs to about 6.5 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut metrics = Self {
            registry: Registry::default(),
            connections_current: Gauge::default(),
            connections_opened: Counter::default(),
            connections_closed: Family::default(),
            subscriptions_current: Gauge::default(),
            frames_received: Family::default(),
            frames_sent: Family::default(),
            message_frames_sent: Counter::default(),
            messages_received: Counter::default(),
            messages_rejected: Family::default(),
            messages_stored: Counter::default(),
            messages_published: Counter::default(),
            publish_failures: Counter::default(),
            messages_delivered: Counter::default(),
            store_latency: latency_histogram(),
            publish_latency: latency_histogram(),
            bus_reconnects: Counter::default(),
            bus_decode_failures: Counter::default(),
            bus_received: Counter::default(),
            bus_rooms_watched: Gauge::default(),
            slow_consumer_disconnects: Counter::default(),
            write_timeouts: Counter::default(),
            connections_refused: Family::default(),
            accept_errors: Counter::default(),
            bus_unconfirmed_dropped: Counter::default(),
            gap_backfills: Counter::default(),
            publish_dropped: Counter::default(),
            presence_gossip_dropped: Counter::default(),
            presence_instances: Gauge::default(),
            presence_entries: Gauge::default(),
            presence_instances_expired: Counter::default(),
            presence_resyncs_requested: Counter::default(),
            presence_entries_refused: Counter::default(),
            presence_joins: Counter::default(),
            presence_leaves: Counter::default(),
            typing_sent: Counter::default(),
            fanout_lag: Gauge::default(),
            reconciliations_found: Counter::default(),
        };
        metrics.message_frames_sent = metrics
            .frames_sent
            .get_or_create(&[("command", "MESSAGE")])
            .clone();
        let r = &mut metrics.registry;
        // prometheus-client appends `_total` to counters.
        r.register(
            "chat_connections_current",
            "Open STOMP connections",
            metrics.connections_current.clone(),
        );
        r.register(
            "chat_connections_opened",
            "STOMP connections accepted",
            metrics.connections_opened.clone(),
        );
        r.register(
            "chat_connections_closed",
            "STOMP connections ended, by reason",
            metrics.connections_closed.clone(),
        );
        r.register(
            "chat_subscriptions_current",
            "Active subscriptions (rooms and error queues)",
            metrics.subscriptions_current.clone(),
        );
        r.register(
            "chat_frames_received",
            "STOMP frames received, by command",
            metrics.frames_received.clone(),
        );
        r.register(
            "chat_frames_sent",
            "STOMP frames sent, by command",
            metrics.frames_sent.clone(),
        );
        r.register(
            "chat_messages_received",
            "Chat messages received over STOMP or REST",
            metrics.messages_received.clone(),
        );
        r.register(
            "chat_messages_rejected",
            "Chat messages refused, by error code",
            metrics.messages_rejected.clone(),
        );
        r.register(
            "chat_messages_stored",
            "Chat messages durably stored",
            metrics.messages_stored.clone(),
        );
        r.register(
            "chat_messages_published",
            "Chat messages handed to the bus",
            metrics.messages_published.clone(),
        );
        r.register(
            "chat_publish_failures",
            "Stored messages the bus did not take",
            metrics.publish_failures.clone(),
        );
        r.register(
            "chat_publish_dropped",
            "Stored messages not published because the publish queue was full (the bus was slow or down); other instances fetch them from the store",
            metrics.publish_dropped.clone(),
        );
        r.register(
            "chat_presence_gossip_dropped",
            "Presence signals dropped because their publish queue was full (other instances resynchronise)",
            metrics.presence_gossip_dropped.clone(),
        );
        r.register(
            "chat_presence_instances",
            "Other instances this one hears presence from",
            metrics.presence_instances.clone(),
        );
        r.register(
            "chat_presence_entries",
            "Presence entries (a user in a room through an instance) this instance holds, for every instance: about 100 bytes each",
            metrics.presence_entries.clone(),
        );
        r.register(
            "chat_presence_instances_expired",
            "Instances forgotten after CHAT_PRESENCE_TIMEOUT_MS of silence (crashed, or cut off from Redis); their users left",
            metrics.presence_instances_expired.clone(),
        );
        r.register(
            "chat_presence_resyncs_requested",
            "Whole presence states this instance asked for (a change it missed, a new instance, a bus interruption)",
            metrics.presence_resyncs_requested.clone(),
        );
        r.register(
            "chat_presence_entries_refused",
            "Presence entries ignored because an instance claimed more than a real one holds (forged gossip)",
            metrics.presence_entries_refused.clone(),
        );
        r.register(
            "chat_presence_joins",
            "Users whose first connection joined a room, as this instance saw it",
            metrics.presence_joins.clone(),
        );
        r.register(
            "chat_presence_leaves",
            "Users whose last connection left a room (or whose instance timed out), as this instance saw it",
            metrics.presence_leaves.clone(),
        );
        r.register(
            "chat_typing_sent",
            "Typing events this instance published (at most one per user and room per second)",
            metrics.typing_sent.clone(),
        );
        r.register(
            "chat_fanout_lag_messages",
            "Stored messages of followed rooms not yet delivered here, at the last reconciliation",
            metrics.fanout_lag.clone(),
        );
        r.register(
            "chat_reconciliations_found",
            "Reconciliations with the store that found messages the bus never brought",
            metrics.reconciliations_found.clone(),
        );
        r.register(
            "chat_messages_delivered",
            "MESSAGE frames queued to subscribers",
            metrics.messages_delivered.clone(),
        );
        r.register(
            "chat_store_latency_seconds",
            "Time to store one message (until committed)",
            metrics.store_latency.clone(),
        );
        r.register(
            "chat_publish_latency_seconds",
            "Time to publish one message to the bus",
            metrics.publish_latency.clone(),
        );
        r.register(
            "chat_bus_reconnects",
            "Reconnects of the bus connections",
            metrics.bus_reconnects.clone(),
        );
        r.register(
            "chat_bus_decode_failures",
            "Bus payloads that could not be decoded",
            metrics.bus_decode_failures.clone(),
        );
        r.register(
            "chat_bus_received",
            "Chat messages received from the bus (per-room channels: only this instance's rooms)",
            metrics.bus_received.clone(),
        );
        r.register(
            "chat_bus_rooms_watched",
            "Rooms whose own bus channel this instance is subscribed to (per-room mode)",
            metrics.bus_rooms_watched.clone(),
        );
        r.register(
            "chat_slow_consumer_disconnects",
            "Clients disconnected for falling behind",
            metrics.slow_consumer_disconnects.clone(),
        );
        r.register(
            "chat_write_timeouts",
            "Writes to a client that did not finish within CHAT_WRITE_TIMEOUT (the client was disconnected)",
            metrics.write_timeouts.clone(),
        );
        r.register(
            "chat_connections_refused",
            "WebSocket upgrades refused by CHAT_MAX_CONNECTIONS or CHAT_MAX_CONNECTIONS_PER_IP",
            metrics.connections_refused.clone(),
        );
        r.register(
            "chat_bus_unconfirmed_dropped",
            "Bus messages dropped because the store had neither them nor their predecessors (forged, or another history)",
            metrics.bus_unconfirmed_dropped.clone(),
        );
        r.register(
            "chat_accept_errors",
            "Connections the listener failed to accept (e.g. out of file descriptors)",
            metrics.accept_errors.clone(),
        );
        r.register(
            "chat_gap_backfills",
            "Gaps in a room's seq filled from the store",
            metrics.gap_backfills.clone(),
        );
        metrics
    }

    pub(crate) fn connection_refused(&self, limit: &'static str) {
        self.connections_refused
            .get_or_create(&[("limit", limit)])
            .inc();
    }

    pub(crate) fn frame_received(&self, command: &'static str) {
        self.frames_received
            .get_or_create(&[("command", command)])
            .inc();
    }

    pub(crate) fn frames_sent(&self, command: &'static str, count: u64) {
        self.frames_sent
            .get_or_create(&[("command", command)])
            .inc_by(count);
    }

    pub(crate) fn rejected(&self, code: &'static str) {
        self.messages_rejected
            .get_or_create(&[("code", code)])
            .inc();
    }

    pub(crate) fn connection_closed(&self, reason: CloseReason) {
        self.connections_closed
            .get_or_create(&[("reason", reason.as_str())])
            .inc();
        if reason == CloseReason::SlowConsumer {
            self.slow_consumer_disconnects.inc();
        }
    }

    /// The Prometheus text exposition, with the bus's own counters brought up to date.
    pub(crate) fn render(&self, bus: &dyn MessageBus) -> String {
        let counters = bus.counters();
        self.bus_reconnects.inc_by(
            counters
                .reconnects
                .saturating_sub(self.bus_reconnects.get()),
        );
        self.bus_decode_failures.inc_by(
            counters
                .decode_failures
                .saturating_sub(self.bus_decode_failures.get()),
        );
        self.bus_received
            .inc_by(counters.received.saturating_sub(self.bus_received.get()));
        self.bus_rooms_watched
            .set(i64::try_from(counters.rooms_watched).unwrap_or(i64::MAX));
        let mut text = String::new();
        if let Err(error) =
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
        {
            tracing::error!(%error, "cannot encode metrics");
        }
        text
    }
}

/// Measures a repository: store latency and stored messages.
pub(crate) struct MeasuredRepository {
    pub(crate) inner: Arc<dyn MessageRepository>,
    pub(crate) metrics: Arc<Metrics>,
}

#[async_trait]
impl MessageRepository for MeasuredRepository {
    async fn create_room(&self, room: NewRoom) -> Result<Room, RepositoryError> {
        self.inner.create_room(room).await
    }

    async fn find_room(&self, id: RoomId) -> Result<Option<Room>, RepositoryError> {
        self.inner.find_room(id).await
    }

    async fn list_rooms(&self, query: RoomListQuery) -> Result<Vec<Room>, RepositoryError> {
        self.inner.list_rooms(query).await
    }

    async fn append(&self, message: NewChatMessage) -> Result<ChatMessage, RepositoryError> {
        let started = Instant::now();
        let stored = self.inner.append(message).await;
        self.metrics
            .store_latency
            .observe(started.elapsed().as_secs_f64());
        if stored.is_ok() {
            self.metrics.messages_stored.inc();
        }
        stored
    }

    async fn history(
        &self,
        room: RoomId,
        query: HistoryQuery,
    ) -> Result<Vec<ChatMessage>, RepositoryError> {
        self.inner.history(room, query).await
    }

    async fn last_seqs(&self, rooms: &[RoomId]) -> Result<Vec<(RoomId, Seq)>, RepositoryError> {
        self.inner.last_seqs(rooms).await
    }

    async fn check_health(&self) -> Result<(), RepositoryError> {
        self.inner.check_health().await
    }
}

/// Measures a bus: publish latency, published messages and failures.
pub(crate) struct MeasuredBus {
    pub(crate) inner: Arc<dyn MessageBus>,
    pub(crate) metrics: Arc<Metrics>,
}

#[async_trait]
impl MessageBus for MeasuredBus {
    async fn publish(&self, message: &ChatMessagePublish) -> Result<(), BusError> {
        let started = Instant::now();
        let published = self.inner.publish(message).await;
        self.metrics
            .publish_latency
            .observe(started.elapsed().as_secs_f64());
        match published {
            Ok(()) => self.metrics.messages_published.inc(),
            Err(_) => self.metrics.publish_failures.inc(),
        };
        published
    }

    async fn publish_control(&self, event: &ControlEvent) -> Result<(), BusError> {
        self.inner.publish_control(event).await
    }

    async fn subscribe(&self) -> Result<BusEvents, BusError> {
        self.inner.subscribe().await
    }

    fn watch_room(&self, room: chat_domain::RoomId) {
        self.inner.watch_room(room);
    }

    fn unwatch_room(&self, room: chat_domain::RoomId) {
        self.inner.unwatch_room(room);
    }

    async fn check_health(&self) -> Result<(), BusError> {
        self.inner.check_health().await
    }

    fn counters(&self) -> chat_domain::BusCounters {
        self.inner.counters()
    }
}
