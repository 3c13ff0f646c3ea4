//! Read cursors: how far each user has read each room, and the rooms a user has with their
//! exact unread counts. A cursor is a seq, so the unread count is `last_seq − last_read_seq`
//! with no count over the messages.

use async_trait::async_trait;

use crate::{RepositoryError, Room, RoomId, RoomListQuery, SenderId, Seq};

/// What storing a cursor did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkedRead {
    /// The cursor as stored now: never below what it was, never above the room's
    /// `last_seq`.
    pub last_read_seq: Seq,
    /// Whether the stored cursor advanced (a first cursor above 0 counts as advancing).
    pub moved: bool,
}

/// One of a user's rooms with their read position in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MyRoom {
    /// The room as stored, with its `last_seq` when it was read.
    pub room: Room,
    /// The user's cursor; 0 when they have none.
    pub last_read_seq: Seq,
    /// `room.last_seq − last_read_seq`, never negative.
    pub unread: i64,
}

impl MyRoom {
    /// The room with a cursor, the unread count worked out from both.
    #[must_use]
    pub fn new(room: Room, last_read_seq: Seq) -> Self {
        let unread = (room.last_seq.get() - last_read_seq.get()).max(0);
        Self {
            room,
            last_read_seq,
            unread,
        }
    }
}

/// Durable read cursors, kept in the same store as the rooms (a cursor is clamped to its
/// room's `last_seq`, and the room list joins both).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait ReadCursors: Send + Sync + 'static {
    /// Moves `user`'s cursor in `room` to `seq`, clamped to the room's `last_seq`; a
    /// cursor never moves backwards (a lower `seq` leaves it where it is).
    ///
    /// # Errors
    /// [`RepositoryError::UnknownRoom`] when the room does not exist;
    /// [`RepositoryError::Unavailable`] when the store cannot be reached (nothing stored);
    /// [`RepositoryError::OutcomeUnknown`] when it was lost while committing.
    async fn mark_read(
        &self,
        room: RoomId,
        user: SenderId,
        seq: Seq,
    ) -> Result<MarkedRead, RepositoryError>;

    /// One page (by ascending room id, `query.after` and `query.limit`) of `user`'s rooms:
    /// those they have a cursor in, are a member of, or own — less the private rooms they
    /// may no longer read (neither owner nor member). `query.visible_to` is not used: the
    /// list is always `user`'s.
    ///
    /// # Errors
    /// [`RepositoryError::Unavailable`] when the store cannot be reached.
    async fn my_rooms(
        &self,
        user: SenderId,
        query: RoomListQuery,
    ) -> Result<Vec<MyRoom>, RepositoryError>;
}
