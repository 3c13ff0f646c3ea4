//! The real `@stomp/stompjs` client (what the browser front ends use) against the real
//! server: the handshake, subprotocol, receipts, MESSAGE bodies and the errors queue as a
//! JavaScript client sees them. Needs Node.js and npm (installed on the project machines);
//! without them this test fails, it does not skip.

mod support;

use std::path::Path;
use std::process::Command;

fn client_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/stompjs"))
}

fn install_client() {
    if client_dir().join("node_modules/@stomp/stompjs").exists() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(client_dir())
        .status()
        .expect("npm is needed for this test (install Node.js and npm)");
    assert!(
        status.success(),
        "npm ci failed in {}",
        client_dir().display()
    );
}

/// Runs chat.mjs against `app` in `room`, with `token` as its CONNECT header if given.
async fn run_client(
    app: &support::TestApp,
    room: i64,
    token: Option<String>,
) -> std::process::Output {
    tokio::task::spawn_blocking(install_client).await.unwrap();
    let addr = app.addr.to_string();
    tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("chat.mjs")
            .arg(addr)
            .arg(room.to_string())
            .args(token)
            .current_dir(client_dir())
            .output()
            .expect("node is needed for this test (install Node.js)")
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stompjs_connects_chats_and_hears_about_bad_messages() {
    let app = support::spawn_app().await;
    let room = app.create_room("stompjs").await;
    let output = run_client(&app, room, None).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stompjs client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("OK version=1.2"), "{stdout}");
    assert_eq!(
        app.history(room).await.len(),
        2,
        "both good messages are stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stompjs_authenticates_with_connect_headers_in_jwt_mode() {
    let mut settings = support::test_settings();
    settings.jwt_secret = Some("a-test-secret-that-is-long-enough-for-hs256".to_owned());
    let token = chat_server::mint_token(
        &settings,
        &chat_server::TokenArgs {
            sub: 7,
            name: Some("alice".to_owned()),
            roles: Vec::new(),
            ttl: std::time::Duration::from_secs(300),
        },
    )
    .unwrap();
    let app = support::spawn_app_with(chat_server::Adapters::in_memory(), settings).await;
    let room = app
        .adapters
        .repository
        .create_room(chat_domain::NewRoom::public(
            chat_domain::RoomName::parse("stompjs").unwrap(),
        ))
        .await
        .unwrap()
        .id
        .get();
    let refused = run_client(&app, room, None).await;
    assert!(!refused.status.success(), "connected without a token");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("authentication required"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let output = run_client(&app, room, Some(token)).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stompjs client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stored = app
        .adapters
        .repository
        .history(
            chat_domain::RoomId(room),
            chat_domain::HistoryQuery::latest(chat_domain::HistoryLimit::DEFAULT),
        )
        .await
        .unwrap();
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|m| m.sender_id.get() == 7));
}
