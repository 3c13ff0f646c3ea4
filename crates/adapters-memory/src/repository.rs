//! A `MessageRepository` in a mutex-guarded map. Every append takes the lock, so `seq` is
//! assigned without holes even under concurrent senders.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use chat_domain::{
    ChatMessage, HistoryQuery, MessageId, MessageRepository, NewChatMessage, NewRoom,
    RepositoryError, Room, RoomId, RoomListQuery, RoomMembers, SenderId, Seq, Visibility,
};
use chrono::Utc;

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) rooms: BTreeMap<RoomId, RoomState>,
    last_room_id: i64,
    last_message_id: i64,
    /// (room, sender, idempotency key) → the seq stored under it.
    idempotency: HashMap<(RoomId, SenderId, String), Seq>,
    /// (room, user) of every membership.
    pub(crate) members: HashSet<(RoomId, SenderId)>,
    /// (room, user) → that user's read cursor in the room (see `cursors.rs`).
    pub(crate) cursors: BTreeMap<(RoomId, SenderId), Seq>,
}

impl State {
    pub(crate) fn may_read(&self, room: &Room, user: SenderId) -> bool {
        room.visibility == Visibility::Public
            || room.owner == Some(user)
            || self.members.contains(&(room.id, user))
    }
}

#[derive(Debug)]
pub(crate) struct RoomState {
    pub(crate) room: Room,
    /// Index `i` holds seq `i + 1`.
    messages: Vec<ChatMessage>,
}

/// The in-memory repository. Cheap to create; share it with `Arc`.
#[derive(Debug, Default)]
pub struct InMemoryRepository {
    state: Mutex<State>,
}

impl InMemoryRepository {
    /// An empty store: no rooms, no messages, no members.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than stopping the whole server would, so keep serving.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl MessageRepository for InMemoryRepository {
    async fn create_room(&self, new: NewRoom) -> Result<Room, RepositoryError> {
        let mut state = self.state();
        state.last_room_id += 1;
        let room = Room {
            id: RoomId(state.last_room_id),
            name: new.name.as_str().to_owned(),
            created_at: Utc::now(),
            last_seq: Seq(0),
            visibility: new.visibility,
            owner: new.owner,
        };
        state.rooms.insert(
            room.id,
            RoomState {
                room: room.clone(),
                messages: Vec::new(),
            },
        );
        Ok(room)
    }

    async fn find_room(&self, id: RoomId) -> Result<Option<Room>, RepositoryError> {
        Ok(self.state().rooms.get(&id).map(|r| r.room.clone()))
    }

    async fn list_rooms(&self, query: RoomListQuery) -> Result<Vec<Room>, RepositoryError> {
        let state = self.state();
        let after = query.after.map_or(RoomId(i64::MIN), |id| id);
        Ok(state
            .rooms
            .range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
            .map(|(_, r)| &r.room)
            .filter(|room| {
                query
                    .visible_to
                    .is_none_or(|user| state.may_read(room, user))
            })
            .take(query.limit.get() as usize)
            .cloned()
            .collect())
    }

    async fn append(&self, message: NewChatMessage) -> Result<ChatMessage, RepositoryError> {
        let mut state = self.state();
        let id = MessageId(state.last_message_id + 1);
        let key = message
            .idempotency_key
            .as_ref()
            .map(|key| (message.room_id, message.sender_id, key.as_str().to_owned()));
        let earlier = key
            .as_ref()
            .and_then(|key| state.idempotency.get(key))
            .copied();
        let room = state
            .rooms
            .get_mut(&message.room_id)
            .ok_or(RepositoryError::UnknownRoom(message.room_id))?;
        if let Some(seq) = earlier {
            // seq s lives at index s - 1.
            let index = usize::try_from(seq.prev().0).unwrap_or(usize::MAX);
            if let Some(stored) = room.messages.get(index) {
                return Ok(stored.clone());
            }
        }
        if room.room.last_seq == Seq::MAX {
            return Err(RepositoryError::Unavailable(format!(
                "room {} has reached the largest seq",
                message.room_id
            )));
        }
        let seq = room.room.last_seq.next();
        let stored = ChatMessage {
            id,
            room_id: message.room_id,
            seq,
            sender_id: message.sender_id,
            sender_nickname: message.sender_nickname.into_inner(),
            content: message.content.into_inner(),
            message_type: message.message_type,
            created_at: Utc::now(),
        };
        room.room.last_seq = seq;
        room.messages.push(stored.clone());
        state.last_message_id = id.0;
        if let Some(key) = key {
            state.idempotency.insert(key, seq);
        }
        Ok(stored)
    }

    async fn last_seqs(&self, rooms: &[RoomId]) -> Result<Vec<(RoomId, Seq)>, RepositoryError> {
        let state = self.state();
        Ok(rooms
            .iter()
            .filter_map(|id| state.rooms.get(id).map(|r| (*id, r.room.last_seq)))
            .collect())
    }

    async fn history(
        &self,
        room: RoomId,
        query: HistoryQuery,
    ) -> Result<Vec<ChatMessage>, RepositoryError> {
        let state = self.state();
        let messages = &state
            .rooms
            .get(&room)
            .ok_or(RepositoryError::UnknownRoom(room))?
            .messages;
        // seq s lives at index s - 1, so the keyset bounds are plain index arithmetic.
        let index = |seq: Seq| usize::try_from(seq.0).unwrap_or(0).min(messages.len());
        let lower = query.after.map_or(0, index);
        let upper = query
            .before
            .map_or(messages.len(), |b| index(b.prev()))
            .max(lower);
        let limit = query.limit.get() as usize;
        let page = if query.after.is_some() {
            &messages[lower..upper.min(lower + limit)]
        } else {
            &messages[upper.saturating_sub(limit).max(lower)..upper]
        };
        Ok(page.to_vec())
    }

    async fn check_health(&self) -> Result<(), RepositoryError> {
        Ok(())
    }
}

#[async_trait]
impl RoomMembers for InMemoryRepository {
    async fn add_member(&self, room: RoomId, user: SenderId) -> Result<bool, RepositoryError> {
        let mut state = self.state();
        if !state.rooms.contains_key(&room) {
            return Err(RepositoryError::UnknownRoom(room));
        }
        Ok(state.members.insert((room, user)))
    }

    async fn remove_member(&self, room: RoomId, user: SenderId) -> Result<bool, RepositoryError> {
        Ok(self.state().members.remove(&(room, user)))
    }

    async fn is_member(&self, room: RoomId, user: SenderId) -> Result<bool, RepositoryError> {
        Ok(self.state().members.contains(&(room, user)))
    }
}
