//! Several real `chat-server` processes on one Redis and one PostgreSQL: the scenario the
//! product exists for (issue 4), at the scale of a small deployment, with a Spring publisher
//! on the same channel, and across a Redis restart.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chat_adapters_postgres::{PostgresConfig, PostgresRepository};
use chat_adapters_redis::{RedisBus, RedisConfig};
use chat_domain::{HistoryLimit, HistoryQuery, MessageRepository, RoomId};
use chat_server::Adapters;
use chat_test_support::postgres::{TestDatabase, fresh_database};
use chat_test_support::redis::{TestRedis, ThrowawayRedis, redis_url, unique_channel};
use support::process::ServerProcess;
use support::{StompClient, chat_json, spawn_app_with, test_settings};

/// One PostgreSQL database and one Redis channel of this test alone, shared by the
/// instances it starts, as a deployment's replicas share theirs.
struct Backends {
    database: TestDatabase,
    redis: TestRedis,
    channel: String,
}

impl Backends {
    async fn new() -> Self {
        Self {
            database: fresh_database().await,
            redis: redis_url().await,
            channel: unique_channel("chat-test"),
        }
    }

    fn env(&self) -> [(&str, &str); 3] {
        [
            ("DATABASE_URL", self.database.url()),
            ("REDIS_URL", self.redis.url()),
            ("CHAT_REDIS_CHANNEL", self.channel.as_str()),
        ]
    }

    async fn start_instance(&self) -> ServerProcess {
        ServerProcess::start(&self.env()).await
    }
}

async fn stored_contents(database: &TestDatabase, room: i64) -> Vec<String> {
    let repository = PostgresRepository::connect(PostgresConfig::new(database.url()))
        .await
        .unwrap();
    let limit = HistoryLimit::parse(200).unwrap();
    repository
        .history(RoomId(room), HistoryQuery::latest(limit))
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.content)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_on_instance_a_reaches_a_client_on_instance_b_and_is_stored() {
    let backends = Backends::new().await;
    let instance_a = backends.start_instance().await;
    let instance_b = backends.start_instance().await;
    let room = instance_a.create_room("two pods").await;

    let mut client_a = StompClient::connect(&instance_a.ws_url()).await;
    let mut client_b = StompClient::connect(&instance_b.ws_url()).await;
    client_a
        .subscribe("s", &format!("/topic/chatroom/{room}"))
        .await;
    client_b
        .subscribe("s", &format!("/topic/chatroom/{room}"))
        .await;

    client_a
        .send_chat(&chat_json(room, "hello from pod A"), None)
        .await;
    let (_, on_a) = client_a.next_message().await;
    let (frame_b, on_b) = client_b.next_message().await;
    assert_eq!(on_a, on_b);
    assert_eq!(
        frame_b.header("destination"),
        Some(format!("/topic/chatroom/{room}").as_str())
    );
    assert_eq!(on_b["chatRoomId"], room);
    assert_eq!(on_b["content"], "hello from pod A");
    assert_eq!(on_b["senderNickname"], "alice");
    assert_eq!(on_b["seq"], 1);
    assert!(on_b["messageId"].is_i64() && on_b["createdAt"].is_string());

    assert_eq!(
        stored_contents(&backends.database, room).await,
        vec!["hello from pod A"]
    );
    assert_eq!(instance_a.terminate().await.code(), Some(0));
    assert_eq!(instance_b.terminate().await.code(), Some(0));
}

/// 3 instances, 60 clients, 6 rooms, 20 messages per client: every client receives every
/// message of its room exactly once, in seq order, and nothing of another room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_clients_on_three_instances_each_see_their_room_exactly_once_in_order() {
    const INSTANCES: usize = 3;
    const CLIENTS: usize = 60;
    const ROOMS: usize = 6;
    const PER_CLIENT: usize = 20;
    let backends = Backends::new().await;
    let mut instances = Vec::new();
    for _ in 0..INSTANCES {
        instances.push(backends.start_instance().await);
    }
    let mut rooms = Vec::new();
    for r in 0..ROOMS {
        rooms.push(
            instances[r % INSTANCES]
                .create_room(&format!("room {r}"))
                .await,
        );
    }
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let room = rooms[c % ROOMS];
        let mut client = StompClient::connect(&instances[c % INSTANCES].ws_url()).await;
        client
            .subscribe("room", &format!("/topic/chatroom/{room}"))
            .await;
        clients.push((room, client));
    }
    let expected_per_room = PER_CLIENT * CLIENTS / ROOMS;
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(c, (room, mut client))| {
            tokio::spawn(async move {
                for n in 0..PER_CLIENT {
                    let receipt = format!("c{c}-{n}");
                    client
                        .send_chat(
                            &chat_json(room, &format!("client {c} message {n}")),
                            Some(&receipt),
                        )
                        .await;
                }
                let mut receipts = 0;
                let mut seqs = Vec::new();
                while seqs.len() < expected_per_room || receipts < PER_CLIENT {
                    let frame = client
                        .next_frame_within(Duration::from_secs(20))
                        .await
                        .expect("frames keep coming");
                    match frame.command {
                        chat_stomp::Command::Receipt => receipts += 1,
                        chat_stomp::Command::Message => {
                            let body: serde_json::Value =
                                serde_json::from_slice(&frame.body).unwrap();
                            assert_eq!(body["chatRoomId"], room, "a message of another room");
                            seqs.push(body["seq"].as_i64().unwrap());
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
                client.expect_silence(Duration::from_millis(300)).await;
                (room, seqs)
            })
        })
        .collect();
    let mut per_room: HashMap<i64, usize> = HashMap::new();
    for task in tasks {
        let (room, seqs) = task.await.unwrap();
        assert_eq!(
            seqs,
            (1..=expected_per_room as i64).collect::<Vec<_>>(),
            "room {room}"
        );
        *per_room.entry(room).or_default() += 1;
    }
    assert_eq!(per_room.len(), ROOMS);
    for room in rooms {
        assert_eq!(
            stored_contents(&backends.database, room).await.len(),
            expected_per_room.min(200)
        );
    }
}

/// A payload in exactly the form the Spring service put on the channel reaches STOMP
/// subscribers, so Java and Rust replicas can run side by side during a migration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_published_by_the_spring_service_reaches_stomp_subscribers() {
    let backends = Backends::new().await;
    let server = backends.start_instance().await;
    let room = server.create_room("migration").await;
    let mut client = StompClient::connect(&server.ws_url()).await;
    client
        .subscribe("s", &format!("/topic/chatroom/{room}"))
        .await;

    // GenericJackson2JsonRedisSerializer over convertAndSend(topic, json): the JSON object
    // as a JSON string, LocalDateTime without offset, no seq, a type hint.
    let inner = format!(
        r#"{{"@class":"com.example.chat.dto.ChatMessagePublish","chatRoomId":{room},"messageId":9001,"senderId":5,"senderNickname":"java","content":"hello from Spring","messageType":"TEXT","createdAt":"2026-11-24T10:15:30.123"}}"#
    );
    let payload = serde_json::to_string(&inner).unwrap();
    let published = tokio::process::Command::new("redis-cli")
        .args([
            "-u",
            backends.redis.url(),
            "PUBLISH",
            &backends.channel,
            &payload,
        ])
        .output()
        .await
        .expect("redis-cli is installed with redis-server");
    assert!(published.status.success());
    assert_eq!(
        String::from_utf8_lossy(&published.stdout).trim(),
        "1",
        "exactly our one instance subscribes"
    );

    let (_, body) = client.next_message().await;
    assert_eq!(body["content"], "hello from Spring");
    assert_eq!(body["messageId"], 9001);
    assert_eq!(body["createdAt"], "2026-11-24T10:15:30.123Z");
    assert!(body.get("seq").is_none());
}

/// Redis goes away and comes back: the instance stays ready and resubscribes on its own; a
/// message stored while Redis was down reaches the local subscriber anyway (delivery
/// follows the commit, not the bus), and messages sent after the restart flow as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_redis_restart_the_instance_resubscribes_and_catches_up() {
    let database = fresh_database().await;
    let mut redis = ThrowawayRedis::start().await;
    let mut config = RedisConfig::new(redis.url());
    config.channel = unique_channel("chat-test");
    config.command_timeout = Duration::from_millis(500);
    let bus = RedisBus::connect(config).await.unwrap();
    let repository = PostgresRepository::connect(PostgresConfig::new(database.url()))
        .await
        .unwrap();
    let repository = Arc::new(repository);
    let adapters = Adapters {
        repository: repository.clone(),
        members: repository.clone(),
        cursors: repository,
        bus: Arc::new(bus),
    };
    let app = spawn_app_with(adapters, test_settings()).await;
    let room = app.create_room("blip").await;
    let mut listener = StompClient::connect(&app.ws_url()).await;
    listener
        .subscribe("s", &format!("/topic/chatroom/{room}"))
        .await;
    let mut sender = StompClient::connect(&app.ws_url()).await;
    sender
        .send_chat(&chat_json(room, "before"), Some("r0"))
        .await;
    sender.expect_receipt("r0").await;
    assert_eq!(listener.next_message().await.1["content"], "before");

    redis.stop().await;
    // Stored even though it cannot be published: the RECEIPT still comes.
    sender
        .send_chat(&chat_json(room, "during"), Some("r1"))
        .await;
    sender.expect_receipt("r1").await;
    // Still ready: the store works, and with it delivery (here at once, elsewhere by
    // reconciliation); the bus's state is reported, not a reason to leave the Service.
    let ready = reqwest::get(app.http("/health/ready")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert!(body["bus"].as_str().unwrap().starts_with("down"), "{body}");

    redis.restart().await;
    let (_, body) = tokio::time::timeout(Duration::from_secs(30), listener.next_message())
        .await
        .expect("the message stored during the outage is delivered");
    assert_eq!(body["content"], "during");
    assert_eq!(body["seq"], 2);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while reqwest::get(app.http("/health/ready"))
        .await
        .unwrap()
        .status()
        != 200
    {
        assert!(tokio::time::Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sender
        .send_chat(&chat_json(room, "after"), Some("r2"))
        .await;
    sender.expect_receipt("r2").await;
    let (_, body) = listener.next_message().await;
    assert_eq!(body["content"], "after");
    assert_eq!(body["seq"], 3);
}
