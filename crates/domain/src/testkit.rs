//! The port contract suite: what every [`MessageRepository`] and [`MessageBus`] must do.
//! Each adapter runs it against the real thing with one line:
//!
//! ```text
//! chat_domain::repository_contract_tests!(async { my_fresh_repository().await });
//! chat_domain::bus_contract_tests!(async { my_fresh_bus().await });
//! ```
//!
//! The expression is evaluated once per test and must yield a value that is
//! `AsRef<dyn MessageRepository>` (or `AsRef<dyn MessageBus>`), such as an `Arc<dyn …>` or a
//! fixture that also owns a per-test database; it is dropped when the test ends. The tests
//! need a tokio dependency in the adapter crate's dev-dependencies.

use std::collections::BTreeSet;

use chrono::Utc;
use futures_util::StreamExt;

use crate::{
    BusEvent, BusEvents, ChatMessagePublish, ChatMessageRequest, ControlEvent, HistoryLimit,
    HistoryQuery, IdempotencyKey, MessageBus, MessageId, MessageRepository, MessageType,
    NewChatMessage, NewRoom, ReadCursors, RepositoryError, RoomId, RoomListLimit, RoomListQuery,
    RoomMembers, RoomName, SenderId, Seq, Visibility,
};

#[doc(hidden)]
pub mod __private {
    pub use tokio;
}

/// How long one contract test may take before it counts as hung.
pub const TEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn new_message(room: RoomId, content: &str) -> NewChatMessage {
    NewChatMessage::try_from(ChatMessageRequest {
        chat_room_id: Some(room),
        sender_id: Some(SenderId(7)),
        sender_nickname: Some("contract".into()),
        content: Some(content.into()),
        message_type: Some(MessageType::Text),
    })
    .expect("the contract's own messages are valid")
}

async fn room(repo: &dyn MessageRepository, name: &str) -> RoomId {
    repo.create_room(NewRoom::public(RoomName::parse(name).expect("valid name")))
        .await
        .expect("create_room")
        .id
}

fn limit(n: i64) -> HistoryLimit {
    HistoryLimit::parse(n).expect("valid limit")
}

/// Checks for [`MessageRepository`] implementations.
pub mod repository {
    use super::*;

    /// A new room is public, has no owner and `last_seq` 0; `find_room` returns it as
    /// created, and `list_rooms` lists it first after `after`, in ascending id order.
    pub async fn a_created_room_is_found_and_listed(repo: &dyn MessageRepository) {
        let created = repo
            .create_room(NewRoom::public(RoomName::parse("lobby").unwrap()))
            .await
            .unwrap();
        assert_eq!(created.name, "lobby");
        assert_eq!(created.last_seq, Seq(0));
        assert_eq!(created.visibility, Visibility::Public);
        assert_eq!(created.owner, None);
        let found = repo.find_room(created.id).await.unwrap();
        assert_eq!(found.as_ref(), Some(&created));
        let _second = room(repo, "second").await;
        let listed = repo
            .list_rooms(RoomListQuery {
                after: Some(RoomId(created.id.0 - 1)),
                ..RoomListQuery::all(RoomListLimit::MAX_PAGE)
            })
            .await
            .unwrap();
        assert_eq!(
            listed.first(),
            Some(&created),
            "the page starts after `after`"
        );
        assert!(listed.len() >= 2, "{listed:?}");
        assert!(listed.contains(&created), "{listed:?} lacks {created:?}");
        let ids: Vec<_> = listed.iter().map(|r| r.id).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted, "rooms are listed by ascending id");
    }

    /// `find_room` of an id never created is `Ok(None)`, not an error.
    pub async fn a_missing_room_is_none(repo: &dyn MessageRepository) {
        assert_eq!(repo.find_room(RoomId(i64::MAX - 1)).await.unwrap(), None);
    }

    /// `append` to a room that does not exist fails with [`RepositoryError::UnknownRoom`],
    /// and so does that room's `history`.
    pub async fn appending_to_an_unknown_room_fails_and_stores_nothing(
        repo: &dyn MessageRepository,
    ) {
        let missing = RoomId(i64::MAX - 2);
        let err = repo.append(new_message(missing, "lost")).await.unwrap_err();
        assert_eq!(err, RepositoryError::UnknownRoom(missing));
        assert_eq!(
            repo.history(missing, HistoryQuery::latest(limit(10)))
                .await
                .unwrap_err(),
            RepositoryError::UnknownRoom(missing)
        );
    }

    /// Interleaved appends to two rooms number each room 1, 2, 3, … on its own, give ids
    /// unique across rooms, and move each room's `last_seq`.
    pub async fn each_room_numbers_its_messages_from_one_without_holes(
        repo: &dyn MessageRepository,
    ) {
        let a = room(repo, "a").await;
        let b = room(repo, "b").await;
        let mut ids = BTreeSet::new();
        for (i, target) in [a, b, a, a, b].into_iter().enumerate() {
            let m = repo
                .append(new_message(target, &format!("m{i}")))
                .await
                .unwrap();
            assert!(ids.insert(m.id), "message ids are unique");
        }
        let seqs = |room| async move {
            repo.history(room, HistoryQuery::latest(limit(50)))
                .await
                .unwrap()
                .iter()
                .map(|m| m.seq.0)
                .collect::<Vec<_>>()
        };
        assert_eq!(seqs(a).await, vec![1, 2, 3]);
        assert_eq!(seqs(b).await, vec![1, 2]);
        assert_eq!(repo.find_room(a).await.unwrap().unwrap().last_seq, Seq(3));
        assert_eq!(repo.find_room(b).await.unwrap().unwrap().last_seq, Seq(2));
    }

    /// A message comes back from `append` and from `history` with every field as sent
    /// (a negative sender id, non-ASCII text, quotes, backslashes and new lines) and a
    /// `created_at` within seconds of now.
    pub async fn a_stored_message_keeps_every_field(repo: &dyn MessageRepository) {
        let r = room(repo, "fields").await;
        let before = Utc::now() - chrono::Duration::seconds(5);
        let request = ChatMessageRequest {
            chat_room_id: Some(r),
            sender_id: Some(SenderId(-42)),
            sender_nickname: Some("Zoë 🚀".into()),
            content: Some("multi\nline \"quoted\" \\ ✓".into()),
            message_type: Some(MessageType::Image),
        };
        let stored = repo
            .append(NewChatMessage::try_from(request).unwrap())
            .await
            .unwrap();
        assert_eq!(stored.room_id, r);
        assert_eq!(stored.seq, Seq(1));
        assert_eq!(stored.sender_id, SenderId(-42));
        assert_eq!(stored.sender_nickname, "Zoë 🚀");
        assert_eq!(stored.content, "multi\nline \"quoted\" \\ ✓");
        assert_eq!(stored.message_type, MessageType::Image);
        assert!(
            stored.created_at > before
                && stored.created_at < Utc::now() + chrono::Duration::seconds(5)
        );
        let read = repo
            .history(r, HistoryQuery::latest(limit(1)))
            .await
            .unwrap();
        assert_eq!(read, vec![stored]);
    }

    /// 8 concurrent writers of 50 messages each to one room get seqs 1 to 400, each once.
    pub async fn concurrent_appends_leave_no_hole_and_no_duplicate(repo: &dyn MessageRepository) {
        const WRITERS: usize = 8;
        const EACH: usize = 50;
        let r = room(repo, "busy").await;
        let writers = (0..WRITERS).map(|w| async move {
            let mut seqs = Vec::with_capacity(EACH);
            for i in 0..EACH {
                let m = repo
                    .append(new_message(r, &format!("{w}-{i}")))
                    .await
                    .unwrap();
                seqs.push(m.seq.0);
            }
            seqs
        });
        let mut all: Vec<i64> = futures_util::future::join_all(writers)
            .await
            .into_iter()
            .flatten()
            .collect();
        all.sort_unstable();
        let expected: Vec<i64> = (1..=(WRITERS * EACH) as i64).collect();
        assert_eq!(all, expected);
        assert_eq!(
            repo.find_room(r).await.unwrap().unwrap().last_seq,
            Seq((WRITERS * EACH) as i64)
        );
    }

    /// [`HistoryQuery`] pages: the newest page, after a seq, before a seq and between
    /// two, each in ascending seq order; an empty room has an empty history.
    pub async fn history_pages_by_seq_in_ascending_order(repo: &dyn MessageRepository) {
        let r = room(repo, "history").await;
        for i in 1..=10 {
            repo.append(new_message(r, &format!("m{i}"))).await.unwrap();
        }
        let seqs = |query| async move {
            repo.history(r, query)
                .await
                .unwrap()
                .iter()
                .map(|m| m.seq.0)
                .collect::<Vec<_>>()
        };
        assert_eq!(seqs(HistoryQuery::latest(limit(3))).await, vec![8, 9, 10]);
        assert_eq!(
            seqs(HistoryQuery::after(Seq(0), limit(3))).await,
            vec![1, 2, 3]
        );
        assert_eq!(
            seqs(HistoryQuery::after(Seq(8), limit(5))).await,
            vec![9, 10]
        );
        assert_eq!(
            seqs(HistoryQuery::after(Seq(10), limit(5))).await,
            Vec::<i64>::new()
        );
        let before = |b, n| HistoryQuery {
            after: None,
            before: Some(Seq(b)),
            limit: limit(n),
        };
        assert_eq!(seqs(before(5, 2)).await, vec![3, 4]);
        assert_eq!(seqs(before(1, 2)).await, Vec::<i64>::new());
        let between = HistoryQuery {
            after: Some(Seq(2)),
            before: Some(Seq(6)),
            limit: limit(50),
        };
        assert_eq!(seqs(between).await, vec![3, 4, 5]);
        let empty = room(repo, "empty").await;
        assert!(
            repo.history(empty, HistoryQuery::latest(limit(10)))
                .await
                .unwrap()
                .is_empty()
        );
    }

    /// `check_health` succeeds on the store the tests use.
    pub async fn a_reachable_store_is_healthy(repo: &dyn MessageRepository) {
        repo.check_health().await.unwrap();
    }

    /// A second `append` with the same (room, sender, key) returns the first message and
    /// stores nothing, even with other content; in another room, from another sender or
    /// without a key, a new message is stored.
    pub async fn a_repeated_idempotency_key_returns_the_first_message(
        repo: &dyn MessageRepository,
    ) {
        let other_room = room(repo, "idempotent-2").await;
        let room = room(repo, "idempotent").await;
        let key = || Some(IdempotencyKey::parse("retry-1").expect("valid key"));
        let first = repo
            .append(new_message(room, "once").with_idempotency_key(key()))
            .await
            .unwrap();
        // A retry, even with other content, is the same send: nothing new is stored.
        let again = repo
            .append(new_message(room, "twice").with_idempotency_key(key()))
            .await
            .unwrap();
        assert_eq!(
            (again.id, again.seq, again.content.as_str()),
            (first.id, first.seq, "once")
        );
        // The key is per room and per sender: elsewhere it is a new message.
        let elsewhere = repo
            .append(new_message(other_room, "other room").with_idempotency_key(key()))
            .await
            .unwrap();
        assert_eq!(elsewhere.seq, Seq(1));
        let mut other_sender = new_message(room, "other sender").with_idempotency_key(key());
        other_sender.sender_id = SenderId(8);
        let other_sender = repo.append(other_sender).await.unwrap();
        assert_eq!(other_sender.seq, Seq(2));
        let unkeyed = repo.append(new_message(room, "no key")).await.unwrap();
        assert_eq!(unkeyed.seq, Seq(3));
        let all = repo
            .history(
                room,
                HistoryQuery {
                    after: Some(Seq(0)),
                    before: None,
                    limit: limit(10),
                },
            )
            .await
            .unwrap();
        assert_eq!(all.len(), 3);
    }

    /// 8 concurrent appends with one idempotency key all answer with the same stored
    /// message, and the room's `last_seq` is 1.
    pub async fn concurrent_retries_with_one_key_store_one_message(repo: &dyn MessageRepository) {
        let room = room(repo, "idempotent-race").await;
        let sends = (0..8).map(|i| {
            repo.append(
                new_message(room, &format!("attempt {i}"))
                    .with_idempotency_key(Some(IdempotencyKey::parse("race").expect("valid"))),
            )
        });
        let results = futures_util::future::join_all(sends).await;
        let stored: BTreeSet<(i64, i64)> = results
            .into_iter()
            .map(|r| {
                let m = r.unwrap();
                (m.id.0, m.seq.0)
            })
            .collect();
        assert_eq!(
            stored.len(),
            1,
            "every attempt answers with the one stored message"
        );
        let last = repo.find_room(room).await.unwrap().unwrap().last_seq;
        assert_eq!(last, Seq(1));
    }

    /// `last_seqs` gives each existing room's newest seq (0 for an empty room), leaves out
    /// rooms that do not exist, and is empty when asked about no room.
    pub async fn last_seqs_reports_each_existing_room_in_one_call(repo: &dyn MessageRepository) {
        let quiet = room(repo, "quiet").await;
        let busy = room(repo, "busy").await;
        for i in 0..3 {
            repo.append(new_message(busy, &format!("m{i}")))
                .await
                .unwrap();
        }
        let missing = RoomId(i64::MAX);
        let mut seqs = repo.last_seqs(&[busy, quiet, missing]).await.unwrap();
        seqs.sort();
        let mut expected = vec![(quiet, Seq(0)), (busy, Seq(3))];
        expected.sort();
        assert_eq!(seqs, expected);
        assert!(repo.last_seqs(&[]).await.unwrap().is_empty());
    }
}

/// Checks for [`MessageBus`] implementations.
pub mod bus {
    use super::*;

    fn publish(room: i64, seq: i64) -> ChatMessagePublish {
        ChatMessagePublish {
            chat_room_id: RoomId(room),
            message_id: MessageId(room * 1000 + seq),
            sender_id: SenderId(1),
            sender_nickname: "contract".into(),
            content: format!("message {seq} of room {room}"),
            message_type: MessageType::Text,
            created_at: Utc::now(),
            seq: Some(Seq(seq)),
        }
    }

    /// The next message that is not a probe of [`watching`].
    async fn next_message(events: &mut BusEvents) -> ChatMessagePublish {
        loop {
            match events.next().await.expect("the subscription ended") {
                BusEvent::Message(m) if m.content != PROBE => return m,
                _ => {}
            }
        }
    }

    const PROBE: &str = "contract probe";

    /// Watches `rooms` and waits until every one of `subscriptions` receives them: a bus
    /// with a channel per room subscribes in the background, so a probe is published into
    /// each room until it comes back on every subscription. A bus with one channel passes
    /// at the first probe.
    async fn watching(bus: &dyn MessageBus, subscriptions: &mut [&mut BusEvents], rooms: &[i64]) {
        for &room in rooms {
            bus.watch_room(RoomId(room));
        }
        for &room in rooms {
            let mut probe = publish(room, 999_999);
            probe.content = PROBE.to_owned();
            let mut arrived = vec![false; subscriptions.len()];
            while arrived.iter().any(|a| !a) {
                bus.publish(&probe).await.unwrap();
                for (events, arrived) in subscriptions.iter_mut().zip(arrived.iter_mut()) {
                    let wait = std::time::Duration::from_millis(200);
                    while !*arrived {
                        match crate::testkit::__private::tokio::time::timeout(wait, events.next())
                            .await
                        {
                            Ok(Some(BusEvent::Message(m)))
                                if m.content == PROBE && m.chat_room_id == RoomId(room) =>
                            {
                                *arrived = true;
                            }
                            Ok(Some(_)) => {}
                            Ok(None) => panic!("the subscription ended"),
                            Err(_) => break,
                        }
                    }
                }
            }
        }
    }

    /// Messages equal up to the timestamp precision a bus may round to (milliseconds on
    /// the wire).
    fn same(a: &ChatMessagePublish, b: &ChatMessagePublish) -> bool {
        let mut a = a.clone();
        let mut b = b.clone();
        a.created_at = a.created_at.trunc_subsecs_millis();
        b.created_at = b.created_at.trunc_subsecs_millis();
        a == b
    }

    trait TruncMillis {
        fn trunc_subsecs_millis(self) -> Self;
    }
    impl TruncMillis for chrono::DateTime<Utc> {
        fn trunc_subsecs_millis(self) -> Self {
            chrono::SubsecRound::trunc_subsecs(self, 3)
        }
    }

    /// 20 messages published one after another into one room reach a subscriber in that
    /// order.
    pub async fn a_subscriber_receives_what_is_published_in_order(bus: &dyn MessageBus) {
        let mut events = bus.subscribe().await.unwrap();
        watching(bus, &mut [&mut events], &[1]).await;
        let sent: Vec<_> = (1..=20).map(|seq| publish(1, seq)).collect();
        for m in &sent {
            bus.publish(m).await.unwrap();
        }
        for expected in &sent {
            let got = next_message(&mut events).await;
            assert!(same(&got, expected), "got {got:?}, expected {expected:?}");
        }
    }

    /// Two subscriptions each receive every message of two rooms, in publish order.
    pub async fn every_subscriber_receives_every_message(bus: &dyn MessageBus) {
        let mut first = bus.subscribe().await.unwrap();
        let mut second = bus.subscribe().await.unwrap();
        watching(bus, &mut [&mut first, &mut second], &[2, 3]).await;
        let sent = [publish(2, 1), publish(3, 1), publish(2, 2)];
        for m in &sent {
            bus.publish(m).await.unwrap();
        }
        for events in [&mut first, &mut second] {
            for expected in &sent {
                let got = next_message(events).await;
                assert!(same(&got, expected), "got {got:?}, expected {expected:?}");
            }
        }
    }

    /// `publish` with no subscription open is `Ok`.
    pub async fn publishing_with_nobody_listening_succeeds(bus: &dyn MessageBus) {
        bus.publish(&publish(4, 1)).await.unwrap();
    }

    /// Dropping one subscription does not stop another from receiving.
    pub async fn a_dropped_subscription_does_not_disturb_the_others(bus: &dyn MessageBus) {
        let mut kept = bus.subscribe().await.unwrap();
        let dropped = bus.subscribe().await.unwrap();
        watching(bus, &mut [&mut kept], &[5]).await;
        drop(dropped);
        let sent = publish(5, 1);
        bus.publish(&sent).await.unwrap();
        let got = next_message(&mut kept).await;
        assert!(same(&got, &sent), "got {got:?}");
    }

    /// 200 concurrent publishes all succeed, and each message arrives once (in any order).
    pub async fn concurrent_publishes_all_arrive(bus: &dyn MessageBus) {
        let mut events = bus.subscribe().await.unwrap();
        watching(bus, &mut [&mut events], &[6]).await;
        let sent: Vec<_> = (1..=200).map(|seq| publish(6, seq)).collect();
        let results = futures_util::future::join_all(sent.iter().map(|m| bus.publish(m))).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let mut seen = BTreeSet::new();
        while seen.len() < sent.len() {
            let got = next_message(&mut events).await;
            assert!(seen.insert(got.seq.unwrap().0), "duplicate {got:?}");
        }
    }

    /// `check_health` succeeds while a subscription is open.
    pub async fn a_working_bus_is_healthy(bus: &dyn MessageBus) {
        let _subscription = bus.subscribe().await.unwrap();
        bus.check_health().await.unwrap();
    }
}

/// Checks for [`RoomMembers`] implementations, with the [`MessageRepository`] of the same
/// store (the room list filters by membership).
pub mod membership {
    use super::*;

    async fn private_room(repo: &dyn MessageRepository, owner: i64) -> RoomId {
        repo.create_room(NewRoom {
            name: RoomName::parse("private").unwrap(),
            visibility: Visibility::Private,
            owner: Some(SenderId(owner)),
        })
        .await
        .expect("create_room")
        .id
    }

    /// A private room comes back from `find_room` private and with its owner.
    pub async fn a_private_room_keeps_its_visibility_and_owner(
        repo: &dyn MessageRepository,
        _members: &dyn RoomMembers,
    ) {
        let id = private_room(repo, 41).await;
        let found = repo.find_room(id).await.unwrap().unwrap();
        assert_eq!(found.visibility, Visibility::Private);
        assert_eq!(found.owner, Some(SenderId(41)));
    }

    /// `add_member` and `remove_member` answer `true` only when they change something,
    /// `is_member` follows, and a membership is of one room only.
    pub async fn members_are_added_once_and_removed_once(
        repo: &dyn MessageRepository,
        members: &dyn RoomMembers,
    ) {
        let id = private_room(repo, 1).await;
        let other = private_room(repo, 1).await;
        let user = SenderId(77);
        assert!(!members.is_member(id, user).await.unwrap());
        assert!(members.add_member(id, user).await.unwrap(), "added");
        assert!(
            !members.add_member(id, user).await.unwrap(),
            "already a member"
        );
        assert!(members.is_member(id, user).await.unwrap());
        assert!(
            !members.is_member(other, user).await.unwrap(),
            "only that room"
        );
        assert!(members.remove_member(id, user).await.unwrap(), "removed");
        assert!(
            !members.remove_member(id, user).await.unwrap(),
            "not a member any more"
        );
        assert!(!members.is_member(id, user).await.unwrap());
    }

    /// `add_member` to a room that does not exist fails with
    /// [`RepositoryError::UnknownRoom`]; `is_member` there is `false`.
    pub async fn a_member_of_an_unknown_room_cannot_be_added(
        _repo: &dyn MessageRepository,
        members: &dyn RoomMembers,
    ) {
        let missing = RoomId(i64::MAX - 2);
        assert_eq!(
            members.add_member(missing, SenderId(1)).await,
            Err(RepositoryError::UnknownRoom(missing))
        );
        assert!(!members.is_member(missing, SenderId(1)).await.unwrap());
    }

    /// With `visible_to`, `list_rooms` pages through exactly the public rooms, the user's
    /// own and those they are a member of, by ascending id; without it, through every room.
    /// A removed membership takes its room off the user's list.
    pub async fn the_room_list_shows_a_user_what_they_may_read_page_by_page(
        repo: &dyn MessageRepository,
        members: &dyn RoomMembers,
    ) {
        let user = SenderId(500);
        let start = room(repo, "public before").await;
        let hidden = private_room(repo, 1).await;
        let owned = private_room(repo, user.0).await;
        let joined = private_room(repo, 1).await;
        members.add_member(joined, user).await.unwrap();
        let public = room(repo, "public after").await;
        let after_start = Some(RoomId(start.0 - 1));
        let visible = |after: Option<RoomId>, limit: i64| RoomListQuery {
            after,
            limit: RoomListLimit::parse(limit).unwrap(),
            visible_to: Some(user),
        };
        let ids = |rooms: Vec<crate::Room>| rooms.into_iter().map(|r| r.id).collect::<Vec<_>>();
        let page = ids(repo.list_rooms(visible(after_start, 200)).await.unwrap());
        let mine: Vec<_> = page.into_iter().filter(|id| *id <= public).collect();
        assert_eq!(
            mine,
            vec![start, owned, joined, public],
            "{hidden} is not theirs"
        );
        let first = ids(repo.list_rooms(visible(after_start, 2)).await.unwrap());
        assert_eq!(first, vec![start, owned]);
        let next = ids(repo.list_rooms(visible(Some(owned), 2)).await.unwrap());
        assert_eq!(next, vec![joined, public]);
        let all = ids(repo
            .list_rooms(RoomListQuery {
                visible_to: None,
                ..visible(after_start, 200)
            })
            .await
            .unwrap());
        assert!(
            all.contains(&hidden),
            "without a viewer every room is listed"
        );
        members.remove_member(joined, user).await.unwrap();
        let after_removal = ids(repo.list_rooms(visible(Some(owned), 2)).await.unwrap());
        assert_eq!(after_removal.first(), Some(&public));
    }
}

/// Checks for [`ReadCursors`] implementations, which share their store with a
/// [`MessageRepository`] (rooms' `last_seq`) and [`RoomMembers`] (private rooms).
pub mod read_cursors {
    use super::*;
    use crate::MarkedRead;

    async fn messages(repo: &dyn MessageRepository, room: RoomId, count: usize) {
        for n in 0..count {
            repo.append(new_message(room, &format!("m{n}")))
                .await
                .expect("append");
        }
    }

    fn page(after: Option<RoomId>, limit: i64) -> RoomListQuery {
        RoomListQuery {
            after,
            limit: RoomListLimit::parse(limit).unwrap(),
            visible_to: None,
        }
    }

    async fn unread_of(cursors: &dyn ReadCursors, user: SenderId, room: RoomId) -> (Seq, i64) {
        let rooms = cursors
            .my_rooms(user, page(Some(RoomId(room.0 - 1)), 1))
            .await
            .expect("my_rooms");
        let mine = rooms
            .into_iter()
            .find(|r| r.room.id == room)
            .expect("the room is on the user's list");
        (mine.last_read_seq, mine.unread)
    }

    /// A cursor moves forward and reports `moved`; a lower or equal seq leaves it where it
    /// is and reports `moved: false`.
    pub async fn a_cursor_never_moves_backwards(
        repo: &dyn MessageRepository,
        _members: &dyn RoomMembers,
        cursors: &dyn ReadCursors,
    ) {
        let id = room(repo, "cursor forward").await;
        messages(repo, id, 10).await;
        let user = SenderId(900);
        let marked = |seq, moved| MarkedRead {
            last_read_seq: Seq(seq),
            moved,
        };
        assert_eq!(
            cursors.mark_read(id, user, Seq(4)).await,
            Ok(marked(4, true))
        );
        assert_eq!(
            cursors.mark_read(id, user, Seq(7)).await,
            Ok(marked(7, true))
        );
        assert_eq!(
            cursors.mark_read(id, user, Seq(3)).await,
            Ok(marked(7, false))
        );
        assert_eq!(
            cursors.mark_read(id, user, Seq(7)).await,
            Ok(marked(7, false))
        );
        assert_eq!(unread_of(cursors, user, id).await, (Seq(7), 3));
    }

    /// A seq above the room's `last_seq` is stored as `last_seq`: the cursor never claims
    /// messages that do not exist, and unread is never negative.
    pub async fn a_cursor_is_clamped_to_the_rooms_last_seq(
        repo: &dyn MessageRepository,
        _members: &dyn RoomMembers,
        cursors: &dyn ReadCursors,
    ) {
        let id = room(repo, "cursor clamp").await;
        messages(repo, id, 3).await;
        let user = SenderId(901);
        let marked = cursors.mark_read(id, user, Seq(1_000)).await.unwrap();
        assert_eq!(marked.last_read_seq, Seq(3));
        assert!(marked.moved);
        assert_eq!(unread_of(cursors, user, id).await, (Seq(3), 0));
        messages(repo, id, 2).await;
        assert_eq!(unread_of(cursors, user, id).await, (Seq(3), 2));
        let empty = room(repo, "cursor clamp empty").await;
        let marked = cursors.mark_read(empty, user, Seq(5)).await.unwrap();
        assert_eq!(marked.last_read_seq, Seq(0), "an empty room clamps to 0");
        assert!(!marked.moved);
        assert_eq!(unread_of(cursors, user, empty).await, (Seq(0), 0));
    }

    /// Unread is exactly `last_seq − last_read_seq`: after N messages, after a cursor move,
    /// after more messages.
    pub async fn unread_counts_are_exact(
        repo: &dyn MessageRepository,
        _members: &dyn RoomMembers,
        cursors: &dyn ReadCursors,
    ) {
        let id = room(repo, "cursor unread").await;
        let user = SenderId(902);
        cursors.mark_read(id, user, Seq(0)).await.unwrap();
        assert_eq!(unread_of(cursors, user, id).await, (Seq(0), 0));
        messages(repo, id, 25).await;
        assert_eq!(unread_of(cursors, user, id).await, (Seq(0), 25));
        cursors.mark_read(id, user, Seq(20)).await.unwrap();
        assert_eq!(unread_of(cursors, user, id).await, (Seq(20), 5));
        messages(repo, id, 4).await;
        assert_eq!(unread_of(cursors, user, id).await, (Seq(20), 9));
        cursors.mark_read(id, user, Seq(29)).await.unwrap();
        assert_eq!(unread_of(cursors, user, id).await, (Seq(29), 0));
        let other = SenderId(903);
        cursors.mark_read(id, other, Seq(1)).await.unwrap();
        assert_eq!(
            unread_of(cursors, other, id).await,
            (Seq(1), 28),
            "each user has their own cursor"
        );
    }

    /// A cursor in a room that does not exist is [`RepositoryError::UnknownRoom`].
    pub async fn a_cursor_in_an_unknown_room_is_refused(
        _repo: &dyn MessageRepository,
        _members: &dyn RoomMembers,
        cursors: &dyn ReadCursors,
    ) {
        let missing = RoomId(i64::MAX - 3);
        assert_eq!(
            cursors.mark_read(missing, SenderId(1), Seq(1)).await,
            Err(RepositoryError::UnknownRoom(missing))
        );
    }

    /// 50 concurrent moves of one user's cursor to different seqs end at the largest, and
    /// every answer is at or below it; moves of other rooms in the same burst are kept
    /// apart, and an unknown room in the burst fails alone.
    pub async fn concurrent_moves_end_at_the_largest_seq(
        repo: &dyn MessageRepository,
        _members: &dyn RoomMembers,
        cursors: &dyn ReadCursors,
    ) {
        let id = room(repo, "cursor race").await;
        let second = room(repo, "cursor race 2").await;
        messages(repo, id, 60).await;
        messages(repo, second, 5).await;
        let user = SenderId(904);
        // 50 seqs in a scrambled order: 1, 8, 15, … mod 50, plus one.
        let seqs: Vec<i64> = (0..50).map(|n| (n * 7) % 50 + 1).collect();
        let moves = seqs
            .iter()
            .map(|&seq| cursors.mark_read(id, user, Seq(seq)));
        let missing = RoomId(i64::MAX - 4);
        let (answers, other, unknown) = futures_util::future::join3(
            futures_util::future::join_all(moves),
            cursors.mark_read(second, user, Seq(2)),
            cursors.mark_read(missing, user, Seq(2)),
        )
        .await;
        for answer in &answers {
            let answer = answer.as_ref().expect("mark_read");
            assert!(answer.last_read_seq <= Seq(50));
        }
        assert!(answers.iter().any(|a| a.as_ref().unwrap().moved));
        assert_eq!(other.unwrap().last_read_seq, Seq(2));
        assert_eq!(unknown, Err(RepositoryError::UnknownRoom(missing)));
        assert_eq!(unread_of(cursors, user, id).await, (Seq(50), 10));
        assert_eq!(unread_of(cursors, user, second).await, (Seq(2), 3));
    }

    /// `my_rooms` lists the rooms a user has a cursor in, is a member of, or owns, by
    /// ascending id and page by page; not other rooms, and not a private room they were
    /// removed from (even with a cursor there).
    pub async fn my_rooms_lists_cursors_memberships_and_owned_rooms_page_by_page(
        repo: &dyn MessageRepository,
        members: &dyn RoomMembers,
        cursors: &dyn ReadCursors,
    ) {
        let user = SenderId(905);
        let private = |owner: i64| NewRoom {
            name: RoomName::parse("private").unwrap(),
            visibility: Visibility::Private,
            owner: Some(SenderId(owner)),
        };
        let unrelated = room(repo, "not theirs").await;
        let read = room(repo, "read").await;
        let owned = repo.create_room(private(user.0)).await.unwrap().id;
        let joined = repo.create_room(private(1)).await.unwrap().id;
        let left = repo.create_room(private(1)).await.unwrap().id;
        let hidden = repo.create_room(private(1)).await.unwrap().id;
        messages(repo, read, 3).await;
        messages(repo, joined, 2).await;
        cursors.mark_read(read, user, Seq(1)).await.unwrap();
        members.add_member(joined, user).await.unwrap();
        members.add_member(left, user).await.unwrap();
        cursors.mark_read(left, user, Seq(0)).await.unwrap();
        members.remove_member(left, user).await.unwrap();
        let before = Some(RoomId(unrelated.0 - 1));
        let ids =
            |rooms: Vec<crate::MyRoom>| rooms.into_iter().map(|r| r.room.id).collect::<Vec<_>>();
        let all = cursors.my_rooms(user, page(before, 200)).await.unwrap();
        let by_id: Vec<(RoomId, Seq, i64)> = all
            .iter()
            .map(|r| (r.room.id, r.last_read_seq, r.unread))
            .collect();
        assert_eq!(
            by_id,
            vec![(read, Seq(1), 2), (owned, Seq(0), 0), (joined, Seq(0), 2)],
            "{unrelated}, {left} and {hidden} are not on the list"
        );
        assert_eq!(all[2].room.last_seq, Seq(2));
        assert_eq!(all[1].room.owner, Some(user));
        assert_eq!(
            ids(cursors.my_rooms(user, page(before, 2)).await.unwrap()),
            vec![read, owned]
        );
        assert_eq!(
            ids(cursors.my_rooms(user, page(Some(owned), 2)).await.unwrap()),
            vec![joined]
        );
        assert!(
            cursors
                .my_rooms(user, page(Some(joined), 2))
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            cursors
                .my_rooms(SenderId(906), page(before, 200))
                .await
                .unwrap()
                .is_empty(),
            "a user with nothing has no rooms"
        );
    }
}

/// Checks that a [`MessageBus`] carries control events beside messages.
pub mod control {
    use super::*;

    /// A published [`ControlEvent`] reaches every subscription as [`BusEvent::Control`],
    /// with no message before it.
    pub async fn a_control_event_reaches_every_subscriber(bus: &dyn MessageBus) {
        let mut first = bus.subscribe().await.unwrap();
        let mut second = bus.subscribe().await.unwrap();
        let event = ControlEvent::MemberRemoved {
            chat_room_id: RoomId(5),
            user_id: SenderId(6),
        };
        bus.publish_control(&event).await.unwrap();
        for events in [&mut first, &mut second] {
            loop {
                match events.next().await.expect("the subscription ended") {
                    BusEvent::Control(got) => {
                        assert_eq!(got, event);
                        break;
                    }
                    BusEvent::MayHaveMissedMessages | BusEvent::MayHaveMissedRoom(_) => {}
                    BusEvent::Message(message) => panic!("a message arrived: {message:?}"),
                }
            }
        }
    }

    /// Every kind of control event (read cursors, typing, each presence signal, and a
    /// presence state part as large as one can be) arrives intact, in the order one
    /// publisher sent them: presence relies on that order.
    pub async fn every_kind_of_control_event_arrives_whole_and_in_order(bus: &dyn MessageBus) {
        use crate::{InstanceId, PresenceEntry, PresenceSignal, Seq};
        let mut events = bus.subscribe().await.unwrap();
        let longest = "ñ".repeat(crate::SenderNickname::MAX_CHARS);
        let entry = |user: i64| PresenceEntry {
            chat_room_id: RoomId(1),
            user_id: SenderId(user),
            nickname: longest.clone(),
            connections: 3,
        };
        let sent = vec![
            ControlEvent::ReadCursor {
                chat_room_id: RoomId(1),
                user_id: SenderId(2),
                last_read_seq: Seq(40),
            },
            ControlEvent::Typing {
                chat_room_id: RoomId(1),
                user_id: SenderId(2),
                nickname: longest.clone(),
            },
            ControlEvent::Presence(PresenceSignal::PresenceResync {
                from: InstanceId(u64::MAX),
                target: None,
            }),
            ControlEvent::Presence(PresenceSignal::PresenceState {
                instance: InstanceId(u64::MAX),
                version: 9,
                part: 0,
                parts: 1,
                entries: (0..i64::try_from(PresenceSignal::MAX_ENTRIES_PER_PART).unwrap())
                    .map(|user| entry(i64::MAX - user))
                    .collect(),
            }),
            ControlEvent::Presence(PresenceSignal::PresenceChange {
                instance: InstanceId(u64::MAX),
                version: 10,
                entry: entry(5),
            }),
            ControlEvent::Presence(PresenceSignal::PresenceAlive {
                instance: InstanceId(u64::MAX),
                version: 10,
            }),
        ];
        for event in &sent {
            bus.publish_control(event).await.unwrap();
        }
        let mut got = Vec::new();
        while got.len() < sent.len() {
            match events.next().await.expect("the subscription ended") {
                BusEvent::Control(event) => got.push(event),
                BusEvent::MayHaveMissedMessages | BusEvent::MayHaveMissedRoom(_) => {}
                BusEvent::Message(message) => panic!("a message arrived: {message:?}"),
            }
        }
        assert_eq!(got, sent);
    }
}

/// Generates one `#[tokio::test]` per membership contract check; the fixture must be
/// `AsRef<dyn MessageRepository>` and `AsRef<dyn RoomMembers>` of one store.
#[macro_export]
macro_rules! membership_contract_tests {
    ($make:expr) => {
        mod membership {
            #[allow(unused_imports)]
            use super::*;
            $crate::__membership_tests!(
                $make,
                a_private_room_keeps_its_visibility_and_owner,
                members_are_added_once_and_removed_once,
                a_member_of_an_unknown_room_cannot_be_added,
                the_room_list_shows_a_user_what_they_may_read_page_by_page,
            );
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __membership_tests {
    ($make:expr, $($check:ident),+ $(,)?) => {
        $(
            #[$crate::testkit::__private::tokio::test(
                flavor = "multi_thread",
                worker_threads = 2,
                crate = "chat_domain::testkit::__private::tokio"
            )]
            async fn $check() {
                let fixture = $make.await;
                let repo: &dyn $crate::MessageRepository = ::core::convert::AsRef::as_ref(&fixture);
                let members: &dyn $crate::RoomMembers = ::core::convert::AsRef::as_ref(&fixture);
                $crate::testkit::__private::tokio::time::timeout(
                    $crate::testkit::TEST_TIMEOUT,
                    $crate::testkit::membership::$check(repo, members),
                )
                .await
                .expect(concat!(stringify!($check), " hung"));
            }
        )+
    };
}

/// Generates one `#[tokio::test]` per read-cursor contract check; the fixture must be
/// `AsRef<dyn MessageRepository>`, `AsRef<dyn RoomMembers>` and `AsRef<dyn ReadCursors>`
/// of one store.
#[macro_export]
macro_rules! read_cursor_contract_tests {
    ($make:expr) => {
        mod read_cursors {
            #[allow(unused_imports)]
            use super::*;
            $crate::__read_cursor_tests!(
                $make,
                a_cursor_never_moves_backwards,
                a_cursor_is_clamped_to_the_rooms_last_seq,
                unread_counts_are_exact,
                a_cursor_in_an_unknown_room_is_refused,
                concurrent_moves_end_at_the_largest_seq,
                my_rooms_lists_cursors_memberships_and_owned_rooms_page_by_page,
            );
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __read_cursor_tests {
    ($make:expr, $($check:ident),+ $(,)?) => {
        $(
            #[$crate::testkit::__private::tokio::test(
                flavor = "multi_thread",
                worker_threads = 2,
                crate = "chat_domain::testkit::__private::tokio"
            )]
            async fn $check() {
                let fixture = $make.await;
                let repo: &dyn $crate::MessageRepository = ::core::convert::AsRef::as_ref(&fixture);
                let members: &dyn $crate::RoomMembers = ::core::convert::AsRef::as_ref(&fixture);
                let cursors: &dyn $crate::ReadCursors = ::core::convert::AsRef::as_ref(&fixture);
                $crate::testkit::__private::tokio::time::timeout(
                    $crate::testkit::TEST_TIMEOUT,
                    $crate::testkit::read_cursors::$check(repo, members, cursors),
                )
                .await
                .expect(concat!(stringify!($check), " hung"));
            }
        )+
    };
}

/// Generates one `#[tokio::test]` per repository contract check.
#[macro_export]
macro_rules! repository_contract_tests {
    ($make:expr) => {
        $crate::__contract_tests!(
            repository,
            MessageRepository,
            $make,
            a_created_room_is_found_and_listed,
            a_missing_room_is_none,
            appending_to_an_unknown_room_fails_and_stores_nothing,
            each_room_numbers_its_messages_from_one_without_holes,
            a_stored_message_keeps_every_field,
            concurrent_appends_leave_no_hole_and_no_duplicate,
            history_pages_by_seq_in_ascending_order,
            a_reachable_store_is_healthy,
            a_repeated_idempotency_key_returns_the_first_message,
            concurrent_retries_with_one_key_store_one_message,
            last_seqs_reports_each_existing_room_in_one_call,
        );
    };
}

/// Generates one `#[tokio::test]` per bus contract check.
#[macro_export]
macro_rules! bus_contract_tests {
    ($make:expr) => {
        $crate::__contract_tests!(
            bus,
            MessageBus,
            $make,
            a_subscriber_receives_what_is_published_in_order,
            every_subscriber_receives_every_message,
            publishing_with_nobody_listening_succeeds,
            a_dropped_subscription_does_not_disturb_the_others,
            concurrent_publishes_all_arrive,
            a_working_bus_is_healthy,
        );
        $crate::__contract_tests!(
            @named bus_control,
            control,
            MessageBus,
            $make,
            a_control_event_reaches_every_subscriber,
            every_kind_of_control_event_arrives_whole_and_in_order,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __contract_tests {
    ($module:ident, $port:ident, $make:expr, $($check:ident),+ $(,)?) => {
        $crate::__contract_tests!(@named $module, $module, $port, $make, $($check),+);
    };
    (@named $name:ident, $module:ident, $port:ident, $make:expr, $($check:ident),+ $(,)?) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[$crate::testkit::__private::tokio::test(
                    flavor = "multi_thread",
                    worker_threads = 2,
                    crate = "chat_domain::testkit::__private::tokio"
                )]
                async fn $check() {
                    let fixture = $make.await;
                    let port: &dyn $crate::$port = ::core::convert::AsRef::as_ref(&fixture);
                    $crate::testkit::__private::tokio::time::timeout(
                        $crate::testkit::TEST_TIMEOUT,
                        $crate::testkit::$module::$check(port),
                    )
                    .await
                    .expect(concat!(stringify!($check), " hung"));
                }
            )+
        }
    };
}
