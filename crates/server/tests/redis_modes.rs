//! Real `chat-server` processes on each Redis topology and channel mode (issue 13): the seed
//! scenario on a channel per room, on Sentinel and on a Cluster; an instance that receives
//! only its own rooms' traffic; and RECEIPTed messages that reach every subscriber exactly
//! once and in order while the Redis master is SIGKILLed and another takes over.

mod support;

use std::time::{Duration, Instant};

use chat_stomp::Command;
use chat_test_support::postgres::{TestDatabase, fresh_database};
use chat_test_support::redis::{redis_url, unique_channel};
use chat_test_support::topologies::{RedisCluster, SentinelGroup};
use support::StompClient;
use support::chat_json;
use support::process::ServerProcess;
use tokio::sync::watch;

/// The environment of one replica of a deployment on `url`.
fn env<'a>(
    database: &'a TestDatabase,
    url: &'a str,
    channel: &'a str,
    mode: Option<&'a str>,
) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("DATABASE_URL", database.url()),
        ("REDIS_URL", url),
        ("CHAT_REDIS_CHANNEL", channel),
    ];
    if let Some(mode) = mode {
        env.push(("CHAT_REDIS_CHANNEL_MODE", mode));
    }
    env
}

/// The original scenario: client A on instance A, client B on instance B, same room; A
/// sends; both receive it once; the message is stored.
async fn seed_scenario(url: &str, mode: Option<&str>) {
    let database = fresh_database().await;
    let channel = unique_channel("chat-modes");
    let env = env(&database, url, &channel, mode);
    let a = ServerProcess::start(&env).await;
    let b = ServerProcess::start(&env).await;
    let room = a.create_room("two pods").await;
    let mut client_a = StompClient::connect(&a.ws_url()).await;
    let mut client_b = StompClient::connect(&b.ws_url()).await;
    let topic = format!("/topic/chatroom/{room}");
    client_a.subscribe("s", &topic).await;
    client_b.subscribe("s", &topic).await;
    client_a
        .send_chat(&chat_json(room, "hello from pod A"), Some("r1"))
        .await;
    client_a.expect_receipt("r1").await;
    let (_, on_a) = client_a.next_message().await;
    let (_, on_b) = client_b.next_message().await;
    assert_eq!(on_a, on_b);
    assert_eq!(on_b["content"], "hello from pod A");
    assert_eq!(on_b["seq"], 1);
    // Once: nothing more comes, from the bus or from the store.
    client_b.expect_silence(Duration::from_millis(2500)).await;
    let stored = a.history(room).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["content"], "hello from pod A");
    assert_eq!(a.terminate().await.code(), Some(0));
    assert_eq!(b.terminate().await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_scenario_holds_with_a_channel_per_room() {
    let redis = redis_url().await;
    seed_scenario(redis.url(), Some("per-room")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_scenario_holds_on_sentinel_in_both_channel_modes() {
    let sentinel = SentinelGroup::start().await;
    seed_scenario(&sentinel.url(), None).await;
    seed_scenario(&sentinel.url(), Some("per-room")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_scenario_holds_on_a_cluster_with_sharded_channels() {
    let cluster = RedisCluster::start().await;
    seed_scenario(&cluster.url(), None).await;
}

/// A metric's value on `instance`'s /metrics, 0 when absent.
async fn metric(instance: &ServerProcess, name: &str) -> f64 {
    support::metric_at(&instance.http("/metrics"), name).await
}

/// `PUBSUB CHANNELS pattern` of the Redis at `url`, sorted.
async fn pubsub_channels(url: &str, pattern: &str) -> Vec<String> {
    let output = tokio::process::Command::new("redis-cli")
        .args(["-u", url, "PUBSUB", "CHANNELS", pattern])
        .output()
        .await
        .expect("redis-cli runs");
    assert!(output.status.success(), "{output:?}");
    let mut channels: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    channels.sort();
    channels
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_channel_per_room_an_instance_gets_only_the_traffic_of_its_own_rooms() {
    let database = fresh_database().await;
    let redis = redis_url().await;
    let channel = unique_channel("chat-own-rooms");
    let env = env(&database, redis.url(), &channel, Some("per-room"));
    let a = ServerProcess::start(&env).await;
    let b = ServerProcess::start(&env).await;
    let room = a.create_room("only on A").await;
    let mut listener = StompClient::connect(&a.ws_url()).await;
    listener
        .subscribe("s", &format!("/topic/chatroom/{room}"))
        .await;
    let room_channel = format!("{channel}:room:{room}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pubsub_channels(redis.url(), &format!("{channel}:room:*")).await != [room_channel.clone()]
    {
        assert!(Instant::now() < deadline, "room channel never subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Sent through B, which has nobody in the room: B publishes and receives nothing.
    let mut sender = StompClient::connect(&b.ws_url()).await;
    for i in 1..=5 {
        let receipt = format!("r{i}");
        sender
            .send_chat(&chat_json(room, &format!("m{i}")), Some(&receipt))
            .await;
        sender.expect_receipt(&receipt).await;
    }
    for seq in 1..=5 {
        let (_, body) = listener.next_message().await;
        assert_eq!(body["seq"], seq);
    }
    assert!(metric(&a, "chat_bus_received").await >= 5.0);
    assert!((metric(&a, "chat_bus_rooms_watched").await - 1.0).abs() < f64::EPSILON);
    assert!(
        metric(&b, "chat_bus_received").await.abs() < f64::EPSILON,
        "B received its rooms-less traffic"
    );
    assert!(metric(&b, "chat_bus_rooms_watched").await.abs() < f64::EPSILON);

    // The last subscriber leaves: A unsubscribes the room's channel.
    drop(listener);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pubsub_channels(redis.url(), &format!("{channel}:room:*"))
        .await
        .is_empty()
    {
        assert!(Instant::now() < deadline, "room channel still subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(metric(&a, "chat_bus_rooms_watched").await.abs() < f64::EPSILON);
    a.terminate().await;
    b.terminate().await;
}

/// Reads a subscription's seqs until it has `target` (sent once the sender is done), then
/// waits a little more for anything doubled.
async fn collect(mut client: StompClient, mut target: watch::Receiver<Option<i64>>) -> Vec<i64> {
    let mut seqs = Vec::new();
    let give_up = Instant::now() + Duration::from_secs(90);
    loop {
        let done = (*target.borrow()).is_some_and(|n| seqs.last().copied().unwrap_or(0) >= n);
        if done {
            while let Some(frame) = client.next_frame_within(Duration::from_secs(3)).await {
                let body: serde_json::Value = serde_json::from_slice(&frame.body).unwrap();
                seqs.push(body["seq"].as_i64().unwrap());
            }
            return seqs;
        }
        assert!(Instant::now() < give_up, "gave up with {} seqs", seqs.len());
        tokio::select! {
            frame = client.next_frame_within(Duration::from_millis(200)) => {
                if let Some(frame) = frame {
                    assert_eq!(frame.command, Command::Message, "{frame:?}");
                    let body: serde_json::Value = serde_json::from_slice(&frame.body).unwrap();
                    seqs.push(body["seq"].as_i64().unwrap());
                }
            }
            _ = target.changed() => {}
        }
    }
}

/// Two instances, subscribers on both, a sender on A that waits for each RECEIPT; the
/// master is SIGKILLed (`kill`, given the room's channel, returns once another master
/// serves) while it sends.
/// Every RECEIPTed message reaches both subscribers exactly once and in order; B's bus
/// carries messages again within 10 s of the kill.
async fn receipts_survive(url: &str, mode: Option<&str>, kill: impl AsyncFnOnce(String)) {
    let database = fresh_database().await;
    let channel = unique_channel("chat-failover");
    let env = env(&database, url, &channel, mode);
    let a = ServerProcess::start(&env).await;
    let b = ServerProcess::start(&env).await;
    let room = a.create_room("failover").await;
    let topic = format!("/topic/chatroom/{room}");
    let (target_tx, target) = watch::channel(None);
    let mut readers = Vec::new();
    for instance in [&a, &b] {
        let mut client = StompClient::connect(&instance.ws_url()).await;
        client.subscribe("s", &topic).await;
        readers.push(tokio::spawn(collect(client, target.clone())));
    }
    // The sender: one SEND at a time, each waiting for its RECEIPT, until told to stop.
    let mut sender = StompClient::connect(&a.ws_url()).await;
    let (stop_tx, mut stop) = watch::channel(false);
    let sending = tokio::spawn(async move {
        let mut receipted = 0_i64;
        while !*stop.borrow_and_update() {
            let next = receipted + 1;
            let receipt = format!("r{next}");
            sender
                .send_chat(&chat_json(room, &format!("m{next}")), Some(&receipt))
                .await;
            sender.expect_receipt(&receipt).await;
            receipted = next;
        }
        receipted
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let received_before = metric(&b, "chat_bus_received").await;
    let killed_at = Instant::now();
    kill(format!("{channel}:room:{room}")).await;
    let failed_over = killed_at.elapsed();
    // B hears from the bus again (not only from the store).
    let resumed = loop {
        if metric(&b, "chat_bus_received").await > received_before {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(30),
            "B's bus never carried a message again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_tx.send(true).unwrap();
    let receipted = sending.await.unwrap();
    eprintln!(
        "failover: new master {failed_over:?} after the kill, B's bus carried messages again \
         {resumed:?} after it; {receipted} RECEIPTed messages in all"
    );
    target_tx.send(Some(receipted)).unwrap();
    let expected: Vec<i64> = (1..=receipted).collect();
    for (reader, name) in readers.into_iter().zip(["A", "B"]) {
        let seqs = reader.await.unwrap();
        assert_eq!(
            seqs, expected,
            "the subscriber on {name} did not get 1..={receipted} exactly once in order"
        );
    }
    assert!(
        resumed < Duration::from_secs(10),
        "cross-instance delivery resumed {resumed:?} after the kill"
    );
    a.terminate().await;
    b.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sentinel_receipted_messages_survive_a_killed_master_exactly_once_in_order() {
    let mut sentinel = SentinelGroup::start().await;
    let url = sentinel.url();
    receipts_survive(&url, Some("per-room"), async |_| {
        let old = sentinel.kill_master().await;
        sentinel
            .wait_for_new_master(old, Duration::from_secs(20))
            .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_receipted_messages_survive_a_killed_master_exactly_once_in_order() {
    let mut cluster = RedisCluster::start().await;
    let url = cluster.url();
    receipts_survive(&url, None, async |room_channel: String| {
        let old = cluster.kill_master_of(&room_channel).await;
        cluster
            .wait_for_failover(&room_channel, old, Duration::from_secs(20))
            .await;
    })
    .await;
}
