//! The domain's errors: what a caller did wrong ([`ValidationError`]) and what a use case
//! could not do ([`ChatError`]). Each carries a stable `code` that clients can switch on.

use thiserror::Error;

use crate::{BusError, RepositoryError, RoomId, SenderId, Seq};

/// A request that breaks the contract of spec §3. Nothing is stored or published.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValidationError {
    /// The body is not what the request expects: not JSON, a value of the wrong type, or a
    /// `chatRoomId` that contradicts the path. The text says what is wrong; fix the request
    /// before sending it again.
    #[error("the body is not valid JSON for this request: {0}")]
    InvalidJson(String),
    /// A required field is absent; it holds the field's JSON name, e.g. `chatRoomId`.
    /// Send the request again with that field.
    #[error("the field `{0}` is required")]
    MissingField(&'static str),
    /// `senderNickname` is empty, only white space, or too long.
    #[error("senderNickname must be 1 to {max} characters, got {actual}")]
    InvalidNickname {
        /// The longest nickname allowed, in characters
        /// ([`SenderNickname::MAX_CHARS`](crate::SenderNickname::MAX_CHARS)).
        max: usize,
        /// The length of the nickname sent, in characters (Unicode scalar values).
        actual: usize,
    },
    /// `content` is empty or only white space: there is nothing to send.
    #[error("content is empty after trimming white space")]
    EmptyContent,
    /// `content` is too long once trimmed; shorten or split it.
    #[error("content must be at most {max} characters after trimming, got {actual}")]
    ContentTooLong {
        /// The longest content allowed, in characters
        /// ([`MessageContent::MAX_CHARS`](crate::MessageContent::MAX_CHARS)).
        max: usize,
        /// The length of the trimmed content sent, in characters.
        actual: usize,
    },
    /// A room name is empty or too long once trimmed.
    #[error("room name must be 1 to {max} characters after trimming, got {actual}")]
    InvalidRoomName {
        /// The longest name allowed, in characters
        /// ([`RoomName::MAX_CHARS`](crate::RoomName::MAX_CHARS)).
        max: usize,
        /// The length of the trimmed name sent, in characters (0 for an empty one).
        actual: usize,
    },
    /// A page `limit` is below 1 or above `max`.
    #[error("limit must be between 1 and {max}, got {actual}")]
    InvalidLimit {
        /// The largest page allowed ([`HistoryLimit::MAX`](crate::HistoryLimit::MAX)).
        max: u32,
        /// The limit asked for.
        actual: i64,
    },
    /// `afterSeq` or `beforeSeq` is below 0. Seqs start at 1, so `afterSeq=0` already reads
    /// from the first message.
    #[error("afterSeq and beforeSeq must not be negative")]
    NegativeSeq,
    /// A read cursor's `seq` is below 0. 0 means "read nothing"; a seq above the room's
    /// newest is accepted and stored as the newest.
    #[error("seq must not be negative (0 means nothing read yet)")]
    NegativeReadSeq,
    /// A text field contains U+0000, which PostgreSQL cannot store; it holds the field's
    /// name (`content`, `senderNickname` or `name`). Remove the character.
    #[error("`{0}` contains a NUL character (U+0000), which cannot be stored")]
    NulCharacter(&'static str),
    /// A room's `visibility` is neither `public` nor `private`; it holds what was sent, cut
    /// to 40 characters.
    #[error("visibility must be \"public\" or \"private\", got {0:?}")]
    InvalidVisibility(String),
    /// An idempotency key is empty, too long, or has a character outside visible ASCII
    /// (`!` to `~`; no space).
    #[error("the idempotency key must be 1 to {max} visible ASCII characters (a UUID fits)")]
    InvalidIdempotencyKey {
        /// The longest key allowed, in characters
        /// ([`IdempotencyKey::MAX_CHARS`](crate::IdempotencyKey::MAX_CHARS)).
        max: usize,
    },
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
            Self::NegativeReadSeq => "INVALID_SEQ",
        }
    }
}

/// Why a use case of [`crate::ChatService`] failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChatError {
    /// The request breaks a rule of [`ValidationError`]; nothing was stored. Sending it
    /// again unchanged fails the same way: fix it first.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// No room has this id; nothing was done. Create the room first, or check the id.
    #[error("chat room {0} does not exist; create it first with POST /api/chatrooms")]
    UnknownRoom(RoomId),
    /// The store could not be reached or refused the operation, which had no effect
    /// (nothing was stored). Retry later; the text says why.
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
        /// The room subscribed to.
        room: RoomId,
        /// The `x-resume-after` the client sent.
        requested: Seq,
        /// The room's newest seq in the store.
        last_seq: Seq,
    },
    /// The bus could not be reached, or this instance is shutting down, so the operation
    /// (such as a subscription) was not set up. Retry later, on this or another instance.
    #[error("the message bus is unavailable ({0})")]
    BusUnavailable(String),
    /// An authenticated user sent a body naming another sender.
    #[error(
        "senderId {claimed} is not you: you are signed in as user {user}; leave senderId out or send your own"
    )]
    SenderMismatch {
        /// The `senderId` the body named.
        claimed: SenderId,
        /// The signed-in user, whose id every message they send carries.
        user: SenderId,
    },
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
