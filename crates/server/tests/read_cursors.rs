//! `GET /api/me/rooms` on the real server: exact unread counts after many messages and a
//! cursor move, cursors that never move back or pass the end, pages by room id, and who may
//! ask for whose list in open and jwt mode. Cursors are moved through a `ChatService` on
//! the app's own store (SEND /app/chat.read is the STOMP session's, tested with it).

mod support;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use chat_adapters_memory::{InMemoryBus, InMemoryRepository};
use chat_domain::{
    Caller, ChatMessageRequest, ChatService, Identity, MessageRepository, MessageType,
    NewChatMessage, NewRoom, RoomId, RoomMembers, RoomName, SenderId, Seq, Visibility,
};
use chat_server::{Adapters, Settings};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::{TestApp, spawn_app_with, test_settings};

const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";

/// The app, and a service on the very store it runs on.
struct Fixture {
    app: TestApp,
    store: Arc<InMemoryRepository>,
    service: ChatService,
}

async fn fixture(settings: Settings) -> Fixture {
    let store = Arc::new(InMemoryRepository::new());
    let bus = Arc::new(InMemoryBus::new());
    let adapters = Adapters {
        repository: store.clone(),
        members: store.clone(),
        cursors: store.clone(),
        bus: bus.clone(),
    };
    let app = spawn_app_with(adapters, settings).await;
    let service =
        ChatService::new(store.clone(), store.clone(), bus).with_read_cursors(store.clone());
    Fixture {
        app,
        store,
        service,
    }
}

fn jwt_settings() -> Settings {
    let mut settings = test_settings();
    settings.jwt_secret = Some(SECRET.to_owned());
    settings
}

fn token(user: i64, admin: bool) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let roles: Vec<&str> = if admin { vec!["admin"] } else { vec![] };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": user.to_string(), "exp": exp, "roles": roles}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn signed_in(user: i64) -> Caller {
    Caller::User(Identity {
        user: SenderId(user),
        nickname: None,
        admin: false,
    })
}

async fn messages(store: &InMemoryRepository, room: RoomId, count: usize) {
    for n in 0..count {
        let message = NewChatMessage::try_from(ChatMessageRequest {
            chat_room_id: Some(room),
            sender_id: Some(SenderId(1)),
            sender_nickname: Some("bot".into()),
            content: Some(format!("message {n}")),
            message_type: Some(MessageType::Text),
        })
        .unwrap();
        store.append(message).await.unwrap();
    }
}

async fn public_room(store: &InMemoryRepository, name: &str) -> RoomId {
    store
        .create_room(NewRoom::public(RoomName::parse(name).unwrap()))
        .await
        .unwrap()
        .id
}

/// `GET path` with an optional bearer token: the status and the JSON body.
async fn get(app: &TestApp, path: &str, bearer: Option<&str>) -> (u16, Value, Option<String>) {
    let mut request = reqwest::Client::new().get(app.http(path));
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let link = response
        .headers()
        .get("link")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, response.json().await.unwrap(), link)
}

/// (lastSeq, lastReadSeq, unread) of `room` in `user`'s list (open mode).
async fn counts(app: &TestApp, user: i64, room: RoomId) -> (i64, i64, i64) {
    let (status, rooms, _) =
        get(app, &format!("/api/me/rooms?userId={user}&limit=200"), None).await;
    assert_eq!(status, 200, "{rooms}");
    let entry = rooms
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == room.get())
        .unwrap_or_else(|| panic!("room {room} is not in {rooms}"));
    let number = |field: &str| entry[field].as_i64().unwrap();
    (number("lastSeq"), number("lastReadSeq"), number("unread"))
}

#[tokio::test]
async fn after_a_thousand_messages_and_a_cursor_move_unread_is_exact_and_never_negative() {
    let f = fixture(test_settings()).await;
    let room = public_room(&f.store, "busy").await;
    let user = 7;
    messages(&f.store, room, 1_000).await;
    let marked = f
        .service
        .mark_read(&Caller::Open, SenderId(user), room, Seq(0))
        .await
        .unwrap();
    assert!(!marked.moved);
    assert_eq!(counts(&f.app, user, room).await, (1_000, 0, 1_000));

    let marked = f
        .service
        .mark_read(&Caller::Open, SenderId(user), room, Seq(600))
        .await
        .unwrap();
    assert_eq!((marked.last_read_seq, marked.moved), (Seq(600), true));
    assert_eq!(counts(&f.app, user, room).await, (1_000, 600, 400));

    // Backwards: nothing changes.
    let marked = f
        .service
        .mark_read(&Caller::Open, SenderId(user), room, Seq(100))
        .await
        .unwrap();
    assert_eq!((marked.last_read_seq, marked.moved), (Seq(600), false));
    assert_eq!(counts(&f.app, user, room).await, (1_000, 600, 400));

    messages(&f.store, room, 25).await;
    assert_eq!(counts(&f.app, user, room).await, (1_025, 600, 425));

    // Past the end: clamped, so unread is 0, never negative.
    f.service
        .mark_read(&Caller::Open, SenderId(user), room, Seq(5_000))
        .await
        .unwrap();
    assert_eq!(counts(&f.app, user, room).await, (1_025, 1_025, 0));

    let (status, entry, _) = get(&f.app, "/api/me/rooms?userId=7", None).await;
    assert_eq!(status, 200);
    let entry = &entry[0];
    assert_eq!(entry["name"], "busy");
    assert_eq!(entry["visibility"], "public");
    assert!(entry["createdAt"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn the_list_pages_by_room_id_with_a_link_to_the_next_page() {
    let f = fixture(test_settings()).await;
    let _unread_elsewhere = public_room(&f.store, "not mine").await;
    let mut mine = Vec::new();
    for n in 0..5 {
        let room = public_room(&f.store, &format!("room {n}")).await;
        f.service
            .mark_read(&Caller::Open, SenderId(9), room, Seq(0))
            .await
            .unwrap();
        mine.push(room.get());
    }
    let ids = |page: &Value| -> Vec<i64> {
        page.as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect()
    };
    let (status, first, link) = get(&f.app, "/api/me/rooms?userId=9&limit=2", None).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&first), mine[..2]);
    assert_eq!(
        link.as_deref(),
        Some(
            format!(
                "</api/me/rooms?afterId={}&limit=2&userId=9>; rel=\"next\"",
                mine[1]
            )
            .as_str()
        )
    );
    let (_, second, _) = get(
        &f.app,
        &format!("/api/me/rooms?userId=9&limit=2&afterId={}", mine[1]),
        None,
    )
    .await;
    assert_eq!(ids(&second), mine[2..4]);
    let (_, last, link) = get(
        &f.app,
        &format!("/api/me/rooms?userId=9&limit=2&afterId={}", mine[3]),
        None,
    )
    .await;
    assert_eq!(ids(&last), mine[4..]);
    assert_eq!(link, None, "a short page is the last");
    let (_, all, _) = get(&f.app, "/api/me/rooms?userId=9", None).await;
    assert_eq!(ids(&all), mine, "the default page holds them all");
}

#[tokio::test]
async fn open_mode_needs_a_user_id_and_bad_queries_are_400_problems() {
    let f = fixture(test_settings()).await;
    for (path, code) in [
        ("/api/me/rooms", "MISSING_USER_ID"),
        ("/api/me/rooms?userId=alice", "INVALID_QUERY"),
        ("/api/me/rooms?userId=1&limit=0", "INVALID_PAGINATION"),
        ("/api/me/rooms?userId=1&limit=201", "INVALID_PAGINATION"),
        ("/api/me/rooms?userId=1&afterId=x", "INVALID_QUERY"),
    ] {
        let response = reqwest::get(f.app.http(path)).await.unwrap();
        assert_eq!(response.status(), 400, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], code, "{path}: {problem}");
    }
    let (status, empty, _) = get(&f.app, "/api/me/rooms?userId=1", None).await;
    assert_eq!((status, empty), (200, json!([])));
}

#[tokio::test]
async fn with_tokens_the_list_is_the_callers_and_a_removed_member_loses_the_private_room() {
    let f = fixture(jwt_settings()).await;
    let alice = 7;
    let public = public_room(&f.store, "lobby").await;
    let owned = f
        .store
        .create_room(NewRoom {
            name: RoomName::parse("alice's").unwrap(),
            visibility: Visibility::Private,
            owner: Some(SenderId(alice)),
        })
        .await
        .unwrap()
        .id;
    let joined = f
        .store
        .create_room(NewRoom {
            name: RoomName::parse("team").unwrap(),
            visibility: Visibility::Private,
            owner: Some(SenderId(1)),
        })
        .await
        .unwrap()
        .id;
    f.store.add_member(joined, SenderId(alice)).await.unwrap();
    messages(&f.store, joined, 12).await;
    messages(&f.store, public, 3).await;
    f.service
        .mark_read(&signed_in(alice), SenderId(alice), public, Seq(2))
        .await
        .unwrap();
    f.service
        .mark_read(&signed_in(alice), SenderId(alice), joined, Seq(10))
        .await
        .unwrap();

    let alice_token = token(alice, false);
    let (status, rooms, _) = get(&f.app, "/api/me/rooms", Some(&alice_token)).await;
    assert_eq!(status, 200, "{rooms}");
    let summary: Vec<(i64, i64, i64)> = rooms
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_i64().unwrap(),
                r["lastReadSeq"].as_i64().unwrap(),
                r["unread"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (public.get(), 2, 1),
            (owned.get(), 0, 0),
            (joined.get(), 10, 2)
        ]
    );

    let (status, problem, _) = get(&f.app, "/api/me/rooms?userId=8", Some(&alice_token)).await;
    assert_eq!((status, &problem["code"]), (403, &json!("FORBIDDEN")));
    let (status, _, _) = get(&f.app, "/api/me/rooms?userId=7", Some(&token(99, true))).await;
    assert_eq!(status, 200, "an admin may read anyone's list");
    let (status, _, _) = get(&f.app, "/api/me/rooms", None).await;
    assert_eq!(status, 401);

    f.store
        .remove_member(joined, SenderId(alice))
        .await
        .unwrap();
    let (_, rooms, _) = get(&f.app, "/api/me/rooms", Some(&alice_token)).await;
    let ids: Vec<i64> = rooms
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![public.get(), owned.get()],
        "a removed member no longer sees {joined}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_a_burst_of_cursor_moves_is_batched_and_the_list_is_exact() {
    let database = chat_test_support::postgres::fresh_database().await;
    let store = Arc::new(
        chat_adapters_postgres::PostgresRepository::connect(
            chat_adapters_postgres::PostgresConfig::new(database.url()),
        )
        .await
        .unwrap(),
    );
    let bus = Arc::new(InMemoryBus::new());
    let adapters = Adapters {
        repository: store.clone(),
        members: store.clone(),
        cursors: store.clone(),
        bus: bus.clone(),
    };
    let app = spawn_app_with(adapters, test_settings()).await;
    let service =
        ChatService::new(store.clone(), store.clone(), bus).with_read_cursors(store.clone());
    let room = store
        .create_room(NewRoom::public(RoomName::parse("durable").unwrap()))
        .await
        .unwrap()
        .id;
    let appends = (0..1_000).map(|n| {
        store.append(
            NewChatMessage::try_from(ChatMessageRequest {
                chat_room_id: Some(room),
                sender_id: Some(SenderId(1)),
                sender_nickname: Some("bot".into()),
                content: Some(format!("message {n}")),
                message_type: Some(MessageType::Text),
            })
            .unwrap(),
        )
    });
    for stored in futures_util::future::join_all(appends).await {
        stored.unwrap();
    }
    let before = store.cursor_writer_counts();
    // 100 users read concurrently, each sending two receipts (one reordered, lower).
    let receipts = (0..200).map(|n| {
        let user = SenderId(100 + n / 2);
        let seq = if n % 2 == 0 { Seq(700) } else { Seq(300) };
        let service = &service;
        async move { service.mark_read(&Caller::Open, user, room, seq).await }
    });
    for marked in futures_util::future::join_all(receipts).await {
        assert!(marked.unwrap().last_read_seq <= Seq(700));
    }
    let statements = store.cursor_writer_counts().statements - before.statements;
    assert!(statements < 50, "200 receipts took {statements} statements");
    for user in [100, 150, 199] {
        assert_eq!(counts(&app, user, room).await, (1_000, 700, 300));
    }
}
