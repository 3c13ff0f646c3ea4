//! The STOMP gateway, end to end: the real server on a random port, a real WebSocket client.

mod support;

use std::time::Duration;

use chat_server::Adapters;
use chat_stomp::{Command, Frame, HeartBeat};
use support::{StompClient, chat_json, spawn_app, spawn_app_with, test_settings};

#[tokio::test]
async fn the_handshake_selects_the_best_stomp_subprotocol_offered() {
    let app = spawn_app().await;
    let client = StompClient::open_offering(&app.ws_url(), Some("v10.stomp, v12.stomp, v11.stomp"))
        .await
        .unwrap();
    assert_eq!(client.protocol.as_deref(), Some("v12.stomp"));
    let client = StompClient::open_offering(&app.ws_url(), Some("v10.stomp"))
        .await
        .unwrap();
    assert_eq!(client.protocol.as_deref(), Some("v10.stomp"));
}

#[tokio::test]
async fn an_offer_without_any_stomp_version_is_refused() {
    let app = spawn_app().await;
    let refused = StompClient::open_offering(&app.ws_url(), Some("mqtt, graphql-ws")).await;
    let Err(tokio_tungstenite::tungstenite::Error::Http(response)) = refused else {
        panic!("the upgrade should have been refused");
    };
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn connect_is_answered_with_version_heartbeat_server_and_session() {
    let app = spawn_app().await;
    let mut client = StompClient::open(&app.ws_url()).await;
    let connected = client.handshake("5000,7000").await;
    assert_eq!(connected.command, Command::Connected);
    assert_eq!(connected.header("version"), Some("1.2"));
    assert_eq!(connected.header("heart-beat"), Some("10000,10000"));
    assert!(
        connected
            .header("server")
            .unwrap()
            .starts_with("chat-service/")
    );
    assert!(connected.header("session").is_some_and(|s| !s.is_empty()));
}

#[tokio::test]
async fn a_subscriber_receives_a_sent_message_with_the_full_json_body() {
    let app = spawn_app().await;
    let room = app.create_room("lobby").await;
    let mut client = StompClient::connect(&app.ws_url()).await;
    client
        .subscribe("sub-0", &format!("/topic/chatroom/{room}"))
        .await;
    client
        .send_chat(&chat_json(room, "  hello world  "), Some("r1"))
        .await;

    let mut receipt_seen = false;
    let mut message = None;
    for _ in 0..2 {
        let frame = client.next_frame().await;
        match frame.command {
            Command::Receipt => receipt_seen = frame.header("receipt-id") == Some("r1"),
            Command::Message => message = Some(frame),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(receipt_seen);
    let frame = message.unwrap();
    assert_eq!(frame.header("subscription"), Some("sub-0"));
    assert_eq!(
        frame.header("destination"),
        Some(format!("/topic/chatroom/{room}").as_str())
    );
    assert_eq!(frame.header("content-type"), Some("application/json"));
    assert_eq!(
        frame.header("content-length"),
        Some(frame.body.len().to_string().as_str())
    );
    let body: serde_json::Value = serde_json::from_slice(&frame.body).unwrap();
    assert_eq!(
        frame.header("message-id"),
        Some(body["messageId"].to_string().as_str())
    );
    assert_eq!(body["chatRoomId"], room);
    assert_eq!(body["senderId"], 1);
    assert_eq!(body["senderNickname"], "alice");
    assert_eq!(body["content"], "hello world");
    assert_eq!(body["messageType"], "TEXT");
    assert_eq!(body["seq"], 1);
    let created_at = body["createdAt"].as_str().unwrap();
    assert!(
        created_at.ends_with('Z') && created_at.len() == "2026-01-01T00:00:00.000Z".len(),
        "createdAt {created_at} is not RFC 3339 UTC with milliseconds"
    );
}

#[tokio::test]
async fn two_clients_in_a_room_both_receive_and_a_client_in_another_room_does_not() {
    let app = spawn_app().await;
    let room = app.create_room("a").await;
    let other = app.create_room("b").await;
    let mut alice = StompClient::connect(&app.ws_url()).await;
    let mut bob = StompClient::connect(&app.ws_url()).await;
    let mut carol = StompClient::connect(&app.ws_url()).await;
    alice
        .subscribe("s", &format!("/topic/chatroom/{room}"))
        .await;
    bob.subscribe("s", &format!("/topic/chatroom/{room}")).await;
    carol
        .subscribe("s", &format!("/topic/chatroom/{other}"))
        .await;

    alice.send_chat(&chat_json(room, "hi all"), None).await;
    let (_, to_alice) = alice.next_message().await;
    let (_, to_bob) = bob.next_message().await;
    assert_eq!(to_alice, to_bob);
    assert_eq!(to_bob["content"], "hi all");
    carol.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn disconnect_with_a_receipt_gets_the_receipt_then_a_close() {
    let app = spawn_app().await;
    let mut client = StompClient::connect(&app.ws_url()).await;
    client
        .send(Frame::new(Command::Disconnect).with_header("receipt", "bye"))
        .await;
    client.expect_receipt("bye").await;
    assert!(client.is_closed_by_server().await);
}

/// Application errors go to /user/queue/errors, store nothing, and keep the connection.
#[tokio::test]
async fn bad_messages_are_reported_on_the_errors_queue_and_nothing_is_stored() {
    let app = spawn_app().await;
    let room = app.create_room("strict").await;
    let mut client = StompClient::connect(&app.ws_url()).await;
    let mut bystander = StompClient::connect(&app.ws_url()).await;
    client.subscribe("errors", "/user/queue/errors").await;
    client
        .subscribe("room", &format!("/topic/chatroom/{room}"))
        .await;
    bystander
        .subscribe("room", &format!("/topic/chatroom/{room}"))
        .await;

    let cases = [
        ("{not json".to_owned(), "INVALID_JSON"),
        (chat_json(room, "   "), "EMPTY_CONTENT"),
        (chat_json(987_654, "to nowhere"), "UNKNOWN_ROOM"),
        (
            r#"{"senderId":1,"senderNickname":"a","content":"no room"}"#.to_owned(),
            "MISSING_FIELD",
        ),
    ];
    for (i, (body, code)) in cases.iter().enumerate() {
        let receipt = format!("bad-{i}");
        client.send_chat(body, Some(&receipt)).await;
        let (frame, error) = client.next_message().await;
        assert_eq!(frame.header("destination"), Some("/user/queue/errors"));
        assert_eq!(frame.header("subscription"), Some("errors"));
        assert_eq!(error["code"], *code, "for body {body}");
        assert_eq!(error["receiptId"], receipt.as_str());
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert!(app.history(room).await.is_empty(), "nothing may be stored");
    bystander.expect_silence(Duration::from_millis(200)).await;

    // The same connection still works, and so do the others.
    client
        .send_chat(&chat_json(room, "fine now"), Some("good"))
        .await;
    let mut saw = (false, false);
    for _ in 0..2 {
        let frame = client.next_frame().await;
        match frame.command {
            Command::Receipt => saw.0 = true,
            Command::Message => saw.1 = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(saw, (true, true));
    assert_eq!(bystander.next_message().await.1["content"], "fine now");
}

#[tokio::test]
async fn a_frame_over_the_size_limit_gets_an_error_and_a_close_and_others_are_unaffected() {
    let app = spawn_app().await;
    let room = app.create_room("big").await;
    let mut other = StompClient::connect(&app.ws_url()).await;
    other
        .subscribe("s", &format!("/topic/chatroom/{room}"))
        .await;

    let mut client = StompClient::connect(&app.ws_url()).await;
    client
        .send_chat(&chat_json(room, &"x".repeat(100 * 1024)), Some("big"))
        .await;
    let error = client.next_frame().await;
    assert_eq!(error.command, Command::Error);
    assert!(
        error.header("message").unwrap().contains("limit"),
        "{error:?}"
    );
    assert!(client.is_closed_by_server().await);

    other.send_chat(&chat_json(room, "still here"), None).await;
    assert_eq!(other.next_message().await.1["content"], "still here");
    assert!(app.history(room).await.len() == 1);
}

#[tokio::test]
async fn garbage_bytes_get_an_error_and_a_close() {
    let app = spawn_app().await;
    let mut client = StompClient::connect(&app.ws_url()).await;
    client.send_raw(b"HELLO THERE\nfoo\n\n\0".to_vec()).await;
    let error = client.next_frame().await;
    assert_eq!(error.command, Command::Error);
    assert!(client.is_closed_by_server().await);

    let mut binary = StompClient::connect(&app.ws_url()).await;
    binary.send_raw(vec![0xff, 0xfe, 0x00, 0x9c, b'\n']).await;
    assert_eq!(binary.next_frame().await.command, Command::Error);
    assert!(binary.is_closed_by_server().await);
}

#[tokio::test]
async fn send_before_connect_is_a_protocol_error() {
    let app = spawn_app().await;
    let mut client = StompClient::open(&app.ws_url()).await;
    client.send_chat(&chat_json(1, "too early"), None).await;
    let error = client.next_frame().await;
    assert_eq!(error.command, Command::Error);
    assert!(error.header("message").unwrap().contains("CONNECT"));
    assert!(client.is_closed_by_server().await);
}

#[tokio::test]
async fn a_frame_split_over_three_websocket_messages_is_reassembled() {
    let app = spawn_app().await;
    let room = app.create_room("split").await;
    let mut client = StompClient::connect(&app.ws_url()).await;
    client
        .subscribe("s", &format!("/topic/chatroom/{room}"))
        .await;
    let mut bytes = Vec::new();
    chat_stomp::encode(
        &Frame::new(Command::Send)
            .with_header("destination", "/app/chat.sendMessage")
            .with_body(chat_json(room, "in three parts").into_bytes()),
        &mut bytes,
    );
    let third = bytes.len() / 3;
    let (a, rest) = bytes.split_at(third);
    let (b, c) = rest.split_at(third);
    for part in [a, b, c] {
        client.send_raw(part.to_vec()).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(client.next_message().await.1["content"], "in three parts");
}

#[tokio::test]
async fn three_frames_in_one_websocket_message_are_all_handled_in_order() {
    let app = spawn_app().await;
    let room = app.create_room("batch").await;
    let mut client = StompClient::connect(&app.ws_url()).await;
    client
        .subscribe("s", &format!("/topic/chatroom/{room}"))
        .await;
    let mut bytes = Vec::new();
    for n in 1..=3 {
        chat_stomp::encode(
            &Frame::new(Command::Send)
                .with_header("destination", "/app/chat.sendMessage")
                .with_body(chat_json(room, &format!("part {n}")).into_bytes()),
            &mut bytes,
        );
        bytes.push(b'\n'); // a heart-beat between frames is fine too
    }
    client.send_raw(bytes).await;
    for n in 1..=3 {
        let (_, body) = client.next_message().await;
        assert_eq!(body["content"], format!("part {n}"));
        assert_eq!(body["seq"], n);
    }
}

#[tokio::test]
async fn a_client_that_stops_heart_beating_is_disconnected() {
    let mut settings = test_settings();
    settings.heartbeat = HeartBeat {
        can_send_ms: 100,
        want_receive_ms: 100,
    };
    settings.heartbeat_grace = 2.0;
    let app = spawn_app_with(Adapters::in_memory(), settings).await;
    let mut client = StompClient::open(&app.ws_url()).await;
    // The client promises a heart-beat every 100 ms and then sends nothing.
    let connected = client.handshake("100,100").await;
    assert_eq!(connected.header("heart-beat"), Some("100,100"));
    let error = client.next_frame().await;
    assert_eq!(error.command, Command::Error);
    assert!(
        error.header("message").unwrap().contains("heart-beat"),
        "{error:?}"
    );
    assert!(client.is_closed_by_server().await);
    assert!(
        client.heartbeats_received > 0,
        "the server should have sent heart-beats too"
    );
}

#[tokio::test]
async fn a_client_that_keeps_heart_beating_stays_connected() {
    let mut settings = test_settings();
    settings.heartbeat = HeartBeat {
        can_send_ms: 100,
        want_receive_ms: 100,
    };
    let app = spawn_app_with(Adapters::in_memory(), settings).await;
    let mut client = StompClient::open(&app.ws_url()).await;
    client.handshake("100,100").await;
    for _ in 0..10 {
        client.send_raw(b"\n".to_vec()).await;
        client.expect_silence(Duration::from_millis(80)).await;
    }
    client
        .send(Frame::new(Command::Disconnect).with_header("receipt", "still-here"))
        .await;
    client.expect_receipt("still-here").await;
}

#[tokio::test]
async fn resuming_after_a_seq_delivers_the_missed_messages_then_live_ones_without_gap_or_duplicate()
{
    let app = spawn_app().await;
    let room = app.create_room("resume").await;
    let mut sender = StompClient::connect(&app.ws_url()).await;
    for n in 1..=5 {
        sender
            .send_chat(&chat_json(room, &format!("m{n}")), Some(&format!("r{n}")))
            .await;
        sender.expect_receipt(&format!("r{n}")).await;
    }
    let mut late = StompClient::connect(&app.ws_url()).await;
    late.subscribe_with(
        "s",
        &format!("/topic/chatroom/{room}"),
        &[("x-resume-after", "2")],
    )
    .await;
    sender.send_chat(&chat_json(room, "m6"), Some("r6")).await;
    let mut seqs = Vec::new();
    for _ in 0..4 {
        seqs.push(late.next_message().await.1["seq"].as_i64().unwrap());
    }
    assert_eq!(seqs, vec![3, 4, 5, 6]);
    late.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn subscribing_to_an_unknown_room_is_an_application_error() {
    let app = spawn_app().await;
    let mut client = StompClient::connect(&app.ws_url()).await;
    client.subscribe("errors", "/user/queue/errors").await;
    client
        .send(
            Frame::new(Command::Subscribe)
                .with_header("id", "x")
                .with_header("destination", "/topic/chatroom/424242")
                .with_header("receipt", "sub-x"),
        )
        .await;
    let (_, error) = client.next_message().await;
    assert_eq!(error["code"], "UNKNOWN_ROOM");
    assert_eq!(error["receiptId"], "sub-x");
}

#[tokio::test]
async fn a_plain_get_on_the_websocket_endpoint_is_told_how_to_upgrade() {
    let app = spawn_app().await;
    let response = reqwest::get(format!("http://{}/ws", app.addr))
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: serde_json::Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "NOT_A_WEBSOCKET_UPGRADE");
}
