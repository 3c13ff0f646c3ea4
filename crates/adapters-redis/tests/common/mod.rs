//! Helpers shared by the integration tests: configs on a per-test channel, sample messages,
//! a plain fred client for publishing raw payloads, and bounded waits on bus events.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::time::Duration;

use chat_adapters_redis::RedisConfig;
use chat_domain::{
    BusEvent, BusEvents, ChatMessagePublish, MessageId, MessageType, RoomId, SenderId, Seq,
};
use fred::prelude::{Builder, ClientLike, Config, PubsubInterface};
use futures_util::StreamExt;

/// Shows the adapter's log lines when `TEST_LOG` is set (e.g. `TEST_LOG=debug`); silent
/// otherwise, so test output stays readable.
pub fn init_logs() {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// Generous bound for anything that should happen "soon" on a busy 2-core machine.
pub const SOON: Duration = Duration::from_secs(10);

/// A config for `url` on a channel no other test uses, with short timeouts so failures show
/// quickly.
pub fn config(url: &str, prefix: &str) -> RedisConfig {
    let mut config = RedisConfig::new(url);
    config.channel = chat_test_support::redis::unique_channel(prefix);
    config.connect_timeout = Duration::from_secs(2);
    config.command_timeout = Duration::from_secs(1);
    config
}

pub fn message(room: i64, seq: i64) -> ChatMessagePublish {
    ChatMessagePublish {
        chat_room_id: RoomId(room),
        message_id: MessageId(room * 1_000 + seq),
        sender_id: SenderId(1),
        sender_nickname: "tester".into(),
        content: format!("message {seq} of room {room}"),
        message_type: MessageType::Text,
        // Whole milliseconds, which is what the wire carries, so received == sent.
        created_at: chrono::DateTime::from_timestamp_millis(1_790_000_000_123).unwrap(),
        seq: Some(Seq(seq)),
    }
}

/// The next event, or a panic naming `what` if none comes in time.
pub async fn next_event(events: &mut BusEvents, what: &str) -> BusEvent {
    tokio::time::timeout(SOON, events.next())
        .await
        .unwrap_or_else(|_| panic!("no event within {SOON:?} while waiting for {what}"))
        .unwrap_or_else(|| panic!("the subscription ended while waiting for {what}"))
}

/// The next message, skipping `MayHaveMissedMessages`.
pub async fn next_message(events: &mut BusEvents, what: &str) -> ChatMessagePublish {
    loop {
        if let BusEvent::Message(message) = next_event(events, what).await {
            return message;
        }
    }
}

/// A plain client, as another program (the Spring service) would use, to put raw payloads on
/// the channel.
pub async fn raw_publisher(url: &str) -> fred::clients::Client {
    let client = Builder::from_config(Config::from_url(url).unwrap())
        .build()
        .unwrap();
    client.init().await.expect("raw publisher connects");
    client
}

pub async fn publish_raw(client: &fred::clients::Client, channel: &str, payload: &[u8]) {
    let _receivers: i64 = client
        .publish(channel, payload.to_vec())
        .await
        .expect("raw PUBLISH");
}
