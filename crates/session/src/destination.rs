//! The STOMP destinations of the chat protocol, spelled in one place: the hub writes them
//! into MESSAGE frames and the session parses them from SUBSCRIBE and SEND.

use chat_domain::RoomId;

/// Where clients send chat messages.
pub const SEND: &str = "/app/chat.sendMessage";
/// Where per-session application errors go.
pub const ERRORS: &str = "/user/queue/errors";
/// A room's topic is this prefix followed by the room id.
pub const ROOM_PREFIX: &str = "/topic/chatroom/";

/// The topic of `room`, as written in the `destination` header of its MESSAGEs.
#[must_use]
pub fn room(room: RoomId) -> String {
    format!("{ROOM_PREFIX}{room}")
}

/// The room a `/topic/chatroom/{id}` destination names; `None` for anything else.
#[must_use]
pub fn parse_room(destination: &str) -> Option<RoomId> {
    let id = destination.strip_prefix(ROOM_PREFIX)?;
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
