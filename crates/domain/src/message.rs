//! Chat messages: the request a client sends, the validated message the store accepts, and
//! the stored message with its id, `seq` and timestamp.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{MessageId, RoomId, SenderId, Seq, ValidationError};

/// What kind of message this is; the names are the Spring enum's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MessageType {
    /// Plain text; the type of a request that names none.
    #[default]
    Text,
    /// An image, as the client encodes it in `content`; to the server only a label.
    Image,
    /// A file, as the client encodes it in `content`; to the server only a label.
    File,
    /// A user entering the room, as Spring clients announce it; to the server only a label.
    Enter,
    /// A user leaving the room; to the server only a label.
    Leave,
    /// A notice from the service rather than from a user. A signed-in caller needs the
    /// `admin` role to send one ([`Caller::attribute`](crate::Caller::attribute)).
    System,
}

impl MessageType {
    /// Every variant, for adapters that map to and from storage.
    pub const ALL: [MessageType; 6] = [
        Self::Text,
        Self::Image,
        Self::File,
        Self::Enter,
        Self::Leave,
        Self::System,
    ];

    /// The wire and storage name, e.g. `TEXT`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "TEXT",
            Self::Image => "IMAGE",
            Self::File => "FILE",
            Self::Enter => "ENTER",
            Self::Leave => "LEAVE",
            Self::System => "SYSTEM",
        }
    }

    /// Inverse of [`MessageType::as_str`].
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A display name of 1 to 50 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SenderNickname(String);

impl SenderNickname {
    /// The longest nickname, in characters (Unicode scalar values).
    pub const MAX_CHARS: usize = 50;

    /// # Errors
    /// [`ValidationError::InvalidNickname`] when empty or longer than 50 characters.
    pub fn parse(raw: String) -> Result<Self, ValidationError> {
        if raw.contains('\0') {
            return Err(ValidationError::NulCharacter("senderNickname"));
        }
        let chars = raw.chars().count();
        if chars == 0 || chars > Self::MAX_CHARS || raw.trim().is_empty() {
            return Err(ValidationError::InvalidNickname {
                max: Self::MAX_CHARS,
                actual: chars,
            });
        }
        Ok(Self(raw))
    }

    /// The nickname exactly as sent (it is not trimmed).
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The nickname as an owned `String`, e.g. for a store to keep.
    #[must_use]
    pub fn into_inner(self) -> String {
        self.0
    }
}

/// Message text: 1 to 4000 characters once leading and trailing white space is trimmed.
/// The trimmed text is what is kept, so what is stored is exactly what was validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageContent(String);

impl MessageContent {
    /// The longest content once trimmed, in characters (Unicode scalar values).
    pub const MAX_CHARS: usize = 4000;

    /// # Errors
    /// [`ValidationError::EmptyContent`] or [`ValidationError::ContentTooLong`].
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        if raw.contains('\0') {
            return Err(ValidationError::NulCharacter("content"));
        }
        let trimmed = raw.trim();
        let chars = trimmed.chars().count();
        if chars == 0 {
            return Err(ValidationError::EmptyContent);
        }
        if chars > Self::MAX_CHARS {
            return Err(ValidationError::ContentTooLong {
                max: Self::MAX_CHARS,
                actual: chars,
            });
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The trimmed text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trimmed text as an owned `String`, e.g. for a store to keep.
    #[must_use]
    pub fn into_inner(self) -> String {
        self.0
    }
}

/// The JSON a client sends to `/app/chat.sendMessage` (the Spring `ChatMessageRequest` DTO).
///
/// Every field is optional here so that a missing one gets a precise error from
/// [`NewChatMessage::try_from`] instead of a generic JSON error. Unknown fields are ignored,
/// as Spring Boot's Jackson does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ChatMessageRequest {
    /// `chatRoomId`: the room to send to. Required; the REST path fills it in.
    pub chat_room_id: Option<RoomId>,
    /// `senderId`: who sends. Required in open mode; for a signed-in caller
    /// [`Caller::attribute`](crate::Caller::attribute) fills it in and refuses anyone else's.
    pub sender_id: Option<SenderId>,
    /// `senderNickname`: the display name, 1 to [`SenderNickname::MAX_CHARS`] characters.
    /// Required, unless the signed-in caller's token carries a nickname, which replaces it.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 50,
            pattern = "^[^\\u0000]*\\S[^\\u0000]*$"
        )
    )]
    pub sender_nickname: Option<String>,
    /// `content`: the text, trimmed before it is checked. Required.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 4000,
            pattern = "^[^\\u0000]*\\S[^\\u0000]*$"
        )
    )]
    pub content: Option<String>,
    /// `messageType`; `None` means [`MessageType::Text`].
    pub message_type: Option<MessageType>,
}

impl ChatMessageRequest {
    /// Parses a request body.
    ///
    /// # Errors
    /// [`ValidationError::InvalidJson`] when the body is not a JSON object of this shape.
    pub fn from_json(body: &[u8]) -> Result<Self, ValidationError> {
        serde_json::from_slice(body).map_err(|e| ValidationError::InvalidJson(e.to_string()))
    }
}

/// A client's name for one send, so that a retry after an unknown outcome stores the
/// message once: 1 to 128 visible ASCII characters (a UUID fits), unique per sender and
/// room. The STOMP header `x-idempotency-key` and the REST header `Idempotency-Key` carry it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The longest key, in characters (visible ASCII, so also in bytes).
    pub const MAX_CHARS: usize = 128;

    /// # Errors
    /// [`ValidationError::InvalidIdempotencyKey`] when empty, too long, or not visible ASCII.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let valid = !raw.is_empty()
            && raw.len() <= Self::MAX_CHARS
            && raw.bytes().all(|b| b.is_ascii_graphic());
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ValidationError::InvalidIdempotencyKey {
                max: Self::MAX_CHARS,
            })
        }
    }

    /// The key as the client sent it.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A validated message, ready to be stored. Only [`NewChatMessage::try_from`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewChatMessage {
    /// The room to store it in; the store refuses it if the room does not exist.
    pub room_id: RoomId,
    /// Who sends it.
    pub sender_id: SenderId,
    /// The display name stored with the message.
    pub sender_nickname: SenderNickname,
    /// The trimmed, validated text.
    pub content: MessageContent,
    /// Its kind; [`MessageType::Text`] when the request named none.
    pub message_type: MessageType,
    /// With a key, storing the same (room, sender, key) again returns the first message
    /// instead of a new one.
    pub idempotency_key: Option<IdempotencyKey>,
}

impl NewChatMessage {
    /// The same message, sent under `key`.
    #[must_use]
    pub fn with_idempotency_key(mut self, key: Option<IdempotencyKey>) -> Self {
        self.idempotency_key = key;
        self
    }
}

impl TryFrom<ChatMessageRequest> for NewChatMessage {
    type Error = ValidationError;

    fn try_from(request: ChatMessageRequest) -> Result<Self, Self::Error> {
        let room_id = request
            .chat_room_id
            .ok_or(ValidationError::MissingField("chatRoomId"))?;
        let sender_id = request
            .sender_id
            .ok_or(ValidationError::MissingField("senderId"))?;
        let nickname = request
            .sender_nickname
            .ok_or(ValidationError::MissingField("senderNickname"))?;
        let content = request
            .content
            .ok_or(ValidationError::MissingField("content"))?;
        Ok(Self {
            room_id,
            sender_id,
            sender_nickname: SenderNickname::parse(nickname)?,
            content: MessageContent::parse(&content)?,
            message_type: request.message_type.unwrap_or_default(),
            idempotency_key: None,
        })
    }
}

/// A stored message: the store assigned its id, its `seq` in the room and its time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Assigned by the store; unique across rooms.
    pub id: MessageId,
    /// The room it was sent to.
    pub room_id: RoomId,
    /// Its position in the room: 1 for the first message, with no holes.
    pub seq: Seq,
    /// Who sent it.
    pub sender_id: SenderId,
    /// The sender's display name, as stored with this message.
    pub sender_nickname: String,
    /// The trimmed text, as validated.
    pub content: String,
    /// Its kind.
    pub message_type: MessageType,
    /// When the store accepted it, by the store's clock.
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ChatMessageRequest {
        ChatMessageRequest {
            chat_room_id: Some(RoomId(7)),
            sender_id: Some(SenderId(3)),
            sender_nickname: Some("alice".into()),
            content: Some("  hello  ".into()),
            message_type: None,
        }
    }

    #[test]
    fn a_complete_request_becomes_a_message_with_trimmed_content_and_text_type() {
        let message = NewChatMessage::try_from(request()).unwrap();
        assert_eq!(message.room_id, RoomId(7));
        assert_eq!(message.content.as_str(), "hello");
        assert_eq!(message.message_type, MessageType::Text);
    }

    #[test]
    fn each_missing_field_is_named_in_the_error() {
        type Clear = fn(&mut ChatMessageRequest);
        let cases: [(Clear, &str); 4] = [
            (|r| r.chat_room_id = None, "chatRoomId"),
            (|r| r.sender_id = None, "senderId"),
            (|r| r.sender_nickname = None, "senderNickname"),
            (|r| r.content = None, "content"),
        ];
        for (clear, field) in cases {
            let mut r = request();
            clear(&mut r);
            assert_eq!(
                NewChatMessage::try_from(r),
                Err(ValidationError::MissingField(field))
            );
        }
    }

    #[test]
    fn a_nul_character_is_rejected_because_no_store_can_keep_it() {
        assert_eq!(
            MessageContent::parse("a\0b"),
            Err(ValidationError::NulCharacter("content"))
        );
        assert_eq!(
            SenderNickname::parse("a\0".into()).unwrap_err().code(),
            "INVALID_CHARACTER"
        );
    }

    #[test]
    fn an_idempotency_key_is_visible_ascii_of_bounded_length() {
        assert!(IdempotencyKey::parse("6f1c2a9e-0b7d-4c1e-9a55-2f0d1b3c4e5f").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(128)).is_ok());
        for bad in ["", " ", "a b", "é", &"k".repeat(129)] {
            assert_eq!(
                IdempotencyKey::parse(bad).unwrap_err().code(),
                "INVALID_IDEMPOTENCY_KEY",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn content_of_only_white_space_is_empty() {
        assert_eq!(
            MessageContent::parse(" \n\t "),
            Err(ValidationError::EmptyContent)
        );
    }

    #[test]
    fn content_limit_counts_characters_not_bytes() {
        let at_limit = "é".repeat(MessageContent::MAX_CHARS);
        assert!(MessageContent::parse(&at_limit).is_ok());
        let over = "é".repeat(MessageContent::MAX_CHARS + 1);
        assert_eq!(
            MessageContent::parse(&over),
            Err(ValidationError::ContentTooLong {
                max: 4000,
                actual: 4001
            })
        );
    }

    #[test]
    fn nickname_must_be_between_one_and_fifty_characters() {
        assert!(SenderNickname::parse("a".into()).is_ok());
        assert!(SenderNickname::parse("n".repeat(50)).is_ok());
        assert!(SenderNickname::parse(String::new()).is_err());
        assert!(SenderNickname::parse("   ".into()).is_err());
        assert!(SenderNickname::parse("n".repeat(51)).is_err());
    }

    #[test]
    fn request_json_uses_the_spring_field_names_and_ignores_unknown_fields() {
        let body = br#"{"chatRoomId":1,"senderId":2,"senderNickname":"bob","content":"hi","messageType":"ENTER","extra":true}"#;
        let r = ChatMessageRequest::from_json(body).unwrap();
        assert_eq!(r.chat_room_id, Some(RoomId(1)));
        assert_eq!(r.message_type, Some(MessageType::Enter));
    }

    #[test]
    fn malformed_or_mistyped_json_is_an_invalid_json_error() {
        for body in [&b"{not json"[..], br#"{"chatRoomId":"abc"}"#, b"[1,2]", b""] {
            let err = ChatMessageRequest::from_json(body).unwrap_err();
            assert_eq!(
                err.code(),
                "INVALID_JSON",
                "body {:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn an_unknown_message_type_is_rejected() {
        let body = br#"{"chatRoomId":1,"messageType":"VIDEO"}"#;
        assert!(ChatMessageRequest::from_json(body).is_err());
    }

    #[test]
    fn message_type_names_round_trip() {
        for t in MessageType::ALL {
            assert_eq!(MessageType::from_name(t.as_str()), Some(t));
        }
        assert_eq!(MessageType::from_name("text"), None);
    }
}
