//! Control events: what instances tell each other besides messages, through the same bus
//! (on a channel of their own, so other publishers on the message channel never see them):
//! membership removals, read cursors, typing, and the presence gossip
//! ([`crate::PresenceSignal`]).

use serde::{Deserialize, Serialize};

use crate::presence::PresenceSignal;
use crate::{BusPayloadError, RoomId, SenderId, SenderNickname, Seq};

/// Something every instance must act on at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ControlEvent {
    /// `user` is no longer a member of `chat_room_id`: end their subscriptions to it and
    /// forget the grant.
    MemberRemoved {
        /// The room they were removed from.
        chat_room_id: RoomId,
        /// The user who is no longer a member.
        user_id: SenderId,
    },
    /// `user`'s read cursor in `chat_room_id` moved to `last_read_seq`: every session of
    /// that user, on every instance, hears it on `/user/queue/read`.
    ReadCursor {
        /// The room.
        chat_room_id: RoomId,
        /// Whose cursor.
        user_id: SenderId,
        /// The cursor as stored now.
        last_read_seq: Seq,
    },
    /// `user` is typing in `chat_room_id` (never stored).
    Typing {
        /// The room.
        chat_room_id: RoomId,
        /// Who types.
        user_id: SenderId,
        /// Their display name.
        nickname: String,
    },
    /// Presence gossip between instances.
    #[serde(untagged)]
    Presence(PresenceSignal),
}

impl ControlEvent {
    /// Longest payload a control event can have; anything longer is not one (a presence
    /// state part is the longest).
    pub const MAX_PAYLOAD: usize = 64 * 1024;

    /// The JSON published on the bus, e.g.
    /// `{"type":"memberRemoved","chatRoomId":3,"userId":7}`.
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// # Errors
    /// [`BusPayloadError::NotAMessage`] for anything that is not a control event.
    pub fn from_bus_payload(payload: &[u8]) -> Result<Self, BusPayloadError> {
        if payload.len() > Self::MAX_PAYLOAD {
            return Err(BusPayloadError::NotAMessage(format!(
                "a control event is at most {} bytes, got {}",
                Self::MAX_PAYLOAD,
                payload.len()
            )));
        }
        let event: Self = serde_json::from_slice(payload)
            .map_err(|e| BusPayloadError::NotAMessage(e.to_string()))?;
        event.validate()?;
        Ok(event)
    }

    /// What a client could not have sent is not accepted from the bus either.
    fn validate(&self) -> Result<(), BusPayloadError> {
        match self {
            Self::MemberRemoved { .. } => Ok(()),
            Self::ReadCursor { last_read_seq, .. } if last_read_seq.get() < 0 => Err(
                BusPayloadError::NotAMessage("a read cursor is never negative".to_owned()),
            ),
            Self::ReadCursor { .. } => Ok(()),
            Self::Typing { nickname, .. } => SenderNickname::parse(nickname.clone())
                .map(|_| ())
                .map_err(|e| BusPayloadError::NotAMessage(e.to_string())),
            Self::Presence(signal) => signal.validate(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_control_event_goes_through_json_and_nonsense_does_not() {
        let event = ControlEvent::MemberRemoved {
            chat_room_id: RoomId(3),
            user_id: SenderId(7),
        };
        let json = event.to_json();
        assert_eq!(
            std::str::from_utf8(&json).unwrap(),
            r#"{"type":"memberRemoved","chatRoomId":3,"userId":7}"#
        );
        assert_eq!(ControlEvent::from_bus_payload(&json).unwrap(), event);
        assert!(ControlEvent::from_bus_payload(br#"{"type":"memberRemoved"}"#).is_err());
        assert!(ControlEvent::from_bus_payload(br#"{"type":"other","chatRoomId":3}"#).is_err());
        assert!(ControlEvent::from_bus_payload(&vec![b' '; 300]).is_err());
    }

    #[test]
    fn cursors_typing_and_presence_signals_share_the_control_channel() {
        use crate::{InstanceId, PresenceEntry, PresenceSignal};
        let events = [
            ControlEvent::ReadCursor {
                chat_room_id: RoomId(3),
                user_id: SenderId(7),
                last_read_seq: Seq(42),
            },
            ControlEvent::Typing {
                chat_room_id: RoomId(3),
                user_id: SenderId(7),
                nickname: "alice".into(),
            },
            ControlEvent::Presence(PresenceSignal::PresenceChange {
                instance: InstanceId(9),
                version: 4,
                entry: PresenceEntry {
                    chat_room_id: RoomId(3),
                    user_id: SenderId(7),
                    nickname: "alice".into(),
                    connections: 2,
                },
            }),
            ControlEvent::Presence(PresenceSignal::PresenceResync {
                from: InstanceId(1),
                target: None,
            }),
        ];
        for event in events {
            let json = event.to_json();
            assert_eq!(ControlEvent::from_bus_payload(&json).unwrap(), event);
        }
        assert_eq!(
            std::str::from_utf8(
                &ControlEvent::Presence(PresenceSignal::PresenceAlive {
                    instance: InstanceId(9),
                    version: 4
                })
                .to_json()
            )
            .unwrap(),
            r#"{"type":"presenceAlive","instance":9,"version":4}"#
        );
        // Forged or broken payloads are refused, not believed.
        for forged in [
            r#"{"type":"readCursor","chatRoomId":3,"userId":7,"lastReadSeq":-1}"#,
            r#"{"type":"typing","chatRoomId":3,"userId":7,"nickname":""}"#,
            r#"{"type":"presenceState","instance":1,"version":1,"part":2,"parts":2,"entries":[]}"#,
            r#"{"type":"presenceChange","instance":1,"version":1,"entry":{"chatRoomId":1,"userId":1,"nickname":"a","connections":4000000000}}"#,
        ] {
            assert!(
                ControlEvent::from_bus_payload(forged.as_bytes()).is_err(),
                "{forged}"
            );
        }
    }
}
