//! The SQL: rooms, history, and storing a batch of messages in one transaction with
//! gap-free per-room seq. Rows are turned into domain types here; no diesel type leaves.

use std::collections::HashMap;

use chat_domain::{
    ChatMessage, HistoryQuery, MessageId, MessageType, NewChatMessage, RepositoryError, Room,
    RoomId, RoomName, SenderId, Seq,
};
use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Text, Timestamptz};
use diesel::{
    ExpressionMethods, OptionalExtension, QueryDsl, QueryableByName, Selectable, SelectableHelper,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use crate::error::StoreFailure;
use crate::schema::{chat_messages, chat_rooms};

#[derive(diesel::Queryable, Selectable)]
#[diesel(table_name = chat_rooms, check_for_backend(diesel::pg::Pg))]
struct RoomRow {
    id: i64,
    name: String,
    created_at: DateTime<Utc>,
    last_seq: i64,
}

impl From<RoomRow> for Room {
    fn from(row: RoomRow) -> Self {
        Room {
            id: RoomId(row.id),
            name: row.name,
            created_at: row.created_at,
            last_seq: Seq(row.last_seq),
        }
    }
}

#[derive(diesel::Queryable, Selectable)]
#[diesel(table_name = chat_messages, check_for_backend(diesel::pg::Pg))]
struct MessageRow {
    id: i64,
    chat_room_id: i64,
    seq: i64,
    sender_id: i64,
    sender_nickname: String,
    content: String,
    message_type: String,
    created_at: DateTime<Utc>,
}

impl TryFrom<MessageRow> for ChatMessage {
    type Error = StoreFailure;

    fn try_from(row: MessageRow) -> Result<Self, Self::Error> {
        // The CHECK constraint makes this unreachable unless someone edits the table by
        // hand; then the read fails loudly rather than guessing a type.
        let message_type = MessageType::from_name(&row.message_type).ok_or_else(|| {
            StoreFailure::Corrupt(format!(
                "message {} has the unknown message_type {:?}",
                row.id, row.message_type
            ))
        })?;
        Ok(ChatMessage {
            id: MessageId(row.id),
            room_id: RoomId(row.chat_room_id),
            seq: Seq(row.seq),
            sender_id: SenderId(row.sender_id),
            sender_nickname: row.sender_nickname,
            content: row.content,
            message_type,
            created_at: row.created_at,
        })
    }
}

pub(crate) async fn create_room(
    conn: &mut AsyncPgConnection,
    name: &RoomName,
) -> Result<Room, StoreFailure> {
    let row = diesel::insert_into(chat_rooms::table)
        .values(chat_rooms::name.eq(name.as_str()))
        .returning(RoomRow::as_returning())
        .get_result(conn)
        .await?;
    Ok(row.into())
}

pub(crate) async fn find_room(
    conn: &mut AsyncPgConnection,
    id: RoomId,
) -> Result<Option<Room>, StoreFailure> {
    let row = chat_rooms::table
        .find(id.get())
        .select(RoomRow::as_select())
        .first(conn)
        .await
        .optional()?;
    Ok(row.map(Room::from))
}

pub(crate) async fn list_rooms(conn: &mut AsyncPgConnection) -> Result<Vec<Room>, StoreFailure> {
    let rows = chat_rooms::table
        .order(chat_rooms::id.asc())
        .select(RoomRow::as_select())
        .load(conn)
        .await?;
    Ok(rows.into_iter().map(Room::from).collect())
}

/// One page by keyset on `(chat_room_id, seq)`: the unique index answers it in both
/// directions, and inserts at the end of a room never shift a page that was already read.
pub(crate) async fn history(
    conn: &mut AsyncPgConnection,
    room: RoomId,
    query: HistoryQuery,
) -> Result<Result<Vec<ChatMessage>, RepositoryError>, StoreFailure> {
    let mut select = chat_messages::table
        .filter(chat_messages::chat_room_id.eq(room.get()))
        .select(MessageRow::as_select())
        .limit(i64::from(query.limit.get()))
        .into_boxed();
    if let Some(after) = query.after {
        select = select.filter(chat_messages::seq.gt(after.get()));
    }
    if let Some(before) = query.before {
        select = select.filter(chat_messages::seq.lt(before.get()));
    }
    // With `after` the oldest page after it (catching up); without, the newest page
    // (scrolling back), read backwards and turned around below.
    let oldest_first = query.after.is_some();
    select = if oldest_first {
        select.order(chat_messages::seq.asc())
    } else {
        select.order(chat_messages::seq.desc())
    };
    let mut rows: Vec<MessageRow> = select.load(conn).await?;
    if rows.is_empty() && find_room(conn, room).await?.is_none() {
        return Ok(Err(RepositoryError::UnknownRoom(room)));
    }
    if !oldest_first {
        rows.reverse();
    }
    let messages = rows
        .into_iter()
        .map(ChatMessage::try_from)
        .collect::<Result<_, _>>()?;
    Ok(Ok(messages))
}

pub(crate) async fn ping(conn: &mut AsyncPgConnection) -> Result<(), StoreFailure> {
    diesel::sql_query("SELECT 1").execute(conn).await?;
    Ok(())
}

#[derive(QueryableByName)]
struct ReservedSeqs {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    last_seq: i64,
}

#[derive(QueryableByName)]
struct InsertedMessage {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    chat_room_id: i64,
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
}

/// What happened to one message of a batch whose transaction committed.
pub(crate) type AppendOutcome = Result<ChatMessage, RepositoryError>;

/// Stores `batch` in one transaction and returns one outcome per message, in order. The
/// transaction has committed when this returns `Ok`; on `Err` nothing was stored and no
/// seq was used.
///
/// 1. Lock the batch's rooms in id order (`FOR UPDATE`): writers in every replica that
///    touch the same room queue here, and the fixed order rules out deadlocks between
///    batches that share several rooms. Rooms that are not found are answered
///    `UnknownRoom` without failing the others.
/// 2. Reserve n seqs per room with one `UPDATE … RETURNING last_seq`.
/// 3. Insert every row with one `INSERT … SELECT FROM unnest(…)`: six array parameters
///    whatever the batch size, so the 65,535-parameter limit never applies and the
///    statement is prepared once per connection.
///
/// A rollback returns the reserved seqs with the rest, so a failure never leaves a hole.
pub(crate) async fn append_batch(
    conn: &mut AsyncPgConnection,
    batch: &[NewChatMessage],
) -> Result<Vec<AppendOutcome>, StoreFailure> {
    let mut room_ids: Vec<i64> = batch.iter().map(|m| m.room_id.get()).collect();
    room_ids.sort_unstable();
    room_ids.dedup();
    conn.transaction::<_, StoreFailure, _>(async |tx| {
        let existing: Vec<i64> = chat_rooms::table
            .filter(chat_rooms::id.eq_any(&room_ids))
            .order(chat_rooms::id.asc())
            .select(chat_rooms::id)
            .for_update()
            .load(tx)
            .await?;
        let mut counts: Vec<(i64, i64)> = existing.iter().map(|&id| (id, 0)).collect();
        for message in batch {
            if let Ok(i) = existing.binary_search(&message.room_id.get()) {
                counts[i].1 += 1;
            }
        }
        counts.retain(|&(_, n)| n > 0);
        if counts.is_empty() {
            return Ok(unknown_rooms(batch));
        }

        let (ids, ns): (Vec<i64>, Vec<i64>) = counts.iter().copied().unzip();
        let reserved: Vec<ReservedSeqs> = diesel::sql_query(
            "UPDATE chat_rooms AS r SET last_seq = r.last_seq + v.n \
             FROM unnest($1::int8[], $2::int8[]) AS v(id, n) \
             WHERE r.id = v.id \
             RETURNING r.id, r.last_seq",
        )
        .bind::<Array<BigInt>, _>(&ids)
        .bind::<Array<BigInt>, _>(&ns)
        .load(tx)
        .await?;
        // The next seq to hand out per room: the first of the n just reserved.
        let mut next_seq: HashMap<i64, i64> = reserved
            .iter()
            .map(|r| {
                let n = counts
                    .iter()
                    .find(|(id, _)| *id == r.id)
                    .map_or(0, |&(_, n)| n);
                (r.id, r.last_seq - n + 1)
            })
            .collect();

        let mut rows = InsertColumns::with_capacity(batch.len());
        let mut seqs: Vec<Option<i64>> = Vec::with_capacity(batch.len());
        for message in batch {
            let seq = next_seq.get_mut(&message.room_id.get()).map(|next| {
                let seq = *next;
                *next += 1;
                seq
            });
            if let Some(seq) = seq {
                rows.push(message, seq);
            }
            seqs.push(seq);
        }
        let inserted: Vec<InsertedMessage> = diesel::sql_query(
            "INSERT INTO chat_messages \
                 (chat_room_id, seq, sender_id, sender_nickname, content, message_type) \
             SELECT * FROM unnest($1::int8[], $2::int8[], $3::int8[], \
                                  $4::text[], $5::text[], $6::text[]) \
             RETURNING id, chat_room_id, seq, created_at",
        )
        .bind::<Array<BigInt>, _>(&rows.room_ids)
        .bind::<Array<BigInt>, _>(&rows.seqs)
        .bind::<Array<BigInt>, _>(&rows.sender_ids)
        .bind::<Array<Text>, _>(&rows.nicknames)
        .bind::<Array<Text>, _>(&rows.contents)
        .bind::<Array<Text>, _>(&rows.message_types)
        .load(tx)
        .await?;
        // Matched by (room, seq), which is unique, rather than trusting RETURNING order.
        let stored: HashMap<(i64, i64), (i64, DateTime<Utc>)> = inserted
            .into_iter()
            .map(|row| ((row.chat_room_id, row.seq), (row.id, row.created_at)))
            .collect();
        batch
            .iter()
            .zip(seqs)
            .map(|(message, seq)| match seq {
                None => Ok(Err(RepositoryError::UnknownRoom(message.room_id))),
                Some(seq) => {
                    let &(id, created_at) =
                        stored.get(&(message.room_id.get(), seq)).ok_or_else(|| {
                            StoreFailure::Corrupt(format!(
                                "the insert did not return seq {seq} of room {}",
                                message.room_id
                            ))
                        })?;
                    Ok(Ok(stored_message(message, id, seq, created_at)))
                }
            })
            .collect()
    })
    .await
}

fn unknown_rooms(batch: &[NewChatMessage]) -> Vec<AppendOutcome> {
    batch
        .iter()
        .map(|m| Err(RepositoryError::UnknownRoom(m.room_id)))
        .collect()
}

fn stored_message(
    message: &NewChatMessage,
    id: i64,
    seq: i64,
    created_at: DateTime<Utc>,
) -> ChatMessage {
    ChatMessage {
        id: MessageId(id),
        room_id: message.room_id,
        seq: Seq(seq),
        sender_id: message.sender_id,
        sender_nickname: message.sender_nickname.as_str().to_owned(),
        content: message.content.as_str().to_owned(),
        message_type: message.message_type,
        created_at,
    }
}

/// The batch's rows as one array per column, the shape `unnest` takes.
struct InsertColumns<'a> {
    room_ids: Vec<i64>,
    seqs: Vec<i64>,
    sender_ids: Vec<i64>,
    nicknames: Vec<&'a str>,
    contents: Vec<&'a str>,
    message_types: Vec<&'static str>,
}

impl<'a> InsertColumns<'a> {
    fn with_capacity(n: usize) -> Self {
        Self {
            room_ids: Vec::with_capacity(n),
            seqs: Vec::with_capacity(n),
            sender_ids: Vec::with_capacity(n),
            nicknames: Vec::with_capacity(n),
            contents: Vec::with_capacity(n),
            message_types: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, message: &'a NewChatMessage, seq: i64) {
        self.room_ids.push(message.room_id.get());
        self.seqs.push(seq);
        self.sender_ids.push(message.sender_id.get());
        self.nicknames.push(message.sender_nickname.as_str());
        self.contents.push(message.content.as_str());
        self.message_types.push(message.message_type.as_str());
    }
}
