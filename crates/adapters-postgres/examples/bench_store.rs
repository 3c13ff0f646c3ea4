//! Store throughput through `ChatService` (validate → store → publish on the in-memory
//! bus) with many concurrent senders, once with one transaction per message (the
//! baseline) and once with group commit, against a temporary database. Run it through
//! `scripts/bench-store`; the figures go to docs/benchmarks.md.
//!
//! Settings come from the environment: `DATABASE_URL` (a server where the user may create
//! databases; default `postgres://postgres@127.0.0.1:5432/postgres`), `SECONDS` per mode
//! (10), `SENDERS` (100), `ROOMS` the senders spread over (10).
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_adapters_memory::InMemoryBus;
use chat_adapters_postgres::{PostgresConfig, PostgresRepository};
use chat_domain::{ChatMessageRequest, ChatService, MessageType, RoomId, SenderId};

struct Settings {
    admin_url: String,
    seconds: u64,
    senders: usize,
    rooms: usize,
}

impl Settings {
    fn from_env() -> Self {
        let number = |name: &str, default: u64| -> u64 {
            std::env::var(name).ok().map_or(default, |v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name} must be a whole number, not {v:?}"))
            })
        };
        Self {
            admin_url: std::env::var("DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
            seconds: number("SECONDS", 10),
            senders: usize::try_from(number("SENDERS", 100)).expect("SENDERS fits usize"),
            rooms: usize::try_from(number("ROOMS", 10).max(1)).expect("ROOMS fits usize"),
        }
    }
}

struct Run {
    stored: u64,
    failed: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn per_second(&self) -> f64 {
        self.stored as f64 / self.elapsed.as_secs_f64()
    }

    fn latency_ms(&self, quantile: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let index = ((self.latencies.len() - 1) as f64 * quantile).round() as usize;
        self.latencies[index].as_secs_f64() * 1000.0
    }
}

#[tokio::main]
async fn main() {
    let settings = Settings::from_env();
    let database = format!("chat_bench_{}", std::process::id());
    let admin = admin_client(&settings.admin_url).await;
    admin
        .batch_execute(&format!("CREATE DATABASE \"{database}\""))
        .await
        .expect("create the benchmark database (the user needs CREATEDB)");
    let url = with_database(&settings.admin_url, &database);

    println!(
        "senders={} rooms={} seconds={} per mode, database {database} (dropped afterwards)",
        settings.senders, settings.rooms, settings.seconds
    );
    let defaults = PostgresConfig::new(url.as_str());
    let modes = [
        ("one transaction per message (max_batch=1)", 1),
        ("group commit (max_batch=512)", defaults.max_batch),
    ];
    let mut rates = Vec::new();
    for (label, max_batch) in modes {
        let mut config = PostgresConfig::new(url.as_str());
        config.max_batch = max_batch;
        if let Ok(writers) = std::env::var("WRITERS") {
            config.writers = writers.parse().expect("WRITERS must be a whole number");
        }
        let run = run_mode(config, &settings).await;
        println!(
            "{label:<44} {:>9.0} msgs/s  ({} stored, {} failed, p50 {:.1} ms, p99 {:.1} ms)",
            run.per_second(),
            run.stored,
            run.failed,
            run.latency_ms(0.50),
            run.latency_ms(0.99),
        );
        rates.push(run.per_second());
    }
    println!("speed-up: {:.1}x", rates[1] / rates[0]);

    admin
        .batch_execute(&format!("DROP DATABASE \"{database}\" WITH (FORCE)"))
        .await
        .expect("drop the benchmark database");
}

async fn run_mode(config: PostgresConfig, settings: &Settings) -> Run {
    let repository = Arc::new(PostgresRepository::connect(config).await.expect("connect"));
    let service = ChatService::new(
        repository.clone(),
        repository.clone(),
        Arc::new(InMemoryBus::new()),
    );
    let mut rooms = Vec::with_capacity(settings.rooms);
    for i in 0..settings.rooms {
        let room = service
            .create_room(&format!("bench {i}"))
            .await
            .expect("room");
        rooms.push(room.id);
    }
    let rooms = Arc::new(rooms);

    let started = Instant::now();
    let deadline = started + Duration::from_secs(settings.seconds);
    let senders: Vec<_> = (0..settings.senders)
        .map(|sender| {
            let service = service.clone();
            let rooms = Arc::clone(&rooms);
            tokio::spawn(async move {
                let room: RoomId = rooms[sender % rooms.len()];
                let mut stored = 0_u64;
                let mut failed = 0_u64;
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let sent_at = Instant::now();
                    let request = ChatMessageRequest {
                        chat_room_id: Some(room),
                        sender_id: Some(SenderId(sender as i64)),
                        sender_nickname: Some(format!("sender-{sender}")),
                        content: Some(format!("message {stored} from sender {sender}")),
                        message_type: Some(MessageType::Text),
                    };
                    match service.send(request, None).await {
                        Ok(_) => {
                            stored += 1;
                            latencies.push(sent_at.elapsed());
                        }
                        Err(_) => failed += 1,
                    }
                }
                (stored, failed, latencies)
            })
        })
        .collect();
    let mut run = Run {
        stored: 0,
        failed: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for sender in senders {
        let (stored, failed, latencies) = sender.await.expect("sender task");
        run.stored += stored;
        run.failed += failed;
        run.latencies.extend(latencies);
    }
    run.elapsed = started.elapsed();
    run.latencies.sort_unstable();

    // The rate only counts if every stored message got its own seq without a hole.
    let mut highest = 0_i64;
    for room in rooms.iter() {
        highest += service.room(*room).await.expect("room").last_seq.get();
    }
    assert_eq!(
        u64::try_from(highest).expect("non-negative"),
        run.stored,
        "every stored message has exactly one seq"
    );
    run
}

async fn admin_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot connect to {} ({e}); set DATABASE_URL to a running server",
                chat_adapters_postgres::redact_url(url)
            )
        });
    tokio::spawn(connection);
    client
}

/// `url` with its database replaced (URL form only; enough for a benchmark).
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_at(url.find('?').unwrap_or(url.len()));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |p| authority_start + p);
    format!("{}/{database}{query}", &base[..path_start])
}
