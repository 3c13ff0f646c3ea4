//! A minimal Socket.IO client over WebSocket for the generator: the Engine.IO handshake,
//! the main-namespace connect, and `join` with its ack (the counterpart of a STOMP
//! SUBSCRIBE receipt), then the socket goes to the caller's read and write loops. Packets
//! are [`crate::socketio`]'s sans-I/O codec; tokio-tungstenite only moves text.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::BenchError;
use crate::socketio::{self, EnginePacket, Handshake, PacketKind};
use crate::stomp_ws::{ConnectOptions, Socket, open_websocket};

/// A Socket.IO session connected to the main namespace.
#[derive(Debug)]
pub struct SocketIoConnection {
    /// The WebSocket.
    pub socket: Socket,
    /// The endpoint, for error messages.
    pub url: String,
    /// What the server announced (ping interval and timeout).
    pub handshake: Handshake,
    /// The next ack id this client asks for during set-up; the load loops use their own.
    next_ack_id: u64,
}

impl SocketIoConnection {
    /// Opens the WebSocket on `url` (the Engine.IO path is added to a bare `ws://host:port`),
    /// reads the server's open packet and connects the main namespace (`40` → `40{sid}`).
    ///
    /// # Errors
    /// A failed TCP connect or handshake, a refused namespace, or the timeout.
    pub async fn open(url: &str, options: &ConnectOptions) -> Result<Self, BenchError> {
        let url = socketio::endpoint_url(url);
        let open = async {
            let mut socket = open_websocket(&url, options, None).await?;
            let mut connection = Self {
                handshake: read_handshake(&mut socket, &url).await?,
                socket,
                url: url.clone(),
                next_ack_id: 1,
            };
            connection.send(socketio::connect()).await?;
            loop {
                let text = connection.next_text().await?;
                match connection.decode(&text)? {
                    EnginePacket::Message(packet) if packet.kind == PacketKind::Connect => break,
                    EnginePacket::Message(packet) if packet.kind == PacketKind::ConnectError => {
                        return Err(connection.error(format!(
                            "the server refused the connection: {}",
                            packet.data
                        )));
                    }
                    _ => {}
                }
            }
            Ok(connection)
        };
        tokio::time::timeout(options.timeout, open)
            .await
            .map_err(|_| BenchError::Timeout {
                what: format!("connecting to {url}"),
                secs: options.timeout.as_secs_f64(),
            })?
    }

    /// Emits `join` for `room` and waits for its ack, so the socket gets the room's next
    /// broadcast on return.
    ///
    /// # Errors
    /// The server refused the join (`{"ok":false}`), closed, or sent something that is not
    /// Socket.IO.
    pub async fn join(&mut self, room: &str) -> Result<(), BenchError> {
        let id = self.next_ack_id;
        self.next_ack_id += 1;
        let mut room_json = String::new();
        socketio::push_json_string(&mut room_json, room);
        self.send(&socketio::event(Some(id), "join", &room_json))
            .await?;
        loop {
            let text = self.next_text().await?;
            if let EnginePacket::Message(packet) = self.decode(&text)?
                && packet.kind == PacketKind::Ack
                && packet.id == Some(id)
            {
                if socketio::ack_is_refusal(packet.data) {
                    return Err(self.error(format!("join {room:?} refused: {}", packet.data)));
                }
                return Ok(());
            }
        }
    }

    /// Sends one packet as one text message.
    ///
    /// # Errors
    /// The socket is closed or broken.
    pub async fn send(&mut self, text: &str) -> Result<(), BenchError> {
        self.socket
            .send(Message::text(text))
            .await
            .map_err(|e| self.error(format!("cannot send: {e}")))
    }

    /// The next text message, answering pings on the way and failing on a close.
    async fn next_text(&mut self) -> Result<String, BenchError> {
        loop {
            let text = next_text(&mut self.socket)
                .await
                .map_err(|reason| self.error(reason))?;
            match socketio::decode(&text) {
                Ok(EnginePacket::Ping(payload)) => {
                    let pong = socketio::pong(payload);
                    self.send(&pong).await?;
                }
                Ok(EnginePacket::Close) => {
                    return Err(self.error("the server closed the Engine.IO session".into()));
                }
                Ok(EnginePacket::Message(packet)) if packet.kind == PacketKind::Disconnect => {
                    return Err(self.error("the server disconnected the namespace".into()));
                }
                _ => return Ok(text),
            }
        }
    }

    fn decode<'a>(&self, text: &'a str) -> Result<EnginePacket<'a>, BenchError> {
        socketio::decode(text).map_err(|e| self.error(e.to_string()))
    }

    fn error(&self, reason: String) -> BenchError {
        BenchError::SocketIo {
            url: self.url.clone(),
            reason,
        }
    }
}

/// The open packet, which an Engine.IO server sends first.
async fn read_handshake(socket: &mut Socket, url: &str) -> Result<Handshake, BenchError> {
    let error = |reason: String| BenchError::SocketIo {
        url: url.to_owned(),
        reason,
    };
    let text = next_text(socket).await.map_err(error)?;
    match socketio::decode(&text) {
        Ok(EnginePacket::Open(handshake)) => Ok(handshake),
        Ok(_) => Err(error(format!("expected the open packet, got {text:?}"))),
        Err(e) => Err(error(e.to_string())),
    }
}

/// The next text message of `socket`, skipping WebSocket control frames.
async fn next_text(socket: &mut Socket) -> Result<String, String> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
            Some(Ok(Message::Binary(_))) => {
                return Err("binary message: this client speaks text packets only".into());
            }
            Some(Ok(Message::Close(_))) | None => {
                return Err("connection closed by the server".into());
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("read failed: {e}")),
        }
    }
}
