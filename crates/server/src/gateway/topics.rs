//! The driver of presence ([`chat_domain::Presence`]) and the fan-out of what is not a
//! chat message: presence snapshots, joins and leaves, typing, and per-user queues
//! (`/user/queue/read`). It holds no decisions: the state machine decides who joined or
//! left and what to gossip; typing's one-per-second rule is a keyed rate limiter. Events go
//! into the same bounded connection queues ([`Outbox`]) as chat messages, so a watcher
//! that stops reading is let go like any slow consumer.
//!
//! Presence gossip is published by one task, in order, from a bounded queue: receivers
//! rely on an instance's signals arriving in the order it made them. When the queue is
//! full a signal is dropped; the receivers notice the version gap at the next heart-beat
//! and ask for the whole state.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chat_domain::{
    ControlEvent, InstanceId, MessageBus, Presence, PresenceConfig, PresenceOutput, PresenceSignal,
    PresenceStats, RoomId, SenderId,
};
use chat_session::{Member, Topic, destination};
use chat_stomp::PreparedMessage;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::hub::{ConnectionId, Outbound, Outbox};
use crate::metrics::Metrics;

/// Presence signals waiting to be published; past it they are dropped (and healed).
const GOSSIP_QUEUE: usize = 10_000;
/// How often the typing limiters forget users who stopped typing.
const TYPING_SWEEP: Duration = Duration::from_secs(30);
/// The timer looks at presence at least this often (a state publication it deferred
/// becomes due in between).
const TICK_AT_MOST: Duration = Duration::from_millis(250);

type TypingLimiter = governor::DefaultKeyedRateLimiter<(SenderId, RoomId)>;

/// The subscriptions of one connection on one topic.
struct Watcher {
    outbox: Arc<Outbox>,
    subscriptions: Vec<Arc<str>>,
}

struct State {
    presence: Presence,
    watchers: HashMap<Topic, HashMap<ConnectionId, Watcher>>,
    /// Presence's counters as last handed to the metrics.
    reported: PresenceStats,
}

/// Presence, typing and per-user queues of one instance.
pub(crate) struct Topics {
    state: Mutex<State>,
    gossip: mpsc::Sender<PresenceSignal>,
    /// One typing event per user and room per second leaves this instance...
    typing_sent: TypingLimiter,
    /// ...and reaches its watchers, whichever instance it came from.
    typing_heard: TypingLimiter,
    next_event: AtomicU64,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Topics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topics").finish_non_exhaustive()
    }
}

fn typing_limiter() -> TypingLimiter {
    governor::RateLimiter::keyed(governor::Quota::per_second(NonZeroU32::MIN))
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

impl Topics {
    /// Starts presence for this instance (a fresh random id, so a restart is a new
    /// instance to the others), its publisher and its timer.
    pub(crate) fn start(
        bus: Arc<dyn MessageBus>,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let me = random_instance();
        let (gossip, queue) = mpsc::channel(GOSSIP_QUEUE);
        let topics = Arc::new(Self {
            state: Mutex::new(State {
                presence: Presence::new(me, PresenceConfig::with_timeout(timeout), now()),
                watchers: HashMap::new(),
                reported: PresenceStats::default(),
            }),
            gossip,
            typing_sent: typing_limiter(),
            typing_heard: typing_limiter(),
            next_event: AtomicU64::new(0),
            metrics,
        });
        tokio::spawn(publish(bus, queue));
        tokio::spawn(tick(Arc::downgrade(&topics)));
        topics.settle(&mut topics.state());
        topics
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    // --- from sessions ---------------------------------------------------------------

    /// Registers subscription `id` of `connection` on `topic`; a presence watcher gets the
    /// room's snapshot first, under the same lock as the joins and leaves, so it misses
    /// none and sees none twice.
    pub(crate) fn watch(
        &self,
        connection: ConnectionId,
        id: Arc<str>,
        topic: Topic,
        outbox: Arc<Outbox>,
    ) {
        let mut state = self.state();
        if let Topic::Presence(room) = topic {
            let members = state.presence.snapshot(room);
            let body = serde_json::json!({
                "type": "snapshot",
                "chatRoomId": room,
                "members": members,
            });
            let prepared = self.prepare(&destination::presence(room), &body);
            outbox.deliver(Outbound {
                prepared,
                subscription: id.clone(),
            });
        }
        let watcher = state
            .watchers
            .entry(topic)
            .or_default()
            .entry(connection)
            .or_insert_with(|| Watcher {
                outbox,
                subscriptions: Vec::new(),
            });
        watcher.subscriptions.push(id);
    }

    /// Ends subscription `id` of `connection` on `topic`.
    pub(crate) fn unwatch(&self, connection: ConnectionId, id: &str, topic: Topic) {
        let mut state = self.state();
        let Some(watchers) = state.watchers.get_mut(&topic) else {
            return;
        };
        if let Some(watcher) = watchers.get_mut(&connection) {
            watcher.subscriptions.retain(|s| s.as_ref() != id);
            if watcher.subscriptions.is_empty() {
                watchers.remove(&connection);
            }
        }
        if watchers.is_empty() {
            state.watchers.remove(&topic);
        }
    }

    /// Everything `connection` watched on `topics`, when it ends.
    pub(crate) fn forget(&self, connection: ConnectionId, topics: &[Topic]) {
        let mut state = self.state();
        for topic in topics {
            if let Some(watchers) = state.watchers.get_mut(topic) {
                watchers.remove(&connection);
                if watchers.is_empty() {
                    state.watchers.remove(topic);
                }
            }
        }
    }

    /// A connection of `member` is now in `room`.
    pub(crate) fn enter(&self, room: RoomId, member: &Member) {
        let mut state = self.state();
        state
            .presence
            .handle_enter(room, member.user, &member.nickname);
        self.settle(&mut state);
    }

    /// A connection of `user` left `room`.
    pub(crate) fn leave(&self, room: RoomId, user: SenderId) {
        let mut state = self.state();
        state.presence.handle_leave(room, user);
        self.settle(&mut state);
    }

    /// Whether `member`'s typing in `room` goes out now (one per second).
    pub(crate) fn may_announce_typing(&self, room: RoomId, user: SenderId) -> bool {
        self.typing_sent.check_key(&(user, room)).is_ok()
    }

    /// Who is in `room`, for `GET /api/chatrooms/{id}/presence`.
    pub(crate) fn snapshot(&self, room: RoomId) -> Vec<chat_domain::PresenceMember> {
        self.state().presence.snapshot(room)
    }

    // --- from the bus ----------------------------------------------------------------

    /// A control event from the bus (any instance's, this one's too).
    pub(crate) fn handle_control(&self, event: &ControlEvent) {
        match event {
            ControlEvent::Presence(signal) => {
                let mut state = self.state();
                state.presence.handle_signal(signal, now());
                self.settle(&mut state);
            }
            ControlEvent::Typing {
                chat_room_id,
                user_id,
                nickname,
            } => {
                if self
                    .typing_heard
                    .check_key(&(*user_id, *chat_room_id))
                    .is_err()
                {
                    return;
                }
                self.deliver(
                    &self.state(),
                    Topic::Typing(*chat_room_id),
                    &destination::typing(*chat_room_id),
                    || {
                        serde_json::json!({
                            "chatRoomId": chat_room_id,
                            "userId": user_id,
                            "nickname": nickname,
                        })
                    },
                );
            }
            ControlEvent::ReadCursor {
                chat_room_id,
                user_id,
                last_read_seq,
            } => self.deliver(
                &self.state(),
                Topic::Reads(*user_id),
                destination::READ_QUEUE,
                || serde_json::json!({"chatRoomId": chat_room_id, "lastReadSeq": last_read_seq}),
            ),
            ControlEvent::MemberRemoved { .. } => {}
        }
    }

    /// The bus may have lost signals: presence resynchronises.
    pub(crate) fn handle_bus_gap(&self) {
        let mut state = self.state();
        state.presence.handle_bus_gap(now());
        self.settle(&mut state);
    }

    // --- internals -------------------------------------------------------------------

    /// Carries out what presence decided.
    fn settle(&self, state: &mut State) {
        while let Some(output) = state.presence.poll_output() {
            match output {
                PresenceOutput::Publish(signal) => {
                    if self.gossip.try_send(signal).is_err() {
                        self.metrics.presence_gossip_dropped.inc();
                    }
                }
                PresenceOutput::Joined {
                    room,
                    user,
                    nickname,
                } => self.announce(state, "join", room, user, &nickname),
                PresenceOutput::Left {
                    room,
                    user,
                    nickname,
                } => self.announce(state, "leave", room, user, &nickname),
            }
        }
        let stats = state.presence.stats();
        let reported = std::mem::replace(&mut state.reported, stats);
        self.metrics
            .presence_instances_expired
            .inc_by(stats.instances_expired - reported.instances_expired);
        self.metrics
            .presence_resyncs_requested
            .inc_by(stats.resyncs_requested - reported.resyncs_requested);
        self.metrics
            .presence_entries_refused
            .inc_by(stats.entries_refused - reported.entries_refused);
        self.metrics
            .presence_instances
            .set(i64::try_from(stats.instances).unwrap_or(i64::MAX));
        self.metrics
            .presence_entries
            .set(i64::try_from(stats.entries).unwrap_or(i64::MAX));
    }

    fn announce(&self, state: &State, kind: &str, room: RoomId, user: SenderId, nickname: &str) {
        match kind {
            "join" => self.metrics.presence_joins.inc(),
            _ => self.metrics.presence_leaves.inc(),
        };
        self.deliver(
            state,
            Topic::Presence(room),
            &destination::presence(room),
            || {
                serde_json::json!({
                    "type": kind,
                    "chatRoomId": room,
                    "userId": user,
                    "nickname": nickname,
                })
            },
        );
    }

    /// One MESSAGE to every subscription on `topic`, encoded once; nothing is encoded when
    /// nobody watches.
    fn deliver(
        &self,
        state: &State,
        topic: Topic,
        destination: &str,
        body: impl FnOnce() -> serde_json::Value,
    ) {
        let Some(watchers) = state.watchers.get(&topic) else {
            return;
        };
        let prepared = self.prepare(destination, &body());
        for watcher in watchers.values() {
            for id in &watcher.subscriptions {
                watcher.outbox.deliver(Outbound {
                    prepared: prepared.clone(),
                    subscription: id.clone(),
                });
            }
        }
    }

    fn prepare(&self, destination: &str, body: &serde_json::Value) -> Arc<PreparedMessage> {
        let n = self.next_event.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::to_vec(body).unwrap_or_default();
        Arc::new(PreparedMessage::new(
            destination,
            &format!("event-{n}"),
            "application/json",
            &[],
            &body,
        ))
    }
}

/// A fresh instance id: the standard library's per-process random hash keys, over the
/// time and the process id.
fn random_instance() -> InstanceId {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    hasher.write_u128(since_epoch.as_nanos());
    hasher.write_u32(std::process::id());
    InstanceId(hasher.finish())
}

/// Publishes presence gossip one signal at a time, in order.
async fn publish(bus: Arc<dyn MessageBus>, mut queue: mpsc::Receiver<PresenceSignal>) {
    while let Some(signal) = queue.recv().await {
        if let Err(error) = bus.publish_control(&ControlEvent::Presence(signal)).await {
            tracing::debug!(%error, "a presence signal was not published; receivers resynchronise");
        }
    }
}

/// Presence's clock: heart-beats, expiries, deferred state publications; and the typing
/// limiters' sweep. Ends when the instance's topics are gone.
async fn tick(topics: std::sync::Weak<Topics>) {
    let mut next_sweep = Instant::now() + TYPING_SWEEP;
    loop {
        let Some(strong) = topics.upgrade() else {
            return;
        };
        let deadline = {
            let mut state = strong.state();
            state.presence.handle_timeout(now());
            strong.settle(&mut state);
            Instant::from_std(state.presence.poll_timeout())
        };
        if Instant::now() >= next_sweep {
            strong.typing_sent.retain_recent();
            strong.typing_heard.retain_recent();
            next_sweep = Instant::now() + TYPING_SWEEP;
        }
        drop(strong);
        let wake = deadline.min(next_sweep).min(Instant::now() + TICK_AT_MOST);
        tokio::time::sleep_until(wake).await;
    }
}
