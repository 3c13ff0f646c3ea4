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

/// How rooms map to Redis channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelMode {
    /// One channel, [`RedisConfig::channel`], for every room: every instance receives every
    /// message. What Spring replicas sharing the channel need during a migration.
    Single,
    /// A channel per room, `{channel}:room:{id}`: an instance subscribes only to the rooms
    /// it has subscribers in, so its Redis traffic is its own rooms'. Sharded pub/sub
    /// (`SPUBLISH`/`SSUBSCRIBE`) on a cluster.
    PerRoom,
}

impl ChannelMode {
    /// `single` or `per-room`, as in `CHAT_REDIS_CHANNEL_MODE`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::PerRoom => "per-room",
        }
    }
}

impl std::str::FromStr for ChannelMode {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "single" => Ok(Self::Single),
            "per-room" => Ok(Self::PerRoom),
            other => Err(format!(
                "channel mode {other:?} is not one of: single, per-room"
            )),
        }
    }
}

/// How the Redis bus connects and behaves. Build it with [`RedisConfig::new`] and adjust the
/// public fields.
#[derive(Clone)]
pub struct RedisConfig {
    /// One of:
    /// - `redis://[[user]:password@]host[:port][/db]` (`rediss://` for TLS): one server;
    /// - `redis-sentinel://[[user]:password@]host[:port][/db]?sentinelServiceName=NAME&node=host:port…`
    ///   (`rediss-sentinel://`; `sentinelUsername`, `sentinelPassword` for the sentinels'
    ///   own ACL): the master of NAME, found through the sentinels and followed across
    ///   failovers;
    /// - `redis-cluster://[[user]:password@]host:port?node=host:port…` (`rediss-cluster://`):
    ///   a Redis Cluster (7.0 or later: sharded pub/sub), found through any of its nodes.
    pub url: String,
    /// The Pub/Sub channel every instance shares (default `chat:messages`), or the prefix of
    /// the per-room channels.
    pub channel: String,
    /// `None`: [`ChannelMode::Single`] on one server or Sentinel, [`ChannelMode::PerRoom`] on
    /// a cluster (which has no other mode).
    pub channel_mode: Option<ChannelMode>,
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
    /// Default of [`RedisConfig::connect_timeout`].
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default of [`RedisConfig::command_timeout`].
    pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
    /// Large on purpose: fred's default of 32 drops most messages under load (as `Lagged`).
    pub const DEFAULT_SUBSCRIBER_CAPACITY: usize = 16_384;

    /// Settings with the defaults above for the Redis at `url`.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            channel: Self::DEFAULT_CHANNEL.to_owned(),
            channel_mode: None,
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
            .field("channel_mode", &self.channel_mode)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("subscriber_capacity", &self.subscriber_capacity)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .finish()
    }
}

/// `url` with its passwords (the server's, and a Sentinel's `sentinelPassword`) replaced by
/// `***`; a URL that does not parse is not shown at all, since it may hold a password in a
/// form we cannot find.
pub(crate) fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                // Only fails for URLs that cannot have credentials, which had none to hide.
                let _ = parsed.set_password(Some("***"));
            }
            if parsed.query_pairs().any(|(k, _)| k == SENTINEL_PASSWORD) {
                let pairs: Vec<(String, String)> = parsed
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if k == SENTINEL_PASSWORD {
                            "***".into()
                        } else {
                            v
                        };
                        (k.into_owned(), v.into_owned())
                    })
                    .collect();
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.to_string()
        }
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

const SENTINEL_PASSWORD: &str = "sentinelPassword";

/// What `REDIS_URL` points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Topology {
    /// One server.
    Standalone,
    /// A master found (and followed across failovers) through Sentinel.
    Sentinel,
    /// A Redis Cluster.
    Cluster,
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
    pub(crate) topology: Topology,
}

impl Target {
    /// Checks `url` and builds fred's settings from it.
    ///
    /// # Errors
    /// [`RedisError::InvalidUrl`] saying what is wrong and what a valid URL looks like.
    pub(crate) fn parse(url: &str) -> Result<Self, RedisError> {
        const EXPECTED: &str = "expected redis://[[user]:password@]host[:port][/db] \
             (rediss:// for TLS), redis-sentinel://host:26379?sentinelServiceName=NAME&node=host:port… \
             or redis-cluster://host:port?node=host:port…";
        let parsed = url::Url::parse(url).map_err(|e| {
            RedisError::InvalidUrl(format!("REDIS_URL is not a URL ({e}); {EXPECTED}"))
        })?;
        let (topology, tls) = match parsed.scheme() {
            "redis" => (Topology::Standalone, false),
            "rediss" => (Topology::Standalone, true),
            "redis-sentinel" => (Topology::Sentinel, false),
            "rediss-sentinel" => (Topology::Sentinel, true),
            "redis-cluster" => (Topology::Cluster, false),
            "rediss-cluster" => (Topology::Cluster, true),
            other => {
                return Err(RedisError::InvalidUrl(format!(
                    "REDIS_URL scheme {other}:// is not supported; {EXPECTED}"
                )));
            }
        };
        let host = parsed.host_str().filter(|h| !h.is_empty()).ok_or_else(|| {
            RedisError::InvalidUrl(format!("REDIS_URL {} has no host; {EXPECTED}", redact(url)))
        })?;
        let default_port = if topology == Topology::Sentinel {
            26379
        } else {
            6379
        };
        let port = parsed.port().unwrap_or(default_port);
        let database = match parsed.path().trim_start_matches('/') {
            "" => None,
            _ if topology == Topology::Cluster => {
                return Err(RedisError::InvalidUrl(format!(
                    "REDIS_URL {} names a database, and a Redis Cluster has only database 0; \
                     remove the /path",
                    redact(url)
                )));
            }
            db => Some(db.parse::<u8>().map_err(|_| {
                RedisError::InvalidUrl(format!(
                    "REDIS_URL {} has database index {db:?}; it must be a number from 0 to 255",
                    redact(url)
                ))
            })?),
        };
        let mut nodes = vec![format!("{host}:{port}")];
        let mut service = None;
        for (key, value) in parsed.query_pairs() {
            match &*key {
                "node" if topology != Topology::Standalone => nodes.push(value.into_owned()),
                "sentinelServiceName" if topology == Topology::Sentinel => {
                    service = Some(value.into_owned());
                }
                "sentinelUsername" | SENTINEL_PASSWORD if topology == Topology::Sentinel => {}
                other => {
                    return Err(RedisError::InvalidUrl(format!(
                        "REDIS_URL {} has the parameter {other:?}, which a {} URL does not take; \
                         {EXPECTED}",
                        redact(url),
                        parsed.scheme()
                    )));
                }
            }
        }
        if topology == Topology::Sentinel && service.as_deref().is_none_or(str::is_empty) {
            return Err(RedisError::InvalidUrl(format!(
                "REDIS_URL {} has no sentinelServiceName (the master's name in the sentinels' \
                 configuration, often mymaster); {EXPECTED}",
                redact(url)
            )));
        }
        let fred = match topology {
            Topology::Standalone => Config::from_url_centralized(url),
            Topology::Sentinel => Config::from_url_sentinel(url),
            Topology::Cluster => Config::from_url_clustered(url),
        }
        .map_err(|e| {
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
        let mut endpoint = match topology {
            Topology::Standalone => nodes.join(","),
            Topology::Sentinel => format!(
                "master {} via sentinels {}",
                service.unwrap_or_default(),
                nodes.join(",")
            ),
            Topology::Cluster => format!("cluster {}", nodes.join(",")),
        };
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
            topology,
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
    fn a_sentinel_url_names_the_master_and_every_sentinel() {
        let target = Target::parse(
            "redis-sentinel://:pw@s1:26379/1?sentinelServiceName=mymaster&node=s2:26380&node=s3:26381",
        )
        .unwrap();
        assert_eq!(target.topology, Topology::Sentinel);
        assert_eq!(
            target.endpoint,
            "master mymaster via sentinels s1:26379,s2:26380,s3:26381/1"
        );
        assert!(target.fred.server.is_sentinel());
        assert_eq!(target.fred.database, Some(1));
        assert_eq!(target.fred.password.as_deref(), Some("pw"));
        // Sentinel's own port is the default.
        let target = Target::parse("redis-sentinel://s1?sentinelServiceName=m").unwrap();
        assert_eq!(target.endpoint, "master m via sentinels s1:26379");
    }

    #[test]
    fn a_sentinel_url_without_a_service_name_is_refused() {
        assert!(invalid("redis-sentinel://s1:26379").contains("sentinelServiceName"));
        assert!(
            invalid("redis-sentinel://s1:26379?sentinelServiceName=")
                .contains("sentinelServiceName")
        );
    }

    #[test]
    fn a_cluster_url_lists_its_nodes_and_has_no_database() {
        let target = Target::parse("rediss-cluster://c1:7000?node=c2:7001&node=c3:7002").unwrap();
        assert_eq!(target.topology, Topology::Cluster);
        assert!(target.fred.server.is_clustered());
        assert_eq!(target.endpoint, "cluster c1:7000,c2:7001,c3:7002 (TLS)");
        assert!(invalid("redis-cluster://c1:7000/2").contains("only database 0"));
    }

    #[test]
    fn parameters_of_another_topology_are_refused() {
        assert!(invalid("redis://h:6379?node=h2:6379").contains("\"node\""));
        assert!(
            invalid("redis-cluster://h:7000?sentinelServiceName=m").contains("sentinelServiceName")
        );
        assert!(invalid("redis-sentinel://h?sentinelServiceName=m&tls=1").contains("\"tls\""));
    }

    #[test]
    fn a_sentinel_password_is_never_shown() {
        let shown =
            redact("redis-sentinel://u:pw1@h:26379?sentinelServiceName=m&sentinelPassword=hunter2");
        assert!(
            !shown.contains("hunter2") && !shown.contains("pw1"),
            "{shown}"
        );
        assert!(shown.contains("sentinelPassword=***"), "{shown}");
    }

    #[test]
    fn channel_modes_parse_from_their_names() {
        assert_eq!("single".parse(), Ok(ChannelMode::Single));
        assert_eq!("per-room".parse(), Ok(ChannelMode::PerRoom));
        assert!(
            "perroom"
                .parse::<ChannelMode>()
                .unwrap_err()
                .contains("single, per-room")
        );
        assert_eq!(ChannelMode::PerRoom.as_str(), "per-room");
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
