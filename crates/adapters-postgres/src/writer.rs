//! One group-commit writer's own session, and the batch path that costs one round trip:
//! one statement that locks the batch's rooms, looks up its idempotency keys, reserves the
//! seqs and inserts the rows, in its own implicit transaction, answered once that
//! transaction has committed. A batch of one message, the usual batch at low load, has a
//! statement of its own that costs about half as much to run.
//!
//! Message ids are drawn from the table's sequence ahead of time, so a batch whose answer
//! was lost (connection cut, deadline passed) can be looked for by id. Before looking, the
//! old session is fenced: terminated on the server and waited for. A batch that had not yet
//! reached the server then can never commit behind the look's back, so "not found" means
//! "not stored", and what was not stored is simply sent again on the new session.
//!
//! The rest of the adapter goes through diesel; this path uses tokio-postgres directly
//! for its own session (fenced by process id) and for when it hands the rows over: after
//! the server's `ReadyForQuery`, which comes only once the commit is flushed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chat_domain::{
    ChatMessage, MessageId, MessageType, NewChatMessage, RepositoryError, RoomId, Seq,
};
use chrono::{DateTime, Utc};
use tokio_postgres::error::{Severity, SqlState};
use tokio_postgres::{Client, Row, Statement};

use crate::connection::describe_driver_error;
use crate::store::{self, AppendOutcome};

/// Ids drawn at once when the writer runs short: one extra round trip per this many
/// messages. Ids drawn by a process that stops are never used; they are 64-bit.
const ID_BLOCK: usize = 1024;

/// How long fencing waits for the old session's server process to end (it ends within
/// milliseconds unless the server is overloaded); below the smallest statement timeout the
/// server accepts from us (1 s), which would otherwise cancel the wait.
const FENCE_WAIT_MS: i64 = 800;

/// How often a batch is sent again after its answer was lost and the look found it (or
/// part of it) not stored.
const MAX_RESENDS: usize = 2;

/// The name of the partial unique index on (room, sender, idempotency key).
const IDEMPOTENCY_INDEX: &str = "chat_messages_idempotency_unique";

/// The primary key of `chat_messages` (the drawn ids).
const PRIMARY_KEY: &str = "chat_messages_pkey";

/// Locks the rooms in id order (every writer of every replica takes them in that order, so
/// batches sharing rooms never deadlock), answers keys already stored, reserves the seqs
/// of the rest and inserts them. A key that another writer committed while this statement
/// waited for the room lock is not in the statement's snapshot; the unique index then
/// fails the statement, and the batch goes the transactional way.
/// The key lookup runs once per keyed row through the index (`LIMIT 1` keeps the planner
/// from turning it into a scan of the table).
const APPEND_SQL: &str = "\
WITH input AS (
    SELECT * FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::text[], $5::text[],
                         $6::text[], $7::text[])
        WITH ORDINALITY AS i (id, room, sender, nickname, content, message_type,
                              idempotency_key, ord)
), locked AS MATERIALIZED (
    SELECT r.id FROM chat_rooms AS r
    WHERE r.id = ANY ($2::int8[])
    ORDER BY r.id
    FOR UPDATE
), stored AS MATERIALIZED (
    SELECT m.* FROM input AS i
    CROSS JOIN LATERAL (
        SELECT m.id, m.chat_room_id, m.seq, m.sender_id, m.sender_nickname, m.content,
               m.message_type, m.created_at, m.idempotency_key
        FROM chat_messages AS m
        WHERE m.chat_room_id = i.room AND m.sender_id = i.sender
          AND m.idempotency_key = i.idempotency_key AND m.idempotency_key IS NOT NULL
        LIMIT 1
    ) AS m
    WHERE i.idempotency_key IS NOT NULL AND i.room IN (SELECT id FROM locked)
), fresh AS MATERIALIZED (
    SELECT i.* FROM input AS i
    WHERE i.room IN (SELECT id FROM locked)
      AND NOT EXISTS (
          SELECT FROM stored AS s
          WHERE s.chat_room_id = i.room AND s.sender_id = i.sender
            AND s.idempotency_key = i.idempotency_key)
), reserved AS (
    UPDATE chat_rooms AS r SET last_seq = r.last_seq + c.n
    FROM (SELECT room, count(*) AS n FROM fresh GROUP BY room) AS c
    WHERE r.id = c.room AND r.id = ANY ($2::int8[])
    RETURNING r.id, r.last_seq - c.n AS base
), inserted AS (
    INSERT INTO chat_messages (id, chat_room_id, seq, sender_id, sender_nickname, content,
                               message_type, idempotency_key)
    SELECT f.id, f.room, v.base + row_number() OVER (PARTITION BY f.room ORDER BY f.ord),
           f.sender, f.nickname, f.content, f.message_type, f.idempotency_key
    FROM fresh AS f JOIN reserved AS v ON v.id = f.room
    RETURNING id, seq, created_at
)
SELECT false AS existing, id, seq, (extract(epoch FROM created_at) * 1000000)::int8,
       NULL::int8, NULL::int8, NULL::text, NULL::text, NULL::text, NULL::text
FROM inserted
UNION ALL
SELECT true, id, seq, (extract(epoch FROM created_at) * 1000000)::int8,
       chat_room_id, sender_id, sender_nickname, content, message_type, idempotency_key
FROM stored";

/// A batch of one message, the usual case at low load: the room row's UPDATE is the lock,
/// and a plan of two nodes is far cheaper to start than the batch statement's (measured:
/// about half the server CPU per message). No row back means the room is unknown or the
/// key is stored already (or was stored concurrently: then the unique index fails the
/// statement); both go the transactional way, which tells them apart.
const APPEND_ONE_SQL: &str = "\
WITH reserved AS (
    UPDATE chat_rooms SET last_seq = last_seq + 1
    WHERE id = $2::int8
      AND ($7::text IS NULL OR NOT EXISTS (
          SELECT FROM chat_messages AS m
          WHERE m.chat_room_id = $2::int8 AND m.sender_id = $3::int8
            AND m.idempotency_key = $7::text))
    RETURNING id, last_seq
)
INSERT INTO chat_messages (id, chat_room_id, seq, sender_id, sender_nickname, content,
                           message_type, idempotency_key)
SELECT $1::int8, id, last_seq, $3::int8, $4::text, $5::text, $6::text, $7::text FROM reserved
RETURNING seq, (extract(epoch FROM created_at) * 1000000)::int8";

const DRAW_IDS_SQL: &str = "SELECT nextval(pg_get_serial_sequence('chat_messages', 'id')) \
                            FROM generate_series(1, $1::int4)";

/// This session's server process, told apart from a later one with the same pid.
const WHO_AM_I_SQL: &str = "SELECT pid, (extract(epoch FROM backend_start) * 1000000)::int8 \
                            FROM pg_stat_activity WHERE pid = pg_backend_pid()";

/// Ends the old session's server process and waits for it; no row when it is gone already
/// (or the server is another one since a failover).
const FENCE_SQL: &str = "SELECT pg_terminate_backend(pid, $3::int8) FROM pg_stat_activity \
                         WHERE pid = $1::int4 \
                           AND (extract(epoch FROM backend_start) * 1000000)::int8 = $2::int8";

const FIND_SQL: &str = "SELECT id, seq, (extract(epoch FROM created_at) * 1000000)::int8 \
                        FROM chat_messages WHERE id = ANY ($1::int8[])";

/// A server process, as the session that ran on it saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Backend {
    pid: i32,
    started_us: i64,
}

/// How one attempt ended.
enum Attempt {
    Stored(Vec<Returned>),
    /// The server refused it: the transaction rolled back, nothing was stored.
    Refused(String),
    /// Nothing was stored, and the transactional path has to answer: an idempotency key
    /// was committed by another writer while this one waited for the room, or a batch of
    /// one found its room unknown or its key stored.
    NeedsTransaction,
    /// No answer: it may or may not have committed.
    Lost(String),
}

/// One row of the append statement's answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Returned {
    /// A row this batch inserted.
    Inserted {
        id: i64,
        seq: i64,
        created_at_us: i64,
    },
    /// A row stored earlier under one of the batch's idempotency keys.
    Existing(ChatMessage, String),
}

/// A writer's session with its prepared statements.
struct Session {
    client: Client,
    backend: Backend,
    append: Statement,
    append_one: Statement,
    draw_ids: Statement,
}

/// One group-commit writer: its session (opened on first use, reopened after a failure)
/// and the ids it drew ahead.
pub(crate) struct Writer {
    driver: Arc<tokio_postgres::Config>,
    connect_timeout: Duration,
    /// Bound on one attempt (statements and commit) and on one look after a lost answer.
    deadline: Duration,
    session: Option<Session>,
    /// Drawn and unused ids, taken from the end.
    ids: Vec<i64>,
}

impl Writer {
    pub(crate) fn new(
        driver: Arc<tokio_postgres::Config>,
        connect_timeout: Duration,
        deadline: Duration,
    ) -> Self {
        Self {
            driver,
            connect_timeout,
            deadline,
            session: None,
            ids: Vec::new(),
        }
    }

    /// Stores `batch` and answers each message once its transaction committed. What this
    /// path cannot answer goes to `transactional` (the pool's multi-statement path), as one
    /// batch of those messages.
    pub(crate) async fn store(
        &mut self,
        batch: &[NewChatMessage],
        transactional: impl AsyncFnOnce(
            Vec<NewChatMessage>,
        ) -> Result<Vec<AppendOutcome>, RepositoryError>,
    ) -> Vec<AppendOutcome> {
        let (sent, same_as) = deduplicate(batch);
        let mut answers: Vec<Option<AppendOutcome>> = vec![None; batch.len()];
        let ids = match self.take_ids(sent.len()).await {
            Ok(ids) => ids,
            Err(reason) => return unavailable_for_all(batch.len(), &reason),
        };
        // Positions in `batch` still waiting for an answer, and their ids.
        let mut pending: Vec<(usize, i64)> = sent.iter().copied().zip(ids).collect();
        let mut leftover: Vec<usize> = Vec::new();
        for resend in 0..=MAX_RESENDS {
            match self.attempt(batch, &pending).await {
                Attempt::Stored(rows) => {
                    for (position, answer) in answer_batch(batch, &pending, &rows) {
                        answers[position] = Some(answer);
                    }
                    break;
                }
                Attempt::NeedsTransaction => {
                    leftover = pending.iter().map(|&(p, _)| p).collect();
                    break;
                }
                Attempt::Refused(reason) => {
                    fill(&mut answers, &pending, || {
                        RepositoryError::Unavailable(reason.clone())
                    });
                    break;
                }
                Attempt::Lost(reason) => {
                    let old = self.session.take().map(|s| s.backend);
                    match self.fence_and_find(old, &pending).await {
                        Ok(found) => {
                            tracing::warn!(
                                error = %reason, found = found.len(), messages = pending.len(),
                                "PostgreSQL answer lost; the old session was ended and the batch looked for"
                            );
                            for (position, answer) in answer_found(batch, &pending, &found) {
                                answers[position] = Some(answer);
                            }
                            pending.retain(|&(p, _)| answers[p].is_none());
                            if pending.is_empty() {
                                break;
                            }
                            if resend == MAX_RESENDS {
                                // Fenced and not found: definitely not stored.
                                fill(&mut answers, &pending, || {
                                    RepositoryError::Unavailable(format!(
                                        "{reason}; nothing of it was stored"
                                    ))
                                });
                            }
                        }
                        Err(second) => {
                            tracing::error!(
                                error = %reason, check = %second,
                                "cannot tell whether a batch whose answer was lost is stored; its senders are told to retry with their idempotency key"
                            );
                            fill(&mut answers, &pending, || {
                                RepositoryError::OutcomeUnknown(format!(
                                    "{reason}; asking the database afterwards failed too: {second}"
                                ))
                            });
                            break;
                        }
                    }
                }
            }
        }
        if !leftover.is_empty() {
            let messages = leftover.iter().map(|&p| batch[p].clone()).collect();
            match transactional(messages).await {
                Ok(outcomes) => {
                    for (&position, outcome) in leftover.iter().zip(outcomes) {
                        answers[position] = Some(outcome);
                    }
                }
                Err(error) => {
                    for &position in &leftover {
                        answers[position] = Some(Err(error.clone()));
                    }
                }
            }
        }
        for (later, earlier) in same_as {
            answers[later] = answers[earlier].clone();
        }
        answers
            .into_iter()
            .map(|answer| {
                answer.unwrap_or_else(|| {
                    Err(RepositoryError::Unavailable(
                        "the writer gave no answer; nothing was stored".into(),
                    ))
                })
            })
            .collect()
    }

    /// `n` ids for new rows, drawing a block when there are too few.
    async fn take_ids(&mut self, n: usize) -> Result<Vec<i64>, String> {
        if self.ids.len() < n {
            let want = n.max(ID_BLOCK);
            let drawn = self.within_deadline(async |session: &Session| {
                let count = i32::try_from(want).unwrap_or(i32::MAX);
                let rows = session.client.query(&session.draw_ids, &[&count]).await?;
                Ok(rows
                    .iter()
                    .map(|r| r.get::<_, i64>(0))
                    .collect::<Vec<i64>>())
            });
            match drawn.await {
                Ok(mut drawn) => {
                    // Used from the end: keep the lowest ids for first.
                    drawn.reverse();
                    drawn.extend(std::mem::take(&mut self.ids));
                    self.ids = drawn;
                }
                Err(reason) => {
                    self.session = None;
                    return Err(reason);
                }
            }
        }
        let split = self.ids.len() - n;
        let mut taken = self.ids.split_off(split);
        taken.reverse();
        Ok(taken)
    }

    /// Runs `work` on the session (opening one if needed) within the deadline; any failure
    /// is described for a message.
    async fn within_deadline<T>(
        &mut self,
        work: impl AsyncFnOnce(&Session) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, String> {
        let deadline = self.deadline;
        let outcome = tokio::time::timeout(deadline, async {
            let session = self.session().await?;
            work(session).await.map_err(|e| describe(&e))
        })
        .await;
        outcome.unwrap_or_else(|_| {
            Err(format!(
                "the database did not answer within {} ms",
                deadline.as_millis()
            ))
        })
    }

    /// The open session, or a new one. A session whose connection is known to be closed
    /// (the server restarted or ended it while idle) is replaced before anything is sent
    /// on it, so that case never leaves an outcome open.
    async fn session(&mut self) -> Result<&Session, String> {
        if self.session.as_ref().is_some_and(|s| s.client.is_closed()) {
            self.session = None;
        }
        if self.session.is_none() {
            self.session = Some(Session::open(&self.driver, self.connect_timeout).await?);
        }
        self.session.as_ref().ok_or_else(|| "no session".to_owned())
    }

    async fn attempt(&mut self, batch: &[NewChatMessage], pending: &[(usize, i64)]) -> Attempt {
        let deadline = self.deadline;
        let session = match tokio::time::timeout(deadline, self.session()).await {
            Ok(Ok(session)) => session,
            // Nothing was sent: a definite "not stored".
            Ok(Err(reason)) => return Attempt::Refused(reason),
            Err(_) => return Attempt::Refused("opening a database session timed out".into()),
        };
        let columns = Columns::of(batch, pending);
        match tokio::time::timeout(deadline, session.append(&columns)).await {
            Ok(Ok(rows)) if pending.len() == 1 => match rows.first().map(parse_one) {
                None => Attempt::NeedsTransaction,
                Some(Ok((seq, created_at_us))) => Attempt::Stored(vec![Returned::Inserted {
                    id: pending[0].1,
                    seq,
                    created_at_us,
                }]),
                Some(Err(reason)) => Attempt::Lost(reason),
            },
            Ok(Ok(rows)) => match rows.iter().map(parse_returned).collect() {
                Ok(rows) => Attempt::Stored(rows),
                Err(reason) => Attempt::Lost(reason),
            },
            // On `Lost` the session stays: the caller fences its server process.
            Ok(Err(error)) => {
                if violates(&error, PRIMARY_KEY) {
                    // Someone else holds ids of this block (a failed-over server whose
                    // sequence had not seen the draw): draw a fresh block next time.
                    self.ids.clear();
                }
                classify(&error)
            }
            Err(_) => Attempt::Lost(format!(
                "the database did not answer within {} ms",
                deadline.as_millis()
            )),
        }
    }

    /// After a lost answer: ends the old session's server process on a new session, then
    /// finds which of `pending`'s ids are stored.
    async fn fence_and_find(
        &mut self,
        old: Option<Backend>,
        pending: &[(usize, i64)],
    ) -> Result<Vec<Returned>, String> {
        let ids: Vec<i64> = pending.iter().map(|&(_, id)| id).collect();
        let found = self
            .within_deadline(async |session: &Session| {
                if let Some(old) = old {
                    let fenced = session
                        .client
                        .query(FENCE_SQL, &[&old.pid, &old.started_us, &FENCE_WAIT_MS])
                        .await?;
                    if fenced.iter().any(|row| !row.get::<_, bool>(0)) {
                        return Ok(None);
                    }
                }
                let rows = session.client.query(FIND_SQL, &[&ids]).await?;
                Ok(Some(rows))
            })
            .await;
        match found {
            Ok(Some(rows)) => rows
                .iter()
                .map(|row| {
                    Ok(Returned::Inserted {
                        id: row.try_get(0).map_err(|e| e.to_string())?,
                        seq: row.try_get(1).map_err(|e| e.to_string())?,
                        created_at_us: row.try_get(2).map_err(|e| e.to_string())?,
                    })
                })
                .collect(),
            Ok(None) => {
                self.session = None;
                Err("the old database session did not end in time".into())
            }
            Err(reason) => {
                self.session = None;
                Err(reason)
            }
        }
    }
}

impl Session {
    async fn open(driver: &tokio_postgres::Config, timeout: Duration) -> Result<Self, String> {
        let opening = async {
            let (client, connection) = driver
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(|e| describe(&e))?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(error = %error, "PostgreSQL writer session ended");
                }
            });
            let setup = async {
                // The append statement's generic plan is the one it was written for
                // (index lookups per row); planning it again per batch is wasted CPU.
                client
                    .batch_execute("SET plan_cache_mode = force_generic_plan")
                    .await?;
                let me = client.query_one(WHO_AM_I_SQL, &[]).await?;
                let backend = Backend {
                    pid: me.try_get(0)?,
                    started_us: me.try_get(1)?,
                };
                let append = client.prepare(APPEND_SQL).await?;
                let append_one = client.prepare(APPEND_ONE_SQL).await?;
                let draw_ids = client.prepare(DRAW_IDS_SQL).await?;
                Ok::<_, tokio_postgres::Error>((backend, append, append_one, draw_ids))
            };
            let (backend, append, append_one, draw_ids) = setup.await.map_err(|e| describe(&e))?;
            Ok(Self {
                client,
                backend,
                append,
                append_one,
                draw_ids,
            })
        };
        tokio::time::timeout(timeout, opening)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "opening a database session took longer than {} ms",
                    timeout.as_millis()
                ))
            })
    }

    /// The append statement, outside any explicit transaction: PostgreSQL runs it in an
    /// implicit one that commits at the request's `Sync`, and answers `ReadyForQuery` only
    /// after that commit (flushed, with `synchronous_commit=on`). `Client::query` returns
    /// at `ReadyForQuery`, not at the statement's `CommandComplete`, and a failure of the
    /// commit itself arrives before it as an error: rows returned here are committed.
    async fn append(&self, columns: &Columns<'_>) -> Result<Vec<Row>, tokio_postgres::Error> {
        type Param<'p> = &'p (dyn tokio_postgres::types::ToSql + Sync);
        let params: [Param<'_>; 7];
        let statement = if columns.ids.len() == 1 {
            // One message: its values, not arrays of one.
            params = [
                &columns.ids[0],
                &columns.rooms[0],
                &columns.senders[0],
                &columns.nicknames[0],
                &columns.contents[0],
                &columns.message_types[0],
                &columns.keys[0],
            ];
            &self.append_one
        } else {
            params = [
                &columns.ids,
                &columns.rooms,
                &columns.senders,
                &columns.nicknames,
                &columns.contents,
                &columns.message_types,
                &columns.keys,
            ];
            &self.append
        };
        self.client.query(statement, &params).await
    }
}

/// The columns of the rows sent, in the order of `pending`.
struct Columns<'a> {
    ids: Vec<i64>,
    rooms: Vec<i64>,
    senders: Vec<i64>,
    nicknames: Vec<&'a str>,
    contents: Vec<&'a str>,
    message_types: Vec<&'static str>,
    keys: Vec<Option<&'a str>>,
}

impl<'a> Columns<'a> {
    fn of(batch: &'a [NewChatMessage], pending: &[(usize, i64)]) -> Self {
        let mut columns = Self {
            ids: Vec::with_capacity(pending.len()),
            rooms: Vec::with_capacity(pending.len()),
            senders: Vec::with_capacity(pending.len()),
            nicknames: Vec::with_capacity(pending.len()),
            contents: Vec::with_capacity(pending.len()),
            message_types: Vec::with_capacity(pending.len()),
            keys: Vec::with_capacity(pending.len()),
        };
        for &(position, id) in pending {
            let message = &batch[position];
            columns.ids.push(id);
            columns.rooms.push(message.room_id.get());
            columns.senders.push(message.sender_id.get());
            columns.nicknames.push(message.sender_nickname.as_str());
            columns.contents.push(message.content.as_str());
            columns.message_types.push(message.message_type.as_str());
            columns
                .keys
                .push(message.idempotency_key.as_ref().map(|k| k.as_str()));
        }
        columns
    }
}

/// Which positions of `batch` are sent, and which repeat an earlier message's
/// idempotency key (answered like that one: `(later, earlier)`).
fn deduplicate(batch: &[NewChatMessage]) -> (Vec<usize>, Vec<(usize, usize)>) {
    let mut first: HashMap<(i64, i64, &str), usize> = HashMap::new();
    let mut sent = Vec::with_capacity(batch.len());
    let mut same_as = Vec::new();
    for (position, message) in batch.iter().enumerate() {
        if let Some(key) = &message.idempotency_key {
            let index = (message.room_id.get(), message.sender_id.get(), key.as_str());
            if let Some(&earlier) = first.get(&index) {
                same_as.push((position, earlier));
                continue;
            }
            first.insert(index, position);
        }
        sent.push(position);
    }
    (sent, same_as)
}

/// The answers of a committed attempt: inserted rows by id, earlier rows by key, and
/// `UnknownRoom` for what is neither (the statement skips rooms it did not find).
fn answer_batch(
    batch: &[NewChatMessage],
    pending: &[(usize, i64)],
    rows: &[Returned],
) -> Vec<(usize, AppendOutcome)> {
    let mut inserted: HashMap<i64, (i64, i64)> = HashMap::new();
    let mut existing: HashMap<(i64, i64, &str), &ChatMessage> = HashMap::new();
    for row in rows {
        match row {
            Returned::Inserted {
                id,
                seq,
                created_at_us,
            } => {
                inserted.insert(*id, (*seq, *created_at_us));
            }
            Returned::Existing(message, key) => {
                existing.insert(
                    (message.room_id.get(), message.sender_id.get(), key.as_str()),
                    message,
                );
            }
        }
    }
    pending
        .iter()
        .map(|&(position, id)| {
            let message = &batch[position];
            let outcome = if let Some(&(seq, created_at_us)) = inserted.get(&id) {
                Ok(stored_message(message, id, seq, created_at_us))
            } else if let Some(earlier) = message.idempotency_key.as_ref().and_then(|key| {
                existing.get(&(message.room_id.get(), message.sender_id.get(), key.as_str()))
            }) {
                Ok((*earlier).clone())
            } else {
                Err(RepositoryError::UnknownRoom(message.room_id))
            };
            (position, outcome)
        })
        .collect()
}

/// The answers a look after a lost answer gives: only the rows found by id. What was not
/// found is not stored (the old session is fenced) and is sent again.
fn answer_found(
    batch: &[NewChatMessage],
    pending: &[(usize, i64)],
    found: &[Returned],
) -> Vec<(usize, AppendOutcome)> {
    let ids: HashMap<i64, usize> = pending.iter().map(|&(p, id)| (id, p)).collect();
    found
        .iter()
        .filter_map(|row| match row {
            Returned::Inserted {
                id,
                seq,
                created_at_us,
            } => ids
                .get(id)
                .map(|&p| (p, Ok(stored_message(&batch[p], *id, *seq, *created_at_us)))),
            Returned::Existing(..) => None,
        })
        .collect()
}

fn fill(
    answers: &mut [Option<AppendOutcome>],
    pending: &[(usize, i64)],
    error: impl Fn() -> RepositoryError,
) {
    for &(position, _) in pending {
        answers[position] = Some(Err(error()));
    }
}

fn unavailable_for_all(n: usize, reason: &str) -> Vec<AppendOutcome> {
    (0..n)
        .map(|_| {
            Err(RepositoryError::Unavailable(format!(
                "{reason}; nothing was stored"
            )))
        })
        .collect()
}

/// Whether `error` is a unique violation of `constraint`.
fn violates(error: &tokio_postgres::Error, constraint: &str) -> bool {
    error.as_db_error().is_some_and(|db| {
        *db.code() == SqlState::UNIQUE_VIOLATION && db.constraint() == Some(constraint)
    })
}

/// A server-side ERROR rolled the transaction back; anything else (connection closed,
/// FATAL) leaves the outcome open.
fn classify(error: &tokio_postgres::Error) -> Attempt {
    match error.as_db_error() {
        Some(db) if db.parsed_severity() == Some(Severity::Error) => {
            if violates(error, IDEMPOTENCY_INDEX) {
                Attempt::NeedsTransaction
            } else {
                Attempt::Refused(format!(
                    "the database rejected the statement: {}",
                    db.message()
                ))
            }
        }
        _ => Attempt::Lost(describe(error)),
    }
}

fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("the database said: {}", db.message()),
        None => describe_driver_error(error),
    }
}

/// The one-message statement's row: (seq, created_at in µs).
fn parse_one(row: &Row) -> Result<(i64, i64), String> {
    let field = |e: tokio_postgres::Error| format!("unexpected answer to the append: {e}");
    Ok((
        row.try_get(0).map_err(field)?,
        row.try_get(1).map_err(field)?,
    ))
}

fn parse_returned(row: &Row) -> Result<Returned, String> {
    let field = |e: tokio_postgres::Error| format!("unexpected answer to the append: {e}");
    let existing: bool = row.try_get(0).map_err(field)?;
    let id: i64 = row.try_get(1).map_err(field)?;
    let seq: i64 = row.try_get(2).map_err(field)?;
    let created_at_us: i64 = row.try_get(3).map_err(field)?;
    if !existing {
        return Ok(Returned::Inserted {
            id,
            seq,
            created_at_us,
        });
    }
    let message_type: String = row.try_get(8).map_err(field)?;
    let message = ChatMessage {
        id: MessageId(id),
        room_id: RoomId(row.try_get(4).map_err(field)?),
        seq: Seq(seq),
        sender_id: chat_domain::SenderId(row.try_get(5).map_err(field)?),
        sender_nickname: row.try_get(6).map_err(field)?,
        content: row.try_get(7).map_err(field)?,
        message_type: MessageType::from_name(&message_type)
            .ok_or_else(|| format!("message {id} has the unknown message_type {message_type:?}"))?,
        created_at: timestamp(created_at_us),
    };
    Ok(Returned::Existing(message, row.try_get(9).map_err(field)?))
}

fn timestamp(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

fn stored_message(message: &NewChatMessage, id: i64, seq: i64, created_at_us: i64) -> ChatMessage {
    store::stored_message(message, id, seq, timestamp(created_at_us))
}

#[cfg(test)]
mod tests {
    use chat_domain::{ChatMessageRequest, IdempotencyKey, SenderId};

    use super::*;

    fn message(room: i64, key: Option<&str>) -> NewChatMessage {
        NewChatMessage::try_from(ChatMessageRequest {
            chat_room_id: Some(RoomId(room)),
            sender_id: Some(SenderId(7)),
            sender_nickname: Some("ann".into()),
            content: Some(format!("to {room}")),
            message_type: Some(MessageType::Text),
        })
        .unwrap()
        .with_idempotency_key(key.map(|k| IdempotencyKey::parse(k).unwrap()))
    }

    #[test]
    fn a_key_repeated_in_one_batch_is_sent_once_and_answered_like_the_first() {
        let batch = [
            message(1, Some("a")),
            message(1, None),
            message(1, Some("a")),
            message(2, Some("a")),
            message(1, None),
        ];
        let (sent, same_as) = deduplicate(&batch);
        assert_eq!(
            sent,
            vec![0, 1, 3, 4],
            "same key in another room is another send"
        );
        assert_eq!(same_as, vec![(2, 0)]);
    }

    #[test]
    fn answers_come_from_inserted_ids_then_stored_keys_and_the_rest_is_an_unknown_room() {
        let batch = [message(1, None), message(1, Some("k")), message(9, None)];
        let pending = [(0, 100), (1, 101), (2, 102)];
        let earlier = stored_message(&batch[1], 50, 3, 0);
        let rows = [
            Returned::Inserted {
                id: 100,
                seq: 4,
                created_at_us: 1_000_000,
            },
            Returned::Existing(earlier.clone(), "k".into()),
        ];
        let answers = answer_batch(&batch, &pending, &rows);
        let inserted = answers[0].1.as_ref().unwrap();
        assert_eq!((inserted.id, inserted.seq), (MessageId(100), Seq(4)));
        assert_eq!(inserted.created_at.timestamp(), 1);
        assert_eq!(answers[1].1.as_ref().unwrap(), &earlier);
        assert!(matches!(
            answers[2].1,
            Err(RepositoryError::UnknownRoom(RoomId(9)))
        ));
    }

    #[test]
    fn a_look_answers_only_the_ids_it_found() {
        let batch = [message(1, None), message(1, None)];
        let pending = [(0, 100), (1, 101)];
        let found = [Returned::Inserted {
            id: 101,
            seq: 2,
            created_at_us: 0,
        }];
        let answers = answer_found(&batch, &pending, &found);
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].0, 1);
        assert_eq!(answers[0].1.as_ref().unwrap().seq, Seq(2));
    }
}
