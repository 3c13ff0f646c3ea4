//! Posts one `SYSTEM` message into a room from outside chat-server, the way another Rust
//! service (an order service telling a support room "your order shipped") embeds the core:
//! `chat-domain`'s [`ChatService`] over the PostgreSQL and Redis adapters, the same service
//! code the server runs. Every STOMP client subscribed to the room on any running
//! chat-server instance receives it, in seq order with the room's other messages.
//!
//! ```sh
//! cargo run --release --example announce -- \
//!   --database-url postgres://postgres@127.0.0.1:5432/chat \
//!   --redis-url redis://127.0.0.1:6379 --room 1 --text "Maintenance at 22:00 UTC"
//! ```
//!
//! It reads the servers' own variables (`DATABASE_URL`, `REDIS_URL`, `CHAT_REDIS_CHANNEL`,
//! `CHAT_REDIS_CHANNEL_MODE`, `CHAT_BUS_SECRET`), so it reaches the same channels in every
//! Redis mode. It uses nothing of the `chat-server` crate: only `chat-domain` and the
//! adapter crates.
//!
//! Exit status: 0 posted (a line with the message id and seq on stdout); 1 the room does not
//! exist or the input is invalid; 2 PostgreSQL or Redis is down or misconfigured, nothing
//! was stored; 3 the store did not confirm the commit: run again with the same
//! `--idempotency-key` to find out without posting twice.

use std::process::ExitCode;
use std::sync::Arc;

use chat_adapters_postgres::{PostgresConfig, PostgresRepository};
use chat_adapters_redis::{ChannelMode, RedisBus, RedisConfig};
use chat_domain::{
    ChatError, ChatMessageRequest, ChatService, IdempotencyKey, MessageType, RoomId, SenderId,
};
use clap::Parser;

/// Post a SYSTEM message into a chat-service room.
#[derive(Debug, Parser)]
#[command(name = "announce")]
struct Args {
    /// The chat-service database (the servers' DATABASE_URL).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// The servers' Redis, in any of its forms: redis://, redis-sentinel://, redis-cluster://.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: String,
    /// The servers' Pub/Sub channel (or per-room prefix).
    #[arg(long, env = "CHAT_REDIS_CHANNEL", default_value = RedisConfig::DEFAULT_CHANNEL)]
    redis_channel: String,
    /// The servers' channel mode: single or per-room (unset: their default for the topology).
    #[arg(long, env = "CHAT_REDIS_CHANNEL_MODE", value_parser = parse_mode)]
    redis_channel_mode: Option<ChannelMode>,
    /// The servers' bus signing secret, when they have one.
    #[arg(long, env = "CHAT_BUS_SECRET", hide_env_values = true)]
    bus_secret: Option<String>,
    /// The room's id.
    #[arg(long)]
    room: i64,
    /// The message, at most the servers' content limit.
    #[arg(long)]
    text: String,
    /// The name shown as the sender.
    #[arg(long, default_value = "System")]
    nickname: String,
    /// The sender id stored with the message.
    #[arg(long, default_value_t = 0)]
    sender_id: i64,
    /// Makes a retry safe: the same key (per sender and room) never stores twice.
    #[arg(long)]
    idempotency_key: Option<String>,
}

fn parse_mode(value: &str) -> Result<ChannelMode, String> {
    value.parse()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match announce(args).await {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err((code, message)) => {
            eprintln!("announce: {message}");
            ExitCode::from(code)
        }
    }
}

async fn announce(args: Args) -> Result<String, (u8, String)> {
    let key = args
        .idempotency_key
        .as_deref()
        .map(IdempotencyKey::parse)
        .transpose()
        .map_err(|e| (1, e.to_string()))?;
    let store = PostgresRepository::connect(PostgresConfig::new(args.database_url))
        .await
        .map(Arc::new)
        .map_err(|e| (2, format!("PostgreSQL: {e}")))?;
    let mut redis = RedisConfig::new(args.redis_url);
    redis.channel = args.redis_channel;
    redis.channel_mode = args.redis_channel_mode;
    redis.secret = args.bus_secret;
    let bus = RedisBus::connect(redis)
        .await
        .map(Arc::new)
        .map_err(|e| (2, format!("Redis: {e}")))?;
    let service = ChatService::new(store.clone(), store, bus.clone());

    let request = ChatMessageRequest {
        chat_room_id: Some(RoomId(args.room)),
        sender_id: Some(SenderId(args.sender_id)),
        sender_nickname: Some(args.nickname),
        content: Some(args.text),
        message_type: Some(MessageType::System),
    };
    let sent = service.send(request, key).await;
    bus.shutdown().await;
    let sent = sent.map_err(|e| match e {
        ChatError::Invalid(_) | ChatError::UnknownRoom(_) => (1, e.to_string()),
        ChatError::StoreOutcomeUnknown(_) => (3, e.to_string()),
        other => (2, other.to_string()),
    })?;
    if let Some(error) = sent.publish_error {
        // Stored, so nobody loses it: the servers' reconciliation fetches it within
        // CHAT_RECONCILE_INTERVAL_MS instead of the bus bringing it at once.
        eprintln!(
            "announce: stored, but publishing to Redis failed ({error}); connected clients get it \
             from the database within the servers' reconciliation interval"
        );
    }
    Ok(format!(
        "posted message {} into room {} as seq {}",
        sent.message.id, sent.message.room_id, sent.message.seq
    ))
}
