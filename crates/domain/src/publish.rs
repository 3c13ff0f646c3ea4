//! `ChatMessagePublish`: the JSON that goes on the bus and in every STOMP MESSAGE body, and
//! the lenient decoder that also accepts what the original Spring service puts on Redis, so
//! Java and Rust replicas can share one channel during a migration.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::{ChatMessage, MessageId, MessageType, RoomId, SenderId, Seq};

/// A stored message as published to other instances and delivered to clients.
///
/// `seq` is `None` only for messages that came from a Spring publisher, which has no seq;
/// those are delivered as they come, outside the gap detection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = ChatMessage))]
#[serde(rename_all = "camelCase")]
pub struct ChatMessagePublish {
    /// `chatRoomId`: the room it was sent to.
    pub chat_room_id: RoomId,
    /// `messageId`: the stored message's id, unique across rooms.
    pub message_id: MessageId,
    /// `senderId`: who sent it.
    pub sender_id: SenderId,
    /// `senderNickname`: the sender's display name.
    pub sender_nickname: String,
    /// `content`: the text.
    pub content: String,
    /// `messageType`; [`MessageType::Text`] when a payload leaves it out.
    #[serde(default)]
    pub message_type: MessageType,
    /// `createdAt`: when the store accepted it. Written as RFC 3339 UTC with milliseconds;
    /// read also in Spring's forms (see [`ChatMessagePublish::from_bus_payload`]).
    #[serde(
        serialize_with = "write_created_at",
        deserialize_with = "read_created_at"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: DateTime<Utc>,
    /// `seq`: its position in the room. `None` only from a Spring publisher; then it is
    /// also left out of the JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<Seq>,
}

/// Why a bus payload could not be turned into a [`ChatMessagePublish`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BusPayloadError {
    /// The payload is not a message (or, for
    /// [`ControlEvent::from_bus_payload`](crate::ControlEvent::from_bus_payload), not a
    /// control event): not JSON of that shape, too large, or outside what a client could
    /// have sent. The text says why; log it, count it and skip the payload.
    #[error("bus payload is not a ChatMessagePublish: {0}")]
    NotAMessage(String),
}

impl ChatMessagePublish {
    /// The canonical JSON (camelCase, `createdAt` as RFC 3339 UTC with milliseconds).
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings, integers and a timestamp cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a payload from the bus: our own JSON, or what a Spring publisher sends —
    /// `createdAt` as a local date-time (taken as UTC) or a Jackson date array, no `seq`,
    /// extra properties such as `@class`, and the whole object encoded a second time as a
    /// JSON string (`RedisTemplate.convertAndSend(topic, json)` with the Jackson serializer).
    ///
    /// # Errors
    /// [`BusPayloadError::NotAMessage`] for anything else; the caller logs and counts it.
    pub fn from_bus_payload(payload: &[u8]) -> Result<Self, BusPayloadError> {
        if payload.len() > Self::MAX_BUS_PAYLOAD {
            return Err(BusPayloadError::NotAMessage(format!(
                "{} bytes, more than a chat message can be ({} at most)",
                payload.len(),
                Self::MAX_BUS_PAYLOAD
            )));
        }
        let message = Self::decode_lenient(payload)?;
        message.check().map_err(BusPayloadError::NotAMessage)?;
        Ok(message)
    }

    /// Largest bus payload decoded: a maximal message (4,000 characters of up to 4 bytes,
    /// escaped) with its envelope, encoded twice as Spring does, fits with room to spare.
    pub const MAX_BUS_PAYLOAD: usize = 128 * 1024;

    /// What a client could not have sent is not delivered either: the same bounds as
    /// validation (content, nickname, no NUL), positive ids and seq.
    fn check(&self) -> Result<(), String> {
        let content = self.content.chars().count();
        if content > crate::MessageContent::MAX_CHARS {
            return Err(format!("content of {content} characters"));
        }
        let nickname = self.sender_nickname.chars().count();
        if nickname > crate::SenderNickname::MAX_CHARS {
            return Err(format!("senderNickname of {nickname} characters"));
        }
        if self.content.contains('\0') || self.sender_nickname.contains('\0') {
            return Err("a NUL character".to_owned());
        }
        if self.chat_room_id.get() < 1 || self.message_id.get() < 1 {
            return Err("an id below 1".to_owned());
        }
        if self.seq.is_some_and(|seq| seq.get() < 1) {
            return Err("a seq below 1".to_owned());
        }
        Ok(())
    }

    fn decode_lenient(payload: &[u8]) -> Result<Self, BusPayloadError> {
        let value: serde_json::Value = serde_json::from_slice(payload)
            .map_err(|e| BusPayloadError::NotAMessage(e.to_string()))?;
        let value = match value {
            serde_json::Value::String(inner) => serde_json::from_str(&inner)
                .map_err(|e| BusPayloadError::NotAMessage(format!("inner JSON string: {e}")))?,
            other => other,
        };
        serde_json::from_value(value).map_err(|e| BusPayloadError::NotAMessage(e.to_string()))
    }
}

impl From<&ChatMessage> for ChatMessagePublish {
    fn from(message: &ChatMessage) -> Self {
        Self {
            chat_room_id: message.room_id,
            message_id: message.id,
            sender_id: message.sender_id,
            sender_nickname: message.sender_nickname.clone(),
            content: message.content.clone(),
            message_type: message.message_type,
            created_at: message.created_at,
            seq: Some(message.seq),
        }
    }
}

fn write_created_at<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// Accepts RFC 3339 with an offset, a local date-time without one (Spring's
/// `LocalDateTime`, taken as UTC because that is what the original pods ran in), and
/// Jackson's array form `[y, m, d, h, min, s, nanos]`.
fn read_created_at<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Parts(Vec<i64>),
    }
    let invalid = |what: &str| serde::de::Error::custom(format!("invalid createdAt: {what}"));
    match Raw::deserialize(d)? {
        Raw::Text(text) => {
            if let Ok(at) = DateTime::parse_from_rfc3339(&text) {
                return Ok(at.with_timezone(&Utc));
            }
            NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.f")
                .map(|local| local.and_utc())
                .map_err(|_| invalid(&text))
        }
        Raw::Parts(parts) => {
            let part = |i: usize| parts.get(i).copied().unwrap_or(0);
            let as_u32 = |v: i64| u32::try_from(v).map_err(|_| invalid("array part out of range"));
            let year = i32::try_from(part(0)).map_err(|_| invalid("year out of range"))?;
            NaiveDate::from_ymd_opt(year, as_u32(part(1))?, as_u32(part(2))?)
                .and_then(|date| {
                    date.and_hms_nano_opt(
                        as_u32(part(3)).ok()?,
                        as_u32(part(4)).ok()?,
                        as_u32(part(5)).ok()?,
                        as_u32(part(6)).ok()?,
                    )
                })
                .map(|local| local.and_utc())
                .ok_or_else(|| invalid("array is not a date-time"))
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn payloads_a_client_could_not_have_sent_are_refused() {
        let good = sample();
        assert!(ChatMessagePublish::from_bus_payload(&good.to_json()).is_ok());
        let mut long = good.clone();
        long.content = "x".repeat(4001);
        assert!(ChatMessagePublish::from_bus_payload(&long.to_json()).is_err());
        let mut nul = good.clone();
        nul.sender_nickname = "a\0b".into();
        assert!(ChatMessagePublish::from_bus_payload(&nul.to_json()).is_err());
        let mut zero = good.clone();
        zero.seq = Some(Seq(0));
        assert!(ChatMessagePublish::from_bus_payload(&zero.to_json()).is_err());
        let huge = vec![b' '; ChatMessagePublish::MAX_BUS_PAYLOAD + 1];
        assert!(ChatMessagePublish::from_bus_payload(&huge).is_err());
        let mut max = good;
        max.content = "✓".repeat(4000);
        assert!(
            ChatMessagePublish::from_bus_payload(&max.to_json()).is_ok(),
            "the largest valid message fits"
        );
    }

    fn sample() -> ChatMessagePublish {
        ChatMessagePublish {
            chat_room_id: RoomId(1),
            message_id: MessageId(42),
            sender_id: SenderId(7),
            sender_nickname: "alice".into(),
            content: "hi \"there\" ✓".into(),
            message_type: MessageType::Text,
            created_at: Utc.with_ymd_and_hms(2026, 11, 24, 21, 7, 16).unwrap()
                + chrono::Duration::milliseconds(5),
            seq: Some(Seq(3)),
        }
    }

    #[test]
    fn output_json_has_spring_field_names_and_millisecond_utc_time() {
        let json: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "chatRoomId": 1, "messageId": 42, "senderId": 7, "senderNickname": "alice",
                "content": "hi \"there\" ✓", "messageType": "TEXT",
                "createdAt": "2026-11-24T21:07:16.005Z", "seq": 3
            })
        );
    }

    #[test]
    fn our_own_json_round_trips() {
        let m = sample();
        assert_eq!(
            ChatMessagePublish::from_bus_payload(&m.to_json()).unwrap(),
            m
        );
    }

    #[test]
    fn a_spring_payload_with_local_time_no_seq_and_class_property_is_accepted() {
        let payload = br#"{"@class":"com.example.chat.dto.ChatMessagePublish","chatRoomId":1,"messageId":42,"senderId":7,"senderNickname":"alice","content":"hi","messageType":"TEXT","createdAt":"2026-11-24T21:07:16.005"}"#;
        let m = ChatMessagePublish::from_bus_payload(payload).unwrap();
        assert_eq!(m.seq, None);
        assert_eq!(m.created_at, sample().created_at);
    }

    #[test]
    fn a_double_encoded_spring_payload_is_accepted() {
        let inner = r#"{"chatRoomId":1,"messageId":42,"senderId":7,"senderNickname":"alice","content":"hi","messageType":"ENTER","createdAt":"2026-11-24T21:07:16"}"#;
        let outer = serde_json::to_vec(&inner).unwrap();
        let m = ChatMessagePublish::from_bus_payload(&outer).unwrap();
        assert_eq!(m.message_type, MessageType::Enter);
        assert_eq!(m.chat_room_id, RoomId(1));
    }

    #[test]
    fn a_jackson_date_array_is_accepted() {
        let payload = br#"{"chatRoomId":1,"messageId":42,"senderId":7,"senderNickname":"a","content":"hi","createdAt":[2026,11,24,21,7,16,5000000]}"#;
        let m = ChatMessagePublish::from_bus_payload(payload).unwrap();
        assert_eq!(m.created_at, sample().created_at);
        assert_eq!(m.message_type, MessageType::Text);
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        for payload in [
            &b"hello"[..],
            b"\"not json inside\"",
            b"{}",
            br#"{"chatRoomId":1,"messageId":1,"senderId":1,"senderNickname":"a","content":"b","createdAt":"yesterday"}"#,
            br#"{"chatRoomId":1,"messageId":1,"senderId":1,"senderNickname":"a","content":"b","createdAt":[2026,13,40]}"#,
        ] {
            assert!(ChatMessagePublish::from_bus_payload(payload).is_err());
        }
    }
}
