//! Fan-out between instances and to local subscriptions: one order for everyone, a slow
//! local reader told it missed messages, and a clean end on shutdown.

mod common;

use std::time::Duration;

use chat_adapters_redis::RedisBus;
use chat_domain::{BusEvent, MessageBus};
use chat_test_support::redis::redis_url;
use common::{config, message, next_event, next_message};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_published_by_one_instance_reaches_both_instances_in_one_order() {
    let redis = redis_url().await;
    let config_a = config(redis.url(), "interop-two-instances");
    let mut config_b = config_a.clone();
    config_b.channel = config_a.channel.clone();
    let a = RedisBus::connect(config_a).await.unwrap();
    let b = RedisBus::connect(config_b).await.unwrap();
    let mut on_a = a.subscribe().await.unwrap();
    let mut on_b = b.subscribe().await.unwrap();

    let sent: Vec<_> = (1..=10).map(|seq| message(2, seq)).collect();
    for (i, m) in sent.iter().enumerate() {
        // Alternate senders: both instances must still see one and the same order.
        let sender = if i % 2 == 0 { &a } else { &b };
        sender.publish(m).await.unwrap();
    }
    for events in [&mut on_a, &mut on_b] {
        for expected in &sent {
            assert_eq!(&next_message(events, "a message of room 2").await, expected);
        }
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_ends_every_subscription_and_refuses_new_ones() {
    let redis = redis_url().await;
    let bus = RedisBus::connect(config(redis.url(), "interop-shutdown"))
        .await
        .unwrap();
    let mut events = bus.subscribe().await.unwrap();
    bus.shutdown().await;
    let end = tokio::time::timeout(common::SOON, futures_util::StreamExt::next(&mut events))
        .await
        .expect("the stream ends soon after shutdown");
    assert_eq!(end, None);
    assert!(bus.subscribe().await.is_err());
    assert!(bus.check_health().await.is_err());
    bus.shutdown().await; // idempotent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_subscription_that_falls_behind_is_told_it_may_have_missed_messages() {
    let redis = redis_url().await;
    let mut config = config(redis.url(), "fan-out-lag");
    config.subscriber_capacity = 4;
    let bus = RedisBus::connect(config).await.unwrap();
    let mut slow = bus.subscribe().await.unwrap();
    for seq in 1..=20 {
        bus.publish(&message(3, seq)).await.unwrap();
    }
    // Let the relay take all twenty while this reader does not read.
    tokio::time::sleep(Duration::from_secs(1)).await;

    assert_eq!(
        next_event(&mut slow, "the lag signal").await,
        BusEvent::MayHaveMissedMessages
    );
    // What is left is the newest messages, still in order.
    let mut last = 0;
    while last < 20 {
        let got = next_message(&mut slow, "the newest messages").await;
        let seq = got.seq.unwrap().0;
        assert!(seq > last, "seq {seq} after {last}");
        last = seq;
    }
    bus.shutdown().await;
}
