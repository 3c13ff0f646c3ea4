//! Identifier newtypes, so a room id can never be passed where a sender id is expected.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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
    /// The seq that follows this one.
    #[must_use]
    pub const fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}
