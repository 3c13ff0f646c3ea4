//! One room's store queries are slow; the other rooms of the instance do not wait for them.
//! The delivery engine runs its fetches beside itself, so a 500 ms backfill delays only its
//! own room's subscribers: live delivery elsewhere keeps its latency meanwhile.

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chat_adapters_memory::{InMemoryBus, InMemoryRepository};
use chat_domain::{
    ChatMessage, HistoryQuery, MessageRepository, NewChatMessage, NewRoom, RepositoryError, Room,
    RoomId, RoomListQuery, Seq,
};
use chat_server::Adapters;
use support::{StompClient, chat_json, spawn_app_with, test_settings};
use tokio::time::Instant;

const SLOW: Duration = Duration::from_millis(500);
const BACKLOG: usize = 20;

/// The in-memory store, except that reading one room takes [`SLOW`].
struct OneSlowRoom {
    inner: InMemoryRepository,
    slow: std::sync::OnceLock<RoomId>,
}

impl OneSlowRoom {
    async fn pause_for(&self, room: RoomId) {
        if self.slow.get() == Some(&room) {
            tokio::time::sleep(SLOW).await;
        }
    }
}

#[async_trait]
impl MessageRepository for OneSlowRoom {
    async fn create_room(&self, room: NewRoom) -> Result<Room, RepositoryError> {
        self.inner.create_room(room).await
    }

    async fn find_room(&self, id: RoomId) -> Result<Option<Room>, RepositoryError> {
        self.pause_for(id).await;
        self.inner.find_room(id).await
    }

    async fn list_rooms(&self, query: RoomListQuery) -> Result<Vec<Room>, RepositoryError> {
        self.inner.list_rooms(query).await
    }

    async fn append(&self, message: NewChatMessage) -> Result<ChatMessage, RepositoryError> {
        self.inner.append(message).await
    }

    async fn last_seqs(&self, rooms: &[RoomId]) -> Result<Vec<(RoomId, Seq)>, RepositoryError> {
        self.inner.last_seqs(rooms).await
    }

    async fn history(
        &self,
        room: RoomId,
        query: HistoryQuery,
    ) -> Result<Vec<ChatMessage>, RepositoryError> {
        self.pause_for(room).await;
        self.inner.history(room, query).await
    }

    async fn check_health(&self) -> Result<(), RepositoryError> {
        Ok(())
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::test]
async fn while_one_rooms_backfill_takes_500_ms_the_other_rooms_keep_p99_under_50_ms() {
    let store = Arc::new(OneSlowRoom {
        inner: InMemoryRepository::new(),
        slow: std::sync::OnceLock::new(),
    });
    let app = spawn_app_with(
        Adapters {
            repository: store.clone(),
            members: Arc::new(InMemoryRepository::new()),
            cursors: Arc::new(InMemoryRepository::new()),
            bus: Arc::new(InMemoryBus::new()),
        },
        test_settings(),
    )
    .await;
    let slow = app.create_room("slow").await;
    // Rooms are sharded by id: consecutive ids put fast rooms beside the slow one on every
    // shard count.
    let fast: Vec<i64> = [
        app.create_room("fast 1").await,
        app.create_room("fast 2").await,
        app.create_room("fast 3").await,
    ]
    .into();
    for i in 0..BACKLOG {
        let posted = app
            .post_message(slow, chat_json(slow, &format!("old {i}")))
            .await;
        assert!(posted.status().is_success());
    }
    store.slow.set(RoomId(slow)).unwrap();

    // Subscribers of the fast rooms, live before the slow work starts.
    let mut listeners = Vec::new();
    for &room in &fast {
        let mut client = StompClient::connect(&app.ws_url()).await;
        client
            .subscribe("live", &format!("/topic/chatroom/{room}"))
            .await;
        listeners.push(client);
    }
    let mut publisher = StompClient::connect(&app.ws_url()).await;

    // Clients resuming the slow room one after another, so its fetches (500 ms each: the
    // room on first subscription, then its history) run through the whole measurement.
    let url = app.ws_url();
    let resumes = tokio::spawn(async move {
        let mut handles = Vec::new();
        for i in 0..4u64 {
            let url = url.clone();
            handles.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300 * i)).await;
                let started = Instant::now();
                let mut client = StompClient::connect(&url).await;
                client
                    .subscribe_with(
                        "resume",
                        &format!("/topic/chatroom/{slow}"),
                        &[("x-resume-after", "0")],
                    )
                    .await;
                let mut seqs = Vec::new();
                for _ in 0..BACKLOG {
                    seqs.push(client.next_message().await.1["seq"].as_i64().unwrap());
                }
                (started.elapsed(), seqs)
            }));
        }
        let mut outcomes = Vec::new();
        for handle in handles {
            outcomes.push(handle.await.unwrap());
        }
        outcomes
    });

    // Live traffic in the fast rooms meanwhile: one message every 10 ms, each timed from
    // its SEND to its MESSAGE at the room's subscriber.
    let measuring = Instant::now();
    let mut latencies = Vec::new();
    let mut round = 0usize;
    while measuring.elapsed() < Duration::from_millis(1500) {
        let which = round % fast.len();
        let room = fast[which];
        let sent = Instant::now();
        publisher
            .send_chat(&chat_json(room, &format!("live {round}")), None)
            .await;
        let (_, body) = listeners[which].next_message().await;
        latencies.push(sent.elapsed());
        assert_eq!(body["content"], format!("live {round}"));
        round += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let outcomes = resumes.await.unwrap();
    let expected: Vec<i64> = (1..=BACKLOG as i64).collect();
    for (took, seqs) in &outcomes {
        assert_eq!(
            seqs, &expected,
            "a resume of the slow room lost or reordered"
        );
        assert!(
            *took >= SLOW,
            "the slow room's fetches did not run (resume took {took:?})"
        );
    }
    latencies.sort();
    let p99 = percentile(&latencies, 0.99);
    assert!(
        p99 < Duration::from_millis(50),
        "p99 {p99:?} over {} live messages (p50 {:?}, max {:?}) while the slow room's backfill ran",
        latencies.len(),
        percentile(&latencies, 0.5),
        latencies.last().unwrap()
    );
}
