//! `ReadCursors` over PostgreSQL. Cursor moves are coalesced: callers queue their move,
//! one writer task takes everything waiting and stores it in ONE statement (an upsert from
//! `unnest` of three arrays), and answers each caller from its `RETURNING` rows. A burst of
//! read receipts therefore costs one round trip, however many users scroll at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use chat_domain::{
    MarkedRead, MyRoom, ReadCursors, RepositoryError, Room, RoomId, RoomListQuery, SenderId, Seq,
    Visibility,
};
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use tokio::sync::{mpsc, oneshot};

use crate::PostgresRepository;
use crate::error::StoreFailure;
use crate::repository::Shared;

/// The most cursor moves in one statement. Each is three array elements, not three bind
/// parameters, so the 65,535-parameter limit does not apply; this only bounds one
/// statement's work.
const MAX_BATCH: usize = 1_000;

/// Moves waiting for the writer before callers wait to enqueue (back-pressure).
const QUEUE: usize = MAX_BATCH * 2;

/// The one statement of a batch. `wanted` holds one row per (room, user), its largest seq.
/// The upsert only rewrites a cursor it advances; the outer query answers every wanted row:
/// the new value when it moved (or was created), the stored one otherwise (read from the
/// statement's snapshot, i.e. before it ran), and NULL for a room that does not exist.
const MARK_READ_SQL: &str = "\
WITH wanted AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS w (room_id, user_id, seq)
), upserted AS (
    INSERT INTO chat_read_cursors AS c (room_id, user_id, last_read_seq, updated_at)
    SELECT w.room_id, w.user_id, LEAST(GREATEST(w.seq, 0), r.last_seq), now()
    FROM wanted w JOIN chat_rooms r ON r.id = w.room_id
    ORDER BY w.room_id, w.user_id
    ON CONFLICT (room_id, user_id) DO UPDATE
        SET last_read_seq = EXCLUDED.last_read_seq, updated_at = EXCLUDED.updated_at
        WHERE c.last_read_seq < EXCLUDED.last_read_seq
    RETURNING c.room_id, c.user_id, c.last_read_seq
)
SELECT w.room_id, w.user_id,
       CASE WHEN r.id IS NOT NULL THEN
           COALESCE(u.last_read_seq, before.last_read_seq, LEAST(GREATEST(w.seq, 0), r.last_seq))
       END AS last_read_seq,
       (u.room_id IS NOT NULL AND u.last_read_seq > COALESCE(before.last_read_seq, 0)) AS moved
FROM wanted w
LEFT JOIN chat_rooms r ON r.id = w.room_id
LEFT JOIN upserted u ON u.room_id = w.room_id AND u.user_id = w.user_id
LEFT JOIN chat_read_cursors before ON before.room_id = w.room_id AND before.user_id = w.user_id";

/// A user's rooms: the ids come from the three by-user indexes (cursors, memberships,
/// ownership), then the rooms they may no longer read (private, neither owner nor member)
/// are left out.
const MY_ROOMS_SQL: &str = "\
WITH mine AS (
    SELECT room_id AS id FROM chat_read_cursors WHERE user_id = $1 AND room_id > $2
    UNION
    SELECT chat_room_id FROM chat_room_members WHERE user_id = $1 AND chat_room_id > $2
    UNION
    SELECT id FROM chat_rooms WHERE owner_id = $1 AND id > $2
)
SELECT r.id, r.name, r.created_at, r.last_seq, r.visibility, r.owner_id,
       COALESCE(c.last_read_seq, 0) AS last_read_seq
FROM mine
JOIN chat_rooms r ON r.id = mine.id
LEFT JOIN chat_read_cursors c ON c.room_id = r.id AND c.user_id = $1
WHERE r.visibility = 'public' OR r.owner_id = $1
   OR EXISTS (SELECT 1 FROM chat_room_members m WHERE m.chat_room_id = r.id AND m.user_id = $1)
ORDER BY r.id
LIMIT $3";

#[derive(QueryableByName)]
struct MarkedRow {
    #[diesel(sql_type = BigInt)]
    room_id: i64,
    #[diesel(sql_type = BigInt)]
    user_id: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    last_read_seq: Option<i64>,
    #[diesel(sql_type = Bool)]
    moved: bool,
}

#[derive(QueryableByName)]
struct MyRoomRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = BigInt)]
    last_seq: i64,
    #[diesel(sql_type = Text)]
    visibility: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    owner_id: Option<i64>,
    #[diesel(sql_type = BigInt)]
    last_read_seq: i64,
}

impl TryFrom<MyRoomRow> for MyRoom {
    type Error = StoreFailure;

    fn try_from(row: MyRoomRow) -> Result<Self, Self::Error> {
        let visibility = Visibility::parse(&row.visibility).map_err(|_| {
            StoreFailure::Corrupt(format!(
                "room {} has the unknown visibility {:?}",
                row.id, row.visibility
            ))
        })?;
        let room = Room {
            id: RoomId(row.id),
            name: row.name,
            created_at: row.created_at,
            last_seq: Seq(row.last_seq),
            visibility,
            owner: row.owner_id.map(SenderId),
        };
        Ok(MyRoom::new(room, Seq(row.last_read_seq)))
    }
}

/// What the cursor writer has done since start-up, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CursorWriterCounts {
    /// Statements the writer ran (one per batch, successful or not).
    pub statements: u64,
    /// Cursor moves those statements carried (callers answered from them).
    pub moves: u64,
}

#[derive(Default)]
struct Counters {
    statements: AtomicU64,
    moves: AtomicU64,
}

struct PendingMark {
    room: RoomId,
    user: SenderId,
    seq: Seq,
    reply: oneshot::Sender<Result<MarkedRead, RepositoryError>>,
}

/// The queue of the one cursor writer of a repository (and its clones). The writer stops
/// when the last clone is dropped.
#[derive(Clone)]
pub(crate) struct CursorWriter {
    queue: mpsc::Sender<PendingMark>,
    counters: Arc<Counters>,
}

impl CursorWriter {
    /// Starts the writer task; must be called inside a tokio runtime.
    pub(crate) fn start(shared: Arc<Shared>) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let counters = Arc::new(Counters::default());
        tokio::spawn(run_cursor_writer(shared, receiver, Arc::clone(&counters)));
        Self { queue, counters }
    }
}

/// While one statement runs, the next batch piles up in the queue: batches grow with the
/// load, and a lone move waits for nobody.
async fn run_cursor_writer(
    shared: Arc<Shared>,
    mut queue: mpsc::Receiver<PendingMark>,
    counters: Arc<Counters>,
) {
    let mut pending = Vec::with_capacity(MAX_BATCH);
    loop {
        if queue.recv_many(&mut pending, MAX_BATCH).await == 0 {
            return;
        }
        let batch: Vec<PendingMark> = pending.drain(..).filter(|p| !p.reply.is_closed()).collect();
        if batch.is_empty() {
            continue;
        }
        // ON CONFLICT cannot touch one row twice in a statement: one entry per (room,
        // user), with the largest seq asked for (the cursor would end there anyway).
        let mut wanted: BTreeMap<(RoomId, SenderId), Seq> = BTreeMap::new();
        for mark in &batch {
            let seq = wanted.entry((mark.room, mark.user)).or_insert(mark.seq);
            *seq = (*seq).max(mark.seq);
        }
        counters.statements.fetch_add(1, Ordering::Relaxed);
        counters
            .moves
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let outcome = shared
            .bounded(async {
                let mut conn = shared.connection().await?;
                store_batch(&mut conn, &wanted).await
            })
            .await;
        match outcome {
            Ok(rows) => {
                for mark in batch {
                    let answer = match rows.get(&(mark.room, mark.user)) {
                        Some(&(Some(stored), moved)) => Ok(MarkedRead {
                            last_read_seq: Seq(stored),
                            // Moves merged into one row: only those whose own seq got
                            // there moved it; a lower one found it already past.
                            moved: moved && mark.seq.get().max(0) >= stored,
                        }),
                        Some(&(None, _)) => Err(RepositoryError::UnknownRoom(mark.room)),
                        None => Err(RepositoryError::Unavailable(
                            "the read-cursor statement returned no row for this move".to_owned(),
                        )),
                    };
                    let _ = mark.reply.send(answer);
                }
            }
            Err(error) => {
                for mark in batch {
                    let _ = mark.reply.send(Err(error.clone()));
                }
            }
        }
    }
}

type Answers = BTreeMap<(RoomId, SenderId), (Option<i64>, bool)>;

async fn store_batch(
    conn: &mut AsyncPgConnection,
    wanted: &BTreeMap<(RoomId, SenderId), Seq>,
) -> Result<Answers, StoreFailure> {
    let rooms: Vec<i64> = wanted.keys().map(|(room, _)| room.get()).collect();
    let users: Vec<i64> = wanted.keys().map(|(_, user)| user.get()).collect();
    let seqs: Vec<i64> = wanted.values().map(|seq| seq.get()).collect();
    let rows: Vec<MarkedRow> = diesel::sql_query(MARK_READ_SQL)
        .bind::<Array<BigInt>, _>(rooms)
        .bind::<Array<BigInt>, _>(users)
        .bind::<Array<BigInt>, _>(seqs)
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            (
                (RoomId(row.room_id), SenderId(row.user_id)),
                (row.last_read_seq, row.moved),
            )
        })
        .collect())
}

impl PostgresRepository {
    /// What the read-cursor writer has done so far: how many statements for how many
    /// moves (a burst of N concurrent moves takes far fewer than N statements).
    #[must_use]
    pub fn cursor_writer_counts(&self) -> CursorWriterCounts {
        CursorWriterCounts {
            statements: AtomicU64::load(&self.cursors.counters.statements, Ordering::Relaxed),
            moves: AtomicU64::load(&self.cursors.counters.moves, Ordering::Relaxed),
        }
    }
}

#[async_trait]
impl ReadCursors for PostgresRepository {
    async fn mark_read(
        &self,
        room: RoomId,
        user: SenderId,
        seq: Seq,
    ) -> Result<MarkedRead, RepositoryError> {
        let (reply, answer) = oneshot::channel();
        let mark = PendingMark {
            room,
            user,
            seq,
            reply,
        };
        let stopped = || RepositoryError::Unavailable("the read-cursor writer stopped".to_owned());
        self.cursors.queue.send(mark).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn my_rooms(
        &self,
        user: SenderId,
        query: RoomListQuery,
    ) -> Result<Vec<MyRoom>, RepositoryError> {
        self.shared
            .bounded(async {
                let mut conn = self.shared.connection().await?;
                let rows: Vec<MyRoomRow> = diesel::sql_query(MY_ROOMS_SQL)
                    .bind::<BigInt, _>(user.get())
                    .bind::<BigInt, _>(query.after.map_or(i64::MIN, RoomId::get))
                    .bind::<BigInt, _>(i64::from(query.limit.get()))
                    .load(&mut conn)
                    .await?;
                rows.into_iter().map(MyRoom::try_from).collect()
            })
            .await
    }
}
