//! The delivery engine: which subscription of this instance follows which room, and every
//! decision about getting each room's messages to them exactly once and in `seq` order —
//! the reorder window, gap fills, catch-up after a bus interruption, reconciliation with the
//! store, resume replays and their bounded hold, slow-consumer verdicts.
//!
//! A pure state machine in the style of quinn-proto: no sockets, no runtime, no clock of
//! its own. Inputs are `handle_*` calls (with `now` passed in); outputs are
//! [`DeliveryEngine::poll_action`] (deliver this message to these subscriptions, fetch this
//! from the store, answer this subscription, disconnect this connection) and
//! [`DeliveryEngine::poll_timeout`]. A thin driver runs the fetches, moves the bytes and
//! feeds the results back.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{
    ChatError, ChatMessagePublish, HistoryLimit, HistoryQuery, Room, RoomId, RoomSequencer, Seq,
};

/// A connection of this instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

/// A subscription: its connection and the client's `id` header.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubscriptionKey {
    /// The connection the subscription belongs to.
    pub connection: ConnectionId,
    /// The `id` header of its SUBSCRIBE frame, unique within the connection.
    pub id: Arc<str>,
}

/// How the engine is tuned.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Live messages held per subscription while its replay runs; past it the connection
    /// is let go as a slow consumer.
    pub held_limit: usize,
    /// How long a message that arrived ahead of its predecessors waits for them before the
    /// gap is fetched. Concurrent senders publish in a racy order, so small reorders are
    /// normal and a few milliseconds save a query each.
    pub reorder_window: Duration,
    /// Messages held ahead of a gap per room; past it the gap is fetched at once.
    pub max_ahead: usize,
    /// Wait before fetching a gap again after the store could not be read.
    pub retry_after: Duration,
    /// Period of the comparison with the store that catches what the bus never brought.
    pub reconcile_every: Duration,
    /// How long a room the store showed ahead may stay behind before it is fetched, so
    /// messages already on their way through the bus can land.
    pub reconcile_grace: Duration,
    /// Page size of every fetch.
    pub page: HistoryLimit,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            held_limit: 4096,
            reorder_window: Duration::from_millis(30),
            max_ahead: 1024,
            retry_after: Duration::from_millis(250),
            reconcile_every: Duration::from_secs(2),
            reconcile_grace: Duration::from_millis(250),
            page: HistoryLimit::parse(i64::from(HistoryLimit::MAX))
                .unwrap_or(HistoryLimit::DEFAULT),
        }
    }
}

/// Names one fetch, so a late answer for a room that was left and followed again is not
/// taken for the new one's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FetchId(u64);

/// What the driver must read from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetch {
    /// The room itself (`find_room`): whether it exists and its `last_seq`.
    Room {
        /// Which fetch this is; the engine ignores an answer to one it no longer waits for.
        id: FetchId,
        /// The room to look up.
        room: RoomId,
    },
    /// Up to one page of `room` with `after < seq < before`, oldest first.
    Range {
        /// Which fetch this is; the engine ignores an answer to one it no longer waits for.
        id: FetchId,
        /// The room to read.
        room: RoomId,
        /// The last seq delivered in the room: the page starts after it.
        after: Seq,
        /// The first message held ahead of a gap, which bounds the page; `None`: read to
        /// the end of the room.
        before: Option<Seq>,
        /// The most messages to read ([`EngineConfig::page`]).
        limit: HistoryLimit,
    },
    /// The newest seq of each of `rooms`, in one query.
    LastSeqs {
        /// Which fetch this is; the engine ignores an answer to one it no longer waits for.
        id: FetchId,
        /// Every room the engine follows.
        rooms: Vec<RoomId>,
    },
    /// A resume: the stored messages `after < seq <= until` of `room`, written to this one
    /// subscription, paced by its connection; answer with [`Fetched::Replayed`].
    Replay {
        /// Which fetch this is; the engine ignores an answer to one it no longer waits for.
        id: FetchId,
        /// The subscription to write the messages to.
        key: SubscriptionKey,
        /// The room to read.
        room: RoomId,
        /// The client's `x-resume-after`: it has every message up to this seq.
        after: Seq,
        /// The newest seq delivered in the room when the subscription was admitted; later
        /// messages reach the subscription live, once the replay is done.
        until: Seq,
    },
}

/// The driver's answer to a [`Fetch`].
#[derive(Debug, Clone)]
pub enum Fetched {
    /// For [`Fetch::Room`]: the room, or `Ok(None)` when it does not exist.
    Room(Result<Option<Room>, ChatError>),
    /// For [`Fetch::Range`]: the page, in ascending seq order.
    Range(Result<Vec<ChatMessagePublish>, ChatError>),
    /// For [`Fetch::LastSeqs`]: each room that exists, with its newest seq.
    LastSeqs(Result<Vec<(RoomId, Seq)>, ChatError>),
    /// For [`Fetch::Replay`]: `Ok` once every message is written to the subscription; an
    /// error disconnects it with [`DisconnectReason::ReplayFailed`].
    Replayed(Result<(), ChatError>),
}

/// Why the engine lets a connection go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectReason {
    /// It fell too far behind (its replay stalled while live messages piled up).
    SlowConsumer,
    /// Its resume could not be replayed (the store failed); it should reconnect and resume.
    ReplayFailed(String),
}

/// What the driver must do next.
#[derive(Debug, Clone)]
pub enum Action {
    /// Deliver `message` to each of `to`, in this order relative to earlier deliveries.
    Deliver {
        /// The message, shared by all its deliveries.
        message: Arc<ChatMessagePublish>,
        /// The subscriptions to write it to; never empty.
        to: Vec<SubscriptionKey>,
    },
    /// Read from the store, then call [`DeliveryEngine::handle_fetched`].
    Fetch(Fetch),
    /// Answer a subscription request: `Ok` means subscribed (a replay, if any, follows as a
    /// separate fetch, after this answer).
    Subscribed {
        /// The subscription that asked.
        key: SubscriptionKey,
        /// `Ok`, or why it was refused: [`ChatError::UnknownRoom`],
        /// [`ChatError::InvalidResume`] or a store error.
        result: Result<(), ChatError>,
    },
    /// Close this connection for this reason.
    Disconnect {
        /// The connection to close, with all its subscriptions.
        connection: ConnectionId,
        /// Why, to tell the client.
        reason: DisconnectReason,
    },
    /// This instance follows `room` from now on: ask the bus to carry it
    /// ([`crate::MessageBus::watch_room`]). Comes before the room's first fetch.
    Watch(RoomId),
    /// This instance no longer follows `room` ([`crate::MessageBus::unwatch_room`]); one
    /// for every [`Action::Watch`].
    Unwatch(RoomId),
}

/// Counters the driver turns into metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Deliveries handed out (one per subscription per message).
    pub delivered: u64,
    /// Range fetches started to fill a gap or catch up.
    pub gap_fetches: u64,
    /// Reconciliations that found a room behind the store.
    pub reconciliations_found: u64,
    /// Stored messages of followed rooms not yet delivered, at the last reconciliation.
    pub lag: i64,
    /// Bus messages dropped because the store did not have them (or their predecessors)
    /// when asked after they arrived: forged, or from another history.
    pub unconfirmed_dropped: u64,
}

#[derive(Debug)]
struct Subscriber {
    /// Messages up to this seq are the client's already.
    skip_through: Seq,
    /// `Some` while a replay runs: live messages wait here, in order.
    held: Option<Vec<Arc<ChatMessagePublish>>>,
    replay: Option<FetchId>,
}

#[derive(Debug)]
struct PendingSubscribe {
    key: SubscriptionKey,
    resume_after: Option<Seq>,
}

#[derive(Debug, Default)]
struct RoomState {
    /// `true` once the store's `last_seq` is known and the sequencer follows the room.
    following: bool,
    subscribers: HashMap<SubscriptionKey, Subscriber>,
    /// Subscriptions waiting for the room fetch (the first one, or one that resumes).
    pending: Vec<PendingSubscribe>,
    room_fetch: Option<FetchId>,
    /// Messages that arrived before a predecessor, and when to stop waiting for it.
    ahead: BTreeMap<Seq, ChatMessagePublish>,
    ahead_deadline: Option<Instant>,
    /// The one range fetch of this room in flight, and its upper bound.
    range_fetch: Option<(FetchId, Option<Seq>)>,
    /// A catch-up to the end is wanted once the current range fetch is done.
    catch_up: bool,
    /// The store's seq at a reconciliation that found the room behind, and when to fetch.
    behind: Option<(Seq, Instant)>,
    /// When to try again after a fetch the store could not serve.
    retry_at: Option<Instant>,
    /// A confirming read to the store's end is running; messages held ahead up to this
    /// seq arrived before it started, so the store must have them if they are real.
    confirm_upto: Option<Seq>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Ahead,
    Behind,
    Retry,
}

/// The engine of one instance (or of one shard of its rooms).
#[derive(Debug)]
pub struct DeliveryEngine {
    config: EngineConfig,
    rooms: HashMap<RoomId, RoomState>,
    sequencer: RoomSequencer,
    subscription_rooms: HashMap<SubscriptionKey, RoomId>,
    connections: HashMap<ConnectionId, Vec<SubscriptionKey>>,
    actions: VecDeque<Action>,
    /// Deadlines, lazily invalidated: a popped entry counts only if the room still has it.
    timers: BinaryHeap<Reverse<(Instant, RoomId, Timer)>>,
    next_reconcile: Option<Instant>,
    reconcile_fetch: Option<FetchId>,
    next_fetch: u64,
    stats: EngineStats,
}

impl DeliveryEngine {
    /// An engine with no subscription yet, tuned by `config`.
    #[must_use]
    pub fn new(config: EngineConfig) -> Self {
        Self {
            config,
            rooms: HashMap::new(),
            sequencer: RoomSequencer::new(),
            subscription_rooms: HashMap::new(),
            connections: HashMap::new(),
            actions: VecDeque::new(),
            timers: BinaryHeap::new(),
            next_reconcile: None,
            reconcile_fetch: None,
            next_fetch: 0,
            stats: EngineStats::default(),
        }
    }

    // ----- getters -----

    /// Counters since the start.
    #[must_use]
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// The newest seq delivered in `room`, if it is followed.
    #[must_use]
    pub fn last_delivered(&self, room: RoomId) -> Option<Seq> {
        self.sequencer.last_delivered(room)
    }

    /// Rooms with at least one subscription (or one on its way).
    #[must_use]
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    // ----- inputs -----

    /// A subscription to `room`, from its newest message on, or resuming after
    /// `resume_after`. Answered with [`Action::Subscribed`]; a resume from an older seq
    /// then gets a [`Fetch::Replay`], and live messages wait for it.
    pub fn handle_subscribe(
        &mut self,
        key: SubscriptionKey,
        room: RoomId,
        resume_after: Option<Seq>,
        now: Instant,
    ) {
        // The session refuses a duplicate id, so an existing key can only be a leftover.
        self.handle_unsubscribe(&key);
        self.ensure_reconcile_timer(now);
        self.subscription_rooms.insert(key.clone(), room);
        self.connections
            .entry(key.connection)
            .or_default()
            .push(key.clone());
        let state = self.rooms.entry(room).or_insert_with(|| {
            self.actions.push_back(Action::Watch(room));
            RoomState::default()
        });
        if state.following && resume_after.is_none() {
            let last = self.sequencer.last_delivered(room).unwrap_or(Seq(0));
            state.subscribers.insert(
                key.clone(),
                Subscriber {
                    skip_through: last,
                    held: None,
                    replay: None,
                },
            );
            self.actions.push_back(Action::Subscribed {
                key,
                result: Ok(()),
            });
            return;
        }
        // First subscriber (start following at the store's last_seq), or a resume point
        // to check against the store rather than this instance's view, which may lag.
        state.pending.push(PendingSubscribe { key, resume_after });
        if state.room_fetch.is_none() {
            let id = self.fetch_id();
            let state = self.rooms.get_mut(&room).expect("just inserted");
            state.room_fetch = Some(id);
            self.actions
                .push_back(Action::Fetch(Fetch::Room { id, room }));
        }
    }

    /// The client left one subscription.
    pub fn handle_unsubscribe(&mut self, key: &SubscriptionKey) {
        let Some(room) = self.subscription_rooms.remove(key) else {
            return;
        };
        if let Some(keys) = self.connections.get_mut(&key.connection) {
            keys.retain(|k| k != key);
            if keys.is_empty() {
                self.connections.remove(&key.connection);
            }
        }
        if let Some(state) = self.rooms.get_mut(&room) {
            state.subscribers.remove(key);
            state.pending.retain(|p| &p.key != key);
        }
        self.forget_if_empty(room);
    }

    /// The connection is gone: all its subscriptions end.
    pub fn handle_disconnect(&mut self, connection: ConnectionId) {
        for key in self.connections.remove(&connection).unwrap_or_default() {
            self.handle_unsubscribe(&key);
        }
    }

    /// A message from the bus, or one stored through this instance (delivered at once,
    /// without waiting for the bus).
    pub fn handle_bus_message(&mut self, message: ChatMessagePublish, now: Instant) {
        let room = message.chat_room_id;
        let last = self.sequencer.last_delivered(room);
        let Some(state) = self.rooms.get_mut(&room) else {
            return;
        };
        let (Some(seq), Some(last)) = (message.seq, last.filter(|_| state.following)) else {
            if !state.following {
                // Its last_seq is on its way; judge this one when it is known.
                if let Some(seq) = message.seq
                    && state.ahead.len() < self.config.max_ahead
                {
                    state.ahead.insert(seq, message);
                }
            } else {
                // A Spring publisher: no seq to order by, deliver as it comes.
                self.deliver(room, Arc::new(message));
            }
            return;
        };
        if seq <= last {
            return;
        }
        if seq == last.next() {
            self.sequencer.delivered(room, seq);
            self.deliver(room, Arc::new(message));
            self.deliver_ahead_in_order(room);
            return;
        }
        state.ahead.insert(seq, message);
        if state.ahead.len() > self.config.max_ahead {
            self.fetch_gap(room);
        } else if state.ahead_deadline.is_none() && state.range_fetch.is_none() {
            let at = now + self.config.reorder_window;
            state.ahead_deadline = Some(at);
            self.timers.push(Reverse((at, room, Timer::Ahead)));
        }
    }

    /// The bus says messages may have been missed (reconnect, lag): every followed room
    /// catches up to the store's end.
    pub fn handle_bus_gap(&mut self) {
        let rooms: Vec<RoomId> = self
            .rooms
            .iter()
            .filter(|(_, s)| s.following)
            .map(|(r, _)| *r)
            .collect();
        for room in rooms {
            self.catch_up(room);
        }
    }

    /// The bus carries `room` only from now on ([`crate::BusEvent::MayHaveMissedRoom`]):
    /// the room catches up to the store's end, at once or as soon as its first fetch
    /// tells where it stands.
    pub fn handle_room_gap(&mut self, room: RoomId) {
        match self.rooms.get_mut(&room) {
            Some(state) if state.following => self.catch_up(room),
            Some(state) => state.catch_up = true,
            None => {}
        }
    }

    /// The answer to one of this engine's fetches.
    pub fn handle_fetched(&mut self, fetch: &Fetch, fetched: Fetched, now: Instant) {
        match (fetch, fetched) {
            (Fetch::Room { id, room }, Fetched::Room(result)) => {
                self.on_room(*id, *room, result, now);
            }
            (
                Fetch::Range {
                    id,
                    room,
                    after,
                    before,
                    limit,
                },
                Fetched::Range(result),
            ) => {
                let query = HistoryQuery::range(*after, *before, *limit);
                self.on_range(*id, *room, query, result, now);
            }
            (Fetch::LastSeqs { id, .. }, Fetched::LastSeqs(result)) => {
                self.on_last_seqs(*id, result, now);
            }
            (Fetch::Replay { id, key, until, .. }, Fetched::Replayed(result)) => {
                self.on_replayed(*id, key, *until, result);
            }
            // A mismatched answer is a driver bug; the fetch stays open and is retried by
            // the next timer or reconciliation.
            _ => {}
        }
    }

    /// Time passed: reorder windows closed, grace periods over, reconciliation due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, room, timer))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(state) = self.rooms.get_mut(&room) else {
                continue;
            };
            match timer {
                Timer::Ahead if state.ahead_deadline == Some(at) => {
                    state.ahead_deadline = None;
                    self.fetch_gap(room);
                }
                Timer::Behind if state.behind.is_some_and(|(_, t)| t == at) => {
                    let (stored, _) = state.behind.take().expect("checked");
                    let last = self.sequencer.last_delivered(room).unwrap_or(Seq(0));
                    if last < stored {
                        self.stats.reconciliations_found += 1;
                        self.catch_up(room);
                    }
                }
                Timer::Retry if state.retry_at == Some(at) => {
                    state.retry_at = None;
                    if state.ahead.is_empty() {
                        if std::mem::take(&mut state.catch_up) {
                            self.catch_up(room);
                        }
                    } else {
                        self.fetch_gap(room);
                    }
                }
                _ => {}
            }
        }
        if let Some(at) = self.next_reconcile
            && at <= now
        {
            self.next_reconcile = Some(now + self.config.reconcile_every);
            self.start_reconciliation();
        }
    }

    // ----- outputs -----

    /// The next thing the driver must do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When to call [`DeliveryEngine::handle_timeout`] next (possibly early: a deadline
    /// that was cancelled meanwhile still shows here once).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse((at, _, _))| *at);
        match (timer, self.next_reconcile) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ----- internals -----

    fn fetch_id(&mut self) -> FetchId {
        self.next_fetch += 1;
        FetchId(self.next_fetch)
    }

    fn ensure_reconcile_timer(&mut self, now: Instant) {
        if self.next_reconcile.is_none() {
            self.next_reconcile = Some(now + self.config.reconcile_every);
        }
    }

    fn forget_if_empty(&mut self, room: RoomId) {
        let empty = self
            .rooms
            .get(&room)
            .is_some_and(|s| s.subscribers.is_empty() && s.pending.is_empty());
        if empty {
            self.rooms.remove(&room);
            self.sequencer.forget(room);
            self.actions.push_back(Action::Unwatch(room));
        }
        if self.rooms.is_empty() {
            self.next_reconcile = None;
        }
    }

    fn on_room(
        &mut self,
        id: FetchId,
        room: RoomId,
        result: Result<Option<Room>, ChatError>,
        now: Instant,
    ) {
        let Some(state) = self.rooms.get_mut(&room) else {
            return;
        };
        if state.room_fetch != Some(id) {
            return;
        }
        state.room_fetch = None;
        let pending = std::mem::take(&mut state.pending);
        let found = match result {
            Ok(Some(found)) => found,
            outcome => {
                let error = match outcome {
                    Err(error) => error,
                    _ => ChatError::UnknownRoom(room),
                };
                for p in pending {
                    self.refuse(p.key, error.clone());
                }
                self.forget_if_empty(room);
                return;
            }
        };
        if !state.following {
            state.following = true;
            self.sequencer.follow(room, found.last_seq);
        }
        for p in pending {
            self.admit(room, p, found.last_seq);
        }
        // What arrived while the room was being looked up, judged now.
        let state = self.rooms.get_mut(&room).expect("present");
        let held = std::mem::take(&mut state.ahead);
        let catch_up = std::mem::take(&mut state.catch_up);
        for message in held.into_values() {
            self.handle_bus_message(message, now);
        }
        if catch_up {
            self.catch_up(room);
        }
    }

    fn refuse(&mut self, key: SubscriptionKey, error: ChatError) {
        self.subscription_rooms.remove(&key);
        if let Some(keys) = self.connections.get_mut(&key.connection) {
            keys.retain(|k| k != &key);
        }
        self.actions.push_back(Action::Subscribed {
            key,
            result: Err(error),
        });
    }

    fn admit(&mut self, room: RoomId, pending: PendingSubscribe, stored_last: Seq) {
        let PendingSubscribe { key, resume_after } = pending;
        if let Some(after) = resume_after
            && after > stored_last
        {
            self.refuse(
                key,
                ChatError::InvalidResume {
                    room,
                    requested: after,
                    last_seq: stored_last,
                },
            );
            return;
        }
        let last = self.sequencer.last_delivered(room).unwrap_or(Seq(0));
        let replay_until = resume_after.filter(|after| *after < last).map(|_| last);
        let replay = replay_until.map(|_| self.fetch_id());
        let state = self.rooms.get_mut(&room).expect("present");
        state.subscribers.insert(
            key.clone(),
            Subscriber {
                skip_through: resume_after.map_or(last, |after| after.max(Seq(0))),
                held: replay.map(|_| Vec::new()),
                replay,
            },
        );
        self.actions.push_back(Action::Subscribed {
            key: key.clone(),
            result: Ok(()),
        });
        if let (Some(id), Some(until), Some(after)) = (replay, replay_until, resume_after) {
            self.actions.push_back(Action::Fetch(Fetch::Replay {
                id,
                key,
                room,
                after: after.max(Seq(0)),
                until,
            }));
        }
    }

    fn on_replayed(
        &mut self,
        id: FetchId,
        key: &SubscriptionKey,
        until: Seq,
        result: Result<(), ChatError>,
    ) {
        let Some(room) = self.subscription_rooms.get(key).copied() else {
            return;
        };
        let Some(subscriber) = self
            .rooms
            .get_mut(&room)
            .and_then(|s| s.subscribers.get_mut(key))
        else {
            return;
        };
        if subscriber.replay != Some(id) {
            return;
        }
        subscriber.replay = None;
        if let Err(error) = result {
            subscriber.held = None;
            self.actions.push_back(Action::Disconnect {
                connection: key.connection,
                reason: DisconnectReason::ReplayFailed(error.to_string()),
            });
            return;
        }
        subscriber.skip_through = subscriber.skip_through.max(until);
        for message in subscriber.held.take().unwrap_or_default() {
            self.stats.delivered += 1;
            self.actions.push_back(Action::Deliver {
                message,
                to: vec![key.clone()],
            });
        }
    }

    /// Hands `message` to every subscription of `room` that does not have it yet.
    fn deliver(&mut self, room: RoomId, message: Arc<ChatMessagePublish>) {
        let Some(state) = self.rooms.get_mut(&room) else {
            return;
        };
        let mut to = Vec::with_capacity(state.subscribers.len());
        let mut too_slow = Vec::new();
        for (key, subscriber) in &mut state.subscribers {
            if message
                .seq
                .is_some_and(|seq| seq <= subscriber.skip_through)
            {
                continue;
            }
            match &mut subscriber.held {
                // Past the limit the connection is let go once; nothing more piles up for
                // it meanwhile.
                Some(held) if held.len() < self.config.held_limit => held.push(message.clone()),
                Some(held) if held.len() == self.config.held_limit => {
                    held.push(message.clone());
                    too_slow.push(key.connection);
                }
                Some(_) => {}
                None => to.push(key.clone()),
            }
        }
        for connection in too_slow {
            self.actions.push_back(Action::Disconnect {
                connection,
                reason: DisconnectReason::SlowConsumer,
            });
        }
        if !to.is_empty() {
            self.stats.delivered += to.len() as u64;
            self.actions.push_back(Action::Deliver { message, to });
        }
    }

    /// Delivers held messages that are now next in line; stops at the next hole.
    fn deliver_ahead_in_order(&mut self, room: RoomId) {
        loop {
            let Some(state) = self.rooms.get_mut(&room) else {
                return;
            };
            let Some(entry) = state.ahead.first_entry() else {
                state.ahead_deadline = None;
                return;
            };
            let last = self.sequencer.last_delivered(room).unwrap_or(Seq(0));
            let seq = *entry.key();
            if seq <= last {
                entry.remove();
            } else if seq == last.next() {
                let message = entry.remove();
                self.sequencer.delivered(room, seq);
                self.deliver(room, Arc::new(message));
            } else {
                return;
            }
        }
    }

    /// Fetches the hole before the first message held ahead.
    fn fetch_gap(&mut self, room: RoomId) {
        let Some(state) = self.rooms.get(&room) else {
            return;
        };
        let Some(first) = state.ahead.keys().next().copied() else {
            return;
        };
        self.start_range(room, Some(first));
    }

    /// Fetches everything stored after what was delivered.
    fn catch_up(&mut self, room: RoomId) {
        let Some(state) = self.rooms.get_mut(&room) else {
            return;
        };
        if state.range_fetch.is_some() {
            state.catch_up = true;
            return;
        }
        self.start_range(room, None);
    }

    fn start_range(&mut self, room: RoomId, before: Option<Seq>) {
        let Some(last) = self.sequencer.last_delivered(room) else {
            return;
        };
        let id = self.fetch_id();
        let Some(state) = self.rooms.get_mut(&room) else {
            return;
        };
        if state.range_fetch.is_some() {
            return;
        }
        state.range_fetch = Some((id, before));
        state.ahead_deadline = None;
        self.stats.gap_fetches += 1;
        self.actions.push_back(Action::Fetch(Fetch::Range {
            id,
            room,
            after: last,
            before,
            limit: self.config.page,
        }));
    }

    fn on_range(
        &mut self,
        id: FetchId,
        room: RoomId,
        query: HistoryQuery,
        result: Result<Vec<ChatMessagePublish>, ChatError>,
        now: Instant,
    ) {
        let Some(state) = self.rooms.get_mut(&room) else {
            return;
        };
        let Some((current, before)) = state.range_fetch else {
            return;
        };
        if current != id {
            return;
        }
        state.range_fetch = None;
        let page = match result {
            Ok(page) => page,
            Err(_) => {
                // Never step over the gap (that would lose the missing messages for every
                // subscriber here): keep the position, try again later, and bound what
                // waits by letting go of the newest held messages — the store has them.
                let limit = self.config.max_ahead / 2;
                while state.ahead.len() > limit {
                    state.ahead.pop_last();
                }
                if before.is_none() {
                    state.catch_up = true;
                }
                let at = now + self.config.retry_after;
                state.retry_at = Some(at);
                self.timers.push(Reverse((at, room, Timer::Retry)));
                return;
            }
        };
        let len = page.len();
        for message in page {
            let last = self.sequencer.last_delivered(room).unwrap_or(Seq(0));
            match message.seq {
                Some(seq) if seq == last.next() => {
                    self.sequencer.delivered(room, seq);
                    self.deliver(room, Arc::new(message));
                }
                _ => {}
            }
        }
        self.deliver_ahead_in_order(room);
        let last = self.sequencer.last_delivered(room).unwrap_or(Seq(0));
        let Some(state) = self.rooms.get_mut(&room) else {
            return;
        };
        if query.next_page(len, last).is_some() {
            self.start_range(room, before);
            return;
        }
        if std::mem::take(&mut state.catch_up) {
            self.start_range(room, None);
            return;
        }
        if before.is_none()
            && let Some(upto) = state.confirm_upto.take()
        {
            // The store was read to its end after these arrived and has neither them nor
            // what comes before them: never deliver what the store does not confirm.
            let unconfirmed: Vec<Seq> = state.ahead.range(..=upto).map(|(s, _)| *s).collect();
            for seq in &unconfirmed {
                state.ahead.remove(seq);
            }
            self.stats.unconfirmed_dropped += unconfirmed.len() as u64;
        }
        if let Some(&first) = state.ahead.keys().next()
            && first > last.next()
            && state.ahead_deadline.is_none()
        {
            if before.is_some() {
                // Published messages are committed, and so is everything before them: a
                // hole the store does not fill is not a late commit. Read the store to its
                // end, then drop what it does not have.
                state.confirm_upto = state.ahead.keys().next_back().copied();
                self.start_range(room, None);
                return;
            }
            // Arrived while the confirming read ran: judge them after the next wait.
            let at = now + self.config.reorder_window;
            state.ahead_deadline = Some(at);
            self.timers.push(Reverse((at, room, Timer::Ahead)));
        }
    }

    fn start_reconciliation(&mut self) {
        if self.reconcile_fetch.is_some() {
            return;
        }
        let rooms: Vec<RoomId> = self
            .rooms
            .iter()
            .filter(|(_, s)| s.following)
            .map(|(r, _)| *r)
            .collect();
        if rooms.is_empty() {
            self.stats.lag = 0;
            return;
        }
        let id = self.fetch_id();
        self.reconcile_fetch = Some(id);
        self.actions
            .push_back(Action::Fetch(Fetch::LastSeqs { id, rooms }));
    }

    fn on_last_seqs(
        &mut self,
        id: FetchId,
        result: Result<Vec<(RoomId, Seq)>, ChatError>,
        now: Instant,
    ) {
        if self.reconcile_fetch != Some(id) {
            return;
        }
        self.reconcile_fetch = None;
        let Ok(seqs) = result else {
            return;
        };
        let mut lag: i64 = 0;
        for (room, stored) in seqs {
            let Some(delivered) = self.sequencer.last_delivered(room) else {
                continue;
            };
            if stored <= delivered {
                continue;
            }
            lag = lag.saturating_add(stored.0 - delivered.0);
            let Some(state) = self.rooms.get_mut(&room) else {
                continue;
            };
            let at = match state.behind {
                Some((seq, at)) => {
                    state.behind = Some((seq.max(stored), at));
                    continue;
                }
                None => now + self.config.reconcile_grace,
            };
            state.behind = Some((stored, at));
            self.timers.push(Reverse((at, room, Timer::Behind)));
        }
        self.stats.lag = lag;
    }
}

#[cfg(test)]
mod tests;
