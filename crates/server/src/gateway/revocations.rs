//! Ending live subscriptions when a member is removed from a private room, on every
//! instance. Sessions register the subscriptions that a removal could end (a signed-in
//! user, not the owner or an admin, in a private room); a
//! [`ControlEvent::MemberRemoved`] from the bus ends them at once. When the bus may have
//! lost such an event, every registered membership is checked against the store again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chat_domain::{
    Caller, ChatError, ChatService, ControlEvent, Operation, Room, RoomId, SenderId,
};
use tokio::sync::mpsc;

use super::hub::ConnectionId;

/// Where a session hears that it lost access to a room.
pub(crate) type RevokedSender = mpsc::UnboundedSender<RoomId>;

struct Watch {
    caller: Arc<Caller>,
    notify: RevokedSender,
}

/// The registry of one instance.
pub(crate) struct Revocations {
    service: ChatService,
    watches: Mutex<HashMap<(RoomId, SenderId), HashMap<ConnectionId, Watch>>>,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations").finish_non_exhaustive()
    }
}

/// The user whose subscription to `room` a removal from its members would end; `None`
/// when none would (open mode, public rooms, the owner, admins).
pub(crate) fn revocable(caller: &Caller, room: &Room) -> Option<SenderId> {
    match caller {
        Caller::User(identity)
            if room.visibility == chat_domain::Visibility::Private
                && !identity.admin
                && room.owner != Some(identity.user) =>
        {
            Some(identity.user)
        }
        _ => None,
    }
}

impl Revocations {
    pub(crate) fn new(service: ChatService) -> Self {
        Self {
            service,
            watches: Mutex::new(HashMap::new()),
        }
    }

    fn watches(&self) -> MutexGuard<'_, HashMap<(RoomId, SenderId), HashMap<ConnectionId, Watch>>> {
        self.watches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `connection` holds a subscription of `user` to `room` that a removal must end.
    pub(crate) fn watch(
        &self,
        room: RoomId,
        user: SenderId,
        connection: ConnectionId,
        caller: Arc<Caller>,
        notify: RevokedSender,
    ) {
        self.watches()
            .entry((room, user))
            .or_default()
            .insert(connection, Watch { caller, notify });
    }

    /// The connection is gone.
    pub(crate) fn forget(&self, connection: ConnectionId, watched: &[(RoomId, SenderId)]) {
        let mut watches = self.watches();
        for key in watched {
            if let Some(connections) = watches.get_mut(key) {
                connections.remove(&connection);
                if connections.is_empty() {
                    watches.remove(key);
                }
            }
        }
    }

    /// A control event from the bus (from any instance, this one included).
    pub(crate) fn handle_control(&self, event: &ControlEvent) {
        self.service.handle_control(event);
        if let ControlEvent::MemberRemoved {
            chat_room_id,
            user_id,
        } = *event
        {
            self.revoke(chat_room_id, user_id);
        }
    }

    /// Ends `user`'s subscriptions to `room` on this instance.
    pub(crate) fn revoke(&self, room: RoomId, user: SenderId) {
        let ended = self.watches().remove(&(room, user));
        for watch in ended.into_iter().flat_map(HashMap::into_values) {
            let _ = watch.notify.send(room);
        }
    }

    /// The bus may have dropped control events: forget cached grants and ask the store
    /// about every watched membership; the ones that are gone are revoked. A store that
    /// cannot answer leaves them as they are (the next gap, or the grant's expiry on the
    /// next SEND, asks again).
    pub(crate) async fn handle_bus_gap(&self) {
        self.service.handle_bus_gap();
        let watched: Vec<((RoomId, SenderId), Arc<Caller>)> = self
            .watches()
            .iter()
            .filter_map(|(key, connections)| {
                connections
                    .values()
                    .next()
                    .map(|watch| (*key, watch.caller.clone()))
            })
            .collect();
        for ((room, user), caller) in watched {
            let still = self.service.authorize(&caller, room, Operation::Read).await;
            if let Err(ChatError::Forbidden(_) | ChatError::UnknownRoom(_)) = still {
                tracing::info!(
                    room = room.get(),
                    user = user.get(),
                    "a membership ended while the bus was interrupted; ending its subscriptions"
                );
                self.revoke(room, user);
            }
        }
    }
}
