//! The REST API on the real server: rooms, history pagination, sending, and problem+json.

mod support;

use support::{StompClient, chat_json, spawn_app};

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

#[tokio::test]
async fn a_created_room_is_returned_listed_and_found() {
    let app = spawn_app().await;
    let response = client()
        .post(app.http("/api/chatrooms"))
        .json(&serde_json::json!({"name": "  general "}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let room: serde_json::Value = response.json().await.unwrap();
    assert_eq!(room["name"], "general");
    assert_eq!(room["lastSeq"], 0);
    assert!(room["createdAt"].as_str().unwrap().ends_with('Z'));
    let id = room["id"].as_i64().unwrap();

    let listed: Vec<serde_json::Value> = reqwest::get(app.http("/api/chatrooms"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed, vec![room.clone()]);
    let found: serde_json::Value = reqwest::get(app.http(&format!("/api/chatrooms/{id}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found, room);
}

#[tokio::test]
async fn an_unknown_room_is_a_404_problem() {
    let app = spawn_app().await;
    for path in ["/api/chatrooms/999", "/api/chatrooms/999/messages"] {
        let response = reqwest::get(app.http(path)).await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: serde_json::Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "UNKNOWN_ROOM");
        assert_eq!(problem["status"], 404);
    }
}

#[tokio::test]
async fn bad_input_is_a_400_problem_with_a_stable_code() {
    let app = spawn_app().await;
    let room = app.create_room("r").await;
    let cases: [(&str, &str, &str); 5] = [
        ("/api/chatrooms", "{oops", "INVALID_JSON"),
        ("/api/chatrooms", "{}", "MISSING_FIELD"),
        ("/api/chatrooms", r#"{"name":"   "}"#, "INVALID_ROOM_NAME"),
        (
            "/api/chatrooms/ROOM/messages",
            r#"{"senderId":1,"senderNickname":"a","content":""}"#,
            "EMPTY_CONTENT",
        ),
        ("/api/chatrooms/ROOM/messages", "[]", "INVALID_JSON"),
    ];
    for (path, body, code) in cases {
        let path = path.replace("ROOM", &room.to_string());
        let response = client()
            .post(app.http(&path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{path} {body}");
        let problem: serde_json::Value = response.json().await.unwrap();
        assert_eq!(problem["code"], code, "{path} {body}");
    }
    // A query string holds no JSON: a non-number is a query error naming the parameter.
    for (path, query, code) in [
        (
            "/api/chatrooms/ROOM/messages",
            "limit=201",
            "INVALID_PAGINATION",
        ),
        (
            "/api/chatrooms/ROOM/messages",
            "limit=0",
            "INVALID_PAGINATION",
        ),
        (
            "/api/chatrooms/ROOM/messages",
            "beforeSeq=-1",
            "INVALID_PAGINATION",
        ),
        (
            "/api/chatrooms/ROOM/messages",
            "afterSeq=abc",
            "INVALID_QUERY",
        ),
        ("/api/chatrooms", "limit=abc", "INVALID_QUERY"),
        ("/api/chatrooms", "afterId=1.5", "INVALID_QUERY"),
    ] {
        let url = app.http(&format!(
            "{}?{query}",
            path.replace("ROOM", &room.to_string())
        ));
        let response = reqwest::get(url).await.unwrap();
        assert_eq!(response.status(), 400, "{path}?{query}");
        let problem: serde_json::Value = response.json().await.unwrap();
        assert_eq!(problem["code"], code, "{path}?{query}");
        if code == "INVALID_QUERY" {
            let name = query.split('=').next().unwrap();
            assert!(
                problem["detail"].as_str().unwrap().contains(name),
                "{problem}"
            );
        }
    }
}

#[tokio::test]
async fn an_oversized_body_is_a_413_problem() {
    let app = spawn_app().await;
    let response = client()
        .post(app.http("/api/chatrooms"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"name":"{}"}}"#, "x".repeat(200 * 1024)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let problem: serde_json::Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "PAYLOAD_TOO_LARGE");
}

#[tokio::test]
async fn history_pages_by_seq() {
    let app = spawn_app().await;
    let room = app.create_room("history").await;
    for n in 1..=7 {
        let response = app
            .post_message(room, chat_json(room, &format!("m{n}")))
            .await;
        assert_eq!(response.status(), 201);
    }
    let seqs = |query: &'static str| {
        let url = app.http(&format!("/api/chatrooms/{room}/messages?{query}"));
        async move {
            let page: Vec<serde_json::Value> =
                reqwest::get(url).await.unwrap().json().await.unwrap();
            page.iter()
                .map(|m| m["seq"].as_i64().unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(seqs("limit=3").await, vec![5, 6, 7]);
    assert_eq!(seqs("beforeSeq=5&limit=3").await, vec![2, 3, 4]);
    assert_eq!(seqs("afterSeq=5").await, vec![6, 7]);
    assert_eq!(seqs("afterSeq=0&limit=2").await, vec![1, 2]);
    assert_eq!(seqs("").await, (1..=7).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_message_posted_over_rest_arrives_over_stomp() {
    let app = spawn_app().await;
    let room = app.create_room("bots").await;
    let mut listener = StompClient::connect(&app.ws_url()).await;
    listener
        .subscribe("s", &format!("/topic/chatroom/{room}"))
        .await;

    let body = serde_json::json!({
        "senderId": 99, "senderNickname": "bot", "content": "beep", "messageType": "SYSTEM"
    });
    let response = app.post_message(room, body.to_string()).await;
    assert_eq!(response.status(), 201);
    let stored: serde_json::Value = response.json().await.unwrap();
    assert_eq!(stored["seq"], 1);
    assert_eq!(stored["chatRoomId"], room);

    let (_, delivered) = listener.next_message().await;
    assert_eq!(delivered, stored);
}

#[tokio::test]
async fn a_body_naming_another_room_than_the_path_is_rejected() {
    let app = spawn_app().await;
    let room = app.create_room("one").await;
    let other = app.create_room("two").await;
    let response = app.post_message(room, chat_json(other, "wrong room")).await;
    assert_eq!(response.status(), 400);
    assert!(app.history(other).await.is_empty());
}

#[tokio::test]
async fn health_is_live_and_ready_and_not_ready_while_draining() {
    let app = spawn_app().await;
    assert_eq!(
        reqwest::get(app.http("/health/live"))
            .await
            .unwrap()
            .status(),
        200
    );
    let ready = reqwest::get(app.http("/health/ready")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["store"], "up");
    assert_eq!(body["bus"], "up");
}

#[tokio::test]
async fn a_draining_instance_is_not_ready_refuses_upgrades_and_tells_clients_to_reconnect() {
    let mut settings = support::test_settings();
    settings.drain_window_secs = 2;
    let app = support::spawn_app_with(chat_server::Adapters::in_memory(), settings).await;
    let mut first = StompClient::connect(&app.ws_url()).await;
    let mut second = StompClient::connect(&app.ws_url()).await;
    app.shutdown.trigger();

    // Reconnects are spread over the window: one session goes at once, the other later,
    // and meanwhile the instance is still up but says it is not ready.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let ready = reqwest::get(app.http("/health/ready")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["draining"], true);
    let refused = StompClient::open_offering(&app.ws_url(), Some("v12.stomp")).await;
    assert!(
        refused.is_err(),
        "a draining instance must refuse new WebSockets"
    );

    for client in [&mut first, &mut second] {
        let error = client.next_frame().await;
        assert_eq!(error.command, chat_stomp::Command::Error);
        assert!(
            error.header("message").unwrap().contains("reconnect"),
            "{error:?}"
        );
        assert!(client.is_closed_by_server().await);
    }
    tokio::time::timeout(support::WAIT, app.stopped)
        .await
        .expect("the app stops once its sessions are gone")
        .unwrap();
}

#[tokio::test]
async fn unknown_paths_are_a_404_problem() {
    let app = spawn_app().await;
    let response = reqwest::get(app.http("/nope")).await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}
