//! Chat rooms and the history query over a room's messages.

use chrono::{DateTime, Utc};

use crate::{RoomId, SenderId, Seq, ValidationError};

/// A room name: 1 to 100 characters once trimmed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoomName(String);

impl RoomName {
    /// The longest name once trimmed, in characters (Unicode scalar values).
    pub const MAX_CHARS: usize = 100;

    /// # Errors
    /// [`ValidationError::InvalidRoomName`] when empty or too long after trimming.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        if raw.contains('\0') {
            return Err(ValidationError::NulCharacter("name"));
        }
        let trimmed = raw.trim();
        let chars = trimmed.chars().count();
        if chars == 0 || chars > Self::MAX_CHARS {
            return Err(ValidationError::InvalidRoomName {
                max: Self::MAX_CHARS,
                actual: chars,
            });
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The trimmed name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Who may read and write a room. It never changes once the room exists, so an instance
/// may remember it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Visibility {
    /// Every caller reads and writes (the seed's rooms).
    #[default]
    Public,
    /// Only the owner, the members and admins.
    Private,
}

impl Visibility {
    /// The wire and storage name: `public` or `private`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Private => "private",
        }
    }

    /// # Errors
    /// [`ValidationError::InvalidVisibility`] for anything but `public` or `private`.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        match raw {
            "public" => Ok(Self::Public),
            "private" => Ok(Self::Private),
            _ => Err(ValidationError::InvalidVisibility(
                raw.chars().take(40).collect(),
            )),
        }
    }
}

/// A stored room. `last_seq` is the seq of its newest message (0 when it has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    /// Assigned by the store when the room was created.
    pub id: RoomId,
    /// The name it was created with (trimmed, as a [`RoomName`] holds it).
    pub name: String,
    /// When the store created it, by the store's clock.
    pub created_at: DateTime<Utc>,
    /// The seq of its newest message when it was read; 0 when it has none.
    pub last_seq: Seq,
    /// Who may read and write it; fixed when it was created.
    pub visibility: Visibility,
    /// The user who created it; `None` for rooms created without a signed-in user (open
    /// mode, trusted code, rooms from before visibility existed).
    pub owner: Option<SenderId>,
}

/// A room to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRoom {
    /// The validated name.
    pub name: RoomName,
    /// Who may read and write it; it cannot be changed later.
    pub visibility: Visibility,
    /// Its creator, who manages its members; `None` for a room nobody owns (open mode,
    /// trusted code).
    pub owner: Option<SenderId>,
}

impl NewRoom {
    /// A public room without an owner.
    #[must_use]
    pub fn public(name: RoomName) -> Self {
        Self {
            name,
            visibility: Visibility::Public,
            owner: None,
        }
    }
}

/// How many rooms one list page may hold: 1 to 200, 50 when not given (the same bounds
/// as a history page).
pub type RoomListLimit = HistoryLimit;

/// One page of the room list, by keyset on the room id (ascending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomListQuery {
    /// Only rooms with a larger id.
    pub after: Option<RoomId>,
    /// The most rooms on the page.
    pub limit: RoomListLimit,
    /// `Some(user)`: only the rooms that user may read (public ones, the ones they own and
    /// the ones they are a member of). `None`: every room.
    pub visible_to: Option<SenderId>,
}

impl RoomListQuery {
    /// The first page of every room.
    #[must_use]
    pub fn all(limit: RoomListLimit) -> Self {
        Self {
            after: None,
            limit,
            visible_to: None,
        }
    }
}

/// How many messages one history page may hold: 1 to 200, 50 when not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimit(u32);

impl HistoryLimit {
    /// The largest limit [`HistoryLimit::parse`] accepts.
    pub const MAX: u32 = 200;
    /// The limit when a request gives none: 50.
    pub const DEFAULT: HistoryLimit = HistoryLimit(50);
    /// The largest page.
    pub const MAX_PAGE: HistoryLimit = HistoryLimit(Self::MAX);

    /// # Errors
    /// [`ValidationError::InvalidLimit`] outside 1..=200.
    pub fn parse(raw: i64) -> Result<Self, ValidationError> {
        match u32::try_from(raw) {
            Ok(n) if (1..=Self::MAX).contains(&n) => Ok(Self(n)),
            _ => Err(ValidationError::InvalidLimit {
                max: Self::MAX,
                actual: raw,
            }),
        }
    }

    /// The most items (messages or rooms) a page may hold, 1 to [`HistoryLimit::MAX`].
    #[must_use]
    pub fn get(self) -> u32 {
        self.0
    }
}

/// One page of a room's history, by keyset on `seq` so pages stay stable while new
/// messages arrive.
///
/// - `after` set: the oldest `limit` messages with `seq > after` (and `< before` if set);
///   this is how a client or an instance catches up.
/// - `after` unset: the newest `limit` messages with `seq < before` (or the newest of
///   all); this is how a UI scrolls back.
///
/// Either way the page is returned in ascending `seq` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only messages with a larger seq; when set, the page is the oldest of them.
    /// `None`: the page is the newest of the messages `before` allows.
    pub after: Option<Seq>,
    /// Only messages with a smaller seq; `None` sets no upper bound.
    pub before: Option<Seq>,
    /// The most messages on the page.
    pub limit: HistoryLimit,
}

impl HistoryQuery {
    /// The page right after `seq`.
    #[must_use]
    pub fn after(seq: Seq, limit: HistoryLimit) -> Self {
        Self {
            after: Some(seq),
            before: None,
            limit,
        }
    }

    /// The newest page.
    #[must_use]
    pub fn latest(limit: HistoryLimit) -> Self {
        Self {
            after: None,
            before: None,
            limit,
        }
    }

    /// The first page of a forward read of `after < seq < before` (to the end when
    /// `before` is `None`).
    #[must_use]
    pub fn range(after: Seq, before: Option<Seq>, limit: HistoryLimit) -> Self {
        Self {
            after: Some(after),
            before,
            limit,
        }
    }

    /// Reading forward page by page (the one paging rule, for catch-up and for resume
    /// replay): the query after a page of `len` messages that ended at `last`; `None` when
    /// that page was the last one, because it was short or reached `before`, or because
    /// this query does not read forward.
    #[must_use]
    pub fn next_page(&self, len: usize, last: Seq) -> Option<Self> {
        self.after?;
        let full = len >= self.limit.get() as usize;
        let more = full && self.before.is_none_or(|before| last.next() < before);
        more.then_some(Self {
            after: Some(last),
            ..*self
        })
    }

    /// Builds a query from the raw `afterSeq`, `beforeSeq` and `limit` parameters.
    ///
    /// # Errors
    /// [`ValidationError::NegativeSeq`] or [`ValidationError::InvalidLimit`].
    pub fn parse(
        after: Option<i64>,
        before: Option<i64>,
        limit: Option<i64>,
    ) -> Result<Self, ValidationError> {
        if after.is_some_and(|s| s < 0) || before.is_some_and(|s| s < 0) {
            return Err(ValidationError::NegativeSeq);
        }
        Ok(Self {
            after: after.map(Seq),
            before: before.map(Seq),
            limit: limit.map_or(Ok(HistoryLimit::DEFAULT), HistoryLimit::parse)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_are_trimmed_and_bounded() {
        assert_eq!(RoomName::parse("  lobby ").unwrap().as_str(), "lobby");
        assert!(RoomName::parse("   ").is_err());
        assert!(RoomName::parse(&"r".repeat(101)).is_err());
    }

    #[test]
    fn history_limit_defaults_to_fifty_and_caps_at_two_hundred() {
        let q = HistoryQuery::parse(None, None, None).unwrap();
        assert_eq!(q.limit.get(), 50);
        assert!(HistoryQuery::parse(None, None, Some(200)).is_ok());
        assert_eq!(
            HistoryQuery::parse(None, None, Some(201))
                .unwrap_err()
                .code(),
            "INVALID_PAGINATION"
        );
        assert!(HistoryQuery::parse(None, None, Some(0)).is_err());
        assert!(HistoryQuery::parse(Some(-1), None, None).is_err());
    }

    #[test]
    fn a_forward_read_goes_on_while_pages_are_full_and_stops_at_before() {
        let two = HistoryLimit::parse(2).unwrap();
        let open = HistoryQuery::range(Seq(0), None, two);
        assert_eq!(
            open.next_page(2, Seq(2)),
            Some(HistoryQuery::range(Seq(2), None, two))
        );
        assert_eq!(open.next_page(1, Seq(1)), None, "a short page is the last");
        let bounded = HistoryQuery::range(Seq(0), Some(Seq(5)), two);
        assert!(bounded.next_page(2, Seq(3)).is_some());
        assert_eq!(bounded.next_page(2, Seq(4)), None, "seq 5 is not wanted");
        assert_eq!(HistoryQuery::latest(two).next_page(2, Seq(9)), None);
    }
}
