//! The SQL: rooms, history, and storing a batch of messages in one transaction with
//! gap-free per-room seq. Rows are turned into domain types here; no diesel type leaves.

use std::collections::HashMap;
use std::sync::Mutex;

use chat_domain::{
    ChatMessage, HistoryQuery, MessageId, MessageType, NewChatMessage, NewRoom, RepositoryError,
    Room, RoomId, RoomListQuery, SenderId, Seq, Visibility,
};
use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Nullable, Text, Timestamptz};
use diesel::{
    BoolExpressionMethods, ExpressionMethods, OptionalExtension, QueryDsl, QueryableByName,
    Selectable, SelectableHelper,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use crate::error::StoreFailure;
use crate::schema::{chat_messages, chat_room_members, chat_rooms};

#[derive(diesel::Queryable, Selectable)]
#[diesel(table_name = chat_rooms, check_for_backend(diesel::pg::Pg))]
struct RoomRow {
    id: i64,
    name: String,
    created_at: DateTime<Utc>,
    last_seq: i64,
    visibility: String,
    owner_id: Option<i64>,
}

impl TryFrom<RoomRow> for Room {
    type Error = StoreFailure;

    fn try_from(row: RoomRow) -> Result<Self, Self::Error> {
        // The CHECK constraint keeps other values out; a hand-edited row fails loudly.
        let visibility = Visibility::parse(&row.visibility).map_err(|_| {
            StoreFailure::Corrupt(format!(
                "room {} has the unknown visibility {:?}",
                row.id, row.visibility
            ))
        })?;
        Ok(Room {
            id: RoomId(row.id),
            name: row.name,
            created_at: row.created_at,
            last_seq: Seq(row.last_seq),
            visibility,
            owner: row.owner_id.map(SenderId),
        })
    }
}

#[derive(diesel::Queryable, QueryableByName, Selectable)]
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
    room: &NewRoom,
) -> Result<Room, StoreFailure> {
    let row: RoomRow = diesel::insert_into(chat_rooms::table)
        .values((
            chat_rooms::name.eq(room.name.as_str()),
            chat_rooms::visibility.eq(room.visibility.as_str()),
            chat_rooms::owner_id.eq(room.owner.map(SenderId::get)),
        ))
        .returning(RoomRow::as_returning())
        .get_result(conn)
        .await?;
    row.try_into()
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
    row.map(Room::try_from).transpose()
}

/// One page of the room list by keyset on the id; with a viewer, the public rooms, the
/// ones they own and the ones they are a member of (an `EXISTS` on the members' primary
/// key per candidate room).
pub(crate) async fn list_rooms(
    conn: &mut AsyncPgConnection,
    query: RoomListQuery,
) -> Result<Vec<Room>, StoreFailure> {
    let mut select = chat_rooms::table
        .order(chat_rooms::id.asc())
        .limit(i64::from(query.limit.get()))
        .select(RoomRow::as_select())
        .into_boxed();
    if let Some(after) = query.after {
        select = select.filter(chat_rooms::id.gt(after.get()));
    }
    if let Some(user) = query.visible_to {
        let membership = chat_room_members::table
            .filter(chat_room_members::chat_room_id.eq(chat_rooms::id))
            .filter(chat_room_members::user_id.eq(user.get()));
        select = select.filter(
            chat_rooms::visibility
                .eq(Visibility::Public.as_str())
                .or(chat_rooms::owner_id.eq(user.get()))
                .or(diesel::dsl::exists(membership)),
        );
    }
    let rows = select.load(conn).await?;
    rows.into_iter().map(Room::try_from).collect()
}

/// `Ok(false)` when the membership already existed; `UnknownRoom` when the room does not.
pub(crate) async fn add_member(
    conn: &mut AsyncPgConnection,
    room: RoomId,
    user: SenderId,
) -> Result<Result<bool, RepositoryError>, StoreFailure> {
    let inserted = diesel::insert_into(chat_room_members::table)
        .values((
            chat_room_members::chat_room_id.eq(room.get()),
            chat_room_members::user_id.eq(user.get()),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await;
    match inserted {
        Ok(rows) => Ok(Ok(rows == 1)),
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::ForeignKeyViolation,
            _,
        )) => Ok(Err(RepositoryError::UnknownRoom(room))),
        Err(other) => Err(other.into()),
    }
}

pub(crate) async fn remove_member(
    conn: &mut AsyncPgConnection,
    room: RoomId,
    user: SenderId,
) -> Result<bool, StoreFailure> {
    let deleted = diesel::delete(
        chat_room_members::table
            .filter(chat_room_members::chat_room_id.eq(room.get()))
            .filter(chat_room_members::user_id.eq(user.get())),
    )
    .execute(conn)
    .await?;
    Ok(deleted == 1)
}

pub(crate) async fn is_member(
    conn: &mut AsyncPgConnection,
    room: RoomId,
    user: SenderId,
) -> Result<bool, StoreFailure> {
    let found = diesel::select(diesel::dsl::exists(
        chat_room_members::table
            .filter(chat_room_members::chat_room_id.eq(room.get()))
            .filter(chat_room_members::user_id.eq(user.get())),
    ))
    .get_result(conn)
    .await?;
    Ok(found)
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

/// A batch whose statements all succeeded, written down just before its COMMIT: if the
/// connection is lost during the COMMIT, these are the answers if it took effect, and the ids
/// tell whether it did ([`committed`]).
#[derive(Debug, Clone)]
pub(crate) struct PreparedBatch {
    pub(crate) outcomes: Vec<AppendOutcome>,
    rooms: Vec<i64>,
    inserted_ids: Vec<i64>,
}

/// What one message of a batch turns into.
#[derive(Debug, Clone, Copy)]
enum Plan {
    /// A new row with this seq.
    Insert(i64),
    /// Its idempotency key is already stored: answer with that row.
    Existing(usize),
    /// Its idempotency key came earlier in the same batch: answer like that message.
    SameAs(usize),
    UnknownRoom,
}

/// A stored message found by its idempotency key.
#[derive(QueryableByName)]
struct KeyedRow {
    #[diesel(embed)]
    message: MessageRow,
    #[diesel(sql_type = Text)]
    idempotency_key: String,
}

type IdempotencyIndex = (i64, i64, String);

fn keyed(message: &NewChatMessage) -> Option<IdempotencyIndex> {
    message.idempotency_key.as_ref().map(|key| {
        (
            message.room_id.get(),
            message.sender_id.get(),
            key.as_str().to_owned(),
        )
    })
}

/// Stores `batch` in one transaction and returns one outcome per message, in order. The
/// transaction has committed when this returns `Ok`; on `Err` with `prepared` still empty
/// nothing was stored and no seq was used; on `Err` with `prepared` filled in the failure
/// came during the COMMIT, and [`committed`] tells whether it took effect.
///
/// 1. Lock the batch's rooms in id order (`FOR UPDATE`): writers in every replica that
///    touch the same room queue here, and the fixed order rules out deadlocks between
///    batches that share several rooms. Rooms that are not found are answered
///    `UnknownRoom` without failing the others.
/// 2. Look up the batch's idempotency keys (under those locks, so no concurrent append can
///    store the same key meanwhile); a key already stored is answered with its message.
/// 3. Reserve n seqs per room with one `UPDATE … RETURNING last_seq`.
/// 4. Insert every new row with one `INSERT … SELECT FROM unnest(…)`: seven array
///    parameters whatever the batch size, so the 65,535-parameter limit never applies and
///    the statement is prepared once per connection.
///
/// A rollback returns the reserved seqs with the rest, so a failure never leaves a hole.
pub(crate) async fn append_batch(
    conn: &mut AsyncPgConnection,
    batch: &[NewChatMessage],
    prepared: &Mutex<Option<PreparedBatch>>,
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
        let stored_keys = stored_keys(tx, batch, &existing).await?;
        let mut first_with_key: HashMap<IdempotencyIndex, usize> = HashMap::new();
        let mut plans: Vec<Plan> = Vec::with_capacity(batch.len());
        let mut counts: Vec<(i64, i64)> = existing.iter().map(|&id| (id, 0)).collect();
        for (i, message) in batch.iter().enumerate() {
            let Ok(room) = existing.binary_search(&message.room_id.get()) else {
                plans.push(Plan::UnknownRoom);
                continue;
            };
            if let Some(key) = keyed(message) {
                if let Some(&row) = stored_keys.index.get(&key) {
                    plans.push(Plan::Existing(row));
                    continue;
                }
                if let Some(&earlier) = first_with_key.get(&key) {
                    plans.push(Plan::SameAs(earlier));
                    continue;
                }
                first_with_key.insert(key, i);
            }
            counts[room].1 += 1;
            plans.push(Plan::Insert(0));
        }
        counts.retain(|&(_, n)| n > 0);

        let mut next_seq = reserve_seqs(tx, &counts).await?;
        let mut rows = InsertColumns::with_capacity(batch.len());
        for (message, plan) in batch.iter().zip(plans.iter_mut()) {
            if let Plan::Insert(seq) = plan {
                let next = next_seq.get_mut(&message.room_id.get()).ok_or_else(|| {
                    StoreFailure::Corrupt(format!(
                        "room {} was locked but no seq was reserved for it",
                        message.room_id
                    ))
                })?;
                *seq = *next;
                *next += 1;
                rows.push(message, *seq);
            }
        }
        let inserted = insert_rows(tx, &rows).await?;
        let mut outcomes: Vec<AppendOutcome> = Vec::with_capacity(batch.len());
        for (message, plan) in batch.iter().zip(&plans) {
            let outcome = match *plan {
                Plan::UnknownRoom => Err(RepositoryError::UnknownRoom(message.room_id)),
                Plan::Existing(row) => Ok(stored_keys.messages[row].clone()),
                Plan::SameAs(earlier) => outcomes[earlier].clone(),
                Plan::Insert(seq) => {
                    let &(id, created_at) =
                        inserted.get(&(message.room_id.get(), seq)).ok_or_else(|| {
                            StoreFailure::Corrupt(format!(
                                "the insert did not return seq {seq} of room {}",
                                message.room_id
                            ))
                        })?;
                    Ok(stored_message(message, id, seq, created_at))
                }
            };
            outcomes.push(outcome);
        }
        if !inserted.is_empty() {
            // Only the COMMIT is left: from here on a lost connection leaves the outcome
            // open, and these answers are right if the COMMIT took effect.
            *lock(prepared) = Some(PreparedBatch {
                outcomes: outcomes.clone(),
                rooms: existing.clone(),
                inserted_ids: inserted.values().map(|&(id, _)| id).collect(),
            });
        }
        Ok(outcomes)
    })
    .await
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The batch's idempotency keys that are stored already, with their messages.
struct StoredKeys {
    index: HashMap<IdempotencyIndex, usize>,
    messages: Vec<ChatMessage>,
}

async fn stored_keys(
    tx: &mut AsyncPgConnection,
    batch: &[NewChatMessage],
    existing_rooms: &[i64],
) -> Result<StoredKeys, StoreFailure> {
    let mut rooms = Vec::new();
    let mut senders = Vec::new();
    let mut keys = Vec::new();
    for message in batch {
        if let Some(key) = &message.idempotency_key
            && existing_rooms.binary_search(&message.room_id.get()).is_ok()
        {
            rooms.push(message.room_id.get());
            senders.push(message.sender_id.get());
            keys.push(key.as_str());
        }
    }
    let mut found = StoredKeys {
        index: HashMap::new(),
        messages: Vec::new(),
    };
    if keys.is_empty() {
        return Ok(found);
    }
    let rows: Vec<KeyedRow> = diesel::sql_query(
        "SELECT m.id, m.chat_room_id, m.seq, m.sender_id, m.sender_nickname, m.content, \
                m.message_type, m.created_at, m.idempotency_key \
         FROM chat_messages AS m \
         JOIN unnest($1::int8[], $2::int8[], $3::text[]) AS k(room, sender, key) \
           ON m.chat_room_id = k.room AND m.sender_id = k.sender AND m.idempotency_key = k.key",
    )
    .bind::<Array<BigInt>, _>(&rooms)
    .bind::<Array<BigInt>, _>(&senders)
    .bind::<Array<Text>, _>(&keys)
    .load(tx)
    .await?;
    for row in rows {
        let index = (
            row.message.chat_room_id,
            row.message.sender_id,
            row.idempotency_key,
        );
        let message = ChatMessage::try_from(row.message)?;
        found.index.insert(index, found.messages.len());
        found.messages.push(message);
    }
    Ok(found)
}

/// Reserves `n` seqs per `(room, n)`; returns the first of them per room.
async fn reserve_seqs(
    tx: &mut AsyncPgConnection,
    counts: &[(i64, i64)],
) -> Result<HashMap<i64, i64>, StoreFailure> {
    if counts.is_empty() {
        return Ok(HashMap::new());
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
    Ok(reserved
        .iter()
        .map(|r| {
            let n = counts
                .iter()
                .find(|(id, _)| *id == r.id)
                .map_or(0, |&(_, n)| n);
            (r.id, r.last_seq - n + 1)
        })
        .collect())
}

/// Inserts the rows; returns (room, seq) → (id, created_at), matched by that unique pair
/// rather than by trusting RETURNING order.
async fn insert_rows(
    tx: &mut AsyncPgConnection,
    rows: &InsertColumns<'_>,
) -> Result<HashMap<(i64, i64), (i64, DateTime<Utc>)>, StoreFailure> {
    if rows.seqs.is_empty() {
        return Ok(HashMap::new());
    }
    let inserted: Vec<InsertedMessage> = diesel::sql_query(
        "INSERT INTO chat_messages \
             (chat_room_id, seq, sender_id, sender_nickname, content, message_type, \
              idempotency_key) \
         SELECT * FROM unnest($1::int8[], $2::int8[], $3::int8[], \
                              $4::text[], $5::text[], $6::text[], $7::text[]) \
         RETURNING id, chat_room_id, seq, created_at",
    )
    .bind::<Array<BigInt>, _>(&rows.room_ids)
    .bind::<Array<BigInt>, _>(&rows.seqs)
    .bind::<Array<BigInt>, _>(&rows.sender_ids)
    .bind::<Array<Text>, _>(&rows.nicknames)
    .bind::<Array<Text>, _>(&rows.contents)
    .bind::<Array<Text>, _>(&rows.message_types)
    .bind::<Array<Nullable<Text>>, _>(&rows.idempotency_keys)
    .load(tx)
    .await?;
    Ok(inserted
        .into_iter()
        .map(|row| ((row.chat_room_id, row.seq), (row.id, row.created_at)))
        .collect())
}

/// After a failure during the COMMIT of `prepared`: whether it took effect. Waits for the
/// rooms' row locks first, so a COMMIT that is still running on the old connection finishes
/// (or rolls back) before the rows are looked for; the ids a rolled-back insert drew are
/// never handed out again, so finding them means committed.
pub(crate) async fn committed(
    conn: &mut AsyncPgConnection,
    prepared: &PreparedBatch,
) -> Result<bool, StoreFailure> {
    conn.transaction::<_, StoreFailure, _>(async |tx| {
        let _locked: Vec<i64> = chat_rooms::table
            .filter(chat_rooms::id.eq_any(&prepared.rooms))
            .order(chat_rooms::id.asc())
            .select(chat_rooms::id)
            .for_update()
            .load(tx)
            .await?;
        let found: i64 = chat_messages::table
            .filter(chat_messages::id.eq_any(&prepared.inserted_ids))
            .count()
            .get_result(tx)
            .await?;
        Ok(found > 0)
    })
    .await
}

/// The newest seq of each existing room among `rooms`.
pub(crate) async fn last_seqs(
    conn: &mut AsyncPgConnection,
    rooms: &[RoomId],
) -> Result<Vec<(RoomId, Seq)>, StoreFailure> {
    if rooms.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = rooms.iter().map(|r| r.get()).collect();
    let rows: Vec<(i64, i64)> = chat_rooms::table
        .filter(chat_rooms::id.eq_any(&ids))
        .select((chat_rooms::id, chat_rooms::last_seq))
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, seq)| (RoomId(id), Seq(seq)))
        .collect())
}

pub(crate) fn stored_message(
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
    idempotency_keys: Vec<Option<&'a str>>,
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
            idempotency_keys: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, message: &'a NewChatMessage, seq: i64) {
        self.room_ids.push(message.room_id.get());
        self.seqs.push(seq);
        self.sender_ids.push(message.sender_id.get());
        self.nicknames.push(message.sender_nickname.as_str());
        self.contents.push(message.content.as_str());
        self.message_types.push(message.message_type.as_str());
        self.idempotency_keys
            .push(message.idempotency_key.as_ref().map(|k| k.as_str()));
    }
}
