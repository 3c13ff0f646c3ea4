//! Gap-free per-room seq under concurrent writers: many tasks on one pool, two pools
//! modelling two replicas, batches mixing good and bad messages, and a failed transaction
//! that must give its seqs back. And a message never points at a room that is not there:
//! the append takes the seq from the room's row, and a room with messages cannot be deleted.

mod support;

use std::sync::Arc;

use chat_adapters_postgres::{PostgresConfig, PostgresRepository};
use chat_domain::{
    HistoryLimit, HistoryQuery, IdempotencyKey, MessageRepository, NewChatMessage, RepositoryError,
    RoomId, Seq,
};
use futures_util::future::join_all;
use support::{Fixture, message, room};

/// Sends `each` messages from each of `tasks` tasks, spread over `repositories` in turn,
/// and returns every seq handed out.
async fn append_concurrently(
    repositories: &[Arc<PostgresRepository>],
    target: RoomId,
    tasks: usize,
    each: usize,
) -> Vec<i64> {
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let repository = Arc::clone(&repositories[task % repositories.len()]);
            tokio::spawn(async move {
                let mut seqs = Vec::with_capacity(each);
                for i in 0..each {
                    let stored = repository
                        .append(message(target, &format!("task {task} message {i}")))
                        .await
                        .expect("append");
                    seqs.push(stored.seq.get());
                }
                seqs
            })
        })
        .collect();
    let mut all = Vec::with_capacity(tasks * each);
    for handle in handles {
        all.extend(handle.await.expect("writer task"));
    }
    all.sort_unstable();
    all
}

/// Every stored seq of a room, read back page by page.
async fn stored_seqs(repository: &dyn MessageRepository, target: RoomId) -> Vec<i64> {
    let mut seqs = Vec::new();
    let mut after = Seq(0);
    loop {
        let page = repository
            .history(
                target,
                HistoryQuery::after(after, HistoryLimit::parse(200).unwrap()),
            )
            .await
            .expect("history");
        let Some(last) = page.last() else {
            return seqs;
        };
        after = last.seq;
        seqs.extend(page.iter().map(|m| m.seq.get()));
    }
}

fn one_to(n: i64) -> Vec<i64> {
    (1..=n).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_tasks_of_five_hundred_appends_number_one_room_from_1_to_4000() {
    let fixture = Fixture::new().await;
    let target = room(fixture.repository.as_ref(), "busy").await;

    let seqs = append_concurrently(&[Arc::clone(&fixture.repository)], target, 8, 500).await;

    assert_eq!(seqs, one_to(4000));
    assert_eq!(
        stored_seqs(fixture.repository.as_ref(), target).await,
        one_to(4000)
    );
    let room = fixture.repository.find_room(target).await.unwrap().unwrap();
    assert_eq!(room.last_seq, Seq(4000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_with_their_own_pools_share_one_gap_free_sequence() {
    let fixture = Fixture::new().await;
    let second_replica = Arc::new(
        PostgresRepository::connect(PostgresConfig::new(fixture.database.url()))
            .await
            .expect("second replica"),
    );
    let target = room(fixture.repository.as_ref(), "shared").await;

    let replicas = [Arc::clone(&fixture.repository), Arc::clone(&second_replica)];
    let seqs = append_concurrently(&replicas, target, 8, 500).await;

    assert_eq!(seqs, one_to(4000));
    assert_eq!(
        stored_seqs(second_replica.as_ref(), target).await,
        one_to(4000)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_writing_one_transaction_per_message_also_leave_no_gap() {
    let fixture = Fixture::new().await;
    let mut config = PostgresConfig::new(fixture.database.url());
    config.max_batch = 1;
    let replicas = [
        Arc::new(PostgresRepository::connect(config.clone()).await.unwrap()),
        Arc::new(PostgresRepository::connect(config).await.unwrap()),
    ];
    let target = room(replicas[0].as_ref(), "unbatched").await;

    let seqs = append_concurrently(&replicas, target, 8, 100).await;

    assert_eq!(seqs, one_to(800));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_room_in_a_batch_does_not_fail_the_other_rooms_messages() {
    let fixture = Fixture::new().await;
    let repository = fixture.repository.as_ref();
    let known = room(repository, "known").await;
    let missing = RoomId(i64::MAX - 7);

    // Sent at once, so they queue together and share batches.
    let sends = (0..200).map(|i| {
        let target = if i % 4 == 0 { missing } else { known };
        async move {
            (
                target,
                repository.append(message(target, &format!("m{i}"))).await,
            )
        }
    });
    let outcomes = join_all(sends).await;

    let mut seqs = Vec::new();
    for (target, outcome) in outcomes {
        if target == missing {
            assert_eq!(outcome.unwrap_err(), RepositoryError::UnknownRoom(missing));
        } else {
            seqs.push(outcome.expect("a known room's message is stored").seq.get());
        }
    }
    seqs.sort_unstable();
    assert_eq!(seqs, one_to(150));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_with_messages_cannot_be_deleted_and_an_empty_one_can() {
    let fixture = Fixture::new().await;
    let repository = fixture.repository.as_ref();
    let used = room(repository, "used").await;
    let empty = room(repository, "empty").await;
    repository.append(message(used, "keep me")).await.unwrap();
    let admin = admin_client(fixture.database.url()).await;

    let refused = admin
        .execute("DELETE FROM chat_rooms WHERE id = $1", &[&used.get()])
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION),
        "{refused}"
    );
    let deleted = admin
        .execute("DELETE FROM chat_rooms WHERE id = $1", &[&empty.get()])
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    assert_eq!(stored_seqs(repository, used).await, vec![1]);
    assert_eq!(
        repository
            .append(message(empty, "too late"))
            .await
            .unwrap_err(),
        RepositoryError::UnknownRoom(empty)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_transaction_gives_its_seqs_back_and_the_unique_key_catches_a_duplicate() {
    let fixture = Fixture::new().await;
    let repository = fixture.repository.as_ref();
    let target = room(repository, "rollback").await;
    repository.append(message(target, "one")).await.unwrap();

    // A row slipped in behind the adapter's back takes seq 2 without moving last_seq: the
    // next append computes seq 2 too, and the unique key must refuse it.
    let admin = admin_client(fixture.database.url()).await;
    admin
        .batch_execute(&format!(
            "INSERT INTO chat_messages (chat_room_id, seq, sender_id, sender_nickname, \
             content, message_type) VALUES ({}, 2, 1, 'intruder', 'x', 'TEXT')",
            target.get()
        ))
        .await
        .unwrap();
    let err = repository.append(message(target, "two")).await.unwrap_err();
    assert!(matches!(err, RepositoryError::Unavailable(_)), "{err:?}");
    assert_eq!(
        repository
            .find_room(target)
            .await
            .unwrap()
            .unwrap()
            .last_seq,
        Seq(1),
        "the rolled-back reservation is given back"
    );

    admin
        .batch_execute("DELETE FROM chat_messages WHERE sender_nickname = 'intruder'")
        .await
        .unwrap();
    let stored = repository
        .append(message(target, "two again"))
        .await
        .unwrap();
    assert_eq!(stored.seq, Seq(2), "no hole after the failure");
}

async fn admin_client(url: &str) -> tokio_postgres::Client {
    chat_test_support::postgres::admin_client(url)
        .await
        .expect("admin connection")
}

fn keyed(target: RoomId, key: &str) -> NewChatMessage {
    message(target, "once").with_idempotency_key(Some(IdempotencyKey::parse(key).unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_sending_one_idempotency_key_at_once_store_it_once() {
    let fixture = Fixture::new().await;
    let url = fixture.database.url().to_owned();
    let other = Arc::new(
        PostgresRepository::connect(PostgresConfig::new(&url))
            .await
            .unwrap(),
    );
    let target = room(fixture.repository.as_ref(), "race").await;

    // While this lock is held both sends start and take their snapshots; whichever gets
    // the room second cannot see the first one's row in its snapshot.
    let admin = admin_client(&url).await;
    admin
        .batch_execute(&format!(
            "BEGIN; SELECT id FROM chat_rooms WHERE id = {} FOR UPDATE",
            target.get()
        ))
        .await
        .unwrap();
    let sends: Vec<_> = [Arc::clone(&fixture.repository), other]
        .into_iter()
        .map(|repository| {
            tokio::spawn(async move { repository.append(keyed(target, "race-1")).await })
        })
        .collect();
    // Another session watches: inside the lock holder's transaction pg_stat_activity is a
    // snapshot that never changes.
    let watcher = admin_client(&url).await;
    let mut waiting = 0;
    for _ in 0..100 {
        waiting = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        if waiting == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(waiting, 2, "both sends wait for the room");
    admin.batch_execute("COMMIT").await.unwrap();

    let mut stored = Vec::new();
    for send in sends {
        stored.push(send.await.unwrap().expect("both sends succeed"));
    }
    assert_eq!(stored[0].id, stored[1].id, "one row answers both");
    assert_eq!(stored[0].seq, Seq(1));
    assert_eq!(
        stored_seqs(fixture.repository.as_ref(), target).await,
        vec![1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_taken_by_someone_else_cost_one_refused_batch_not_one_per_id() {
    let fixture = Fixture::new().await;
    let repository = fixture.repository.as_ref();
    let target = room(repository, "ids").await;
    let other = room(repository, "elsewhere").await;
    let first = repository.append(message(target, "one")).await.unwrap();

    // The writer drew a block of ids after `first.id`; rows that appear with the next ones
    // (a failed-over server whose sequence never saw the draw) must not fail every batch.
    let admin = admin_client(fixture.database.url()).await;
    admin
        .batch_execute(&format!(
            "INSERT INTO chat_messages (id, chat_room_id, seq, sender_id, sender_nickname, \
             content, message_type) \
             SELECT {} + g, {}, g, 1, 'intruder', 'x', 'TEXT' FROM generate_series(1, 20) AS g",
            first.id.get(),
            other.get()
        ))
        .await
        .unwrap();
    let refused = repository.append(message(target, "two")).await;
    assert!(
        matches!(refused, Err(RepositoryError::Unavailable(_))),
        "{refused:?}"
    );
    let stored = repository
        .append(message(target, "two again"))
        .await
        .expect("a fresh block of ids after the collision");
    assert_eq!(stored.seq, Seq(2), "the refused batch used no seq");
}
