//! Start-up failures an operator must understand from one line: a bad `REDIS_URL`, nothing
//! listening, a wrong password. And the happy path with a password and a database index.

mod common;

use std::time::{Duration, Instant};

use chat_adapters_redis::{RedisBus, RedisConfig, RedisError};
use chat_domain::MessageBus;
use chat_test_support::redis::ThrowawayRedis;
use common::{config, message, next_message, raw_publisher};
use fred::prelude::ClientLike;

#[tokio::test]
async fn a_malformed_or_unsupported_url_is_rejected_as_invalid() {
    for url in [
        "",
        "not a url",
        "http://127.0.0.1:6379",
        "redis://127.0.0.1:6379/not-a-number",
        "redis-sentinel://127.0.0.1:26379",
    ] {
        match RedisBus::connect(RedisConfig::new(url)).await {
            Err(RedisError::InvalidUrl(why)) => assert!(why.contains("redis://"), "{why}"),
            other => panic!("{url:?}: expected InvalidUrl, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn nothing_listening_is_unreachable_within_the_connect_timeout() {
    // A port that was free a moment ago; nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = config(&format!("redis://:pw@127.0.0.1:{port}"), "startup");
    let started = Instant::now();
    let err = RedisBus::connect(config.clone()).await.unwrap_err();
    assert!(
        started.elapsed() <= config.connect_timeout + config.command_timeout,
        "took {:?}",
        started.elapsed()
    );
    let RedisError::Unreachable(why) = &err else {
        panic!("expected Unreachable, got {err:?}");
    };
    assert!(why.contains(&format!("127.0.0.1:{port}")), "{why}");
    assert!(!err.to_string().contains("pw@"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_clearly_and_the_right_one_with_a_database_index_works() {
    let redis = ThrowawayRedis::start().await;
    let admin = raw_publisher(&redis.url()).await;
    let _: () = admin
        .custom(
            fred::types::CustomCommand::new_static("CONFIG", None, false),
            vec!["SET", "requirepass", "s3cret"],
        )
        .await
        .unwrap();
    let port = redis.port();

    let wrong = RedisBus::connect(config(&format!("redis://:nope@127.0.0.1:{port}"), "auth")).await;
    match wrong {
        Err(RedisError::AuthFailed(why)) => {
            assert!(why.contains("password") && !why.contains("nope"), "{why}");
        }
        other => panic!("expected AuthFailed, got {other:?}"),
    }
    let missing = RedisBus::connect(config(&format!("redis://127.0.0.1:{port}"), "auth")).await;
    assert!(
        matches!(missing, Err(RedisError::AuthFailed(_))),
        "{missing:?}"
    );

    let bus = RedisBus::connect(config(
        &format!("redis://:s3cret@127.0.0.1:{port}/3"),
        "auth",
    ))
    .await
    .unwrap();
    let mut events = bus.subscribe().await.unwrap();
    bus.publish(&message(9, 1)).await.unwrap();
    assert_eq!(next_message(&mut events, "a message").await, message(9, 1));
    bus.check_health().await.unwrap();
    bus.shutdown().await;
    let _ = admin.quit().await;
}

#[tokio::test]
async fn connect_gives_up_on_a_silent_server_instead_of_hanging() {
    // A listener that accepts but never answers: Redis that hangs, not one that is down.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _accept = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let config = config(&format!("redis://127.0.0.1:{port}"), "silent");
    let started = Instant::now();
    let err = RedisBus::connect(config.clone()).await.unwrap_err();
    assert!(
        started.elapsed()
            <= config.connect_timeout + config.command_timeout + Duration::from_millis(500),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(err, RedisError::Unreachable(_)), "{err:?}");
}

#[tokio::test]
async fn an_empty_channel_name_is_rejected_before_connecting() {
    let mut config = RedisConfig::new("redis://127.0.0.1:1");
    config.channel = String::new();
    match RedisBus::connect(config).await {
        Err(RedisError::InvalidConfig(why)) => assert!(why.contains("CHAT_REDIS_CHANNEL"), "{why}"),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}
