//! Pure core of chat-service: what a chat message and a room are, how requests are validated,
//! the ports the outside world plugs into, and the use-case service that ties them together.
//!
//! Other Rust services embed this crate, so it carries no runtime, no I/O and no framework
//! types: adapters (memory, PostgreSQL, Redis) implement [`MessageRepository`] and
//! [`MessageBus`] (and [`RoomMembers`] for private rooms); the server wires them to STOMP and REST.
//!
//! # Posting into a room from another service
//!
//! A message reaches every STOMP client subscribed to its room, on every chat-server
//! instance, once it is **stored** through a [`MessageRepository`] (which gives it the room's
//! next [`Seq`]) and then **published** through a [`MessageBus`] the servers listen to.
//! [`ChatService::send`] does both, in that order, with the same validation the servers
//! apply. In production the store is `chat_adapters_postgres::PostgresRepository` on the
//! servers' `DATABASE_URL` and the bus is `chat_adapters_redis::RedisBus` with the servers'
//! Redis settings (`REDIS_URL`, `CHAT_REDIS_CHANNEL`, `CHAT_REDIS_CHANNEL_MODE`,
//! `CHAT_BUS_SECRET`); `crates/server/examples/announce.rs` is a complete program that does
//! exactly that. Here the same flow runs on the in-memory adapters:
//!
//! ```
//! use std::sync::Arc;
//!
//! use chat_adapters_memory::{InMemoryBus, InMemoryRepository};
//! use chat_domain::{
//!     BusEvent, ChatMessageRequest, ChatService, MessageBus, MessageType, SenderId, Seq,
//! };
//! use futures_util::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), chat_domain::ChatError> {
//! let store = Arc::new(InMemoryRepository::new());
//! let bus = Arc::new(InMemoryBus::new());
//! // The store is also the membership store (private rooms), as with PostgreSQL.
//! let service = ChatService::new(store.clone(), store, bus.clone());
//! let room = service.create_room("support").await?;
//!
//! // What each server instance listens to.
//! let mut heard = bus.subscribe().await.expect("the in-memory bus is always up");
//!
//! let sent = service
//!     .send(
//!         ChatMessageRequest {
//!             chat_room_id: Some(room.id),
//!             sender_id: Some(SenderId(0)),
//!             sender_nickname: Some("Orders".into()),
//!             content: Some("Your order #1042 has shipped".into()),
//!             message_type: Some(MessageType::System),
//!         },
//!         None,
//!     )
//!     .await?;
//! // Ok means committed: the message has its place in the room and is never lost.
//! assert_eq!(sent.message.seq, Seq(1));
//! assert!(sent.publish_error.is_none());
//!
//! let Some(BusEvent::Message(published)) = heard.next().await else {
//!     panic!("the servers hear every stored message");
//! };
//! assert_eq!(published.seq, Some(Seq(1)));
//! # Ok(())
//! # }
//! ```
//!
//! What the result means:
//! - `Ok(SentMessage)` is what a STOMP RECEIPT means to a client: committed, with a seq
//!   that no other message of the room has, one above the room's previous message. Clients
//!   receive the room's messages in seq order, each once, on any instance, and a client
//!   that reconnects with `x-resume-after` gets what it missed.
//! - [`SentMessage::publish_error`] set: stored, but the bus did not take it. Nothing is
//!   lost: every server compares what it delivered with the store on a short period
//!   (`CHAT_RECONCILE_INTERVAL_MS`, 2 s) and delivers it from there.
//! - [`ChatError::StoreOutcomeUnknown`]: the connection broke while committing. Send again
//!   with the same [`IdempotencyKey`]: it returns the stored message if there is one, and
//!   never stores it twice. [`ChatError::StoreUnavailable`]: nothing was stored.
//! - [`ChatError::UnknownRoom`], [`ChatError::Invalid`]: nothing was stored; fix the input.
//!
//! # What is public
//!
//! For embedders: [`ChatService`] and what its methods take and return (the message, room,
//! id and error types), the ports ([`MessageRepository`], [`MessageBus`], [`RoomMembers`])
//! with their event and error types, and [`ChatMessagePublish`], the bus payload. The
//! delivery engine ([`DeliveryEngine`] and its [`Action`]s), the [`RoomSequencer`] and the
//! access rule ([`decide`], [`AccessCache`]) are public for the server crate; embedders
//! rarely need them. The `testkit` feature holds the contract suites an adapter of the
//! ports must pass; `mocks` holds mockall mocks of the ports.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod access;
mod control;
mod cursor;
mod delivery;
mod error;
mod identity;
mod ids;
mod message;
mod ports;
mod presence;
mod publish;
mod room;
mod sequencer;
mod service;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use access::{AccessCache, Decision, Operation, decide};
pub use control::ControlEvent;
#[cfg(any(test, feature = "mocks"))]
pub use cursor::MockReadCursors;
pub use cursor::{MarkedRead, MyRoom, ReadCursors};
pub use delivery::{
    Action, ConnectionId, DeliveryEngine, DisconnectReason, EngineConfig, EngineStats, Fetch,
    FetchId, Fetched, SubscriptionKey,
};
pub use error::{ChatError, ValidationError};
pub use identity::{Caller, Identity};
pub use ids::{MessageId, RoomId, SenderId, Seq};
pub use message::{
    ChatMessage, ChatMessageRequest, IdempotencyKey, MessageContent, MessageType, NewChatMessage,
    SenderNickname,
};
pub use ports::{
    BusCounters, BusError, BusEvent, BusEvents, MessageBus, MessageRepository, RepositoryError,
    RoomMembers,
};
#[cfg(any(test, feature = "mocks"))]
pub use ports::{MockMessageBus, MockMessageRepository, MockRoomMembers};
pub use presence::{
    InstanceId, Presence, PresenceConfig, PresenceEntry, PresenceMember, PresenceOutput,
    PresenceSignal, PresenceStats,
};
pub use publish::{BusPayloadError, ChatMessagePublish};
pub use room::{
    HistoryLimit, HistoryQuery, NewRoom, Room, RoomListLimit, RoomListQuery, RoomName, Visibility,
};
pub use sequencer::{RoomSequencer, SequenceDecision};
pub use service::{ChatService, SentMessage};
