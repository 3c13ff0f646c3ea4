//! What the adapter needs to know to reach PostgreSQL: the URL, pool size, timeouts and the
//! group-commit batch size, plus a password-free description of the target for messages.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::PostgresError;

/// Settings of a [`PostgresRepository`](crate::PostgresRepository).
///
/// Start from [`PostgresConfig::new`] and change the fields you need; the defaults suit one
/// replica on a small machine.
#[derive(Clone)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:5432/db` (or the key=value form libpq accepts).
    pub url: String,
    /// Most pooled connections this instance holds open at once (reads, rooms, and the
    /// transactional append path). Each group-commit writer holds one session more.
    pub pool_size: usize,
    /// How long establishing one connection, or waiting for a free one, may take before the
    /// operation fails as unavailable.
    pub connect_timeout: Duration,
    /// How long one statement may run on the server before PostgreSQL cancels it
    /// (`statement_timeout` of every pooled session).
    pub statement_timeout: Duration,
    /// Most messages stored in one group-commit transaction. `1` turns group commit off:
    /// every append is its own transaction on its own pooled connection (the baseline the
    /// benchmark compares against).
    pub max_batch: usize,
    /// How many group-commit writers run at once, each with its own connection. While one
    /// commits, the next collects what arrived meanwhile; more writers mean more
    /// transactions in flight (and more lock waits on a busy room).
    pub writers: usize,
}

impl PostgresConfig {
    /// Default of [`PostgresConfig::pool_size`].
    pub const DEFAULT_POOL_SIZE: usize = 16;
    /// Default of [`PostgresConfig::connect_timeout`].
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default of [`PostgresConfig::statement_timeout`].
    pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default of [`PostgresConfig::max_batch`].
    pub const DEFAULT_MAX_BATCH: usize = 512;
    /// Default of [`PostgresConfig::writers`].
    pub const DEFAULT_WRITERS: usize = 2;

    /// A configuration with the defaults: 16 connections, 5 s connect and statement
    /// timeouts, batches of up to 512 messages, 2 writers.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: Self::DEFAULT_POOL_SIZE,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            statement_timeout: Self::DEFAULT_STATEMENT_TIMEOUT,
            max_batch: Self::DEFAULT_MAX_BATCH,
            writers: Self::DEFAULT_WRITERS,
        }
    }

    /// The URL with its password replaced by `****`, safe for logs and error messages.
    #[must_use]
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// Parses and checks the URL and the numbers, and builds the driver configuration every
    /// pooled connection uses: timeouts, keepalives and the session settings.
    pub(crate) fn driver_config(&self) -> Result<tokio_postgres::Config, PostgresError> {
        let invalid = |reason: String| PostgresError::InvalidUrl {
            url: self.redacted_url(),
            reason,
        };
        let mut config = tokio_postgres::Config::from_str(&self.url)
            .map_err(|e| invalid(scrub(&e.to_string(), &self.url)))?;
        if config.get_hosts().is_empty() {
            return Err(invalid("it names no host".into()));
        }
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            // Fail at start-up with the reason rather than as "cannot reach" later.
            return Err(invalid(
                "sslmode=require asks for TLS, which this build does not support yet; use \
                 sslmode=disable or prefer on a trusted network, or a TLS-terminating proxy"
                    .into(),
            ));
        }
        if self.pool_size == 0 || self.max_batch == 0 || self.writers == 0 {
            return Err(PostgresError::InvalidSetting(
                "pool size, batch size and writer count must each be at least 1".into(),
            ));
        }
        if self.connect_timeout.is_zero() || self.statement_timeout.is_zero() {
            return Err(PostgresError::InvalidSetting(
                "connect and statement timeouts must be longer than zero".into(),
            ));
        }
        let statement_ms = self.statement_timeout.as_millis().max(1);
        // A session that vanishes inside a transaction would keep its room rows locked and
        // stall every replica writing to those rooms; the server ends it instead.
        let idle_in_transaction_ms = statement_ms.saturating_mul(2);
        let mut options = config.get_options().unwrap_or_default().to_owned();
        if !options.is_empty() {
            options.push(' ');
        }
        options.push_str(&format!(
            "-c statement_timeout={statement_ms} \
             -c idle_in_transaction_session_timeout={idle_in_transaction_ms}"
        ));
        config
            .options(options)
            .connect_timeout(self.connect_timeout)
            // Notice a dead peer (host gone, network cut) instead of waiting forever.
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .tcp_user_timeout(self.statement_timeout.saturating_mul(2));
        if config.get_application_name().is_none() {
            config.application_name("chat-service");
        }
        Ok(config)
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &self.redacted_url())
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("max_batch", &self.max_batch)
            .field("writers", &self.writers)
            .finish()
    }
}

/// Replaces the password of a URL (`scheme://user:password@host`) or of a key=value
/// connection string (`password=...`) with `****`. Anything it cannot parse is returned
/// with the same substitutions applied as far as they go, never with the password intact.
#[must_use]
pub fn redact_url(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let authority_start = scheme_end + 3;
        let rest = &url[authority_start..];
        let authority_len = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..authority_len];
        // The password ends at the last '@' of the authority: passwords may contain '@'.
        if let Some(at) = authority.rfind('@') {
            let user_info = &authority[..at];
            if let Some(colon) = user_info.find(':') {
                let mut redacted = String::with_capacity(url.len());
                redacted.push_str(&url[..authority_start]);
                redacted.push_str(&user_info[..colon]);
                redacted.push_str(":****");
                redacted.push_str(&rest[at..]);
                return redact_query_password(&redacted);
            }
        }
        return redact_query_password(url);
    }
    redact_key_value_password(url)
}

/// `?password=...` is also accepted in URLs.
fn redact_query_password(url: &str) -> String {
    let Some(query_start) = url.find('?') else {
        return url.to_owned();
    };
    let (head, query) = url.split_at(query_start + 1);
    let parts: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=****"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{head}{}", parts.join("&"))
}

fn redact_key_value_password(conninfo: &str) -> String {
    let Some(start) = conninfo.find("password") else {
        return conninfo.to_owned();
    };
    let after_key = &conninfo[start + "password".len()..];
    let Some(eq) = after_key.find('=') else {
        return conninfo.to_owned();
    };
    if !after_key[..eq].trim().is_empty() {
        return conninfo.to_owned();
    }
    let value = after_key[eq + 1..].trim_start();
    let value_start = conninfo.len() - value.len();
    let value_len = if let Some(quoted) = value.strip_prefix('\'') {
        quoted.find('\'').map_or(value.len(), |end| end + 2)
    } else {
        value.find(char::is_whitespace).unwrap_or(value.len())
    };
    format!(
        "{}****{}",
        &conninfo[..value_start],
        &conninfo[value_start + value_len..]
    )
}

/// Removes the password of `url` from a driver message, whatever form the driver echoed
/// it in: a message must never carry a secret into a log.
pub(crate) fn scrub(message: &str, url: &str) -> String {
    let mut scrubbed = message.to_owned();
    if let Ok(config) = tokio_postgres::Config::from_str(url)
        && let Some(password) = config.get_password()
        && let Ok(password) = std::str::from_utf8(password)
        && !password.is_empty()
    {
        scrubbed = scrubbed.replace(password, "****");
    }
    if url.contains('@') || url.contains("password") {
        scrubbed = scrubbed.replace(url, &redact_url(url));
    }
    scrubbed
}

/// Who we talk to, for messages: `user@host:port/db`, never a password.
pub(crate) fn describe_target(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect::<Vec<_>>()
        .join(",");
    let port = config
        .get_ports()
        .first()
        .map_or_else(|| "5432".to_owned(), u16::to_string);
    let user = config.get_user().unwrap_or("(default user)");
    let db = config.get_dbname().unwrap_or(user);
    format!("{user}@{host}:{port}/{db}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_password_is_hidden() {
        assert_eq!(
            redact_url("postgres://chat:s3cr@t@db.internal:5432/chat?sslmode=disable"),
            "postgres://chat:****@db.internal:5432/chat?sslmode=disable"
        );
    }

    #[test]
    fn a_url_without_password_is_unchanged() {
        let url = "postgres://postgres@127.0.0.1:5432/postgres";
        assert_eq!(redact_url(url), url);
    }

    #[test]
    fn a_password_in_the_query_string_is_hidden() {
        assert_eq!(
            redact_url("postgresql://db/chat?user=chat&password=hunter2&application_name=x"),
            "postgresql://db/chat?user=chat&password=****&application_name=x"
        );
    }

    #[test]
    fn a_key_value_password_is_hidden() {
        assert_eq!(
            redact_url("host=db user=chat password=hunter2 dbname=chat"),
            "host=db user=chat password=**** dbname=chat"
        );
        assert_eq!(
            redact_url("host=db password = 'with space' dbname=chat"),
            "host=db password = **** dbname=chat"
        );
    }

    #[test]
    fn the_debug_output_of_a_config_carries_no_password() {
        let config = PostgresConfig::new("postgres://chat:hunter2@db/chat");
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("chat:****@db"), "{debug}");
    }

    #[test]
    fn a_malformed_url_is_rejected_without_echoing_its_password() {
        let config = PostgresConfig::new("postgres://chat:hunter2@db:notaport/chat");
        let err = config.driver_config().unwrap_err();
        assert!(matches!(err, PostgresError::InvalidUrl { .. }), "{err:?}");
        let message = err.to_string();
        assert!(!message.contains("hunter2"), "{message}");
        assert!(message.contains("DATABASE_URL"), "{message}");
    }

    #[test]
    fn a_url_requiring_tls_is_rejected_with_the_reason() {
        let config = PostgresConfig::new("postgres://chat@db/chat?sslmode=require");
        let message = config.driver_config().unwrap_err().to_string();
        assert!(message.contains("sslmode=require"), "{message}");
    }

    #[test]
    fn zero_sizes_are_rejected() {
        let mut config = PostgresConfig::new("postgres://postgres@127.0.0.1/postgres");
        config.max_batch = 0;
        assert!(matches!(
            config.driver_config(),
            Err(PostgresError::InvalidSetting(_))
        ));
    }

    #[test]
    fn the_session_gets_the_statement_timeout() {
        let mut config = PostgresConfig::new("postgres://postgres@127.0.0.1/postgres");
        config.statement_timeout = Duration::from_millis(1500);
        let driver = config.driver_config().unwrap();
        let options = driver.get_options().unwrap();
        assert!(options.contains("statement_timeout=1500"), "{options}");
        assert_eq!(describe_target(&driver), "postgres@127.0.0.1:5432/postgres");
    }
}
