//! The presence gossip on the bus: what one instance tells the others about the users it
//! holds. Every signal names its instance and that instance's presence version, which
//! grows by one with every change, so a receiver notices a change it missed and asks for
//! the whole state again.

use serde::{Deserialize, Serialize};

use crate::{BusPayloadError, RoomId, SenderId, SenderNickname};

/// One running instance, for presence: drawn at random when the process starts, so a
/// restarted instance is a new one and its versions start over safely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceId(pub u64);

/// One user in one room through one instance: how many of that user's connections on that
/// instance hold a subscription to the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceEntry {
    /// The room.
    pub chat_room_id: RoomId,
    /// The user.
    pub user_id: SenderId,
    /// Their display name.
    pub nickname: String,
    /// Their connections there; 0 in a change means "gone".
    pub connections: u32,
}

/// What instances tell each other about presence (on the control channel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum PresenceSignal {
    /// "I am alive and at this version", every heart-beat interval. A receiver that is
    /// behind that version, or does not know the instance, asks for its state.
    PresenceAlive {
        /// Who.
        instance: InstanceId,
        /// Its presence version now.
        version: u64,
    },
    /// One user's connections in one room through `instance` changed; this is version
    /// `version` of that instance's presence.
    PresenceChange {
        /// Who.
        instance: InstanceId,
        /// The version this change makes.
        version: u64,
        /// The new entry (`connections` 0: the user left there).
        entry: PresenceEntry,
    },
    /// Part `part` (0-based) of `parts` of `instance`'s whole state at `version`; together
    /// the parts replace everything known about that instance.
    PresenceState {
        /// Who.
        instance: InstanceId,
        /// The version the state is at.
        version: u64,
        /// Which part this is.
        part: u32,
        /// How many parts there are (at least 1).
        parts: u32,
        /// The entries of this part.
        entries: Vec<PresenceEntry>,
    },
    /// "Publish your whole state": to one instance, or to all with `target` unset (after a
    /// bus interruption nobody knows what they missed).
    PresenceResync {
        /// Who asks (it ignores its own request).
        from: InstanceId,
        /// Whose state is asked for; `None`: everyone's.
        target: Option<InstanceId>,
    },
}

impl PresenceSignal {
    /// Entries in one [`PresenceSignal::PresenceState`] part at most: with the longest
    /// nicknames a part stays well under the control payload limit.
    pub const MAX_ENTRIES_PER_PART: usize = 200;
    /// Parts of one state at most (a million entries).
    pub const MAX_PARTS: u32 = 5_000;

    /// The instance that sent it.
    #[must_use]
    pub fn sender(&self) -> InstanceId {
        match self {
            Self::PresenceAlive { instance, .. }
            | Self::PresenceChange { instance, .. }
            | Self::PresenceState { instance, .. } => *instance,
            Self::PresenceResync { from, .. } => *from,
        }
    }

    /// What a well-behaved instance could not have sent is refused.
    pub(crate) fn validate(&self) -> Result<(), BusPayloadError> {
        let refuse = |why: String| Err(BusPayloadError::NotAMessage(why));
        match self {
            Self::PresenceAlive { .. } | Self::PresenceResync { .. } => Ok(()),
            Self::PresenceChange { entry, .. } => entry.validate(),
            Self::PresenceState {
                part,
                parts,
                entries,
                ..
            } => {
                if *parts == 0 || *parts > Self::MAX_PARTS || part >= parts {
                    return refuse(format!("presence state part {part} of {parts}"));
                }
                if entries.len() > Self::MAX_ENTRIES_PER_PART {
                    return refuse(format!(
                        "a presence state part holds at most {} entries, got {}",
                        Self::MAX_ENTRIES_PER_PART,
                        entries.len()
                    ));
                }
                entries.iter().try_for_each(PresenceEntry::validate)
            }
        }
    }
}

impl PresenceEntry {
    /// Connections one user may have in one room through one instance, at most.
    pub const MAX_CONNECTIONS: u32 = 100_000;

    fn validate(&self) -> Result<(), BusPayloadError> {
        if self.connections > Self::MAX_CONNECTIONS {
            return Err(BusPayloadError::NotAMessage(format!(
                "{} connections of one user in one room",
                self.connections
            )));
        }
        SenderNickname::parse(self.nickname.clone())
            .map(|_| ())
            .map_err(|e| BusPayloadError::NotAMessage(e.to_string()))
    }
}
