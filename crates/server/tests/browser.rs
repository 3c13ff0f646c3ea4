//! The chat page in a real browser: web/tests/browser.mjs (Playwright's `playwright-core`
//! from npm, driving Debian's Chromium at /usr/bin/chromium, or `CHROMIUM`) against the
//! server started here on its in-memory default. alice and bob chat in one room, a
//! 5,000-character message is refused by the server and shown by the input, and a dropped
//! connection resumes without a gap or a duplicate; in jwt mode (web/tests/browser-jwt.mjs)
//! the page signs in with a token and sends as its user; web/tests/browser-presence.mjs:
//! alice, bob and carol see each other in the room's member list, alice sees "bob is
//! typing…", and the list drops whoever closes the page; web/tests/browser-unread.mjs: bob's
//! messages show as an unread badge on both of alice's pages, and reading them on one clears
//! the badge on the other (`/app/chat.read`, `/user/queue/read`); without WebSocket in the browser
//! (web/tests/browser-sockjs.mjs) it chats over SockJS's HTTP transports. On two real
//! instances behind nginx
//! (web/tests/browser-cluster.mjs), bob's page loses its instance to SIGTERM and to SIGKILL
//! while alice sends 50 messages, and shows every one once, in seq order. Needs Node.js, npm,
//! Chromium (`apt-get install chromium`) and nginx; without them this test fails, it does
//! not skip.

// Shared with drain.rs, which uses all of it.
#[allow(dead_code)]
#[path = "support/nginx.rs"]
mod nginx;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web")
}

/// `npm ci` in web/ unless its packages are there already (the lockfile pins them); once
/// per test binary, as two `npm ci` at once in one folder trip over each other.
fn install_packages() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(install_packages_now);
}

fn install_packages_now() {
    if web_dir().join("node_modules/playwright-core").exists() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(web_dir())
        .status()
        .expect("npm is needed for this test (install Node.js and npm)");
    assert!(status.success(), "npm ci failed in {}", web_dir().display());
}

fn chromium() -> String {
    let path = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        Path::new(&path).exists(),
        "no Chromium at {path}: install Debian's (apt-get install chromium) or set CHROMIUM"
    );
    path
}

/// Runs `node` in web/ with `args`, for at most three minutes.
async fn node(args: Vec<String>, env: &[(&str, &str)]) -> std::process::Output {
    let run = tokio::process::Command::new("node")
        .args(&args)
        .envs(env.iter().copied())
        .current_dir(web_dir())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .unwrap_or_else(|_| panic!("node {args:?} did not finish within 3 minutes"))
        .expect("node is needed for this test (install Node.js)")
}

fn report(output: &std::process::Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_chat_in_a_real_browser_and_a_dropped_connection_loses_nothing() {
    let chromium = chromium();
    tokio::task::spawn_blocking(install_packages).await.unwrap();
    let app = support::spawn_app().await;
    let args = vec!["tests/browser.mjs".to_owned(), app.http("")];
    let output = node(args, &[("CHROMIUM", &chromium)]).await;
    let report = report(&output);
    assert!(
        output.status.success(),
        "the browser test failed:\n{report}"
    );
    assert!(report.contains(" passed, 0 failed"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_jwt_mode_the_page_signs_in_with_a_token_and_sends_as_its_user() {
    let chromium = chromium();
    tokio::task::spawn_blocking(install_packages).await.unwrap();
    let mut settings = support::test_settings();
    settings.jwt_secret = Some("a-test-secret-that-is-long-enough-for-hs256".to_owned());
    let token = chat_server::mint_token(
        &settings,
        &chat_server::TokenArgs {
            sub: 7,
            name: Some("alice".to_owned()),
            roles: Vec::new(),
            ttl: Duration::from_secs(600),
        },
    )
    .unwrap();
    let app = support::spawn_app_with(chat_server::Adapters::in_memory(), settings).await;
    let args = vec!["tests/browser-jwt.mjs".to_owned(), app.http(""), token];
    let output = node(args, &[("CHROMIUM", &chromium)]).await;
    let report = report(&output);
    assert!(
        output.status.success(),
        "the jwt browser test failed:\n{report}"
    );
    assert!(report.contains(" passed, 0 failed"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_websocket_in_the_browser_the_page_chats_over_sockjs() {
    let chromium = chromium();
    tokio::task::spawn_blocking(install_packages).await.unwrap();
    let app = support::spawn_app().await;
    let args = vec!["tests/browser-sockjs.mjs".to_owned(), app.http("")];
    let output = node(args, &[("CHROMIUM", &chromium)]).await;
    let report = report(&output);
    assert!(
        output.status.success(),
        "the SockJS browser test failed:\n{report}"
    );
    assert!(report.contains(" passed, 0 failed"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_who_is_in_the_room_and_who_is_typing() {
    let chromium = chromium();
    tokio::task::spawn_blocking(install_packages).await.unwrap();
    let app = support::spawn_app().await;
    let args = vec!["tests/browser-presence.mjs".to_owned(), app.http("")];
    let output = node(args, &[("CHROMIUM", &chromium)]).await;
    let report = report(&output);
    assert!(
        output.status.success(),
        "the presence browser test failed:\n{report}"
    );
    assert!(report.contains(" passed, 0 failed"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_badges_follow_the_read_cursor_on_all_of_a_users_pages() {
    let chromium = chromium();
    tokio::task::spawn_blocking(install_packages).await.unwrap();
    let app = support::spawn_app().await;
    let args = vec!["tests/browser-unread.mjs".to_owned(), app.http("")];
    let output = node(args, &[("CHROMIUM", &chromium)]).await;
    let report = report(&output);
    assert!(
        output.status.success(),
        "the unread browser test failed:\n{report}"
    );
    assert!(report.contains(" passed, 0 failed"), "{report}");
}

#[tokio::test]
async fn the_page_orders_and_deduplicates_by_seq() {
    let args = vec!["--test".to_owned(), "tests/timeline.test.mjs".to_owned()];
    let output = node(args, &[]).await;
    assert!(output.status.success(), "{}", report(&output));
}

/// Two `chat-server` processes on one PostgreSQL and one Redis behind nginx; the script
/// signals the instance bob's page is on.
async fn bob_loses_his_instance(signal: &str) {
    let chromium = chromium();
    tokio::task::spawn_blocking(install_packages).await.unwrap();
    let database = chat_test_support::postgres::fresh_database().await;
    let redis = chat_test_support::redis::redis_url().await;
    let channel = chat_test_support::redis::unique_channel("chat-browser");
    let env = [
        ("DATABASE_URL", database.url()),
        ("REDIS_URL", redis.url()),
        ("CHAT_REDIS_CHANNEL", channel.as_str()),
    ];
    let first = support::process::ServerProcess::start(&env).await;
    let second = support::process::ServerProcess::start(&env).await;
    let balancer = nginx::LoadBalancer::start(&[first.addr, second.addr]).await;
    let args = vec![
        "tests/browser-cluster.mjs".to_owned(),
        balancer.http(""),
        format!("{}={}", first.addr.port(), first.pid()),
        format!("{}={}", second.addr.port(), second.pid()),
        signal.to_owned(),
    ];
    let output = node(args, &[("CHROMIUM", &chromium)]).await;
    let report = report(&output);
    assert!(
        output.status.success(),
        "the cluster browser test (SIG{signal}) failed:\n{report}"
    );
    assert!(report.contains(" passed, 0 failed"), "{report}");
    println!("{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_whose_instance_drains_shows_every_message_once_from_the_other() {
    bob_loses_his_instance("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_whose_instance_is_killed_shows_every_message_once_from_the_other() {
    bob_loses_his_instance("KILL").await;
}
