//! The schema, embedded in the binary, and how it is applied at start-up: under a
//! PostgreSQL advisory lock so replicas starting together take turns, and never over a
//! schema newer than this build knows.

use diesel::RunQueryDsl;
use diesel::migration::{MigrationSource, MigrationVersion};
use diesel::pg::Pg;
use diesel::sql_types::BigInt;
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::PostgresError;

/// The `migrations/` directory of this crate, compiled in.
pub(crate) const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Identifies our advisory lock among any others the database's users take ("chat_mig").
const MIGRATION_LOCK_KEY: i64 = 0x6368_6174_5f6d_6967;

/// How long a replica waits for another replica's migration (and a migration step may
/// run) before giving up; far above what our migrations take, far below "hung forever".
const MIGRATION_STATEMENT_TIMEOUT: &str = "120s";

fn migration_failed(target: &str, reason: String) -> PostgresError {
    PostgresError::Migration {
        target: target.to_owned(),
        reason,
    }
}

/// Applies the pending migrations on `connection`, which is consumed: the session ends
/// with it, which also releases the lock should unlocking fail.
///
/// diesel's migration harness is synchronous; it runs on the blocking pool through
/// `AsyncConnectionWrapper`, which works on every tokio runtime flavour (diesel-async's
/// `AsyncMigrationHarness` panics on a current-thread runtime).
pub(crate) async fn run_pending(
    connection: AsyncPgConnection,
    target: String,
) -> Result<(), PostgresError> {
    let task_target = target.clone();
    tokio::task::spawn_blocking(move || {
        let mut connection = AsyncConnectionWrapper::<AsyncPgConnection>::from(connection);
        run_locked(&mut connection, &task_target)
    })
    .await
    .map_err(|e| {
        migration_failed(
            &target,
            format!("the migration task stopped unexpectedly: {e}"),
        )
    })?
}

fn run_locked(
    connection: &mut AsyncConnectionWrapper<AsyncPgConnection>,
    target: &str,
) -> Result<(), PostgresError> {
    let failed = |reason: String| migration_failed(target, reason);
    diesel::sql_query(format!(
        "SET statement_timeout = '{MIGRATION_STATEMENT_TIMEOUT}'"
    ))
    .execute(connection)
    .map_err(|e| failed(format!("cannot configure the session: {e}")))?;
    // Session-level lock: every replica starting now queues here, and the ones after the
    // first find nothing pending.
    diesel::sql_query("SELECT pg_advisory_lock($1)")
        .bind::<BigInt, _>(MIGRATION_LOCK_KEY)
        .execute(connection)
        .map_err(|e| {
            failed(format!(
                "waiting for another replica's migration lock failed: {e}"
            ))
        })?;
    let outcome = migrate(connection, target);
    let unlocked = diesel::sql_query("SELECT pg_advisory_unlock($1)")
        .bind::<BigInt, _>(MIGRATION_LOCK_KEY)
        .execute(connection);
    if let Err(e) = unlocked {
        // Harmless: the session (and the lock with it) ends when the connection drops.
        tracing::debug!(error = %e, "releasing the migration lock failed");
    }
    outcome
}

fn migrate(
    connection: &mut AsyncConnectionWrapper<AsyncPgConnection>,
    target: &str,
) -> Result<(), PostgresError> {
    let failed = |reason: String| migration_failed(target, reason);
    let known = known_versions().map_err(failed)?;
    let newest_known = known.iter().max().map(MigrationVersion::as_owned);
    // Creates diesel's bookkeeping table on a fresh database.
    let applied = connection
        .applied_migrations()
        .map_err(|e| failed(format!("cannot read the applied migrations: {e}")))?;
    if let Some(newest_applied) = applied.iter().max()
        && newest_known
            .as_ref()
            .is_none_or(|known| newest_applied > known)
    {
        return Err(PostgresError::SchemaTooNew {
            target: target.to_owned(),
            database_version: newest_applied.to_string(),
            known_version: newest_known.map_or_else(|| "none".to_owned(), |v| v.to_string()),
        });
    }
    let done = connection
        .run_pending_migrations(MIGRATIONS)
        .map_err(|e| failed(e.to_string()))?;
    if done.is_empty() {
        tracing::debug!(database = %target, "database schema is up to date");
    } else {
        let versions: Vec<String> = done.iter().map(ToString::to_string).collect();
        tracing::info!(database = %target, applied = ?versions, "applied database migrations");
    }
    Ok(())
}

fn known_versions() -> Result<Vec<MigrationVersion<'static>>, String> {
    let migrations = MigrationSource::<Pg>::migrations(&MIGRATIONS)
        .map_err(|e| format!("the embedded migrations are unreadable: {e}"))?;
    Ok(migrations
        .iter()
        .map(|m| m.name().version().as_owned())
        .collect())
}

/// The newest migration version this build knows, e.g. `20250601000000`.
#[must_use]
pub fn newest_known_version() -> String {
    known_versions()
        .ok()
        .and_then(|versions| versions.into_iter().max())
        .map_or_else(String::new, |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_migrations_have_a_version() {
        assert_eq!(newest_known_version(), "20261205000000");
    }
}
