//! Losing Redis and getting it back, with a `redis-server` this test owns: health turns red,
//! publishing fails fast instead of hanging, and after the restart the bus reconnects,
//! resubscribes, signals the gap and delivers again without anyone calling it.

mod common;

use std::time::{Duration, Instant};

use chat_adapters_redis::RedisBus;
use chat_domain::{BusError, BusEvent, MessageBus};
use chat_test_support::redis::ThrowawayRedis;
use common::{SOON, config, message, next_event, next_message};

/// Polls `check_health` until it gives the wanted answer, or panics after `within`.
async fn wait_for_health(bus: &RedisBus, healthy: bool, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if bus.check_health().await.is_ok() == healthy {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "health did not become {} within {within:?}",
            if healthy { "Ok" } else { "Err" }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_redis_restart_the_bus_resubscribes_by_itself_and_delivers_again() {
    common::init_logs();
    let mut redis = ThrowawayRedis::start().await;
    let bus = RedisBus::connect(config(&redis.url(), "reconnect"))
        .await
        .unwrap();
    let mut events = bus.subscribe().await.unwrap();
    bus.publish(&message(1, 1)).await.unwrap();
    assert_eq!(
        next_message(&mut events, "the first message").await,
        message(1, 1)
    );
    assert_eq!(bus.reconnects(), 0);

    redis.stop().await;
    wait_for_health(&bus, false, Duration::from_secs(5)).await;

    let started = Instant::now();
    let failed = tokio::time::timeout(SOON, bus.publish(&message(1, 2)))
        .await
        .expect("publish must not hang while Redis is down");
    assert!(
        matches!(failed, Err(BusError::Unavailable(_))),
        "{failed:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "publish took {:?} to fail",
        started.elapsed()
    );
    assert!(
        bus.subscribe().await.is_err(),
        "no new subscription while the Redis one is down"
    );

    redis.restart().await;
    wait_for_health(&bus, true, SOON).await;
    loop {
        match next_event(&mut events, "the missed-messages signal").await {
            BusEvent::MayHaveMissedMessages => break,
            // A publish that timed out may still have gone out after the reconnect.
            BusEvent::Message(m) => assert_eq!(m, message(1, 2)),
            BusEvent::Control(event) => panic!("nobody published {event:?}"),
            BusEvent::MayHaveMissedRoom(room) => panic!("no room is watched, yet {room}"),
        }
    }
    assert!(bus.reconnects() > 0);

    bus.publish(&message(1, 3)).await.unwrap();
    loop {
        let got = next_message(&mut events, "a message sent after the restart").await;
        if got == message(1, 3) {
            break;
        }
        assert_eq!(got, message(1, 2), "only the late one may come first");
    }
    let mut late = bus.subscribe().await.unwrap();
    bus.publish(&message(1, 4)).await.unwrap();
    assert_eq!(
        next_message(&mut late, "a message on a new subscription").await,
        message(1, 4)
    );
    bus.shutdown().await;
}

/// A frozen Redis (SIGSTOP) keeps its sockets open and answers nothing: only asking the
/// subscribed connection something notices it. The bus must notice within 5 s, replace the
/// connection, and once Redis answers again signal that messages may have been missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_is_noticed_on_the_subscribed_connection_and_the_gap_is_signalled() {
    common::init_logs();
    let redis = ThrowawayRedis::start().await;
    let bus = RedisBus::connect(config(&redis.url(), "frozen"))
        .await
        .unwrap();
    let mut events = bus.subscribe().await.unwrap();
    bus.publish(&message(1, 1)).await.unwrap();
    assert_eq!(
        next_message(&mut events, "the first message").await,
        message(1, 1)
    );

    redis.freeze().await;
    // The subscription itself is reported down, not only the publisher.
    let noticed = wait_for_health(&bus, false, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(noticed)).await;
    assert!(
        bus.subscribe().await.is_err(),
        "the wedged subscription must not count as active"
    );

    redis.thaw().await;
    wait_for_health(&bus, true, SOON).await;
    assert_eq!(
        next_event(&mut events, "the missed-messages signal").await,
        BusEvent::MayHaveMissedMessages
    );
    assert!(bus.reconnects() > 0);
    bus.shutdown().await;
}
