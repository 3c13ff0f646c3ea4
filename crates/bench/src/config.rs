//! Command-line flags. The parsed struct is also the library's configuration, so tests and
//! scripts describe a run the same way: `BenchArgs::try_parse_from([...])`.

use std::time::Duration;

use clap::Parser;

use crate::BenchError;

/// Flags of `chat-bench`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "chat-bench",
    version,
    about = "Load generator for STOMP over WebSocket (and Socket.IO): paced open-loop publishers, fan-out \
             subscribers, end-to-end latency and loss accounting. Prints a summary on stderr \
             and one JSON line on stdout.",
    after_help = "Examples:\n  chat-bench --url ws://127.0.0.1:8080/ws --rate 2000 --rooms 20 --subscribers 200\n  \
                  chat-bench --raw-topic --topic-prefix /topic/bench. --login guest --passcode guest \\\n    --url ws://127.0.0.1:15674/ws --rate 2000\n  \
                  chat-bench --socketio --url ws://127.0.0.1:18091 ws://127.0.0.1:18092 --rate 2000  \
                  # scripts/peers/socketio\n  \
                  chat-bench --idle --connections 19000 --source-ips 8 --watch-pid $(pgrep chat-server)\n  \
                  chat-bench --jwt-secret \"$CHAT_JWT_SECRET\" --rate 2000 --subscribers 200  \
                  # server started with CHAT_AUTH=jwt"
)]
pub struct BenchArgs {
    /// WebSocket endpoint(s); subscribers are spread over them round-robin. Repeat the flag
    /// for several instances.
    #[arg(long = "url", default_value = "ws://127.0.0.1:8080/ws", num_args = 1..)]
    pub urls: Vec<String>,

    /// Endpoint(s) for publishers only (default: the --url list). Publishing on one instance
    /// and subscribing on another measures cross-instance delivery.
    #[arg(long = "publish-url", num_args = 1..)]
    pub publish_urls: Vec<String>,

    /// Subscriber connections in total; subscriber i follows room i mod --rooms.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,

    /// Publisher connections; publisher j sends to room j mod --rooms.
    #[arg(long, default_value_t = 10)]
    pub publishers: usize,

    /// Rooms (chat rooms, topics in --raw-topic mode, Socket.IO rooms with --socketio).
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,

    /// Total published messages per second over all publishers (open loop: sends follow the
    /// clock, not the replies).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,

    /// Message size in bytes (the chat `content`, or the body in --raw-topic mode); at least
    /// as long as the bench marker.
    #[arg(long, default_value_t = 256)]
    pub size: usize,

    /// Seconds of measured sending (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,

    /// Seconds of sending before measuring: latency and throughput ignore these messages,
    /// loss accounting does not.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,

    /// Seconds to wait after the last send for deliveries still in flight.
    #[arg(long, default_value_t = 3.0)]
    pub drain: f64,

    /// Publish straight to the subscribed destination (a plain STOMP broker) instead of
    /// chat-service's `/app/chat.sendMessage` and REST-created rooms.
    #[arg(long)]
    pub raw_topic: bool,

    /// Drive a Socket.IO server (the peer in scripts/peers/socketio) instead of STOMP:
    /// Engine.IO v4 / Socket.IO v5 over the WebSocket. Subscribers emit `join` with their
    /// room and wait for its ack; publishers emit `send` with `{room, content}` (with an
    /// ack id when --receipts is given) and end with an acked `leave`. A bare
    /// `--url ws://host:port` gets the path `/socket.io/?EIO=4&transport=websocket`.
    #[arg(long, conflicts_with_all = ["raw_topic", "jwt_secret", "idle"])]
    pub socketio: bool,

    /// Destination prefix subscribers follow; the room number or id is appended.
    /// Default `/topic/chatroom/`; in --raw-topic mode `/topic/bench.<run>.`; with
    /// --socketio the room names, default `bench.<run>.`.
    #[arg(long)]
    pub topic_prefix: Option<String>,

    /// STOMP `login` header (RabbitMQ: guest).
    #[arg(long)]
    pub login: Option<String>,

    /// STOMP `passcode` header (RabbitMQ: guest).
    #[arg(long)]
    pub passcode: Option<String>,

    /// HS256 secret of a server in jwt mode (`CHAT_AUTH=jwt CHAT_JWT_SECRET=…`, at least 32
    /// bytes): every connection then sends its own token as the CONNECT header
    /// `Authorization: Bearer <jwt>`, and room creation sends one too. Publisher j's `sub`
    /// is its `senderId` (j+1); subscribers and idle connections are users 1000000+i.
    #[arg(long)]
    pub jwt_secret: Option<String>,

    /// With --jwt-secret: the tokens' `iss` (the server's CHAT_JWT_ISSUER).
    #[arg(long, requires = "jwt_secret")]
    pub jwt_issuer: Option<String>,

    /// With --jwt-secret: the tokens' `aud` (the server's CHAT_JWT_AUDIENCE).
    #[arg(long, requires = "jwt_secret")]
    pub jwt_audience: Option<String>,

    /// With --jwt-secret: seconds from minting to the tokens' `exp`. The server closes a
    /// session when its token expires, so keep it longer than the run.
    #[arg(long, default_value_t = 3600, requires = "jwt_secret")]
    pub jwt_ttl: u64,

    /// STOMP `host` header (the RabbitMQ virtual host).
    #[arg(long, default_value = "/")]
    pub vhost: String,

    /// Server process id(s) whose CPU time and RSS are read from /proc.
    #[arg(long = "watch-pid", num_args = 1..)]
    pub watch_pids: Vec<u32>,

    /// A backend whose CPU the run should report, as NAME=PID[,PID...]: each PID with its
    /// descendants, live or exited, over the same window as the server CPU (e.g.
    /// `redis=$(pgrep -d, -x redis-server) postgres=$(pgrep -o -x postgres)`, the
    /// postmaster). Reported as `backend_cpu_s.NAME` and per message sent in the window as
    /// `backend_cpu_us_per_msg.NAME`. Repeat the flag for several backends.
    #[arg(long = "watch-backend", value_parser = Backend::parse, num_args = 1..)]
    pub watch_backends: Vec<Backend>,

    /// Label copied into the JSON line (the scenario name).
    #[arg(long, default_value = "")]
    pub label: String,

    /// Append the JSON line to this file as well as printing it.
    #[arg(long)]
    pub output: Option<std::path::PathBuf>,

    /// Ask for a RECEIPT on every SEND and report the time from each message's intended
    /// send time to its RECEIPT (chat-service sends it once the message is committed).
    /// With --socketio: an ack on every `send` (the peer acks once it has broadcast).
    #[arg(long)]
    pub receipts: bool,

    /// With `--receipts`: write what each SEND got to this file, one line per answer:
    /// `<publisher> <intended send time µs> RECEIPT|<error code>`, so a fault run can be
    /// checked against the store afterwards (every RECEIPTed message stored once, no
    /// "not stored" error for a stored one).
    #[arg(long, requires = "receipts")]
    pub outcome_log: Option<std::path::PathBuf>,

    /// p99 latency limit in milliseconds for the `ok` verdict (zero loss and p99 below it).
    #[arg(long, default_value_t = 50.0)]
    pub p99_limit_ms: f64,

    /// Seconds between progress lines on stderr; 0 turns them off.
    #[arg(long, default_value_t = 1.0)]
    pub progress: f64,

    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,

    /// Seconds one connection (TCP + WebSocket + CONNECT + SUBSCRIBE) may take.
    #[arg(long, default_value_t = 15.0)]
    pub connect_timeout: f64,

    /// Worker threads of the generator's runtime (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,

    /// Idle mode: open --connections STOMP connections, subscribe each to a room, hold them
    /// and report the server RSS per connection.
    #[arg(long)]
    pub idle: bool,

    /// Idle mode: connections to open.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,

    /// Idle mode: spread source addresses over 127.0.0.2 .. 127.0.0.(1+N), about 28k
    /// ephemeral ports each. 0 lets the kernel choose.
    #[arg(long, default_value_t = 0)]
    pub source_ips: u8,

    /// Idle mode: seconds to hold the connections once open.
    #[arg(long, default_value_t = 10.0)]
    pub hold: f64,

    /// Presence mode: --connections open-mode users (login 1000000+i) in --rooms rooms over
    /// every --url, each subscribed to its room and its presence topic; server RSS per
    /// connection (one --watch-pid per --url), Redis memory (--redis-url) and a reconnect
    /// storm.
    #[arg(long, conflicts_with_all = ["idle", "socketio", "raw_topic", "jwt_secret"])]
    pub presence: bool,

    /// Presence mode without watching: each connection subscribes to its room only, no
    /// watchers, no storm. The baseline (it also runs against a build without presence).
    #[arg(long, requires = "presence")]
    pub no_watch: bool,

    /// Presence mode: the Redis the servers use, for `INFO memory` before and after.
    #[arg(long)]
    pub redis_url: Option<String>,

    /// Presence mode: seconds from the storm's start to wait for every snapshot to be right.
    #[arg(long, default_value_t = 120.0)]
    pub storm_timeout: f64,
}

/// A `--watch-backend NAME=PID[,PID...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// What the report calls it.
    pub name: String,
    /// The processes whose trees are summed.
    pub pids: Vec<u32>,
}

impl Backend {
    /// Parses `NAME=PID[,PID...]`.
    ///
    /// # Errors
    /// A message for clap: no `=`, an empty or odd name, no PID, or a PID that is not a
    /// number.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, pids) = text
            .split_once('=')
            .ok_or_else(|| format!("expected NAME=PID[,PID...], got {text:?}"))?;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "backend name {name:?} must be letters, digits, '_' or '-'"
            ));
        }
        let pids = pids
            .split(',')
            .filter(|pid| !pid.trim().is_empty())
            .map(|pid| {
                pid.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("{pid:?} in {text:?} is not a process id"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if pids.is_empty() {
            return Err(format!(
                "no process id for backend {name:?}: is it running?"
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            pids,
        })
    }
}

impl BenchArgs {
    /// The run's timing as durations.
    #[must_use]
    pub fn warmup_duration(&self) -> Duration {
        Duration::from_secs_f64(self.warmup)
    }

    /// Measured sending time.
    #[must_use]
    pub fn measure_duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration)
    }

    /// Time allowed for late deliveries.
    #[must_use]
    pub fn drain_duration(&self) -> Duration {
        Duration::from_secs_f64(self.drain)
    }

    /// Per-connection set-up limit.
    #[must_use]
    pub fn connect_timeout_duration(&self) -> Duration {
        Duration::from_secs_f64(self.connect_timeout)
    }

    /// The URLs publishers use.
    #[must_use]
    pub fn publisher_urls(&self) -> &[String] {
        if self.publish_urls.is_empty() {
            &self.urls
        } else {
            &self.publish_urls
        }
    }

    /// Checks what clap cannot: positive counts and times, a size that fits the marker.
    ///
    /// # Errors
    /// [`BenchError::InvalidArgs`] saying which flag is wrong.
    pub fn validate(&self) -> Result<(), BenchError> {
        let bad = |message: &str| Err(BenchError::InvalidArgs(message.to_owned()));
        if self.urls.is_empty() {
            return bad("give at least one --url");
        }
        if self.rooms == 0 {
            return bad("--rooms must be at least 1");
        }
        for (name, value) in [
            ("--duration", self.duration),
            ("--warmup", self.warmup),
            ("--drain", self.drain),
            ("--connect-timeout", self.connect_timeout),
            ("--hold", self.hold),
            ("--storm-timeout", self.storm_timeout),
            ("--progress", self.progress),
        ] {
            if !value.is_finite() || value < 0.0 {
                return Err(BenchError::InvalidArgs(format!(
                    "{name} must be a non-negative number of seconds"
                )));
            }
        }
        if !self.idle && !self.presence {
            if self.publishers == 0 || self.subscribers == 0 {
                return bad("--publishers and --subscribers must be at least 1");
            }
            if !(self.rate.is_finite() && self.rate > 0.0) {
                return bad("--rate must be a positive number of messages per second");
            }
            if self.size < crate::payload::MIN_SIZE {
                return Err(BenchError::InvalidArgs(format!(
                    "--size must be at least {} bytes to hold the bench marker",
                    crate::payload::MIN_SIZE
                )));
            }
        }
        if let Some(secret) = &self.jwt_secret
            && secret.len() < crate::token::MIN_SECRET_BYTES
        {
            return Err(BenchError::InvalidArgs(format!(
                "--jwt-secret must be at least {} bytes, as the server requires",
                crate::token::MIN_SECRET_BYTES
            )));
        }
        if self.jwt_ttl == 0 {
            return bad("--jwt-ttl must be at least 1 second");
        }
        if self.connect_concurrency == 0 {
            return bad("--connect-concurrency must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        BenchArgs::command().debug_assert();
    }

    #[test]
    fn publishers_use_the_subscriber_urls_unless_told_otherwise() {
        let args = BenchArgs::parse_from(["chat-bench", "--url", "ws://a/ws", "ws://b/ws"]);
        assert_eq!(args.publisher_urls(), ["ws://a/ws", "ws://b/ws"]);
        let args = BenchArgs::parse_from([
            "chat-bench",
            "--url",
            "ws://b/ws",
            "--publish-url",
            "ws://a/ws",
        ]);
        assert_eq!(args.publisher_urls(), ["ws://a/ws"]);
    }

    #[test]
    fn a_jwt_secret_shorter_than_the_server_accepts_is_refused() {
        let args = BenchArgs::parse_from(["chat-bench", "--jwt-secret", "short"]);
        assert!(matches!(args.validate(), Err(BenchError::InvalidArgs(_))));
        let args = BenchArgs::parse_from(["chat-bench", "--jwt-secret", &"s".repeat(32)]);
        assert!(args.validate().is_ok());
        assert_eq!(args.jwt_ttl, 3600);
        // Issuer and audience mean nothing without a secret.
        assert!(BenchArgs::try_parse_from(["chat-bench", "--jwt-issuer", "x"]).is_err());
    }

    #[test]
    fn backends_are_named_process_id_lists() {
        let args = BenchArgs::parse_from([
            "chat-bench",
            "--watch-backend",
            "redis=12,34",
            "postgres=56",
        ]);
        assert_eq!(
            args.watch_backends,
            [
                Backend {
                    name: "redis".into(),
                    pids: vec![12, 34]
                },
                Backend {
                    name: "postgres".into(),
                    pids: vec![56]
                },
            ]
        );
        for bad in ["redis", "redis=", "=12", "redis=12,x", "re dis=1"] {
            assert!(Backend::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn socketio_mode_excludes_the_stomp_only_modes() {
        assert!(BenchArgs::try_parse_from(["chat-bench", "--socketio", "--receipts"]).is_ok());
        for other in [
            &["--raw-topic"][..],
            &["--idle"],
            &["--jwt-secret", &"s".repeat(32)],
        ] {
            let mut argv = vec!["chat-bench", "--socketio"];
            argv.extend_from_slice(other);
            assert!(BenchArgs::try_parse_from(&argv).is_err(), "{argv:?}");
        }
    }

    #[test]
    fn a_message_size_too_small_for_the_marker_is_refused() {
        let args = BenchArgs::parse_from(["chat-bench", "--size", "4"]);
        assert!(matches!(args.validate(), Err(BenchError::InvalidArgs(_))));
    }
}
