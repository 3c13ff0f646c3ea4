//! Identifier newtypes, so a room id can never be passed where a sender id is expected.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl $name {
            /// The raw value, for adapters that store it.
            #[must_use]
            pub const fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

id_newtype!(
    /// A chat room, as in `/topic/chatroom/{roomId}`.
    RoomId
);
id_newtype!(
    /// A stored message; unique across rooms. Used as the STOMP `message-id`.
    MessageId
);
id_newtype!(
    /// The user who sent a message.
    SenderId
);
id_newtype!(
    /// A message's position in its room: 1, 2, 3, … with no holes, assigned when stored.
    /// Every instance and client uses it to detect a gap and to resume.
    Seq
);

impl Seq {
    /// The largest seq a room can reach; a store refuses to go past it.
    pub const MAX: Seq = Seq(i64::MAX);

    /// The seq that follows this one, saturating at [`Seq::MAX`]: a room never reaches it
    /// (2^63 messages), and saturating keeps a hostile `x-resume-after` from overflowing.
    #[must_use]
    pub const fn next(self) -> Seq {
        Seq(self.0.saturating_add(1))
    }

    /// The seq before this one, never below 0 (0 means "before the first message").
    #[must_use]
    pub const fn prev(self) -> Seq {
        if self.0 <= 0 { Seq(0) } else { Seq(self.0 - 1) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_arithmetic_never_overflows_or_goes_negative() {
        assert_eq!(Seq(4).next(), Seq(5));
        assert_eq!(Seq::MAX.next(), Seq::MAX);
        assert_eq!(Seq(5).prev(), Seq(4));
        assert_eq!(Seq(0).prev(), Seq(0));
        assert_eq!(Seq(i64::MIN).prev(), Seq(0));
    }
}
