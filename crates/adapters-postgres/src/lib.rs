//! `MessageRepository` over PostgreSQL with diesel-async: a deadpool pool whose every
//! connection has connect and statement timeouts, embedded migrations applied at start-up
//! under an advisory lock, gap-free per-room `seq` across processes, and group commit whose
//! writers store a batch in one round trip on a tokio-postgres session of their own; read
//! cursors (`ReadCursors`) are coalesced by a writer of their own, one statement per burst.
//!
//! Nothing outside this crate sees a diesel or tokio-postgres type: start-up fails with a
//! [`PostgresError`] an operator can act on, and the port returns the domain's
//! `RepositoryError`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod connection;
mod cursors;
mod error;
mod group_commit;
mod migrations;
mod repository;
mod schema;
mod store;
mod writer;

pub use config::{PostgresConfig, redact_url};
pub use cursors::CursorWriterCounts;
pub use error::PostgresError;
pub use migrations::newest_known_version;
pub use repository::PostgresRepository;
