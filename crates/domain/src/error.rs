//! The domain's errors: what a caller did wrong ([`ValidationError`]) and what a use case
//! could not do ([`ChatError`]). Each carries a stable `code` that clients can switch on.

use thiserror::Error;

use crate::{BusError, RepositoryError, RoomId, SenderId, Seq};

/// A request that breaks the contract of spec §3. Nothing is stored or published.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValidationError {
    #[error("the body is not valid JSON for this request: {0}")]
    InvalidJson(String),
    #[error("the field `{0}` is required")]
    MissingField(&'static str),
    #[error("senderNickname must be 1 to {max} characters, got {actual}")]
    InvalidNickname { max: usize, actual: usize },
    #[error("content is empty after trimming white space")]
    EmptyContent,
    #[error("content must be at most {max} characters after trimming, got {actual}")]
    ContentTooLong { max: usize, actual: usize },
    #[error("room name must be 1 to {max} characters after trimming, got {actual}")]
    InvalidRoomName { max: usize, actual: usize },
    #[error("limit must be between 1 and {max}, got {actual}")]
    InvalidLimit { max: u32, actual: i64 },
    #[error("afterSeq and beforeSeq must not be negative")]
    NegativeSeq,
    #[error("`{0}` contains a NUL character (U+0000), which cannot be stored")]
    NulCharacter(&'static str),
    #[error("visibility must be \"public\" or \"private\", got {0:?}")]
    InvalidVisibility(String),
    #[error("the idempotency key must be 1 to {max} visible ASCII characters (a UUID fits)")]
    InvalidIdempotencyKey { max: usize },
}

impl ValidationError {
    /// Stable machine-readable code, sent to clients in error bodies.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidJson(_) => "INVALID_JSON",
            Self::MissingField(_) => "MISSING_FIELD",
            Self::InvalidNickname { .. } => "INVALID_NICKNAME",
            Self::EmptyContent => "EMPTY_CONTENT",
            Self::ContentTooLong { .. } => "CONTENT_TOO_LONG",
            Self::InvalidRoomName { .. } => "INVALID_ROOM_NAME",
            Self::InvalidLimit { .. } | Self::NegativeSeq => "INVALID_PAGINATION",
            Self::InvalidIdempotencyKey { .. } => "INVALID_IDEMPOTENCY_KEY",
            Self::NulCharacter(_) => "INVALID_CHARACTER",
            Self::InvalidVisibility(_) => "INVALID_VISIBILITY",
        }
    }
}

/// Why a use case of [`crate::ChatService`] failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChatError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("chat room {0} does not exist; create it first with POST /api/chatrooms")]
    UnknownRoom(RoomId),
    #[error("the message store is unavailable, nothing was stored; retry later ({0})")]
    StoreUnavailable(String),
    /// The store may or may not have kept the message (the connection was lost while it
    /// committed). Retrying with the same idempotency key is safe: it never stores twice.
    #[error(
        "the message store did not confirm whether the message was stored; retry with the same \
         idempotency key (x-idempotency-key / Idempotency-Key) to find out without storing it twice ({0})"
    )]
    StoreOutcomeUnknown(String),
    /// `x-resume-after` names a seq the room has not reached: the client's position comes
    /// from another history (a restored database, an in-memory restart).
    #[error(
        "x-resume-after {requested} is past the end of room {room} (its lastSeq is {last_seq}); \
         the room's history changed: drop local state and resubscribe without x-resume-after, \
         or resume from at most {last_seq}"
    )]
    InvalidResume {
        room: RoomId,
        requested: Seq,
        last_seq: Seq,
    },
    #[error("the message bus is unavailable ({0})")]
    BusUnavailable(String),
    /// An authenticated user sent a body naming another sender.
    #[error(
        "senderId {claimed} is not you: you are signed in as user {user}; leave senderId out or send your own"
    )]
    SenderMismatch { claimed: SenderId, user: SenderId },
    /// The caller may not do this.
    #[error("not allowed: {0}")]
    Forbidden(String),
    /// The caller went over a rate limit; nothing was done.
    #[error("rate limited: {0}")]
    RateLimited(String),
}

impl ChatError {
    /// Stable machine-readable code, sent to clients in error bodies.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(v) => v.code(),
            Self::UnknownRoom(_) => "UNKNOWN_ROOM",
            Self::StoreUnavailable(_) => "STORE_UNAVAILABLE",
            Self::StoreOutcomeUnknown(_) => "STORE_OUTCOME_UNKNOWN",
            Self::InvalidResume { .. } => "INVALID_RESUME",
            Self::BusUnavailable(_) => "BUS_UNAVAILABLE",
            Self::SenderMismatch { .. } => "SENDER_MISMATCH",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::RateLimited(_) => "RATE_LIMITED",
        }
    }
}

impl From<RepositoryError> for ChatError {
    fn from(error: RepositoryError) -> Self {
        match error {
            RepositoryError::UnknownRoom(room) => Self::UnknownRoom(room),
            RepositoryError::Unavailable(why) => Self::StoreUnavailable(why),
            RepositoryError::OutcomeUnknown(why) => Self::StoreOutcomeUnknown(why),
        }
    }
}

impl From<BusError> for ChatError {
    fn from(error: BusError) -> Self {
        Self::BusUnavailable(error.to_string())
    }
}
