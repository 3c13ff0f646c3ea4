//! PostgreSQL going away and coming back, on a throw-away cluster the test stops and
//! starts: operations fail fast with `Unavailable` (never hang), and the same repository
//! works again once the server is back.

mod support;

use std::time::{Duration, Instant};

use chat_adapters_postgres::{PostgresConfig, PostgresRepository};
use chat_domain::{MessageRepository, RepositoryError, Seq};
use chat_test_support::postgres::ThrowawayPostgres;
use support::{message, room};

/// Within this an operation against a stopped server must have failed.
const FAIL_FAST: Duration = Duration::from_secs(5);

async fn survives_an_outage(max_batch: usize) {
    let server = ThrowawayPostgres::start().await;
    let mut config = PostgresConfig::new(server.url());
    config.connect_timeout = Duration::from_secs(2);
    config.statement_timeout = Duration::from_secs(2);
    config.max_batch = max_batch;
    let repository = PostgresRepository::connect(config).await.expect("connect");
    let target = room(&repository, "outage").await;
    assert_eq!(
        repository
            .append(message(target, "before"))
            .await
            .unwrap()
            .seq,
        Seq(1)
    );

    server.stop().await;

    let started = Instant::now();
    let append = tokio::time::timeout(FAIL_FAST, repository.append(message(target, "lost")))
        .await
        .expect("append must not hang while PostgreSQL is down");
    assert!(
        matches!(append, Err(RepositoryError::Unavailable(_))),
        "{append:?}"
    );
    let health = tokio::time::timeout(FAIL_FAST, repository.check_health())
        .await
        .expect("check_health must not hang while PostgreSQL is down");
    assert!(
        matches!(health, Err(RepositoryError::Unavailable(_))),
        "{health:?}"
    );
    let history = tokio::time::timeout(FAIL_FAST, repository.find_room(target))
        .await
        .expect("reads must not hang while PostgreSQL is down");
    assert!(
        matches!(history, Err(RepositoryError::Unavailable(_))),
        "{history:?}"
    );
    assert!(started.elapsed() < FAIL_FAST, "{:?}", started.elapsed());

    server.start_again().await;

    repository.check_health().await.expect("healthy again");
    let after = repository.append(message(target, "after")).await.unwrap();
    assert_eq!(after.seq, Seq(2), "the failed append used no seq");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_fails_fast_while_postgres_is_down_and_recovers_without_restart() {
    survives_an_outage(PostgresConfig::DEFAULT_MAX_BATCH).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_transaction_per_message_fails_fast_while_postgres_is_down_and_recovers() {
    survives_an_outage(1).await;
}
