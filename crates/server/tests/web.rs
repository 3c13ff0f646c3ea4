//! The chat page as a browser fetches it from the real server: `/` and `/index.html` answer
//! the page with its test hooks, the script and style come with their types, everything
//! carries the cache and security headers, a current ETag gets a 304, and the page needs no
//! token even in jwt mode (it asks for one itself). The page in a real browser is
//! tests/browser.rs.

mod support;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, IF_NONE_MATCH};

const HOOKS: [&str; 11] = [
    "nickname-input",
    "token-input",
    "login-submit",
    "room-list",
    "room-create-name",
    "room-create-submit",
    "message-list",
    "message-input",
    "message-send",
    "connection-status",
    "error-banner",
];

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn the_page_is_served_at_the_root_with_its_hooks_and_a_strict_policy() {
    let app = support::spawn_app().await;
    for path in ["/", "/index.html"] {
        let response = reqwest::get(app.http(path)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers().clone();
        assert_eq!(header(&headers, "content-type"), "text/html; charset=utf-8");
        assert_eq!(header(&headers, "cache-control"), "no-cache");
        assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
        assert_eq!(header(&headers, "referrer-policy"), "no-referrer");
        let policy = header(&headers, "content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            &format!("connect-src 'self' ws://{0} wss://{0}", app.addr),
        ] {
            assert!(policy.contains(directive), "{directive} not in {policy}");
        }
        assert!(!policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"));
        let page = response.text().await.unwrap();
        for hook in HOOKS {
            assert!(
                page.contains(&format!("data-testid=\"{hook}\"")),
                "{path} lacks data-testid={hook}"
            );
        }
        assert!(page.contains("<script src=\"/app.js\" defer></script>"));
        // Nothing from elsewhere: the page must work offline.
        assert!(!page.contains("http://") && !page.contains("https://"));
    }
}

#[tokio::test]
async fn the_script_and_style_come_with_their_types_and_revalidate_to_304() {
    let app = support::spawn_app().await;
    let client = reqwest::Client::new();
    for (path, content_type, marker) in [
        (
            "/app.js",
            "text/javascript; charset=utf-8",
            "/app/chat.sendMessage",
        ),
        (
            "/app.css",
            "text/css; charset=utf-8",
            "[data-state=connected]",
        ),
    ] {
        let response = client.get(app.http(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers().clone();
        assert_eq!(header(&headers, "content-type"), content_type);
        assert_eq!(header(&headers, "cache-control"), "no-cache");
        let etag = header(&headers, "etag").to_owned();
        assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
        let body = response.text().await.unwrap();
        assert!(body.contains(marker), "{path} does not contain {marker}");

        let again = client
            .get(app.http(path))
            .header(IF_NONE_MATCH, &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(header(again.headers(), "etag"), etag);
        assert!(again.bytes().await.unwrap().is_empty());

        let stale = client
            .get(app.http(path))
            .header(IF_NONE_MATCH, "\"0000000000000000\"")
            .send()
            .await
            .unwrap();
        assert_eq!(stale.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn the_page_accepts_only_get_and_unknown_files_are_not_found() {
    let app = support::spawn_app().await;
    let client = reqwest::Client::new();
    let post = client.post(app.http("/")).send().await.unwrap();
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    for path in [
        "/app.js.map",
        "/dist/app.js",
        "/../Cargo.toml",
        "/favicon.ico",
    ] {
        let response = client.get(app.http(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

/// The page learns the mode from an unauthenticated room listing (no endpoint names it):
/// 200 in open mode, 401 in jwt mode, where the page itself still needs no token.
#[tokio::test]
async fn in_jwt_mode_the_page_needs_no_token_and_the_room_listing_tells_it_one_is_needed() {
    let open = support::spawn_app().await;
    let listing = reqwest::get(open.http("/api/chatrooms?limit=1"))
        .await
        .unwrap();
    assert_eq!(listing.status(), StatusCode::OK);

    let mut settings = support::test_settings();
    settings.jwt_secret = Some("a-test-secret-that-is-long-enough-for-hs256".to_owned());
    let jwt = support::spawn_app_with(chat_server::Adapters::in_memory(), settings).await;
    let page = reqwest::get(jwt.http("/")).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let listing = reqwest::get(jwt.http("/api/chatrooms?limit=1"))
        .await
        .unwrap();
    assert_eq!(listing.status(), StatusCode::UNAUTHORIZED);
}
