//! [`PostgresRepository`]: start-up (URL check, first connection, migrations, pool) and
//! the `MessageRepository` port over the pool, with every operation bounded in time so a
//! dead database gives `Unavailable` instead of a hang.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chat_domain::{
    ChatMessage, HistoryQuery, MessageRepository, NewChatMessage, NewRoom, RepositoryError, Room,
    RoomId, RoomListQuery, RoomMembers, SenderId, Seq,
};
use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::deadpool::Object;
use tokio::sync::{mpsc, oneshot};

use crate::config::describe_target;
use crate::connection::{PgPool, build_pool, establish};
use crate::error::{StoreFailure, describe_pool_error};
use crate::group_commit::{PendingAppend, StoreBatch, run_writer};
use crate::store::{self, AppendOutcome};
use crate::writer::Writer;
use crate::{PostgresConfig, PostgresError, migrations};

/// `MessageRepository` over PostgreSQL. Cheap to clone: clones share the pool and the
/// group-commit writers, which stop once the last clone is dropped.
#[derive(Clone)]
pub struct PostgresRepository {
    pub(crate) shared: Arc<Shared>,
    appends: Appends,
    /// The queue of the read-cursor writer (see `cursors.rs`).
    pub(crate) cursors: crate::cursors::CursorWriter,
}

#[derive(Clone)]
enum Appends {
    /// `max_batch == 1`: each append is its own transaction on its own pooled connection.
    OnePerTransaction,
    /// Appends queue for the group-commit writers, one queue per writer.
    Grouped(Arc<[mpsc::Sender<PendingAppend>]>),
}

/// What every operation and every writer needs.
pub(crate) struct Shared {
    pool: PgPool,
    /// `user@host:port/db`, for messages.
    pub(crate) target: String,
    /// Our own bound on one whole operation (checkout, statements, commit). The server's
    /// statement timeout and the pool's timeouts normally fire first; this one covers a
    /// peer that stopped answering without closing the connection.
    deadline: Duration,
    health_timeout: Duration,
}

impl std::fmt::Debug for PostgresRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.shared.pool.status();
        f.debug_struct("PostgresRepository")
            .field("target", &self.shared.target)
            .field("pool_size", &status.max_size)
            .field("open_connections", &status.size)
            .field("group_commit", &matches!(self.appends, Appends::Grouped(_)))
            .finish()
    }
}

impl PostgresRepository {
    /// Checks the configuration, connects, brings the schema up to date (under an advisory
    /// lock, so replicas may start together) and starts the pool and the group-commit
    /// writers. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`PostgresError::InvalidUrl`] / [`PostgresError::InvalidSetting`] for the
    /// configuration, [`PostgresError::Unreachable`] / [`PostgresError::Refused`] when the
    /// first connection fails, [`PostgresError::Migration`] and
    /// [`PostgresError::SchemaTooNew`] for the schema. Each message is meant to be logged
    /// as it is and carries no password.
    pub async fn connect(config: PostgresConfig) -> Result<Self, PostgresError> {
        let driver = config.driver_config()?;
        let target = describe_target(&driver);
        let first = establish(&driver, config.connect_timeout)
            .await
            .map_err(|failure| failure.into_startup_error(&target))?;
        migrations::run_pending(first, target.clone()).await?;
        let pool = build_pool(
            driver.clone(),
            config.redacted_url(),
            config.pool_size,
            config.connect_timeout,
        )?;
        let shared = Arc::new(Shared {
            pool,
            target,
            deadline: config.connect_timeout * 2 + config.statement_timeout * 2,
            health_timeout: config.connect_timeout.min(Duration::from_secs(2)),
        });
        let appends = if config.max_batch == 1 {
            Appends::OnePerTransaction
        } else {
            // One queue per writer, rooms split between them by id: two writers of this
            // process never wait for each other's room locks, so their transactions
            // (and fsyncs) overlap instead of queueing behind one another.
            let driver = Arc::new(driver);
            let queues = (0..config.writers)
                .map(|_| {
                    // Room for two full batches; past that, senders wait here
                    // (back-pressure) instead of queueing without bound.
                    let (sender, receiver) = mpsc::channel(config.max_batch.saturating_mul(2));
                    let writer = GroupWriter {
                        writer: Writer::new(
                            Arc::clone(&driver),
                            config.connect_timeout,
                            shared.deadline,
                        ),
                        shared: Arc::clone(&shared),
                    };
                    tokio::spawn(run_writer(writer, receiver, config.max_batch));
                    sender
                })
                .collect();
            Appends::Grouped(queues)
        };
        tracing::info!(
            database = %shared.target,
            pool_size = config.pool_size,
            max_batch = config.max_batch,
            writers = config.writers,
            "PostgreSQL message store ready"
        );
        let cursors = crate::cursors::CursorWriter::start(Arc::clone(&shared));
        Ok(Self {
            shared,
            appends,
            cursors,
        })
    }
}

/// A group-commit writer: the one-round-trip path on its own session, and the
/// transactional path on a pooled connection for the rare batch that needs it.
struct GroupWriter {
    writer: Writer,
    shared: Arc<Shared>,
}

impl StoreBatch for GroupWriter {
    async fn store(
        &mut self,
        batch: Vec<NewChatMessage>,
    ) -> Result<Vec<AppendOutcome>, RepositoryError> {
        let shared = Arc::clone(&self.shared);
        Ok(self
            .writer
            .store(&batch, async move |rest: Vec<NewChatMessage>| {
                tracing::debug!(
                    messages = rest.len(),
                    "messages the one-statement path cannot answer go the transactional way"
                );
                shared.append_batch(&rest).await
            })
            .await)
    }
}

impl Shared {
    /// Runs one operation under the deadline and turns any failure into `Unavailable`.
    pub(crate) async fn bounded<T>(
        &self,
        operation: impl Future<Output = Result<T, StoreFailure>>,
    ) -> Result<T, RepositoryError> {
        self.within_deadline(operation).await.map_err(|failure| {
            tracing::warn!(database = %self.target, error = %failure, "PostgreSQL operation failed");
            RepositoryError::from(failure)
        })
    }

    async fn within_deadline<T>(
        &self,
        operation: impl Future<Output = Result<T, StoreFailure>>,
    ) -> Result<T, StoreFailure> {
        match tokio::time::timeout(self.deadline, operation).await {
            Ok(outcome) => outcome,
            Err(_) => Err(StoreFailure::TimedOut(self.deadline)),
        }
    }

    pub(crate) async fn connection(&self) -> Result<Object<AsyncPgConnection>, StoreFailure> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreFailure::Pool(describe_pool_error(&e)))
    }

    /// Stores a batch in one transaction: one outcome per message, or one error for all.
    ///
    /// A failure before the COMMIT is `Unavailable` (nothing stored). A failure during the
    /// COMMIT (connection lost, deadline passed) is looked into on another connection: the
    /// batch's answers if it committed, `Unavailable` if it rolled back, and
    /// `OutcomeUnknown` only when the store cannot be asked either.
    async fn append_batch(
        &self,
        batch: &[NewChatMessage],
    ) -> Result<Vec<AppendOutcome>, RepositoryError> {
        let prepared = Mutex::new(None);
        let attempt = self
            .within_deadline(async {
                let mut conn = self.connection().await?;
                store::append_batch(&mut conn, batch, &prepared).await
            })
            .await;
        let failure = match attempt {
            Ok(outcomes) => return Ok(outcomes),
            Err(failure) => failure,
        };
        let prepared = prepared
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(prepared) = prepared else {
            tracing::warn!(database = %self.target, error = %failure, "PostgreSQL append failed; nothing was stored");
            return Err(RepositoryError::from(failure));
        };
        tracing::warn!(
            database = %self.target, error = %failure, messages = batch.len(),
            "PostgreSQL connection lost while committing; checking whether the batch was stored"
        );
        let check = self
            .within_deadline(async {
                let mut conn = self.connection().await?;
                store::committed(&mut conn, &prepared).await
            })
            .await;
        match check {
            Ok(true) => {
                tracing::info!(database = %self.target, "the batch whose COMMIT was cut off is stored");
                Ok(prepared.outcomes)
            }
            Ok(false) => Err(RepositoryError::Unavailable(format!(
                "{failure}; the transaction was rolled back, nothing was stored"
            ))),
            Err(second) => {
                tracing::error!(
                    database = %self.target, error = %second,
                    "cannot tell whether a batch whose COMMIT was cut off is stored; its senders are told to retry with their idempotency key"
                );
                Err(RepositoryError::OutcomeUnknown(format!(
                    "{failure}; asking the database afterwards failed too: {second}"
                )))
            }
        }
    }
}

#[async_trait]
impl MessageRepository for PostgresRepository {
    async fn create_room(&self, room: NewRoom) -> Result<Room, RepositoryError> {
        self.shared
            .bounded(async {
                let mut conn = self.shared.connection().await?;
                store::create_room(&mut conn, &room).await
            })
            .await
    }

    async fn find_room(&self, id: RoomId) -> Result<Option<Room>, RepositoryError> {
        self.shared
            .bounded(async {
                let mut conn = self.shared.connection().await?;
                store::find_room(&mut conn, id).await
            })
            .await
    }

    async fn list_rooms(&self, query: RoomListQuery) -> Result<Vec<Room>, RepositoryError> {
        self.shared
            .bounded(async {
                let mut conn = self.shared.connection().await?;
                store::list_rooms(&mut conn, query).await
            })
            .await
    }

    async fn append(&self, message: NewChatMessage) -> Result<ChatMessage, RepositoryError> {
        match &self.appends {
            Appends::OnePerTransaction => {
                let mut outcomes = self
                    .shared
                    .append_batch(std::slice::from_ref(&message))
                    .await?;
                outcomes.pop().unwrap_or_else(|| Err(writer_gone()))
            }
            Appends::Grouped(queues) => {
                let (reply, answer) = oneshot::channel();
                queues[writer_for(message.room_id, queues.len())]
                    .send(PendingAppend { message, reply })
                    .await
                    .map_err(|_| writer_gone())?;
                answer.await.unwrap_or_else(|_| Err(writer_gone()))
            }
        }
    }

    async fn history(
        &self,
        room: RoomId,
        query: HistoryQuery,
    ) -> Result<Vec<ChatMessage>, RepositoryError> {
        self.shared
            .bounded(async {
                let mut conn = self.shared.connection().await?;
                store::history(&mut conn, room, query).await
            })
            .await?
    }

    async fn last_seqs(&self, rooms: &[RoomId]) -> Result<Vec<(RoomId, Seq)>, RepositoryError> {
        self.shared
            .bounded(async {
                let mut conn = self.shared.connection().await?;
                store::last_seqs(&mut conn, rooms).await
            })
            .await
    }

    async fn check_health(&self) -> Result<(), RepositoryError> {
        let probe = async {
            let mut conn = self.shared.connection().await?;
            store::ping(&mut conn).await
        };
        match tokio::time::timeout(self.shared.health_timeout, probe).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(failure)) => Err(RepositoryError::Unavailable(format!(
                "PostgreSQL at {} is not usable: {failure}",
                self.shared.target
            ))),
            Err(_) => Err(RepositoryError::Unavailable(format!(
                "PostgreSQL at {} did not answer within {} ms",
                self.shared.target,
                self.shared.health_timeout.as_millis()
            ))),
        }
    }
}

#[async_trait]
impl RoomMembers for PostgresRepository {
    async fn add_member(&self, room: RoomId, user: SenderId) -> Result<bool, RepositoryError> {
        self.shared
            .bounded(async {
                let mut conn = self.shared.connection().await?;
                store::add_member(&mut conn, room, user).await
            })
            .await?
    }

    async fn remove_member(&self, room: RoomId, user: SenderId) -> Result<bool, RepositoryError> {
        self.shared
            .bounded(async {
                let mut conn = self.shared.connection().await?;
                store::remove_member(&mut conn, room, user).await
            })
            .await
    }

    async fn is_member(&self, room: RoomId, user: SenderId) -> Result<bool, RepositoryError> {
        self.shared
            .bounded(async {
                let mut conn = self.shared.connection().await?;
                store::is_member(&mut conn, room, user).await
            })
            .await
    }
}

/// The writer whose queue takes `room`: always the same one, so a room's appends are
/// never split over two writers of this process.
fn writer_for(room: RoomId, writers: usize) -> usize {
    let writers = i64::try_from(writers).unwrap_or(i64::MAX);
    usize::try_from(room.get().rem_euclid(writers)).unwrap_or(0)
}

/// Only reachable if a writer task panicked or the runtime is shutting down.
fn writer_gone() -> RepositoryError {
    RepositoryError::Unavailable(
        "the PostgreSQL writer stopped before answering (the process is shutting down or \
         hit a bug); check the history before sending the message again"
            .into(),
    )
}
