//! The chat page at `/`: the bundle in `web/dist` (built from `web/src` by `web/build.mjs`,
//! committed, and checked against its sources by `web/check-bundle`) compiled into the
//! binary, so `cargo run` serves it on a machine without npm.
//!
//! **Caching.** The asset names are fixed (`/app.js`, `/app.css`), so every answer says
//! `Cache-Control: no-cache` and carries a strong `ETag`, a hash of its bytes taken at
//! compile time: a browser asks again on each load and gets an empty 304 while the binary is
//! the same, and the new page from the first upgraded instance that answers. Content-hashed
//! names served as `immutable` would save that round trip, but the names would then have to
//! reach this file from the build; for a page of about 50 KB the 304 costs next to nothing.
//! During a rolling update two instances may answer one page load with different versions;
//! the page has no version coupling between its files beyond both coming from one build, and
//! a reload fixes it.
//!
//! **Content-Security-Policy.** The page runs only its own script and style (no inline code,
//! nothing from another origin: the machine may be offline and nothing else is needed),
//! talks only to its own origin over HTTP and WebSocket, and may not be framed.

use std::fmt::Write as _;

use warp::Filter;
use warp::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, HeaderMap, HeaderValue,
    IF_NONE_MATCH, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use warp::http::uri::Authority;
use warp::http::{Response as HttpResponse, StatusCode};
use warp::reply::Response;

/// One file of the bundle.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    /// The strong validator: FNV-1a of `body`, computed by the compiler.
    hash: u64,
}

impl Asset {
    const fn new(body: &'static [u8], content_type: &'static str) -> Self {
        Self {
            body,
            content_type,
            hash: fnv1a(body),
        }
    }

    fn etag(&self) -> String {
        format!("\"{:016x}\"", self.hash)
    }
}

static INDEX: Asset = Asset::new(
    include_bytes!("../../../../web/dist/index.html"),
    "text/html; charset=utf-8",
);
static SCRIPT: Asset = Asset::new(
    include_bytes!("../../../../web/dist/app.js"),
    "text/javascript; charset=utf-8",
);
static STYLESHEET: Asset = Asset::new(
    include_bytes!("../../../../web/dist/app.css"),
    "text/css; charset=utf-8",
);

/// 64-bit FNV-1a: not for security, only to tell one build of a file from another.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

/// `GET /`, `/index.html`, `/app.js` and `/app.css`.
pub(crate) fn routes() -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let request = warp::get()
        .and(warp::host::optional())
        .and(warp::header::headers_cloned());
    let root = warp::path::end().and(request).map(index);
    let index_html = warp::path!("index.html").and(request).map(index_html);
    let script = warp::path!("app.js").and(request).map(script);
    let stylesheet = warp::path!("app.css").and(request).map(stylesheet);
    root.or(index_html)
        .unify()
        .or(script)
        .unify()
        .or(stylesheet)
        .unify()
}

/// The chat page.
#[utoipa::path(
    get,
    path = "/",
    tag = "page",
    responses(
        (status = 200, description = "The chat page (HTML); its script and style are /app.js and /app.css", content_type = "text/html", body = String,
            headers(
                ("cache-control" = String, description = "`no-cache`: revalidate with the ETag on every load"),
                ("etag" = String, description = "A strong validator of this build of the file"),
                ("content-security-policy" = String, description = "Only this origin's script, style and connections; no framing"),
            )),
        (status = 304, description = "Not modified: the `If-None-Match` ETag is this build's",
            headers(("etag" = String, description = "The current validator"))),
    )
)]
pub(crate) fn index(host: Option<Authority>, request: HeaderMap) -> Response {
    serve(&INDEX, host.as_ref(), &request)
}

/// The chat page, under the name servers conventionally give it.
#[utoipa::path(
    get,
    path = "/index.html",
    tag = "page",
    responses(
        (status = 200, description = "The chat page (HTML), as at /", content_type = "text/html", body = String,
            headers(
                ("cache-control" = String, description = "`no-cache`: revalidate with the ETag on every load"),
                ("etag" = String, description = "A strong validator of this build of the file"),
                ("content-security-policy" = String, description = "Only this origin's script, style and connections; no framing"),
            )),
        (status = 304, description = "Not modified: the `If-None-Match` ETag is this build's",
            headers(("etag" = String, description = "The current validator"))),
    )
)]
pub(crate) fn index_html(host: Option<Authority>, request: HeaderMap) -> Response {
    serve(&INDEX, host.as_ref(), &request)
}

/// The chat page's script: the page's code and `@stomp/stompjs`, minified.
#[utoipa::path(
    get,
    path = "/app.js",
    tag = "page",
    responses(
        (status = 200, description = "JavaScript", content_type = "text/javascript", body = String,
            headers(
                ("cache-control" = String, description = "`no-cache`: revalidate with the ETag on every load"),
                ("etag" = String, description = "A strong validator of this build of the file"),
            )),
        (status = 304, description = "Not modified: the `If-None-Match` ETag is this build's",
            headers(("etag" = String, description = "The current validator"))),
    )
)]
pub(crate) fn script(host: Option<Authority>, request: HeaderMap) -> Response {
    serve(&SCRIPT, host.as_ref(), &request)
}

/// The chat page's style sheet.
#[utoipa::path(
    get,
    path = "/app.css",
    tag = "page",
    responses(
        (status = 200, description = "CSS", content_type = "text/css", body = String,
            headers(
                ("cache-control" = String, description = "`no-cache`: revalidate with the ETag on every load"),
                ("etag" = String, description = "A strong validator of this build of the file"),
            )),
        (status = 304, description = "Not modified: the `If-None-Match` ETag is this build's",
            headers(("etag" = String, description = "The current validator"))),
    )
)]
pub(crate) fn stylesheet(host: Option<Authority>, request: HeaderMap) -> Response {
    serve(&STYLESHEET, host.as_ref(), &request)
}

fn serve(asset: &'static Asset, host: Option<&Authority>, request: &HeaderMap) -> Response {
    let etag = asset.etag();
    let fresh = request
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| matches_etag(value, &etag));
    let builder = HttpResponse::builder()
        .header(CACHE_CONTROL, "no-cache")
        .header(ETAG, &etag)
        .header(X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(REFERRER_POLICY, "no-referrer")
        .header(CONTENT_SECURITY_POLICY, content_security_policy(host));
    let response = if fresh {
        let empty: &'static [u8] = &[];
        builder.status(StatusCode::NOT_MODIFIED).body(empty.into())
    } else {
        builder
            .status(StatusCode::OK)
            .header(CONTENT_TYPE, HeaderValue::from_static(asset.content_type))
            .body(asset.body.into())
    };
    response.expect("static headers and a validated host make a valid response")
}

/// Whether an `If-None-Match` value (a list of ETags, or `*`) names `etag`. The weak form
/// counts too: `If-None-Match` compares weakly (RFC 9110, 13.1.2).
fn matches_etag(header: &str, etag: &str) -> bool {
    header.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

/// The page's policy. `connect-src 'self'` covers `ws:`/`wss:` of the page's own host in
/// CSP Level 3 browsers; older ones (Safari before 15.4) need the WebSocket origins spelled
/// out, so they are added from the request's host when it is a plain host name or address.
fn content_security_policy(host: Option<&Authority>) -> String {
    let mut connect = String::from("'self'");
    let plain = |authority: &&Authority| {
        let text = authority.as_str();
        !text.is_empty()
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
    };
    if let Some(authority) = host.filter(plain) {
        let _ = write!(connect, " ws://{authority} wss://{authority}");
    }
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src {connect}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_carries_the_hooks_tests_rely_on() {
        let page = std::str::from_utf8(INDEX.body).unwrap();
        for hook in [
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
        ] {
            assert!(
                page.contains(&format!("data-testid=\"{hook}\"")),
                "no {hook}"
            );
        }
        assert!(page.contains("src=\"/app.js\"") && page.contains("href=\"/app.css\""));
    }

    #[test]
    fn an_etag_is_matched_in_a_list_and_in_its_weak_form() {
        let etag = INDEX.etag();
        assert!(matches_etag(&etag, &etag));
        assert!(matches_etag(&format!("\"x\", W/{etag}"), &etag));
        assert!(matches_etag("*", &etag));
        assert!(!matches_etag("\"0000000000000000\"", &etag));
        assert_ne!(INDEX.etag(), SCRIPT.etag());
    }

    #[test]
    fn the_policy_names_the_websocket_origin_only_for_a_plain_host() {
        let plain: Authority = "chat.example.com:8443".parse().unwrap();
        let policy = content_security_policy(Some(&plain));
        assert!(policy.contains(
            "connect-src 'self' ws://chat.example.com:8443 wss://chat.example.com:8443;"
        ));
        let odd: Authority = "user@chat.example.com".parse().unwrap();
        assert!(content_security_policy(Some(&odd)).contains("connect-src 'self';"));
        assert!(content_security_policy(None).contains("script-src 'self';"));
    }
}
