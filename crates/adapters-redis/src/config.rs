//! What the server configures (`RedisConfig`) and how `REDIS_URL` is checked and turned into
//! fred's client settings. The password never leaves this module in printable form: every
//! log line and error names the endpoint without it.

use std::fmt;
use std::time::Duration;

use fred::prelude::{
    Builder, Config, ConnectionConfig, PerformanceConfig, ReconnectPolicy, TcpConfig,
};
use fred::socket2::TcpKeepalive;
use fred::types::config::UnresponsiveConfig;

use crate::error::RedisError;

/// How the Redis bus connects and behaves. Build it with [`RedisConfig::new`] and adjust the
/// public fields.
#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://[[user]:password@]host[:port][/db]` or `rediss://…` for TLS.
    pub url: String,
    /// The Pub/Sub channel every instance shares (default `chat:messages`).
    pub channel: String,
    /// How long one TCP (and TLS) connection attempt may take, at start-up and on reconnect.
    pub connect_timeout: Duration,
    /// How long a PUBLISH, PING or SUBSCRIBE may wait for its reply before it fails. It also
    /// bounds how long a publish waits while Redis is unreachable: it fails instead of queueing.
    pub command_timeout: Duration,
    /// How many received messages may wait, per local subscription and in fred's own channel,
    /// before a slow reader is told it may have missed messages.
    pub subscriber_capacity: usize,
    /// A secret shared by every instance (at least 32 bytes): payloads are signed with it
    /// and unsigned or wrongly signed ones are refused. `None`: unsigned JSON, which is what
    /// Spring replicas on the same channel need.
    pub secret: Option<String>,
}

impl RedisConfig {
    /// The channel of the original Spring service, so both can share it during a migration.
    pub const DEFAULT_CHANNEL: &'static str = "chat:messages";
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
    /// Large on purpose: fred's default of 32 drops most messages under load (as `Lagged`).
    pub const DEFAULT_SUBSCRIBER_CAPACITY: usize = 16_384;

    /// Settings with the defaults above for the Redis at `url`.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            channel: Self::DEFAULT_CHANNEL.to_owned(),
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            command_timeout: Self::DEFAULT_COMMAND_TIMEOUT,
            subscriber_capacity: Self::DEFAULT_SUBSCRIBER_CAPACITY,
            secret: None,
        }
    }
}

impl fmt::Debug for RedisConfig {
    // Hand-written so the password in `url` never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact(&self.url))
            .field("channel", &self.channel)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("subscriber_capacity", &self.subscriber_capacity)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .finish()
    }
}

/// `url` with its password replaced by `***`; a URL that does not parse is not shown at all,
/// since it may hold a password in a form we cannot find.
pub(crate) fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                // Only fails for URLs that cannot have credentials, which had none to hide.
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

/// Reconnect backoff: 100 ms doubling up to 2 s, forever. Short enough that an instance is
/// back within about two seconds of Redis, long enough that N replicas do not hammer it.
const RECONNECT_MIN_DELAY_MS: u32 = 100;
const RECONNECT_MAX_DELAY_MS: u32 = 2_000;

/// A validated `REDIS_URL`: where to connect and what to call it in messages.
#[derive(Clone)]
pub(crate) struct Target {
    fred: Config,
    /// `host:port[/db]`, with `(TLS)` for rediss: safe to print.
    pub(crate) endpoint: String,
    pub(crate) tls: bool,
}

impl Target {
    /// Checks `url` and builds fred's settings from it.
    ///
    /// # Errors
    /// [`RedisError::InvalidUrl`] saying what is wrong and what a valid URL looks like.
    pub(crate) fn parse(url: &str) -> Result<Self, RedisError> {
        const EXPECTED: &str =
            "expected redis://[[user]:password@]host[:port][/db] or rediss://… for TLS";
        let parsed = url::Url::parse(url).map_err(|e| {
            RedisError::InvalidUrl(format!("REDIS_URL is not a URL ({e}); {EXPECTED}"))
        })?;
        let tls = match parsed.scheme() {
            "redis" => false,
            "rediss" => true,
            other => {
                return Err(RedisError::InvalidUrl(format!(
                    "REDIS_URL scheme {other}:// is not supported; {EXPECTED}"
                )));
            }
        };
        let host = parsed.host_str().filter(|h| !h.is_empty()).ok_or_else(|| {
            RedisError::InvalidUrl(format!("REDIS_URL {} has no host; {EXPECTED}", redact(url)))
        })?;
        let port = parsed.port().unwrap_or(6379);
        let database = match parsed.path().trim_start_matches('/') {
            "" => None,
            db => Some(db.parse::<u8>().map_err(|_| {
                RedisError::InvalidUrl(format!(
                    "REDIS_URL {} has database index {db:?}; it must be a number from 0 to 255",
                    redact(url)
                ))
            })?),
        };
        let fred = Config::from_url_centralized(url).map_err(|e| {
            // fred reports a missing TLS root store (no CA certificates installed) here.
            if tls && matches!(e.kind(), fred::error::ErrorKind::Tls) {
                RedisError::Tls(format!(
                    "cannot set up TLS for {}: {}; install the system CA certificates",
                    redact(url),
                    e.details()
                ))
            } else {
                RedisError::InvalidUrl(format!(
                    "REDIS_URL {} was rejected: {}; {EXPECTED}",
                    redact(url),
                    e.details()
                ))
            }
        })?;
        let mut endpoint = format!("{host}:{port}");
        if let Some(db) = database {
            endpoint.push_str(&format!("/{db}"));
        }
        if tls {
            endpoint.push_str(" (TLS)");
        }
        Ok(Self {
            fred,
            endpoint,
            tls,
        })
    }

    /// A fred builder with the settings every client of this bus shares. `event_capacity`
    /// sizes every one of fred's event channels of the client (messages, errors, reconnects
    /// alike): fred allocates them all up front, so only the subscriber gets a large one.
    pub(crate) fn builder(&self, config: &RedisConfig, event_capacity: usize) -> Builder {
        let mut fred = self.fred.clone();
        // Start-up errors (bad password, nothing listening) must reach the operator at once
        // instead of disappearing into reconnect attempts.
        fred.fail_fast = true;
        let mut builder = Builder::from_config(fred);
        // Without a policy fred never reconnects; exponential backoff, never giving up.
        builder.set_policy(ReconnectPolicy::new_exponential(
            0,
            RECONNECT_MIN_DELAY_MS,
            RECONNECT_MAX_DELAY_MS,
            2,
        ));
        builder.set_performance_config(PerformanceConfig {
            default_command_timeout: config.command_timeout,
            broadcast_channel_capacity: event_capacity.max(1),
            ..PerformanceConfig::default()
        });
        // A reply that never comes (half-open TCP) closes the connection and reconnects.
        let unresponsive_after = (config.command_timeout * 3).max(Duration::from_secs(3));
        builder.set_connection_config(ConnectionConfig {
            connection_timeout: config.connect_timeout,
            internal_command_timeout: config.command_timeout,
            unresponsive: UnresponsiveConfig {
                max_timeout: Some(unresponsive_after),
                interval: (unresponsive_after / 4).max(Duration::from_millis(100)),
            },
            // The subscriber connection sends nothing while it waits, so only TCP keepalive
            // notices a peer that vanished without closing the socket (after about 30 s +
            // the OS's retry count × 5 s; socket2 sets the count only with a feature fred
            // does not enable).
            tcp: TcpConfig {
                nodelay: Some(true),
                keepalive: Some(
                    TcpKeepalive::new()
                        .with_time(Duration::from_secs(30))
                        .with_interval(Duration::from_secs(5)),
                ),
                ..TcpConfig::default()
            },
            ..ConnectionConfig::default()
        });
        builder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(url: &str) -> String {
        match Target::parse(url) {
            Err(RedisError::InvalidUrl(why)) => why,
            Err(other) => panic!("{url}: expected InvalidUrl, got {other}"),
            Ok(t) => panic!("{url}: expected InvalidUrl, got endpoint {}", t.endpoint),
        }
    }

    #[test]
    fn plain_url_with_password_and_database_is_accepted() {
        let target = Target::parse("redis://:s3cret@cache.internal:6380/2").unwrap();
        assert_eq!(target.endpoint, "cache.internal:6380/2");
        assert_eq!(target.fred.password.as_deref(), Some("s3cret"));
        assert_eq!(target.fred.database, Some(2));
    }

    #[test]
    fn url_without_port_uses_6379() {
        assert_eq!(
            Target::parse("redis://localhost").unwrap().endpoint,
            "localhost:6379"
        );
    }

    #[test]
    fn rediss_url_turns_tls_on() {
        let target = Target::parse("rediss://user:pw@redis.example:6379").unwrap();
        assert!(target.fred.tls.is_some());
        assert_eq!(target.fred.username.as_deref(), Some("user"));
        assert_eq!(target.endpoint, "redis.example:6379 (TLS)");
    }

    #[test]
    fn a_bad_url_says_what_a_good_one_looks_like() {
        assert!(invalid("not a url").contains("redis://"));
        assert!(invalid("http://localhost:6379").contains("http:// is not supported"));
        assert!(invalid("redis://localhost/notanumber").contains("database index"));
        assert!(invalid("redis://localhost/300").contains("0 to 255"));
    }

    #[test]
    fn errors_and_debug_output_never_show_the_password() {
        let why = invalid("redis://:hunter2@localhost/x");
        assert!(!why.contains("hunter2"), "{why}");
        assert!(why.contains("***"), "{why}");
        let debug = format!("{:?}", RedisConfig::new("redis://u:hunter2@localhost"));
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
