//! `ReadCursors` on the in-memory store: cursors live under the same lock as the rooms, so
//! clamping to a room's `last_seq` and the never-backwards rule are one atomic step.

use std::collections::BTreeSet;

use async_trait::async_trait;
use chat_domain::{
    MarkedRead, MyRoom, ReadCursors, RepositoryError, RoomId, RoomListQuery, SenderId, Seq,
};

use crate::InMemoryRepository;

#[async_trait]
impl ReadCursors for InMemoryRepository {
    async fn mark_read(
        &self,
        room: RoomId,
        user: SenderId,
        seq: Seq,
    ) -> Result<MarkedRead, RepositoryError> {
        let mut state = self.state();
        let last_seq = state
            .rooms
            .get(&room)
            .ok_or(RepositoryError::UnknownRoom(room))?
            .room
            .last_seq;
        let wanted = Seq(seq.get().clamp(0, last_seq.get()));
        let cursor = state.cursors.entry((room, user)).or_insert(Seq(0));
        let moved = wanted > *cursor;
        if moved {
            *cursor = wanted;
        }
        Ok(MarkedRead {
            last_read_seq: *cursor,
            moved,
        })
    }

    async fn my_rooms(
        &self,
        user: SenderId,
        query: RoomListQuery,
    ) -> Result<Vec<MyRoom>, RepositoryError> {
        let state = self.state();
        let after = query.after.unwrap_or(RoomId(i64::MIN));
        let mut ids: BTreeSet<RoomId> = state
            .cursors
            .keys()
            .chain(state.members.iter())
            .filter(|(room, who)| *who == user && *room > after)
            .map(|(room, _)| *room)
            .collect();
        ids.extend(
            state
                .rooms
                .range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
                .filter(|(_, stored)| stored.room.owner == Some(user))
                .map(|(id, _)| *id),
        );
        let limit = usize::try_from(query.limit.get()).unwrap_or(usize::MAX);
        Ok(ids
            .into_iter()
            .filter_map(|id| state.rooms.get(&id))
            // A cursor outlives a membership; reading rights do not.
            .filter(|stored| state.may_read(&stored.room, user))
            .take(limit)
            .map(|stored| {
                let cursor = state
                    .cursors
                    .get(&(stored.room.id, user))
                    .copied()
                    .unwrap_or(Seq(0));
                MyRoom::new(stored.room.clone(), cursor)
            })
            .collect())
    }
}
