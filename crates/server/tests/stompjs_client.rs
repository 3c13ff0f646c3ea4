//! The real `@stomp/stompjs` client (what the browser front ends use) against the real
//! server: the handshake, subprotocol, receipts, MESSAGE bodies and the errors queue as a
//! JavaScript client sees them. Needs Node.js and npm (installed on the project machines);
//! without them this test fails, it does not skip. The same client on the real
//! `sockjs-client` (what Spring front ends use) covers the SockJS endpoint.

mod support;

use std::path::Path;
use std::process::Command;

fn client_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/stompjs"))
}

fn install_client() {
    let modules = client_dir().join("node_modules");
    if modules.join("@stomp/stompjs").exists() && modules.join("sockjs-client").exists() {
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

/// The Node.js example in the README, exactly as printed there (only the server's address
/// is changed), against a fresh server whose first room is room 1, as in the README.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_node_example_runs_as_printed() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("the README is readable");
    let after_marker = readme
        .split_once("<!-- readme-node-example -->")
        .expect("the README marks its Node example")
        .1;
    let code = after_marker
        .split_once("```js\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("a js code block follows the marker")
        .0;
    assert!(code.contains("ws://localhost:8080/ws"), "{code}");
    let app = support::spawn_app().await;
    assert_eq!(app.create_room("lobby").await, 1, "the README uses room 1");
    let script = code.replace("localhost:8080", &app.addr.to_string());
    // Beside package.json, so that node finds @stomp/stompjs and ws.
    let file = client_dir().join(format!(".readme-example-{}.mjs", std::process::id()));
    std::fs::write(&file, script).unwrap();
    tokio::task::spawn_blocking(install_client).await.unwrap();
    let run = tokio::process::Command::new("node")
        .arg(&file)
        .current_dir(client_dir())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(30), run).await;
    std::fs::remove_file(&file).ok();
    let output = output
        .expect("the example ends by itself once it has heard its message")
        .expect("node is needed for this test (install Node.js)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("content: 'hello'"), "{stdout}");
    assert!(stdout.contains("seq: 1"), "{stdout}");
    assert!(stderr.is_empty(), "{stderr}");
    assert_eq!(app.history(1).await.len(), 1);
}

/// Runs sockjs.mjs (two clients, alice and bob) against `app` in `room` over `transports`
/// (`default`: SockJS's own choice); its stdout, after checking it succeeded.
async fn run_sockjs_clients(app: &support::TestApp, room: i64, transports: &str) -> String {
    tokio::task::spawn_blocking(install_client).await.unwrap();
    let run = tokio::process::Command::new("node")
        .arg("sockjs.mjs")
        .arg(app.addr.to_string())
        .arg(room.to_string())
        .arg(transports)
        .current_dir(client_dir())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(40), run)
        .await
        .expect("sockjs.mjs ends by itself")
        .expect("node is needed for this test (install Node.js)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "sockjs clients over {transports} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockjs_clients_pick_the_websocket_transport_and_chat() {
    let app = support::spawn_app().await;
    let room = app.create_room("sockjs-websocket").await;
    let stdout = run_sockjs_clients(&app, room, "default").await;
    assert!(
        stdout.contains("OK alice=websocket bob=websocket"),
        "{stdout}"
    );
    assert_eq!(app.history(room).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockjs_clients_chat_over_xhr_streaming_without_websocket() {
    let app = support::spawn_app().await;
    let room = app.create_room("sockjs-streaming").await;
    let stdout = run_sockjs_clients(&app, room, "xhr-streaming").await;
    assert!(
        stdout.contains("OK alice=xhr-streaming bob=xhr-streaming"),
        "{stdout}"
    );
    assert_eq!(app.history(room).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockjs_clients_chat_over_xhr_polling_without_websocket() {
    let app = support::spawn_app().await;
    let room = app.create_room("sockjs-polling").await;
    let stdout = run_sockjs_clients(&app, room, "xhr-polling").await;
    assert!(
        stdout.contains("OK alice=xhr-polling bob=xhr-polling"),
        "{stdout}"
    );
    assert_eq!(app.history(room).await.len(), 1);
}
