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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stompjs_connects_chats_and_hears_about_bad_messages() {
    tokio::task::spawn_blocking(install_client).await.unwrap();
    let app = support::spawn_app().await;
    let room = app.create_room("stompjs").await;
    let addr = app.addr.to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("chat.mjs")
            .arg(addr)
            .arg(room.to_string())
            .current_dir(client_dir())
            .output()
            .expect("node is needed for this test (install Node.js)")
    })
    .await
    .unwrap();
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
