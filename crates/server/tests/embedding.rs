//! Another process embedding the core (issue 17): the `announce` example, run as built,
//! posts a SYSTEM message through `chat-domain` and the adapters into a room of a live
//! chat-server, and a STOMP client of that server receives it; with the servers' Redis
//! settings (a channel per room, signed payloads) and with clear failures when the room
//! does not exist or Redis is down.

mod support;

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use chat_test_support::postgres::fresh_database;
use chat_test_support::redis::{redis_url, unique_channel};
use support::StompClient;
use support::process::ServerProcess;

/// `target/<profile>/examples/announce`, which `cargo test --workspace` builds with the tests.
fn announce_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("tests run from target/<profile>/deps");
    let binary = profile_dir.join("examples").join("announce");
    assert!(
        binary.is_file(),
        "{} is missing: `cargo test --workspace` builds the examples; when running this \
         file alone, `cargo build -p chat-server --example announce` first",
        binary.display()
    );
    binary
}

async fn announce(env: &[(&str, &str)], args: &[&str]) -> Output {
    let run = tokio::process::Command::new(announce_binary())
        .env_clear()
        .envs(env.iter().copied())
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("announce finishes within 30 s")
        .expect("announce runs")
}

const SECRET: &str = "an-announce-test-secret-of-at-least-32-bytes";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announcement_from_another_process_reaches_the_rooms_subscribers() {
    let database = fresh_database().await;
    let redis = redis_url().await;
    let channel = unique_channel("chat-announce");
    let env = [
        ("DATABASE_URL", database.url()),
        ("REDIS_URL", redis.url()),
        ("CHAT_REDIS_CHANNEL", channel.as_str()),
        ("CHAT_REDIS_CHANNEL_MODE", "per-room"),
        ("CHAT_BUS_SECRET", SECRET),
    ];
    let server = ServerProcess::start(&env).await;
    let room = server.create_room("support").await;
    let mut client = StompClient::connect(&server.ws_url()).await;
    client
        .subscribe("s", &format!("/topic/chatroom/{room}"))
        .await;

    let room_arg = room.to_string();
    let output = announce(&env, &["--room", &room_arg, "--text", "your order shipped"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "announce failed: {stderr}");
    assert!(stdout.contains("as seq 1"), "{stdout}");
    assert!(stderr.is_empty(), "no warning expected: {stderr}");

    let (_, body) = client.next_message().await;
    assert_eq!(body["content"], "your order shipped");
    assert_eq!(body["messageType"], "SYSTEM");
    assert_eq!(body["senderNickname"], "System");
    assert_eq!(body["seq"], 1);
    // Once: the bus brought it, and the catch-up from the store does not add it again.
    client.expect_silence(Duration::from_millis(2500)).await;
    assert_eq!(server.history(room).await.len(), 1);
    assert_eq!(server.terminate().await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announce_says_what_is_wrong_and_exits_non_zero() {
    let database = fresh_database().await;
    let redis = redis_url().await;
    let env = [
        ("DATABASE_URL", database.url()),
        ("REDIS_URL", redis.url()),
        ("CHAT_REDIS_CHANNEL", "chat-announce-errors"),
    ];

    let missing = announce(&env, &["--room", "424242", "--text", "hello?"]).await;
    assert_eq!(missing.status.code(), Some(1));
    let said = String::from_utf8_lossy(&missing.stderr);
    assert!(
        said.contains("424242") && said.contains("does not exist"),
        "{said}"
    );

    // Redis down (nothing listens on port 1): nothing is stored, and it says which one.
    let down = [
        ("DATABASE_URL", database.url()),
        ("REDIS_URL", "redis://127.0.0.1:1"),
    ];
    let unreachable = announce(&down, &["--room", "1", "--text", "hello?"]).await;
    assert_eq!(unreachable.status.code(), Some(2));
    let said = String::from_utf8_lossy(&unreachable.stderr);
    assert!(said.starts_with("announce: Redis"), "{said}");

    // PostgreSQL down: the same, naming PostgreSQL.
    let no_database = [
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/chat"),
        ("REDIS_URL", redis.url()),
    ];
    let unreachable = announce(&no_database, &["--room", "1", "--text", "hello?"]).await;
    assert_eq!(unreachable.status.code(), Some(2));
    let said = String::from_utf8_lossy(&unreachable.stderr);
    assert!(said.starts_with("announce: PostgreSQL"), "{said}");

    let empty = announce(&env, &["--room", "1", "--text", ""]).await;
    assert_eq!(empty.status.code(), Some(1), "{empty:?}");
}
