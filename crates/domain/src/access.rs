//! Who may do what in a room: [`decide`] is the one rule, a pure function of the caller, the
//! room and (only when it matters) whether the caller is a member. Every path that reads,
//! writes or manages a room asks it: SUBSCRIBE (and with it resume replay), SEND over STOMP
//! and REST, history, the room list and the members API.
//!
//! [`AccessCache`] remembers what the store said, so a SEND does not cost a membership
//! query: a room's visibility and owner never change, and a membership grant is kept until
//! it is revoked (a [`ControlEvent`](crate::ControlEvent) from the bus), until the bus may
//! have dropped such an event (then every grant is forgotten), or for at most
//! [`AccessCache::GRANT_TTL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{Caller, Room, RoomId, SenderId, Visibility};

/// What a caller wants to do with a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Subscribe, resume, read history, see it in the room list.
    Read,
    /// Send a message.
    Write,
    /// Add or remove members.
    ManageMembers,
}

/// The answer of [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The caller may do it.
    Allow,
    /// Refused; the text says why, for the client.
    Deny(&'static str),
    /// Depends on whether the caller is a member: ask the store, then decide again with
    /// the answer.
    NeedMembership,
}

/// The access rule. `member` is what the store said about the caller's membership, `None`
/// when it has not been asked (yet).
///
/// - Open mode (no authentication configured): everything is allowed; there is nobody to
///   check.
/// - Admins may do everything.
/// - Public rooms: every user reads and writes; members are managed by the owner.
/// - Private rooms: the owner and the members read and write; the owner manages members.
#[must_use]
pub fn decide(
    caller: &Caller,
    room: &Room,
    operation: Operation,
    member: Option<bool>,
) -> Decision {
    let Caller::User(identity) = caller else {
        return Decision::Allow;
    };
    if identity.admin || room.owner == Some(identity.user) {
        return Decision::Allow;
    }
    match (operation, room.visibility) {
        (Operation::ManageMembers, _) => {
            Decision::Deny("only the room's owner or an admin manages its members")
        }
        (Operation::Read | Operation::Write, Visibility::Public) => Decision::Allow,
        (Operation::Read | Operation::Write, Visibility::Private) => match member {
            None => Decision::NeedMembership,
            Some(true) => Decision::Allow,
            Some(false) => Decision::Deny("this room is private and you are not a member"),
        },
    }
}

/// What an instance remembers of the store's answers about access. Bounded: past
/// [`AccessCache::MAX_ENTRIES`] rooms or grants it starts over.
#[derive(Debug, Default)]
pub struct AccessCache {
    state: Mutex<CacheState>,
}

#[derive(Debug, Default)]
struct CacheState {
    rooms: HashMap<RoomId, Arc<Room>>,
    grants: HashMap<(RoomId, SenderId), Instant>,
}

impl AccessCache {
    /// How long a membership grant is trusted without a revocation: the last resort when a
    /// revocation event was lost without the bus noticing.
    pub const GRANT_TTL: Duration = Duration::from_secs(60);
    /// Entries of each kind kept at most.
    pub const MAX_ENTRIES: usize = 100_000;

    fn state(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The room as last seen (its visibility and owner; its `last_seq` may be old). Shared,
    /// so asking on every SEND copies nothing.
    #[must_use]
    pub fn room(&self, id: RoomId) -> Option<Arc<Room>> {
        self.state().rooms.get(&id).cloned()
    }

    /// Keeps `room`, as the store gave it, for [`AccessCache::room`]. Its visibility and
    /// owner never change, so it is not invalidated.
    pub fn remember_room(&self, room: Arc<Room>) {
        let mut state = self.state();
        if state.rooms.len() >= Self::MAX_ENTRIES {
            state.rooms.clear();
        }
        state.rooms.insert(room.id, room);
    }

    /// Whether `user` was found to be a member of `room` less than [`Self::GRANT_TTL`] ago
    /// and not revoked since.
    #[must_use]
    pub fn is_granted(&self, room: RoomId, user: SenderId, now: Instant) -> bool {
        let mut state = self.state();
        match state.grants.get(&(room, user)) {
            Some(at) if now.saturating_duration_since(*at) < Self::GRANT_TTL => true,
            Some(_) => {
                state.grants.remove(&(room, user));
                false
            }
            None => false,
        }
    }

    /// The store said at `now` that `user` is a member of `room`: trusted until revoked,
    /// forgotten, or [`Self::GRANT_TTL`] old.
    pub fn grant(&self, room: RoomId, user: SenderId, now: Instant) {
        let mut state = self.state();
        if state.grants.len() >= Self::MAX_ENTRIES {
            state.grants.clear();
        }
        state.grants.insert((room, user), now);
    }

    /// The user is no longer a member of the room.
    pub fn revoke(&self, room: RoomId, user: SenderId) {
        self.state().grants.remove(&(room, user));
    }

    /// Revocations may have been missed: ask the store again for every grant.
    pub fn forget_grants(&self) {
        self.state().grants.clear();
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::{Identity, Seq};

    fn room(visibility: Visibility, owner: Option<i64>) -> Room {
        Room {
            id: RoomId(1),
            name: "r".into(),
            created_at: Utc::now(),
            last_seq: Seq(0),
            visibility,
            owner: owner.map(SenderId),
        }
    }

    fn user(id: i64, admin: bool) -> Caller {
        Caller::User(Identity {
            user: SenderId(id),
            nickname: None,
            admin,
        })
    }

    /// (caller, visibility, owner, operation, member)
    type Case = (Caller, Visibility, Option<i64>, Operation, Option<bool>);
    /// A case and the decision it must get.
    type Row = (
        Caller,
        Visibility,
        Option<i64>,
        Operation,
        Option<bool>,
        Decision,
    );

    #[test]
    fn the_access_table() {
        use Decision::{Allow, NeedMembership};
        use Operation::{ManageMembers, Read, Write};
        use Visibility::{Private, Public};
        let deny = |d: Decision| matches!(d, Decision::Deny(_));
        // (caller, visibility, owner, operation, member) → decision
        let table: Vec<Row> = vec![
            (Caller::Open, Private, Some(1), ManageMembers, None, Allow),
            (Caller::Open, Private, None, Write, Some(false), Allow),
            (user(9, true), Private, Some(1), Read, Some(false), Allow),
            (user(9, true), Public, Some(1), ManageMembers, None, Allow),
            (user(1, false), Private, Some(1), Read, None, Allow),
            (user(1, false), Private, Some(1), ManageMembers, None, Allow),
            (user(2, false), Public, Some(1), Read, None, Allow),
            (user(2, false), Public, None, Write, None, Allow),
            (user(2, false), Private, Some(1), Read, None, NeedMembership),
            (
                user(2, false),
                Private,
                Some(1),
                Write,
                None,
                NeedMembership,
            ),
            (user(2, false), Private, Some(1), Read, Some(true), Allow),
            (user(2, false), Private, Some(1), Write, Some(true), Allow),
            (user(2, false), Private, None, Read, Some(true), Allow),
        ];
        for (caller, visibility, owner, operation, member, expected) in table {
            let got = decide(&caller, &room(visibility, owner), operation, member);
            assert_eq!(
                got, expected,
                "{caller:?} {visibility:?} {owner:?} {operation:?} {member:?}"
            );
        }
        let denied: Vec<Case> = vec![
            (user(2, false), Private, Some(1), Read, Some(false)),
            (user(2, false), Private, Some(1), Write, Some(false)),
            (user(2, false), Private, Some(1), ManageMembers, Some(true)),
            (user(2, false), Public, Some(1), ManageMembers, Some(true)),
            (user(2, false), Public, None, ManageMembers, None),
        ];
        for (caller, visibility, owner, operation, member) in denied {
            let got = decide(&caller, &room(visibility, owner), operation, member);
            assert!(
                deny(got),
                "{caller:?} {visibility:?} {operation:?} {member:?}: {got:?}"
            );
        }
    }

    #[test]
    fn a_grant_lasts_until_revoked_forgotten_or_old() {
        let cache = AccessCache::default();
        let t0 = Instant::now();
        let (r, u) = (RoomId(1), SenderId(2));
        assert!(!cache.is_granted(r, u, t0));
        cache.grant(r, u, t0);
        assert!(cache.is_granted(r, u, t0 + Duration::from_secs(1)));
        cache.revoke(r, u);
        assert!(!cache.is_granted(r, u, t0));
        cache.grant(r, u, t0);
        cache.forget_grants();
        assert!(!cache.is_granted(r, u, t0));
        cache.grant(r, u, t0);
        assert!(!cache.is_granted(r, u, t0 + AccessCache::GRANT_TTL));
    }
}
