//! "Subscribed" must mean Redis has the subscription. fred resolves a SUBSCRIBE when it is
//! written, not when Redis processes it; on a slow path a message published right after
//! would reach Redis first and go to nobody, silently. A proxy that holds every SUBSCRIBE
//! back for a while makes that path slow on purpose.

mod common;

use std::time::Duration;

use chat_adapters_redis::RedisBus;
use chat_domain::MessageBus;
use common::{config, message, next_message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long the proxy holds a client→Redis chunk that carries a SUBSCRIBE (and, to keep
/// the byte order, everything after it on that connection).
const HOLD: Duration = Duration::from_millis(700);

/// Forwards `127.0.0.1:{port}` to `upstream`; client→Redis chunks containing `SUBSCRIBE`
/// wait [`HOLD`] first. Redis→client is passed through untouched.
async fn start_slow_subscribe_proxy(upstream: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                });
                let mut buffer = vec![0u8; 64 * 1024];
                loop {
                    let n = match client_read.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let chunk = &buffer[..n];
                    if chunk.windows(9).any(|w| w == b"SUBSCRIBE") {
                        tokio::time::sleep(HOLD).await;
                    }
                    if server_write.write_all(chunk).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_published_once_subscribed_is_received_even_when_subscribe_is_slow() {
    common::init_logs();
    let redis = chat_test_support::redis::redis_url().await;
    let authority = redis
        .url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    let port = start_slow_subscribe_proxy(authority).await;
    let bus = RedisBus::connect(config(&format!("redis://127.0.0.1:{port}"), "held"))
        .await
        .unwrap();
    let mut events = bus.subscribe().await.unwrap();
    // Published at once: it reaches Redis before the held SUBSCRIBE unless `connect`
    // waited for the subscription to be in effect.
    bus.publish(&message(1, 1)).await.unwrap();
    assert_eq!(
        next_message(&mut events, "the message published once subscribed").await,
        message(1, 1)
    );
    bus.shutdown().await;
}
