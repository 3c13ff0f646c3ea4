//! The connection lost during COMMIT: PostgreSQL received the COMMIT and may have applied
//! it, but the answer never came. The adapter must find out instead of reporting "nothing
//! was stored" for a stored message; when it cannot find out it says so
//! (`OutcomeUnknown`), and a retry with the same idempotency key stores nothing twice.
//!
//! A small TCP proxy between the pool and the real server cuts the client side of a
//! connection right after forwarding what commits (the server side stays open a moment, so
//! the server commits as it would when a network drops the reply): an explicit COMMIT, or
//! the writer's append statement, which commits on its own. The proxy tells that statement
//! by the message it carries: the messages these tests cut contain [`COMMITS`].

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chat_adapters_postgres::{PostgresConfig, PostgresRepository};
use chat_domain::{
    HistoryLimit, HistoryQuery, IdempotencyKey, MessageRepository, RepositoryError, Seq,
};
use chat_test_support::postgres::{TestDatabase, fresh_database};
use support::{message, room};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to the next COMMIT, and to traffic after it.
#[derive(Default)]
struct Faults {
    /// Cut the client side of the connection right after the next COMMIT goes through.
    cut_next_commit: AtomicBool,
    /// Cut the client side when the next COMMIT arrives, and hand what came with it to the
    /// server only once the adapter's look for it on another connection has been answered:
    /// a batch stuck in the network that arrives at the worst moment.
    hold_next_commit: AtomicBool,
    /// The adapter has sent its look for a held batch.
    look_sent: AtomicBool,
    /// The held bytes and the connection they are due on.
    held: std::sync::Mutex<Option<(OwnedWriteHalf, Vec<u8>)>>,
    /// Stop forwarding on every connection (a frozen network) once a COMMIT was cut.
    freeze_after_cut: AtomicBool,
    frozen: AtomicBool,
}

/// In the content of a message whose append statement the proxy treats as a COMMIT (the
/// writer's statement runs in an implicit transaction that commits at its `Sync`).
const COMMITS: &str = "[commits]";

/// Whether a chunk from the client commits a transaction when the server has it.
fn commits(chunk: &[u8]) -> bool {
    let marked = COMMITS.as_bytes();
    chunk.windows(7).any(|w| w == b"COMMIT\0") || chunk.windows(marked.len()).any(|w| w == marked)
}

/// What the adapter's look for a batch by id contains on the wire.
const LOOK: &[u8] = b"FROM chat_messages WHERE id = ANY";

/// Forwards 127.0.0.1:<port> to `upstream`, applying `faults`.
async fn start_proxy(upstream: String, faults: Arc<Faults>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let Ok(server) = TcpStream::connect(&upstream).await else {
                continue;
            };
            tokio::spawn(relay(client, server, faults.clone()));
        }
    });
    port
}

async fn relay(client: TcpStream, server: TcpStream, faults: Arc<Faults>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let to_client_faults = faults.clone();
    let to_client = tokio::spawn(async move {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let Ok(n) = server_read.read(&mut buffer).await else {
                return;
            };
            while to_client_faults.frozen.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let look_answered = to_client_faults.look_sent.load(Ordering::SeqCst)
                && buffer[..n].windows(7).any(|w| w == b"SELECT ");
            if look_answered {
                // The look has its answer (its snapshot is taken): the held batch arrives
                // at the old session now, before the adapter reads that answer.
                let held = to_client_faults.held.lock().unwrap().take();
                if let Some((mut late, bytes)) = held {
                    let _ = late.write_all(&bytes).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        drop(late);
                    });
                }
            }
            if n == 0 || client_write.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    });
    let mut buffer = vec![0u8; 16 * 1024];
    while let Ok(n) = client_read.read(&mut buffer).await {
        while faults.frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let is_commit = commits(&buffer[..n]);
        if is_commit && faults.hold_next_commit.swap(false, Ordering::SeqCst) {
            to_client.abort();
            *faults.held.lock().unwrap() = Some((server_write, buffer[..n].to_vec()));
            return;
        }
        if n == 0 || server_write.write_all(&buffer[..n]).await.is_err() {
            break;
        }
        if buffer[..n].windows(LOOK.len()).any(|w| w == LOOK) {
            faults.look_sent.store(true, Ordering::SeqCst);
        }
        if is_commit && faults.cut_next_commit.swap(false, Ordering::SeqCst) {
            // The client loses the connection; the server got the COMMIT and keeps its
            // side a little longer, so it commits before it notices.
            to_client.abort();
            if faults.freeze_after_cut.load(Ordering::SeqCst) {
                faults.frozen.store(true, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            return;
        }
    }
    to_client.abort();
}

async fn proxied_repository(faults: Arc<Faults>) -> (PostgresRepository, TestDatabase) {
    let database = fresh_database().await;
    let url = database.url().to_owned();
    // postgres://user@host:port/name → host:port
    let authority = url.split('@').nth(1).unwrap().split('/').next().unwrap();
    let port = start_proxy(authority.to_owned(), faults).await;
    let proxied = url.replacen(authority, &format!("127.0.0.1:{port}"), 1);
    let mut config = PostgresConfig::new(proxied);
    config.statement_timeout = Duration::from_secs(1);
    config.connect_timeout = Duration::from_secs(1);
    let repository = PostgresRepository::connect(config).await.unwrap();
    (repository, database)
}

async fn stored_count(repository: &PostgresRepository, room: chat_domain::RoomId) -> usize {
    repository
        .history(
            room,
            HistoryQuery {
                after: Some(Seq(0)),
                before: None,
                limit: HistoryLimit::parse(200).unwrap(),
            },
        )
        .await
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_reply_is_lost_is_reported_as_stored_when_it_was() {
    let faults = Arc::new(Faults::default());
    let (repository, _database) = proxied_repository(faults.clone()).await;
    let target = room(&repository, "cut").await;

    faults.cut_next_commit.store(true, Ordering::SeqCst);
    let appended = repository
        .append(message(target, "committed blind [commits]"))
        .await;

    let stored = appended.expect("the COMMIT went through, so the message is stored");
    assert_eq!(stored.seq, Seq(1));
    assert!(
        !faults.cut_next_commit.load(Ordering::SeqCst),
        "the proxy really cut a COMMIT"
    );
    assert_eq!(stored_count(&repository, target).await, 1);
    // The room goes on without a hole.
    let next = repository.append(message(target, "next")).await.unwrap();
    assert_eq!(next.seq, Seq(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_outcome_cannot_be_checked_it_is_unknown_and_a_keyed_retry_stores_once() {
    let faults = Arc::new(Faults::default());
    let (repository, _database) = proxied_repository(faults.clone()).await;
    let target = room(&repository, "frozen").await;
    let key = || Some(IdempotencyKey::parse("send-42").unwrap());

    faults.freeze_after_cut.store(true, Ordering::SeqCst);
    faults.cut_next_commit.store(true, Ordering::SeqCst);
    let appended = repository
        .append(message(target, "maybe [commits]").with_idempotency_key(key()))
        .await;
    assert!(
        matches!(appended, Err(RepositoryError::OutcomeUnknown(_))),
        "never 'nothing was stored' when that is not known: {appended:?}"
    );

    faults.frozen.store(false, Ordering::SeqCst);
    let retried = repository
        .append(message(target, "maybe [commits]").with_idempotency_key(key()))
        .await
        .expect("the retry succeeds once the database answers");
    assert_eq!(retried.seq, Seq(1));
    assert_eq!(stored_count(&repository, target).await, 1, "stored once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_stuck_in_the_network_cannot_commit_after_it_was_looked_for() {
    let faults = Arc::new(Faults::default());
    let (repository, _database) = proxied_repository(faults.clone()).await;
    let target = room(&repository, "held").await;

    faults.hold_next_commit.store(true, Ordering::SeqCst);
    let appended = repository.append(message(target, "late [commits]")).await;
    assert!(
        !faults.hold_next_commit.load(Ordering::SeqCst),
        "the proxy really held a batch back"
    );
    // The held batch reached the old session right behind the look. The look must not be
    // overtaken by it: the answer is what is stored, once, as seq 1.
    let stored = appended.expect("the batch is sent again after the look");
    assert_eq!(stored.seq, Seq(1));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        stored_count(&repository, target).await,
        1,
        "the batch that arrived late was not stored a second time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_is_answered_only_once_its_commit_succeeded() {
    let database = fresh_database().await;
    let repository = PostgresRepository::connect(PostgresConfig::new(database.url()))
        .await
        .unwrap();
    let target = room(&repository, "refused at commit").await;
    // A deferred constraint trigger fails the transaction at its commit, after the statement
    // has run and sent its rows: answering from those rows would report a message stored
    // that is not.
    let admin = chat_test_support::postgres::admin_client(database.url())
        .await
        .unwrap();
    admin
        .batch_execute(
            "CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.content LIKE '%refuse me%' THEN
                     RAISE EXCEPTION 'refused at commit';
                 END IF;
                 RETURN NULL;
             END $$;
             CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON chat_messages
                 DEFERRABLE INITIALLY DEFERRED
                 FOR EACH ROW EXECUTE FUNCTION refuse_at_commit();",
        )
        .await
        .unwrap();

    let refused = repository.append(message(target, "refuse me")).await;
    assert!(
        matches!(refused, Err(RepositoryError::Unavailable(_))),
        "a failed commit is a failed append: {refused:?}"
    );
    assert_eq!(stored_count(&repository, target).await, 0);
    let next = repository.append(message(target, "fine")).await.unwrap();
    assert_eq!(next.seq, Seq(1), "the failed commit gave its seq back");
}
