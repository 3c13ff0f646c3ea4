//! Test helpers: the real app on port 0 and a small STOMP-over-WebSocket client built on
//! tokio-tungstenite and our own codec.
#![allow(dead_code)]

pub mod process;

use std::net::SocketAddr;
use std::time::Duration;

use chat_server::{Adapters, Application, Settings, ShutdownHandle};
use chat_stomp::{Command, Decoder, Frame, Item, Limits, encode};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const WAIT: Duration = Duration::from_secs(5);

pub struct TestApp {
    pub addr: SocketAddr,
    /// The admin listener, when the settings asked for one.
    pub admin: Option<SocketAddr>,
    pub shutdown: ShutdownHandle,
    pub stopped: tokio::task::JoinHandle<()>,
    pub adapters: Adapters,
}

impl TestApp {
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn create_room(&self, name: &str) -> i64 {
        create_room_at(&self.http(""), name).await
    }

    pub async fn history(&self, room: i64) -> Vec<serde_json::Value> {
        history_at(&self.http(""), room).await
    }

    /// `POST /api/chatrooms/{room}/messages` with `body` as it is.
    pub async fn post_message(
        &self,
        room: i64,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        reqwest::Client::new()
            .post(self.http(&format!("/api/chatrooms/{room}/messages")))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }
}

/// Creates a room through the REST API of the server at `base` (`http://host:port`).
pub async fn create_room_at(base: &str, name: &str) -> i64 {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/chatrooms"))
        .json(&serde_json::json!({ "name": name }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json::<serde_json::Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap()
}

/// The newest 200 messages of a room through the REST API of the server at `base`.
pub async fn history_at(base: &str, room: i64) -> Vec<serde_json::Value> {
    let url = format!("{base}/api/chatrooms/{room}/messages?limit=200");
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// Settings for tests: port 0, quick heart-beats, no rate limits (tests send and create
/// rooms as fast as they can, as load tests do; the limits have tests of their own), the
/// rest as in production.
pub fn test_settings() -> Settings {
    let mut settings = Settings::embedded("127.0.0.1:0".parse().unwrap());
    settings.shutdown_grace_secs = 5;
    settings.send_rate = 0;
    settings.room_create_rate = 0;
    settings
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Adapters::in_memory(), test_settings()).await
}

pub async fn spawn_app_with(adapters: Adapters, settings: Settings) -> TestApp {
    let app = Application::build_with(settings, adapters.clone())
        .await
        .unwrap();
    let addr = app.local_addr();
    let admin = app.admin_addr();
    let shutdown = app.shutdown_handle();
    let stopped = tokio::spawn(app.run_until_stopped());
    TestApp {
        addr,
        admin,
        shutdown,
        stopped,
        adapters,
    }
}

/// A STOMP client over a real WebSocket.
pub struct StompClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    decoder: Decoder,
    pub protocol: Option<String>,
    pub heartbeats_received: usize,
}

impl StompClient {
    /// Opens the WebSocket offering `v12.stomp` (no CONNECT yet).
    pub async fn open(url: &str) -> Self {
        Self::open_offering(url, Some("v10.stomp, v11.stomp, v12.stomp"))
            .await
            .unwrap()
    }

    pub async fn open_offering(
        url: &str,
        protocols: Option<&str>,
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        Self::open_with_headers(url, protocols, &[]).await
    }

    /// Opens the WebSocket with extra headers on the upgrade request.
    pub async fn open_with_headers(
        url: &str,
        protocols: Option<&str>,
        headers: &[(&'static str, &str)],
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        let mut request = url.into_client_request().unwrap();
        for (name, value) in headers {
            request.headers_mut().insert(*name, value.parse().unwrap());
        }
        if let Some(protocols) = protocols {
            request
                .headers_mut()
                .insert("sec-websocket-protocol", protocols.parse().unwrap());
        }
        let (socket, response) = tokio_tungstenite::connect_async(request).await?;
        let protocol = response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap().to_owned());
        Ok(Self {
            socket,
            decoder: Decoder::new(Limits {
                max_frame_bytes: 16 * 1024 * 1024,
                ..Limits::default()
            }),
            protocol,
            heartbeats_received: 0,
        })
    }

    /// Opens and completes CONNECT → CONNECTED without heart-beats.
    pub async fn connect(url: &str) -> Self {
        let mut client = Self::open(url).await;
        let connected = client.handshake("0,0").await;
        assert_eq!(connected.command, Command::Connected, "{connected:?}");
        client
    }

    pub async fn handshake(&mut self, heartbeat: &str) -> Frame {
        self.send(
            Frame::new(Command::Connect)
                .with_header("accept-version", "1.1,1.2")
                .with_header("host", "localhost")
                .with_header("heart-beat", heartbeat),
        )
        .await;
        self.next_frame().await
    }

    pub async fn send(&mut self, frame: Frame) {
        let mut bytes = Vec::new();
        encode(&frame, &mut bytes);
        self.send_raw(bytes).await;
    }

    pub async fn send_raw(&mut self, bytes: Vec<u8>) {
        let message = match String::from_utf8(bytes) {
            Ok(text) => Message::text(text),
            Err(e) => Message::binary(e.into_bytes()),
        };
        self.socket.send(message).await.unwrap();
    }

    /// A text WebSocket message whose payload is `bytes` as they are, valid UTF-8 or not.
    pub async fn send_invalid_text(&mut self, bytes: &[u8]) {
        use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        let frame = WsFrame::message(bytes.to_vec(), OpCode::Data(Data::Text), true);
        self.socket.send(Message::Frame(frame)).await.unwrap();
    }

    pub async fn subscribe(&mut self, id: &str, destination: &str) {
        self.subscribe_with(id, destination, &[]).await;
    }

    /// SUBSCRIBE with a receipt, waiting for it so the subscription is live on return.
    pub async fn subscribe_with(&mut self, id: &str, destination: &str, extra: &[(&str, &str)]) {
        let receipt = format!("sub-{id}");
        let mut frame = Frame::new(Command::Subscribe)
            .with_header("id", id)
            .with_header("destination", destination)
            .with_header("receipt", receipt.as_str());
        for (name, value) in extra {
            frame = frame.with_header(*name, *value);
        }
        self.send(frame).await;
        self.expect_receipt(&receipt).await;
    }

    pub async fn send_chat(&mut self, body: &str, receipt: Option<&str>) {
        let mut frame = Frame::new(Command::Send)
            .with_header("destination", "/app/chat.sendMessage")
            .with_header("content-type", "application/json")
            .with_body(body.as_bytes().to_vec());
        if let Some(receipt) = receipt {
            frame = frame.with_header("receipt", receipt);
        }
        self.send(frame).await;
    }

    pub async fn expect_receipt(&mut self, id: &str) {
        let frame = self.next_frame().await;
        assert_eq!(
            frame.command,
            Command::Receipt,
            "expected RECEIPT {id}, got {frame:?}"
        );
        assert_eq!(frame.header("receipt-id"), Some(id));
    }

    /// The next frame, skipping heart-beats; panics after [`WAIT`].
    pub async fn next_frame(&mut self) -> Frame {
        match self.next_frame_within(WAIT).await {
            Some(frame) => frame,
            None => panic!("no frame within {WAIT:?}"),
        }
    }

    /// The next frame, or `None` if nothing arrives in `wait` or the connection closes.
    pub async fn next_frame_within(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self
                .decoder
                .next_item()
                .expect("server sent a malformed frame")
            {
                Some(Item::Frame(frame)) => return Some(frame),
                Some(Item::HeartBeat) => {
                    self.heartbeats_received += 1;
                    continue;
                }
                None => {}
            }
            let message = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .ok()??;
            match message {
                Ok(Message::Text(text)) => self.decoder.feed(text.as_bytes()),
                Ok(Message::Binary(bytes)) => self.decoder.feed(&bytes),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The next MESSAGE frame's JSON body.
    pub async fn next_message(&mut self) -> (Frame, serde_json::Value) {
        let frame = self.next_frame().await;
        assert_eq!(
            frame.command,
            Command::Message,
            "expected MESSAGE, got {frame:?}"
        );
        let body = serde_json::from_slice(&frame.body).unwrap();
        (frame, body)
    }

    /// Asserts that nothing but heart-beats arrives for `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(frame) = self.next_frame_within(wait).await {
            panic!("expected nothing, got {frame:?}");
        }
    }

    /// The code of the server's Close frame, skipping what comes before it; `None` when the
    /// connection ends without one (or nothing ends it within [`WAIT`]).
    pub async fn close_code(&mut self) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| f.code.into()),
                Ok(Some(Ok(_))) => {}
                _ => return None,
            }
        }
    }

    /// True once the server has closed the connection (within [`WAIT`]).
    pub async fn is_closed_by_server(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Err(_) => return false,
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

pub fn chat_json(room: i64, content: &str) -> String {
    serde_json::json!({
        "chatRoomId": room,
        "senderId": 1,
        "senderNickname": "alice",
        "content": content,
        "messageType": "TEXT",
    })
    .to_string()
}

/// The sum of the samples of every series whose name starts with `name` (labels and the
/// `_total` suffix included) at `metrics_url`; 0 when there is none.
pub async fn metric_at(metrics_url: &str, name: &str) -> f64 {
    let text = reqwest::get(metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|line| line.starts_with(name) && !line.starts_with('#'))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
