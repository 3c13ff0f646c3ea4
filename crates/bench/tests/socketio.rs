//! A short `--socketio` run against a small in-process Socket.IO server that behaves like
//! scripts/peers/socketio/server.mjs (join/send/leave with acks, broadcast to the room) and
//! pings every 50 ms, so the run only passes if both loops answer pings, every message
//! reaches every subscriber of its room once, and every send's ack counts as a receipt.
//! The real peer is exercised by `scripts/bench s` and `i`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_bench::socketio::{self, EnginePacket, PacketKind};
use chat_bench::{BenchArgs, run_load};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

type Outbox = mpsc::UnboundedSender<String>;

#[derive(Default)]
struct FakeServer {
    rooms: Mutex<HashMap<String, Vec<Outbox>>>,
    /// Pongs received, one counter per connection.
    pongs: Mutex<Vec<Arc<AtomicU64>>>,
}

/// Serves Socket.IO on a free port until the test ends; returns its `ws://` address.
async fn start_fake_server() -> (String, Arc<FakeServer>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let server = Arc::new(FakeServer::default());
    let shared = server.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, shared.clone()));
        }
    });
    (url, server)
}

async fn serve(stream: tokio::net::TcpStream, server: Arc<FakeServer>) {
    let Ok(socket) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let pongs = Arc::new(AtomicU64::new(0));
    server.pongs.lock().unwrap().push(pongs.clone());
    let (mut sink, mut stream) = socket.split();
    let (outbox, mut queue) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        // The first ping after the open packet, never before it.
        let period = Duration::from_millis(50);
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            let text = tokio::select! {
                text = queue.recv() => match text { Some(text) => text, None => break },
                _ = ping.tick() => "2".to_owned(),
            };
            if sink.send(Message::text(text)).await.is_err() {
                break;
            }
        }
    });
    let _ = outbox.send(
        r#"0{"sid":"s","upgrades":[],"pingInterval":50,"pingTimeout":5000,"maxPayload":1000000}"#
            .to_owned(),
    );
    while let Some(Ok(Message::Text(text))) = stream.next().await {
        let packet = match socketio::decode(text.as_str()) {
            Ok(EnginePacket::Pong(_)) => {
                pongs.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Ok(EnginePacket::Message(packet)) => packet,
            _ => continue,
        };
        match packet.kind {
            PacketKind::Connect => {
                let _ = outbox.send(r#"40{"sid":"n"}"#.to_owned());
            }
            PacketKind::Disconnect => break,
            PacketKind::Event => {
                let event = socketio::split_event(packet.data).unwrap();
                let arg: serde_json::Value = serde_json::from_str(event.args).unwrap();
                match event.name.as_ref() {
                    "join" => {
                        let room = arg.as_str().unwrap().to_owned();
                        let mut rooms = server.rooms.lock().unwrap();
                        rooms.entry(room).or_default().push(outbox.clone());
                    }
                    "send" => {
                        let room = arg["room"].as_str().unwrap();
                        let message = socketio::event(None, "message", event.args);
                        let rooms = server.rooms.lock().unwrap();
                        for member in rooms.get(room).into_iter().flatten() {
                            let _ = member.send(message.clone());
                        }
                    }
                    _ => {}
                }
                if let Some(id) = packet.id {
                    let _ = outbox.send(format!(r#"43{id}[{{"ok":true}}]"#));
                }
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socketio_run_delivers_every_message_once_and_counts_acks_as_receipts() {
    let (url, server) = start_fake_server().await;
    let args = BenchArgs::try_parse_from([
        "chat-bench",
        "--socketio",
        "--url",
        &url,
        "--subscribers",
        "12",
        "--publishers",
        "3",
        "--rooms",
        "3",
        "--rate",
        "300",
        "--size",
        "64",
        "--warmup",
        "0.5",
        "--duration",
        "1.5",
        "--drain",
        "2",
        "--progress",
        "0",
        "--receipts",
        // Latency is the benchmarks' business: on a shared 2-core machine a busy moment
        // makes any limit flaky, so the verdict here is about what arrived, not how fast.
        "--p99-limit-ms",
        "60000",
    ])
    .unwrap();

    let report = run_load(&args).await.expect("the run completes");

    assert_eq!(report.mode, "socketio");
    assert_eq!(report.connect_failures, 0, "{report}");
    assert_eq!(report.unsent, 0, "{report}");
    assert!(report.sent >= 500, "about 600 messages were due: {report}");
    // 4 subscribers per room, each message once.
    assert_eq!(report.deliveries.expected, report.sent * 4, "{report}");
    assert_eq!(
        report.deliveries.delivered, report.deliveries.expected,
        "{report}"
    );
    assert_eq!(
        report.deliveries.lost + report.deliveries.duplicates + report.deliveries.misrouted,
        0,
        "{report}"
    );
    assert_eq!(
        report.deliveries.unparsable + report.errors + report.disconnects,
        0,
        "{report}"
    );
    assert!(report.latency.count > 0, "{report}");
    // Every send was acked, and the closing leave's ack is not a receipt.
    assert_eq!(report.receipts, report.sent, "{report}");
    assert!(
        report.receipt_latency.is_some_and(|r| r.count > 0),
        "{report}"
    );
    // A run of about 2.5 s with a ping every 50 ms: every connection, publisher or
    // subscriber, answered them all along.
    let pongs: Vec<u64> = server
        .pongs
        .lock()
        .unwrap()
        .iter()
        .map(|count| count.load(Ordering::Relaxed))
        .collect();
    assert_eq!(pongs.len(), 15);
    assert!(pongs.iter().all(|count| *count >= 20), "{pongs:?}");
    assert!(report.ok, "{report}");
}
