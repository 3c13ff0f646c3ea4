//! Which Redis channels carry what, in each channel mode, and which rooms this instance
//! wants carried: pure naming and bookkeeping, no connection.
//!
//! - `single`: every room on `{channel}`, control events on `{channel}:control`.
//! - `per-room`: room `id` on `{channel}:room:{id}`, control events on `{channel}:control`;
//!   on a cluster both are shard channels (`SSUBSCRIBE`), which live on the node that owns
//!   their hash slot.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use chat_domain::RoomId;

use crate::config::ChannelMode;

/// The channel names of one bus.
#[derive(Debug, Clone)]
pub(crate) struct Channels {
    /// `{channel}`: the one channel of `single` mode, the prefix of the others.
    pub(crate) base: String,
    pub(crate) control: String,
    /// `{channel}:room:`, the prefix of per-room channels.
    room_prefix: String,
    pub(crate) mode: ChannelMode,
    /// Shard channels (`SPUBLISH`/`SSUBSCRIBE`): on a cluster.
    pub(crate) sharded: bool,
}

/// What a received message's channel says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Carried {
    Control,
    /// A chat message; `Some(room)` on a per-room channel, which only that room's messages
    /// may use.
    Message(Option<RoomId>),
    /// Not one of ours (a stray subscription, a channel of another prefix).
    Other,
}

impl Channels {
    pub(crate) fn new(base: String, mode: ChannelMode, sharded: bool) -> Self {
        Self {
            control: format!("{base}:control"),
            room_prefix: format!("{base}:room:"),
            base,
            mode,
            sharded,
        }
    }

    /// The channel `room`'s messages are published on.
    pub(crate) fn for_room(&self, room: RoomId) -> String {
        match self.mode {
            ChannelMode::Single => self.base.clone(),
            ChannelMode::PerRoom => format!("{}{}", self.room_prefix, room.get()),
        }
    }

    /// What is subscribed for as long as the bus runs, whatever the rooms.
    pub(crate) fn fixed(&self) -> Vec<String> {
        match self.mode {
            ChannelMode::Single => vec![self.base.clone(), self.control.clone()],
            ChannelMode::PerRoom => vec![self.control.clone()],
        }
    }

    pub(crate) fn classify(&self, channel: &str) -> Carried {
        if channel == self.control {
            return Carried::Control;
        }
        match self.mode {
            ChannelMode::Single if channel == self.base => Carried::Message(None),
            ChannelMode::PerRoom => channel
                .strip_prefix(&self.room_prefix)
                .and_then(|id| id.parse::<i64>().ok())
                .map_or(Carried::Other, |id| Carried::Message(Some(RoomId(id)))),
            ChannelMode::Single => Carried::Other,
        }
    }
}

/// `channels` grouped by cluster hash slot: a shard-channel command takes channels of one
/// slot only (others fail with CROSSSLOT).
pub(crate) fn by_slot(channels: Vec<String>) -> Vec<Vec<String>> {
    let mut groups: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for channel in channels {
        groups
            .entry(fred::util::redis_keyslot(channel.as_bytes()))
            .or_default()
            .push(channel);
    }
    groups.into_values().collect()
}

/// The rooms this instance wants carried: a reference count per room, changed by
/// `watch_room`/`unwatch_room` from any thread, read by the subscription's supervisor.
#[derive(Debug, Default)]
pub(crate) struct Interest {
    counts: Mutex<HashMap<RoomId, usize>>,
}

impl Interest {
    /// One more interest in `room`; `true` when it is the first.
    pub(crate) fn watch(&self, room: RoomId) -> bool {
        let mut counts = lock(&self.counts);
        let count = counts.entry(room).or_default();
        *count += 1;
        *count == 1
    }

    /// One interest in `room` less; `true` when it was the last. An unmatched call is
    /// ignored.
    pub(crate) fn unwatch(&self, room: RoomId) -> bool {
        let mut counts = lock(&self.counts);
        match counts.get_mut(&room) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            Some(_) => {
                counts.remove(&room);
                true
            }
            None => false,
        }
    }

    pub(crate) fn wanted(&self) -> BTreeSet<RoomId> {
        lock(&self.counts).keys().copied().collect()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What to change so the subscribed rooms become the wanted ones.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct RoomChanges {
    pub(crate) subscribe: Vec<RoomId>,
    pub(crate) unsubscribe: Vec<RoomId>,
}

impl RoomChanges {
    pub(crate) fn between(subscribed: &BTreeSet<RoomId>, wanted: &BTreeSet<RoomId>) -> Self {
        Self {
            subscribe: wanted.difference(subscribed).copied().collect(),
            unsubscribe: subscribed.difference(wanted).copied().collect(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.subscribe.is_empty() && self.unsubscribe.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_mode_carries_every_room_on_the_one_channel() {
        let channels = Channels::new("chat:messages".into(), ChannelMode::Single, false);
        assert_eq!(channels.for_room(RoomId(7)), "chat:messages");
        assert_eq!(channels.fixed(), ["chat:messages", "chat:messages:control"]);
        assert_eq!(channels.classify("chat:messages"), Carried::Message(None));
        assert_eq!(channels.classify("chat:messages:control"), Carried::Control);
        assert_eq!(channels.classify("chat:messages:room:7"), Carried::Other);
    }

    #[test]
    fn per_room_mode_names_a_channel_per_room_and_reads_the_room_back() {
        let channels = Channels::new("chat".into(), ChannelMode::PerRoom, true);
        assert_eq!(channels.for_room(RoomId(42)), "chat:room:42");
        assert_eq!(channels.fixed(), ["chat:control"]);
        assert_eq!(
            channels.classify("chat:room:42"),
            Carried::Message(Some(RoomId(42)))
        );
        assert_eq!(channels.classify("chat:room:x"), Carried::Other);
        // The single channel is not ours in this mode: Spring payloads there are not read.
        assert_eq!(channels.classify("chat"), Carried::Other);
        assert_eq!(channels.classify("chat:control"), Carried::Control);
    }

    #[test]
    fn shard_channels_are_grouped_by_hash_slot() {
        let channels: Vec<String> = (1..=50).map(|id| format!("chat:room:{id}")).collect();
        let groups = by_slot(channels.clone());
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), channels.len());
        for group in &groups {
            let slot = fred::util::redis_keyslot(group[0].as_bytes());
            assert!(
                group
                    .iter()
                    .all(|c| fred::util::redis_keyslot(c.as_bytes()) == slot)
            );
        }
        assert!(groups.len() > 1, "50 rooms spread over several slots");
    }

    #[test]
    fn interest_is_reference_counted_per_room() {
        let interest = Interest::default();
        assert!(interest.watch(RoomId(1)));
        assert!(!interest.watch(RoomId(1)));
        assert!(interest.watch(RoomId(2)));
        assert!(!interest.unwatch(RoomId(1)));
        assert_eq!(interest.wanted(), BTreeSet::from([RoomId(1), RoomId(2)]));
        assert!(interest.unwatch(RoomId(1)));
        assert!(
            !interest.unwatch(RoomId(1)),
            "an unmatched unwatch is ignored"
        );
        assert_eq!(interest.wanted(), BTreeSet::from([RoomId(2)]));
    }

    #[test]
    fn changes_bring_the_subscribed_rooms_to_the_wanted_ones() {
        let subscribed = BTreeSet::from([RoomId(1), RoomId(2)]);
        let wanted = BTreeSet::from([RoomId(2), RoomId(3)]);
        assert_eq!(
            RoomChanges::between(&subscribed, &wanted),
            RoomChanges {
                subscribe: vec![RoomId(3)],
                unsubscribe: vec![RoomId(1)],
            }
        );
        assert!(RoomChanges::between(&wanted, &wanted).is_empty());
    }
}
