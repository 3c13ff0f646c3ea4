//! Start-up: migrations with replicas starting together, a schema newer than this build,
//! and the errors an operator sees for a wrong or unreachable database.

mod support;

use std::time::{Duration, Instant};

use chat_adapters_postgres::{
    PostgresConfig, PostgresError, PostgresRepository, newest_known_version,
};
use chat_test_support::postgres::{fresh_database, with_database};

async fn admin_client(url: &str) -> tokio_postgres::Client {
    chat_test_support::postgres::admin_client(url)
        .await
        .expect("admin connection")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_starting_at_once_both_come_up_on_one_migrated_schema() {
    let database = fresh_database().await;

    let (first, second) = tokio::join!(
        PostgresRepository::connect(PostgresConfig::new(database.url())),
        PostgresRepository::connect(PostgresConfig::new(database.url())),
    );

    first.expect("first replica");
    second.expect("second replica");
    let admin = admin_client(database.url()).await;
    let applied: i64 = admin
        .query_one("SELECT count(*) FROM __diesel_schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    let embedded = i64::try_from(
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
            .unwrap()
            .count(),
    )
    .unwrap();
    assert_eq!(applied, embedded, "each migration is applied exactly once");
}

#[tokio::test]
async fn migrations_also_run_on_a_current_thread_runtime() {
    let database = fresh_database().await;
    PostgresRepository::connect(PostgresConfig::new(database.url()))
        .await
        .expect("connect on the default #[tokio::test] runtime");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_migrated_by_a_newer_release_is_refused_with_a_clear_message() {
    let database = fresh_database().await;
    PostgresRepository::connect(PostgresConfig::new(database.url()))
        .await
        .expect("first start migrates");
    admin_client(database.url())
        .await
        .batch_execute("INSERT INTO __diesel_schema_migrations (version) VALUES ('99990101000000')")
        .await
        .unwrap();

    let err = PostgresRepository::connect(PostgresConfig::new(database.url()))
        .await
        .unwrap_err();

    match &err {
        PostgresError::SchemaTooNew {
            database_version,
            known_version,
            ..
        } => {
            assert_eq!(database_version, "99990101000000");
            assert_eq!(known_version, &newest_known_version());
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("newer"), "{message}");
    assert!(
        message.contains("Deploy the newer chat-service"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_database_is_refused_without_showing_the_password() {
    let database = fresh_database().await;
    let url = with_database(database.url(), "no_such_database_for_chat").replacen(
        "://postgres@",
        "://postgres:never-shown@",
        1,
    );

    let err = PostgresRepository::connect(PostgresConfig::new(url))
        .await
        .unwrap_err();

    assert!(matches!(err, PostgresError::Refused { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("does not exist"), "{message}");
    assert!(!message.contains("never-shown"), "{message}");
    assert!(!format!("{err:?}").contains("never-shown"), "{err:?}");
}

#[tokio::test]
async fn an_unreachable_server_fails_fast_with_its_address_and_without_the_password() {
    // Nothing listens on port 1.
    let mut config = PostgresConfig::new("postgres://chat:never-shown@127.0.0.1:1/chat");
    config.connect_timeout = Duration::from_secs(2);
    let started = Instant::now();

    let err = PostgresRepository::connect(config).await.unwrap_err();

    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, PostgresError::Unreachable { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("chat@127.0.0.1:1/chat"), "{message}");
    assert!(!message.contains("never-shown"), "{message}");
}

#[tokio::test]
async fn a_malformed_url_is_reported_as_such() {
    let err = PostgresRepository::connect(PostgresConfig::new("postgres://chat:pw@host:port/db"))
        .await
        .unwrap_err();
    assert!(matches!(err, PostgresError::InvalidUrl { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("postgres://user:password@host:5432/database")
    );
}
