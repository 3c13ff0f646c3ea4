//! A channel per room (`CHAT_REDIS_CHANNEL_MODE=per-room`): an instance receives only the
//! rooms it watches, stops receiving a room when the last interest in it ends, refuses a
//! message on the wrong room's channel, and on Sentinel and Cluster follows a failover of
//! the master that carries a room, with the catch-up signal after it.

mod common;

use std::time::{Duration, Instant};

use chat_adapters_redis::{ChannelMode, RedisBus, RedisConfig, RedisError};
use chat_domain::{BusEvent, BusEvents, MessageBus, RoomId};
use chat_test_support::redis::redis_url;
use chat_test_support::topologies::{RedisCluster, SentinelGroup};
use common::{SOON, config, init_logs, message, next_event, publish_raw, raw_publisher};
use fred::prelude::PubsubInterface;
use futures_util::StreamExt;

fn per_room(url: &str) -> RedisConfig {
    let mut config = config(url, "per-room");
    config.channel_mode = Some(ChannelMode::PerRoom);
    config
}

/// Waits for `MayHaveMissedRoom(room)`, skipping other events.
async fn room_announced(events: &mut BusEvents, room: i64) {
    loop {
        if next_event(events, "the room's catch-up signal").await
            == BusEvent::MayHaveMissedRoom(RoomId(room))
        {
            return;
        }
    }
}

/// Every message event that arrives within `within`.
async fn messages_within(events: &mut BusEvents, within: Duration) -> Vec<(i64, i64)> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.next()).await {
        if let BusEvent::Message(m) = event {
            got.push((m.chat_room_id.get(), m.seq.map_or(0, |s| s.0)));
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_receives_only_the_rooms_it_watches_and_lets_go_of_a_room_with_its_last_watcher()
 {
    init_logs();
    let redis = redis_url().await;
    let config = per_room(redis.url());
    let channel = config.channel.clone();
    let bus = RedisBus::connect(config).await.unwrap();
    let mut events = bus.subscribe().await.unwrap();
    let raw = raw_publisher(redis.url()).await;
    let channels = || async {
        let mut names: Vec<String> = raw
            .pubsub_channels(format!("{channel}:*"))
            .await
            .expect("PUBSUB CHANNELS");
        names.sort();
        names
    };
    assert_eq!(channels().await, [format!("{channel}:control")]);

    bus.watch_room(RoomId(1));
    bus.watch_room(RoomId(1));
    room_announced(&mut events, 1).await;
    assert_eq!(
        channels().await,
        [format!("{channel}:control"), format!("{channel}:room:1")]
    );
    assert_eq!(bus.counters().rooms_watched, 1);

    bus.publish(&message(1, 1)).await.unwrap();
    bus.publish(&message(2, 1)).await.unwrap();
    bus.publish(&message(1, 2)).await.unwrap();
    assert_eq!(
        messages_within(&mut events, Duration::from_millis(500)).await,
        [(1, 1), (1, 2)],
        "room 2 is nobody's here"
    );
    assert_eq!(bus.counters().received, 2);

    // Two interests: the first unwatch keeps the room.
    bus.unwatch_room(RoomId(1));
    bus.publish(&message(1, 3)).await.unwrap();
    assert_eq!(
        messages_within(&mut events, Duration::from_millis(500)).await,
        [(1, 3)]
    );
    bus.unwatch_room(RoomId(1));
    let deadline = Instant::now() + SOON;
    while channels().await.len() > 1 {
        assert!(
            Instant::now() < deadline,
            "room 1's channel is still subscribed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(bus.counters().rooms_watched, 0);
    bus.publish(&message(1, 4)).await.unwrap();
    assert!(
        messages_within(&mut events, Duration::from_millis(500))
            .await
            .is_empty()
    );
    bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_on_another_rooms_channel_is_refused_and_counted() {
    init_logs();
    let redis = redis_url().await;
    let config = per_room(redis.url());
    let channel = config.channel.clone();
    let bus = RedisBus::connect(config).await.unwrap();
    let mut events = bus.subscribe().await.unwrap();
    bus.watch_room(RoomId(1));
    room_announced(&mut events, 1).await;
    let raw = raw_publisher(redis.url()).await;
    // A payload of room 2 on room 1's channel: room 1's subscribers must not get it, and
    // room 2's engine would never look at this channel.
    publish_raw(&raw, &format!("{channel}:room:1"), &message(2, 1).to_json()).await;
    publish_raw(&raw, &format!("{channel}:room:1"), &message(1, 1).to_json()).await;
    assert_eq!(
        messages_within(&mut events, Duration::from_millis(500)).await,
        [(1, 1)]
    );
    assert_eq!(bus.decode_failures(), 1);
    bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_refuses_the_single_channel_at_start_up() {
    let cluster = RedisCluster::start().await;
    let mut config = config(&cluster.url(), "single-on-cluster");
    config.channel_mode = Some(ChannelMode::Single);
    match RedisBus::connect(config).await {
        Err(RedisError::InvalidConfig(why)) => {
            assert!(why.contains("CHAT_REDIS_CHANNEL_MODE=per-room"), "{why}");
        }
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

/// Publishes room 1's messages from `publisher` until `events` receives one; returns when.
async fn delivery_resumes(publisher: &RedisBus, events: &mut BusEvents, from_seq: i64) -> Instant {
    let mut seq = from_seq;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "delivery did not resume");
        // Fails fast while the master is gone.
        let _ = publisher.publish(&message(1, seq)).await;
        seq += 1;
        if messages_within(events, Duration::from_millis(100))
            .await
            .iter()
            .any(|(room, _)| *room == 1)
        {
            return Instant::now();
        }
    }
}

/// What a failover looks like from the bus: publishes fail fast while there is no master,
/// the subscriber reconnects to the promoted one, subscribes the room's channel again and
/// tells its subscriptions they may have missed messages, and delivery resumes.
async fn failover(url: &str, channel: &str, kill: impl AsyncFnOnce() -> Duration) {
    let on_channel = || {
        let mut config = per_room(url);
        channel.clone_into(&mut config.channel);
        config
    };
    let publisher = RedisBus::connect(on_channel()).await.unwrap();
    let subscriber = RedisBus::connect(on_channel()).await.unwrap();
    let mut events = subscriber.subscribe().await.unwrap();
    subscriber.watch_room(RoomId(1));
    room_announced(&mut events, 1).await;
    delivery_resumes(&publisher, &mut events, 1).await;

    let killed_at = Instant::now();
    let failover_took = kill().await;
    let resumed_at = delivery_resumes(&publisher, &mut events, 1_000).await;
    let resumed = resumed_at - killed_at;
    eprintln!(
        "failover: a new master after {failover_took:?}, delivery resumed {resumed:?} after the kill"
    );
    assert!(
        resumed < Duration::from_secs(10),
        "delivery resumed only {resumed:?} after the kill"
    );
    assert!(subscriber.reconnects() > 0);
    publisher.shutdown().await;
    subscriber.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sentinel_a_killed_master_is_followed_to_the_promoted_replica() {
    init_logs();
    let mut sentinel = SentinelGroup::start().await;
    let url = sentinel.url();
    let channel = chat_test_support::redis::unique_channel("sentinel-failover");
    failover(&url, &channel, async || {
        let started = Instant::now();
        let old = sentinel.kill_master().await;
        sentinel
            .wait_for_new_master(old, Duration::from_secs(20))
            .await;
        started.elapsed()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_the_room_is_a_shard_channel_and_follows_a_failover_of_its_master() {
    init_logs();
    let mut cluster = RedisCluster::start().await;
    let url = cluster.url();
    let mut config = config(&url, "sharded");
    config.channel_mode = None;
    let channel = config.channel.clone();
    let bus = RedisBus::connect(config).await.unwrap();
    let mut events = bus.subscribe().await.unwrap();
    bus.watch_room(RoomId(1));
    room_announced(&mut events, 1).await;
    let shard_channels = cluster.shard_channels().await;
    assert!(
        shard_channels.contains(&format!("{channel}:room:1"))
            && shard_channels.contains(&format!("{channel}:control")),
        "{shard_channels:?}"
    );
    bus.shutdown().await;
    drop(events);

    let room_channel = format!("{channel}:room:1");
    failover(&url, &channel, async || {
        let started = Instant::now();
        let old = cluster.kill_master_of(&room_channel).await;
        cluster
            .wait_for_failover(&room_channel, old, Duration::from_secs(20))
            .await;
        started.elapsed()
    })
    .await;
}
