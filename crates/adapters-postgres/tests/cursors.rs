//! The read-cursor writer coalesces: a burst of concurrent cursor moves is stored in a few
//! statements, not one per move, and every caller still gets its own answer.

mod support;

use chat_domain::{MessageRepository, ReadCursors, SenderId, Seq};
use futures_util::future::join_all;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_cursor_moves_take_far_fewer_than_two_hundred_statements() {
    let fixture = support::Fixture::new().await;
    let repo = fixture.repository.as_ref();
    let room = support::room(repo, "burst").await;
    for n in 0..10 {
        repo.append(support::message(room, &format!("m{n}")))
            .await
            .unwrap();
    }
    let before = repo.cursor_writer_counts();
    // 100 users, two moves each (one of them past last_seq): duplicates of one (room, user)
    // in a batch must be merged, since ON CONFLICT cannot touch one row twice.
    let moves = (0..200).map(|n| {
        let user = SenderId(1_000 + n / 2);
        let seq = if n % 2 == 0 { Seq(n % 10) } else { Seq(99) };
        repo.mark_read(room, user, seq)
    });
    let answers = join_all(moves).await;
    let after = repo.cursor_writer_counts();
    for (n, answer) in answers.into_iter().enumerate() {
        let answer = answer.unwrap_or_else(|e| panic!("move {n} failed: {e}"));
        assert!(answer.last_read_seq <= Seq(10), "clamped to last_seq");
        if n % 2 == 1 {
            assert_eq!(answer.last_read_seq, Seq(10));
        }
    }
    let statements = after.statements - before.statements;
    assert_eq!(after.moves - before.moves, 200);
    assert!(
        statements <= 20,
        "200 concurrent moves took {statements} statements; the writer should batch them"
    );
    for user in [1_000, 1_050, 1_099] {
        let rooms = repo
            .my_rooms(
                SenderId(user),
                chat_domain::RoomListQuery::all(chat_domain::RoomListLimit::DEFAULT),
            )
            .await
            .unwrap();
        assert_eq!(rooms.len(), 1);
        assert_eq!((rooms[0].last_read_seq, rooms[0].unread), (Seq(10), 0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_cursor_move_is_one_statement_and_waits_for_nobody() {
    let fixture = support::Fixture::new().await;
    let repo = fixture.repository.as_ref();
    let room = support::room(repo, "lone").await;
    repo.append(support::message(room, "hi")).await.unwrap();
    let before = repo.cursor_writer_counts();
    let marked = repo.mark_read(room, SenderId(5), Seq(1)).await.unwrap();
    assert_eq!((marked.last_read_seq, marked.moved), (Seq(1), true));
    let after = repo.cursor_writer_counts();
    assert_eq!(after.statements - before.statements, 1);
}
