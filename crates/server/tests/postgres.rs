//! The server on a real PostgreSQL: messages survive a killed process, and an outage is
//! reported clearly and recovered from without a restart (issue 3).

mod support;

use std::sync::Arc;
use std::time::Duration;

use chat_adapters_memory::InMemoryBus;
use chat_adapters_postgres::{PostgresConfig, PostgresRepository};
use chat_server::Adapters;
use chat_stomp::Command;
use chat_test_support::postgres::{ThrowawayPostgres, fresh_database};
use support::process::ServerProcess;
use support::{StompClient, chat_json, spawn_app_with, test_settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_survive_a_killed_server_process() {
    let database = fresh_database().await;
    let env = [("DATABASE_URL", database.url())];
    let first = ServerProcess::start(&env).await;
    let room = first.create_room("durable").await;
    let mut client = StompClient::connect(&first.ws_url()).await;
    for n in 1..=20 {
        client
            .send_chat(&chat_json(room, &format!("m{n}")), Some(&format!("r{n}")))
            .await;
    }
    for n in 1..=20 {
        client.expect_receipt(&format!("r{n}")).await;
    }
    // No goodbye: the process dies as a pod does when its node goes away.
    first.kill().await;

    let second = ServerProcess::start(&env).await;
    let history = second.history(room).await;
    let contents: Vec<_> = history
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (1..=20).map(|n| format!("m{n}")).collect();
    assert_eq!(contents, expected);
    let seqs: Vec<i64> = history.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    assert_eq!(second.terminate().await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_database_url_stops_start_up_with_one_clear_line_and_a_failure_code() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .env("CHAT_BIND", "127.0.0.1:0")
        .env("DATABASE_URL", "postgres://nobody:secret@127.0.0.1:1/none")
        .env("CHAT_AUTH", "none")
        .env_remove("REDIS_URL")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let log = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("cannot reach PostgreSQL"), "{log}");
    assert!(
        !log.contains("secret"),
        "the password must not be logged: {log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgresql_is_down_sends_fail_clearly_and_everything_recovers_when_it_returns() {
    let postgres = ThrowawayPostgres::start().await;
    let mut config = PostgresConfig::new(postgres.url());
    config.connect_timeout = Duration::from_secs(1);
    config.statement_timeout = Duration::from_secs(1);
    let repository = PostgresRepository::connect(config).await.unwrap();
    let repository = Arc::new(repository);
    let adapters = Adapters {
        repository: repository.clone(),
        members: repository.clone(),
        cursors: repository,
        bus: Arc::new(InMemoryBus::new()),
    };
    let app = spawn_app_with(adapters, test_settings()).await;
    let room = app.create_room("outage").await;
    let mut client = StompClient::connect(&app.ws_url()).await;
    client.subscribe("errors", "/user/queue/errors").await;
    client
        .send_chat(&chat_json(room, "before"), Some("before"))
        .await;
    client.expect_receipt("before").await;

    postgres.stop().await;

    // STOMP: an error on the errors queue, and no RECEIPT.
    client
        .send_chat(&chat_json(room, "during"), Some("during"))
        .await;
    let (_, error) = client.next_message().await;
    assert_eq!(error["code"], "STORE_UNAVAILABLE");
    assert_eq!(error["receiptId"], "during");
    // REST: 503 problem+json.
    let response = app.post_message(room, chat_json(room, "during rest")).await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: serde_json::Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "STORE_UNAVAILABLE");
    // Not ready, but alive, and the WebSocket client is still connected.
    assert_eq!(
        reqwest::get(app.http("/health/ready"))
            .await
            .unwrap()
            .status(),
        503
    );
    assert_eq!(
        reqwest::get(app.http("/health/live"))
            .await
            .unwrap()
            .status(),
        200
    );

    postgres.start_again().await;

    // Without a restart of chat-server, sends work again on the same connection.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let receipt = format!("after-{attempt}");
        client
            .send_chat(&chat_json(room, "after"), Some(&receipt))
            .await;
        let frame = client.next_frame().await;
        if frame.command == Command::Receipt {
            assert_eq!(frame.header("receipt-id"), Some(receipt.as_str()));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "sends did not recover: {frame:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        reqwest::get(app.http("/health/ready"))
            .await
            .unwrap()
            .status(),
        200
    );
    let contents: Vec<_> = app
        .history(room)
        .await
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        contents,
        vec!["before", "after"],
        "nothing of the outage was half-stored"
    );
}
