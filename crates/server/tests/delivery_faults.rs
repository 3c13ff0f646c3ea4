//! The delivery promise against the faults that broke it (issue 9), on real `chat-server`
//! processes with a real PostgreSQL and Redis: a bus that never carries a room's messages
//! between instances, a frozen Redis, a resume point past the end of a room, and a SEND
//! retried with the same idempotency key.

mod support;

use std::time::{Duration, Instant};

use chat_stomp::{Command, Frame};
use chat_test_support::postgres::fresh_database;
use chat_test_support::redis::{ThrowawayRedis, redis_url, unique_channel};
use support::process::ServerProcess;
use support::{StompClient, chat_json, spawn_app};

/// The default reconciliation period, which the tests rely on.
const RECONCILE_PERIOD: Duration = Duration::from_secs(2);

async fn seqs_within(client: &mut StompClient, n: usize, within: Duration) -> Vec<i64> {
    let deadline = Instant::now() + within;
    let mut seqs = Vec::new();
    while seqs.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(frame) = client.next_frame_within(left).await else {
            break;
        };
        assert_eq!(frame.command, Command::Message, "{frame:?}");
        let body: serde_json::Value = serde_json::from_slice(&frame.body).unwrap();
        seqs.push(body["seq"].as_i64().unwrap());
    }
    seqs
}

/// What a failed publish, a wedged subscriber or a silently dropping Redis amounts to: the
/// two instances share PostgreSQL but their Redis channels never meet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_room_gets_what_the_bus_never_brought_within_the_reconciliation_period() {
    let database = fresh_database().await;
    let redis = redis_url().await;
    let (channel_a, channel_b) = (unique_channel("chat-a"), unique_channel("chat-b"));
    let a = ServerProcess::start(&[
        ("DATABASE_URL", database.url()),
        ("REDIS_URL", redis.url()),
        ("CHAT_REDIS_CHANNEL", &channel_a),
    ])
    .await;
    let b = ServerProcess::start(&[
        ("DATABASE_URL", database.url()),
        ("REDIS_URL", redis.url()),
        ("CHAT_REDIS_CHANNEL", &channel_b),
    ])
    .await;
    let room = a.create_room("quiet").await;
    let mut listener = StompClient::connect(&b.ws_url()).await;
    listener
        .subscribe("s", &format!("/topic/chatroom/{room}"))
        .await;
    let mut sender = StompClient::connect(&a.ws_url()).await;
    for i in 0..3 {
        let receipt = format!("r{i}");
        sender
            .send_chat(&chat_json(room, &format!("m{i}")), Some(&receipt))
            .await;
        sender.expect_receipt(&receipt).await;
    }
    let sent_at = Instant::now();

    let seqs = seqs_within(&mut listener, 3, RECONCILE_PERIOD + Duration::from_secs(1)).await;
    assert_eq!(
        seqs,
        vec![1, 2, 3],
        "after {:?} the subscriber on B has only these",
        sent_at.elapsed()
    );
    listener.expect_silence(Duration::from_millis(500)).await;
}

/// Redis SIGSTOPped: connections stay open and nothing answers. RECEIPTs and delivery on
/// the sending instance go on at once; the other instance gets the messages from the store;
/// after the thaw nothing is lost, doubled or out of order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_frozen_receipts_and_delivery_go_on_and_nothing_is_lost_after_the_thaw() {
    let database = fresh_database().await;
    let redis = ThrowawayRedis::start().await;
    let channel = unique_channel("chat-frozen");
    let env = [
        ("DATABASE_URL", database.url()),
        ("REDIS_URL", &redis.url()),
        ("CHAT_REDIS_CHANNEL", channel.as_str()),
    ];
    let a = ServerProcess::start(&env).await;
    let b = ServerProcess::start(&env).await;
    let room = a.create_room("frozen").await;
    let mut near = StompClient::connect(&a.ws_url()).await;
    near.subscribe("s", &format!("/topic/chatroom/{room}"))
        .await;
    let mut far = StompClient::connect(&b.ws_url()).await;
    far.subscribe("s", &format!("/topic/chatroom/{room}")).await;
    let mut sender = StompClient::connect(&a.ws_url()).await;
    sender
        .send_chat(&chat_json(room, "before"), Some("r0"))
        .await;
    sender.expect_receipt("r0").await;
    assert_eq!(seqs_within(&mut near, 1, Duration::from_secs(5)).await, [1]);
    assert_eq!(seqs_within(&mut far, 1, Duration::from_secs(5)).await, [1]);

    redis.freeze().await;
    let mut slowest_receipt = Duration::ZERO;
    for i in 2..=6 {
        let receipt = format!("r{i}");
        let started = Instant::now();
        sender
            .send_chat(&chat_json(room, &format!("frozen {i}")), Some(&receipt))
            .await;
        sender.expect_receipt(&receipt).await;
        slowest_receipt = slowest_receipt.max(started.elapsed());
        // Delivered on the sending instance right after the commit.
        assert_eq!(
            seqs_within(&mut near, 1, Duration::from_millis(500)).await,
            [i],
            "same-instance delivery waited for the frozen bus"
        );
    }
    assert!(
        slowest_receipt < Duration::from_millis(500),
        "a RECEIPT waited {slowest_receipt:?} for the frozen bus"
    );
    // The other instance hears nothing from Redis, and catches up from the store.
    assert_eq!(
        seqs_within(&mut far, 5, RECONCILE_PERIOD * 2 + Duration::from_secs(1)).await,
        [2, 3, 4, 5, 6]
    );

    redis.thaw().await;
    for i in 7..=9 {
        let receipt = format!("r{i}");
        sender
            .send_chat(&chat_json(room, &format!("after {i}")), Some(&receipt))
            .await;
        sender.expect_receipt(&receipt).await;
    }
    let within = RECONCILE_PERIOD * 2 + Duration::from_secs(10);
    assert_eq!(seqs_within(&mut near, 3, within).await, [7, 8, 9]);
    assert_eq!(seqs_within(&mut far, 3, within).await, [7, 8, 9]);
    // The publishes queued during the freeze arrive late, and are dropped as duplicates.
    near.expect_silence(Duration::from_secs(1)).await;
    far.expect_silence(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_resume_point_past_the_end_of_the_room_is_refused_with_the_rooms_last_seq() {
    let app = spawn_app().await;
    let room = app.create_room("restored").await;
    let mut client = StompClient::connect(&app.ws_url()).await;
    client.subscribe("errors", "/user/queue/errors").await;
    client.send_chat(&chat_json(room, "one"), Some("r1")).await;
    client.expect_receipt("r1").await;

    for resume in ["2", "9223372036854775807"] {
        client
            .send(
                Frame::new(Command::Subscribe)
                    .with_header("id", format!("resume-{resume}"))
                    .with_header("destination", format!("/topic/chatroom/{room}"))
                    .with_header("x-resume-after", resume)
                    .with_header("receipt", "sub"),
            )
            .await;
        let (frame, body) = client.next_message().await;
        assert_eq!(frame.header("destination"), Some("/user/queue/errors"));
        assert_eq!(body["code"], "INVALID_RESUME", "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("lastSeq is 1"), "{message}");
    }
    // A resume point at the end is fine: nothing to replay, then live messages.
    client
        .subscribe_with(
            "ok",
            &format!("/topic/chatroom/{room}"),
            &[("x-resume-after", "1")],
        )
        .await;
    client.send_chat(&chat_json(room, "two"), Some("r2")).await;
    let (receipt_or_message, message) = (client.next_frame().await, client.next_frame().await);
    let frames = [receipt_or_message, message];
    let delivered: Vec<i64> = frames
        .iter()
        .filter(|f| f.command == Command::Message)
        .map(|f| {
            serde_json::from_slice::<serde_json::Value>(&f.body).unwrap()["seq"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(delivered, [2]);
}

fn keyed_send(room: i64, content: &str, key: &str, receipt: &str) -> Frame {
    Frame::new(Command::Send)
        .with_header("destination", "/app/chat.sendMessage")
        .with_header("content-type", "application/json")
        .with_header("x-idempotency-key", key)
        .with_header("receipt", receipt)
        .with_body(chat_json(room, content).into_bytes())
}

#[tokio::test]
async fn a_send_retried_with_its_idempotency_key_is_stored_and_delivered_once() {
    let app = spawn_app().await;
    let room = app.create_room("retries").await;
    let mut listener = StompClient::connect(&app.ws_url()).await;
    listener
        .subscribe("s", &format!("/topic/chatroom/{room}"))
        .await;
    let mut sender = StompClient::connect(&app.ws_url()).await;
    sender.send(keyed_send(room, "hello", "k-1", "r1")).await;
    sender.expect_receipt("r1").await;
    // The client did not see the RECEIPT (say) and retries, over STOMP and over REST.
    sender.send(keyed_send(room, "hello", "k-1", "r2")).await;
    sender.expect_receipt("r2").await;
    let rest = reqwest::Client::new()
        .post(app.http(&format!("/api/chatrooms/{room}/messages")))
        .header("content-type", "application/json")
        .header("idempotency-key", "k-1")
        .body(chat_json(room, "hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 201);
    let body: serde_json::Value = rest.json().await.unwrap();
    assert_eq!(body["seq"], 1, "the retry answers with the stored message");

    sender.send(keyed_send(room, "second", "k-2", "r3")).await;
    sender.expect_receipt("r3").await;
    assert_eq!(
        seqs_within(&mut listener, 2, Duration::from_secs(5)).await,
        [1, 2]
    );
    listener.expect_silence(Duration::from_millis(300)).await;
    let contents: Vec<String> = app
        .history(room)
        .await
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(contents, ["hello", "second"]);

    // A key that is not one is an application error; nothing is stored.
    sender.subscribe("errors", "/user/queue/errors").await;
    sender
        .send(keyed_send(room, "third", "has space", "r4"))
        .await;
    let (_, error) = sender.next_message().await;
    assert_eq!(error["code"], "INVALID_IDEMPOTENCY_KEY");
    assert_eq!(app.history(room).await.len(), 2);
}
