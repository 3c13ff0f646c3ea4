//! Opening connections: one at a time (for migrations, which need their own session for
//! the advisory lock) and as a deadpool pool whose every connection carries our timeouts.

use std::sync::Arc;
use std::time::Duration;

use diesel::ConnectionError;
use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};

use crate::PostgresError;

pub(crate) type PgPool = Pool<AsyncPgConnection>;

/// Why one connection attempt failed, sorted the way an operator has to act on it.
#[derive(Debug)]
pub(crate) enum ConnectFailure {
    /// Nothing answered, or not in time: the server is down or the address is wrong.
    Unreachable(String),
    /// The server answered and said no: credentials, database name, TLS.
    Refused(String),
}

impl ConnectFailure {
    pub(crate) fn into_startup_error(self, target: &str) -> PostgresError {
        match self {
            Self::Unreachable(reason) => PostgresError::Unreachable {
                target: target.to_owned(),
                reason,
            },
            Self::Refused(reason) => PostgresError::Refused {
                target: target.to_owned(),
                reason,
            },
        }
    }

    fn reason(&self) -> &str {
        match self {
            Self::Unreachable(reason) | Self::Refused(reason) => reason,
        }
    }
}

/// Opens one connection with the driver configuration (timeouts, session settings) and
/// hands it to diesel-async. The whole handshake, not only the TCP connect that the
/// driver's own timeout covers, is bounded by `connect_timeout`.
pub(crate) async fn establish(
    driver: &tokio_postgres::Config,
    connect_timeout: Duration,
) -> Result<AsyncPgConnection, ConnectFailure> {
    let handshake = async {
        let (client, connection) =
            driver
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(|e| match e.as_db_error() {
                    Some(db) => ConnectFailure::Refused(db.message().to_owned()),
                    None => ConnectFailure::Unreachable(describe_driver_error(&e)),
                })?;
        AsyncPgConnection::try_from_client_and_connection(client, connection)
            .await
            .map_err(|e| ConnectFailure::Unreachable(e.to_string()))
    };
    match tokio::time::timeout(connect_timeout, handshake).await {
        Ok(result) => result,
        Err(_) => Err(ConnectFailure::Unreachable(format!(
            "no answer within the connect timeout of {} ms",
            connect_timeout.as_millis()
        ))),
    }
}

/// tokio-postgres puts the useful part ("Connection refused") in the error's source.
pub(crate) fn describe_driver_error(error: &tokio_postgres::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Builds the pool. It opens connections lazily, so this never touches the network; a
/// connection that broke (server restart) is dropped when it is next checked out and a new
/// one is opened, which is how the repository recovers without a restart.
pub(crate) fn build_pool(
    driver: tokio_postgres::Config,
    redacted_url: String,
    pool_size: usize,
    connect_timeout: Duration,
) -> Result<PgPool, PostgresError> {
    let driver = Arc::new(driver);
    let mut manager_config = ManagerConfig::<AsyncPgConnection>::default();
    // The default setup would connect from the URL string and lose our timeouts; ours
    // connects from the parsed configuration instead and ignores the string.
    manager_config.custom_setup = Box::new(move |_url| {
        let driver = Arc::clone(&driver);
        Box::pin(async move {
            establish(&driver, connect_timeout)
                .await
                .map_err(|failure| ConnectionError::BadConnection(failure.reason().to_owned()))
        })
    });
    // `Verified` (the default) runs a `SELECT 1` on every checkout: one round trip that
    // turns a connection killed by a server restart into a fresh one instead of a failed
    // request.
    let manager = AsyncDieselConnectionManager::new_with_config(redacted_url, manager_config);
    Pool::builder(manager)
        .max_size(pool_size)
        .wait_timeout(Some(connect_timeout))
        .create_timeout(Some(connect_timeout))
        .recycle_timeout(Some(connect_timeout))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| PostgresError::InvalidSetting(format!("cannot build the pool: {e}")))
}
