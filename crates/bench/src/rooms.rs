//! Room creation through chat-service's REST API (`POST /api/chatrooms`), over a bare
//! HTTP/1.1 request: one call per room at start-up does not justify an HTTP client stack in
//! a tool whose build should stay quick.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::BenchError;

/// `host:port` of a `ws://host:port/path` URL (the REST API listens on the same port).
///
/// # Errors
/// [`BenchError::InvalidUrl`] for anything but `ws://` with a host.
pub fn authority_of(ws_url: &str) -> Result<String, BenchError> {
    let invalid = |reason: &str| BenchError::InvalidUrl {
        url: ws_url.to_owned(),
        reason: reason.to_owned(),
    };
    let rest = ws_url
        .strip_prefix("ws://")
        .ok_or_else(|| invalid("chat-service mode needs a ws:// URL"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(invalid("no host"));
    }
    Ok(if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    })
}

/// Creates one room and returns its id; `token` (a JWT) goes in `Authorization: Bearer`
/// for a server in jwt mode.
///
/// # Errors
/// [`BenchError::CreateRoom`] with the status line or the I/O error.
pub async fn create_room(
    authority: &str,
    name: &str,
    token: Option<&str>,
) -> Result<i64, BenchError> {
    let url = format!("http://{authority}/api/chatrooms");
    let fail = |reason: String| BenchError::CreateRoom {
        url: url.clone(),
        reason,
    };
    let request = create_request(authority, name, token);
    let mut stream = TcpStream::connect(authority)
        .await
        .map_err(|e| fail(e.to_string()))?;
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| fail(e.to_string()))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .map_err(|e| fail(e.to_string()))?;
    parse_created_room(&response).map_err(fail)
}

/// The `POST /api/chatrooms` request for a room called `name`.
fn create_request(authority: &str, name: &str, token: Option<&str>) -> String {
    let body = serde_json::json!({ "name": name }).to_string();
    let authorization = token.map_or_else(String::new, |token| {
        format!("authorization: Bearer {token}\r\n")
    });
    format!(
        "POST /api/chatrooms HTTP/1.1\r\nhost: {authority}\r\ncontent-type: application/json\r\n\
         {authorization}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The `id` of a `201` response. The body is the room JSON; with `connection: close` it is
/// the rest of the stream, possibly chunked, so take the outermost `{…}`.
fn parse_created_room(response: &[u8]) -> Result<i64, String> {
    let text = String::from_utf8_lossy(response);
    let status_line = text.lines().next().unwrap_or_default();
    if !status_line.contains(" 201 ") {
        return Err(format!("expected 201 Created, got {status_line:?}: {text}"));
    }
    let (start, end) = text
        .find('{')
        .zip(text.rfind('}'))
        .ok_or_else(|| format!("no JSON body in {text:?}"))?;
    let room: serde_json::Value =
        serde_json::from_str(&text[start..=end]).map_err(|e| format!("bad JSON: {e}"))?;
    room["id"]
        .as_i64()
        .ok_or_else(|| format!("no numeric id in {room}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rest_authority_comes_from_the_websocket_url() {
        assert_eq!(
            authority_of("ws://127.0.0.1:8081/ws").unwrap(),
            "127.0.0.1:8081"
        );
        assert_eq!(authority_of("ws://localhost/ws").unwrap(), "localhost:80");
        assert!(authority_of("wss://x/ws").is_err());
    }

    #[test]
    fn a_created_room_id_is_read_from_a_plain_or_chunked_response() {
        let plain = b"HTTP/1.1 201 Created\r\ncontent-length: 20\r\n\r\n{\"id\":7,\"name\":\"a\"}";
        assert_eq!(parse_created_room(plain), Ok(7));
        let chunked = b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n14\r\n{\"id\":9,\"name\":\"a\"}\r\n0\r\n\r\n";
        assert_eq!(parse_created_room(chunked), Ok(9));
    }

    #[test]
    fn a_token_goes_in_a_bearer_authorization_header_of_the_request() {
        let request = create_request("127.0.0.1:8080", "bench-0", Some("aaa.bbb.ccc"));
        let (head, body) = request.split_once("\r\n\r\n").unwrap();
        let mut lines = head.split("\r\n");
        assert_eq!(lines.next(), Some("POST /api/chatrooms HTTP/1.1"));
        assert!(
            lines.any(|line| line == "authorization: Bearer aaa.bbb.ccc"),
            "{request}"
        );
        assert_eq!(body, r#"{"name":"bench-0"}"#);
        assert!(head.contains(&format!("content-length: {}\r\n", body.len())));

        let open = create_request("127.0.0.1:8080", "bench-0", None);
        assert!(
            !open.to_ascii_lowercase().contains("authorization"),
            "{open}"
        );
    }

    #[test]
    fn an_error_status_is_reported_with_its_status_line() {
        let refused = b"HTTP/1.1 503 Service Unavailable\r\n\r\n{}";
        assert!(parse_created_room(refused).unwrap_err().contains("503"));
    }
}
