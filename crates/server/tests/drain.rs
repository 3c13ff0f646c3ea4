//! Graceful drain as a rolling update does it (issue 5, spec §5.5): two real `chat-server`
//! processes on one PostgreSQL and one Redis behind a real nginx, one of them SIGTERMed while
//! messages flow. Its clients must be told to reconnect, land on the survivor through the
//! balancer, resume without a gap or a duplicate, and nothing RECEIPTed may be lost.

#[path = "support/nginx.rs"]
mod nginx;
mod support;

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chat_stomp::{Command, Frame};
use chat_test_support::postgres::fresh_database;
use chat_test_support::redis::{redis_url, unique_channel};
use nginx::LoadBalancer;
use support::process::ServerProcess;
use support::{StompClient, chat_json};
use tokio::sync::watch;

/// `CHAT_SHUTDOWN_GRACE_SECS` as `ServerProcess` sets it.
const GRACE: Duration = Duration::from_secs(10);
/// Long enough that messages keep flowing while the sessions are told one by one.
const DRAIN_WINDOW_SECS: &str = "2";
const LISTENERS: usize = 6;
/// SENDs the sender keeps waiting for their RECEIPT, so some are in flight at the SIGTERM.
const SENDS_IN_FLIGHT: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigtermed_instance_sends_its_clients_to_the_survivor_and_loses_no_receipted_message() {
    let database = fresh_database().await;
    let redis = redis_url().await;
    let channel = unique_channel("chat-drain");
    let env = [
        ("DATABASE_URL", database.url()),
        ("REDIS_URL", redis.url()),
        ("CHAT_REDIS_CHANNEL", channel.as_str()),
        ("CHAT_DRAIN_WINDOW_SECS", DRAIN_WINDOW_SECS),
    ];
    let doomed = ServerProcess::start(&env).await;
    let survivor = ServerProcess::start(&env).await;
    let (doomed_port, survivor_port) = (doomed.addr.port(), survivor.addr.port());
    let balancer = LoadBalancer::start(&[doomed.addr, survivor.addr]).await;
    let room = create_room(&balancer).await;
    let topic = format!("/topic/chatroom/{room}");

    // Listeners through the balancer: round-robin puts some on each instance.
    let (final_seq, final_seq_rx) = watch::channel(None::<i64>);
    let mut listeners = Vec::new();
    let mut initial_ports = Vec::new();
    for n in 0..LISTENERS {
        let (mut client, port) = connect_through(&balancer).await;
        client.subscribe_with("room", &topic, &[]).await;
        initial_ports.push(port);
        listeners.push(tokio::spawn(listen(
            n,
            client,
            port,
            balancer.ws_url(),
            topic.clone(),
            final_seq_rx.clone(),
        )));
    }
    assert!(
        initial_ports.contains(&doomed_port) && initial_ports.contains(&survivor_port),
        "nginx should spread the listeners over both instances (round-robin), got ports \
         {initial_ports:?} for instances {doomed_port} and {survivor_port}"
    );

    // The sender starts on the instance that will be stopped, so some of its SENDs are in
    // flight there when the drain begins.
    let stop_sending = Arc::new(AtomicBool::new(false));
    let receipted_count = Arc::new(AtomicUsize::new(0));
    let sender = tokio::spawn(send_until_stopped(
        room,
        doomed.ws_url(),
        balancer.ws_url(),
        stop_sending.clone(),
        receipted_count.clone(),
    ));
    wait_until(
        || receipted_count.load(Ordering::Relaxed) >= 20,
        "20 receipts",
    )
    .await;

    let sigterm_at = Instant::now();
    let status = doomed.terminate().await;
    let exited_after = sigterm_at.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "a drained instance should exit 0, got {status}"
    );
    assert!(
        exited_after <= GRACE,
        "the instance should exit within its grace period of {GRACE:?}, took {exited_after:?}"
    );

    // Keep sending a little after the stop, through the balancer to the survivor.
    let receipted_before_stop = receipted_count.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(10);
    while receipted_count.load(Ordering::Relaxed) < receipted_before_stop + 20 {
        if sender.is_finished() {
            // It ends early only by panicking: show why here, not as a timeout.
            let failure = sender
                .await
                .expect_err("the sender stops only when told to");
            eprintln!(
                "the sender failed after the SIGTERM (its panic is above). A broken pipe there \
                 means the draining instance reset the connection, and the ERROR and RECEIPTs \
                 it had written never reached the client"
            );
            std::panic::resume_unwind(failure.into_panic());
        }
        assert!(
            Instant::now() < deadline,
            "waited 10 s for 20 more receipts after the instance stopped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_sending.store(true, Ordering::Relaxed);
    let sent = sender.await.unwrap();
    assert!(
        sent.got_reconnect_error,
        "the sender on the stopped instance should have been told to reconnect"
    );
    assert_eq!(
        sent.reconnected_to,
        Some(survivor_port),
        "the sender should reconnect through the balancer to the survivor"
    );

    // Everything RECEIPTed is in PostgreSQL, each message once, seq 1..=n without holes.
    let stored = history(&survivor, room).await;
    let stored_seqs: Vec<i64> = stored.iter().map(|(seq, _)| *seq).collect();
    let expected: Vec<i64> = (1..=stored.len() as i64).collect();
    assert_eq!(
        stored_seqs, expected,
        "stored seqs should run 1..=n without holes"
    );
    let stored_contents: HashSet<&str> = stored.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(
        stored_contents.len(),
        stored.len(),
        "no message should be stored twice"
    );
    let lost: Vec<&String> = sent
        .receipted
        .iter()
        .filter(|content| !stored_contents.contains(content.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "RECEIPTed messages missing from PostgreSQL: {lost:?}"
    );
    // And the other way round: a SEND the instance accepted and stored is answered before
    // its connection closes, even while draining. A client that never hears back cannot
    // tell it was stored, and resending it makes a duplicate.
    let answered: HashSet<&str> = sent
        .receipted
        .iter()
        .chain(&sent.rejected)
        .map(String::as_str)
        .collect();
    let unanswered: Vec<&(i64, String)> = stored
        .iter()
        .filter(|(_, content)| !answered.contains(content.as_str()))
        .collect();
    assert!(
        unanswered.is_empty(),
        "stored messages whose sender got neither a RECEIPT nor an error: {unanswered:?} \
         (the drained connection lost them on the way to the client)"
    );

    // Every listener saw every stored message exactly once, in order, across the reconnect.
    final_seq.send_replace(Some(stored.len() as i64));
    for (n, listener) in listeners.into_iter().enumerate() {
        let heard = tokio::time::timeout(Duration::from_secs(10), listener)
            .await
            .unwrap_or_else(|_| panic!("listener {n} did not catch up within 10 s"))
            .unwrap();
        if heard.first_port == doomed_port {
            let error = heard
                .reconnect_error
                .unwrap_or_else(|| panic!("listener {n} on the stopped instance got no ERROR"));
            assert!(
                error.contains("reconnect"),
                "listener {n}: the ERROR should tell the client to reconnect, said {error:?}"
            );
            assert_eq!(
                heard.reconnected_to,
                Some(survivor_port),
                "listener {n} should reconnect through the balancer to the survivor"
            );
        } else {
            assert_eq!(
                heard.reconnect_error, None,
                "listener {n} on the survivor should be left alone"
            );
        }
        assert_eq!(
            heard.messages, stored,
            "listener {n} (first on port {}) should see every stored message once, in seq order",
            heard.first_port
        );
    }
}

/// What one listener saw.
struct Heard {
    first_port: u16,
    reconnect_error: Option<String>,
    reconnected_to: Option<u16>,
    messages: Vec<(i64, String)>,
}

/// Reads the room until it has seen `final_seq`; on an ERROR, reconnects through the
/// balancer and resumes after the last seq it saw.
async fn listen(
    n: usize,
    mut client: StompClient,
    first_port: u16,
    balancer_url: String,
    topic: String,
    mut final_seq: watch::Receiver<Option<i64>>,
) -> Heard {
    let mut heard = Heard {
        first_port,
        reconnect_error: None,
        reconnected_to: None,
        messages: Vec::new(),
    };
    loop {
        let last_seq = heard.messages.last().map_or(0, |(seq, _)| *seq);
        if final_seq.borrow().is_some_and(|last| last_seq >= last) {
            return heard;
        }
        let waiting_for_final_seq = final_seq.borrow().is_none();
        let frame = tokio::select! {
            frame = client.next_frame_within(Duration::from_secs(15)) => frame,
            _ = final_seq.changed(), if waiting_for_final_seq => continue,
        };
        match frame {
            Some(frame) if frame.command == Command::Message => {
                let body: serde_json::Value = serde_json::from_slice(&frame.body).unwrap();
                heard.messages.push((
                    body["seq"].as_i64().unwrap(),
                    body["content"].as_str().unwrap().to_owned(),
                ));
            }
            Some(frame) if frame.command == Command::Receipt => {}
            Some(frame) if frame.command == Command::Error => {
                assert!(
                    heard.reconnect_error.is_none(),
                    "listener {n} was told to reconnect twice"
                );
                heard.reconnect_error = Some(frame.header("message").unwrap_or("").to_owned());
                let (mut fresh, port) = connect_through_url(&balancer_url).await;
                let after = last_seq.to_string();
                fresh
                    .send(
                        Frame::new(Command::Subscribe)
                            .with_header("id", "room")
                            .with_header("destination", topic.as_str())
                            .with_header("x-resume-after", after.as_str()),
                    )
                    .await;
                heard.reconnected_to = Some(port);
                client = fresh;
            }
            Some(frame) => panic!("listener {n}: unexpected frame {frame:?}"),
            None => panic!(
                "listener {n}: connection closed or silent without an ERROR, having seen up to seq {last_seq}"
            ),
        }
    }
}

/// What the sender sent.
#[derive(Debug)]
struct Sent {
    receipted: Vec<String>,
    /// Answered with an application error instead of a RECEIPT.
    rejected: Vec<String>,
    got_reconnect_error: bool,
    reconnected_to: Option<u16>,
}

/// Sends messages with receipts, several in flight, until told to stop, then waits for the
/// receipts still owed. When its instance tells it to reconnect, it collects the receipts
/// that still come until the socket closes, then carries on through the balancer.
async fn send_until_stopped(
    room: i64,
    first_url: String,
    balancer_url: String,
    stop: Arc<AtomicBool>,
    receipted_count: Arc<AtomicUsize>,
) -> Sent {
    let mut sent = Sent {
        receipted: Vec::new(),
        rejected: Vec::new(),
        got_reconnect_error: false,
        reconnected_to: None,
    };
    let mut client = StompClient::connect(&first_url).await;
    client.subscribe("errors", "/user/queue/errors").await;
    let mut in_flight: VecDeque<(String, String)> = VecDeque::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    loop {
        assert!(Instant::now() < deadline, "the sender ran for 30 s");
        let stopping = stop.load(Ordering::Relaxed);
        let mut told_to_reconnect = false;
        // Take what has arrived; block only while the pipeline is full, or for the receipts
        // still owed after an ERROR or at the end. Reading after every SEND also means an
        // ERROR is seen before more is written to a closing socket.
        loop {
            let must_wait = !in_flight.is_empty()
                && (in_flight.len() >= SENDS_IN_FLIGHT || told_to_reconnect || stopping);
            let wait = if must_wait {
                Duration::from_secs(5)
            } else {
                Duration::ZERO
            };
            match client.next_frame_within(wait).await {
                Some(frame) if frame.command == Command::Receipt => {
                    // RECEIPTs come back in the order of the SENDs.
                    let (receipt, content) = in_flight.pop_front().expect("a receipt is owed");
                    assert_eq!(frame.header("receipt-id"), Some(receipt.as_str()));
                    sent.receipted.push(content);
                    receipted_count.fetch_add(1, Ordering::Relaxed);
                }
                Some(frame) if frame.command == Command::Error => {
                    let message = frame.header("message").unwrap_or("");
                    assert!(message.contains("reconnect"), "ERROR said {message:?}");
                    assert!(
                        !sent.got_reconnect_error,
                        "the sender was told to reconnect twice"
                    );
                    sent.got_reconnect_error = true;
                    told_to_reconnect = true;
                }
                Some(frame) if frame.command == Command::Message => {
                    // An application error on /user/queue/errors answers a SEND too.
                    let error: serde_json::Value = serde_json::from_slice(&frame.body).unwrap();
                    let (receipt, content) = in_flight.pop_front().expect("an answer is owed");
                    assert_eq!(error["receiptId"], receipt.as_str(), "{error}");
                    sent.rejected.push(content);
                }
                Some(frame) => panic!("sender: unexpected frame {frame:?}"),
                None if must_wait => {
                    assert!(
                        told_to_reconnect,
                        "the sender's connection closed or went silent without an ERROR, \
                         {} SENDs awaiting their RECEIPT",
                        in_flight.len()
                    );
                    // Closed after the ERROR without answering these: the instance stops
                    // reading when it sends the ERROR, so it never saw them and they must
                    // not be stored (checked against PostgreSQL at the end).
                    in_flight.clear();
                }
                None => break,
            }
        }
        if told_to_reconnect {
            let (mut fresh, port) = connect_through_url(&balancer_url).await;
            fresh.subscribe("errors", "/user/queue/errors").await;
            sent.reconnected_to = Some(port);
            client = fresh;
        }
        if stopping {
            return sent;
        }
        n += 1;
        let content = format!("message {n}");
        let receipt = format!("r-{n}");
        client
            .send_chat(&chat_json(room, &content), Some(&receipt))
            .await;
        in_flight.push_back((receipt, content));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn connect_through(balancer: &LoadBalancer) -> (StompClient, u16) {
    connect_through_url(&balancer.ws_url()).await
}

/// CONNECTs through the balancer (retrying briefly, as @stomp/stompjs does) and returns the
/// client with the port of the instance it landed on, read from the `session` header
/// (`<instance start>-<port>-<connection>`).
async fn connect_through_url(url: &str) -> (StompClient, u16) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match StompClient::open_offering(url, Some("v12.stomp")).await {
            Ok(mut client) => {
                let connected = client.handshake("0,0").await;
                assert_eq!(connected.command, Command::Connected, "{connected:?}");
                let session = connected
                    .header("session")
                    .expect("CONNECTED has a session");
                let port = session
                    .rsplit('-')
                    .nth(1)
                    .and_then(|port| port.parse().ok())
                    .unwrap_or_else(|| panic!("no port in session {session:?}"));
                return (client, port);
            }
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "cannot connect through the balancer for 5 s: {error}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn create_room(balancer: &LoadBalancer) -> i64 {
    support::create_room_at(&balancer.http(""), "drain").await
}

/// The room's whole history as (seq, content), paging through the REST API.
async fn history(server: &ServerProcess, room: i64) -> Vec<(i64, String)> {
    let mut messages = Vec::new();
    loop {
        let after = messages.last().map_or(0, |(seq, _)| *seq);
        let page: Vec<serde_json::Value> = reqwest::get(server.http(&format!(
            "/api/chatrooms/{room}/messages?afterSeq={after}&limit=200"
        )))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        if page.is_empty() {
            return messages;
        }
        messages.extend(page.iter().map(|m| {
            (
                m["seq"].as_i64().unwrap(),
                m["content"].as_str().unwrap().to_owned(),
            )
        }));
    }
}

async fn wait_until(condition: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "waited 10 s for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
