//! The STOMP destinations of the chat protocol, spelled in one place: the hub writes them
//! into MESSAGE frames and the session parses them from SUBSCRIBE and SEND.

use chat_domain::RoomId;

/// Where clients send chat messages.
pub const SEND: &str = "/app/chat.sendMessage";
/// Where clients say they are typing (`{"chatRoomId":1}`; never stored).
pub const TYPING_SEND: &str = "/app/chat.typing";
/// Where clients move their read cursor (`{"chatRoomId":1,"seq":42}`).
pub const READ_SEND: &str = "/app/chat.read";
/// Where per-session application errors go.
pub const ERRORS: &str = "/user/queue/errors";
/// Where every session of a user hears that user's read cursors move, on every instance.
pub const READ_QUEUE: &str = "/user/queue/read";
/// A room's topic is this prefix followed by the room id.
pub const ROOM_PREFIX: &str = "/topic/chatroom/";
/// After a room's topic: who is in the room.
pub const PRESENCE_SUFFIX: &str = "/presence";
/// After a room's topic: who is typing there.
pub const TYPING_SUFFIX: &str = "/typing";

/// The topic of `room`, as written in the `destination` header of its MESSAGEs.
#[must_use]
pub fn room(room: RoomId) -> String {
    format!("{ROOM_PREFIX}{room}")
}

/// The presence topic of `room`.
#[must_use]
pub fn presence(room: RoomId) -> String {
    format!("{ROOM_PREFIX}{room}{PRESENCE_SUFFIX}")
}

/// The typing topic of `room`.
#[must_use]
pub fn typing(room: RoomId) -> String {
    format!("{ROOM_PREFIX}{room}{TYPING_SUFFIX}")
}

/// The room a `/topic/chatroom/{id}` destination names; `None` for anything else.
#[must_use]
pub fn parse_room(destination: &str) -> Option<RoomId> {
    room_id(destination.strip_prefix(ROOM_PREFIX)?)
}

/// The room a `/topic/chatroom/{id}/presence` destination names.
#[must_use]
pub fn parse_presence(destination: &str) -> Option<RoomId> {
    room_id(
        destination
            .strip_prefix(ROOM_PREFIX)?
            .strip_suffix(PRESENCE_SUFFIX)?,
    )
}

/// The room a `/topic/chatroom/{id}/typing` destination names.
#[must_use]
pub fn parse_typing(destination: &str) -> Option<RoomId> {
    room_id(
        destination
            .strip_prefix(ROOM_PREFIX)?
            .strip_suffix(TYPING_SUFFIX)?,
    )
}

fn room_id(id: &str) -> Option<RoomId> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse::<i64>().ok().map(RoomId)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_topic_round_trips() {
        assert_eq!(room(RoomId(42)), "/topic/chatroom/42");
        assert_eq!(parse_room(&room(RoomId(42))), Some(RoomId(42)));
    }

    #[test]
    fn presence_and_typing_topics_round_trip_and_nothing_else_parses() {
        assert_eq!(parse_presence(&presence(RoomId(7))), Some(RoomId(7)));
        assert_eq!(parse_typing(&typing(RoomId(7))), Some(RoomId(7)));
        for destination in [
            "/topic/chatroom//presence",
            "/topic/chatroom/7/presence/x",
            "/topic/chatroom/-7/typing",
            "/topic/chatroom/7",
            "/topic/chatroom/7/typingx",
        ] {
            assert_eq!(parse_presence(destination), None, "{destination}");
            assert_eq!(parse_typing(destination), None, "{destination}");
        }
        assert_eq!(parse_room(&presence(RoomId(7))), None);
    }

    #[test]
    fn anything_but_a_plain_room_id_is_not_a_room() {
        for destination in [
            "/topic/chatroom/",
            "/topic/chatroom/+1",
            "/topic/chatroom/-1",
            "/topic/chatroom/1/presence",
            "/topic/chatroom/99999999999999999999",
            "/topic/other/1",
            ERRORS,
        ] {
            assert_eq!(parse_room(destination), None, "{destination}");
        }
    }
}
