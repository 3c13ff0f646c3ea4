//! The SockJS endpoint at the HTTP level, as a hostile or vanishing client meets it: the
//! info document, the xhr transports' session handling, malformed and oversized
//! `xhr_send` bodies, unknown sessions, one receiver per session, and expiry of a session
//! whose client stopped polling. The real sockjs-client runs in tests/stompjs_client.rs.

mod support;

use std::time::Duration;

async fn post(url: &str, body: &'static str) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(url)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn info_says_websocket_is_available_with_some_entropy() {
    let app = support::spawn_app().await;
    let response = reqwest::get(app.http("/ws/info")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("no-store")
    );
    let info: serde_json::Value = response.json().await.unwrap();
    assert_eq!(info["websocket"], true);
    assert_eq!(info["origins"], serde_json::json!(["*:*"]));
    assert_eq!(info["cookie_needed"], false);
    assert!(info["entropy"].is_u64(), "{info}");
}

#[tokio::test]
async fn a_polling_session_opens_carries_stomp_and_allows_one_receiver() {
    let app = support::spawn_app().await;
    let base = app.http("/ws/000/polling");
    assert_eq!(
        post(&format!("{base}/xhr"), "").await,
        (200, "o\n".to_owned())
    );
    let (status, _) = post(
        &format!("{base}/xhr_send"),
        r#"["CONNECT\naccept-version:1.2\nhost:chat\n\n\u0000"]"#,
    )
    .await;
    assert_eq!(status, 204);
    let (status, body) = post(&format!("{base}/xhr"), "").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("a[\"CONNECTED\\n"), "{body}");
    // Nothing to say now: this poll waits, and a second one is turned away.
    let waiting = tokio::spawn({
        let url = format!("{base}/xhr");
        async move {
            reqwest::Client::new()
                .post(url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = post(&format!("{base}/xhr"), "").await;
    assert_eq!(status, 200);
    assert_eq!(body, "c[2010,\"Another connection still open\"]\n");
    let _ = waiting.await;
}

#[tokio::test]
async fn xhr_streaming_opens_with_the_prelude() {
    let app = support::spawn_app().await;
    let mut response = reqwest::Client::new()
        .post(app.http("/ws/000/streaming/xhr_streaming"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = Vec::new();
    while body.len() < 2049 + 2 {
        let chunk = response
            .chunk()
            .await
            .unwrap()
            .expect("the stream stays open");
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(body).unwrap();
    assert_eq!(text, format!("{}\no\n", "h".repeat(2048)));
}

#[tokio::test]
async fn malformed_oversized_and_misdirected_sends_are_refused() {
    let app = support::spawn_app().await;
    let base = app.http("/ws/000/sender");
    assert_eq!(post(&format!("{base}/xhr"), "").await.0, 200);
    let send = format!("{base}/xhr_send");
    assert_eq!(post(&send, "").await, (500, "Payload expected.".to_owned()));
    for broken in ["[1,", "{\"a\":1}", "[1]", "\"x\"", "[\"\\ud800\""] {
        assert_eq!(
            post(&send, broken).await,
            (500, "Broken JSON encoding.".to_owned()),
            "{broken}"
        );
    }
    let huge: &'static str =
        Box::leak(format!("[\"{}\"]", "a".repeat(1100 * 1024)).into_boxed_str());
    assert_eq!(post(&send, huge).await.0, 413);
    assert_eq!(
        post(&app.http("/ws/000/nobody/xhr_send"), "[\"x\"]")
            .await
            .0,
        404
    );
    // Ids with dots, and paths that are no transport.
    assert_eq!(post(&app.http("/ws/0.0/a/xhr"), "").await.0, 404);
    assert_eq!(post(&app.http("/ws/000/a/eventsource"), "").await.0, 404);
    assert_eq!(post(&app.http("/ws/000/a/b/xhr"), "").await.0, 404);
    // The session survived all of that.
    assert_eq!(post(&send, "[\"\\n\"]").await.0, 204);
}

#[tokio::test]
async fn a_session_whose_client_stops_polling_expires_and_is_forgotten() {
    let app = support::spawn_app().await;
    let base = app.http("/ws/000/vanishing");
    assert_eq!(post(&format!("{base}/xhr"), "").await.0, 200);
    assert_eq!(post(&format!("{base}/xhr_send"), "[\"\\n\"]").await.0, 204);
    // Past the disconnect delay (5 s) the session ends; a late poll learns it closed...
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(post(&format!("{base}/xhr_send"), "[\"\\n\"]").await.0, 404);
    let (status, body) = post(&format!("{base}/xhr"), "").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("c["), "{body}");
    // ...and after that the id is unknown.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(post(&format!("{base}/xhr_send"), "[\"\\n\"]").await.0, 404);
    let metrics = reqwest::get(app.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let current = metrics
        .lines()
        .find(|l| l.starts_with("chat_connections_current"))
        .unwrap_or_default()
        .to_owned();
    assert!(current.ends_with(" 0"), "{current}");
}

#[tokio::test]
async fn a_draining_instance_tells_a_polling_client_to_reconnect() {
    let mut settings = support::test_settings();
    settings.drain_window_secs = 0;
    let app = support::spawn_app_with(chat_server::Adapters::in_memory(), settings).await;
    let base = app.http("/ws/000/draining");
    assert_eq!(post(&format!("{base}/xhr"), "").await.0, 200);
    let connect = r#"["CONNECT\naccept-version:1.2\nhost:chat\n\n\u0000"]"#;
    assert_eq!(post(&format!("{base}/xhr_send"), connect).await.0, 204);
    assert!(
        post(&format!("{base}/xhr"), "")
            .await
            .1
            .contains("CONNECTED")
    );
    // One poll waiting when the drain starts, one arriving after: between them they
    // carry the ERROR and the close frame.
    let waiting = tokio::spawn(post_owned(format!("{base}/xhr")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.shutdown.trigger();
    let mut said = waiting.await.unwrap().1;
    if !said.contains("c[") {
        said.push_str(&post(&format!("{base}/xhr"), "").await.1);
    }
    assert!(said.contains("ERROR"), "{said}");
    assert!(said.contains("x-close-reason:server_shutdown"), "{said}");
    assert!(said.contains("c["), "{said}");
}

async fn post_owned(url: String) -> (u16, String) {
    post(&url, "").await
}
