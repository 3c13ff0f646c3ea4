//! Sharing the channel with other publishers: what the original Spring service puts on Redis
//! is delivered, and garbage is counted and skipped without stopping the subscriber.

mod common;

use chat_adapters_redis::RedisBus;
use chat_domain::{MessageBus, MessageType, RoomId};
use chat_test_support::redis::redis_url;
use common::{config, message, next_message, publish_raw, raw_publisher};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_in_the_spring_services_exact_form_reaches_a_subscriber() {
    let redis = redis_url().await;
    let config = config(redis.url(), "interop-spring");
    let channel = config.channel.clone();
    let bus = RedisBus::connect(config).await.unwrap();
    let mut events = bus.subscribe().await.unwrap();

    // GenericJackson2JsonRedisSerializer applied to a JSON string: the object is encoded a
    // second time as a JSON string, with Jackson's @class, a LocalDateTime and no seq.
    let inner = r#"{"@class":"com.example.chat.dto.ChatMessagePublish","chatRoomId":7,"messageId":99,"senderId":3,"senderNickname":"spring","content":"hello from java","messageType":"ENTER","createdAt":"2026-11-24T21:07:16.123"}"#;
    let payload = serde_json::to_vec(inner).unwrap();
    assert_eq!(payload[0], b'"', "the payload is a JSON string");
    publish_raw(&raw_publisher(redis.url()).await, &channel, &payload).await;

    let got = next_message(&mut events, "the Spring payload").await;
    assert_eq!(got.chat_room_id, RoomId(7));
    assert_eq!(got.content, "hello from java");
    assert_eq!(got.message_type, MessageType::Enter);
    assert_eq!(got.seq, None);
    assert_eq!(got.created_at.to_rfc3339(), "2026-11-24T21:07:16.123+00:00");
    assert_eq!(bus.decode_failures(), 0);
    bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_channel_is_counted_and_the_next_good_message_still_arrives() {
    let redis = redis_url().await;
    let config = config(redis.url(), "interop-garbage");
    let channel = config.channel.clone();
    let bus = RedisBus::connect(config).await.unwrap();
    let mut events = bus.subscribe().await.unwrap();
    let raw = raw_publisher(redis.url()).await;

    publish_raw(&raw, &channel, b"definitely not json").await;
    publish_raw(&raw, &channel, &[0xff, 0xfe, 0x00, 0x80]).await;
    publish_raw(&raw, &channel, br#"{"chatRoomId":1}"#).await;
    let good = message(1, 1);
    bus.publish(&good).await.unwrap();

    assert_eq!(next_message(&mut events, "the good message").await, good);
    assert_eq!(bus.decode_failures(), 3);
    bus.shutdown().await;
}

const SECRET: &str = "a-bus-secret-shared-by-every-instance";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_bus_secret_only_payloads_signed_with_it_are_delivered() {
    let redis = redis_url().await;
    let mut signed_config = config(redis.url(), "interop-signed");
    let channel = signed_config.channel.clone();
    signed_config.secret = Some(SECRET.to_owned());
    let mut other_config = signed_config.clone();
    other_config.secret = Some("another-secret-that-is-long-enough-too".to_owned());
    let mut plain_config = signed_config.clone();
    plain_config.secret = None;

    let signed = RedisBus::connect(signed_config.clone()).await.unwrap();
    let also_signed = RedisBus::connect(signed_config).await.unwrap();
    let other = RedisBus::connect(other_config).await.unwrap();
    let plain = RedisBus::connect(plain_config).await.unwrap();
    let mut at_signed = signed.subscribe().await.unwrap();
    let mut at_plain = plain.subscribe().await.unwrap();

    // Forged by hand (the Spring form, or anyone's), by another key, and unsigned by a bus
    // without the secret: none of it reaches the signed bus.
    publish_raw(
        &raw_publisher(redis.url()).await,
        &channel,
        &message(1, 1).to_json(),
    )
    .await;
    other.publish(&message(1, 2)).await.unwrap();
    plain.publish(&message(1, 3)).await.unwrap();
    let good = message(1, 4);
    also_signed.publish(&good).await.unwrap();
    assert_eq!(
        next_message(&mut at_signed, "the signed message").await,
        good
    );
    assert_eq!(signed.decode_failures(), 3, "the three others were refused");

    // The bus without the secret reads the unsigned ones and refuses the signed ones.
    assert_eq!(
        next_message(&mut at_plain, "the raw one").await,
        message(1, 1)
    );
    assert_eq!(next_message(&mut at_plain, "its own").await, message(1, 3));
    let deadline = tokio::time::Instant::now() + common::SOON;
    while plain.decode_failures() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the signed ones were not refused"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(plain.decode_failures(), 2, "the two signed ones");
    for bus in [signed, also_signed, other, plain] {
        bus.shutdown().await;
    }
}

#[tokio::test]
async fn a_bus_secret_that_is_too_short_is_refused_at_start_up() {
    let redis = redis_url().await;
    let mut config = config(redis.url(), "interop-short");
    config.secret = Some("short".into());
    let Err(error) = RedisBus::connect(config).await else {
        panic!("a 5-byte secret was accepted");
    };
    assert!(error.to_string().contains("CHAT_BUS_SECRET"), "{error}");
}
