//! jwt mode against the real server with real tokens: where a token may go, which tokens
//! are refused and why, who the stored sender is, REST's 401, expiry mid-session, key
//! rotation of a JWKS file by SIGHUP, and the start-up refusals.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chat_server::{Adapters, Settings};
use chat_stomp::{Command, Frame};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::process::ServerProcess;
use support::{StompClient, TestApp, spawn_app_with, test_settings};

const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";
const ISSUER: &str = "https://id.example";
const AUDIENCE: &str = "chat";

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// Claims a valid token of user 7 carries; tests change one thing at a time.
fn claims() -> Value {
    json!({
        "sub": "7",
        "name": "alice",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": now() + 600,
    })
}

fn hs256(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn es256(claims: &Value, private_pem: &str, kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = kid.map(str::to_owned);
    let pem = std::fs::read(fixture(private_pem)).unwrap();
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_pem(&pem).unwrap()).unwrap()
}

/// An unsigned token, as an attacker writes it by hand.
fn alg_none(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{body}.")
}

fn jwt_settings() -> Settings {
    let mut settings = test_settings();
    settings.jwt_secret = Some(SECRET.to_owned());
    settings.jwt_issuer = Some(ISSUER.to_owned());
    settings.jwt_audience = Some(AUDIENCE.to_owned());
    settings
}

async fn jwt_app() -> TestApp {
    spawn_app_with(Adapters::in_memory(), jwt_settings()).await
}

fn connect_frame(headers: &[(&str, &str)]) -> Frame {
    let mut frame = Frame::new(Command::Connect).with_header("accept-version", "1.2");
    for (name, value) in headers {
        frame = frame.with_header(*name, *value);
    }
    frame
}

/// Opens a session and sends CONNECT with `headers`; returns the client and the answer.
async fn connect_with(url: &str, headers: &[(&str, &str)]) -> (StompClient, Frame) {
    let mut client = StompClient::open(url).await;
    client.send(connect_frame(headers)).await;
    let answer = client.next_frame().await;
    (client, answer)
}

fn chat(room: i64, sender: Option<i64>, kind: &str) -> String {
    let mut body = json!({
        "chatRoomId": room,
        "senderNickname": "mallory",
        "content": format!("a {kind} message"),
        "messageType": kind,
    });
    if let Some(sender) = sender {
        body["senderId"] = json!(sender);
    }
    body.to_string()
}

async fn create_room(app: &TestApp, token: &str) -> i64 {
    let created: Value = reqwest::Client::new()
        .post(app.http("/api/chatrooms"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(r#"{"name":"lobby"}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    created["id"].as_i64().unwrap()
}

#[tokio::test]
async fn a_token_in_any_of_the_four_places_connects_and_the_sender_is_the_tokens_user() {
    let app = jwt_app().await;
    let token = hs256(&claims(), SECRET);
    let room = create_room(&app, &token).await;
    let bearer = format!("Bearer {token}");
    let query_url = format!("{}?access_token={token}", app.ws_url());
    let mut clients = Vec::new();
    // CONNECT `Authorization`, CONNECT `passcode`, upgrade `Authorization`, `access_token`.
    clients.push(connect_with(&app.ws_url(), &[("Authorization", &bearer)]).await);
    clients.push(connect_with(&app.ws_url(), &[("login", "alice"), ("passcode", &token)]).await);
    let mut upgraded = StompClient::open_with_headers(
        &app.ws_url(),
        Some("v12.stomp"),
        &[("authorization", &bearer)],
    )
    .await
    .unwrap();
    upgraded.send(connect_frame(&[])).await;
    let answer = upgraded.next_frame().await;
    clients.push((upgraded, answer));
    clients.push(connect_with(&query_url, &[]).await);

    for (i, (client, connected)) in clients.iter_mut().enumerate() {
        assert_eq!(
            connected.command,
            Command::Connected,
            "place {i}: {connected:?}"
        );
        assert_eq!(connected.header("user-name"), Some("7"));
        client
            .subscribe(&format!("room-{i}"), &format!("/topic/chatroom/{room}"))
            .await;
    }
    // The body names no sender and another nickname: the token decides both.
    let (sender, _) = &mut clients[0];
    sender
        .send_chat(&chat(room, None, "TEXT"), Some("m1"))
        .await;
    sender.expect_receipt("m1").await;
    for (client, _) in &mut clients {
        let (_, body) = client.next_message().await;
        assert_eq!(body["senderId"], 7);
        assert_eq!(body["senderNickname"], "alice");
    }
}

#[tokio::test]
async fn tokens_that_must_not_pass_are_refused_with_the_reason_and_the_connection_closes() {
    let app = jwt_app().await;
    let with = |change: &dyn Fn(&mut Value)| {
        let mut c = claims();
        change(&mut c);
        c
    };
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("none", None, "authentication required"),
        (
            "expired",
            Some(hs256(&with(&|c| c["exp"] = json!(now() - 120)), SECRET)),
            "expired",
        ),
        (
            "not yet valid",
            Some(hs256(&with(&|c| c["nbf"] = json!(now() + 300)), SECRET)),
            "not valid yet",
        ),
        (
            "wrong key",
            Some(hs256(&claims(), "another-secret-that-is-long-enough-too")),
            "bad signature",
        ),
        (
            "wrong audience",
            Some(hs256(&with(&|c| c["aud"] = json!("other")), SECRET)),
            "audience",
        ),
        (
            "wrong issuer",
            Some(hs256(
                &with(&|c| c["iss"] = json!("https://evil.example")),
                SECRET,
            )),
            "issuer",
        ),
        (
            "no exp",
            Some(hs256(
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
                SECRET,
            )),
            "exp",
        ),
        (
            "sub not an id",
            Some(hs256(&with(&|c| c["sub"] = json!("alice")), SECRET)),
            "sub",
        ),
        ("alg none", Some(alg_none(&claims())), "refused"),
        ("garbage", Some("not.a.jwt".to_owned()), "refused"),
    ];
    for (case, token, reason) in cases {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer
            .as_deref()
            .map(|b| vec![("Authorization", b)])
            .unwrap_or_default();
        let (mut client, answer) = connect_with(&app.ws_url(), &headers).await;
        assert_eq!(answer.command, Command::Error, "{case}: {answer:?}");
        let message = answer.header("message").unwrap_or_default().to_owned();
        assert!(message.contains(reason), "{case}: {message}");
        assert!(client.is_closed_by_server().await, "{case}: still open");
    }
}

#[tokio::test]
async fn a_public_key_server_refuses_hs256_signed_with_that_public_key() {
    let mut settings = test_settings();
    settings.jwt_public_key = Some(fixture("jwt-es256-public.pem"));
    let app = spawn_app_with(Adapters::in_memory(), settings).await;
    let genuine = es256(&claims(), "jwt-es256-private.pem", None);
    let (_, answer) = connect_with(
        &app.ws_url(),
        &[("Authorization", &format!("Bearer {genuine}"))],
    )
    .await;
    assert_eq!(answer.command, Command::Connected, "{answer:?}");
    // Algorithm confusion: the public key (which anyone has) used as an HMAC secret.
    let public_pem = std::fs::read_to_string(fixture("jwt-es256-public.pem")).unwrap();
    let forged = hs256(&claims(), &public_pem);
    let (_, answer) = connect_with(
        &app.ws_url(),
        &[("Authorization", &format!("Bearer {forged}"))],
    )
    .await;
    assert_eq!(answer.command, Command::Error, "{answer:?}");
    assert!(
        answer.header("message").unwrap().contains("algorithm"),
        "{answer:?}"
    );
}

#[tokio::test]
async fn impersonation_and_system_messages_without_admin_are_refused_and_nothing_is_stored() {
    let app = jwt_app().await;
    let token = hs256(&claims(), SECRET);
    let mut admin_claims = claims();
    admin_claims["sub"] = json!(1);
    admin_claims["roles"] = json!(["admin"]);
    let admin = hs256(&admin_claims, SECRET);
    let room = create_room(&app, &token).await;
    let (mut alice, _) = connect_with(
        &app.ws_url(),
        &[("Authorization", &format!("Bearer {token}"))],
    )
    .await;
    alice.subscribe("errors", "/user/queue/errors").await;
    for (body, code) in [
        (chat(room, Some(8), "TEXT"), "SENDER_MISMATCH"),
        (chat(room, Some(7), "SYSTEM"), "FORBIDDEN"),
    ] {
        alice.send_chat(&body, Some("r")).await;
        let (frame, error) = alice.next_message().await;
        assert_eq!(frame.header("destination"), Some("/user/queue/errors"));
        assert_eq!(error["code"], code);
    }
    alice
        .send_chat(&chat(room, Some(7), "TEXT"), Some("ok"))
        .await;
    alice.expect_receipt("ok").await;
    let (mut root, answer) = connect_with(&app.ws_url(), &[("passcode", &admin)]).await;
    assert_eq!(answer.command, Command::Connected, "{answer:?}");
    root.subscribe("errors", "/user/queue/errors").await;
    root.send_chat(&chat(room, None, "SYSTEM"), Some("sys"))
        .await;
    root.expect_receipt("sys").await;

    let history: Vec<Value> = reqwest::Client::new()
        .get(app.http(&format!("/api/chatrooms/{room}/messages")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stored: Vec<(i64, String)> = history
        .iter()
        .map(|m| {
            (
                m["senderId"].as_i64().unwrap(),
                m["messageType"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(stored, [(7, "TEXT".to_owned()), (1, "SYSTEM".to_owned())]);
}

#[tokio::test]
async fn the_rest_api_needs_a_bearer_token_and_sends_as_its_user() {
    let app = jwt_app().await;
    let client = reqwest::Client::new();
    let refused = client.get(app.http("/api/chatrooms")).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["www-authenticate"], "Bearer");
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "UNAUTHENTICATED");
    let expired = {
        let mut c = claims();
        c["exp"] = json!(now() - 120);
        hs256(&c, SECRET)
    };
    let refused = client
        .get(app.http("/api/chatrooms"))
        .bearer_auth(expired)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(
        client
            .get(app.http("/health/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let token = hs256(&claims(), SECRET);
    let room = create_room(&app, &token).await;
    let post = |body: String| {
        client
            .post(app.http(&format!("/api/chatrooms/{room}/messages")))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let mismatch = post(chat(room, Some(9), "TEXT")).await.unwrap();
    assert_eq!(mismatch.status(), 403);
    let created = post(chat(room, None, "TEXT")).await.unwrap();
    assert_eq!(created.status(), 201);
    let message: Value = created.json().await.unwrap();
    assert_eq!(
        (
            message["senderId"].clone(),
            message["senderNickname"].clone()
        ),
        (json!(7), json!("alice"))
    );
}

#[tokio::test]
async fn a_session_whose_token_expires_is_told_to_reconnect_and_closed() {
    let app = jwt_app().await;
    // exp 28 s ago: still accepted thanks to the 30 s leeway, so it runs out in about 2 s.
    let mut c = claims();
    c["exp"] = json!(now() - 28);
    let token = hs256(&c, SECRET);
    let (mut client, answer) = connect_with(
        &app.ws_url(),
        &[("Authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(answer.command, Command::Connected, "{answer:?}");
    let error = client
        .next_frame_within(Duration::from_secs(6))
        .await
        .expect("an ERROR when the token runs out");
    assert_eq!(error.command, Command::Error);
    assert!(
        error.header("message").unwrap().contains("expired"),
        "{error:?}"
    );
    assert!(client.is_closed_by_server().await);
}

fn jwks(keys: &[(&str, &str)]) -> String {
    let keys = keys
        .iter()
        .map(|(kid, private)| {
            let pem = std::fs::read(fixture(private)).unwrap();
            let encoding = EncodingKey::from_ec_pem(&pem).unwrap();
            let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256).unwrap();
            jwk.common.key_id = Some((*kid).to_owned());
            jwk
        })
        .collect();
    serde_json::to_string(&JwkSet { keys }).unwrap()
}

#[tokio::test]
async fn a_jwks_file_rotates_on_sighup_without_a_restart() {
    let dir = std::env::temp_dir().join(format!("chat-jwks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("jwks.json");
    std::fs::write(&file, jwks(&[("old", "jwt-es256-private.pem")])).unwrap();
    let server = ServerProcess::start(&[
        ("CHAT_AUTH", "jwt"),
        ("CHAT_JWKS_FILE", file.to_str().unwrap()),
    ])
    .await;
    let old = es256(&claims(), "jwt-es256-private.pem", Some("old"));
    let new = es256(&claims(), "jwt-es256-rotated-private.pem", Some("new"));
    let (_, answer) = connect_with(&server.ws_url(), &[("passcode", &old)]).await;
    assert_eq!(answer.command, Command::Connected, "{answer:?}");
    let (_, answer) = connect_with(&server.ws_url(), &[("passcode", &new)]).await;
    assert_eq!(
        answer.command,
        Command::Error,
        "the new key is not published yet"
    );

    std::fs::write(
        &file,
        jwks(&[
            ("old", "jwt-es256-private.pem"),
            ("new", "jwt-es256-rotated-private.pem"),
        ]),
    )
    .unwrap();
    server.send_signal("HUP");
    let mut accepted = false;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, answer) = connect_with(&server.ws_url(), &[("passcode", &new)]).await;
        if answer.command == Command::Connected {
            accepted = true;
            break;
        }
    }
    assert!(accepted, "the rotated key was not picked up after SIGHUP");
    assert_eq!(server.terminate().await.code(), Some(0));
    let _ = std::fs::remove_dir_all(dir);
}

async fn start_up_failure(env: &[(&str, &str)]) -> String {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_chat-server"));
    command.env_clear().env("CHAT_BIND", "127.0.0.1:0");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().await.unwrap();
    assert!(!output.status.success(), "it started with {env:?}");
    String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr)
}

#[tokio::test]
async fn start_up_refuses_a_production_shape_without_a_key_and_a_short_secret() {
    let log = start_up_failure(&[("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")]).await;
    assert!(
        log.contains("CHAT_JWT_SECRET") && log.contains("CHAT_AUTH=none"),
        "{log}"
    );
    let log = start_up_failure(&[("CHAT_JWT_SECRET", "short")]).await;
    assert!(log.contains("at least 32 bytes"), "{log}");
    let log = start_up_failure(&[("CHAT_AUTH", "jwt")]).await;
    assert!(log.contains("needs a key"), "{log}");
}

#[tokio::test]
async fn the_token_tool_prints_a_token_the_server_accepts() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .env_clear()
        .env("CHAT_JWT_SECRET", SECRET)
        .env("CHAT_JWT_ISSUER", ISSUER)
        .env("CHAT_JWT_AUDIENCE", AUDIENCE)
        .args([
            "token", "--sub", "42", "--name", "bot", "--roles", "admin", "--ttl", "5m",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let app = jwt_app().await;
    let (_, answer) = connect_with(
        &app.ws_url(),
        &[("Authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(answer.command, Command::Connected, "{answer:?}");
    assert_eq!(answer.header("user-name"), Some("42"));
}

fn refused_with(result: Result<StompClient, tokio_tungstenite::tungstenite::Error>) -> u16 {
    match result {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("unexpected {other}"),
    }
}

#[tokio::test]
async fn only_allowed_origins_may_open_a_websocket_or_call_the_api_from_a_page() {
    // jwt mode without a list: only pages of the server's own host.
    let app = jwt_app().await;
    let own = format!("http://{}", app.addr);
    let evil = refused_with(
        StompClient::open_with_headers(&app.ws_url(), None, &[("origin", "https://evil.example")])
            .await,
    );
    assert_eq!(evil, 403);
    let same = refused_with(
        StompClient::open_with_headers(&app.ws_url(), None, &[("origin", &own)]).await,
    );
    assert_eq!(same, 101);
    let native = refused_with(StompClient::open_with_headers(&app.ws_url(), None, &[]).await);
    assert_eq!(native, 101, "clients without Origin are not browsers");

    // An explicit list: the WebSocket and CORS follow it.
    let mut settings = test_settings();
    settings.allowed_origins = vec!["https://chat.example".to_owned()];
    let app = spawn_app_with(Adapters::in_memory(), settings).await;
    let evil = refused_with(
        StompClient::open_with_headers(&app.ws_url(), None, &[("origin", "https://evil.example")])
            .await,
    );
    assert_eq!(evil, 403);
    let client = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, app.http("/api/chatrooms"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,authorization",
            )
            .send()
    };
    let allowed = preflight("https://chat.example").await.unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://chat.example"
    );
    let refused = preflight("https://evil.example").await.unwrap();
    assert_eq!(refused.status(), 403);
    let listed = client
        .get(app.http("/api/chatrooms"))
        .header("origin", "https://chat.example")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    assert_eq!(
        listed.headers()["access-control-allow-origin"],
        "https://chat.example"
    );
}
