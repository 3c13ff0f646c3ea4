//! The server against hostile clients. Each case does something a careless or malicious
//! client does (malformed frames, floods, stalled readers, silent sockets, slow headers,
//! oversized or mislabelled REST bodies), asserts what the server answered, and then
//! checks that a well-behaved client on the same instance still completes CONNECT →
//! SUBSCRIBE → SEND/RECEIPT → MESSAGE within one second.

mod support;

use std::time::{Duration, Instant};

use chat_server::Settings;
use chat_stomp::{Command, Frame};
use serde_json::Value;
use support::{StompClient, TestApp, chat_json, spawn_app_with, test_settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Limits small enough to reach in a test; everything else as in production.
fn hostile_settings() -> Settings {
    let mut settings = test_settings();
    settings.send_rate = 5;
    settings.send_burst = 5;
    settings.room_create_rate = 3;
    settings.max_subscriptions = 4;
    settings.max_subscription_id_bytes = 32;
    settings.write_timeout = Duration::from_millis(500);
    settings.header_read_timeout = Duration::from_millis(500);
    settings.idle_timeout = Duration::from_secs(2);
    settings.outbound_queue = 64;
    settings
}

async fn app() -> TestApp {
    app_with(|_| {}).await
}

async fn app_with(change: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = hostile_settings();
    change(&mut settings);
    spawn_app_with(chat_server::Adapters::in_memory(), settings).await
}

/// A well-behaved client still gets through, start to finish, within a second.
async fn still_serves(app: &TestApp) {
    let room = app.create_room("after the attack").await;
    still_serves_in(app, room).await;
}

/// [`still_serves`] in a room that exists already.
async fn still_serves_in(app: &TestApp, room: i64) {
    tokio::time::timeout(Duration::from_secs(1), async {
        let mut client = StompClient::connect(&app.ws_url()).await;
        client
            .subscribe("ok", &format!("/topic/chatroom/{room}"))
            .await;
        client
            .send_chat(&chat_json(room, "still here"), Some("fine"))
            .await;
        client.expect_receipt("fine").await;
        let (_, body) = client.next_message().await;
        assert_eq!(body["content"], "still here");
    })
    .await
    .expect("a well-behaved client completes within 1 s after the attack");
}

async fn connected(app: &TestApp) -> StompClient {
    let mut client = StompClient::connect(&app.ws_url()).await;
    client.subscribe("errors", "/user/queue/errors").await;
    client
}

fn frame(command: Command, headers: &[(&str, &str)], body: &str) -> Frame {
    let mut frame = Frame::new(command);
    for (name, value) in headers {
        frame = frame.with_header(*name, *value);
    }
    frame.with_body(body.as_bytes().to_vec())
}

fn send_frame(body: &str) -> Frame {
    frame(
        Command::Send,
        &[
            ("destination", "/app/chat.sendMessage"),
            ("content-type", "application/json"),
        ],
        body,
    )
}

/// The next frame is an ERROR and the connection then closes.
async fn expect_error_and_close(client: &mut StompClient) -> Frame {
    let error = client.next_frame().await;
    assert_eq!(error.command, Command::Error, "{error:?}");
    assert!(client.is_closed_by_server().await, "closed after the ERROR");
    error
}

/// The next frame is a MESSAGE on the errors queue with `code`.
async fn expect_app_error(client: &mut StompClient, code: &str) -> Value {
    let (frame, body) = client.next_message().await;
    assert_eq!(frame.header("destination"), Some("/user/queue/errors"));
    assert_eq!(body["code"], code, "{body}");
    body
}

/// The answers to `count` SENDs: RECEIPTs, and `RATE_LIMITED` errors (nothing else).
async fn receipts_and_rate_limits(client: &mut StompClient, count: usize) -> (usize, usize) {
    let (mut receipts, mut limited) = (0, 0);
    for _ in 0..count {
        let frame = client.next_frame().await;
        match frame.command {
            Command::Receipt => receipts += 1,
            Command::Message => {
                let body: Value = serde_json::from_slice(&frame.body).unwrap();
                assert_eq!(body["code"], "RATE_LIMITED", "{body}");
                limited += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    (receipts, limited)
}

async fn metric(app: &TestApp, name: &str) -> f64 {
    support::metric_at(&app.http("/metrics"), name).await
}

// --- the STOMP decoder and session: what already held, kept as regressions -------------

#[tokio::test]
async fn a_frame_before_connect() {
    let app = app().await;
    let mut client = StompClient::open(&app.ws_url()).await;
    client
        .send(frame(
            Command::Subscribe,
            &[("id", "1"), ("destination", "/topic/chatroom/1")],
            "",
        ))
        .await;
    expect_error_and_close(&mut client).await;
    still_serves(&app).await;
}

#[tokio::test]
async fn bytes_that_are_not_stomp() {
    let app = app().await;
    let mut client = StompClient::open(&app.ws_url()).await;
    client.send_raw(b"GET / HTTP/1.1\r\n\r\n\0".to_vec()).await;
    expect_error_and_close(&mut client).await;
    still_serves(&app).await;
}

#[tokio::test]
async fn an_unknown_command() {
    let app = app().await;
    let mut client = connected(&app).await;
    client.send_raw(b"EXPLODE\n\n\0".to_vec()).await;
    expect_error_and_close(&mut client).await;
    still_serves(&app).await;
}

#[tokio::test]
async fn a_header_without_a_colon() {
    let app = app().await;
    let mut client = connected(&app).await;
    client
        .send_raw(b"SEND\ndestination /app/chat.sendMessage\n\n{}\0".to_vec())
        .await;
    expect_error_and_close(&mut client).await;
    still_serves(&app).await;
}

#[tokio::test]
async fn a_frame_larger_than_the_limit() {
    let app = app().await;
    let mut client = connected(&app).await;
    let body = "x".repeat(70 * 1024);
    client.send(send_frame(&body)).await;
    let error = expect_error_and_close(&mut client).await;
    assert!(
        error
            .header("message")
            .unwrap_or_default()
            .contains("limit"),
        "{error:?}"
    );
    still_serves(&app).await;
}

#[tokio::test]
async fn a_content_length_that_lies() {
    let app = app().await;
    let mut client = connected(&app).await;
    client
        .send_raw(
            b"SEND\ndestination:/app/chat.sendMessage\ncontent-length:5\n\n{\"a\":1}\0".to_vec(),
        )
        .await;
    expect_error_and_close(&mut client).await;
    still_serves(&app).await;
}

#[tokio::test]
async fn an_unsupported_stomp_version() {
    let app = app().await;
    let mut client = StompClient::open(&app.ws_url()).await;
    client
        .send(frame(Command::Connect, &[("accept-version", "9.9")], ""))
        .await;
    expect_error_and_close(&mut client).await;
    still_serves(&app).await;
}

#[tokio::test]
async fn a_nonsense_heart_beat() {
    let app = app().await;
    let mut client = StompClient::open(&app.ws_url()).await;
    client
        .send(frame(
            Command::Connect,
            &[("accept-version", "1.2"), ("heart-beat", "soon,never")],
            "",
        ))
        .await;
    expect_error_and_close(&mut client).await;
    still_serves(&app).await;
}

#[tokio::test]
async fn a_subscribe_without_an_id() {
    let app = app().await;
    let mut client = connected(&app).await;
    client
        .send(frame(
            Command::Subscribe,
            &[("destination", "/topic/chatroom/1")],
            "",
        ))
        .await;
    expect_error_and_close(&mut client).await;
    still_serves(&app).await;
}

#[tokio::test]
async fn invalid_utf8_in_a_text_message() {
    let app = app().await;
    let mut client = connected(&app).await;
    // A raw text frame: FIN + opcode 1, masked, with bytes that are not UTF-8.
    client.send_invalid_text(&[0xC3, 0x28, 0xFF]).await;
    let error = client.next_frame().await;
    assert_eq!(error.command, Command::Error, "{error:?}");
    assert_eq!(client.close_code().await, Some(1007));
    still_serves(&app).await;
}

// --- application errors: the session carries on ------------------------------------------

#[tokio::test]
async fn a_send_to_a_room_that_does_not_exist() {
    let app = app().await;
    let mut client = connected(&app).await;
    client
        .send(send_frame(&chat_json(999_999, "anyone?")))
        .await;
    expect_app_error(&mut client, "UNKNOWN_ROOM").await;
    still_serves(&app).await;
}

#[tokio::test]
async fn a_send_that_is_not_json() {
    let app = app().await;
    let mut client = connected(&app).await;
    client.send(send_frame("{not json")).await;
    expect_app_error(&mut client, "INVALID_JSON").await;
    still_serves(&app).await;
}

#[tokio::test]
async fn content_longer_than_allowed() {
    let app = app().await;
    let room = app.create_room("long").await;
    let mut client = connected(&app).await;
    client
        .send(send_frame(&chat_json(room, &"y".repeat(4001))))
        .await;
    expect_app_error(&mut client, "CONTENT_TOO_LONG").await;
    still_serves(&app).await;
}

#[tokio::test]
async fn a_nul_character_in_the_content() {
    let app = app().await;
    let room = app.create_room("nul").await;
    let mut client = connected(&app).await;
    client.send(send_frame(&chat_json(room, "a\u{0}b"))).await;
    expect_app_error(&mut client, "INVALID_CHARACTER").await;
    still_serves(&app).await;
}

#[tokio::test]
async fn a_subscription_to_a_destination_that_is_not_a_room() {
    let app = app().await;
    let mut client = connected(&app).await;
    client
        .send(frame(
            Command::Subscribe,
            &[("id", "x"), ("destination", "/topic/../../etc")],
            "",
        ))
        .await;
    expect_app_error(&mut client, "UNKNOWN_DESTINATION").await;
    still_serves(&app).await;
}

#[tokio::test]
async fn a_negative_and_a_future_resume_point() {
    let app = app().await;
    let room = app.create_room("resume").await;
    let mut client = connected(&app).await;
    let destination = format!("/topic/chatroom/{room}");
    for resume in ["-5", "1000"] {
        client
            .send(frame(
                Command::Subscribe,
                &[
                    ("id", resume),
                    ("destination", destination.as_str()),
                    ("x-resume-after", resume),
                ],
                "",
            ))
            .await;
        expect_app_error(&mut client, "INVALID_RESUME").await;
    }
    still_serves(&app).await;
}

#[tokio::test]
async fn the_same_subscription_id_twice() {
    let app = app().await;
    let room = app.create_room("twice").await;
    let mut client = connected(&app).await;
    let destination = format!("/topic/chatroom/{room}");
    client.subscribe("s", &destination).await;
    client
        .send(frame(
            Command::Subscribe,
            &[("id", "s"), ("destination", destination.as_str())],
            "",
        ))
        .await;
    expect_app_error(&mut client, "DUPLICATE_SUBSCRIPTION").await;
    still_serves(&app).await;
}

// --- the limits ------------------------------------------------------------------------------

#[tokio::test]
async fn more_subscriptions_than_a_connection_may_hold() {
    let app = app().await;
    let room = app.create_room("many").await;
    let mut client = connected(&app).await;
    let destination = format!("/topic/chatroom/{room}");
    for id in ["a", "b", "c"] {
        client.subscribe(id, &destination).await;
    }
    for id in 0..100 {
        client
            .send(frame(
                Command::Subscribe,
                &[
                    ("id", &format!("more-{id}")),
                    ("destination", destination.as_str()),
                ],
                "",
            ))
            .await;
    }
    for _ in 0..100 {
        expect_app_error(&mut client, "TOO_MANY_SUBSCRIPTIONS").await;
    }
    // One SEND still becomes three copies, not a hundred and three.
    client.send(send_frame(&chat_json(room, "count me"))).await;
    for _ in 0..3 {
        client.next_message().await;
    }
    client.expect_silence(Duration::from_millis(200)).await;
    still_serves(&app).await;
}

#[tokio::test]
async fn a_subscription_id_longer_than_allowed() {
    let app = app().await;
    let room = app.create_room("ids").await;
    let mut client = connected(&app).await;
    let id = "i".repeat(33);
    client
        .send(frame(
            Command::Subscribe,
            &[
                ("id", id.as_str()),
                ("destination", &format!("/topic/chatroom/{room}")),
            ],
            "",
        ))
        .await;
    expect_app_error(&mut client, "INVALID_SUBSCRIPTION_ID").await;
    still_serves(&app).await;
}

#[tokio::test]
async fn five_hundred_sends_in_one_websocket_message_are_rate_limited() {
    let app = app().await;
    let room = app.create_room("flood").await;
    let mut client = connected(&app).await;
    let mut burst = Vec::new();
    for n in 0..500 {
        let mut frame = send_frame(&chat_json(room, &format!("flood {n}")));
        frame = frame.with_header("receipt", format!("r{n}"));
        chat_stomp::encode(&frame, &mut burst);
    }
    client.send_raw(burst).await;
    let (receipts, limited) = receipts_and_rate_limits(&mut client, 500).await;
    assert!(
        (5..=7).contains(&receipts),
        "{receipts} stored (burst 5, 5/s)"
    );
    assert_eq!(receipts + limited, 500);
    let stored = app.history(room).await;
    assert_eq!(stored.len(), receipts, "nothing refused was stored");
    still_serves(&app).await;
}

#[tokio::test]
async fn typing_and_read_floods_count_against_the_send_rate() {
    let app = app().await;
    let room = app.create_room("keys").await;
    let mut client = StompClient::open(&app.ws_url()).await;
    client
        .send(frame(
            Command::Connect,
            &[("accept-version", "1.2"), ("login", "7")],
            "",
        ))
        .await;
    assert_eq!(client.next_frame().await.command, Command::Connected);
    client.subscribe("errors", "/user/queue/errors").await;
    let mut burst = Vec::new();
    for n in 0..100 {
        let (destination, body) = if n % 2 == 0 {
            ("/app/chat.typing", format!(r#"{{"chatRoomId":{room}}}"#))
        } else {
            (
                "/app/chat.read",
                format!(r#"{{"chatRoomId":{room},"seq":{n}}}"#),
            )
        };
        let send = frame(
            Command::Send,
            &[("destination", destination), ("receipt", &format!("r{n}"))],
            &body,
        );
        chat_stomp::encode(&send, &mut burst);
    }
    client.send_raw(burst).await;
    let (receipts, limited) = receipts_and_rate_limits(&mut client, 100).await;
    assert!(
        (5..=7).contains(&receipts),
        "{receipts} done (burst 5, 5/s)"
    );
    assert_eq!(receipts + limited, 100);
    still_serves(&app).await;
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_disconnected_and_released() {
    let app = app_with(|s| s.send_rate = 0).await;
    let room = app.create_room("busy").await;
    let mut stalled = connected(&app).await;
    stalled
        .subscribe("busy", &format!("/topic/chatroom/{room}"))
        .await;
    let before = metric(&app, "chat_connections_current").await;
    let mut publisher = connected(&app).await;
    let big = "z".repeat(4000);
    // About 16 MB for the stalled client, far past its queue and socket buffers.
    for n in 0..4000 {
        publisher.send(send_frame(&chat_json(room, &big))).await;
        if n % 500 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let started = Instant::now();
    loop {
        if metric(&app, "chat_connections_current").await < before {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the stalled reader is still connected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(stalled);
    drop(publisher);
    still_serves(&app).await;
}

#[tokio::test]
async fn a_client_without_heart_beats_that_goes_quiet_is_closed() {
    let app = app().await;
    let mut client = StompClient::connect(&app.ws_url()).await; // heart-beat 0,0
    let error = tokio::time::timeout(Duration::from_secs(4), client.next_frame())
        .await
        .expect("closed after the idle limit");
    assert_eq!(error.command, Command::Error);
    assert!(
        error
            .header("message")
            .unwrap_or_default()
            .contains("nothing received")
    );
    still_serves(&app).await;
}

#[tokio::test]
async fn tcp_connections_that_send_nothing_are_closed() {
    let app = app().await;
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(TcpStream::connect(app.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for mut socket in silent {
        let mut buf = [0_u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(500), socket.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0) | Err(_))),
            "closed by the server: {read:?}"
        );
    }
    still_serves(&app).await;
}

#[tokio::test]
async fn an_upgrade_request_sent_one_byte_at_a_time() {
    let app = app().await;
    let mut socket = TcpStream::connect(app.addr).await.unwrap();
    let request = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n";
    let started = Instant::now();
    let mut closed = false;
    for byte in request {
        if socket.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut buf = [0_u8; 256];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(1), socket.read(&mut buf)).await
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "the server waited for the whole slow request");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    still_serves(&app).await;
}

/// A keep-alive connection that goes quiet after a request holds a socket as surely as one
/// that never spoke: the header read timeout runs again while the server waits for the
/// next request, so an idle keep-alive connection is closed too.
#[tokio::test]
async fn a_keep_alive_connection_that_goes_quiet_after_a_request() {
    let app = app().await;
    let mut socket = TcpStream::connect(app.addr).await.unwrap();
    socket
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let mut buf = [0_u8; 1024];
    while !String::from_utf8_lossy(&response).contains("\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(1), socket.read(&mut buf))
            .await
            .expect("the request is answered")
            .unwrap();
        assert!(n > 0, "closed before answering");
        response.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&response).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("connection: close"), "kept alive: {head}");
    let answered = Instant::now();
    // Whatever body bytes are left, then the close (0) or a reset.
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "an idle keep-alive connection stayed open for 3 s"
    );
    assert!(
        answered.elapsed() >= Duration::from_millis(400),
        "closed at once ({:?}), not after the idle wait",
        answered.elapsed()
    );
    still_serves(&app).await;
}

#[tokio::test]
async fn more_connections_from_one_address_than_allowed() {
    let app = app_with(|s| s.max_connections_per_ip = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(StompClient::connect(&app.ws_url()).await);
    }
    match StompClient::open_offering(&app.ws_url(), Some("v12.stomp")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
        }
        other => panic!("expected 503, got {:?}", other.map(|_| "a session")),
    }
    assert!(metric(&app, "chat_connections_refused").await >= 1.0);
    // Places come back when connections end.
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    still_serves(&app).await;
}

#[tokio::test]
async fn a_websocket_upgrade_without_stomp_and_a_plain_get() {
    let app = app().await;
    let offered = StompClient::open_offering(&app.ws_url(), Some("mqtt")).await;
    assert!(
        matches!(offered, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 400)
    );
    let plain = reqwest::get(app.http("/ws")).await.unwrap();
    assert_eq!(plain.status(), 400);
    still_serves(&app).await;
}

#[tokio::test]
async fn an_upgrade_from_an_origin_that_is_not_allowed() {
    let app = app_with(|s| s.allowed_origins = vec!["https://chat.example".into()]).await;
    let evil = StompClient::open_with_headers(
        &app.ws_url(),
        Some("v12.stomp"),
        &[("origin", "https://evil.example")],
    )
    .await;
    assert!(
        matches!(evil, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 403)
    );
    still_serves(&app).await;
}

// --- REST ----------------------------------------------------------------------------------

async fn post(app: &TestApp, path: &str, content_type: &str, body: String) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(app.http(path))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_rest_body_that_is_not_labelled_json() {
    let app = app().await;
    let room = app.create_room("simple request").await;
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ] {
        let (status, problem) = post(
            &app,
            &format!("/api/chatrooms/{room}/messages"),
            content_type,
            chat_json(room, "cross-site"),
        )
        .await;
        assert_eq!(status, 415, "{content_type}");
        assert_eq!(problem["code"], "UNSUPPORTED_MEDIA_TYPE");
    }
    assert!(app.history(room).await.is_empty(), "nothing stored");
    still_serves(&app).await;
}

#[tokio::test]
async fn rooms_created_faster_than_allowed() {
    let app = app().await;
    let mut statuses = Vec::new();
    for n in 0..10 {
        let (status, _) = post(
            &app,
            "/api/chatrooms",
            "application/json",
            format!(r#"{{"name":"spam {n}"}}"#),
        )
        .await;
        statuses.push(status);
    }
    assert_eq!(&statuses[..3], [201, 201, 201]);
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
    let listed: Vec<Value> = reqwest::get(app.http("/api/chatrooms"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), 3);
    // The limit holds for the well-behaved client too (same address): it uses a room made
    // before the flood.
    still_serves_in(&app, listed[0]["id"].as_i64().unwrap()).await;
}

#[tokio::test]
async fn a_rest_body_that_is_too_large_or_not_json() {
    let app = app().await;
    let (status, _) = post(
        &app,
        "/api/chatrooms",
        "application/json",
        format!(r#"{{"name":"{}"}}"#, "n".repeat(100 * 1024)),
    )
    .await;
    assert_eq!(status, 413);
    let (status, problem) = post(&app, "/api/chatrooms", "application/json", "{oops".into()).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (400, Some("INVALID_JSON"))
    );
    still_serves(&app).await;
}

#[tokio::test]
async fn readiness_names_no_host_user_or_database() {
    let app = app().await;
    let body = reqwest::get(app.http("/health/ready"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for secret in ["127.0.0.1", "postgres", "redis://", "@"] {
        assert!(!body.contains(secret), "{body}");
    }
    still_serves(&app).await;
}

#[tokio::test]
async fn with_an_admin_listener_metrics_and_details_leave_the_public_port() {
    let app = app_with(|s| s.admin_bind = Some("127.0.0.1:0".parse().unwrap())).await;
    let admin = app.admin.expect("an admin listener");
    let public_metrics = reqwest::get(app.http("/metrics")).await.unwrap();
    assert_eq!(public_metrics.status(), 404);
    let public_details = reqwest::get(app.http("/health/details")).await.unwrap();
    assert_eq!(public_details.status(), 404);
    assert_eq!(
        reqwest::get(app.http("/health/ready"))
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics
            .text()
            .await
            .unwrap()
            .contains("chat_connections_current")
    );
    let details: Value = reqwest::get(format!("http://{admin}/health/details"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(details["store"], "up");
    assert_eq!(
        reqwest::get(format!("http://{admin}/health/ready"))
            .await
            .unwrap()
            .status(),
        200,
        "probes answer on the admin port too"
    );
    let no_ws = StompClient::open_offering(&format!("ws://{admin}/ws"), Some("v12.stomp")).await;
    assert!(no_ws.is_err(), "no WebSocket on the admin port");
    still_serves(&app).await;
}
