//! [`Presence`]: this instance's users and the merged view of every instance's, as a
//! state machine. Inputs are `handle_*`, outputs `poll_*`; it reads no clock and does no
//! I/O, so every rule of the gossip is tested here.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::signal::{InstanceId, PresenceEntry, PresenceSignal};
use crate::{RoomId, SenderId};

/// How presence is tuned.
#[derive(Debug, Clone, Copy)]
pub struct PresenceConfig {
    /// An instance not heard from for this long is gone: its users leave.
    pub timeout: Duration,
    /// How often this instance says it is alive (a quarter of the timeout by default).
    pub heartbeat: Duration,
    /// Whole-state publications at most this often (requests in between are merged).
    pub min_state_interval: Duration,
}

impl PresenceConfig {
    /// The default timeout: a crashed instance's users leave 20–25 s after its last word.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

    /// Heart-beat at a quarter of `timeout`, so three lost heart-beats in a row are
    /// survived; a whole state at most twice a second.
    #[must_use]
    pub fn with_timeout(timeout: Duration) -> Self {
        let timeout = timeout.max(Duration::from_millis(400));
        Self {
            timeout,
            heartbeat: timeout / 4,
            min_state_interval: Duration::from_millis(500).min(timeout / 4),
        }
    }
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self::with_timeout(Self::DEFAULT_TIMEOUT)
    }
}

/// One member of a room as the snapshot shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceMember {
    /// The user.
    pub user_id: SenderId,
    /// Their display name (the latest one seen).
    pub nickname: String,
    /// Their connections to the room, on all instances.
    pub connections: u32,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceOutput {
    /// `user`'s first connection (cluster-wide) joined `room`: tell its watchers.
    Joined {
        /// The room.
        room: RoomId,
        /// The user.
        user: SenderId,
        /// Their display name.
        nickname: String,
    },
    /// `user`'s last connection left `room` (or its instance is gone).
    Left {
        /// The room.
        room: RoomId,
        /// The user.
        user: SenderId,
        /// Their display name.
        nickname: String,
    },
    /// Publish this on the bus, in this order.
    Publish(PresenceSignal),
}

/// What presence counted, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PresenceStats {
    /// Instances heard from and not timed out, this one excluded.
    pub instances: u64,
    /// Instances that timed out (crashed without a word).
    pub instances_expired: u64,
    /// Whole states asked from other instances.
    pub resyncs_requested: u64,
    /// Entries ignored because an instance claimed more than a real one could hold.
    pub entries_refused: u64,
    /// (room, user) entries held for every instance, this one included: what presence
    /// costs this instance in memory (about 100 bytes each).
    pub entries: u64,
}

#[derive(Debug, Clone)]
struct Held {
    nickname: String,
    connections: u32,
}

#[derive(Debug)]
struct Assembly {
    version: u64,
    parts: u32,
    seen: Vec<bool>,
    entries: Vec<PresenceEntry>,
}

/// What this instance knows of another one.
#[derive(Debug)]
struct Remote {
    version: u64,
    /// Its whole state was received at some point, and no change went missing since.
    synced: bool,
    last_heard: Instant,
    /// When this instance last asked it for its state.
    asked_at: Option<Instant>,
    entries: HashMap<(RoomId, SenderId), Held>,
    assembly: Option<Assembly>,
}

/// Remote instances followed at most; more are ignored (a real cluster has far fewer).
const MAX_INSTANCES: usize = 1_024;
/// Entries one remote instance may hold at most.
const MAX_ENTRIES_PER_INSTANCE: usize = 500_000;

/// Presence of the whole cluster, as this instance knows it.
#[derive(Debug)]
pub struct Presence {
    me: InstanceId,
    config: PresenceConfig,
    version: u64,
    local: HashMap<(RoomId, SenderId), Held>,
    remotes: HashMap<InstanceId, Remote>,
    /// Every instance's entries summed, per room and user.
    totals: HashMap<RoomId, BTreeMap<SenderId, Held>>,
    next_alive: Instant,
    state_due: bool,
    last_state_at: Option<Instant>,
    outputs: VecDeque<PresenceOutput>,
    stats: PresenceStats,
}

impl Presence {
    /// Presence of instance `me`, started at `now`: it asks the others for their state at
    /// once, so a new instance knows the room within a round trip.
    #[must_use]
    pub fn new(me: InstanceId, config: PresenceConfig, now: Instant) -> Self {
        let mut presence = Self {
            me,
            config,
            version: 0,
            local: HashMap::new(),
            remotes: HashMap::new(),
            totals: HashMap::new(),
            next_alive: now,
            state_due: false,
            last_state_at: None,
            outputs: VecDeque::new(),
            stats: PresenceStats::default(),
        };
        presence.stats.resyncs_requested += 1;
        presence
            .outputs
            .push_back(PresenceOutput::Publish(PresenceSignal::PresenceResync {
                from: me,
                target: None,
            }));
        presence
    }

    // --- inputs ----------------------------------------------------------------------

    /// One more local connection of `user` is in `room`.
    pub fn handle_enter(&mut self, room: RoomId, user: SenderId, nickname: &str) {
        let held = self.local.entry((room, user)).or_insert_with(|| Held {
            nickname: nickname.to_owned(),
            connections: 0,
        });
        let before = held.connections;
        held.connections = held.connections.saturating_add(1);
        held.nickname = nickname.to_owned();
        let after = held.connections;
        self.local_changed(room, user, nickname.to_owned(), before, after);
    }

    /// One local connection of `user` left `room`.
    pub fn handle_leave(&mut self, room: RoomId, user: SenderId) {
        let Some(held) = self.local.get_mut(&(room, user)) else {
            return;
        };
        let before = held.connections;
        held.connections = held.connections.saturating_sub(1);
        let after = held.connections;
        let nickname = held.nickname.clone();
        if after == 0 {
            self.local.remove(&(room, user));
        }
        self.local_changed(room, user, nickname, before, after);
    }

    /// A signal from the bus (this instance's own come back too and are ignored).
    pub fn handle_signal(&mut self, signal: &PresenceSignal, now: Instant) {
        if signal.sender() == self.me {
            return;
        }
        match signal {
            PresenceSignal::PresenceResync { target, .. } => {
                if target.is_none_or(|t| t == self.me) {
                    self.state_due = true;
                    self.publish_state_if_allowed(now);
                }
            }
            PresenceSignal::PresenceAlive { instance, version } => {
                let Some(remote) = self.remote(*instance, now) else {
                    return;
                };
                remote.last_heard = now;
                if !remote.synced || *version != remote.version {
                    remote.synced = false;
                    self.ask(*instance, now);
                }
            }
            PresenceSignal::PresenceChange {
                instance,
                version,
                entry,
            } => {
                let Some(remote) = self.remote(*instance, now) else {
                    return;
                };
                remote.last_heard = now;
                if remote.synced && *version <= remote.version {
                    return; // a duplicate
                }
                let missed = remote.synced && *version > remote.version + 1;
                remote.version = remote.version.max(*version);
                if missed {
                    remote.synced = false;
                }
                let needs_state = !remote.synced;
                self.apply_remote(*instance, entry);
                if needs_state {
                    self.ask(*instance, now);
                }
            }
            PresenceSignal::PresenceState {
                instance,
                version,
                part,
                parts,
                entries,
            } => self.handle_state_part(*instance, *version, *part, *parts, entries, now),
        }
    }

    /// The bus may have lost signals either way: publish this instance's whole state and
    /// ask every other instance for theirs. What is known stays until their answers
    /// replace it, so a short interruption makes nobody leave and come back.
    pub fn handle_bus_gap(&mut self, now: Instant) {
        for remote in self.remotes.values_mut() {
            remote.synced = false;
            remote.asked_at = Some(now);
        }
        self.stats.resyncs_requested += 1;
        self.outputs
            .push_back(PresenceOutput::Publish(PresenceSignal::PresenceResync {
                from: self.me,
                target: None,
            }));
        self.state_due = true;
        self.last_state_at = None;
        self.publish_state_if_allowed(now);
    }

    /// Time passed: heart-beat, due state publications, instances that timed out.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next_alive {
            self.next_alive = now + self.config.heartbeat;
            self.outputs
                .push_back(PresenceOutput::Publish(PresenceSignal::PresenceAlive {
                    instance: self.me,
                    version: self.version,
                }));
        }
        self.publish_state_if_allowed(now);
        let timeout = self.config.timeout;
        let expired: Vec<InstanceId> = self
            .remotes
            .iter()
            .filter(|(_, r)| now.saturating_duration_since(r.last_heard) >= timeout)
            .map(|(id, _)| *id)
            .collect();
        for instance in expired {
            if let Some(remote) = self.remotes.remove(&instance) {
                self.stats.instances_expired += 1;
                for ((room, user), held) in remote.entries {
                    self.adjust(room, user, &held.nickname, held.connections, 0);
                }
            }
        }
    }

    // --- outputs ---------------------------------------------------------------------

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<PresenceOutput> {
        self.outputs.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Instant {
        let mut next = self.next_alive;
        if let Some(expiry) = self
            .remotes
            .values()
            .map(|r| r.last_heard + self.config.timeout)
            .min()
        {
            next = next.min(expiry);
        }
        if self.state_due
            && let Some(at) = self.last_state_at
        {
            next = next.min(at + self.config.min_state_interval);
        }
        next
    }

    /// Who is in `room` now, by user id.
    #[must_use]
    pub fn snapshot(&self, room: RoomId) -> Vec<PresenceMember> {
        self.totals
            .get(&room)
            .map(|members| {
                members
                    .iter()
                    .map(|(user, held)| PresenceMember {
                        user_id: *user,
                        nickname: held.nickname.clone(),
                        connections: held.connections,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Counters for metrics.
    #[must_use]
    pub fn stats(&self) -> PresenceStats {
        let remote: usize = self.remotes.values().map(|r| r.entries.len()).sum();
        PresenceStats {
            instances: self.remotes.len() as u64,
            entries: (remote + self.local.len()) as u64,
            ..self.stats
        }
    }

    // --- internals -------------------------------------------------------------------

    fn local_changed(
        &mut self,
        room: RoomId,
        user: SenderId,
        nickname: String,
        before: u32,
        after: u32,
    ) {
        if before == after {
            return;
        }
        self.version += 1;
        self.adjust(room, user, &nickname, before, after);
        self.outputs
            .push_back(PresenceOutput::Publish(PresenceSignal::PresenceChange {
                instance: self.me,
                version: self.version,
                entry: PresenceEntry {
                    chat_room_id: room,
                    user_id: user,
                    nickname,
                    connections: after,
                },
            }));
    }

    /// The remote `instance`, created when first heard of (unless too many are known).
    fn remote(&mut self, instance: InstanceId, now: Instant) -> Option<&mut Remote> {
        if !self.remotes.contains_key(&instance) && self.remotes.len() >= MAX_INSTANCES {
            return None;
        }
        Some(self.remotes.entry(instance).or_insert_with(|| Remote {
            version: 0,
            synced: false,
            last_heard: now,
            asked_at: None,
            entries: HashMap::new(),
            assembly: None,
        }))
    }

    /// Asks `instance` for its whole state, unless it was asked a moment ago (its answer
    /// is on the way).
    fn ask(&mut self, instance: InstanceId, now: Instant) {
        let wait = self.config.min_state_interval * 2;
        let Some(remote) = self.remotes.get_mut(&instance) else {
            return;
        };
        if remote
            .asked_at
            .is_some_and(|at| now.saturating_duration_since(at) < wait)
        {
            return;
        }
        remote.asked_at = Some(now);
        self.stats.resyncs_requested += 1;
        self.outputs
            .push_back(PresenceOutput::Publish(PresenceSignal::PresenceResync {
                from: self.me,
                target: Some(instance),
            }));
    }

    fn apply_remote(&mut self, instance: InstanceId, entry: &PresenceEntry) {
        let Some(remote) = self.remotes.get_mut(&instance) else {
            return;
        };
        let key = (entry.chat_room_id, entry.user_id);
        let before = remote.entries.get(&key).map_or(0, |h| h.connections);
        if entry.connections == 0 {
            remote.entries.remove(&key);
        } else if before == 0 && remote.entries.len() >= MAX_ENTRIES_PER_INSTANCE {
            self.stats.entries_refused += 1;
            return;
        } else {
            remote.entries.insert(
                key,
                Held {
                    nickname: entry.nickname.clone(),
                    connections: entry.connections,
                },
            );
        }
        self.adjust(
            entry.chat_room_id,
            entry.user_id,
            &entry.nickname,
            before,
            entry.connections,
        );
    }

    fn handle_state_part(
        &mut self,
        instance: InstanceId,
        version: u64,
        part: u32,
        parts: u32,
        entries: &[PresenceEntry],
        now: Instant,
    ) {
        let Some(remote) = self.remote(instance, now) else {
            return;
        };
        remote.last_heard = now;
        if remote.synced && version < remote.version {
            return; // older than what is known
        }
        let fresh = remote
            .assembly
            .as_ref()
            .is_none_or(|a| a.version != version || a.parts != parts);
        if fresh {
            remote.assembly = Some(Assembly {
                version,
                parts,
                seen: vec![false; parts as usize],
                entries: Vec::new(),
            });
        }
        let Some(assembly) = remote.assembly.as_mut() else {
            return;
        };
        let Some(seen) = assembly.seen.get_mut(part as usize) else {
            return;
        };
        if *seen {
            return;
        }
        *seen = true;
        let room_left = MAX_ENTRIES_PER_INSTANCE.saturating_sub(assembly.entries.len());
        let refused = entries.len().saturating_sub(room_left) as u64;
        assembly
            .entries
            .extend(entries.iter().take(room_left).cloned());
        let complete = assembly.seen.iter().all(|s| *s);
        self.stats.entries_refused += refused;
        if !complete {
            return;
        }
        let Some(remote) = self.remotes.get_mut(&instance) else {
            return;
        };
        let Some(assembly) = remote.assembly.take() else {
            return;
        };
        remote.version = assembly.version;
        remote.synced = true;
        let old = std::mem::take(&mut remote.entries);
        let mut new: HashMap<(RoomId, SenderId), Held> = HashMap::new();
        for entry in assembly.entries {
            if entry.connections > 0 {
                new.insert(
                    (entry.chat_room_id, entry.user_id),
                    Held {
                        nickname: entry.nickname,
                        connections: entry.connections,
                    },
                );
            }
        }
        for ((room, user), held) in &old {
            let after = new.get(&(*room, *user));
            let nickname = after.map_or(&held.nickname, |h| &h.nickname).clone();
            self.adjust(
                *room,
                *user,
                &nickname,
                held.connections,
                after.map_or(0, |h| h.connections),
            );
        }
        for ((room, user), held) in &new {
            if !old.contains_key(&(*room, *user)) {
                self.adjust(*room, *user, &held.nickname, 0, held.connections);
            }
        }
        if let Some(remote) = self.remotes.get_mut(&instance) {
            remote.entries = new;
        }
    }

    /// One instance's connections of `user` in `room` went from `before` to `after`:
    /// update the total and say so when the user joined or left.
    fn adjust(&mut self, room: RoomId, user: SenderId, nickname: &str, before: u32, after: u32) {
        if before == after {
            if after > 0
                && let Some(held) = self.totals.get_mut(&room).and_then(|m| m.get_mut(&user))
            {
                held.nickname = nickname.to_owned();
            }
            return;
        }
        let members = self.totals.entry(room).or_default();
        let total_before = members.get(&user).map_or(0, |h| h.connections);
        let total_after = total_before.saturating_sub(before).saturating_add(after);
        if total_after == 0 {
            let last = members
                .remove(&user)
                .map_or_else(|| nickname.to_owned(), |h| h.nickname);
            if members.is_empty() {
                self.totals.remove(&room);
            }
            if total_before > 0 {
                self.outputs.push_back(PresenceOutput::Left {
                    room,
                    user,
                    nickname: last,
                });
            }
            return;
        }
        members.insert(
            user,
            Held {
                nickname: nickname.to_owned(),
                connections: total_after,
            },
        );
        if total_before == 0 {
            self.outputs.push_back(PresenceOutput::Joined {
                room,
                user,
                nickname: nickname.to_owned(),
            });
        }
    }

    fn publish_state_if_allowed(&mut self, now: Instant) {
        if !self.state_due {
            return;
        }
        if self
            .last_state_at
            .is_some_and(|at| now.saturating_duration_since(at) < self.config.min_state_interval)
        {
            return;
        }
        self.state_due = false;
        self.last_state_at = Some(now);
        let mut entries: Vec<PresenceEntry> = self
            .local
            .iter()
            .map(|((room, user), held)| PresenceEntry {
                chat_room_id: *room,
                user_id: *user,
                nickname: held.nickname.clone(),
                connections: held.connections,
            })
            .collect();
        entries.sort_by_key(|e| (e.chat_room_id, e.user_id));
        let chunks: Vec<Vec<PresenceEntry>> = if entries.is_empty() {
            vec![Vec::new()]
        } else {
            entries
                .chunks(PresenceSignal::MAX_ENTRIES_PER_PART)
                .map(<[PresenceEntry]>::to_vec)
                .collect()
        };
        let parts = u32::try_from(chunks.len()).unwrap_or(u32::MAX);
        for (part, entries) in chunks.into_iter().enumerate() {
            self.outputs
                .push_back(PresenceOutput::Publish(PresenceSignal::PresenceState {
                    instance: self.me,
                    version: self.version,
                    part: u32::try_from(part).unwrap_or(u32::MAX),
                    parts,
                    entries,
                }));
        }
    }
}
