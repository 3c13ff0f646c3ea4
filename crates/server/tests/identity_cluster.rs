//! Two real `chat-server` processes in jwt mode, sharing one PostgreSQL and one Redis: the
//! original scenario with signed-in users, and private rooms: members read and write,
//! others are refused on every path (SUBSCRIBE, SEND, history, the room list), and removing
//! a member ends their live subscription on the other instance within a second, through
//! the bus, or through the store when the bus lost the event.

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chat_stomp::{Command, Frame};
use chat_test_support::postgres::{TestDatabase, fresh_database};
use chat_test_support::redis::{ThrowawayRedis, unique_channel};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::StompClient;
use support::process::ServerProcess;

const SECRET: &str = "a-secret-for-the-private-room-tests-32+";
const OWNER: i64 = 1;
const MEMBER: i64 = 2;
const STRANGER: i64 = 3;

fn token(user: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({ "sub": user.to_string(), "name": format!("user{user}"), "exp": now + 600 }),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

struct Cluster {
    a: ServerProcess,
    b: ServerProcess,
    redis: ThrowawayRedis,
    _database: TestDatabase,
}

impl Cluster {
    async fn start() -> Self {
        let database = fresh_database().await;
        let redis = ThrowawayRedis::start().await;
        let channel = unique_channel("private");
        let redis_url = redis.url();
        let env = [
            ("DATABASE_URL", database.url()),
            ("REDIS_URL", redis_url.as_str()),
            ("CHAT_REDIS_CHANNEL", channel.as_str()),
            ("CHAT_AUTH", "jwt"),
            ("CHAT_JWT_SECRET", SECRET),
        ];
        let a = ServerProcess::start(&env).await;
        let b = ServerProcess::start(&env).await;
        Self {
            a,
            b,
            redis,
            _database: database,
        }
    }
}

async fn call(
    method: reqwest::Method,
    url: String,
    user: i64,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token(user));
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn private_room(server: &ServerProcess) -> i64 {
    let (status, room) = call(
        reqwest::Method::POST,
        server.http("/api/chatrooms"),
        OWNER,
        Some(json!({"name": "secret", "visibility": "private"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{room}");
    assert_eq!(room["visibility"], "private");
    assert_eq!(room["ownerId"], OWNER);
    room["id"].as_i64().unwrap()
}

async fn set_member(
    server: &ServerProcess,
    room: i64,
    user: i64,
    method: reqwest::Method,
) -> StatusCode {
    let url = server.http(&format!("/api/chatrooms/{room}/members/{user}"));
    call(method, url, OWNER, None).await.0
}

/// A session of `user` on `server`, subscribed to its errors queue.
async fn session(server: &ServerProcess, user: i64) -> StompClient {
    let mut client = StompClient::open(&server.ws_url()).await;
    client
        .send(
            Frame::new(Command::Connect)
                .with_header("accept-version", "1.2")
                .with_header("authorization", format!("Bearer {}", token(user))),
        )
        .await;
    let connected = client.next_frame().await;
    assert_eq!(connected.command, Command::Connected, "{connected:?}");
    client.subscribe("errors", "/user/queue/errors").await;
    client
}

fn chat(room: i64, content: &str) -> String {
    json!({"chatRoomId": room, "content": content}).to_string()
}

/// The next frame must be an error on `/user/queue/errors` with `code`.
async fn expect_error(client: &mut StompClient, code: &str) -> Value {
    let (frame, body) = client.next_message().await;
    assert_eq!(
        frame.header("destination"),
        Some("/user/queue/errors"),
        "{body}"
    );
    assert_eq!(body["code"], code, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_scenario_with_signed_in_users_on_two_instances() {
    let cluster = Cluster::start().await;
    let (status, room) = call(
        reqwest::Method::POST,
        cluster.a.http("/api/chatrooms"),
        OWNER,
        Some(json!({"name": "lobby"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{room}");
    assert_eq!(room["visibility"], "public");
    let room = room["id"].as_i64().unwrap();
    let destination = format!("/topic/chatroom/{room}");
    let mut on_a = session(&cluster.a, MEMBER).await;
    let mut on_b = session(&cluster.b, STRANGER).await;
    on_a.subscribe("room", &destination).await;
    on_b.subscribe("room", &destination).await;
    // The body names nobody: the sender is the token's user, with the token's name.
    on_a.send_chat(&chat(room, "hello from A"), Some("r1"))
        .await;
    on_a.expect_receipt("r1").await;
    for client in [&mut on_a, &mut on_b] {
        let (_, got) = client.next_message().await;
        assert_eq!(got["content"], "hello from A");
        assert_eq!(got["senderId"], MEMBER);
        assert_eq!(got["senderNickname"], format!("user{MEMBER}"));
    }
    let (status, stored) = call(
        reqwest::Method::GET,
        cluster.b.http(&format!("/api/chatrooms/{room}/messages")),
        STRANGER,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stored[0]["content"], "hello from A", "stored in PostgreSQL");
    // Speaking for someone else is refused, and nothing is stored.
    on_b.send_chat(
        &json!({"chatRoomId": room, "senderId": MEMBER, "content": "it was me"}).to_string(),
        Some("r2"),
    )
    .await;
    expect_error(&mut on_b, "SENDER_MISMATCH").await;
    on_a.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_members_use_a_private_room_and_a_removal_ends_a_live_subscription_on_the_other_instance()
 {
    let cluster = Cluster::start().await;
    let room = private_room(&cluster.a).await;
    let destination = format!("/topic/chatroom/{room}");
    assert_eq!(
        set_member(&cluster.a, room, MEMBER, reqwest::Method::PUT).await,
        StatusCode::CREATED
    );
    assert_eq!(
        set_member(&cluster.b, room, MEMBER, reqwest::Method::PUT).await,
        StatusCode::OK,
        "adding twice changes nothing"
    );

    // REST: the list, the room and its history, for each of them.
    let listed = |user| {
        let url = cluster.b.http("/api/chatrooms?limit=200");
        async move {
            let (status, rooms) = call(reqwest::Method::GET, url, user, None).await;
            assert_eq!(status, StatusCode::OK);
            rooms
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["id"].as_i64() == Some(room))
        }
    };
    assert!(listed(MEMBER).await);
    assert!(!listed(STRANGER).await, "a stranger does not see the room");
    let history = cluster.b.http(&format!("/api/chatrooms/{room}/messages"));
    let (status, problem) = call(reqwest::Method::GET, history.clone(), STRANGER, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(problem["code"], "FORBIDDEN");
    let (status, _) = call(
        reqwest::Method::GET,
        cluster.b.http(&format!("/api/chatrooms/{room}")),
        STRANGER,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(
        reqwest::Method::PUT,
        cluster
            .b
            .http(&format!("/api/chatrooms/{room}/members/{STRANGER}")),
        STRANGER,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "only the owner adds members");

    // STOMP: the stranger can neither subscribe (also not with a resume) nor send.
    let mut stranger = session(&cluster.b, STRANGER).await;
    stranger
        .send(
            Frame::new(Command::Subscribe)
                .with_header("id", "s")
                .with_header("destination", destination.as_str())
                .with_header("x-resume-after", "0")
                .with_header("receipt", "want-in"),
        )
        .await;
    let refused = expect_error(&mut stranger, "FORBIDDEN").await;
    assert_eq!(refused["receiptId"], "want-in");
    stranger
        .send_chat(&chat(room, "let me in"), Some("sent"))
        .await;
    expect_error(&mut stranger, "FORBIDDEN").await;

    // The member on B receives what the owner sends on A.
    let mut member = session(&cluster.b, MEMBER).await;
    member.subscribe("room", &destination).await;
    let mut owner = session(&cluster.a, OWNER).await;
    owner
        .send_chat(&chat(room, "hello members"), Some("r1"))
        .await;
    owner.expect_receipt("r1").await;
    let (_, got) = member.next_message().await;
    assert_eq!(got["content"], "hello members");
    assert_eq!(got["senderId"], OWNER);
    let (status, page) = call(reqwest::Method::GET, history.clone(), MEMBER, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page.as_array().unwrap().len(), 1);

    // Removed on A: the subscription on B ends at once.
    let removed_at = Instant::now();
    assert_eq!(
        set_member(&cluster.a, room, MEMBER, reqwest::Method::DELETE).await,
        StatusCode::NO_CONTENT
    );
    let ended = expect_error(&mut member, "FORBIDDEN").await;
    let took = removed_at.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "the subscription ended after {took:?}"
    );
    assert!(
        ended["message"]
            .as_str()
            .unwrap()
            .contains("no longer a member"),
        "{ended}"
    );
    owner
        .send_chat(&chat(room, "members only"), Some("r2"))
        .await;
    owner.expect_receipt("r2").await;
    member.expect_silence(Duration::from_millis(500)).await;
    member
        .send_chat(&chat(room, "still here?"), Some("r3"))
        .await;
    expect_error(&mut member, "FORBIDDEN").await;
    let (status, _) = call(reqwest::Method::GET, history, MEMBER, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, problem) = call(
        reqwest::Method::GET,
        cluster
            .b
            .http(&format!("/api/chatrooms/{room}/members/{MEMBER}")),
        MEMBER,
        None,
    )
    .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("NOT_A_MEMBER"))
    );
    drop(cluster.redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_the_bus_lost_is_found_in_the_store_once_the_bus_is_back() {
    let mut cluster = Cluster::start().await;
    let room = private_room(&cluster.a).await;
    set_member(&cluster.a, room, MEMBER, reqwest::Method::PUT).await;
    let mut member = session(&cluster.b, MEMBER).await;
    member
        .subscribe("room", &format!("/topic/chatroom/{room}"))
        .await;

    // With Redis gone, the removal is stored but its event reaches nobody.
    cluster.redis.stop().await;
    assert_eq!(
        set_member(&cluster.a, room, MEMBER, reqwest::Method::DELETE).await,
        StatusCode::NO_CONTENT
    );
    member.expect_silence(Duration::from_millis(500)).await;

    cluster.redis.restart().await;
    let frame = member
        .next_frame_within(Duration::from_secs(15))
        .await
        .expect("the removal was found after the bus came back");
    let ended: Value = serde_json::from_slice(&frame.body).unwrap();
    assert_eq!(
        frame.header("destination"),
        Some("/user/queue/errors"),
        "{ended}"
    );
    assert_eq!(ended["code"], "FORBIDDEN", "{ended}");
}
