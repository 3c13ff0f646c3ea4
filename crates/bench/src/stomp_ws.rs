//! A minimal STOMP 1.2 client over WebSocket for the generator: connect (optionally from a
//! chosen source address), CONNECT without heart-beats, SUBSCRIBE with a receipt, then hand
//! the socket halves to the caller's read and write loops. Framing is `chat-stomp`'s
//! sans-I/O codec; tokio-tungstenite only moves bytes.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use chat_stomp::{Command, Decoder, Frame, Item, Limits, encode};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::BenchError;

/// The WebSocket over a plain TCP stream (benchmarks run without TLS).
pub type Socket = WebSocketStream<TcpStream>;

/// How to open one connection.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// STOMP `login`.
    pub login: Option<String>,
    /// STOMP `passcode`.
    pub passcode: Option<String>,
    /// STOMP `host` (virtual host).
    pub vhost: String,
    /// A JWT for servers in jwt mode, sent as the CONNECT header `Authorization: Bearer
    /// <token>`. Per connection: the shared options are cloned and this set for each one.
    pub token: Option<String>,
    /// Bind to this local address before connecting (spreads ephemeral ports over several
    /// loopback addresses in idle mode).
    pub source_ip: Option<IpAddr>,
    /// WebSocket buffer sizes: small for idle and subscriber sockets, a write buffer for
    /// publishers that batch their sends.
    pub websocket: WebSocketConfig,
    /// Limit for TCP + WebSocket + CONNECT (+ SUBSCRIBE).
    pub timeout: Duration,
}

impl ConnectOptions {
    /// Buffers for a socket that mostly reads: tungstenite's defaults reserve 128 KiB each
    /// way per connection, which would make the generator, not the server, run out of
    /// memory first in idle mode.
    #[must_use]
    pub fn reader_config() -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(8 * 1024)
            .write_buffer_size(0)
            .max_write_buffer_size(1024 * 1024)
    }

    /// Buffers for a publisher: frames are fed and flushed once per pacing tick.
    #[must_use]
    pub fn writer_config() -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(8 * 1024)
            .write_buffer_size(64 * 1024)
    }
}

/// A connected STOMP session.
#[derive(Debug)]
pub struct StompConnection {
    /// The WebSocket.
    pub socket: Socket,
    /// Bytes received but not yet decoded into frames.
    pub decoder: Decoder,
    /// The endpoint, for error messages.
    pub url: String,
    scratch: Vec<u8>,
}

/// Decoder limits for what servers send: chat-service batches frames into one WebSocket
/// message, but each frame is small; allow big ones anyway so a large `--size` works.
#[must_use]
pub fn decoder() -> Decoder {
    Decoder::new(Limits {
        max_frame_bytes: 16 * 1024 * 1024,
        ..Limits::default()
    })
}

impl StompConnection {
    /// Opens the WebSocket (offering `v12.stomp`) and completes CONNECT → CONNECTED with
    /// heart-beats off, so neither side has timers to keep.
    ///
    /// # Errors
    /// Any failure of TCP, the handshake or CONNECT, or the timeout.
    pub async fn open(url: &str, options: &ConnectOptions) -> Result<Self, BenchError> {
        let open = async {
            let mut connection = Self::open_websocket(url, options).await?;
            connection.connect(options).await?;
            Ok(connection)
        };
        tokio::time::timeout(options.timeout, open)
            .await
            .map_err(|_| BenchError::Timeout {
                what: format!("connecting to {url}"),
                secs: options.timeout.as_secs_f64(),
            })?
    }

    async fn open_websocket(url: &str, options: &ConnectOptions) -> Result<Self, BenchError> {
        let socket = open_websocket(url, options, Some("v12.stomp")).await?;
        Ok(Self {
            socket,
            decoder: decoder(),
            url: url.to_owned(),
            scratch: Vec::new(),
        })
    }

    async fn connect(&mut self, options: &ConnectOptions) -> Result<(), BenchError> {
        self.send_frame(&connect_frame(options)).await?;
        let reply = self.next_frame().await?;
        match reply.command {
            Command::Connected => Ok(()),
            _ => Err(self.unexpected("CONNECTED", &reply)),
        }
    }

    /// SUBSCRIBE and wait for its RECEIPT, so the subscription is live on return.
    ///
    /// # Errors
    /// An ERROR frame, a closed socket, or an application error instead of the receipt.
    pub async fn subscribe(&mut self, id: &str, destination: &str) -> Result<(), BenchError> {
        let receipt = format!("sub-{id}");
        let frame = Frame::new(Command::Subscribe)
            .with_header("id", id)
            .with_header("destination", destination)
            .with_header("ack", "auto")
            .with_header("receipt", receipt.as_str());
        self.send_frame(&frame).await?;
        loop {
            let reply = self.next_frame().await?;
            match reply.command {
                Command::Receipt if reply.header("receipt-id") == Some(receipt.as_str()) => {
                    return Ok(());
                }
                // chat-service reports a refused SUBSCRIBE as a MESSAGE on the errors queue.
                Command::Message if reply.header("destination") == Some("/user/queue/errors") => {
                    return Err(self.unexpected("RECEIPT", &reply));
                }
                Command::Error => return Err(self.unexpected("RECEIPT", &reply)),
                _ => {}
            }
        }
    }

    /// Encodes and sends one frame as one text message.
    ///
    /// # Errors
    /// The socket is closed or broken.
    pub async fn send_frame(&mut self, frame: &Frame) -> Result<(), BenchError> {
        self.scratch.clear();
        encode(frame, &mut self.scratch);
        let text = String::from_utf8_lossy(&self.scratch).into_owned();
        self.socket
            .send(Message::text(text))
            .await
            .map_err(|e| self.stomp_error(format!("cannot send: {e}")))
    }

    /// The next frame, skipping heart-beats.
    ///
    /// # Errors
    /// The socket closed, broke, or carried something that is not STOMP.
    pub async fn next_frame(&mut self) -> Result<Frame, BenchError> {
        loop {
            match self.decoder.next_item() {
                Ok(Some(Item::Frame(frame))) => return Ok(frame),
                Ok(Some(Item::HeartBeat)) => continue,
                Ok(None) => {}
                Err(e) => return Err(self.stomp_error(format!("malformed frame: {e}"))),
            }
            match self.socket.next().await {
                Some(Ok(Message::Text(text))) => self.decoder.feed(text.as_bytes()),
                Some(Ok(Message::Binary(bytes))) => self.decoder.feed(&bytes),
                Some(Ok(Message::Close(_))) | None => {
                    return Err(self.stomp_error("connection closed by the server".into()));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(self.stomp_error(format!("read failed: {e}"))),
            }
        }
    }

    fn unexpected(&self, wanted: &str, got: &Frame) -> BenchError {
        let detail = got
            .header("message")
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&got.body).into_owned());
        self.stomp_error(format!(
            "expected {wanted}, got {}: {detail}",
            got.command.as_str()
        ))
    }

    fn stomp_error(&self, reason: String) -> BenchError {
        BenchError::Stomp {
            url: self.url.clone(),
            reason,
        }
    }
}

/// The CONNECT frame `options` describe: STOMP 1.2, heart-beats off, and the credentials
/// given (login/passcode, a JWT as `Authorization: Bearer`).
#[must_use]
pub fn connect_frame(options: &ConnectOptions) -> Frame {
    let mut frame = Frame::new(Command::Connect)
        .with_header("accept-version", "1.2,1.1")
        .with_header("host", options.vhost.as_str())
        .with_header("heart-beat", "0,0");
    if let Some(login) = &options.login {
        frame = frame.with_header("login", login.as_str());
    }
    if let Some(passcode) = &options.passcode {
        frame = frame.with_header("passcode", passcode.as_str());
    }
    if let Some(token) = &options.token {
        frame = frame.with_header("Authorization", format!("Bearer {token}"));
    }
    frame
}

/// TCP (from `options.source_ip` if set, Nagle off) and the WebSocket handshake with
/// `options.websocket`'s buffers, offering `subprotocol` if given (STOMP servers want one;
/// a server that selects none makes tungstenite refuse an offer, so other protocols offer
/// nothing). The caller bounds the time.
///
/// # Errors
/// A URL that is not `ws://host[:port]/…`, a failed connect, or a refused handshake.
pub async fn open_websocket(
    url: &str,
    options: &ConnectOptions,
    subprotocol: Option<&'static str>,
) -> Result<Socket, BenchError> {
    let invalid = |reason: &str| BenchError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let mut request = url
        .into_client_request()
        .map_err(|e| invalid(&e.to_string()))?;
    if let Some(subprotocol) = subprotocol {
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static(subprotocol),
        );
    }
    let host = request
        .uri()
        .host()
        .ok_or_else(|| invalid("no host"))?
        .trim_matches(|c| c == '[' || c == ']')
        .to_owned();
    let port = request.uri().port_u16().unwrap_or(80);
    let target = resolve(&host, port, options.source_ip).await?;
    let connect_error = |source| BenchError::Connect {
        target: target.to_string(),
        source,
    };
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(connect_error)?;
    if let Some(ip) = options.source_ip {
        socket.bind(SocketAddr::new(ip, 0)).map_err(connect_error)?;
    }
    let stream = socket.connect(target).await.map_err(connect_error)?;
    // Latency is the point of the exercise: no Nagle delay on small frames.
    stream.set_nodelay(true).map_err(connect_error)?;
    let (socket, _response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(options.websocket))
            .await
            .map_err(|e| BenchError::Handshake {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
    Ok(socket)
}

async fn resolve(host: &str, port: u16, source: Option<IpAddr>) -> Result<SocketAddr, BenchError> {
    let lookup_error = |source| BenchError::Connect {
        target: format!("{host}:{port}"),
        source,
    };
    let mut addresses = tokio::net::lookup_host((host, port))
        .await
        .map_err(lookup_error)?;
    // With a source address, the target must be of the same family.
    addresses
        .find(|address| source.is_none_or(|ip| ip.is_ipv4() == address.is_ipv4()))
        .ok_or_else(|| {
            lookup_error(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no address of a usable family",
            ))
        })
}

#[cfg(test)]
mod tests {
    use chat_stomp::Item;

    use super::*;

    fn options(token: Option<&str>) -> ConnectOptions {
        ConnectOptions {
            login: None,
            passcode: None,
            vhost: "/".into(),
            token: token.map(str::to_owned),
            source_ip: None,
            websocket: ConnectOptions::reader_config(),
            timeout: Duration::from_secs(1),
        }
    }

    /// The frame as the server reads it: encoded, then decoded again.
    fn on_the_wire(frame: &Frame) -> Frame {
        let mut bytes = Vec::new();
        encode(frame, &mut bytes);
        let mut decoder = decoder();
        decoder.feed(&bytes);
        let Ok(Some(Item::Frame(frame))) = decoder.next_item() else {
            panic!("not a frame: {:?}", String::from_utf8_lossy(&bytes));
        };
        frame
    }

    #[test]
    fn a_token_is_sent_as_a_bearer_authorization_header_of_connect() {
        let frame = on_the_wire(&connect_frame(&options(Some("aaa.bbb.ccc"))));
        assert_eq!(frame.command, Command::Connect);
        assert_eq!(frame.header("Authorization"), Some("Bearer aaa.bbb.ccc"));
        assert_eq!(frame.header("accept-version"), Some("1.2,1.1"));
        assert_eq!(frame.header("heart-beat"), Some("0,0"));
        assert_eq!(frame.header("passcode"), None);
    }

    #[test]
    fn without_a_token_connect_has_no_authorization_header() {
        let mut options = options(None);
        options.login = Some("guest".into());
        options.passcode = Some("guest".into());
        let frame = on_the_wire(&connect_frame(&options));
        assert_eq!(frame.header("Authorization"), None);
        assert_eq!(frame.header("login"), Some("guest"));
        assert_eq!(frame.header("passcode"), Some("guest"));
        assert_eq!(frame.header("host"), Some("/"));
    }
}
