//! Errors of this adapter: [`PostgresError`] for start-up (what an operator must fix), and
//! the mapping of driver errors to the domain's `RepositoryError` at the port boundary.

use std::fmt;

use chat_domain::RepositoryError;
use thiserror::Error;

/// Why [`PostgresRepository::connect`](crate::PostgresRepository::connect) failed. Every
/// message says what happened and what to do; none contains the password of the URL.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PostgresError {
    /// The URL cannot be parsed.
    #[error(
        "DATABASE_URL is not a valid PostgreSQL URL ({url}): {reason}. \
         Expected the form postgres://user:password@host:5432/database"
    )]
    InvalidUrl {
        /// The URL with its password replaced by `****`.
        url: String,
        /// What is wrong: the parser's complaint (password removed), or a setting this build
        /// refuses such as `sslmode=require`.
        reason: String,
    },

    /// A pool or timeout setting is out of range.
    #[error("invalid PostgreSQL setting: {0}")]
    InvalidSetting(String),

    /// Nothing answered at the address, or it did not answer in time.
    #[error(
        "cannot reach PostgreSQL at {target}: {reason}. Check that the server is running \
         and reachable from this host (address, port, firewall), then restart"
    )]
    Unreachable {
        /// The database as `user@host:port/database`; never a password.
        target: String,
        /// What the driver reported, or the timeout that passed.
        reason: String,
    },

    /// The server answered but refused us (wrong password, unknown user or database, TLS
    /// required).
    #[error(
        "PostgreSQL at {target} refused the connection: {reason}. Check the user, password \
         and database name in DATABASE_URL"
    )]
    Refused {
        /// The database as `user@host:port/database`; never a password.
        target: String,
        /// What the server said.
        reason: String,
    },

    /// Applying the embedded migrations failed; the schema was left as the last successful
    /// migration left it (each migration runs in its own transaction).
    #[error(
        "the database schema migration on {target} failed: {reason}. Nothing of the failed \
         step was applied; fix the cause (permissions, disk, a hand-made change to the \
         chat_* tables) and restart"
    )]
    Migration {
        /// The database as `user@host:port/database`; never a password.
        target: String,
        /// Why the step failed.
        reason: String,
    },

    /// The database was migrated by a newer release of chat-service than this one.
    #[error(
        "the database schema on {target} is newer than this build of chat-service knows \
         (database is at migration {database_version}, this build knows up to \
         {known_version}). Deploy the newer chat-service release, or restore a database \
         that matches this one; this build will not touch a schema it does not understand"
    )]
    SchemaTooNew {
        /// The database as `user@host:port/database`; never a password.
        target: String,
        /// The newest migration applied to the database, e.g. `20261203000000`.
        database_version: String,
        /// The newest migration this build embeds (`none` if it embeds none).
        known_version: String,
    },
}

/// A driver or pool failure inside the adapter, before it crosses the port. Kept apart
/// from `RepositoryError` so the adapter can tell "the room is missing" from "the store is
/// down" and so that no diesel type leaves this crate.
#[derive(Debug)]
pub(crate) enum StoreFailure {
    /// Waiting for, or opening, a pooled connection failed.
    Pool(String),
    /// A statement failed.
    Query(diesel::result::Error),
    /// Our own deadline passed before the server answered.
    TimedOut(std::time::Duration),
    /// The database holds something our schema rules out (a hand edit).
    Corrupt(String),
}

impl From<diesel::result::Error> for StoreFailure {
    fn from(error: diesel::result::Error) -> Self {
        Self::Query(error)
    }
}

impl fmt::Display for StoreFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pool(reason) => write!(f, "no database connection: {reason}"),
            Self::Query(diesel::result::Error::DatabaseError(_, info)) => {
                write!(f, "the database rejected the statement: {}", info.message())
            }
            Self::Query(error) => write!(f, "database error: {error}"),
            Self::TimedOut(after) => {
                write!(
                    f,
                    "the database did not answer within {} ms",
                    after.as_millis()
                )
            }
            Self::Corrupt(what) => write!(f, "unexpected data in the database: {what}"),
        }
    }
}

impl From<StoreFailure> for RepositoryError {
    fn from(failure: StoreFailure) -> Self {
        RepositoryError::Unavailable(failure.to_string())
    }
}

/// Renders a deadpool error for a message (its own Display says little about timeouts).
pub(crate) fn describe_pool_error(
    error: &diesel_async::pooled_connection::deadpool::PoolError,
) -> String {
    use deadpool::managed::{PoolError, TimeoutType};
    match error {
        PoolError::Timeout(TimeoutType::Wait) => {
            "every pooled connection stayed busy past the connect timeout".into()
        }
        PoolError::Timeout(TimeoutType::Create) => {
            "opening a connection took longer than the connect timeout".into()
        }
        PoolError::Timeout(TimeoutType::Recycle) => {
            "checking a pooled connection took longer than the connect timeout".into()
        }
        PoolError::Backend(backend) => backend.to_string(),
        PoolError::Closed => "the connection pool was closed".into(),
        PoolError::NoRuntimeSpecified => "the connection pool has no runtime".into(),
        PoolError::PostCreateHook(hook) => hook.to_string(),
    }
}
