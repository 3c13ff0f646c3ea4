//! Pure core of chat-service: what a chat message and a room are, how requests are validated,
//! the ports the outside world plugs into, and the use-case service that ties them together.
//!
//! Other Rust services embed this crate, so it carries no runtime, no I/O and no framework
//! types: adapters (memory, PostgreSQL, Redis) implement [`MessageRepository`] and
//! [`MessageBus`] (and [`RoomMembers`] for private rooms); the server wires them to STOMP and REST.
#![forbid(unsafe_code)]

mod access;
mod control;
mod delivery;
mod error;
mod identity;
mod ids;
mod message;
mod ports;
mod publish;
mod room;
mod sequencer;
mod service;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use access::{AccessCache, Decision, Operation, decide};
pub use control::ControlEvent;
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
pub use publish::{BusPayloadError, ChatMessagePublish};
pub use room::{
    HistoryLimit, HistoryQuery, NewRoom, Room, RoomListLimit, RoomListQuery, RoomName, Visibility,
};
pub use sequencer::{RoomSequencer, SequenceDecision};
pub use service::{ChatService, SentMessage};
