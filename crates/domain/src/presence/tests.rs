//! Several [`Presence`] machines wired through a fake bus that can lose signals.

use std::time::{Duration, Instant};

use super::*;
use crate::{RoomId, SenderId};

const ROOM: RoomId = RoomId(1);

struct Cluster {
    nodes: Vec<Presence>,
    /// What each node told its watchers, in order.
    heard: Vec<Vec<PresenceOutput>>,
    now: Instant,
    /// The next signal this node publishes is lost.
    drop_next_from: Option<usize>,
}

impl Cluster {
    fn new(n: usize) -> Self {
        let now = Instant::now();
        let mut cluster = Self {
            nodes: Vec::new(),
            heard: Vec::new(),
            now,
            drop_next_from: None,
        };
        for i in 0..n {
            cluster.add(i as u64 + 1);
        }
        cluster.settle();
        cluster
    }

    fn add(&mut self, id: u64) {
        self.nodes.push(Presence::new(
            InstanceId(id),
            PresenceConfig::with_timeout(Duration::from_secs(20)),
            self.now,
        ));
        self.heard.push(Vec::new());
    }

    /// Delivers every published signal to every other node until nothing is left.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            for from in 0..self.nodes.len() {
                while let Some(output) = self.nodes[from].poll_output() {
                    moved = true;
                    match output {
                        PresenceOutput::Publish(signal) => {
                            if self.drop_next_from == Some(from) {
                                self.drop_next_from = None;
                                continue;
                            }
                            for to in 0..self.nodes.len() {
                                if to != from {
                                    self.nodes[to].handle_signal(&signal, self.now);
                                }
                            }
                        }
                        other => self.heard[from].push(other),
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn advance(&mut self, by: Duration, only: &[usize]) {
        self.now += by;
        for i in only {
            self.nodes[*i].handle_timeout(self.now);
        }
        self.settle();
    }

    fn take_heard(&mut self, node: usize) -> Vec<PresenceOutput> {
        std::mem::take(&mut self.heard[node])
    }
}

fn joined(user: i64, nickname: &str) -> PresenceOutput {
    PresenceOutput::Joined {
        room: ROOM,
        user: SenderId(user),
        nickname: nickname.into(),
    }
}

fn left(user: i64, nickname: &str) -> PresenceOutput {
    PresenceOutput::Left {
        room: ROOM,
        user: SenderId(user),
        nickname: nickname.into(),
    }
}

fn member(user: i64, nickname: &str, connections: u32) -> PresenceMember {
    PresenceMember {
        user_id: SenderId(user),
        nickname: nickname.into(),
        connections,
    }
}

#[test]
fn a_user_on_two_instances_is_one_member_with_two_connections() {
    let mut c = Cluster::new(2);
    c.nodes[0].handle_enter(ROOM, SenderId(7), "alice");
    c.settle();
    assert_eq!(c.take_heard(0), vec![joined(7, "alice")]);
    assert_eq!(c.take_heard(1), vec![joined(7, "alice")]);

    // Her second device, on the other instance: no second join anywhere.
    c.nodes[1].handle_enter(ROOM, SenderId(7), "alice");
    c.settle();
    assert!(c.take_heard(0).is_empty());
    assert!(c.take_heard(1).is_empty());
    for node in &c.nodes {
        assert_eq!(node.snapshot(ROOM), vec![member(7, "alice", 2)]);
    }
    // Each node holds its own entry and the other's.
    assert!(c.nodes.iter().all(|node| node.stats().entries == 2));

    // One device leaves: still present. The last one leaves: gone everywhere.
    c.nodes[0].handle_leave(ROOM, SenderId(7));
    c.settle();
    assert!(c.take_heard(0).is_empty() && c.take_heard(1).is_empty());
    c.nodes[1].handle_leave(ROOM, SenderId(7));
    c.settle();
    assert_eq!(c.take_heard(0), vec![left(7, "alice")]);
    assert_eq!(c.take_heard(1), vec![left(7, "alice")]);
    assert!(c.nodes[0].snapshot(ROOM).is_empty());
}

#[test]
fn an_instance_that_starts_late_learns_who_is_there_at_once() {
    let mut c = Cluster::new(1);
    c.nodes[0].handle_enter(ROOM, SenderId(7), "alice");
    c.nodes[0].handle_enter(RoomId(2), SenderId(8), "bob");
    c.settle();
    c.add(2);
    c.settle();
    assert_eq!(c.nodes[1].snapshot(ROOM), vec![member(7, "alice", 1)]);
    assert_eq!(c.nodes[1].snapshot(RoomId(2)), vec![member(8, "bob", 1)]);
}

#[test]
fn a_silent_instance_has_its_users_leave_after_the_timeout_and_not_before() {
    let mut c = Cluster::new(2);
    c.nodes[0].handle_enter(ROOM, SenderId(7), "alice");
    c.nodes[1].handle_enter(ROOM, SenderId(8), "bob");
    c.settle();
    c.take_heard(1);
    // Both alive: heart-beats keep node 0 known to node 1 well past the timeout.
    for _ in 0..10 {
        c.advance(Duration::from_secs(5), &[0, 1]);
    }
    assert!(c.take_heard(1).is_empty());
    assert_eq!(c.nodes[1].snapshot(ROOM).len(), 2);

    // Node 0 dies without a word: only node 1's clock runs.
    c.advance(Duration::from_secs(15), &[1]);
    assert!(c.take_heard(1).is_empty(), "gone only after the timeout");
    c.advance(Duration::from_secs(10), &[1]);
    assert_eq!(c.take_heard(1), vec![left(7, "alice")]);
    assert_eq!(c.nodes[1].snapshot(ROOM), vec![member(8, "bob", 1)]);
    assert!(c.nodes[1].poll_timeout() <= c.now + Duration::from_secs(5));
    assert_eq!(c.nodes[1].stats().instances_expired, 1);
}

#[test]
fn a_missed_change_is_noticed_and_healed_by_the_whole_state() {
    let mut c = Cluster::new(2);
    c.nodes[0].handle_enter(ROOM, SenderId(7), "alice");
    c.settle();
    c.take_heard(1);
    // Alice leaves and the signal is lost: node 1 still sees her.
    c.drop_next_from = Some(0);
    c.nodes[0].handle_leave(ROOM, SenderId(7));
    c.settle();
    assert_eq!(c.nodes[1].snapshot(ROOM).len(), 1);
    // Bob joins on node 0: node 1 sees the version jump, asks, and gets it right.
    c.nodes[0].handle_enter(ROOM, SenderId(8), "bob");
    c.settle();
    // Node 0 published its state a moment ago; the next one is due shortly after.
    assert!(c.nodes[0].poll_timeout() <= c.now + Duration::from_millis(500));
    c.advance(Duration::from_millis(500), &[0, 1]);
    assert_eq!(c.nodes[1].snapshot(ROOM), vec![member(8, "bob", 1)]);
    let heard = c.take_heard(1);
    assert!(heard.contains(&left(7, "alice")), "{heard:?}");
    assert!(heard.contains(&joined(8, "bob")), "{heard:?}");
}

#[test]
fn a_lost_last_change_is_caught_by_the_heartbeat() {
    let mut c = Cluster::new(2);
    c.drop_next_from = Some(0);
    c.nodes[0].handle_enter(ROOM, SenderId(7), "alice");
    c.settle();
    assert!(c.nodes[1].snapshot(ROOM).is_empty());
    c.advance(Duration::from_secs(5), &[0]);
    assert_eq!(c.nodes[1].snapshot(ROOM), vec![member(7, "alice", 1)]);
}

#[test]
fn after_a_bus_gap_the_view_heals_without_anyone_leaving_and_coming_back() {
    let mut c = Cluster::new(2);
    c.nodes[0].handle_enter(ROOM, SenderId(7), "alice");
    c.nodes[1].handle_enter(ROOM, SenderId(8), "bob");
    c.settle();
    c.take_heard(0);
    c.take_heard(1);
    // During the interruption carol joins on node 0 and the signal is lost.
    c.drop_next_from = Some(0);
    c.nodes[0].handle_enter(ROOM, SenderId(9), "carol");
    c.settle();
    c.take_heard(0);
    c.nodes[0].handle_bus_gap(c.now);
    c.nodes[1].handle_bus_gap(c.now);
    c.settle();
    let want = vec![
        member(7, "alice", 1),
        member(8, "bob", 1),
        member(9, "carol", 1),
    ];
    assert_eq!(c.nodes[0].snapshot(ROOM), want);
    assert_eq!(c.nodes[1].snapshot(ROOM), want);
    assert_eq!(c.take_heard(1), vec![joined(9, "carol")]);
    assert!(c.take_heard(0).is_empty());
}

#[test]
fn a_large_state_goes_in_parts_and_arrives_whole() {
    let mut c = Cluster::new(1);
    for user in 0..450 {
        c.nodes[0].handle_enter(ROOM, SenderId(user), "u");
    }
    c.settle();
    c.add(2);
    let mut parts = 0;
    // Count the parts on their way.
    c.nodes[1].poll_output().into_iter().for_each(|o| {
        if let PresenceOutput::Publish(s) = o {
            c.nodes[0].handle_signal(&s, c.now);
        }
    });
    while let Some(output) = c.nodes[0].poll_output() {
        if let PresenceOutput::Publish(signal) = output {
            if matches!(signal, PresenceSignal::PresenceState { .. }) {
                parts += 1;
            }
            c.nodes[1].handle_signal(&signal, c.now);
        }
    }
    assert_eq!(parts, 3);
    assert_eq!(c.nodes[1].snapshot(ROOM).len(), 450);
}

#[test]
fn duplicates_and_own_signals_change_nothing() {
    let mut a = Presence::new(InstanceId(1), PresenceConfig::default(), Instant::now());
    let mut b = Presence::new(InstanceId(2), PresenceConfig::default(), Instant::now());
    while a.poll_output().is_some() {}
    while b.poll_output().is_some() {}
    let change = PresenceSignal::PresenceChange {
        instance: InstanceId(1),
        version: 1,
        entry: PresenceEntry {
            chat_room_id: ROOM,
            user_id: SenderId(7),
            nickname: "alice".into(),
            connections: 1,
        },
    };
    let now = Instant::now();
    // Its own change coming back from the bus is not a second connection.
    a.handle_signal(&change, now);
    assert!(a.snapshot(ROOM).is_empty());
    b.handle_signal(
        &PresenceSignal::PresenceState {
            instance: InstanceId(1),
            version: 0,
            part: 0,
            parts: 1,
            entries: vec![],
        },
        now,
    );
    b.handle_signal(&change, now);
    b.handle_signal(&change, now);
    assert_eq!(b.snapshot(ROOM), vec![member(7, "alice", 1)]);
    let outputs: Vec<_> = std::iter::from_fn(|| b.poll_output()).collect();
    assert_eq!(outputs, vec![joined(7, "alice")]);
}
