//! The ports: what the core needs from a message store and a message bus. Adapters implement
//! them; the memory adapter is the embedded default and the test double.
//!
//! The traits use `async-trait` so they stay dyn-compatible (`Arc<dyn MessageBus>`) and
//! mockable with mockall.

use std::pin::Pin;

use async_trait::async_trait;
use futures_core::Stream;
use thiserror::Error;

use crate::{
    ChatMessage, ChatMessagePublish, ControlEvent, HistoryQuery, NewChatMessage, NewRoom, Room,
    RoomId, RoomListQuery, SenderId, Seq,
};

/// What a [`MessageRepository`] can fail with. Adapters map driver errors into these at
/// their boundary; nothing above an adapter sees a driver type.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RepositoryError {
    /// The room does not exist.
    #[error("chat room {0} does not exist")]
    UnknownRoom(RoomId),
    /// The store cannot be reached or refused the operation; the operation had no effect
    /// and may be retried.
    #[error("message store unavailable: {0}")]
    Unavailable(String),
    /// The store was committing when it became unreachable: the operation may or may not
    /// have taken effect. Never reported for an operation known to have had no effect.
    #[error("message store outcome unknown: {0}")]
    OutcomeUnknown(String),
}

/// Durable storage of rooms and messages.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait MessageRepository: Send + Sync + 'static {
    /// Creates a room with `last_seq` 0.
    ///
    /// # Errors
    /// [`RepositoryError::Unavailable`] when the store cannot be reached.
    async fn create_room(&self, room: NewRoom) -> Result<Room, RepositoryError>;

    /// Looks a room up; `Ok(None)` when it does not exist.
    ///
    /// # Errors
    /// [`RepositoryError::Unavailable`] when the store cannot be reached.
    async fn find_room(&self, id: RoomId) -> Result<Option<Room>, RepositoryError>;

    /// One page of rooms by ascending id (see [`RoomListQuery`]): with `visible_to`, only
    /// the public rooms, the rooms that user owns and the rooms [`RoomMembers`] lists them
    /// in.
    ///
    /// # Errors
    /// [`RepositoryError::Unavailable`] when the store cannot be reached.
    async fn list_rooms(&self, query: RoomListQuery) -> Result<Vec<Room>, RepositoryError>;

    /// Durably stores a message and returns it with its id, its `seq` (the room's previous
    /// `last_seq` + 1, never a hole, never a duplicate, also across processes) and its
    /// creation time. When this returns `Ok`, the message survives a crash.
    ///
    /// With an idempotency key, a message whose (room, sender, key) is already stored is not
    /// stored again: the first one is returned, with its id and seq.
    ///
    /// # Errors
    /// [`RepositoryError::UnknownRoom`] when the room does not exist;
    /// [`RepositoryError::Unavailable`] when the store cannot be reached — then nothing was
    /// stored and no seq was used; [`RepositoryError::OutcomeUnknown`] when the store was
    /// lost while committing and could not tell afterwards whether the message was kept
    /// (a retry with the same idempotency key finds out without storing it twice).
    async fn append(&self, message: NewChatMessage) -> Result<ChatMessage, RepositoryError>;

    /// The newest `seq` of each of `rooms` that exists (rooms that do not are left out), in
    /// one round trip: how an instance checks that the bus brought it everything.
    ///
    /// # Errors
    /// [`RepositoryError::Unavailable`] when the store cannot be reached.
    async fn last_seqs(&self, rooms: &[RoomId]) -> Result<Vec<(RoomId, Seq)>, RepositoryError>;

    /// One page of a room's messages, in ascending `seq` order (see [`HistoryQuery`]).
    ///
    /// # Errors
    /// [`RepositoryError::UnknownRoom`] when the room does not exist;
    /// [`RepositoryError::Unavailable`] when the store cannot be reached.
    async fn history(
        &self,
        room: RoomId,
        query: HistoryQuery,
    ) -> Result<Vec<ChatMessage>, RepositoryError>;

    /// Succeeds when the store can serve requests right now (for `/health/ready`).
    ///
    /// # Errors
    /// [`RepositoryError::Unavailable`] saying why not.
    async fn check_health(&self) -> Result<(), RepositoryError>;
}

/// The members of private rooms. A store implements it beside [`MessageRepository`] (the
/// room list filters by it); who may change it is decided by [`crate::decide`].
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait RoomMembers: Send + Sync + 'static {
    /// Makes `user` a member of `room`; `Ok(false)` when they already were.
    ///
    /// # Errors
    /// [`RepositoryError::UnknownRoom`], [`RepositoryError::Unavailable`].
    async fn add_member(&self, room: RoomId, user: SenderId) -> Result<bool, RepositoryError>;

    /// Ends `user`'s membership of `room`; `Ok(false)` when they were not a member.
    ///
    /// # Errors
    /// [`RepositoryError::Unavailable`].
    async fn remove_member(&self, room: RoomId, user: SenderId) -> Result<bool, RepositoryError>;

    /// Whether `user` is a member of `room` (an unknown room has no members).
    ///
    /// # Errors
    /// [`RepositoryError::Unavailable`].
    async fn is_member(&self, room: RoomId, user: SenderId) -> Result<bool, RepositoryError>;
}

/// What a [`MessageBus`] can fail with.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BusError {
    /// The bus cannot be reached; a publish may not have reached other instances.
    #[error("message bus unavailable: {0}")]
    Unavailable(String),
}

/// What a bus subscription yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusEvent {
    /// A message published by any instance, this one included.
    Message(ChatMessagePublish),
    /// A control event published by any instance, this one included.
    Control(ControlEvent),
    /// The subscription was interrupted (reconnect, lag, overflow): messages and control
    /// events may have been missed. The receiver must backfill from the repository before
    /// trusting new ones, and check again what control events would have changed.
    MayHaveMissedMessages,
    /// The bus carries `room` from now on (after [`MessageBus::watch_room`], or again after
    /// a resubscription of that room alone): what was published before may have been
    /// missed, so the receiver catches that room up from the repository.
    MayHaveMissedRoom(RoomId),
}

/// Counters a bus keeps about its own connection, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusCounters {
    /// Times the bus lost its connection and reconnected.
    pub reconnects: u64,
    /// Received payloads that were not a `ChatMessagePublish` (logged and skipped).
    pub decode_failures: u64,
    /// Messages received from the bus and handed to subscriptions (a bus that gives each
    /// instance only its rooms' traffic shows it here).
    pub received: u64,
    /// Rooms the bus currently carries on their own channel; 0 on a bus with one channel
    /// for all rooms.
    pub rooms_watched: u64,
}

/// The stream of a subscription. It ends only when the bus shuts down.
pub type BusEvents = Pin<Box<dyn Stream<Item = BusEvent> + Send>>;

/// Fan-out of stored messages to every server instance.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait MessageBus: Send + Sync + 'static {
    /// Publishes a stored message to every instance's subscription, this one included.
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when it could not be handed to the bus. Delivery is not
    /// guaranteed even on `Ok`: receivers detect gaps by `seq` and backfill.
    async fn publish(&self, message: &ChatMessagePublish) -> Result<(), BusError>;

    /// Publishes a control event to every instance's subscription, this one included.
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when it could not be handed to the bus. Like messages,
    /// control events can be lost: receivers act again on [`BusEvent::MayHaveMissedMessages`].
    async fn publish_control(&self, event: &ControlEvent) -> Result<(), BusError>;

    /// Declares interest in `room`: this instance has (or is about to have) subscribers
    /// there. Reference-counted: every call is matched by one [`MessageBus::unwatch_room`].
    /// A bus with one channel for every room carries all rooms anyway and ignores it; a bus
    /// with a channel per room subscribes to it in the background and then yields
    /// [`BusEvent::MayHaveMissedRoom`] on every subscription, since messages published before
    /// the channel was in effect never reached this instance.
    ///
    /// Never blocks and never fails: while the bus is down the interest is kept and acted
    /// on when it is back. Required (no default) so that a wrapper around a bus cannot
    /// swallow it by forgetting to pass it on.
    fn watch_room(&self, room: RoomId);

    /// Ends one [`MessageBus::watch_room`]; when the last interest in `room` ends, the bus
    /// may stop carrying it to this instance.
    fn unwatch_room(&self, room: RoomId);

    /// Opens a subscription that receives everything published from now on.
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when the bus cannot be reached.
    async fn subscribe(&self) -> Result<BusEvents, BusError>;

    /// Succeeds when both publishing and the subscription work right now (for
    /// `/health/ready`: a bus that publishes while its subscriber is dead is not healthy).
    ///
    /// # Errors
    /// [`BusError::Unavailable`] saying why not.
    async fn check_health(&self) -> Result<(), BusError>;

    /// Connection counters for metrics; a bus without a connection keeps none.
    fn counters(&self) -> BusCounters {
        BusCounters::default()
    }
}
