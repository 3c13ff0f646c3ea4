//! Settings, from flags or environment variables (12-factor). `chat-server --help` lists
//! every one with its default; tests build a [`Settings`] directly instead of touching the
//! process environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chat_stomp::HeartBeat;
use clap::builder::TypedValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Whether callers must authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// Every WebSocket and API call needs a valid JWT; the sender is the token's user.
    Jwt,
    /// No authentication: the sender is what the client says (the open mode of the seed).
    None,
}

/// Tools the binary offers besides serving.
#[derive(Debug, Clone, Subcommand)]
pub enum Tool {
    /// Print a JWT signed with CHAT_JWT_SECRET (for trying jwt mode, tests and benchmarks).
    Token(TokenArgs),
}

/// `chat-server token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The user id (`sub`).
    #[arg(long)]
    pub sub: i64,
    /// The display name (the CHAT_JWT_NAME_CLAIM claim).
    #[arg(long)]
    pub name: Option<String>,
    /// Roles, comma-separated (`admin` may send SYSTEM messages).
    #[arg(long, value_delimiter = ',')]
    pub roles: Vec<String>,
    /// How long the token is valid: 90s, 15m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event, for a terminal.
    Human,
    /// One JSON object per line, for a log pipeline.
    Json,
}

/// Everything the server can be told at start-up.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "chat-server",
    version,
    about = "Real-time chat over STOMP/WebSocket. With nothing set it runs a single instance on \
             in-memory storage; with DATABASE_URL and REDIS_URL it is one replica of a cluster.",
    after_help = "Logs: RUST_LOG sets the level and per-module filters (default info; e.g. \
                  RUST_LOG=chat_server=debug,info), CHAT_LOG_FORMAT=json for a log pipeline. \
                  Settings, limits and the runbook: docs/operations.md."
)]
// The field docs are `--help` text, printed as written: URL forms like `[:port]` stay
// unescaped there rather than turning into intra-doc links.
#[allow(rustdoc::broken_intra_doc_links)]
pub struct Settings {
    /// Address to listen on for HTTP and WebSocket.
    #[arg(long, env = "CHAT_BIND", default_value = "0.0.0.0:8080")]
    pub bind: SocketAddr,

    /// Address for /metrics and /health/details (why a dependency is down, with hosts); the
    /// probes answer here too. Unset: they are served on CHAT_BIND with everything else.
    #[arg(long, env = "CHAT_ADMIN_BIND")]
    pub admin_bind: Option<SocketAddr>,

    /// PostgreSQL URL (postgres://user:password@host:5432/db). Unset: in-memory storage,
    /// lost on exit.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// PostgreSQL connection pool size.
    #[arg(long, env = "CHAT_DB_POOL_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1000).map(to_usize))]
    pub db_pool_size: usize,

    /// Seconds to wait for a PostgreSQL connection before an operation fails as unavailable.
    #[arg(long, env = "CHAT_DB_CONNECT_TIMEOUT_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub db_connect_timeout_secs: u64,

    /// Seconds one SQL statement may run before PostgreSQL cancels it.
    #[arg(long, env = "CHAT_DB_STATEMENT_TIMEOUT_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub db_statement_timeout_secs: u64,

    /// Most messages stored in one group-commit transaction (1 turns group commit off).
    #[arg(long, env = "CHAT_DB_MAX_BATCH", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=10_000).map(to_usize))]
    pub db_max_batch: usize,

    /// Group-commit writers, each with its own connection; rooms are split between them.
    #[arg(long, env = "CHAT_DB_WRITERS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64).map(to_usize))]
    pub db_writers: usize,

    /// Redis URL. Unset: in-memory bus, single instance only. One server:
    /// redis://[[user]:password@]host[:port][/db] (rediss:// for TLS). Sentinel:
    /// redis-sentinel://host:26379?sentinelServiceName=mymaster&node=host2:26379&node=host3:26379
    /// (sentinelUsername, sentinelPassword; rediss-sentinel://). Cluster (Redis 7+):
    /// redis-cluster://host:7000?node=host:7001&node=host:7002 (rediss-cluster://).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Redis Pub/Sub channel shared by all instances, and the prefix of the per-room ones.
    #[arg(long, env = "CHAT_REDIS_CHANNEL", default_value = "chat:messages")]
    pub redis_channel: String,

    /// single: every room on CHAT_REDIS_CHANNEL (what Spring replicas sharing it need);
    /// per-room: {CHAT_REDIS_CHANNEL}:room:{id}, each instance subscribed only to the rooms
    /// it has subscribers in (sharded pub/sub on a cluster). Unset: single, or per-room on a
    /// cluster, which requires it.
    #[arg(long, env = "CHAT_REDIS_CHANNEL_MODE", value_parser = parse_channel_mode)]
    pub redis_channel_mode: Option<chat_adapters_redis::ChannelMode>,

    /// A secret every instance shares (at least 32 bytes): bus payloads are signed with it
    /// (HMAC-SHA256) and unsigned or wrongly signed ones are dropped. Spring replicas on the
    /// same channel publish unsigned payloads: leave it unset while they share it.
    #[arg(long, env = "CHAT_BUS_SECRET", hide_env_values = true)]
    pub bus_secret: Option<String>,

    /// Milliseconds a Redis PUBLISH or PING may wait for its reply; while Redis is down a
    /// publish fails after this instead of queueing.
    #[arg(long, env = "CHAT_REDIS_COMMAND_TIMEOUT_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub redis_command_timeout_ms: u64,

    /// How often (ms) each instance compares what it delivered in every room it follows with
    /// the store, and fetches what the bus never brought. Bounds how late a message can be
    /// when Redis loses it or is down.
    #[arg(long, env = "CHAT_RECONCILE_INTERVAL_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub reconcile_interval_ms: u64,

    /// Milliseconds after which an instance that stopped saying it is alive (it crashed, or
    /// lost Redis) is forgotten by the others, and its users leave the rooms' presence.
    /// Instances say so every quarter of it.
    #[arg(long, env = "CHAT_PRESENCE_TIMEOUT_MS", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(400..=600_000))]
    pub presence_timeout_ms: u64,

    /// How many stored messages may wait to be published to the bus; when Redis is slow or
    /// down past that, publishes are dropped (other instances then catch up from the store).
    #[arg(long, env = "CHAT_PUBLISH_QUEUE", default_value_t = 8192, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub publish_queue: u64,

    /// Heart-beat the server offers in CONNECTED: "can-send-ms,want-receive-ms".
    #[arg(long, env = "CHAT_HEARTBEAT", default_value = "10000,10000", value_parser = parse_heartbeat)]
    pub heartbeat: HeartBeat,

    /// A client silent for this many negotiated heart-beat intervals is disconnected.
    #[arg(long, env = "CHAT_HEARTBEAT_GRACE", default_value_t = 2.0, value_parser = parse_grace)]
    pub heartbeat_grace: f32,

    /// Largest STOMP frame accepted, in bytes; a larger one is a protocol error.
    #[arg(long, env = "CHAT_MAX_FRAME_BYTES", default_value_t = 64 * 1024, value_parser = clap::value_parser!(u64).range(1024..=16 * 1024 * 1024).map(to_usize))]
    pub max_frame_bytes: usize,

    /// Frames that may wait for one client before it counts as too slow and is disconnected.
    #[arg(long, env = "CHAT_OUTBOUND_QUEUE", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000).map(to_usize))]
    pub outbound_queue: usize,

    /// Bytes that may wait for one client before it counts as too slow and is disconnected.
    #[arg(long, env = "CHAT_OUTBOUND_QUEUE_BYTES", default_value_t = 8 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(65_536..=1_073_741_824).map(to_usize))]
    pub outbound_queue_bytes: usize,

    /// Seconds a new WebSocket may take to send CONNECT.
    #[arg(long, env = "CHAT_CONNECT_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub connect_timeout_secs: u64,

    /// Seconds to drain connections after SIGTERM before exiting.
    #[arg(long, env = "CHAT_SHUTDOWN_GRACE_SECS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub shutdown_grace_secs: u64,

    /// Seconds over which a draining instance spreads its clients' reconnects.
    #[arg(long, env = "CHAT_DRAIN_WINDOW_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub drain_window_secs: u64,

    /// Log format.
    #[arg(long, env = "CHAT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// Authentication: jwt or none. Unset: jwt when a key below is set; otherwise none on
    /// the embedded default, and a refusal to start when DATABASE_URL is set.
    #[arg(long, env = "CHAT_AUTH", value_enum)]
    pub auth: Option<AuthMode>,

    /// HS256 secret for JWTs, at least 32 bytes.
    #[arg(long, env = "CHAT_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM file with the public key JWTs are signed for (RSA: RS256, EC P-256: ES256,
    /// Ed25519: EdDSA).
    #[arg(long, env = "CHAT_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,

    /// JWKS document with the public keys (by kid); re-read on SIGHUP and on an unknown kid.
    #[arg(long, env = "CHAT_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,

    /// Required `iss` of JWTs (unset: any).
    #[arg(long, env = "CHAT_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` of JWTs (unset: any).
    #[arg(long, env = "CHAT_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Web origins (`https://chat.example`, comma-separated, `*` for any) whose pages may
    /// open WebSockets and call the API (CORS). Unset: any in open mode, only the server's
    /// own host in jwt mode.
    #[arg(long, env = "CHAT_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// The JWT claim holding the display name; `preferred_username` is the fallback.
    #[arg(long, env = "CHAT_JWT_NAME_CLAIM", default_value = "name")]
    pub jwt_name_claim: String,

    /// SENDs per second one connection may make (token bucket, refilled at this rate;
    /// over it a SEND is refused with RATE_LIMITED and not stored). 0: no limit.
    #[arg(long, env = "CHAT_SEND_RATE", default_value_t = 50, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub send_rate: u32,

    /// How many SENDs a connection may make at once before the rate applies.
    #[arg(long, env = "CHAT_SEND_BURST", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub send_burst: u32,

    /// Rooms one user (in open mode: one client address) may create per minute; over it
    /// POST /api/chatrooms answers 429 RATE_LIMITED. 0: no limit.
    #[arg(long, env = "CHAT_ROOM_CREATE_RATE", default_value_t = 30, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub room_create_rate: u32,

    /// Subscriptions one connection may hold; more are refused (TOO_MANY_SUBSCRIPTIONS).
    #[arg(long, env = "CHAT_MAX_SUBSCRIPTIONS", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_subscriptions: u64,

    /// Longest subscription id accepted, in bytes.
    #[arg(long, env = "CHAT_MAX_SUBSCRIPTION_ID_BYTES", default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_subscription_id_bytes: u64,

    /// WebSocket sessions this instance serves at once; more upgrades get 503. 0: no limit.
    #[arg(long, env = "CHAT_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,

    /// WebSocket sessions one client address may hold on this instance; more upgrades get
    /// 503. 0: no limit. Behind a proxy every client shares its address: set it there.
    #[arg(long, env = "CHAT_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: usize,

    /// How long a write to a client may wait (a client that stops reading fills its
    /// socket and is disconnected after this): 10s, 1m.
    #[arg(long, env = "CHAT_WRITE_TIMEOUT", default_value = "10s", value_parser = bounded_duration)]
    pub write_timeout: Duration,

    /// How long a client may take to send a request's headers (slowloris), and how long a
    /// keep-alive connection may sit idle between requests: 10s.
    #[arg(long, env = "CHAT_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = bounded_duration)]
    pub header_read_timeout: Duration,

    /// A connected STOMP client that sends nothing at all (not even heart-beats) for this
    /// long is disconnected: 5m.
    #[arg(long, env = "CHAT_IDLE_TIMEOUT", default_value = "5m", value_parser = bounded_duration)]
    pub idle_timeout: Duration,

    #[command(subcommand)]
    pub tool: Option<Tool>,
}

/// How many heart-beat intervals of silence are tolerated: 1 to 100 (below 1 a punctual
/// client would time out; NaN and infinities are not numbers of intervals).
fn parse_grace(value: &str) -> Result<f32, String> {
    let grace: f32 = value.parse().map_err(|e| format!("{e}"))?;
    if grace.is_finite() && (1.0..=100.0).contains(&grace) {
        Ok(grace)
    } else {
        Err(format!("{value} is outside 1..=100"))
    }
}

fn to_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

fn parse_channel_mode(value: &str) -> Result<chat_adapters_redis::ChannelMode, String> {
    value.parse()
}

/// A duration like `10s`, `250ms`, `5m`, between 1 ms and 1 day (larger ones overflow
/// instants, smaller ones are mistakes).
fn bounded_duration(value: &str) -> Result<Duration, String> {
    let duration =
        humantime::parse_duration(value).map_err(|e| format!("{e} (write e.g. 10s, 500ms, 5m)"))?;
    if duration < Duration::from_millis(1) || duration > Duration::from_secs(86_400) {
        return Err(format!("{value} is outside 1ms..=1d"));
    }
    Ok(duration)
}

fn parse_heartbeat(value: &str) -> Result<HeartBeat, String> {
    HeartBeat::parse(value).map_err(|e| e.to_string())
}

impl Settings {
    /// The defaults, as if started with nothing set, but on `bind`. For tests and embedding.
    #[must_use]
    pub fn embedded(bind: SocketAddr) -> Self {
        let mut settings = Self::parse_from(["chat-server"]);
        settings.bind = bind;
        settings.database_url = None;
        settings.redis_url = None;
        settings.auth = None;
        settings.jwt_secret = None;
        settings.jwt_public_key = None;
        settings.jwks_file = None;
        settings.jwt_issuer = None;
        settings.jwt_audience = None;
        settings.tool = None;
        settings.bus_secret = None;
        settings.admin_bind = None;
        settings
    }

    #[must_use]
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    #[must_use]
    pub fn drain_window(&self) -> Duration {
        Duration::from_secs(self.drain_window_secs)
    }

    #[must_use]
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Settings::command().debug_assert();
    }

    #[test]
    fn help_lists_every_environment_variable() {
        let help = Settings::command().render_long_help().to_string();
        for var in [
            "CHAT_BIND",
            "DATABASE_URL",
            "REDIS_URL",
            "CHAT_REDIS_CHANNEL",
            "CHAT_REDIS_CHANNEL_MODE",
            "redis-sentinel://",
            "redis-cluster://",
            "CHAT_HEARTBEAT",
            "CHAT_MAX_FRAME_BYTES",
            "CHAT_OUTBOUND_QUEUE",
            "CHAT_SHUTDOWN_GRACE_SECS",
            "CHAT_LOG_FORMAT",
            "CHAT_SEND_RATE",
            "CHAT_SEND_BURST",
            "CHAT_ROOM_CREATE_RATE",
            "CHAT_MAX_SUBSCRIPTIONS",
            "CHAT_MAX_CONNECTIONS",
            "CHAT_MAX_CONNECTIONS_PER_IP",
            "CHAT_WRITE_TIMEOUT",
            "CHAT_HEADER_READ_TIMEOUT",
            "CHAT_IDLE_TIMEOUT",
        ] {
            assert!(help.contains(var), "--help does not mention {var}");
        }
    }

    #[test]
    fn flags_override_defaults_and_bad_values_are_rejected() {
        let s = Settings::try_parse_from([
            "chat-server",
            "--bind",
            "127.0.0.1:0",
            "--heartbeat",
            "0,500",
        ])
        .unwrap();
        assert_eq!(s.bind.port(), 0);
        assert_eq!(
            s.heartbeat,
            HeartBeat {
                can_send_ms: 0,
                want_receive_ms: 500
            }
        );
        assert!(Settings::try_parse_from(["chat-server", "--heartbeat", "soon"]).is_err());
        for (flag, bad) in [
            ("--write-timeout", "0s"),
            ("--write-timeout", "400d"),
            ("--idle-timeout", "forever"),
            ("--max-subscriptions", "0"),
            ("--send-burst", "0"),
            ("--connect-timeout-secs", "18446744073709551615"),
            ("--db-statement-timeout-secs", "0"),
            ("--heartbeat-grace", "NaN"),
            ("--heartbeat-grace", "0.1"),
            ("--max-frame-bytes", "10"),
            ("--db-writers", "0"),
            ("--shutdown-grace-secs", "99999999999"),
            ("--redis-channel-mode", "sharded"),
        ] {
            assert!(
                Settings::try_parse_from(["chat-server", flag, bad]).is_err(),
                "{flag} {bad} must be refused"
            );
        }
        assert!(Settings::try_parse_from(["chat-server", "--bind", "nowhere"]).is_err());
    }

    #[test]
    fn the_channel_mode_is_single_per_room_or_left_to_the_topology() {
        let mode = |args: &[&str]| {
            let mut all = vec!["chat-server"];
            all.extend_from_slice(args);
            Settings::try_parse_from(all).unwrap().redis_channel_mode
        };
        assert_eq!(mode(&[]), None);
        assert_eq!(
            mode(&["--redis-channel-mode", "per-room"]),
            Some(chat_adapters_redis::ChannelMode::PerRoom)
        );
        assert_eq!(
            mode(&["--redis-channel-mode", "single"]),
            Some(chat_adapters_redis::ChannelMode::Single)
        );
    }
}
