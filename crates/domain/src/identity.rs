//! Who is speaking. A connection or request is either open (no authentication configured:
//! the sender is whatever the client says, the seed's behaviour) or an authenticated user
//! whose id, nickname and roles come from a verified token. [`Caller::attribute`] is the
//! one rule that puts the caller on a message, for every path that sends.

use crate::{ChatError, ChatMessageRequest, MessageType, SenderId};

/// A user established by the server's authentication (a verified JWT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's `sub`.
    pub user: SenderId,
    /// The token's display name, if it carries one.
    pub nickname: Option<String>,
    /// Holds the `admin` role: may send `SYSTEM` messages.
    pub admin: bool,
}

/// Who is behind a connection or a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Open mode: nobody is authenticated and the request's own sender fields stand.
    Open,
    /// An authenticated user.
    User(Identity),
}

impl Caller {
    /// The request as this caller may send it. Open mode changes nothing. An authenticated
    /// user's id always becomes the sender, and their token's nickname (when it has one)
    /// replaces the body's.
    ///
    /// # Errors
    /// [`ChatError::SenderMismatch`] when the body names another `senderId`;
    /// [`ChatError::Forbidden`] for a `SYSTEM` message without the `admin` role.
    pub fn attribute(
        &self,
        mut request: ChatMessageRequest,
    ) -> Result<ChatMessageRequest, ChatError> {
        let Caller::User(identity) = self else {
            return Ok(request);
        };
        if let Some(claimed) = request.sender_id
            && claimed != identity.user
        {
            return Err(ChatError::SenderMismatch {
                claimed,
                user: identity.user,
            });
        }
        if request.message_type == Some(MessageType::System) && !identity.admin {
            return Err(ChatError::Forbidden(
                "SYSTEM messages need the admin role".to_owned(),
            ));
        }
        request.sender_id = Some(identity.user);
        if let Some(nickname) = &identity.nickname {
            request.sender_nickname = Some(nickname.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RoomId;

    fn request(
        sender: Option<i64>,
        nickname: &str,
        kind: Option<MessageType>,
    ) -> ChatMessageRequest {
        ChatMessageRequest {
            chat_room_id: Some(RoomId(1)),
            sender_id: sender.map(SenderId),
            sender_nickname: Some(nickname.to_owned()),
            content: Some("hi".to_owned()),
            message_type: kind,
        }
    }

    fn user(id: i64, nickname: Option<&str>, admin: bool) -> Caller {
        Caller::User(Identity {
            user: SenderId(id),
            nickname: nickname.map(str::to_owned),
            admin,
        })
    }

    /// (caller, body sender, body type) → Ok((stored sender, stored nickname)) or the code.
    type Case = (
        Caller,
        Option<i64>,
        Option<MessageType>,
        Result<(i64, &'static str), &'static str>,
    );

    #[test]
    fn who_may_send_what_as_whom() {
        use MessageType::{System, Text};
        let table: Vec<Case> = vec![
            (Caller::Open, Some(5), Some(System), Ok((5, "body"))),
            (Caller::Open, None, None, Err("no sender to check")),
            (
                user(7, Some("alice"), false),
                Some(7),
                Some(Text),
                Ok((7, "alice")),
            ),
            (user(7, Some("alice"), false), None, None, Ok((7, "alice"))),
            (user(7, None, false), None, None, Ok((7, "body"))),
            (
                user(7, Some("alice"), false),
                Some(8),
                None,
                Err("SENDER_MISMATCH"),
            ),
            (
                user(7, Some("alice"), false),
                Some(7),
                Some(System),
                Err("FORBIDDEN"),
            ),
            (
                user(7, Some("root"), true),
                None,
                Some(System),
                Ok((7, "root")),
            ),
        ];
        for (caller, sender, kind, expected) in table {
            let outcome = caller.attribute(request(sender, "body", kind));
            match (outcome, expected) {
                (Ok(request), Ok((id, nickname))) => {
                    assert_eq!(request.sender_id, Some(SenderId(id)), "{caller:?}");
                    assert_eq!(request.sender_nickname.as_deref(), Some(nickname));
                }
                (Ok(request), Err("no sender to check")) => assert_eq!(request.sender_id, None),
                (Err(error), Err(code)) => assert_eq!(error.code(), code, "{caller:?}"),
                (outcome, expected) => panic!("{caller:?}: {outcome:?}, expected {expected:?}"),
            }
        }
    }
}
