//! The load run: connect subscribers (each waits for its SUBSCRIBE receipt, or with
//! `--socketio` its `join` ack), connect publishers, then send on a fixed schedule for
//! warm-up + duration while subscribers account for every delivery, drain, and add it all
//! up. The Socket.IO read and write loops live in `load::socketio`; everything else (schedule,
//! markers, accounting, CPU window) is the same for every protocol.
//!
//! Publishers are open loop: message k of a publisher is due at `start + (k + phase) / rate`
//! whatever the server does, and carries that *intended* time. A server that stalls makes
//! the publisher send a late burst whose latency includes the stall, instead of quietly
//! lowering the offered load (coordinated omission).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant as StdInstant};

use chat_stomp::{Command, Item};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::latency::{LatencyRecorder, SharedLatency};
use crate::payload::Marker;
use crate::procstat::{self, ProcSample};
use crate::report::LoadReport;
use crate::rooms;
use crate::socketio_ws::SocketIoConnection;
use crate::stomp_ws::{ConnectOptions, StompConnection};
use crate::token::{self, TokenMinter};
use crate::tracker::{DeliveryTotals, DeliveryTracker};
use crate::{BenchArgs, BenchError};

const CHAT_SEND_DESTINATION: &str = "/app/chat.sendMessage";
const ERRORS_DESTINATION: &str = "/user/queue/errors";
/// Messages a publisher writes before yielding, so one late publisher catching up cannot
/// starve the others (or its own reader) on a shared worker thread.
const MAX_BURST: u64 = 256;
/// The receipt asked for on the DISCONNECT that ends a publisher's run.
const BYE_RECEIPT: &str = "bench-bye";
/// Publishers start together a little after the last one connected.
const START_DELAY: Duration = Duration::from_millis(200);

mod socketio;

/// What a run speaks and where it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    /// chat-service: REST-created rooms, SEND to `/app/chat.sendMessage` with a JSON body.
    ChatService,
    /// A plain STOMP broker: SEND straight to the subscribed topic (`--raw-topic`).
    RawTopic,
    /// A Socket.IO server: `join` and `send` events (`--socketio`).
    SocketIo,
}

impl Wire {
    fn of(args: &BenchArgs) -> Self {
        if args.socketio {
            Self::SocketIo
        } else if args.raw_topic {
            Self::RawTopic
        } else {
            Self::ChatService
        }
    }

    /// The report's `mode`.
    fn name(self) -> &'static str {
        match self {
            Self::ChatService => "chat-service",
            Self::RawTopic => "raw-topic",
            Self::SocketIo => "socketio",
        }
    }
}

/// One open connection, of the protocol the run speaks.
#[derive(Debug)]
enum Link {
    Stomp(StompConnection),
    SocketIo(SocketIoConnection),
}

/// Counters the progress line and the CPU window read while the run goes on.
#[derive(Debug, Default)]
struct LiveCounters {
    sent: AtomicU64,
    delivered: AtomicU64,
    errors: AtomicU64,
    disconnects: AtomicU64,
}

/// What every connection task of one run shares.
#[derive(Debug)]
struct RunContext {
    /// Time origin of the markers' `sent_us`.
    origin: StdInstant,
    /// Messages intended at or after this offset are measured (latency, throughput).
    measure_from_us: u64,
    live: LiveCounters,
    latency: SharedLatency,
    receipt_latency: SharedLatency,
    receipts: AtomicU64,
    /// With `--outcome-log`: (publisher, intended send time, RECEIPT or error code).
    outcomes: Option<std::sync::Mutex<Vec<(u32, u64, String)>>>,
    sent_by_publisher: Vec<AtomicU64>,
}

impl RunContext {
    fn now_us(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// Where the run sends and subscribes.
#[derive(Debug, Clone)]
struct Rooms {
    /// Subscribe destination of room i.
    destinations: Vec<String>,
    /// chat-service room id of room i (the `chatRoomId` of a SEND); unused in raw mode.
    ids: Vec<i64>,
}

/// Runs one load test as `args` describe and reports what it measured.
///
/// # Errors
/// Invalid arguments, rooms that cannot be created, or no subscriber or no publisher able
/// to connect. Individual connection failures are counted in the report instead.
pub async fn run_load(args: &BenchArgs) -> Result<LoadReport, BenchError> {
    args.validate()?;
    let wire = Wire::of(args);
    let minter = TokenMinter::from_args(args);
    let rooms = prepare_rooms(args, wire, minter.as_ref()).await?;
    let options = |websocket| ConnectOptions {
        login: args.login.clone(),
        passcode: args.passcode.clone(),
        vhost: args.vhost.clone(),
        token: None,
        source_ip: None,
        websocket,
        timeout: args.connect_timeout_duration(),
    };
    let reader_options = options(ConnectOptions::reader_config());
    let writer_options = options(ConnectOptions::writer_config());

    let origin = StdInstant::now();
    let mut report = LoadReport {
        label: args.label.clone(),
        mode: wire.name(),
        urls: args.urls.clone(),
        publish_urls: args.publisher_urls().to_vec(),
        rate: args.rate,
        publishers: args.publishers,
        subscribers: args.subscribers,
        rooms: args.rooms,
        size: args.size,
        duration_s: args.duration,
        warmup_s: args.warmup,
        server_pids: args.watch_pids.clone(),
        jwt: minter.is_some(),
        ..LoadReport::default()
    };

    // Subscribers first, each live (receipted) before anything is sent.
    let connect_started = StdInstant::now();
    let subscribers = connect_all(args, args.subscribers, |i| {
        let url = args.urls[i % args.urls.len()].clone();
        let destination = rooms.destinations[i % args.rooms].clone();
        let mut options = reader_options.clone();
        let token = token::mint_optional(
            minter.as_ref(),
            token::listener_user(i),
            &format!("bench-sub-{i}"),
        );
        async move {
            if wire == Wire::SocketIo {
                let mut connection = SocketIoConnection::open(&url, &options).await?;
                connection.join(&destination).await?;
                return Ok(Link::SocketIo(connection));
            }
            options.token = token?;
            let mut connection = StompConnection::open(&url, &options).await?;
            connection.subscribe(&format!("s{i}"), &destination).await?;
            Ok(Link::Stomp(connection))
        }
    })
    .await;
    let publisher_urls = args.publisher_urls().to_vec();
    let publishers = connect_all(args, args.publishers, |j| {
        let url = publisher_urls[j % publisher_urls.len()].clone();
        let mut options = writer_options.clone();
        // The token's user must be the senderId this publisher writes (SENDER_MISMATCH).
        let token = token::mint_optional(
            minter.as_ref(),
            token::publisher_user(u32::try_from(j).unwrap_or(u32::MAX)),
            &format!("bench-{j}"),
        );
        async move {
            if wire == Wire::SocketIo {
                return Ok(Link::SocketIo(
                    SocketIoConnection::open(&url, &options).await?,
                ));
            }
            options.token = token?;
            let mut connection = StompConnection::open(&url, &options).await?;
            if wire == Wire::ChatService {
                // chat-service reports rejected SENDs there; without it they are silent.
                connection
                    .subscribe(&format!("e{j}"), ERRORS_DESTINATION)
                    .await?;
            }
            Ok(Link::Stomp(connection))
        }
    })
    .await;
    report.connect_secs = connect_started.elapsed().as_secs_f64();
    for (_, result) in subscribers.iter().chain(publishers.iter()) {
        if let Err(error) = result {
            report.connect_failures += 1;
            report
                .first_connect_error
                .get_or_insert_with(|| error.to_string());
        }
    }
    let live_subscribers = subscribers.iter().filter(|(_, r)| r.is_ok()).count();
    let live_publishers = publishers.iter().filter(|(_, r)| r.is_ok()).count();
    report.connects_per_sec =
        (live_subscribers + live_publishers) as f64 / report.connect_secs.max(1e-9);
    if live_subscribers == 0 || live_publishers == 0 {
        return Err(BenchError::NoConnections(format!(
            "{live_subscribers} subscribers and {live_publishers} publishers connected; first error: {}",
            report.first_connect_error.as_deref().unwrap_or("none")
        )));
    }

    // The schedule, relative to `origin`.
    let start = StdInstant::now() + START_DELAY;
    let measure_from = start + args.warmup_duration();
    let send_end = measure_from + args.measure_duration();
    let drain_end = send_end + args.drain_duration();
    let context = Arc::new(RunContext {
        origin,
        measure_from_us: micros(measure_from - origin),
        live: LiveCounters::default(),
        latency: SharedLatency::new(),
        receipt_latency: SharedLatency::new(),
        receipts: AtomicU64::new(0),
        outcomes: args
            .outcome_log
            .as_ref()
            .map(|_| std::sync::Mutex::new(Vec::new())),
        sent_by_publisher: (0..args.publishers).map(|_| AtomicU64::new(0)).collect(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut subscriber_tasks = JoinSet::new();
    let mut subscriber_rooms = Vec::new();
    for (i, result) in subscribers {
        if let Ok(link) = result {
            subscriber_rooms.push(i % args.rooms);
            let context = context.clone();
            let stop = stop_rx.clone();
            let room = i % args.rooms;
            subscriber_tasks.spawn(async move {
                let outcome = match link {
                    Link::Stomp(connection) => subscriber_loop(connection, &context, stop).await,
                    Link::SocketIo(connection) => {
                        socketio::subscriber_loop(connection, &context, stop).await
                    }
                };
                (room, outcome)
            });
        }
    }
    let per_publisher_rate = args.rate / args.publishers as f64;
    let plans: Vec<PublisherPlan> = (0..args.publishers)
        .map(|j| {
            let room = j % args.rooms;
            PublisherPlan {
                index: u32::try_from(j).unwrap_or(u32::MAX),
                destination: match wire {
                    Wire::ChatService => CHAT_SEND_DESTINATION.to_owned(),
                    Wire::RawTopic | Wire::SocketIo => rooms.destinations[room].clone(),
                },
                room_id: rooms.ids[room],
                wire,
                receipts: args.receipts,
                size: args.size,
                interval: Duration::from_secs_f64(1.0 / per_publisher_rate),
                // Spread publishers evenly over one interval instead of all firing at once.
                phase: j as f64 / args.publishers as f64,
                start,
                send_end,
            }
        })
        .collect();
    report.scheduled = plans.iter().map(PublisherPlan::scheduled).sum();
    let mut publisher_tasks = JoinSet::new();
    for ((_, result), plan) in publishers.into_iter().zip(plans) {
        if let Ok(link) = result {
            let context = context.clone();
            publisher_tasks.spawn(async move {
                // A publisher stuck behind a server that stopped reading gives up at the
                // end of the drain; what it did not write counts as unsent.
                let deadline = Instant::from_std(drain_end);
                let _ = match link {
                    Link::Stomp(connection) => {
                        tokio::time::timeout_at(
                            deadline,
                            publisher_loop(connection, plan, &context),
                        )
                        .await
                    }
                    Link::SocketIo(connection) => {
                        tokio::time::timeout_at(
                            deadline,
                            socketio::publisher_loop(connection, plan, &context),
                        )
                        .await
                    }
                };
            });
        }
    }

    let progress = spawn_progress(args, context.clone(), start, measure_from, send_end);

    // The CPU window opens when measuring starts. Every CPU figure of the report covers
    // it: the server's, the generator's, the backends' and the whole machine's.
    tokio::time::sleep_until(Instant::from_std(measure_from)).await;
    let server_before = procstat::sample_all(&args.watch_pids);
    let bench_before = procstat::sample_self();
    let backends_before = sample_backends(args);
    let machine_before = procstat::sample_machine();
    let tasks_before = procstat::tree_cpu_secs(&procstat::ALL_PROCESSES);
    let delivered_before = context.live.delivered.load(Ordering::Relaxed);
    let sent_before = context.live.sent.load(Ordering::Relaxed);
    let window_start = StdInstant::now();

    while publisher_tasks.join_next().await.is_some() {}
    // Drain: until every owed delivery arrived or the drain time is up.
    let sent: Vec<u64> = context
        .sent_by_publisher
        .iter()
        .map(|count| count.load(Ordering::Relaxed))
        .collect();
    let owed: u64 = subscriber_rooms
        .iter()
        .map(|room| {
            (0..args.publishers)
                .filter(|p| p % args.rooms == *room)
                .map(|p| sent[p])
                .sum::<u64>()
        })
        .sum();
    let drain_deadline = Instant::from_std(drain_end.max(StdInstant::now()));
    while Instant::now() < drain_deadline && context.live.delivered.load(Ordering::Relaxed) < owed {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let window = window_start.elapsed().as_secs_f64();
    let server_after = procstat::sample_all(&args.watch_pids);
    let bench_after = procstat::sample_self();
    let backends_after = sample_backends(args);
    let machine_after = procstat::sample_machine();
    let tasks_after = procstat::tree_cpu_secs(&procstat::ALL_PROCESSES);
    let delivered_in_window = context.live.delivered.load(Ordering::Relaxed) - delivered_before;
    let sent_in_window = context.live.sent.load(Ordering::Relaxed) - sent_before;
    let _ = stop_tx.send(true);
    progress.abort();

    let mut totals = DeliveryTotals::default();
    let mut measured_deliveries = 0;
    while let Some(joined) = subscriber_tasks.join_next().await {
        let Ok((room, outcome)) = joined else {
            continue;
        };
        measured_deliveries += outcome.measured_deliveries;
        outcome.tracker.add_to(&mut totals, &sent, |publisher| {
            usize::try_from(publisher).is_ok_and(|p| p % args.rooms == room)
        });
    }

    report.sent = sent.iter().sum();
    report.unsent = report.scheduled.saturating_sub(report.sent);
    report.deliveries = totals;
    report.errors = context.live.errors.load(Ordering::Relaxed);
    report.disconnects = context.live.disconnects.load(Ordering::Relaxed);
    let measured_sent =
        (report.sent as f64 * args.duration / (args.warmup + args.duration)).round();
    report.sent_per_sec = per_second(measured_sent, args.duration);
    report.deliveries_per_sec = per_second(measured_deliveries as f64, args.duration);
    report.latency = context.latency.summary();
    if args.receipts {
        report.receipts = context.receipts.load(Ordering::Relaxed);
        report.receipt_latency = Some(context.receipt_latency.summary());
    }
    if let (Some(path), Some(outcomes)) = (&args.outcome_log, &context.outcomes) {
        let outcomes = outcomes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut text = String::with_capacity(outcomes.len() * 24);
        for (publisher, sent_us, outcome) in outcomes.iter() {
            text.push_str(&format!("{publisher} {sent_us} {outcome}\n"));
        }
        std::fs::write(path, text).map_err(|source| BenchError::Output {
            path: path.display().to_string(),
            source,
        })?;
    }
    if let (Some(before), Some(after)) = (server_before, server_after) {
        let cpu = after.cpu_secs - before.cpu_secs;
        report.server_cpu_s = Some(cpu);
        report.server_cpu_cores = Some(cpu / window.max(1e-9));
        report.server_peak_rss_bytes = Some(after.peak_rss_bytes);
        report.server_runqueue_wait_s = Some(after.runqueue_wait_secs - before.runqueue_wait_secs);
        if delivered_in_window > 0 {
            report.cpu_us_per_delivery = Some(cpu * 1e6 / delivered_in_window as f64);
        }
    }
    report.bench_cpu_s = cpu_delta(bench_before, bench_after);
    report.cpu_window_s = window;
    report.window_sent = sent_in_window;
    if let (Some(before), Some(after)) = (machine_before, machine_after) {
        let busy = after.busy_secs - before.busy_secs;
        report.machine_busy_cpu_s = Some(busy);
        report.machine_cpu_pct = Some(100.0 * busy / window.max(1e-9));
        report.machine_steal_cpu_s = Some(after.steal_secs - before.steal_secs);
    }
    if let (Some(before), Some(after)) = (tasks_before, tasks_after) {
        report.machine_tasks_cpu_s = Some(after - before);
    }
    for ((name, before), (_, after)) in backends_before.into_iter().zip(backends_after) {
        if let (Some(before), Some(after)) = (before, after) {
            let cpu = after - before;
            if sent_in_window > 0 {
                report
                    .backend_cpu_us_per_msg
                    .insert(name.clone(), cpu * 1e6 / sent_in_window as f64);
            }
            report.backend_cpu_s.insert(name, cpu);
        }
    }
    report.bench_runqueue_wait_s = bench_before
        .zip(bench_after)
        .map(|(before, after)| after.runqueue_wait_secs - before.runqueue_wait_secs);
    report.ok = report.deliveries.lost == 0
        && report.unsent == 0
        && report.deliveries.duplicates == 0
        && report.connect_failures == 0
        && report.latency.count > 0
        && report.latency.p99_ms < args.p99_limit_ms;
    Ok(report)
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

fn per_second(count: f64, secs: f64) -> f64 {
    if secs > 0.0 { count / secs } else { 0.0 }
}

fn cpu_delta(before: Option<ProcSample>, after: Option<ProcSample>) -> Option<f64> {
    Some(after?.cpu_secs - before?.cpu_secs)
}

/// CPU seconds of each `--watch-backend` process tree, in the flags' order.
fn sample_backends(args: &BenchArgs) -> Vec<(String, Option<f64>)> {
    args.watch_backends
        .iter()
        .map(|backend| (backend.name.clone(), procstat::tree_cpu_secs(&backend.pids)))
        .collect()
}

/// Messages a publisher with `rate` and `phase` (a fraction of one interval) is due to send
/// in `secs`: those with `(k + phase) / rate < secs`.
#[must_use]
pub fn scheduled_count(secs: f64, rate: f64, phase: f64) -> u64 {
    let slots = secs * rate - phase;
    if slots <= 0.0 {
        0
    } else {
        // k ranges over 0..ceil(slots) (a slot exactly at the end is not sent).
        slots.ceil() as u64
    }
}

async fn prepare_rooms(
    args: &BenchArgs,
    wire: Wire,
    minter: Option<&TokenMinter>,
) -> Result<Rooms, BenchError> {
    if wire != Wire::ChatService {
        let prefix = args.topic_prefix.clone().unwrap_or_else(|| {
            // A fresh topic per run: an earlier run's leftovers cannot leak into this one.
            let run = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            if wire == Wire::SocketIo {
                format!("bench.{run}.")
            } else {
                format!("/topic/bench.{run}.")
            }
        });
        return Ok(Rooms {
            destinations: (0..args.rooms).map(|i| format!("{prefix}{i}")).collect(),
            ids: (0..args.rooms).map(|i| i as i64).collect(),
        });
    }
    let authority = rooms::authority_of(&args.urls[0])?;
    let prefix = args
        .topic_prefix
        .clone()
        .unwrap_or_else(|| "/topic/chatroom/".to_owned());
    // Any user may create a room; the first publisher does.
    let token = token::mint_optional(minter, token::publisher_user(0), "bench-0")?;
    let mut ids = Vec::with_capacity(args.rooms);
    for i in 0..args.rooms {
        ids.push(rooms::create_room(&authority, &format!("bench-{i}"), token.as_deref()).await?);
    }
    Ok(Rooms {
        destinations: ids.iter().map(|id| format!("{prefix}{id}")).collect(),
        ids,
    })
}

/// Opens `count` connections with at most `--connect-concurrency` in flight; results come
/// back sorted by index so room and URL assignment stay deterministic.
async fn connect_all<F, Fut>(
    args: &BenchArgs,
    count: usize,
    open: F,
) -> Vec<(usize, Result<Link, BenchError>)>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<Link, BenchError>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(args.connect_concurrency));
    let mut tasks = JoinSet::new();
    for i in 0..count {
        let attempt = open(i);
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            (i, attempt.await)
        });
    }
    let mut results = Vec::with_capacity(count);
    while let Some(joined) = tasks.join_next().await {
        if let Ok(result) = joined {
            results.push(result);
        }
    }
    results.sort_by_key(|(i, _)| *i);
    results
}

/// What one subscriber hands back.
#[derive(Debug, Default)]
struct SubscriberOutcome {
    tracker: DeliveryTracker,
    /// Distinct deliveries of measured messages.
    measured_deliveries: u64,
}

impl SubscriberOutcome {
    /// Accounts for one delivered message whose body (or content) is `body`, received at
    /// `now_us`; `false` if it carries no bench marker.
    fn record(
        &mut self,
        body: &[u8],
        now_us: u64,
        context: &RunContext,
        latency: &mut LatencyRecorder,
    ) -> bool {
        let Some(marker) = Marker::find(body) else {
            self.tracker.unparsable += 1;
            return false;
        };
        let arrival = self.tracker.record(marker.publisher, marker.seq);
        if arrival != crate::tracker::Arrival::Duplicate
            && marker.sent_us >= context.measure_from_us
        {
            self.measured_deliveries += 1;
            latency.record(now_us.saturating_sub(marker.sent_us));
        }
        true
    }
}

async fn subscriber_loop(
    mut connection: StompConnection,
    context: &RunContext,
    mut stop: watch::Receiver<bool>,
) -> SubscriberOutcome {
    let mut outcome = SubscriberOutcome::default();
    let mut latency = context.latency.recorder();
    loop {
        let message = tokio::select! {
            _ = stop.changed() => break,
            message = connection.socket.next() => message,
        };
        match message {
            Some(Ok(Message::Text(text))) => connection.decoder.feed(text.as_bytes()),
            Some(Ok(Message::Binary(bytes))) => connection.decoder.feed(&bytes),
            Some(Ok(Message::Close(_)) | Err(_)) | None => {
                context.live.disconnects.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Some(Ok(_)) => continue,
        }
        // One clock reading per WebSocket message: the server batches frames, and they all
        // arrived at the same moment.
        let now_us = context.now_us();
        let mut delivered = 0;
        loop {
            match connection.decoder.next_item() {
                Ok(Some(Item::Frame(frame))) if frame.command == Command::Message => {
                    if outcome.record(&frame.body, now_us, context, &mut latency) {
                        delivered += 1;
                    }
                }
                Ok(Some(Item::Frame(frame))) if frame.command == Command::Error => {
                    context.live.errors.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    context.live.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
        context
            .live
            .delivered
            .fetch_add(delivered, Ordering::Relaxed);
    }
    outcome
}

/// One publisher's schedule and message shape.
#[derive(Debug, Clone)]
struct PublisherPlan {
    index: u32,
    /// The SEND destination, or the room name for Socket.IO.
    destination: String,
    room_id: i64,
    wire: Wire,
    receipts: bool,
    size: usize,
    interval: Duration,
    phase: f64,
    start: StdInstant,
    send_end: StdInstant,
}

impl PublisherPlan {
    fn due_at(&self, seq: u64) -> StdInstant {
        self.start + self.interval.mul_f64(seq as f64 + self.phase)
    }

    /// Messages due before `send_end`, counted with the same arithmetic as the send loop
    /// (a closed formula alone can be off by one in floating point).
    fn scheduled(&self) -> u64 {
        let secs = (self.send_end - self.start).as_secs_f64();
        let mut count = scheduled_count(secs, 1.0 / self.interval.as_secs_f64(), self.phase);
        while count > 0 && self.due_at(count - 1) >= self.send_end {
            count -= 1;
        }
        while self.due_at(count) < self.send_end {
            count += 1;
        }
        count
    }

    /// The SEND frame of message `seq`. Written directly rather than through a `Frame`: the
    /// headers are fixed ASCII, and this runs at the full publish rate.
    fn frame(&self, seq: u64, sent_us: u64) -> String {
        let marker = Marker {
            publisher: self.index,
            seq,
            sent_us,
        };
        let raw = self.wire == Wire::RawTopic;
        let mut body = String::with_capacity(self.size + 160);
        if raw {
            marker.write_padded(self.size, &mut body);
        } else {
            body.push_str(&format!(
                r#"{{"chatRoomId":{},"senderId":{},"senderNickname":"bench-{}","messageType":"TEXT","content":""#,
                self.room_id,
                token::publisher_user(self.index),
                self.index
            ));
            marker.write_padded(self.size, &mut body);
            body.push_str("\"}");
        }
        let content_type = if raw {
            "text/plain"
        } else {
            "application/json"
        };
        // The receipt id is the intended send time, so the RECEIPT alone gives the latency.
        let receipt = if self.receipts {
            format!("receipt:{sent_us}\n")
        } else {
            String::new()
        };
        format!(
            "SEND\ndestination:{}\ncontent-type:{content_type}\ncontent-length:{}\n{receipt}\n{body}\0",
            self.destination,
            body.len()
        )
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn publisher_loop(connection: StompConnection, plan: PublisherPlan, context: &RunContext) {
    let StompConnection {
        socket,
        mut decoder,
        ..
    } = connection;
    let (mut sink, mut stream) = socket.split();
    // The read side must keep moving, or the server's writes to us would back up; it
    // counts errors (chat-service sends rejected SENDs to /user/queue/errors) and times
    // RECEIPTs.
    let errors = async {
        let mut receipt_latency = context.receipt_latency.recorder();
        while let Some(Ok(message)) = stream.next().await {
            match message {
                Message::Text(text) => decoder.feed(text.as_bytes()),
                Message::Binary(bytes) => decoder.feed(&bytes),
                Message::Close(_) => break,
                _ => continue,
            }
            while let Ok(Some(item)) = decoder.next_item() {
                let Item::Frame(frame) = item else { continue };
                match frame.command {
                    Command::Error => {
                        context.live.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Command::Message => {
                        context.live.errors.fetch_add(1, Ordering::Relaxed);
                        if let Some(outcomes) = &context.outcomes {
                            let error: serde_json::Value =
                                serde_json::from_slice(&frame.body).unwrap_or_default();
                            let sent_us =
                                error["receiptId"].as_str().and_then(|id| id.parse().ok());
                            let code = error["code"].as_str().unwrap_or("UNKNOWN").to_owned();
                            if let Some(sent_us) = sent_us {
                                lock(outcomes).push((plan.index, sent_us, code));
                            }
                        }
                    }
                    Command::Receipt => {
                        let sent_us = frame
                            .header("receipt-id")
                            .and_then(|id| id.parse::<u64>().ok());
                        if frame.header("receipt-id") == Some(BYE_RECEIPT) {
                            // Every SEND before the DISCONNECT has been answered.
                            return;
                        }
                        context.receipts.fetch_add(1, Ordering::Relaxed);
                        if let (Some(outcomes), Some(sent_us)) = (&context.outcomes, sent_us) {
                            lock(outcomes).push((plan.index, sent_us, "RECEIPT".to_owned()));
                        }
                        if let Some(sent_us) = sent_us
                            && sent_us >= context.measure_from_us
                        {
                            receipt_latency.record(context.now_us().saturating_sub(sent_us));
                        }
                    }
                    _ => {}
                }
            }
        }
    };
    let sent_counter = &context.sent_by_publisher[plan.index as usize];
    let send = async {
        let mut seq = 0u64;
        loop {
            let due = plan.due_at(seq);
            if due >= plan.send_end {
                break;
            }
            tokio::time::sleep_until(Instant::from_std(due)).await;
            let now = StdInstant::now();
            let mut burst = 0;
            while burst < MAX_BURST {
                let due = plan.due_at(seq);
                if due > now || due >= plan.send_end {
                    break;
                }
                let frame = plan.frame(seq, micros(due - context.origin));
                if sink.feed(Message::text(frame)).await.is_err() {
                    return;
                }
                seq += 1;
                burst += 1;
                sent_counter.fetch_add(1, Ordering::Relaxed);
                context.live.sent.fetch_add(1, Ordering::Relaxed);
            }
            if sink.flush().await.is_err() {
                return;
            }
            if burst == MAX_BURST {
                tokio::task::yield_now().await;
            }
        }
        // Leave politely: a DISCONNECT with a receipt is answered only once every SEND
        // before it has been (a bare WebSocket Close would cut the last RECEIPTs short),
        // then the server closes.
        let _ = sink
            .send(Message::text(format!(
                "DISCONNECT\nreceipt:{BYE_RECEIPT}\n\n\0"
            )))
            .await;
    };
    // Both to the end: the answers to the last SENDs (RECEIPTs, errors) arrive after the
    // DISCONNECT is sent, and the server closes only once it has answered them.
    tokio::join!(send, errors);
}

fn spawn_progress(
    args: &BenchArgs,
    context: Arc<RunContext>,
    start: StdInstant,
    measure_from: StdInstant,
    send_end: StdInstant,
) -> tokio::task::JoinHandle<()> {
    let every = args.progress;
    let pids = args.watch_pids.clone();
    tokio::spawn(async move {
        if every <= 0.0 {
            return;
        }
        let period = Duration::from_secs_f64(every);
        let mut last = (StdInstant::now(), 0u64, 0u64, procstat::sample_all(&pids));
        loop {
            tokio::time::sleep(period).await;
            let now = StdInstant::now();
            let sent = context.live.sent.load(Ordering::Relaxed);
            let delivered = context.live.delivered.load(Ordering::Relaxed);
            let server = procstat::sample_all(&pids);
            let secs = (now - last.0).as_secs_f64();
            let cpu = match (last.3, server) {
                (Some(a), Some(b)) => {
                    format!(" server cpu {:.2} cores", (b.cpu_secs - a.cpu_secs) / secs)
                }
                _ => String::new(),
            };
            let phase = if now < start {
                "start"
            } else if now < measure_from {
                "warmup"
            } else if now < send_end {
                "measure"
            } else {
                "drain"
            };
            eprintln!(
                "[{:6.1}s {phase:7}] sent {:>8.0}/s delivered {:>9.0}/s  total sent {sent} delivered {delivered} errors {} disconnects {}{cpu}",
                now.saturating_duration_since(start).as_secs_f64(),
                (sent - last.1) as f64 / secs,
                (delivered - last.2) as f64 / secs,
                context.live.errors.load(Ordering::Relaxed),
                context.live.disconnects.load(Ordering::Relaxed),
            );
            last = (now, sent, delivered, server);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_counts_each_due_slot_once() {
        // 10 msg/s for 1 s from phase 0: slots at 0.0, 0.1, …, 0.9.
        assert_eq!(scheduled_count(1.0, 10.0, 0.0), 10);
        // Phase 0.5: slots at 0.05 … 0.95.
        assert_eq!(scheduled_count(1.0, 10.0, 0.5), 10);
        assert_eq!(scheduled_count(0.0, 10.0, 0.0), 0);
        assert_eq!(scheduled_count(0.04, 10.0, 0.5), 0);
        assert_eq!(scheduled_count(0.06, 10.0, 0.5), 1);
    }

    #[test]
    fn a_publisher_plan_sends_what_the_schedule_counts() {
        let start = StdInstant::now();
        let plan = PublisherPlan {
            index: 0,
            destination: "/topic/x".into(),
            room_id: 1,
            wire: Wire::RawTopic,
            receipts: false,
            size: 64,
            interval: Duration::from_millis(100),
            phase: 0.3,
            start,
            send_end: start + Duration::from_secs(2),
        };
        let due = (0..)
            .take_while(|seq| plan.due_at(*seq) < plan.send_end)
            .count();
        assert_eq!(due as u64, plan.scheduled());
        assert_eq!(plan.scheduled(), scheduled_count(2.0, 10.0, 0.3));
    }

    #[test]
    fn a_chat_send_frame_is_valid_stomp_with_the_marker_in_the_content() {
        let start = StdInstant::now();
        let plan = PublisherPlan {
            index: 4,
            destination: CHAT_SEND_DESTINATION.into(),
            room_id: 12,
            wire: Wire::ChatService,
            receipts: true,
            size: 100,
            interval: Duration::from_millis(1),
            phase: 0.0,
            start,
            send_end: start,
        };
        let wire = plan.frame(7, 1234);
        let mut decoder = crate::stomp_ws::decoder();
        decoder.feed(wire.as_bytes());
        let Ok(Some(Item::Frame(frame))) = decoder.next_item() else {
            panic!("not a frame: {wire:?}");
        };
        assert_eq!(frame.command, Command::Send);
        assert_eq!(frame.header("destination"), Some(CHAT_SEND_DESTINATION));
        let json: serde_json::Value = serde_json::from_slice(&frame.body).unwrap();
        assert_eq!(json["chatRoomId"], 12);
        // The sub of publisher 4's token in jwt mode.
        assert_eq!(json["senderId"], token::publisher_user(4));
        assert_eq!(json["senderId"], 5);
        assert_eq!(json["content"].as_str().unwrap().len(), 100);
        assert_eq!(
            Marker::find(&frame.body),
            Some(Marker {
                publisher: 4,
                seq: 7,
                sent_us: 1234
            })
        );
        // With receipts, the receipt id carries the intended send time.
        assert_eq!(frame.header("receipt"), Some("1234"));
    }
}
