//! `/metrics` after a scripted exchange shows exactly what happened.

mod support;

use std::time::Duration;

use chat_stomp::{Command, Frame};
use support::{StompClient, chat_json, spawn_app};

/// The value of one sample line, e.g. `chat_messages_stored_total` or
/// `chat_frames_received_total{command="SEND"}`.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
}

async fn metrics(app: &support::TestApp) -> String {
    let response = reqwest::get(app.http("/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    response.text().await.unwrap()
}

#[tokio::test]
async fn metrics_count_connections_frames_and_messages_of_a_scripted_exchange() {
    let app = spawn_app().await;
    let room = app.create_room("counted").await;
    let mut alice = StompClient::connect(&app.ws_url()).await;
    let mut bob = StompClient::connect(&app.ws_url()).await;
    alice.subscribe("errors", "/user/queue/errors").await;
    alice
        .subscribe("room", &format!("/topic/chatroom/{room}"))
        .await;
    bob.subscribe("room", &format!("/topic/chatroom/{room}"))
        .await;

    for n in 1..=3 {
        alice
            .send_chat(&chat_json(room, &format!("m{n}")), Some(&format!("r{n}")))
            .await;
    }
    alice.send_chat("{broken", None).await;
    for _ in 0..3 {
        bob.next_message().await;
    }
    let mut alice_frames = 0;
    while alice_frames < 7 {
        alice.next_frame().await; // 3 MESSAGE + 3 RECEIPT + 1 error MESSAGE
        alice_frames += 1;
    }

    let text = metrics(&app).await;
    let expect = |name: &str, value: f64| {
        assert_eq!(sample(&text, name), Some(value), "{name} in\n{text}");
    };
    expect("chat_connections_opened_total", 2.0);
    expect("chat_connections_current", 2.0);
    expect("chat_subscriptions_current", 3.0);
    expect("chat_frames_received_total{command=\"CONNECT\"}", 2.0);
    expect("chat_frames_received_total{command=\"SUBSCRIBE\"}", 3.0);
    expect("chat_frames_received_total{command=\"SEND\"}", 4.0);
    expect("chat_frames_sent_total{command=\"CONNECTED\"}", 2.0);
    expect("chat_frames_sent_total{command=\"RECEIPT\"}", 6.0);
    // 3 room messages to each of two clients, and alice's error message.
    expect("chat_frames_sent_total{command=\"MESSAGE\"}", 7.0);
    expect("chat_messages_received_total", 4.0);
    expect("chat_messages_rejected_total{code=\"INVALID_JSON\"}", 1.0);
    expect("chat_messages_stored_total", 3.0);
    expect("chat_messages_published_total", 3.0);
    expect("chat_publish_failures_total", 0.0);
    expect("chat_messages_delivered_total", 6.0);
    expect("chat_store_latency_seconds_count", 3.0);
    expect("chat_publish_latency_seconds_count", 3.0);
    expect("chat_bus_reconnects_total", 0.0);

    bob.send(Frame::new(Command::Disconnect).with_header("receipt", "bye"))
        .await;
    bob.expect_receipt("bye").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics(&app).await;
        if sample(&text, "chat_connections_current") == Some(1.0) {
            assert_eq!(
                sample(
                    &text,
                    "chat_connections_closed_total{reason=\"client_closed\"}"
                ),
                Some(1.0)
            );
            assert_eq!(sample(&text, "chat_subscriptions_current"), Some(2.0));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed connection was not counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
