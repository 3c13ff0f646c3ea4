//! Control events: what instances tell each other besides messages, through the same bus
//! (on a channel of their own, so other publishers on the message channel never see them).

use serde::{Deserialize, Serialize};

use crate::{BusPayloadError, RoomId, SenderId};

/// Something every instance must act on at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
}

impl ControlEvent {
    /// Longest payload a control event can have; anything longer is not one.
    pub const MAX_PAYLOAD: usize = 256;

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
        serde_json::from_slice(payload).map_err(|e| BusPayloadError::NotAMessage(e.to_string()))
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
}
