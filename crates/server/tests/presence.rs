//! Presence, typing and read cursors (issue 16) on real `chat-server` processes sharing one
//! PostgreSQL and one Redis: who is in a room across instances (snapshot, join, leave, a
//! user on two devices, an instance killed outright, a Redis restart), typing events across
//! instances at most once per user and room per second, read cursors that reach every
//! session of the user and never move back, and the identity rules of jwt and open mode.

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chat_stomp::{Command, Frame};
use chat_test_support::postgres::{TestDatabase, fresh_database};
use chat_test_support::redis::{TestRedis, ThrowawayRedis, redis_url, unique_channel};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::StompClient;
use support::process::ServerProcess;

const SECRET: &str = "a-secret-for-the-presence-tests-32-bytes+";
const ALICE: i64 = 7;
const BOB: i64 = 8;
const CAROL: i64 = 9;

/// How long a cross-instance event may take before a test calls it missing.
const EVENT_WAIT: Duration = Duration::from_secs(5);
/// How long a test listens to be sure that nothing comes.
const QUIET: Duration = Duration::from_millis(1200);

fn name_of(user: i64) -> String {
    match user {
        ALICE => "alice".to_owned(),
        BOB => "bob".to_owned(),
        CAROL => "carol".to_owned(),
        other => format!("user{other}"),
    }
}

fn token(user: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({ "sub": user.to_string(), "name": name_of(user), "exp": now + 600 }),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// Where the instances of one test find their Redis.
enum RedisFor {
    Shared(Box<TestRedis>),
    Throwaway(ThrowawayRedis),
}

impl RedisFor {
    fn url(&self) -> String {
        match self {
            Self::Shared(redis) => redis.url().to_owned(),
            Self::Throwaway(redis) => redis.url(),
        }
    }
}

/// One PostgreSQL database and one Redis channel of this test alone.
struct Backends {
    database: TestDatabase,
    redis: RedisFor,
    channel: String,
    jwt: bool,
}

impl Backends {
    /// The shared Redis (CHAT_TEST_REDIS_URL), a fresh database, a channel of its own.
    async fn shared(jwt: bool) -> Self {
        Self {
            database: fresh_database().await,
            redis: RedisFor::Shared(Box::new(redis_url().await)),
            channel: unique_channel("presence"),
            jwt,
        }
    }

    /// A `redis-server` of this test alone, which it may restart.
    async fn throwaway(jwt: bool) -> Self {
        Self {
            database: fresh_database().await,
            redis: RedisFor::Throwaway(ThrowawayRedis::start().await),
            channel: unique_channel("presence"),
            jwt,
        }
    }

    async fn start_instance(&self) -> ServerProcess {
        let redis_url = self.redis.url();
        let mut env = vec![
            ("DATABASE_URL", self.database.url()),
            ("REDIS_URL", redis_url.as_str()),
            ("CHAT_REDIS_CHANNEL", self.channel.as_str()),
        ];
        if self.jwt {
            env.push(("CHAT_AUTH", "jwt"));
            env.push(("CHAT_JWT_SECRET", SECRET));
        }
        ServerProcess::start(&env).await
    }

    async fn stop_redis(&mut self) {
        match &mut self.redis {
            RedisFor::Throwaway(redis) => redis.stop().await,
            RedisFor::Shared(_) => panic!("never stop the shared Redis"),
        }
    }

    async fn restart_redis(&mut self) {
        match &mut self.redis {
            RedisFor::Throwaway(redis) => redis.restart().await,
            RedisFor::Shared(_) => panic!("never restart the shared Redis"),
        }
    }
}

/// A REST call, as `user` (jwt mode) or without a token (`None`).
async fn call(
    method: reqwest::Method,
    url: String,
    user: Option<i64>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(user) = user {
        request = request.bearer_auth(token(user));
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = tokio::time::timeout(Duration::from_secs(10), request.send())
        .await
        .expect("the REST call answers within 10 s")
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn create_room(server: &ServerProcess, owner: Option<i64>, body: Value) -> i64 {
    let (status, room) = call(
        reqwest::Method::POST,
        server.http("/api/chatrooms"),
        owner,
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{room}");
    room["id"].as_i64().unwrap()
}

/// `GET /api/chatrooms/{room}/presence` as `user`.
async fn presence_over_rest(
    server: &ServerProcess,
    room: i64,
    user: Option<i64>,
) -> (StatusCode, Value) {
    let url = server.http(&format!("/api/chatrooms/{room}/presence"));
    call(reqwest::Method::GET, url, user, None).await
}

/// The caller's entry for `room` in `GET /api/me/rooms`.
async fn my_room(server: &ServerProcess, user: i64, room: i64) -> Value {
    let (status, rooms) = call(
        reqwest::Method::GET,
        server.http("/api/me/rooms?limit=200"),
        Some(user),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rooms}");
    let rooms = rooms.as_array().expect("GET /api/me/rooms is a JSON array");
    rooms
        .iter()
        .find(|r| r["id"].as_i64() == Some(room))
        .unwrap_or_else(|| panic!("room {room} is not among the caller's rooms: {rooms:?}"))
        .clone()
}

/// `count` messages into `room` through `POST /api/chatrooms/{room}/messages`, eight at a
/// time; returns the highest `seq` stored.
async fn post_messages(server: &ServerProcess, user: i64, room: i64, count: usize) -> i64 {
    let url = server.http(&format!("/api/chatrooms/{room}/messages"));
    let mut highest = 0;
    let mut sent = 0;
    while sent < count {
        let batch = (count - sent).min(8);
        let calls = (0..batch).map(|i| {
            let url = url.clone();
            async move {
                let body = json!({"content": format!("message {}", sent + i)});
                call(reqwest::Method::POST, url, Some(user), Some(body)).await
            }
        });
        for (status, stored) in futures_util::future::join_all(calls).await {
            assert_eq!(status, StatusCode::CREATED, "{stored}");
            highest = highest.max(stored["seq"].as_i64().unwrap());
        }
        sent += batch;
    }
    highest
}

/// A jwt-mode session of `user` on `server`, subscribed to its errors queue.
async fn session(server: &ServerProcess, user: i64) -> StompClient {
    connect_with(
        server,
        &[("authorization", format!("Bearer {}", token(user)))],
    )
    .await
}

/// An open-mode session: `login` is the user, `x-nickname` the name; neither means anonymous.
async fn open_session(
    server: &ServerProcess,
    login: Option<i64>,
    nickname: Option<&str>,
) -> StompClient {
    let mut headers = Vec::new();
    if let Some(login) = login {
        headers.push(("login", login.to_string()));
    }
    if let Some(nickname) = nickname {
        headers.push(("x-nickname", nickname.to_owned()));
    }
    connect_with(server, &headers).await
}

async fn connect_with(server: &ServerProcess, headers: &[(&str, String)]) -> StompClient {
    let mut client = StompClient::open(&server.ws_url()).await;
    let mut connect = Frame::new(Command::Connect).with_header("accept-version", "1.2");
    for (name, value) in headers {
        connect = connect.with_header(*name, value.as_str());
    }
    client.send(connect).await;
    let connected = client.next_frame().await;
    assert_eq!(connected.command, Command::Connected, "{connected:?}");
    client.subscribe("errors", "/user/queue/errors").await;
    client
}

fn room_topic(room: i64) -> String {
    format!("/topic/chatroom/{room}")
}

fn presence_topic(room: i64) -> String {
    format!("/topic/chatroom/{room}/presence")
}

fn typing_topic(room: i64) -> String {
    format!("/topic/chatroom/{room}/typing")
}

/// Enters the room (a subscription to its topic), waiting for the RECEIPT.
async fn enter(client: &mut StompClient, room: i64) {
    client.subscribe("room", &room_topic(room)).await;
}

/// Subscribes to the room's presence and returns the snapshot that comes first.
async fn watch_presence(client: &mut StompClient, id: &str, room: i64) -> Value {
    client.subscribe(id, &presence_topic(room)).await;
    let (frame, snapshot) = client.next_message().await;
    assert_eq!(
        frame.header("destination"),
        Some(presence_topic(room).as_str())
    );
    assert_eq!(frame.header("content-type"), Some("application/json"));
    assert_eq!(frame.header("subscription"), Some(id));
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    assert_eq!(snapshot["chatRoomId"], room, "{snapshot}");
    snapshot
}

/// A fresh watcher's snapshot on `server` (jwt mode: as `as_user`; open mode: anonymous).
async fn fresh_snapshot(server: &ServerProcess, room: i64, as_user: Option<i64>) -> Value {
    let mut watcher = match as_user {
        Some(user) => session(server, user).await,
        None => open_session(server, None, None).await,
    };
    watch_presence(&mut watcher, "presence", room).await
}

/// How long a change on one instance may take to show in a fresh snapshot on another.
const CONVERGE: Duration = Duration::from_secs(2);

/// A fresh presence SUBSCRIBE on `server` and `GET /api/chatrooms/{room}/presence` both
/// equal `expected` within [`CONVERGE`] (a change made on another instance takes a moment
/// to get here).
async fn assert_presence(
    server: &ServerProcess,
    room: i64,
    as_user: Option<i64>,
    expected: &Value,
    why: &str,
) {
    let started = Instant::now();
    loop {
        let over_stomp = fresh_snapshot(server, room, as_user).await;
        let (status, over_rest) = presence_over_rest(server, room, as_user).await;
        if over_stomp == *expected && status == StatusCode::OK && over_rest == *expected {
            let took = started.elapsed();
            if took > Duration::from_millis(100) {
                eprintln!("{why}: right on {} after {took:?}", server.addr);
            }
            return;
        }
        assert!(
            started.elapsed() < CONVERGE,
            "{why}: on {} after {CONVERGE:?} the snapshot is {over_stomp} and GET presence \
             answers {status} {over_rest}, not {expected}",
            server.addr
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn member(user: i64, nickname: &str, connections: u64) -> Value {
    json!({"userId": user, "nickname": nickname, "connections": connections})
}

fn snapshot_of(room: i64, members: &[Value]) -> Value {
    json!({"type": "snapshot", "chatRoomId": room, "members": members})
}

/// The next MESSAGE on `client`, which must come within `wait` on `destination`.
async fn next_on(client: &mut StompClient, destination: &str, wait: Duration) -> Value {
    let frame = client
        .next_frame_within(wait)
        .await
        .unwrap_or_else(|| panic!("nothing on {destination} within {wait:?}"));
    assert_eq!(frame.command, Command::Message, "{frame:?}");
    let body: Value = serde_json::from_slice(&frame.body).unwrap();
    assert_eq!(frame.header("destination"), Some(destination), "{body}");
    body
}

/// The next presence event (join or leave) on a watcher.
async fn next_presence_event(client: &mut StompClient, room: i64, wait: Duration) -> Value {
    next_on(client, &presence_topic(room), wait).await
}

fn event(kind: &str, room: i64, user: i64, nickname: &str) -> Value {
    json!({"type": kind, "chatRoomId": room, "userId": user, "nickname": nickname})
}

/// The next frame must be an error on `/user/queue/errors` with `code`.
async fn expect_error(client: &mut StompClient, code: &str) -> Value {
    let body = next_on(client, "/user/queue/errors", EVENT_WAIT).await;
    assert_eq!(body["code"], code, "{body}");
    body
}

fn send_to(destination: &str, body: &Value, receipt: Option<&str>) -> Frame {
    let mut frame = Frame::new(Command::Send)
        .with_header("destination", destination)
        .with_header("content-type", "application/json")
        .with_body(body.to_string().into_bytes());
    if let Some(receipt) = receipt {
        frame = frame.with_header("receipt", receipt);
    }
    frame
}

async fn typing(client: &mut StompClient, room: i64, receipt: Option<&str>) {
    client
        .send(send_to(
            "/app/chat.typing",
            &json!({"chatRoomId": room}),
            receipt,
        ))
        .await;
}

/// SEND `/app/chat.read` and wait for its RECEIPT. The sender's own `/user/queue/read`
/// MESSAGE may come before the RECEIPT or after it: those that came before are returned.
async fn read_up_to(client: &mut StompClient, room: i64, seq: i64, receipt: &str) -> Vec<Value> {
    client
        .send(send_to(
            "/app/chat.read",
            &json!({"chatRoomId": room, "seq": seq}),
            Some(receipt),
        ))
        .await;
    let mut early = Vec::new();
    loop {
        let frame = client.next_frame().await;
        if frame.command == Command::Receipt {
            assert_eq!(frame.header("receipt-id"), Some(receipt), "{frame:?}");
            return early;
        }
        assert_eq!(frame.command, Command::Message, "{frame:?}");
        let body: Value = serde_json::from_slice(&frame.body).unwrap();
        assert_eq!(
            frame.header("destination"),
            Some("/user/queue/read"),
            "expected RECEIPT {receipt}, got {body}"
        );
        early.push(body);
    }
}

/// The next `/user/queue/read` MESSAGE: one that came before a RECEIPT, else the next one.
async fn next_read(client: &mut StompClient, early: &mut Vec<Value>, wait: Duration) -> Value {
    if early.is_empty() {
        next_on(client, "/user/queue/read", wait).await
    } else {
        early.remove(0)
    }
}

/// Ends the STOMP session politely (DISCONNECT, then the socket closes).
async fn disconnect(mut client: StompClient) {
    client
        .send(Frame::new(Command::Disconnect).with_header("receipt", "bye"))
        .await;
    client.expect_receipt("bye").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_across_two_instances_with_a_second_device_and_rest() {
    let backends = Backends::shared(true).await;
    let a = backends.start_instance().await;
    let b = backends.start_instance().await;
    let room = create_room(&a, Some(ALICE), json!({"name": "lobby"})).await;

    // A watcher on B only watches: it is not in the room.
    let mut watcher = session(&b, CAROL).await;
    let snapshot = watch_presence(&mut watcher, "presence", room).await;
    assert_eq!(
        snapshot,
        snapshot_of(room, &[]),
        "nobody is in the room yet"
    );

    let mut alice = session(&a, ALICE).await;
    enter(&mut alice, room).await;
    assert_eq!(
        next_presence_event(&mut watcher, room, EVENT_WAIT).await,
        event("join", room, ALICE, "alice"),
        "a join on A reaches a watcher on B"
    );
    let mut bob = session(&b, BOB).await;
    enter(&mut bob, room).await;
    assert_eq!(
        next_presence_event(&mut watcher, room, EVENT_WAIT).await,
        event("join", room, BOB, "bob")
    );

    // A fresh watcher on either instance sees both, sorted by user id; REST agrees.
    let both = snapshot_of(room, &[member(ALICE, "alice", 1), member(BOB, "bob", 1)]);
    for server in [&a, &b] {
        assert_presence(server, room, Some(CAROL), &both, "alice on A, bob on B").await;
    }
    // What that costs each instance: both entries, its own and the other's.
    for server in [&a, &b] {
        let held = support::metric_at(&server.http("/metrics"), "chat_presence_entries").await;
        assert_eq!(held, 2.0, "presence entries on {}", server.http(""));
    }

    // Alice's second device, on the other instance: one member with two connections, and
    // no second join.
    let mut alice_phone = session(&b, ALICE).await;
    enter(&mut alice_phone, room).await;
    watcher.expect_silence(QUIET).await;
    let two_devices = snapshot_of(room, &[member(ALICE, "alice", 2), member(BOB, "bob", 1)]);
    for server in [&a, &b] {
        assert_presence(
            server,
            room,
            Some(CAROL),
            &two_devices,
            "alice on two devices",
        )
        .await;
    }
    // A second subscription to the room on one connection is still one connection.
    alice_phone.subscribe("room-again", &room_topic(room)).await;
    assert_presence(
        &a,
        room,
        Some(CAROL),
        &two_devices,
        "connections count connections, not subscriptions",
    )
    .await;

    // The first device leaves: Alice is still there, on her phone.
    disconnect(alice).await;
    watcher.expect_silence(QUIET).await;
    assert_presence(
        &b,
        room,
        Some(CAROL),
        &snapshot_of(room, &[member(ALICE, "alice", 1), member(BOB, "bob", 1)]),
        "alice's laptop left",
    )
    .await;

    // Her phone leaves the room by UNSUBSCRIBE (both subscriptions), without disconnecting.
    for id in ["room", "room-again"] {
        alice_phone
            .send(
                Frame::new(Command::Unsubscribe)
                    .with_header("id", id)
                    .with_header("receipt", format!("unsub-{id}")),
            )
            .await;
        alice_phone.expect_receipt(&format!("unsub-{id}")).await;
    }
    assert_eq!(
        next_presence_event(&mut watcher, room, EVENT_WAIT).await,
        event("leave", room, ALICE, "alice"),
        "the last connection leaving makes the leave"
    );

    // Bob's socket just goes away (no DISCONNECT).
    drop(bob);
    assert_eq!(
        next_presence_event(&mut watcher, room, EVENT_WAIT).await,
        event("leave", room, BOB, "bob")
    );
    for server in [&a, &b] {
        assert_presence(
            server,
            room,
            Some(CAROL),
            &snapshot_of(room, &[]),
            "everyone left",
        )
        .await;
    }
    watcher.expect_silence(Duration::from_millis(300)).await;
    drop(alice_phone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_users_of_a_killed_instance_leave_within_30_seconds() {
    let backends = Backends::shared(true).await;
    let a = backends.start_instance().await;
    let b = backends.start_instance().await;
    let room = create_room(&b, Some(BOB), json!({"name": "doomed"})).await;

    let mut watcher = session(&b, CAROL).await;
    watch_presence(&mut watcher, "presence", room).await;
    let mut alice = session(&a, ALICE).await;
    enter(&mut alice, room).await;
    assert_eq!(
        next_presence_event(&mut watcher, room, EVENT_WAIT).await,
        event("join", room, ALICE, "alice")
    );
    let mut bob = session(&b, BOB).await;
    enter(&mut bob, room).await;
    assert_eq!(
        next_presence_event(&mut watcher, room, EVENT_WAIT).await,
        event("join", room, BOB, "bob")
    );
    // Dave has a device on each instance: losing A costs him a connection, not his place.
    const DAVE: i64 = 10;
    let mut dave_a = session(&a, DAVE).await;
    enter(&mut dave_a, room).await;
    assert_eq!(
        next_presence_event(&mut watcher, room, EVENT_WAIT).await,
        event("join", room, DAVE, "user10")
    );
    let mut dave_b = session(&b, DAVE).await;
    enter(&mut dave_b, room).await;
    assert_presence(
        &b,
        room,
        Some(CAROL),
        &snapshot_of(
            room,
            &[
                member(ALICE, "alice", 1),
                member(BOB, "bob", 1),
                member(DAVE, "user10", 2),
            ],
        ),
        "before the SIGKILL",
    )
    .await;

    // A dies without a word: nothing tells B, so B must notice on its own.
    let killed_at = Instant::now();
    a.kill().await;
    let left = next_presence_event(&mut watcher, room, Duration::from_secs(35)).await;
    let took = killed_at.elapsed();
    assert_eq!(left, event("leave", room, ALICE, "alice"));
    assert!(
        took < Duration::from_secs(30),
        "the leave came {took:?} after the SIGKILL"
    );
    eprintln!("the killed instance's user left after {took:?}");

    // Bob, on the surviving instance, stays, and so does Dave, with one connection.
    let survivors = snapshot_of(room, &[member(BOB, "bob", 1), member(DAVE, "user10", 1)]);
    assert_presence(&b, room, Some(CAROL), &survivors, "after the SIGKILL").await;
    watcher.expect_silence(Duration::from_millis(500)).await;
    drop((alice, dave_a, dave_b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_reaches_the_other_instance_at_most_once_a_second() {
    let backends = Backends::shared(true).await;
    let a = backends.start_instance().await;
    let b = backends.start_instance().await;
    let room = create_room(&a, Some(ALICE), json!({"name": "chatty"})).await;

    let mut bob = session(&b, BOB).await;
    bob.subscribe("typing", &typing_topic(room)).await;
    let mut carol = session(&a, CAROL).await;
    carol.subscribe("typing", &typing_topic(room)).await;
    let mut alice = session(&a, ALICE).await;

    let sent_at = Instant::now();
    typing(&mut alice, room, Some("t0")).await;
    alice.expect_receipt("t0").await;
    let expected = json!({"chatRoomId": room, "userId": ALICE, "nickname": "alice"});
    assert_eq!(
        next_on(&mut bob, &typing_topic(room), EVENT_WAIT).await,
        expected,
        "typing on A reaches a subscriber on B"
    );
    eprintln!("typing crossed instances in {:?}", sent_at.elapsed());
    assert_eq!(
        next_on(&mut carol, &typing_topic(room), EVENT_WAIT).await,
        expected,
        "and one on A"
    );

    // A burst of 20 within the next second: one event, two at most if the second turned;
    // every SEND with a receipt still gets its RECEIPT.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for i in 0..20 {
        typing(&mut alice, room, Some(&format!("t{}", i + 1))).await;
    }
    for i in 0..20 {
        alice.expect_receipt(&format!("t{}", i + 1)).await;
    }
    let mut events = 0;
    let window = tokio::time::Instant::now() + Duration::from_millis(1500);
    while let Some(frame) = bob
        .next_frame_within(window.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        assert_eq!(frame.command, Command::Message, "{frame:?}");
        assert_eq!(
            frame.header("destination"),
            Some(typing_topic(room).as_str())
        );
        let body: Value = serde_json::from_slice(&frame.body).unwrap();
        assert_eq!(body, expected);
        events += 1;
    }
    assert!(
        (1..=2).contains(&events),
        "a burst of 20 typing frames gave {events} events"
    );

    // Typing is never stored.
    let (status, history) = call(
        reqwest::Method::GET,
        b.http(&format!("/api/chatrooms/{room}/messages")),
        Some(BOB),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(history, json!([]), "typing left nothing in the history");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_cursor_reaches_every_device_never_moves_back_and_unread_is_exact() {
    let backends = Backends::shared(true).await;
    let a = backends.start_instance().await;
    let b = backends.start_instance().await;
    let room = create_room(&a, Some(ALICE), json!({"name": "reading"})).await;
    assert_eq!(post_messages(&a, BOB, room, 10).await, 10);

    let mut laptop = session(&a, ALICE).await;
    laptop.subscribe("read", "/user/queue/read").await;
    let mut phone = session(&b, ALICE).await;
    phone.subscribe("read", "/user/queue/read").await;
    let mut bob = session(&b, BOB).await;
    bob.subscribe("read", "/user/queue/read").await;

    // Device 1 on A reads up to 5: device 2 on B hears it within a second, and so does
    // device 1 itself.
    let sent_at = Instant::now();
    let mut laptop_early = read_up_to(&mut laptop, room, 5, "r5").await;
    let moved = json!({"chatRoomId": room, "lastReadSeq": 5});
    assert_eq!(
        next_on(&mut phone, "/user/queue/read", Duration::from_secs(1)).await,
        moved
    );
    let took = sent_at.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "the cursor reached the other device after {took:?}"
    );
    eprintln!("the read cursor reached the other instance in {took:?}");
    assert_eq!(
        next_read(&mut laptop, &mut laptop_early, EVENT_WAIT).await,
        moved
    );
    let entry = my_room(&b, ALICE, room).await;
    assert_eq!(
        (&entry["lastSeq"], &entry["lastReadSeq"], &entry["unread"]),
        (&json!(10), &json!(5), &json!(5)),
        "{entry}"
    );
    assert_eq!(entry["name"], "reading", "room fields come along: {entry}");

    // Backwards or in place: stored nowhere, sent nowhere.
    assert_eq!(
        read_up_to(&mut phone, room, 3, "r3").await,
        Vec::<Value>::new()
    );
    assert_eq!(
        read_up_to(&mut phone, room, 5, "r5-again").await,
        Vec::<Value>::new()
    );
    phone.expect_silence(QUIET).await;
    laptop.expect_silence(Duration::from_millis(200)).await;
    let entry = my_room(&a, ALICE, room).await;
    assert_eq!(
        entry["lastReadSeq"], 5,
        "the cursor never moves back: {entry}"
    );
    assert_eq!(entry["unread"], 5, "{entry}");

    // 1,000 more messages: unread counts every one of them.
    assert_eq!(post_messages(&b, BOB, room, 1000).await, 1010);
    let entry = my_room(&a, ALICE, room).await;
    assert_eq!(
        (&entry["lastSeq"], &entry["lastReadSeq"], &entry["unread"]),
        (&json!(1010), &json!(5), &json!(1005)),
        "{entry}"
    );

    let mut phone_early = read_up_to(&mut phone, room, 1000, "r1000").await;
    let moved = json!({"chatRoomId": room, "lastReadSeq": 1000});
    assert_eq!(
        next_on(&mut laptop, "/user/queue/read", EVENT_WAIT).await,
        moved
    );
    assert_eq!(
        next_read(&mut phone, &mut phone_early, EVENT_WAIT).await,
        moved
    );
    let entry = my_room(&b, ALICE, room).await;
    assert_eq!(entry["unread"], 10, "{entry}");

    // Far past the end: clamped to lastSeq, unread 0, never negative.
    let mut laptop_early = read_up_to(&mut laptop, room, 1_000_000, "r-far").await;
    let clamped = json!({"chatRoomId": room, "lastReadSeq": 1010});
    assert_eq!(
        next_on(&mut phone, "/user/queue/read", EVENT_WAIT).await,
        clamped
    );
    assert_eq!(
        next_read(&mut laptop, &mut laptop_early, EVENT_WAIT).await,
        clamped
    );
    for server in [&a, &b] {
        let entry = my_room(server, ALICE, room).await;
        assert_eq!(
            (&entry["lastSeq"], &entry["lastReadSeq"], &entry["unread"]),
            (&json!(1010), &json!(1010), &json!(0)),
            "{entry}"
        );
    }
    phone.expect_silence(Duration::from_millis(300)).await;
    laptop.expect_silence(Duration::from_millis(100)).await;

    // Someone else's cursor is none of Bob's business.
    bob.expect_silence(Duration::from_millis(200)).await;
}

/// A fresh anonymous watcher's snapshot on `server`, or `None` when it cannot be had within
/// two seconds (the instance is still reconnecting to Redis).
async fn try_snapshot(server: &ServerProcess, room: i64) -> Option<Value> {
    let attempt = async {
        let mut client = StompClient::open(&server.ws_url()).await;
        client
            .send(Frame::new(Command::Connect).with_header("accept-version", "1.2"))
            .await;
        let connected = client.next_frame_within(Duration::from_secs(2)).await?;
        if connected.command != Command::Connected {
            return None;
        }
        client
            .send(
                Frame::new(Command::Subscribe)
                    .with_header("id", "presence")
                    .with_header("destination", presence_topic(room)),
            )
            .await;
        let frame = client.next_frame_within(Duration::from_secs(2)).await?;
        if frame.command != Command::Message {
            return None;
        }
        serde_json::from_slice::<Value>(&frame.body).ok()
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
}

/// Fresh snapshots (STOMP and REST) on both instances equal `truth` within 5 s of `since`.
async fn whole_within_5_seconds(
    servers: [&ServerProcess; 2],
    room: i64,
    truth: &Value,
    since: Instant,
    what: &str,
) {
    let mut whole = [false, false];
    let mut last_seen = [Value::Null, Value::Null];
    while !(whole[0] && whole[1]) {
        let took = since.elapsed();
        assert!(
            took < Duration::from_secs(5),
            "{what}: {took:?} after Redis came back the snapshots are still {last_seen:?}, not {truth}"
        );
        for (i, server) in servers.into_iter().enumerate() {
            if whole[i] {
                continue;
            }
            let Some(seen) = try_snapshot(server, room).await else {
                continue;
            };
            let (status, over_rest) = presence_over_rest(server, room, None).await;
            whole[i] = seen == *truth && status == StatusCode::OK && over_rest == *truth;
            last_seen[i] = json!({"stomp": seen, "rest": over_rest});
        }
        if !(whole[0] && whole[1]) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    eprintln!(
        "{what}: presence was whole on both instances {:?} after Redis came back",
        since.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_whole_again_within_5_seconds_of_a_redis_restart() {
    // Open mode: the CONNECT frame's login and x-nickname are the identity.
    let mut backends = Backends::throwaway(false).await;
    let a = backends.start_instance().await;
    let b = backends.start_instance().await;
    let room = create_room(&a, None, json!({"name": "resilient"})).await;

    let mut ann = open_session(&a, Some(1), Some("ann")).await;
    enter(&mut ann, room).await;
    let mut ben = open_session(&b, Some(2), Some("ben")).await;
    enter(&mut ben, room).await;
    let mut cat_a = open_session(&a, Some(3), Some("cat")).await;
    enter(&mut cat_a, room).await;
    let mut cat_b = open_session(&b, Some(3), Some("cat")).await;
    enter(&mut cat_b, room).await;
    let truth = snapshot_of(
        room,
        &[
            member(1, "ann", 1),
            member(2, "ben", 1),
            member(3, "cat", 2),
        ],
    );
    // Before the restart both instances agree with the truth.
    for server in [&a, &b] {
        assert_presence(server, room, None, &truth, "before the restart").await;
    }

    // A plain restart: Redis comes back empty.
    backends.restart_redis().await;
    whole_within_5_seconds([&a, &b], room, &truth, Instant::now(), "a plain restart").await;

    // Redis goes away; meanwhile ben leaves on B, cat closes her device on B, and fay
    // joins on A. Neither instance can tell the other until Redis is back.
    backends.stop_redis().await;
    drop(ben);
    drop(cat_b);
    let mut fay = open_session(&a, Some(6), Some("fay")).await;
    enter(&mut fay, room).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    backends.restart_redis().await;
    let truth = snapshot_of(
        room,
        &[
            member(1, "ann", 1),
            member(3, "cat", 1),
            member(6, "fay", 1),
        ],
    );
    whole_within_5_seconds(
        [&a, &b],
        room,
        &truth,
        Instant::now(),
        "changes made while Redis was down",
    )
    .await;

    // A join after the restart reaches the other instance.
    let mut watcher = open_session(&a, None, None).await;
    assert_eq!(watch_presence(&mut watcher, "presence", room).await, truth);
    let mut dan = open_session(&b, Some(4), Some("dan")).await;
    enter(&mut dan, room).await;
    assert_eq!(
        next_presence_event(&mut watcher, room, EVENT_WAIT).await,
        event("join", room, 4, "dan")
    );
    drop((ann, cat_a, fay));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_members_watch_a_private_rooms_presence() {
    let backends = Backends::shared(true).await;
    let a = backends.start_instance().await;
    let room = create_room(
        &a,
        Some(ALICE),
        json!({"name": "secret", "visibility": "private"}),
    )
    .await;
    let (status, _) = call(
        reqwest::Method::PUT,
        a.http(&format!("/api/chatrooms/{room}/members/{BOB}")),
        Some(ALICE),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    let mut stranger = session(&a, CAROL).await;
    stranger
        .send(
            Frame::new(Command::Subscribe)
                .with_header("id", "presence")
                .with_header("destination", presence_topic(room))
                .with_header("receipt", "peek"),
        )
        .await;
    let refused = expect_error(&mut stranger, "FORBIDDEN").await;
    assert_eq!(refused["receiptId"], "peek", "{refused}");
    stranger.expect_silence(Duration::from_millis(500)).await;
    let (status, problem) = presence_over_rest(&a, room, Some(CAROL)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(problem["code"], "FORBIDDEN", "{problem}");

    // A stranger's typing is refused too (Write access), and nothing reaches the room.
    let mut bob = session(&a, BOB).await;
    bob.subscribe("typing", &typing_topic(room)).await;
    typing(&mut stranger, room, Some("type")).await;
    let refused = expect_error(&mut stranger, "FORBIDDEN").await;
    assert_eq!(refused["receiptId"], "type", "{refused}");
    bob.expect_silence(Duration::from_millis(500)).await;

    // The member sees the owner in the room.
    let mut alice = session(&a, ALICE).await;
    enter(&mut alice, room).await;
    let mut watcher = session(&a, BOB).await;
    assert_eq!(
        watch_presence(&mut watcher, "presence", room).await,
        snapshot_of(room, &[member(ALICE, "alice", 1)])
    );
    assert_eq!(
        presence_over_rest(&a, room, Some(BOB)).await,
        (
            StatusCode::OK,
            snapshot_of(room, &[member(ALICE, "alice", 1)])
        )
    );

    // No such room: UNKNOWN_ROOM on STOMP, 404 on REST.
    stranger
        .send(
            Frame::new(Command::Subscribe)
                .with_header("id", "nowhere")
                .with_header("destination", presence_topic(999_999))
                .with_header("receipt", "nowhere"),
        )
        .await;
    let unknown = expect_error(&mut stranger, "UNKNOWN_ROOM").await;
    assert_eq!(unknown["receiptId"], "nowhere", "{unknown}");
    let (status, _) = presence_over_rest(&a, 999_999, Some(CAROL)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_open_mode_login_is_the_user_and_anonymous_sessions_only_watch() {
    // The embedded default: open mode, in-memory store and bus.
    let server = ServerProcess::start(&[]).await;
    let room = create_room(&server, None, json!({"name": "open"})).await;

    let mut anonymous = open_session(&server, None, None).await;
    let snapshot = watch_presence(&mut anonymous, "presence", room).await;
    assert_eq!(snapshot, snapshot_of(room, &[]));
    anonymous.subscribe("typing", &typing_topic(room)).await;

    // Anonymous in the room: never counted.
    let mut lurker = open_session(&server, None, None).await;
    enter(&mut lurker, room).await;
    anonymous.expect_silence(QUIET).await;
    assert_eq!(
        presence_over_rest(&server, room, None).await,
        (StatusCode::OK, snapshot_of(room, &[]))
    );

    // Anonymous typing, reading, and the read queue need an identity.
    typing(&mut lurker, room, Some("type")).await;
    let refused = expect_error(&mut lurker, "IDENTITY_REQUIRED").await;
    assert_eq!(refused["receiptId"], "type", "{refused}");
    lurker
        .send(send_to(
            "/app/chat.read",
            &json!({"chatRoomId": room, "seq": 1}),
            Some("read"),
        ))
        .await;
    let refused = expect_error(&mut lurker, "IDENTITY_REQUIRED").await;
    assert_eq!(refused["receiptId"], "read", "{refused}");
    lurker
        .send(
            Frame::new(Command::Subscribe)
                .with_header("id", "read")
                .with_header("destination", "/user/queue/read")
                .with_header("receipt", "queue"),
        )
        .await;
    let refused = expect_error(&mut lurker, "IDENTITY_REQUIRED").await;
    assert_eq!(refused["receiptId"], "queue", "{refused}");
    anonymous.expect_silence(Duration::from_millis(300)).await;

    // With login (and x-nickname) the session is a user.
    let mut eve = open_session(&server, Some(5), Some("eve")).await;
    enter(&mut eve, room).await;
    assert_eq!(
        next_presence_event(&mut anonymous, room, EVENT_WAIT).await,
        event("join", room, 5, "eve")
    );
    typing(&mut eve, room, Some("eve-types")).await;
    eve.expect_receipt("eve-types").await;
    assert_eq!(
        next_on(&mut anonymous, &typing_topic(room), EVENT_WAIT).await,
        json!({"chatRoomId": room, "userId": 5, "nickname": "eve"})
    );
    // Without x-nickname the name is "user {id}".
    let mut nameless = open_session(&server, Some(6), None).await;
    enter(&mut nameless, room).await;
    assert_eq!(
        next_presence_event(&mut anonymous, room, EVENT_WAIT).await,
        event("join", room, 6, "user 6")
    );
    assert_eq!(
        presence_over_rest(&server, room, None).await.1,
        snapshot_of(room, &[member(5, "eve", 1), member(6, "user 6", 1)])
    );
}
