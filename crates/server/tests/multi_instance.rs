//! Several instances in one process sharing one bus and one repository: the seed scenario
//! of the product with Redis and PostgreSQL swapped for the in-memory adapters, proving the
//! ports are the seam between instances.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use chat_adapters_memory::{InMemoryBus, InMemoryRepository};
use chat_domain::{ChatMessagePublish, MessageBus};
use chat_server::Adapters;
use support::{StompClient, chat_json, spawn_app_with, test_settings};

fn shared() -> Adapters {
    let store = Arc::new(InMemoryRepository::new());
    Adapters {
        repository: store.clone(),
        members: store.clone(),
        cursors: store,
        bus: Arc::new(InMemoryBus::new()),
    }
}

#[tokio::test]
async fn a_client_on_instance_a_and_a_client_on_instance_b_both_receive_a_message() {
    let adapters = shared();
    let a = spawn_app_with(adapters.clone(), test_settings()).await;
    let b = spawn_app_with(adapters, test_settings()).await;
    let room = a.create_room("shared").await;

    let mut alice = StompClient::connect(&a.ws_url()).await;
    let mut bob = StompClient::connect(&b.ws_url()).await;
    alice
        .subscribe("s", &format!("/topic/chatroom/{room}"))
        .await;
    bob.subscribe("s", &format!("/topic/chatroom/{room}")).await;

    alice
        .send_chat(&chat_json(room, "across instances"), None)
        .await;
    let (_, to_alice) = alice.next_message().await;
    let (_, to_bob) = bob.next_message().await;
    assert_eq!(to_alice, to_bob);
    assert_eq!(to_bob["content"], "across instances");
    // And it is stored, visible from either instance.
    assert_eq!(b.history(room).await, vec![to_bob]);
}

#[tokio::test]
async fn concurrent_senders_on_two_instances_are_seen_by_everyone_once_in_seq_order() {
    let adapters = shared();
    let a = spawn_app_with(adapters.clone(), test_settings()).await;
    let b = spawn_app_with(adapters, test_settings()).await;
    let room = a.create_room("busy").await;
    let mut watchers = Vec::new();
    for app in [&a, &b, &a, &b] {
        let mut client = StompClient::connect(&app.ws_url()).await;
        client
            .subscribe("s", &format!("/topic/chatroom/{room}"))
            .await;
        watchers.push(client);
    }
    const EACH: i64 = 50;
    let senders = [a.ws_url(), b.ws_url()].map(|url| {
        tokio::spawn(async move {
            let mut client = StompClient::connect(&url).await;
            for n in 0..EACH {
                client
                    .send_chat(&chat_json(room, &format!("{url} {n}")), None)
                    .await;
            }
            client
                .send(
                    chat_stomp::Frame::new(chat_stomp::Command::Disconnect)
                        .with_header("receipt", "done"),
                )
                .await;
            client.expect_receipt("done").await;
        })
    });
    for sender in senders {
        sender.await.unwrap();
    }
    for watcher in &mut watchers {
        let seqs: Vec<i64> = {
            let mut seqs = Vec::new();
            for _ in 0..2 * EACH {
                seqs.push(watcher.next_message().await.1["seq"].as_i64().unwrap());
            }
            seqs
        };
        assert_eq!(seqs, (1..=2 * EACH).collect::<Vec<_>>());
        watcher
            .expect_silence(std::time::Duration::from_millis(100))
            .await;
    }
}

/// A message that reaches an instance over the bus with a jump in seq (as after a Redis
/// blip) makes it backfill the missing ones from the store first.
#[tokio::test]
async fn an_instance_that_sees_a_seq_jump_backfills_the_gap_from_the_store() {
    let adapters = shared();
    let app = spawn_app_with(adapters.clone(), test_settings()).await;
    let room = app.create_room("gappy").await;
    let mut client = StompClient::connect(&app.ws_url()).await;
    client
        .subscribe("s", &format!("/topic/chatroom/{room}"))
        .await;

    // Store three messages behind the bus's back, then publish only the third.
    let service = chat_domain::ChatService::new(
        adapters.repository.clone(),
        adapters.members.clone(),
        Arc::new(InMemoryBus::new()) as Arc<dyn MessageBus>,
    );
    let mut last = None;
    for n in 1..=3 {
        let request = chat_domain::ChatMessageRequest::from_json(
            chat_json(room, &format!("m{n}")).as_bytes(),
        )
        .unwrap();
        last = Some(service.send(request, None).await.unwrap().message);
    }
    adapters
        .bus
        .publish(&ChatMessagePublish::from(&last.unwrap()))
        .await
        .unwrap();

    let mut contents = BTreeSet::new();
    let mut seqs = Vec::new();
    for _ in 0..3 {
        let (_, body) = client.next_message().await;
        seqs.push(body["seq"].as_i64().unwrap());
        contents.insert(body["content"].as_str().unwrap().to_owned());
    }
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(contents.len(), 3);
}

#[tokio::test]
async fn a_slow_consumer_is_disconnected_and_others_keep_receiving() {
    let adapters = shared();
    let mut settings = test_settings();
    settings.outbound_queue = 512;
    let app = spawn_app_with(adapters, settings).await;
    let room = app.create_room("firehose").await;
    let mut fast = StompClient::connect(&app.ws_url()).await;
    fast.subscribe("s", &format!("/topic/chatroom/{room}"))
        .await;
    // A client that subscribes and then never reads: its socket buffers fill up, then its
    // queue, and the server lets it go.
    let mut slow = StompClient::connect(&app.ws_url()).await;
    slow.subscribe("s", &format!("/topic/chatroom/{room}"))
        .await;

    let fast_reader = tokio::spawn(async move {
        let mut received = 0;
        while let Some(frame) = fast
            .next_frame_within(std::time::Duration::from_secs(5))
            .await
        {
            assert_eq!(frame.command, chat_stomp::Command::Message, "{frame:?}");
            received += 1;
            if received == MESSAGES {
                break;
            }
        }
        received
    });
    // More than the kernel's socket buffers can hold for the slow client.
    const MESSAGES: usize = 8000;
    let big = "y".repeat(4000);
    let mut sender = StompClient::connect(&app.ws_url()).await;
    for _ in 0..MESSAGES {
        sender.send_chat(&chat_json(room, &big), None).await;
    }
    assert_eq!(fast_reader.await.unwrap(), MESSAGES);
    // The slow client's stream ends with an ERROR that says why.
    let mut last_error = None;
    while let Some(frame) = slow
        .next_frame_within(std::time::Duration::from_secs(5))
        .await
    {
        if frame.command == chat_stomp::Command::Error {
            last_error = Some(frame);
        }
    }
    let error = last_error.expect("the slow consumer gets an ERROR frame");
    assert!(error.header("message").unwrap().contains("slow consumer"));
}
