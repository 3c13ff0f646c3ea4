//! The use cases: send a message (validate → authorize → store → publish), create and list
//! rooms, read history, manage members. Both the STOMP gateway and the REST API go through
//! here, so they behave alike; the `*_as` methods act for a [`Caller`] and check access
//! with [`decide`].

use std::sync::Arc;
use std::time::Instant;

use crate::{
    AccessCache, BusError, Caller, ChatError, ChatMessage, ChatMessagePublish, ChatMessageRequest,
    ControlEvent, Decision, HistoryQuery, IdempotencyKey, MarkedRead, MessageBus,
    MessageRepository, MyRoom, NewChatMessage, NewRoom, Operation, ReadCursors, Room, RoomId,
    RoomListQuery, RoomMembers, RoomName, SenderId, Seq, ValidationError, Visibility, decide,
};

/// The result of a successful send: the message is stored (and will never be lost).
/// `publish_error` says whether handing it to the bus failed; other instances then learn of
/// it through gap detection when the next message of the room arrives, or on resume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    /// The message as stored, with its id, seq and time.
    pub message: ChatMessage,
    /// `None` when the bus took the message. `Some` when publishing failed: the message is
    /// stored all the same, and other instances find it in the store.
    pub publish_error: Option<BusError>,
}

/// The application service, over any repository, membership store and bus.
#[derive(Clone)]
pub struct ChatService {
    repository: Arc<dyn MessageRepository>,
    members: Arc<dyn RoomMembers>,
    bus: Arc<dyn MessageBus>,
    access: Arc<AccessCache>,
    /// `None` until [`ChatService::with_read_cursors`]: embedders that never track reads
    /// need not provide a store for them.
    read_cursors: Option<Arc<dyn ReadCursors>>,
}

impl std::fmt::Debug for ChatService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatService").finish_non_exhaustive()
    }
}

impl ChatService {
    /// `members` is usually the same store as `repository` (both adapters implement both).
    #[must_use]
    pub fn new(
        repository: Arc<dyn MessageRepository>,
        members: Arc<dyn RoomMembers>,
        bus: Arc<dyn MessageBus>,
    ) -> Self {
        Self {
            repository,
            members,
            bus,
            access: Arc::new(AccessCache::default()),
            read_cursors: None,
        }
    }

    /// The same service, with read cursors kept in `cursors` (usually the same store as
    /// the repository: both adapters implement [`ReadCursors`]).
    #[must_use]
    pub fn with_read_cursors(mut self, cursors: Arc<dyn ReadCursors>) -> Self {
        self.read_cursors = Some(cursors);
        self
    }

    /// The message store behind this service, e.g. for health checks.
    #[must_use]
    pub fn repository(&self) -> &Arc<dyn MessageRepository> {
        &self.repository
    }

    /// The bus this service publishes to, e.g. for health checks and its counters.
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
        if let (Caller::User(_), Some(room)) = (caller, request.chat_room_id) {
            self.authorize(caller, room, Operation::Write).await?;
        }
        self.send(request, idempotency_key).await
    }

    /// The room, if `caller` may do `operation` with it. The room's visibility and owner
    /// and the caller's membership come from the cache when it has them, from the store
    /// otherwise.
    ///
    /// # Errors
    /// [`ChatError::Forbidden`], [`ChatError::UnknownRoom`], [`ChatError::StoreUnavailable`].
    pub async fn authorize(
        &self,
        caller: &Caller,
        room: RoomId,
        operation: Operation,
    ) -> Result<Arc<Room>, ChatError> {
        let room = match self.access.room(room) {
            Some(known) => known,
            None => {
                let found = Arc::new(self.room(room).await?);
                self.access.remember_room(found.clone());
                found
            }
        };
        let mut member = None;
        loop {
            match decide(caller, &room, operation, member) {
                Decision::Allow => return Ok(room),
                Decision::Deny(why) => return Err(ChatError::Forbidden(why.to_owned())),
                Decision::NeedMembership => {
                    let Caller::User(identity) = caller else {
                        return Err(ChatError::Forbidden("sign in first".to_owned()));
                    };
                    let now = Instant::now();
                    let granted = if self.access.is_granted(room.id, identity.user, now) {
                        true
                    } else {
                        // Only the store's answer starts a grant's time: a grant that is
                        // used is not thereby renewed, so it is asked again within the TTL.
                        let stored = self.members.is_member(room.id, identity.user).await?;
                        if stored {
                            self.access.grant(room.id, identity.user, now);
                        }
                        stored
                    };
                    member = Some(granted);
                }
            }
        }
    }

    /// A public room without an owner, for trusted code in the same process.
    ///
    /// # Errors
    /// [`ChatError::Invalid`] for a bad name, [`ChatError::StoreUnavailable`].
    pub async fn create_room(&self, name: &str) -> Result<Room, ChatError> {
        let name = RoomName::parse(name)?;
        Ok(self.repository.create_room(NewRoom::public(name)).await?)
    }

    /// A room created by `caller`, who owns it. Private rooms need a signed-in caller:
    /// in open mode nobody could be told apart from a member.
    ///
    /// # Errors
    /// [`ChatError::Invalid`] for a bad name, [`ChatError::Forbidden`] for a private room
    /// in open mode, [`ChatError::StoreUnavailable`].
    pub async fn create_room_as(
        &self,
        caller: &Caller,
        name: &str,
        visibility: Visibility,
    ) -> Result<Room, ChatError> {
        let name = RoomName::parse(name)?;
        let owner = match caller {
            Caller::User(identity) => Some(identity.user),
            Caller::Open if visibility == Visibility::Private => {
                return Err(ChatError::Forbidden(
                    "private rooms need signed-in users: this server runs with CHAT_AUTH=none"
                        .to_owned(),
                ));
            }
            Caller::Open => None,
        };
        let room = NewRoom {
            name,
            visibility,
            owner,
        };
        Ok(self.repository.create_room(room).await?)
    }

    /// One page of the rooms `caller` may read (every room for open mode and admins).
    ///
    /// # Errors
    /// [`ChatError::StoreUnavailable`].
    pub async fn list_rooms_as(
        &self,
        caller: &Caller,
        mut query: RoomListQuery,
    ) -> Result<Vec<Room>, ChatError> {
        query.visible_to = match caller {
            Caller::User(identity) if !identity.admin => Some(identity.user),
            _ => None,
        };
        Ok(self.repository.list_rooms(query).await?)
    }

    /// Whether `user` is a member of `room`; the room's owner, an admin or the user
    /// themself may ask.
    ///
    /// # Errors
    /// [`ChatError::Forbidden`], [`ChatError::UnknownRoom`], [`ChatError::StoreUnavailable`].
    pub async fn is_member_as(
        &self,
        caller: &Caller,
        room: RoomId,
        user: SenderId,
    ) -> Result<bool, ChatError> {
        if !is_self(caller, user) {
            self.authorize(caller, room, Operation::ManageMembers)
                .await?;
        } else {
            self.room(room).await?;
        }
        Ok(self.members.is_member(room, user).await?)
    }

    /// Adds a member (owner or admin); `Ok(false)` when they already were one.
    ///
    /// # Errors
    /// [`ChatError::Forbidden`], [`ChatError::UnknownRoom`], [`ChatError::StoreUnavailable`].
    pub async fn add_member_as(
        &self,
        caller: &Caller,
        room: RoomId,
        user: SenderId,
    ) -> Result<bool, ChatError> {
        self.authorize(caller, room, Operation::ManageMembers)
            .await?;
        Ok(self.members.add_member(room, user).await?)
    }

    /// Removes a member (owner, admin, or the member leaving); `Ok(false)` when they were
    /// not one. Every instance is told through the bus to end that user's subscriptions to
    /// the room; the error of that publish, if any, is returned beside the outcome (the
    /// removal itself is stored, and instances that missed the event find out when their
    /// bus reports the gap, or when their grant expires).
    ///
    /// # Errors
    /// [`ChatError::Forbidden`], [`ChatError::UnknownRoom`], [`ChatError::StoreUnavailable`].
    pub async fn remove_member_as(
        &self,
        caller: &Caller,
        room: RoomId,
        user: SenderId,
    ) -> Result<(bool, Option<BusError>), ChatError> {
        if is_self(caller, user) {
            self.room(room).await?;
        } else {
            self.authorize(caller, room, Operation::ManageMembers)
                .await?;
        }
        let removed = self.members.remove_member(room, user).await?;
        self.access.revoke(room, user);
        let event = ControlEvent::MemberRemoved {
            chat_room_id: room,
            user_id: user,
        };
        let published = self.bus.publish_control(&event).await.err();
        Ok((removed, published))
    }

    /// A control event arrived: forget what it makes stale.
    pub fn handle_control(&self, event: &ControlEvent) {
        if let ControlEvent::MemberRemoved {
            chat_room_id,
            user_id,
        } = *event
        {
            self.access.revoke(chat_room_id, user_id);
        }
    }

    /// The bus may have dropped control events: ask the store again for every grant.
    pub fn handle_bus_gap(&self) {
        self.access.forget_grants();
    }

    /// [`history`](Self::history) for `caller`.
    ///
    /// # Errors
    /// [`ChatError::Forbidden`], then those of `history`.
    pub async fn history_as(
        &self,
        caller: &Caller,
        room: RoomId,
        query: HistoryQuery,
    ) -> Result<Vec<ChatMessage>, ChatError> {
        self.authorize(caller, room, Operation::Read).await?;
        self.history(room, query).await
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

/// Read cursors.
impl ChatService {
    fn read_cursors(&self) -> Result<&Arc<dyn ReadCursors>, ChatError> {
        self.read_cursors.as_ref().ok_or_else(|| {
            ChatError::StoreUnavailable(
                "read cursors are not configured (build the service with_read_cursors)".to_owned(),
            )
        })
    }

    /// Moves `user`'s read cursor in `room` to `seq` (clamped to the room's newest seq,
    /// never backwards), if `caller` may read the room (and is `user`, unless an admin or
    /// in open mode). When the stored cursor advanced,
    /// every instance hears [`ControlEvent::ReadCursor`]; a failed publish does not undo
    /// the move (the stored cursor is what `my_rooms` reports).
    ///
    /// # Errors
    /// [`ChatError::Invalid`] ([`ValidationError::NegativeReadSeq`]) for a negative seq;
    /// [`ChatError::Forbidden`], [`ChatError::UnknownRoom`], [`ChatError::StoreUnavailable`]
    /// (also when no cursor store is configured), [`ChatError::StoreOutcomeUnknown`].
    pub async fn mark_read(
        &self,
        caller: &Caller,
        user: SenderId,
        room: RoomId,
        seq: Seq,
    ) -> Result<MarkedRead, ChatError> {
        if seq.get() < 0 {
            return Err(ValidationError::NegativeReadSeq.into());
        }
        own_list(caller, user, "only your own read cursor can be moved")?;
        let cursors = self.read_cursors()?;
        self.authorize(caller, room, Operation::Read).await?;
        let marked = cursors.mark_read(room, user, seq).await?;
        if marked.moved {
            let event = ControlEvent::ReadCursor {
                chat_room_id: room,
                user_id: user,
                last_read_seq: marked.last_read_seq,
            };
            // The cursor is stored, which is what counts: a lost announcement only delays
            // the user's other sessions until their next room list (the domain has no
            // logger; the bus adapters log their own failures).
            let _ = self.bus.publish_control(&event).await;
        }
        Ok(marked)
    }

    /// One page of `user`'s rooms with their read cursors and exact unread counts: rooms
    /// they have a cursor in, are a member of or own, less private rooms they may no longer
    /// read. Signed-in callers list their own rooms only (admins anyone's); in open mode
    /// the caller says who they are.
    ///
    /// # Errors
    /// [`ChatError::Forbidden`] for another user's list, [`ChatError::StoreUnavailable`]
    /// (also when no cursor store is configured).
    pub async fn my_rooms(
        &self,
        caller: &Caller,
        user: SenderId,
        query: RoomListQuery,
    ) -> Result<Vec<MyRoom>, ChatError> {
        own_list(caller, user, "only your own room list can be read")?;
        let cursors = self.read_cursors()?;
        Ok(cursors.my_rooms(user, query).await?)
    }
}

/// Signed-in users act on their own cursors only (admins on anyone's); open mode has
/// nobody to tell apart.
fn own_list(caller: &Caller, user: SenderId, refusal: &str) -> Result<(), ChatError> {
    match caller {
        Caller::User(identity) if !identity.admin && identity.user != user => {
            Err(ChatError::Forbidden(refusal.to_owned()))
        }
        _ => Ok(()),
    }
}

fn is_self(caller: &Caller, user: SenderId) -> bool {
    matches!(caller, Caller::User(identity) if identity.user == user)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use mockall::predicate::always;

    use super::*;
    use crate::{
        MessageId, MessageType, MockMessageBus, MockMessageRepository, MockRoomMembers,
        RepositoryError, Seq,
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
        ChatService::new(
            Arc::new(repo),
            Arc::new(MockRoomMembers::new()),
            Arc::new(bus),
        )
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

    fn private_room(id: i64) -> Room {
        Room {
            id: RoomId(id),
            name: "secret".into(),
            created_at: Utc::now(),
            last_seq: Seq(0),
            visibility: Visibility::Private,
            owner: Some(SenderId(1)),
        }
    }

    fn member(id: i64) -> Caller {
        Caller::User(crate::Identity {
            user: SenderId(id),
            nickname: None,
            admin: false,
        })
    }

    #[tokio::test]
    async fn a_members_sends_ask_the_store_once_until_a_revocation_arrives() {
        let mut repo = MockMessageRepository::new();
        repo.expect_find_room()
            .times(1)
            .returning(|id| Ok(Some(private_room(id.0))));
        repo.expect_append().times(3).returning(|m| Ok(stored(m)));
        let mut members = MockRoomMembers::new();
        members
            .expect_is_member()
            .times(2)
            .returning(|_, _| Ok(true));
        let mut bus = MockMessageBus::new();
        bus.expect_publish().returning(|_| Ok(()));
        let service = ChatService::new(Arc::new(repo), Arc::new(members), Arc::new(bus));
        let mut ask = request(4);
        ask.sender_id = None;
        let caller = member(2);
        service.send_as(&caller, ask.clone(), None).await.unwrap();
        service.send_as(&caller, ask.clone(), None).await.unwrap();
        service.handle_control(&ControlEvent::MemberRemoved {
            chat_room_id: RoomId(4),
            user_id: SenderId(2),
        });
        service.send_as(&caller, ask, None).await.unwrap();
    }

    #[tokio::test]
    async fn a_non_member_is_refused_before_anything_is_stored() {
        let mut repo = MockMessageRepository::new();
        repo.expect_find_room()
            .returning(|id| Ok(Some(private_room(id.0))));
        repo.expect_append().never();
        repo.expect_history().never();
        let mut members = MockRoomMembers::new();
        members.expect_is_member().returning(|_, _| Ok(false));
        members.expect_add_member().never();
        let service = ChatService::new(
            Arc::new(repo),
            Arc::new(members),
            Arc::new(MockMessageBus::new()),
        );
        let caller = member(2);
        let mut ask = request(4);
        ask.sender_id = None;
        let sent = service.send_as(&caller, ask, None).await.unwrap_err();
        assert_eq!(sent.code(), "FORBIDDEN");
        let read = service
            .history_as(
                &caller,
                RoomId(4),
                HistoryQuery::latest(crate::HistoryLimit::DEFAULT),
            )
            .await
            .unwrap_err();
        assert_eq!(read.code(), "FORBIDDEN");
        let added = service
            .add_member_as(&caller, RoomId(4), SenderId(3))
            .await
            .unwrap_err();
        assert_eq!(added.code(), "FORBIDDEN");
    }

    #[tokio::test]
    async fn open_mode_cannot_create_a_private_room() {
        let mut repo = MockMessageRepository::new();
        repo.expect_create_room().never();
        let err = service(repo, MockMessageBus::new())
            .create_room_as(&Caller::Open, "x", Visibility::Private)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "FORBIDDEN");
    }
}

#[cfg(test)]
mod read_cursor_tests {
    use chrono::Utc;

    use super::*;
    use crate::{
        Identity, MockMessageBus, MockMessageRepository, MockReadCursors, MockRoomMembers,
        RoomListLimit,
    };

    fn public_room(id: RoomId) -> Room {
        Room {
            id,
            name: "lobby".into(),
            created_at: Utc::now(),
            last_seq: Seq(10),
            visibility: Visibility::Public,
            owner: None,
        }
    }

    fn user(id: i64) -> Caller {
        Caller::User(Identity {
            user: SenderId(id),
            nickname: None,
            admin: false,
        })
    }

    fn found_rooms() -> MockMessageRepository {
        let mut repo = MockMessageRepository::new();
        repo.expect_find_room()
            .returning(|id| Ok(Some(public_room(id))));
        repo
    }

    fn service(cursors: MockReadCursors, bus: MockMessageBus) -> ChatService {
        ChatService::new(
            Arc::new(found_rooms()),
            Arc::new(MockRoomMembers::new()),
            Arc::new(bus),
        )
        .with_read_cursors(Arc::new(cursors))
    }

    #[tokio::test]
    async fn a_cursor_that_moved_is_announced_on_the_bus() {
        let mut cursors = MockReadCursors::new();
        cursors
            .expect_mark_read()
            .withf(|room, user, seq| (*room, *user, *seq) == (RoomId(3), SenderId(7), Seq(5)))
            .times(1)
            .returning(|_, _, seq| {
                Ok(MarkedRead {
                    last_read_seq: seq,
                    moved: true,
                })
            });
        let mut bus = MockMessageBus::new();
        bus.expect_publish_control()
            .withf(|event| {
                *event
                    == ControlEvent::ReadCursor {
                        chat_room_id: RoomId(3),
                        user_id: SenderId(7),
                        last_read_seq: Seq(5),
                    }
            })
            .times(1)
            .returning(|_| Ok(()));
        let marked = service(cursors, bus)
            .mark_read(&user(7), SenderId(7), RoomId(3), Seq(5))
            .await
            .unwrap();
        assert_eq!(marked.last_read_seq, Seq(5));
    }

    #[tokio::test]
    async fn a_cursor_that_did_not_move_is_not_announced() {
        let mut cursors = MockReadCursors::new();
        cursors.expect_mark_read().returning(|_, _, _| {
            Ok(MarkedRead {
                last_read_seq: Seq(9),
                moved: false,
            })
        });
        let mut bus = MockMessageBus::new();
        bus.expect_publish_control().never();
        let marked = service(cursors, bus)
            .mark_read(&Caller::Open, SenderId(7), RoomId(3), Seq(2))
            .await
            .unwrap();
        assert_eq!(
            marked,
            MarkedRead {
                last_read_seq: Seq(9),
                moved: false
            }
        );
    }

    #[tokio::test]
    async fn a_failed_announcement_still_returns_the_stored_cursor() {
        let mut cursors = MockReadCursors::new();
        cursors.expect_mark_read().returning(|_, _, seq| {
            Ok(MarkedRead {
                last_read_seq: seq,
                moved: true,
            })
        });
        let mut bus = MockMessageBus::new();
        bus.expect_publish_control()
            .returning(|_| Err(BusError::Unavailable("down".into())));
        let marked = service(cursors, bus)
            .mark_read(&user(7), SenderId(7), RoomId(3), Seq(4))
            .await
            .unwrap();
        assert_eq!(marked.last_read_seq, Seq(4));
    }

    #[tokio::test]
    async fn a_negative_seq_or_another_users_cursor_is_refused_before_the_store() {
        let mut cursors = MockReadCursors::new();
        cursors.expect_mark_read().never();
        cursors.expect_my_rooms().never();
        let service = service(cursors, MockMessageBus::new());
        let negative = service
            .mark_read(&user(7), SenderId(7), RoomId(3), Seq(-1))
            .await
            .unwrap_err();
        assert_eq!(negative.code(), "INVALID_SEQ");
        let other = service
            .mark_read(&user(7), SenderId(8), RoomId(3), Seq(1))
            .await
            .unwrap_err();
        assert_eq!(other.code(), "FORBIDDEN");
        let list = service
            .my_rooms(
                &user(7),
                SenderId(8),
                RoomListQuery::all(RoomListLimit::DEFAULT),
            )
            .await
            .unwrap_err();
        assert_eq!(list.code(), "FORBIDDEN");
    }

    #[tokio::test]
    async fn a_reader_refused_by_the_room_moves_no_cursor() {
        let mut repo = MockMessageRepository::new();
        repo.expect_find_room().returning(|id| {
            Ok(Some(Room {
                visibility: Visibility::Private,
                owner: Some(SenderId(1)),
                ..public_room(id)
            }))
        });
        let mut members = MockRoomMembers::new();
        members.expect_is_member().returning(|_, _| Ok(false));
        let mut cursors = MockReadCursors::new();
        cursors.expect_mark_read().never();
        let service = ChatService::new(
            Arc::new(repo),
            Arc::new(members),
            Arc::new(MockMessageBus::new()),
        )
        .with_read_cursors(Arc::new(cursors));
        let err = service
            .mark_read(&user(7), SenderId(7), RoomId(3), Seq(1))
            .await
            .unwrap_err();
        assert_eq!(err.code(), "FORBIDDEN");
    }

    #[tokio::test]
    async fn without_a_cursor_store_the_service_says_so() {
        let service = ChatService::new(
            Arc::new(found_rooms()),
            Arc::new(MockRoomMembers::new()),
            Arc::new(MockMessageBus::new()),
        );
        let err = service
            .my_rooms(
                &Caller::Open,
                SenderId(1),
                RoomListQuery::all(RoomListLimit::DEFAULT),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ChatError::StoreUnavailable(why) if why.contains("not configured")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn my_rooms_passes_the_page_to_the_store() {
        let mut cursors = MockReadCursors::new();
        cursors
            .expect_my_rooms()
            .withf(|user, query| *user == SenderId(7) && query.after == Some(RoomId(4)))
            .returning(|_, _| Ok(vec![MyRoom::new(public_room(RoomId(5)), Seq(3))]));
        let rooms = service(cursors, MockMessageBus::new())
            .my_rooms(
                &user(7),
                SenderId(7),
                RoomListQuery {
                    after: Some(RoomId(4)),
                    ..RoomListQuery::all(RoomListLimit::DEFAULT)
                },
            )
            .await
            .unwrap();
        assert_eq!(rooms.len(), 1);
        assert_eq!(rooms[0].unread, 7);
    }
}
