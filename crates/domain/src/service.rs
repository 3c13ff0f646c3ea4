//! The use cases: send a message (validate → store → publish), create and list rooms, read
//! history. Both the STOMP gateway and the REST API go through here, so they behave alike.

use std::sync::Arc;

use crate::{
    BusError, Caller, ChatError, ChatMessage, ChatMessagePublish, ChatMessageRequest, HistoryQuery,
    IdempotencyKey, MessageBus, MessageRepository, NewChatMessage, Room, RoomId, RoomName,
};

/// The result of a successful send: the message is stored (and will never be lost).
/// `publish_error` says whether handing it to the bus failed; other instances then learn of
/// it through gap detection when the next message of the room arrives, or on resume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    pub message: ChatMessage,
    pub publish_error: Option<BusError>,
}

/// The application service, over any repository and bus.
#[derive(Clone)]
pub struct ChatService {
    repository: Arc<dyn MessageRepository>,
    bus: Arc<dyn MessageBus>,
}

impl std::fmt::Debug for ChatService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatService").finish_non_exhaustive()
    }
}

impl ChatService {
    #[must_use]
    pub fn new(repository: Arc<dyn MessageRepository>, bus: Arc<dyn MessageBus>) -> Self {
        Self { repository, bus }
    }

    #[must_use]
    pub fn repository(&self) -> &Arc<dyn MessageRepository> {
        &self.repository
    }

    #[must_use]
    pub fn bus(&self) -> &Arc<dyn MessageBus> {
        &self.bus
    }

    /// Validates, stores, then publishes. Store first: a message that is not stored is never
    /// published, so nobody ever sees a message that could later be lost.
    ///
    /// With an `idempotency_key`, a retry of a send that was already stored returns the
    /// stored message (same id and seq) and stores nothing new; it is published again, which
    /// receivers drop as a duplicate by its seq.
    ///
    /// # Errors
    /// [`ChatError::Invalid`] (nothing stored), [`ChatError::UnknownRoom`],
    /// [`ChatError::StoreUnavailable`] (nothing stored), [`ChatError::StoreOutcomeUnknown`]
    /// (retry with the same key to find out). A failed publish is not an error: see
    /// [`SentMessage::publish_error`].
    pub async fn send(
        &self,
        request: ChatMessageRequest,
        idempotency_key: Option<IdempotencyKey>,
    ) -> Result<SentMessage, ChatError> {
        let new_message = NewChatMessage::try_from(request)?.with_idempotency_key(idempotency_key);
        let message = self.repository.append(new_message).await?;
        let publish_error = self
            .bus
            .publish(&ChatMessagePublish::from(&message))
            .await
            .err();
        Ok(SentMessage {
            message,
            publish_error,
        })
    }

    /// [`send`](Self::send) on behalf of `caller`: the caller becomes the sender
    /// ([`Caller::attribute`]) before anything is validated or stored. The STOMP and REST
    /// paths send this way; `send` is for trusted code in the same process.
    ///
    /// # Errors
    /// Those of [`Caller::attribute`] (nothing stored), then those of `send`.
    pub async fn send_as(
        &self,
        caller: &Caller,
        request: ChatMessageRequest,
        idempotency_key: Option<IdempotencyKey>,
    ) -> Result<SentMessage, ChatError> {
        let request = caller.attribute(request)?;
        self.send(request, idempotency_key).await
    }

    /// # Errors
    /// [`ChatError::Invalid`] for a bad name, [`ChatError::StoreUnavailable`].
    pub async fn create_room(&self, name: &str) -> Result<Room, ChatError> {
        let name = RoomName::parse(name)?;
        Ok(self.repository.create_room(name).await?)
    }

    /// # Errors
    /// [`ChatError::StoreUnavailable`].
    pub async fn list_rooms(&self) -> Result<Vec<Room>, ChatError> {
        Ok(self.repository.list_rooms().await?)
    }

    /// # Errors
    /// [`ChatError::UnknownRoom`], [`ChatError::StoreUnavailable`].
    pub async fn room(&self, id: RoomId) -> Result<Room, ChatError> {
        self.repository
            .find_room(id)
            .await?
            .ok_or(ChatError::UnknownRoom(id))
    }

    /// # Errors
    /// [`ChatError::UnknownRoom`], [`ChatError::StoreUnavailable`].
    pub async fn history(
        &self,
        room: RoomId,
        query: HistoryQuery,
    ) -> Result<Vec<ChatMessage>, ChatError> {
        Ok(self.repository.history(room, query).await?)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use mockall::predicate::always;

    use super::*;
    use crate::{
        MessageId, MessageType, MockMessageBus, MockMessageRepository, RepositoryError, SenderId,
        Seq,
    };

    fn request(room: i64) -> ChatMessageRequest {
        ChatMessageRequest {
            chat_room_id: Some(RoomId(room)),
            sender_id: Some(SenderId(1)),
            sender_nickname: Some("alice".into()),
            content: Some("hello".into()),
            message_type: None,
        }
    }

    fn stored(new: NewChatMessage) -> ChatMessage {
        ChatMessage {
            id: MessageId(10),
            room_id: new.room_id,
            seq: Seq(1),
            sender_id: new.sender_id,
            sender_nickname: new.sender_nickname.into_inner(),
            content: new.content.into_inner(),
            message_type: new.message_type,
            created_at: Utc::now(),
        }
    }

    fn service(repo: MockMessageRepository, bus: MockMessageBus) -> ChatService {
        ChatService::new(Arc::new(repo), Arc::new(bus))
    }

    #[tokio::test]
    async fn a_valid_message_is_stored_then_published_as_stored() {
        let mut repo = MockMessageRepository::new();
        repo.expect_append().times(1).returning(|m| Ok(stored(m)));
        let mut bus = MockMessageBus::new();
        bus.expect_publish()
            .times(1)
            .withf(|p| {
                p.message_id == MessageId(10) && p.seq == Some(Seq(1)) && p.content == "hello"
            })
            .returning(|_| Ok(()));
        let sent = service(repo, bus).send(request(1), None).await.unwrap();
        assert_eq!(sent.message.message_type, MessageType::Text);
        assert_eq!(sent.publish_error, None);
    }

    #[tokio::test]
    async fn an_invalid_message_touches_neither_store_nor_bus() {
        let mut repo = MockMessageRepository::new();
        repo.expect_append().never();
        let mut bus = MockMessageBus::new();
        bus.expect_publish().never();
        let mut bad = request(1);
        bad.content = Some("   ".into());
        let err = service(repo, bus).send(bad, None).await.unwrap_err();
        assert_eq!(err.code(), "EMPTY_CONTENT");
    }

    #[tokio::test]
    async fn a_failed_store_publishes_nothing() {
        let mut repo = MockMessageRepository::new();
        repo.expect_append()
            .returning(|_| Err(RepositoryError::Unavailable("connection refused".into())));
        let mut bus = MockMessageBus::new();
        bus.expect_publish().never();
        let err = service(repo, bus).send(request(1), None).await.unwrap_err();
        assert_eq!(err.code(), "STORE_UNAVAILABLE");
    }

    #[tokio::test]
    async fn an_unknown_room_is_reported_as_such() {
        let mut repo = MockMessageRepository::new();
        repo.expect_append()
            .returning(|m| Err(RepositoryError::UnknownRoom(m.room_id)));
        let mut bus = MockMessageBus::new();
        bus.expect_publish().never();
        let err = service(repo, bus)
            .send(request(99), None)
            .await
            .unwrap_err();
        assert_eq!(err, ChatError::UnknownRoom(RoomId(99)));
    }

    #[tokio::test]
    async fn a_failed_publish_still_returns_the_stored_message_and_the_bus_error() {
        let mut repo = MockMessageRepository::new();
        repo.expect_append().returning(|m| Ok(stored(m)));
        let mut bus = MockMessageBus::new();
        bus.expect_publish()
            .with(always())
            .returning(|_| Err(BusError::Unavailable("redis down".into())));
        let sent = service(repo, bus).send(request(1), None).await.unwrap();
        assert_eq!(sent.message.id, MessageId(10));
        assert_eq!(
            sent.publish_error,
            Some(BusError::Unavailable("redis down".into()))
        );
    }

    #[tokio::test]
    async fn looking_up_a_missing_room_is_unknown_room() {
        let mut repo = MockMessageRepository::new();
        repo.expect_find_room().returning(|_| Ok(None));
        let err = service(repo, MockMessageBus::new())
            .room(RoomId(5))
            .await
            .unwrap_err();
        assert_eq!(err.code(), "UNKNOWN_ROOM");
    }

    #[tokio::test]
    async fn a_blank_room_name_is_rejected_before_the_store() {
        let mut repo = MockMessageRepository::new();
        repo.expect_create_room().never();
        let err = service(repo, MockMessageBus::new())
            .create_room("  ")
            .await
            .unwrap_err();
        assert_eq!(err.code(), "INVALID_ROOM_NAME");
    }
}
