//! Seeded fault schedules for the delivery path, without sockets and without a loaded
//! machine: two instances' hubs share one store and one bus that delays, reorders,
//! duplicates and drops every copy of a publish on its own, and occasionally tells a hub it
//! may have missed messages; the store answers late, before and after it acts. Time is
//! tokio's paused clock, so a seed replays exactly.
//!
//! The property, for every seed: each subscriber of every room, on either instance,
//! receives the room's messages 1..=n exactly once and in seq order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chat_adapters_memory::InMemoryRepository;
use chat_domain::{
    BusError, BusEvent, BusEvents, ChatMessage, ChatMessagePublish, ChatMessageRequest,
    ChatService, ControlEvent, HistoryQuery, MessageBus, MessageRepository, NewChatMessage,
    NewRoom, RepositoryError, Room, RoomId, RoomListQuery, RoomName, SenderId, Seq,
};
use chat_stomp::{Decoder, Item, Limits};
use tokio::sync::mpsc;

use super::hub::{ConnectionId, Hub, HubConfig, HubHandle, Outbound, Outbox, SubscriptionKey};
use super::revocations::Revocations;
use super::topics::Topics;
use crate::metrics::Metrics;

/// A small deterministic generator (SplitMix64): the schedule must replay from its seed.
#[derive(Debug)]
struct Schedule(u64);

impl Schedule {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    fn millis(&mut self, max: u64) -> Duration {
        Duration::from_millis(self.below(max + 1))
    }
}

type Shared = Arc<Mutex<Schedule>>;

fn draw<T>(schedule: &Shared, f: impl FnOnce(&mut Schedule) -> T) -> T {
    f(&mut schedule.lock().unwrap())
}

/// The bus between the instances: every publish reaches each instance's subscription as
/// its own copy, which may be dropped, doubled and delayed (so copies overtake each other).
/// With a channel per room, an instance's end carries a room only from a scheduled moment
/// after its hub asked for it (what was published before never arrives there), then says so
/// with [`BusEvent::MayHaveMissedRoom`].
struct ChaosWire {
    schedule: Shared,
    per_room: bool,
    ends: Mutex<Vec<EndState>>,
}

#[derive(Default)]
struct EndState {
    subscriptions: Vec<mpsc::UnboundedSender<BusEvent>>,
    /// Interest per room (reference count) and whether its channel is in effect.
    watched: HashMap<RoomId, (usize, bool)>,
}

/// One instance's end of the wire.
struct WireEnd {
    wire: Arc<ChaosWire>,
    index: usize,
}

impl ChaosWire {
    fn new(schedule: Shared, per_room: bool, ends: usize) -> Arc<Self> {
        Arc::new(Self {
            schedule,
            per_room,
            ends: Mutex::new((0..ends).map(|_| EndState::default()).collect()),
        })
    }

    fn end(self: &Arc<Self>, index: usize) -> Arc<WireEnd> {
        Arc::new(WireEnd {
            wire: self.clone(),
            index,
        })
    }

    fn deliver_later(&self, to: &mpsc::UnboundedSender<BusEvent>, event: BusEvent) {
        let delay = draw(&self.schedule, |s| s.millis(80));
        let to = to.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = to.send(event);
        });
    }

    /// The subscriptions that carry `room` right now.
    fn carrying(&self, room: RoomId) -> Vec<mpsc::UnboundedSender<BusEvent>> {
        let ends = self.ends.lock().unwrap();
        ends.iter()
            .filter(|end| !self.per_room || end.watched.get(&room).is_some_and(|(_, on)| *on))
            .flat_map(|end| end.subscriptions.iter().cloned())
            .collect()
    }
}

#[async_trait]
impl MessageBus for WireEnd {
    async fn publish(&self, message: &ChatMessagePublish) -> Result<(), BusError> {
        let wire = &self.wire;
        for to in &wire.carrying(message.chat_room_id) {
            let (dropped, doubled, interrupted) = draw(&wire.schedule, |s| {
                (s.one_in(8), s.one_in(10), s.one_in(40))
            });
            if !dropped {
                wire.deliver_later(to, BusEvent::Message(message.clone()));
            }
            if doubled {
                wire.deliver_later(to, BusEvent::Message(message.clone()));
            }
            if interrupted {
                wire.deliver_later(to, BusEvent::MayHaveMissedMessages);
            }
        }
        if draw(&wire.schedule, |s| s.one_in(20)) {
            return Err(BusError::Unavailable("scheduled publish failure".into()));
        }
        Ok(())
    }

    async fn publish_control(&self, event: &ControlEvent) -> Result<(), BusError> {
        let ends = self.wire.ends.lock().unwrap();
        for to in ends.iter().flat_map(|end| end.subscriptions.iter()) {
            self.wire
                .deliver_later(to, BusEvent::Control(event.clone()));
        }
        Ok(())
    }

    fn watch_room(&self, room: RoomId) {
        let first = {
            let mut ends = self.wire.ends.lock().unwrap();
            let entry = ends[self.index].watched.entry(room).or_default();
            entry.0 += 1;
            entry.0 == 1
        };
        if !first || !self.wire.per_room {
            return;
        }
        let delay = draw(&self.wire.schedule, |s| s.millis(150));
        let (wire, index) = (self.wire.clone(), self.index);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut ends = wire.ends.lock().unwrap();
            let end = &mut ends[index];
            if let Some((count, on)) = end.watched.get_mut(&room)
                && *count > 0
                && !*on
            {
                *on = true;
                for to in &end.subscriptions {
                    let _ = to.send(BusEvent::MayHaveMissedRoom(room));
                }
            }
        });
    }

    fn unwatch_room(&self, room: RoomId) {
        let mut ends = self.wire.ends.lock().unwrap();
        let watched = &mut ends[self.index].watched;
        if let Some((count, _)) = watched.get_mut(&room) {
            *count -= 1;
            if *count == 0 {
                watched.remove(&room);
            }
        }
    }

    async fn subscribe(&self) -> Result<BusEvents, BusError> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.wire.ends.lock().unwrap()[self.index]
            .subscriptions
            .push(sender);
        Ok(Box::pin(futures_util::stream::unfold(
            receiver,
            |mut receiver| async move { receiver.recv().await.map(|event| (event, receiver)) },
        )))
    }

    async fn check_health(&self) -> Result<(), BusError> {
        Ok(())
    }
}

/// The store, answering late: each call waits a scheduled time before it acts and another
/// before its answer arrives, so answers describe a store that has moved on since.
struct SlowStore {
    inner: InMemoryRepository,
    schedule: Shared,
}

impl SlowStore {
    async fn pause(&self, max_ms: u64) {
        let delay = draw(&self.schedule, |s| s.millis(max_ms));
        tokio::time::sleep(delay).await;
    }
}

#[async_trait]
impl MessageRepository for SlowStore {
    async fn create_room(&self, room: NewRoom) -> Result<Room, RepositoryError> {
        self.inner.create_room(room).await
    }

    async fn find_room(&self, id: RoomId) -> Result<Option<Room>, RepositoryError> {
        self.pause(40).await;
        let found = self.inner.find_room(id).await;
        self.pause(40).await;
        found
    }

    async fn list_rooms(&self, query: RoomListQuery) -> Result<Vec<Room>, RepositoryError> {
        self.inner.list_rooms(query).await
    }

    async fn append(&self, message: NewChatMessage) -> Result<ChatMessage, RepositoryError> {
        self.pause(20).await;
        let stored = self.inner.append(message).await;
        // Committed, but the acknowledgement is slow: later messages may be published first.
        self.pause(60).await;
        stored
    }

    async fn history(
        &self,
        room: RoomId,
        query: HistoryQuery,
    ) -> Result<Vec<ChatMessage>, RepositoryError> {
        self.pause(40).await;
        if draw(&self.schedule, |s| s.one_in(15)) {
            return Err(RepositoryError::Unavailable(
                "scheduled read failure".into(),
            ));
        }
        let page = self.inner.history(room, query).await;
        self.pause(40).await;
        page
    }

    async fn last_seqs(&self, rooms: &[RoomId]) -> Result<Vec<(RoomId, Seq)>, RepositoryError> {
        self.pause(40).await;
        let seqs = self.inner.last_seqs(rooms).await;
        self.pause(40).await;
        seqs
    }

    async fn check_health(&self) -> Result<(), RepositoryError> {
        Ok(())
    }
}

/// One instance: its hub and its service (store + its own end of the bus).
struct Instance {
    hub: HubHandle,
    service: ChatService,
}

const ROOMS: i64 = 2;
const SUBSCRIBERS_PER_ROOM: u64 = 2;
const PUBLISHERS_PER_ROOM: u64 = 3;
const MESSAGES_PER_PUBLISHER: u64 = 12;

fn seq_of(item: &Outbound) -> i64 {
    let mut bytes = Vec::new();
    item.prepared
        .write_for_subscription(&item.subscription, &mut bytes);
    let mut decoder = Decoder::new(Limits::default());
    decoder.feed(&bytes);
    let Ok(Some(Item::Frame(frame))) = decoder.next_item() else {
        panic!("the hub queued something that is not a frame");
    };
    let body: serde_json::Value = serde_json::from_slice(&frame.body).expect("JSON body");
    body["seq"].as_i64().expect("a seq")
}

/// Runs one schedule; returns, per subscriber, (room, seqs received) and the rooms' last seq.
async fn run_schedule(
    seed: u64,
    per_room: bool,
) -> (Vec<(RoomId, Vec<i64>)>, HashMap<RoomId, i64>) {
    let schedule: Shared = Arc::new(Mutex::new(Schedule(seed)));
    let store = Arc::new(SlowStore {
        inner: InMemoryRepository::new(),
        schedule: schedule.clone(),
    });
    let wire = ChaosWire::new(schedule.clone(), per_room, 2);
    let mut rooms = Vec::new();
    for i in 0..ROOMS {
        let name = RoomName::parse(&format!("room {i}")).unwrap();
        rooms.push(store.create_room(NewRoom::public(name)).await.unwrap().id);
    }
    let mut instances = Vec::new();
    for index in 0..2 {
        let end = wire.end(index);
        let events = end.subscribe().await.unwrap();
        let service = ChatService::new(
            store.clone(),
            Arc::new(InMemoryRepository::new()),
            end.clone(),
        );
        let revocations = Arc::new(Revocations::new(service.clone()));
        let metrics = Arc::new(Metrics::new());
        let topics = Topics::start(end.clone(), Duration::from_secs(20), metrics.clone());
        let (hub, _task) = Hub::spawn(
            store.clone(),
            end,
            events,
            HubConfig {
                held_limit: 100_000,
                reconcile_every: Duration::from_millis(500),
            },
            metrics,
            revocations,
            topics,
        );
        instances.push(Instance { hub, service });
    }

    let mut queues = Vec::new();
    let mut connection = 0;
    for (i, instance) in instances.iter().enumerate() {
        for &room in &rooms {
            for _ in 0..SUBSCRIBERS_PER_ROOM {
                connection += 1;
                let (outbox, queue) = Outbox::new(100_000, usize::MAX);
                let key = SubscriptionKey {
                    connection: ConnectionId(connection),
                    id: Arc::from(format!("sub-{i}")),
                };
                instance
                    .hub
                    .subscribe(key, room, outbox, None)
                    .await
                    .unwrap();
                queues.push((room, queue));
            }
        }
    }

    // Publishers on both instances pipeline their sends, as a busy client does.
    let mut sends = Vec::new();
    for (r, &room) in rooms.iter().enumerate() {
        for p in 0..PUBLISHERS_PER_ROOM {
            let instance = &instances[usize::try_from(p).unwrap() % 2];
            for m in 0..MESSAGES_PER_PUBLISHER {
                let service = instance.service.clone();
                let hub = instance.hub.clone();
                let start = draw(&schedule, |s| s.millis(300));
                let request = ChatMessageRequest {
                    chat_room_id: Some(room),
                    sender_id: Some(SenderId(i64::try_from(p).unwrap())),
                    sender_nickname: Some(format!("p{r}-{p}")),
                    content: Some(format!("message {m}")),
                    message_type: None,
                };
                sends.push(tokio::spawn(async move {
                    tokio::time::sleep(start).await;
                    if let Ok(sent) = service.send(request, None).await {
                        hub.deliver_stored(&sent);
                    }
                }));
            }
        }
    }
    for send in sends {
        send.await.unwrap();
    }
    let mut last_seqs = HashMap::new();
    for &room in &rooms {
        let last = store.inner.find_room(room).await.unwrap().unwrap().last_seq;
        last_seqs.insert(room, last.0);
    }

    // Whatever the bus lost, reconciliation brings within a few periods.
    let mut received = Vec::new();
    for (room, mut queue) in queues {
        let expected = last_seqs[&room];
        let mut seqs = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while i64::try_from(seqs.len()).unwrap() < expected {
            match tokio::time::timeout_at(deadline, queue.recv()).await {
                Ok(Some(item)) => seqs.push(seq_of(&item)),
                Ok(None) | Err(_) => break,
            }
        }
        // Anything after the last expected message would be a duplicate.
        tokio::time::sleep(Duration::from_secs(2)).await;
        while let Ok(item) = queue.try_recv() {
            seqs.push(seq_of(&item));
        }
        received.push((room, seqs));
    }
    drop(instances);
    (received, last_seqs)
}

fn check_seed(seed: u64, per_room: bool) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let (received, last_seqs) = runtime.block_on(run_schedule(seed, per_room));
    for (room, seqs) in received {
        let expected: Vec<i64> = (1..=last_seqs[&room]).collect();
        assert_eq!(
            seqs, expected,
            "seed {seed} (per-room channels: {per_room}): a subscriber of room {room} did not \
             receive 1..=n exactly once in order"
        );
    }
}

#[test]
fn every_subscriber_receives_every_message_once_in_order_under_hundreds_of_fault_schedules() {
    for seed in 0..300 {
        check_seed(seed, false);
    }
}

/// The same with a channel per room: each instance's channel for a room comes into effect
/// at a scheduled moment after its first subscriber, so messages published in between reach
/// that instance only through the room gap it is told about.
#[test]
fn with_a_channel_per_room_every_subscriber_still_receives_every_message_once_in_order() {
    for seed in 0..300 {
        check_seed(seed, true);
    }
}
