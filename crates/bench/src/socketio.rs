//! Engine.IO v4 / Socket.IO v5 packets over a WebSocket, sans I/O: text in, packets out,
//! packets in, text out. What the generator needs to drive a Socket.IO server (the peer in
//! `scripts/peers/socketio/`) with the same load and accounting as a STOMP server.
//!
//! On the WebSocket transport every text message is exactly one Engine.IO packet: a type
//! digit (`0` open, `1` close, `2` ping, `3` pong, `4` message, `5` upgrade, `6` noop) and
//! its payload. A message packet carries one Socket.IO packet: a type digit (`0` connect,
//! `1` disconnect, `2` event, `3` ack, `4` connect error, `5`/`6` binary event/ack), an
//! optional `/namespace,`, an optional ack id and the JSON data. So `42["send",{..}]` is an
//! event, `4217["join","r"]` the same asking for ack 17, and `4317[{..}]` that ack.
//! Binary packets (attachments in separate WebSocket frames) are not supported: the bench
//! sends and expects text only.

use std::borrow::Cow;

use serde::Deserialize;

/// The path and query a Socket.IO server answers WebSocket clients on.
pub const ENDPOINT_PATH: &str = "/socket.io/?EIO=4&transport=websocket";

/// The Engine.IO pong that answers a server ping without payload.
pub const PONG: &str = "3";

/// The handshake the server sends first (`0{...}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Handshake {
    /// Engine.IO session id.
    pub sid: String,
    /// Milliseconds between the server's pings.
    pub ping_interval: u64,
    /// Milliseconds the server waits for the pong before closing.
    pub ping_timeout: u64,
    /// Largest packet the server accepts, in bytes (absent on old servers).
    #[serde(default)]
    pub max_payload: Option<u64>,
}

/// One Engine.IO packet as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnginePacket<'a> {
    /// The handshake.
    Open(Handshake),
    /// The server ends the session.
    Close,
    /// A heart-beat the client must answer with a pong carrying the same payload.
    Ping(&'a str),
    /// An answer to a client ping (the bench never sends one).
    Pong(&'a str),
    /// A Socket.IO packet.
    Message(SocketPacket<'a>),
    /// Transport upgrade (polling only; never seen on a WebSocket-only session).
    Upgrade,
    /// Nothing (polling only).
    Noop,
}

/// Socket.IO packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// Namespace connected (server) or connect request (client).
    Connect,
    /// Namespace disconnected.
    Disconnect,
    /// An event: `["name", args...]`.
    Event,
    /// The answer to an event sent with an id: `[args...]`.
    Ack,
    /// The server refused the namespace connection: `{"message": ...}`.
    ConnectError,
    /// An event with binary attachments.
    BinaryEvent,
    /// An ack with binary attachments.
    BinaryAck,
}

impl PacketKind {
    fn from_digit(digit: u8) -> Option<Self> {
        Some(match digit {
            b'0' => Self::Connect,
            b'1' => Self::Disconnect,
            b'2' => Self::Event,
            b'3' => Self::Ack,
            b'4' => Self::ConnectError,
            b'5' => Self::BinaryEvent,
            b'6' => Self::BinaryAck,
            _ => return None,
        })
    }
}

/// One Socket.IO packet; `data` is its JSON text, unparsed (subscribers only look for the
/// bench marker in it, which needs no JSON parse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketPacket<'a> {
    /// Its type.
    pub kind: PacketKind,
    /// `/` for the main namespace.
    pub namespace: &'a str,
    /// The ack id: an event that wants an answer, or the ack of one.
    pub id: Option<u64>,
    /// The JSON payload, possibly empty.
    pub data: &'a str,
}

/// Why a WebSocket message is not a packet this client understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// An empty text message.
    #[error("empty Engine.IO packet")]
    Empty,
    /// The first character is not an Engine.IO packet type.
    #[error("unknown Engine.IO packet type {0:?}")]
    UnknownEngineType(char),
    /// The character after `4` is not a Socket.IO packet type.
    #[error("unknown Socket.IO packet type in {0:?}")]
    UnknownSocketType(String),
    /// The open packet's JSON is not a handshake.
    #[error("bad Engine.IO handshake: {0}")]
    BadHandshake(String),
    /// A namespace without its closing comma, or an ack id too large.
    #[error("malformed Socket.IO packet header in {0:?}")]
    BadHeader(String),
    /// Binary attachments follow in frames this client does not read.
    #[error("binary Socket.IO packets are not supported")]
    Binary,
    /// Event data that is not a JSON array starting with the event name.
    #[error("event data is not [\"name\", ...]: {0:?}")]
    BadEvent(String),
}

/// Decodes one WebSocket text message.
///
/// # Errors
/// [`DecodeError`] saying what does not fit the protocol.
pub fn decode(text: &str) -> Result<EnginePacket<'_>, DecodeError> {
    let kind = *text.as_bytes().first().ok_or(DecodeError::Empty)?;
    if !kind.is_ascii_digit() {
        // Checked before slicing: a non-ASCII first byte is not a char boundary after it.
        return Err(DecodeError::UnknownEngineType(char::from(kind)));
    }
    let payload = &text[1..];
    Ok(match kind {
        b'0' => EnginePacket::Open(
            serde_json::from_str(payload)
                .map_err(|e| DecodeError::BadHandshake(format!("{e}: {payload}")))?,
        ),
        b'1' => EnginePacket::Close,
        b'2' => EnginePacket::Ping(payload),
        b'3' => EnginePacket::Pong(payload),
        b'4' => EnginePacket::Message(decode_socket_packet(payload)?),
        b'5' => EnginePacket::Upgrade,
        b'6' => EnginePacket::Noop,
        other => return Err(DecodeError::UnknownEngineType(char::from(other))),
    })
}

fn decode_socket_packet(text: &str) -> Result<SocketPacket<'_>, DecodeError> {
    let kind = text
        .as_bytes()
        .first()
        .and_then(|digit| PacketKind::from_digit(*digit))
        .ok_or_else(|| DecodeError::UnknownSocketType(text.to_owned()))?;
    if matches!(kind, PacketKind::BinaryEvent | PacketKind::BinaryAck) {
        return Err(DecodeError::Binary);
    }
    let mut rest = &text[1..];
    let bad_header = || DecodeError::BadHeader(text.to_owned());
    let namespace = if rest.starts_with('/') {
        let comma = rest.find(',');
        // A namespace packet without data may end without the comma (`40/admin`).
        let end = comma.unwrap_or(rest.len());
        let namespace = &rest[..end];
        rest = comma.map_or("", |comma| &rest[comma + 1..]);
        if namespace.contains(['[', '{', '"']) {
            return Err(bad_header());
        }
        namespace
    } else {
        "/"
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = if digits == 0 {
        None
    } else {
        Some(rest[..digits].parse::<u64>().map_err(|_| bad_header())?)
    };
    Ok(SocketPacket {
        kind,
        namespace,
        id,
        data: &rest[digits..],
    })
}

/// An event's name and the JSON text of its arguments (without the brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    /// The event name.
    pub name: Cow<'a, str>,
    /// The arguments as comma-separated JSON values; empty for none.
    pub args: &'a str,
}

/// Splits event data `["name", args...]` without parsing the arguments.
///
/// # Errors
/// [`DecodeError::BadEvent`] if the data is not a JSON array opening with a string.
pub fn split_event(data: &str) -> Result<Event<'_>, DecodeError> {
    let bad = || DecodeError::BadEvent(data.chars().take(80).collect());
    let inner = data
        .trim()
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .ok_or_else(bad)?
        .trim_start();
    if !inner.starts_with('"') {
        return Err(bad());
    }
    let end = closing_quote(inner).ok_or_else(bad)?;
    let quoted = &inner[..=end];
    let name = if quoted.contains('\\') {
        Cow::Owned(serde_json::from_str::<String>(quoted).map_err(|_| bad())?)
    } else {
        Cow::Borrowed(&quoted[1..quoted.len() - 1])
    };
    let after = inner[end + 1..].trim_start();
    let args = if after.is_empty() {
        after
    } else {
        after.strip_prefix(',').ok_or_else(bad)?.trim()
    };
    Ok(Event { name, args })
}

/// The index of the quote closing the JSON string that opens `text`.
fn closing_quote(text: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, byte) in text.bytes().enumerate().skip(1) {
        match byte {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'"' => return Some(i),
            _ => {}
        }
    }
    None
}

/// The client's request to join the main namespace (`40`).
#[must_use]
pub fn connect() -> &'static str {
    "40"
}

/// The pong answering a ping with `payload` (usually empty).
#[must_use]
pub fn pong(payload: &str) -> String {
    format!("3{payload}")
}

/// The client's disconnect from the main namespace (`41`).
#[must_use]
pub fn disconnect() -> &'static str {
    "41"
}

/// Writes the event `name` with `args` (comma-separated JSON values, already encoded) on
/// the main namespace, asking for an ack with `id` if given, into `out`.
pub fn write_event(out: &mut String, id: Option<u64>, name: &str, args: &str) {
    use std::fmt::Write;
    out.push_str("42");
    if let Some(id) = id {
        // Writing to a String cannot fail.
        let _ = write!(out, "{id}");
    }
    out.push('[');
    push_json_string(out, name);
    if !args.is_empty() {
        out.push(',');
        out.push_str(args);
    }
    out.push(']');
}

/// The event `name` with `args` as a new string (see [`write_event`]).
#[must_use]
pub fn event(id: Option<u64>, name: &str, args: &str) -> String {
    let mut out = String::with_capacity(8 + name.len() + args.len());
    write_event(&mut out, id, name, args);
    out
}

/// Appends `text` as a JSON string literal.
pub fn push_json_string(out: &mut String, text: &str) {
    // serde_json escapes exactly what JSON requires; a &str always serialises.
    out.push_str(&serde_json::to_string(text).unwrap_or_default());
}

/// A WebSocket URL for the Socket.IO endpoint of `url`: kept as given when it already
/// names `/socket.io/`, otherwise the Engine.IO path and query are appended
/// (`ws://host:port` → `ws://host:port/socket.io/?EIO=4&transport=websocket`).
#[must_use]
pub fn endpoint_url(url: &str) -> String {
    if url.contains("/socket.io/") {
        url.to_owned()
    } else {
        format!("{}{ENDPOINT_PATH}", url.trim_end_matches('/'))
    }
}

/// Whether an ack's arguments report success: the peer answers `{"ok":true,...}`, and a
/// refusal `{"ok":false,"error":...}`. Other servers may answer with anything, so only an
/// explicit `"ok":false` counts as a refusal.
#[must_use]
pub fn ack_is_refusal(data: &str) -> bool {
    let compact: String = data.chars().filter(|c| !c.is_whitespace()).collect();
    compact.contains("\"ok\":false")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_packet_is_the_handshake() {
        let open = r#"0{"sid":"JH1IeB8FGsaJVxrcAAAA","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
        assert_eq!(
            decode(open),
            Ok(EnginePacket::Open(Handshake {
                sid: "JH1IeB8FGsaJVxrcAAAA".into(),
                ping_interval: 25000,
                ping_timeout: 20000,
                max_payload: Some(1_000_000),
            }))
        );
        assert!(matches!(
            decode(r#"0{"sid":1}"#),
            Err(DecodeError::BadHandshake(_))
        ));
    }

    #[test]
    fn engine_io_control_packets_are_told_apart() {
        assert_eq!(decode("2"), Ok(EnginePacket::Ping("")));
        assert_eq!(decode("2probe"), Ok(EnginePacket::Ping("probe")));
        assert_eq!(decode("3"), Ok(EnginePacket::Pong("")));
        assert_eq!(decode("1"), Ok(EnginePacket::Close));
        assert_eq!(decode("5"), Ok(EnginePacket::Upgrade));
        assert_eq!(decode("6"), Ok(EnginePacket::Noop));
        assert_eq!(decode(""), Err(DecodeError::Empty));
        assert_eq!(decode("9"), Err(DecodeError::UnknownEngineType('9')));
        assert_eq!(decode("é"), Err(DecodeError::UnknownEngineType('\u{c3}')));
    }

    #[test]
    fn the_namespace_connect_reply_carries_the_socket_id() {
        let Ok(EnginePacket::Message(packet)) = decode(r#"40{"sid":"szZxA2JpO5DD5aRuAAAA"}"#)
        else {
            panic!("not a message packet");
        };
        assert_eq!(packet.kind, PacketKind::Connect);
        assert_eq!(packet.namespace, "/");
        assert_eq!(packet.id, None);
        assert_eq!(packet.data, r#"{"sid":"szZxA2JpO5DD5aRuAAAA"}"#);
    }

    #[test]
    fn an_ack_carries_its_id_and_data() {
        let Ok(EnginePacket::Message(packet)) = decode(r#"43123[{"ok":true,"room":"r1"}]"#) else {
            panic!("not a message packet");
        };
        assert_eq!(packet.kind, PacketKind::Ack);
        assert_eq!(packet.id, Some(123));
        assert_eq!(packet.data, r#"[{"ok":true,"room":"r1"}]"#);
        assert!(!ack_is_refusal(packet.data));
        assert!(ack_is_refusal(r#"[{"ok": false, "error":"no"}]"#));
    }

    #[test]
    fn a_namespace_and_an_id_are_read_before_the_data() {
        let Ok(EnginePacket::Message(packet)) = decode(r#"42/admin,7["hi",1]"#) else {
            panic!("not a message packet");
        };
        assert_eq!(
            (packet.kind, packet.namespace, packet.id, packet.data),
            (PacketKind::Event, "/admin", Some(7), r#"["hi",1]"#)
        );
        let Ok(EnginePacket::Message(packet)) = decode("41/admin") else {
            panic!("not a message packet");
        };
        assert_eq!(
            (packet.kind, packet.namespace, packet.data),
            (PacketKind::Disconnect, "/admin", "")
        );
    }

    #[test]
    fn malformed_socket_packets_are_refused() {
        assert!(matches!(
            decode("4"),
            Err(DecodeError::UnknownSocketType(_))
        ));
        assert!(matches!(
            decode("4x[]"),
            Err(DecodeError::UnknownSocketType(_))
        ));
        assert_eq!(
            decode(r#"451-["x",{"_placeholder":true,"num":0}]"#),
            Err(DecodeError::Binary)
        );
        // An id beyond u64.
        assert!(matches!(
            decode(r#"4299999999999999999999["x"]"#),
            Err(DecodeError::BadHeader(_))
        ));
    }

    #[test]
    fn an_event_is_split_into_its_name_and_raw_arguments() {
        let data = r#"["message",{"room":"r1","content":"cb:1:2:3;xx"}]"#;
        assert_eq!(
            split_event(data),
            Ok(Event {
                name: Cow::Borrowed("message"),
                args: r#"{"room":"r1","content":"cb:1:2:3;xx"}"#,
            })
        );
        assert_eq!(
            split_event(r#"[ "tick" ]"#).map(|e| (e.name.into_owned(), e.args)),
            Ok(("tick".to_owned(), ""))
        );
        // An escaped quote in the name does not end it.
        assert_eq!(
            split_event(r#"["a\"b",1,2]"#).map(|e| (e.name.into_owned(), e.args)),
            Ok((r#"a"b"#.to_owned(), "1,2"))
        );
        for bad in ["", "[]", "[1]", r#"{"a":1}"#, r#"["open"#, r#"["a" 1]"#] {
            assert!(split_event(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn events_are_encoded_with_an_optional_ack_id() {
        assert_eq!(event(None, "join", r#""r1""#), r#"42["join","r1"]"#);
        assert_eq!(event(Some(17), "join", r#""r1""#), r#"4217["join","r1"]"#);
        assert_eq!(event(None, "ping", ""), r#"42["ping"]"#);
        // What is encoded decodes to the same event.
        let wire = event(Some(5), "send", r#"{"room":"a","content":"x"}"#);
        let Ok(EnginePacket::Message(packet)) = decode(&wire) else {
            panic!("{wire}");
        };
        assert_eq!((packet.kind, packet.id), (PacketKind::Event, Some(5)));
        let event = split_event(packet.data).unwrap();
        assert_eq!(event.name, "send");
        assert_eq!(event.args, r#"{"room":"a","content":"x"}"#);
    }

    #[test]
    fn strings_are_escaped_as_json() {
        let mut out = String::new();
        push_json_string(&mut out, "a\"b\\c\n");
        assert_eq!(out, r#""a\"b\\c\n""#);
        assert_eq!(serde_json::from_str::<String>(&out).unwrap(), "a\"b\\c\n");
    }

    #[test]
    fn control_packets_the_client_sends() {
        assert_eq!(connect(), "40");
        assert_eq!(disconnect(), "41");
        assert_eq!(pong(""), PONG);
        assert_eq!(pong("probe"), "3probe");
    }

    #[test]
    fn a_bare_server_address_gets_the_engine_io_path() {
        assert_eq!(
            endpoint_url("ws://127.0.0.1:18091"),
            "ws://127.0.0.1:18091/socket.io/?EIO=4&transport=websocket"
        );
        assert_eq!(
            endpoint_url("ws://127.0.0.1:18091/"),
            "ws://127.0.0.1:18091/socket.io/?EIO=4&transport=websocket"
        );
        let full = "ws://h:1/socket.io/?EIO=4&transport=websocket";
        assert_eq!(endpoint_url(full), full);
    }
}
