//! Presence mode: what presence costs chat-service. `--connections` idle STOMP connections
//! in `--rooms` rooms, spread so that every room has members on every `--url`; each
//! connection is a distinct open-mode user (`login` = 1000000 + i), subscribed to its room
//! and to its room's presence topic. Reported: each server's RSS per connection (before the
//! first connection vs with all of them held), Redis `used_memory` before and after, and a
//! reconnect storm (close all, reopen all): the join and leave events per second that
//! watchers (one per instance for each room, not in any room) receive, and how long until
//! every room's snapshot is right again, both as the watchers track it and for a fresh
//! presence SUBSCRIBE on every instance.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chat_stomp::{Command, Frame};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::idle::source_ip;
use crate::procstat;
use crate::rooms;
use crate::stomp_ws::{ConnectOptions, StompConnection};
use crate::{BenchArgs, BenchError};

/// Time for the servers' allocators to settle after the last connection before RSS is read.
const SETTLE: Duration = Duration::from_secs(2);
/// Presence topics one watcher connection subscribes to (the server allows 64
/// subscriptions per connection by default, the errors queue included).
const ROOMS_PER_WATCHER: usize = 50;
/// The first user id; connection i is user `FIRST_USER + i`.
const FIRST_USER: i64 = 1_000_000;

/// One server's memory figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerMemory {
    /// Its process id (`--watch-pid`, in the order of `--url`).
    pub pid: u32,
    /// Its endpoint.
    pub url: String,
    /// Member connections it holds (watchers not counted).
    pub connections: u64,
    /// VmRSS before the first connection, bytes.
    pub rss_before_bytes: Option<u64>,
    /// VmRSS with every connection held, bytes.
    pub rss_after_bytes: Option<u64>,
    /// `(after - before) / connections`.
    pub rss_per_connection_bytes: Option<f64>,
}

/// The outcome of [`run_presence`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct PresenceReport {
    /// `--label`.
    pub label: String,
    /// `presence`, or `presence-no-watch` (`--no-watch`: room subscriptions only).
    pub mode: &'static str,
    /// Member connections asked for.
    pub connections: u64,
    /// Rooms.
    pub rooms: u64,
    /// Instances (`--url`).
    pub instances: u64,
    /// Member connections open when memory was read.
    pub open: u64,
    /// Member connections that failed to open (first round).
    pub connect_failures: u64,
    /// The first failure, for the operator.
    pub first_connect_error: Option<String>,
    /// Seconds to open the member connections (CONNECT, two SUBSCRIBEs with receipts).
    pub connect_secs: f64,
    /// Watcher connections (presence only, in no room).
    pub watchers: u64,
    /// Per server.
    pub servers: Vec<ServerMemory>,
    /// Redis `INFO memory` `used_memory` before the first connection, bytes.
    pub redis_used_memory_before_bytes: Option<u64>,
    /// The same with every connection held.
    pub redis_used_memory_after_bytes: Option<u64>,
    /// `(after - before) / open`.
    pub redis_bytes_per_connection: Option<f64>,
    /// Watchers' rooms that matched the truth before the storm (of `rooms x instances`).
    pub watched_right_before_storm: u64,
    /// Seconds to close every member connection.
    pub storm_close_secs: f64,
    /// Seconds to reopen them all (right after the close).
    pub storm_reopen_secs: f64,
    /// Reopen attempts that failed.
    pub storm_reopen_failures: u64,
    /// Leave events the watchers received from the storm's start to convergence.
    pub storm_leave_events: u64,
    /// Join events, likewise.
    pub storm_join_events: u64,
    /// What a watcher set owes: one leave and one join per member per instance.
    pub storm_expected_events_each: u64,
    /// Events per second over the span from the first to the last storm event.
    pub storm_events_per_sec: f64,
    /// The busiest whole second.
    pub storm_peak_events_per_sec: u64,
    /// Seconds from the storm's start until every watcher's view equals the truth.
    pub watchers_right_after_secs: Option<f64>,
    /// Seconds from the storm's start until a fresh presence SUBSCRIBE on every instance
    /// gives the true snapshot of every room.
    pub snapshots_right_after_secs: Option<f64>,
    /// Rounds of fresh snapshots taken until then.
    pub snapshot_rounds: u64,
    /// Member connections the server closed while held.
    pub dropped_while_held: u64,
    /// The generator's open-file limit.
    pub nofile_limit: Option<u64>,
}

/// What one room looks like: user id to connection count.
type Members = BTreeMap<i64, u64>;

/// The watchers' view and their event log.
#[derive(Default)]
struct Views {
    /// (watcher instance, room id) to members.
    rooms: HashMap<(usize, i64), Members>,
    /// When each join or leave arrived, and which.
    events: Vec<(Instant, bool)>,
}

/// Runs presence mode as `args` describe.
///
/// # Errors
/// Invalid arguments, rooms that cannot be created, or no watcher could connect.
pub async fn run_presence(args: &BenchArgs) -> Result<PresenceReport, BenchError> {
    args.validate()?;
    if !args.watch_pids.is_empty() && args.watch_pids.len() != args.urls.len() {
        return Err(BenchError::InvalidArgs(
            "--presence: give one --watch-pid per --url, in the same order".into(),
        ));
    }
    let authority = rooms::authority_of(&args.urls[0])?;
    let mut room_ids = Vec::with_capacity(args.rooms);
    for i in 0..args.rooms {
        room_ids.push(rooms::create_room(&authority, &format!("bench-presence-{i}"), None).await?);
    }
    let mut report = PresenceReport {
        label: args.label.clone(),
        mode: if args.no_watch {
            "presence-no-watch"
        } else {
            "presence"
        },
        connections: args.connections as u64,
        rooms: args.rooms as u64,
        instances: args.urls.len() as u64,
        nofile_limit: rlimit::getrlimit(rlimit::Resource::NOFILE)
            .ok()
            .map(|(soft, _)| soft),
        ..PresenceReport::default()
    };
    let truth = truth(args, &room_ids);
    let rss_before: Vec<_> = args
        .watch_pids
        .iter()
        .map(|&pid| procstat::sample(pid).map(|s| s.rss_bytes))
        .collect();
    report.redis_used_memory_before_bytes = match &args.redis_url {
        Some(url) => redis_used_memory(url).await,
        None => None,
    };

    // Watchers first, so they see every join.
    let views = Arc::new(Mutex::new(Views::default()));
    let mut watchers = JoinSet::new();
    for (instance, url) in args.urls.iter().enumerate() {
        if args.no_watch {
            break;
        }
        for chunk in room_ids.chunks(ROOMS_PER_WATCHER) {
            let connection = StompConnection::open(url, &options(args, None, 0)).await?;
            watchers.spawn(watch(connection, instance, chunk.to_vec(), views.clone()));
            report.watchers += 1;
        }
    }

    let dropped = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut holders = JoinSet::new();
    let (open, failures, first_error) =
        open_members(args, &room_ids, &mut holders, &dropped, &stop_rx).await;
    report.connect_secs = started.elapsed().as_secs_f64();
    report.open = open;
    report.connect_failures = failures;
    report.first_connect_error = first_error;
    tokio::time::sleep(SETTLE).await;
    tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;

    for (instance, url) in args.urls.iter().enumerate() {
        let pid = args.watch_pids.get(instance).copied().unwrap_or(0);
        let connections = (0..args.connections)
            .filter(|&i| instance_of(args, i) == instance)
            .count() as u64;
        let before = rss_before.get(instance).copied().flatten();
        let after = procstat::sample(pid).map(|s| s.rss_bytes);
        report.servers.push(ServerMemory {
            pid,
            url: url.clone(),
            connections,
            rss_before_bytes: before,
            rss_after_bytes: after,
            rss_per_connection_bytes: before
                .zip(after)
                .filter(|_| connections > 0)
                .map(|(b, a)| (a as f64 - b as f64) / connections as f64),
        });
    }
    report.redis_used_memory_after_bytes = match &args.redis_url {
        Some(url) => redis_used_memory(url).await,
        None => None,
    };
    report.redis_bytes_per_connection = report
        .redis_used_memory_before_bytes
        .zip(report.redis_used_memory_after_bytes)
        .filter(|_| report.open > 0)
        .map(|(b, a)| (a as f64 - b as f64) / report.open as f64);
    if args.no_watch {
        eprintln!(
            "[presence] {} of {} connections open in {:.1}s (room subscriptions only)",
            report.open, args.connections, report.connect_secs
        );
        report.dropped_while_held = dropped.load(Ordering::Relaxed);
        let _ = stop_tx.send(true);
        holders.abort_all();
        return Ok(report);
    }
    report.watched_right_before_storm = rooms_right(&views, &truth, args.urls.len());
    eprintln!(
        "[presence] {} of {} connections open in {:.1}s; {} of {} watched rooms right; storm next",
        report.open,
        args.connections,
        report.connect_secs,
        report.watched_right_before_storm,
        args.rooms * args.urls.len()
    );

    // The storm: close every member connection, then open them all again at once.
    let storm = Instant::now();
    views.lock().unwrap().events.clear();
    let _ = stop_tx.send(true);
    while holders.join_next().await.is_some() {}
    report.storm_close_secs = storm.elapsed().as_secs_f64();
    report.dropped_while_held = dropped.load(Ordering::Relaxed);
    let (stop_tx, stop_rx) = watch::channel(false);
    let reopen = Instant::now();
    let (_, failures, _) = open_members(args, &room_ids, &mut holders, &dropped, &stop_rx).await;
    report.storm_reopen_secs = reopen.elapsed().as_secs_f64();
    report.storm_reopen_failures = failures;

    let deadline = storm + Duration::from_secs_f64(args.storm_timeout);
    let all = (args.rooms * args.urls.len()) as u64;
    while Instant::now() < deadline {
        if report.watchers_right_after_secs.is_none()
            && rooms_right(&views, &truth, args.urls.len()) == all
        {
            report.watchers_right_after_secs = Some(storm.elapsed().as_secs_f64());
        }
        if report.snapshots_right_after_secs.is_none() {
            report.snapshot_rounds += 1;
            if fresh_snapshots_right(args, &room_ids, &truth).await {
                report.snapshots_right_after_secs = Some(storm.elapsed().as_secs_f64());
            }
        }
        if report.watchers_right_after_secs.is_some() && report.snapshots_right_after_secs.is_some()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    {
        let views = views.lock().unwrap();
        report.storm_leave_events = views.events.iter().filter(|(_, join)| !join).count() as u64;
        report.storm_join_events = views.events.iter().filter(|(_, join)| *join).count() as u64;
        report.storm_expected_events_each = (args.connections * args.urls.len()) as u64;
        if let (Some(first), Some(last)) = (views.events.first(), views.events.last()) {
            let span = last.0.duration_since(first.0).as_secs_f64().max(1e-3);
            report.storm_events_per_sec = views.events.len() as f64 / span;
            let mut buckets: BTreeMap<u64, u64> = BTreeMap::new();
            for (at, _) in &views.events {
                *buckets
                    .entry(at.duration_since(first.0).as_secs())
                    .or_default() += 1;
            }
            report.storm_peak_events_per_sec = buckets.values().copied().max().unwrap_or(0);
        }
    }
    let _ = stop_tx.send(true);
    holders.abort_all();
    watchers.abort_all();
    Ok(report)
}

/// Connection i: room i % rooms, on instance (i / rooms) % instances, so every room has
/// members on every instance.
fn instance_of(args: &BenchArgs, i: usize) -> usize {
    (i / args.rooms) % args.urls.len()
}

fn options(args: &BenchArgs, login: Option<i64>, i: usize) -> ConnectOptions {
    ConnectOptions {
        login: login.map(|l| l.to_string()),
        passcode: None,
        vhost: args.vhost.clone(),
        token: None,
        source_ip: source_ip(args.source_ips, i),
        websocket: ConnectOptions::reader_config(),
        timeout: args.connect_timeout_duration(),
    }
}

/// Room id to its members as they should be: one connection per user.
fn truth(args: &BenchArgs, room_ids: &[i64]) -> HashMap<i64, Members> {
    let mut truth: HashMap<i64, Members> = room_ids.iter().map(|&r| (r, Members::new())).collect();
    for i in 0..args.connections {
        let room = room_ids[i % room_ids.len()];
        truth
            .get_mut(&room)
            .map(|m| m.insert(FIRST_USER + i as i64, 1));
    }
    truth
}

/// Opens every member connection; returns (opened, failed, first error).
async fn open_members(
    args: &BenchArgs,
    room_ids: &[i64],
    holders: &mut JoinSet<()>,
    dropped: &Arc<AtomicU64>,
    stop: &watch::Receiver<bool>,
) -> (u64, u64, Option<String>) {
    let permits = Arc::new(Semaphore::new(args.connect_concurrency));
    let mut attempts = JoinSet::new();
    for i in 0..args.connections {
        let url = args.urls[instance_of(args, i)].clone();
        let room = room_ids[i % room_ids.len()];
        let options = options(args, Some(FIRST_USER + i as i64), i);
        let watch = !args.no_watch;
        let permit = permits.clone().acquire_owned().await;
        attempts.spawn(async move {
            let _permit = permit;
            let mut connection = StompConnection::open(&url, &options).await?;
            connection
                .subscribe("room", &format!("/topic/chatroom/{room}"))
                .await?;
            if watch {
                connection
                    .subscribe("presence", &format!("/topic/chatroom/{room}/presence"))
                    .await?;
            }
            Ok::<_, BenchError>(connection)
        });
    }
    let (mut opened, mut failed, mut first) = (0, 0, None);
    while let Some(result) = attempts.join_next().await {
        match result {
            Ok(Ok(connection)) => {
                opened += 1;
                holders.spawn(hold(connection, dropped.clone(), stop.clone()));
            }
            Ok(Err(error)) => {
                failed += 1;
                first.get_or_insert_with(|| error.to_string());
            }
            Err(error) => {
                failed += 1;
                first.get_or_insert_with(|| error.to_string());
            }
        }
    }
    if args.progress > 0.0 {
        eprintln!("[presence] opened {opened}, failed {failed}");
    }
    (opened, failed, first)
}

/// Holds one member connection, reading (and dropping) its presence events, until told
/// to stop; then the socket is closed.
async fn hold(
    mut connection: StompConnection,
    dropped: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => {
                let _ = connection.socket.close(None).await;
                return;
            }
            message = connection.socket.next() => match message {
                Some(Ok(message)) if !message.is_close() => {}
                _ => {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
        }
    }
}

/// One watcher: subscribes to the presence of `rooms` and keeps `views` up to date.
async fn watch(
    mut connection: StompConnection,
    instance: usize,
    rooms: Vec<i64>,
    views: Arc<Mutex<Views>>,
) {
    for room in &rooms {
        let frame = Frame::new(Command::Subscribe)
            .with_header("id", format!("p{room}"))
            .with_header("destination", format!("/topic/chatroom/{room}/presence"));
        if connection.send_frame(&frame).await.is_err() {
            return;
        }
    }
    while let Ok(frame) = connection.next_frame().await {
        if frame.command != Command::Message {
            continue;
        }
        let Ok(body) = serde_json::from_slice::<Value>(&frame.body) else {
            continue;
        };
        let Some(room) = body["chatRoomId"].as_i64() else {
            continue;
        };
        let mut views = views.lock().unwrap();
        match body["type"].as_str() {
            Some("snapshot") => {
                views.rooms.insert((instance, room), members_of(&body));
            }
            Some(kind @ ("join" | "leave")) => {
                let join = kind == "join";
                views.events.push((Instant::now(), join));
                let members = views.rooms.entry((instance, room)).or_default();
                if let Some(user) = body["userId"].as_i64() {
                    if join {
                        members.insert(user, 1);
                    } else {
                        members.remove(&user);
                    }
                }
            }
            _ => {}
        }
    }
}

fn members_of(snapshot: &Value) -> Members {
    snapshot["members"]
        .as_array()
        .map(|members| {
            members
                .iter()
                .filter_map(|m| Some((m["userId"].as_i64()?, m["connections"].as_u64()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// Watched (instance, room) pairs whose member set equals the truth.
fn rooms_right(views: &Mutex<Views>, truth: &HashMap<i64, Members>, instances: usize) -> u64 {
    let views = views.lock().unwrap();
    let mut right = 0;
    for instance in 0..instances {
        for (room, members) in truth {
            let want: BTreeSet<_> = members.keys().collect();
            if let Some(seen) = views.rooms.get(&(instance, *room))
                && seen.keys().collect::<BTreeSet<_>>() == want
            {
                right += 1;
            }
        }
    }
    right
}

/// A fresh presence SUBSCRIBE for every room on every instance: true when every snapshot
/// equals the truth (connection counts included).
async fn fresh_snapshots_right(
    args: &BenchArgs,
    room_ids: &[i64],
    truth: &HashMap<i64, Members>,
) -> bool {
    let mut checks = JoinSet::new();
    for url in &args.urls {
        for chunk in room_ids.chunks(ROOMS_PER_WATCHER) {
            let (url, chunk, options) = (url.clone(), chunk.to_vec(), options(args, None, 0));
            let want: Vec<Members> = chunk.iter().map(|r| truth[r].clone()).collect();
            checks.spawn(async move {
                let check = async {
                    let mut connection = StompConnection::open(&url, &options).await.ok()?;
                    for room in &chunk {
                        let frame = Frame::new(Command::Subscribe)
                            .with_header("id", format!("p{room}"))
                            .with_header("destination", format!("/topic/chatroom/{room}/presence"));
                        connection.send_frame(&frame).await.ok()?;
                    }
                    let mut seen = HashMap::new();
                    while seen.len() < chunk.len() {
                        let frame = connection.next_frame().await.ok()?;
                        let body: Value = serde_json::from_slice(&frame.body).ok()?;
                        if body["type"] == "snapshot"
                            && let Some(room) = body["chatRoomId"].as_i64()
                        {
                            seen.insert(room, members_of(&body));
                        }
                    }
                    let _ = connection.socket.close(None).await;
                    Some(chunk.iter().zip(&want).all(|(r, w)| seen.get(r) == Some(w)))
                };
                tokio::time::timeout(Duration::from_secs(10), check)
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or(false)
            });
        }
    }
    let mut all = true;
    while let Some(result) = checks.join_next().await {
        all &= result.unwrap_or(false);
    }
    all
}

/// `used_memory` from `INFO memory` of the Redis at `redis://host:port`, with a minimal
/// RESP exchange; `None` if it does not answer.
pub async fn redis_used_memory(url: &str) -> Option<u64> {
    let authority = url
        .strip_prefix("redis://")?
        .split('/')
        .next()?
        .rsplit('@')
        .next()?
        .to_owned();
    let exchange = async {
        let mut stream = TcpStream::connect(&authority).await.ok()?;
        stream
            .write_all(b"*2\r\n$4\r\nINFO\r\n$6\r\nmemory\r\n")
            .await
            .ok()?;
        let mut reply = Vec::new();
        let mut buffer = [0u8; 8192];
        loop {
            let n = stream.read(&mut buffer).await.ok()?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&buffer[..n]);
            if let Some(value) = used_memory_of(&reply) {
                return Some(value);
            }
        }
        used_memory_of(&reply)
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

/// The `used_memory:` line of an INFO reply, once it is complete.
fn used_memory_of(reply: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(reply);
    text.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|value| value.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn used_memory_is_read_from_an_info_reply() {
        let reply = b"$60\r\n# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n";
        assert_eq!(used_memory_of(reply), Some(1_048_576));
        assert_eq!(used_memory_of(b"$10\r\n# Memory\r\n"), None);
    }

    #[test]
    fn every_room_has_members_on_every_instance() {
        let args = BenchArgs::try_parse_from([
            "chat-bench",
            "--presence",
            "--connections",
            "40",
            "--rooms",
            "10",
            "--url",
            "ws://a/ws",
            "ws://b/ws",
        ])
        .unwrap();
        let mut seen = BTreeSet::new();
        for i in 0..40 {
            seen.insert((i % 10, instance_of(&args, i)));
        }
        assert_eq!(seen.len(), 20, "10 rooms x 2 instances");
        let truth = truth(&args, &(1..=10).collect::<Vec<_>>());
        assert!(truth.values().all(|members| members.len() == 4));
    }
}
