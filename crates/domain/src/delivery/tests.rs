//! The engine's decisions, driven by hand: no sockets, no runtime, time passed in.

use std::time::{Duration, Instant};

use chrono::Utc;

use super::*;
use crate::{MessageId, MessageType, SenderId};

const ROOM: RoomId = RoomId(1);

fn message(seq: i64) -> ChatMessagePublish {
    ChatMessagePublish {
        chat_room_id: ROOM,
        message_id: MessageId(seq),
        sender_id: SenderId(1),
        sender_nickname: "a".into(),
        content: format!("m{seq}"),
        message_type: MessageType::Text,
        created_at: Utc::now(),
        seq: Some(Seq(seq)),
    }
}

fn room(last_seq: i64) -> Room {
    Room {
        id: ROOM,
        name: "r".into(),
        created_at: Utc::now(),
        last_seq: Seq(last_seq),
        visibility: crate::Visibility::Public,
        owner: None,
    }
}

fn key(connection: u64) -> SubscriptionKey {
    SubscriptionKey {
        connection: ConnectionId(connection),
        id: Arc::from("s"),
    }
}

/// An engine and a clock, with the actions it produced gathered.
struct Harness {
    engine: DeliveryEngine,
    now: Instant,
}

impl Harness {
    fn new() -> Self {
        Self {
            engine: DeliveryEngine::new(EngineConfig::default()),
            now: Instant::now(),
        }
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.engine.poll_action()).collect()
    }

    /// Subscribes `connection` and answers the room fetch with `last_seq`.
    fn subscribed(&mut self, connection: u64, last_seq: i64) {
        self.engine
            .handle_subscribe(key(connection), ROOM, None, self.now);
        let mut actions = self.actions();
        if matches!(actions.first(), Some(Action::Watch(ROOM))) {
            actions.remove(0);
        }
        if let Some(Action::Fetch(fetch @ Fetch::Room { .. })) = actions.first() {
            self.engine
                .handle_fetched(fetch, Fetched::Room(Ok(Some(room(last_seq)))), self.now);
            assert!(matches!(
                self.actions().as_slice(),
                [Action::Subscribed { result: Ok(()), .. }]
            ));
        } else {
            assert!(matches!(
                actions.as_slice(),
                [Action::Subscribed { result: Ok(()), .. }]
            ));
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.engine.handle_timeout(self.now);
    }

    fn bus(&mut self, seq: i64) {
        self.engine.handle_bus_message(message(seq), self.now);
    }
}

/// The seqs delivered to `connection` by these actions, in order.
fn delivered_to(actions: &[Action], connection: u64) -> Vec<i64> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Deliver { message, to } if to.iter().any(|k| k.connection.0 == connection) => {
                message.seq.map(|s| s.0)
            }
            _ => None,
        })
        .collect()
}

fn fetches(actions: &[Action]) -> Vec<Fetch> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Fetch(f) => Some(f.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn the_first_subscriber_makes_the_engine_look_the_room_up_and_follow_it_from_its_last_seq() {
    let mut h = Harness::new();
    h.subscribed(1, 5);
    h.bus(5);
    h.bus(6);
    assert_eq!(delivered_to(&h.actions(), 1), [6]);
    assert_eq!(h.engine.last_delivered(ROOM), Some(Seq(6)));
}

#[test]
fn an_unknown_room_is_refused_and_forgotten() {
    let mut h = Harness::new();
    h.engine.handle_subscribe(key(1), ROOM, None, h.now);
    let fetch = fetches(&h.actions()).remove(0);
    h.engine
        .handle_fetched(&fetch, Fetched::Room(Ok(None)), h.now);
    assert!(matches!(
        h.actions().as_slice(),
        [
            Action::Subscribed {
                result: Err(ChatError::UnknownRoom(ROOM)),
                ..
            },
            Action::Unwatch(ROOM)
        ]
    ));
    assert_eq!(h.engine.room_count(), 0);
}

#[test]
fn a_small_reorder_is_put_right_without_a_fetch() {
    let mut h = Harness::new();
    h.subscribed(1, 0);
    for seq in [2, 1, 4, 3, 3, 1] {
        h.bus(seq);
    }
    h.advance(Duration::from_millis(100));
    let actions = h.actions();
    assert_eq!(delivered_to(&actions, 1), [1, 2, 3, 4]);
    assert!(fetches(&actions).is_empty());
}

#[test]
fn a_gap_still_open_after_the_reorder_window_is_fetched_then_delivered_in_order() {
    let mut h = Harness::new();
    h.subscribed(1, 0);
    h.bus(3);
    h.advance(Duration::from_millis(10));
    assert!(h.actions().is_empty(), "still inside the reorder window");
    h.advance(Duration::from_millis(30));
    let fetch = fetches(&h.actions()).remove(0);
    let Fetch::Range { after, before, .. } = &fetch else {
        panic!("{fetch:?}")
    };
    assert_eq!((*after, *before), (Seq(0), Some(Seq(3))));
    h.engine.handle_fetched(
        &fetch,
        Fetched::Range(Ok(vec![message(1), message(2)])),
        h.now,
    );
    assert_eq!(delivered_to(&h.actions(), 1), [1, 2, 3]);
}

#[test]
fn a_failed_fetch_never_steps_over_the_gap_and_is_retried() {
    let mut h = Harness::new();
    h.subscribed(1, 0);
    h.bus(2);
    h.advance(Duration::from_millis(40));
    let fetch = fetches(&h.actions()).remove(0);
    h.engine.handle_fetched(
        &fetch,
        Fetched::Range(Err(ChatError::StoreUnavailable("down".into()))),
        h.now,
    );
    assert!(
        delivered_to(&h.actions(), 1).is_empty(),
        "seq 2 must wait for seq 1"
    );
    h.advance(Duration::from_millis(300));
    let retry = fetches(&h.actions()).remove(0);
    h.engine
        .handle_fetched(&retry, Fetched::Range(Ok(vec![message(1)])), h.now);
    assert_eq!(delivered_to(&h.actions(), 1), [1, 2]);
}

#[test]
fn a_bus_interruption_catches_every_followed_room_up_page_by_page() {
    let mut h = Harness::new();
    h.subscribed(1, 0);
    h.engine.handle_bus_gap();
    let first = fetches(&h.actions()).remove(0);
    let limit = EngineConfig::default().page.get() as i64;
    let page: Vec<_> = (1..=limit).map(message).collect();
    h.engine
        .handle_fetched(&first, Fetched::Range(Ok(page)), h.now);
    let actions = h.actions();
    assert_eq!(delivered_to(&actions, 1).len() as i64, limit);
    let second = fetches(&actions).remove(0);
    assert!(matches!(second, Fetch::Range { after, before: None, .. } if after == Seq(limit)));
    h.engine
        .handle_fetched(&second, Fetched::Range(Ok(vec![message(limit + 1)])), h.now);
    assert_eq!(delivered_to(&h.actions(), 1), [limit + 1]);
    assert!(fetches(&h.actions()).is_empty());
}

#[test]
fn reconciliation_fetches_what_the_bus_never_brought_after_a_grace_period() {
    let mut h = Harness::new();
    h.subscribed(1, 0);
    h.advance(EngineConfig::default().reconcile_every);
    let check = fetches(&h.actions()).remove(0);
    assert!(matches!(&check, Fetch::LastSeqs { rooms, .. } if rooms == &[ROOM]));
    h.engine
        .handle_fetched(&check, Fetched::LastSeqs(Ok(vec![(ROOM, Seq(3))])), h.now);
    assert_eq!(h.engine.stats().lag, 3);
    // One of them arrives meanwhile; the rest is fetched once the grace is over.
    h.bus(1);
    assert_eq!(delivered_to(&h.actions(), 1), [1]);
    h.advance(Duration::from_millis(300));
    let fill = fetches(&h.actions()).remove(0);
    assert!(matches!(fill, Fetch::Range { after, before: None, .. } if after == Seq(1)));
    h.engine.handle_fetched(
        &fill,
        Fetched::Range(Ok(vec![message(2), message(3)])),
        h.now,
    );
    assert_eq!(delivered_to(&h.actions(), 1), [2, 3]);
    assert_eq!(h.engine.stats().reconciliations_found, 1);
}

#[test]
fn a_resume_replays_first_then_releases_the_live_messages_it_held() {
    let mut h = Harness::new();
    h.subscribed(1, 4);
    h.engine.handle_subscribe(key(2), ROOM, Some(Seq(1)), h.now);
    let room_fetch = fetches(&h.actions()).remove(0);
    h.engine
        .handle_fetched(&room_fetch, Fetched::Room(Ok(Some(room(4)))), h.now);
    let actions = h.actions();
    assert!(matches!(
        &actions[0],
        Action::Subscribed { result: Ok(()), .. }
    ));
    let replay = fetches(&actions).remove(0);
    assert!(
        matches!(&replay, Fetch::Replay { after, until, .. } if (*after, *until) == (Seq(1), Seq(4)))
    );
    h.bus(5);
    let live = h.actions();
    assert_eq!(delivered_to(&live, 1), [5]);
    assert!(delivered_to(&live, 2).is_empty(), "held while replaying");
    h.engine
        .handle_fetched(&replay, Fetched::Replayed(Ok(())), h.now);
    assert_eq!(delivered_to(&h.actions(), 2), [5]);
}

#[test]
fn a_replay_that_stalls_past_the_held_limit_disconnects_its_connection() {
    let mut h = Harness {
        engine: DeliveryEngine::new(EngineConfig {
            held_limit: 3,
            ..EngineConfig::default()
        }),
        now: Instant::now(),
    };
    h.subscribed(1, 2);
    h.engine.handle_subscribe(key(2), ROOM, Some(Seq(0)), h.now);
    let room_fetch = fetches(&h.actions()).remove(0);
    h.engine
        .handle_fetched(&room_fetch, Fetched::Room(Ok(Some(room(2)))), h.now);
    h.actions();
    for seq in 3..=6 {
        h.bus(seq);
    }
    let actions = h.actions();
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Disconnect {
            connection: ConnectionId(2),
            reason: DisconnectReason::SlowConsumer
        }
    )));
    assert_eq!(
        delivered_to(&actions, 1),
        [3, 4, 5, 6],
        "the others are not held up"
    );
}

#[test]
fn a_resume_past_the_rooms_end_is_refused_with_its_last_seq() {
    let mut h = Harness::new();
    h.engine
        .handle_subscribe(key(1), ROOM, Some(Seq(i64::MAX)), h.now);
    let fetch = fetches(&h.actions()).remove(0);
    h.engine
        .handle_fetched(&fetch, Fetched::Room(Ok(Some(room(7)))), h.now);
    assert!(matches!(
        h.actions().as_slice(),
        [Action::Subscribed {
            result: Err(ChatError::InvalidResume {
                last_seq: Seq(7),
                ..
            }),
            ..
        }]
    ));
}

#[test]
fn after_a_disconnect_a_connection_receives_nothing_and_an_empty_room_is_forgotten() {
    let mut h = Harness::new();
    h.subscribed(1, 0);
    h.subscribed(2, 0);
    h.engine.handle_disconnect(ConnectionId(1));
    h.bus(1);
    let actions = h.actions();
    assert!(delivered_to(&actions, 1).is_empty());
    assert_eq!(delivered_to(&actions, 2), [1]);
    h.engine.handle_unsubscribe(&key(2));
    assert_eq!(h.engine.room_count(), 0);
    assert_eq!(h.engine.poll_timeout(), None, "nothing left to wake up for");
}

#[test]
fn a_late_answer_for_a_room_followed_again_is_ignored() {
    let mut h = Harness::new();
    h.subscribed(1, 0);
    h.bus(2);
    h.advance(Duration::from_millis(40));
    let stale = fetches(&h.actions()).remove(0);
    h.engine.handle_unsubscribe(&key(1));
    assert!(matches!(h.actions().as_slice(), [Action::Unwatch(ROOM)]));
    h.subscribed(1, 5);
    h.engine
        .handle_fetched(&stale, Fetched::Range(Ok(vec![message(1)])), h.now);
    assert!(delivered_to(&h.actions(), 1).is_empty());
    h.bus(6);
    assert_eq!(delivered_to(&h.actions(), 1), [6]);
}

#[test]
fn a_forged_seq_the_store_does_not_confirm_is_dropped_and_real_messages_go_on() {
    let mut h = Harness::new();
    h.subscribed(1, 2);
    // A payload nobody stored claims seq 1,000,000 (and one more claims 1,000,001).
    h.bus(1_000_000);
    h.bus(1_000_001);
    h.advance(Duration::from_millis(40));
    let gap = fetches(&h.actions()).remove(0);
    // The store has nothing after 2 below it.
    h.engine
        .handle_fetched(&gap, Fetched::Range(Ok(vec![])), h.now);
    let confirm = fetches(&h.actions()).remove(0);
    let Fetch::Range { after, before, .. } = &confirm else {
        panic!("{confirm:?}")
    };
    assert_eq!(
        (*after, *before),
        (Seq(2), None),
        "a read to the store's end"
    );
    // Meanwhile the real seq 3 is stored and published.
    h.bus(3);
    assert_eq!(delivered_to(&h.actions(), 1), [3]);
    h.engine
        .handle_fetched(&confirm, Fetched::Range(Ok(vec![message(3)])), h.now);
    assert!(h.actions().is_empty());
    assert_eq!(h.engine.stats().unconfirmed_dropped, 2);
    // The forged ones are gone: 4 comes next, not a wait for 999,999 messages.
    h.bus(4);
    assert_eq!(delivered_to(&h.actions(), 1), [4]);
    h.advance(Duration::from_secs(5));
    assert!(
        !fetches(&h.actions())
            .iter()
            .any(|f| matches!(f, Fetch::Range { .. })),
        "no endless fetching for a hole that is not there"
    );
}

#[test]
fn a_message_that_arrives_during_the_confirming_read_is_not_dropped_with_the_forged_ones() {
    let mut h = Harness::new();
    h.subscribed(1, 0);
    h.bus(50);
    h.advance(Duration::from_millis(40));
    let gap = fetches(&h.actions()).remove(0);
    h.engine
        .handle_fetched(&gap, Fetched::Range(Ok(vec![])), h.now);
    let confirm = fetches(&h.actions()).remove(0);
    // 60 arrives after the confirming read began: it may be real, the store may have it.
    h.bus(60);
    h.engine
        .handle_fetched(&confirm, Fetched::Range(Ok(vec![])), h.now);
    assert_eq!(h.engine.stats().unconfirmed_dropped, 1, "only 50");
    h.advance(Duration::from_millis(40));
    assert!(
        fetches(&h.actions())
            .iter()
            .any(|f| matches!(f, Fetch::Range { .. })),
        "60 is judged by a fetch of its own"
    );
}

#[test]
fn a_room_is_watched_on_the_bus_before_its_first_fetch_and_unwatched_when_its_last_subscriber_leaves()
 {
    let mut h = Harness::new();
    h.engine.handle_subscribe(key(1), ROOM, None, h.now);
    let actions = h.actions();
    assert!(
        matches!(
            actions.as_slice(),
            [Action::Watch(ROOM), Action::Fetch(Fetch::Room { .. })]
        ),
        "{actions:?}"
    );
    let Action::Fetch(fetch) = &actions[1] else {
        unreachable!()
    };
    h.engine
        .handle_fetched(fetch, Fetched::Room(Ok(Some(room(0)))), h.now);
    h.actions();
    // A second subscriber shares the watch.
    h.subscribed(2, 0);
    h.engine.handle_unsubscribe(&key(1));
    assert!(h.actions().is_empty());
    h.engine.handle_unsubscribe(&key(2));
    assert!(matches!(h.actions().as_slice(), [Action::Unwatch(ROOM)]));
}

/// A channel per room: between the room's lookup and the moment its channel is in effect,
/// messages are stored that the bus never brings; the room gap fetches them.
#[test]
fn a_room_gap_before_the_room_is_known_fetches_the_rest_once_it_is() {
    let mut h = Harness::new();
    h.engine.handle_subscribe(key(1), ROOM, None, h.now);
    let actions = h.actions();
    let Some(Action::Fetch(lookup)) = actions.get(1) else {
        panic!("{actions:?}")
    };
    h.engine.handle_room_gap(ROOM);
    assert!(
        h.actions().is_empty(),
        "nothing to fetch from before the room is known"
    );
    h.engine
        .handle_fetched(lookup, Fetched::Room(Ok(Some(room(3)))), h.now);
    let actions = h.actions();
    let fetched = fetches(&actions);
    assert!(
        matches!(
            fetched.as_slice(),
            [Fetch::Range {
                after: Seq(3),
                before: None,
                ..
            }]
        ),
        "{actions:?}"
    );
    h.engine.handle_fetched(
        &fetched[0],
        Fetched::Range(Ok(vec![message(4), message(5)])),
        h.now,
    );
    assert_eq!(delivered_to(&h.actions(), 1), [4, 5]);
}

#[test]
fn a_room_gap_of_a_followed_room_catches_it_up_and_other_rooms_are_left_alone() {
    let mut h = Harness::new();
    h.subscribed(1, 2);
    h.engine.handle_room_gap(RoomId(99));
    assert!(h.actions().is_empty());
    h.engine.handle_room_gap(ROOM);
    let fetched = fetches(&h.actions());
    assert!(
        matches!(
            fetched.as_slice(),
            [Fetch::Range {
                after: Seq(2),
                before: None,
                ..
            }]
        ),
        "{fetched:?}"
    );
}
