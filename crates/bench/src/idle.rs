//! Idle mode: open as many STOMP connections as the machine allows, each subscribed to a
//! room and otherwise silent, hold them, and report how much resident memory each one costs
//! the server. Source addresses rotate over 127.0.0.2.. so the ~28k ephemeral ports of one
//! address are not the limit.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::procstat::{self, ProcSample};
use crate::rooms;
use crate::stomp_ws::{ConnectOptions, StompConnection};
use crate::token::{self, TokenMinter};
use crate::{BenchArgs, BenchError};

/// Time for the server's allocator to settle after the last connection before RSS is read.
const SETTLE: Duration = Duration::from_secs(2);

/// The outcome of [`run_idle`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct IdleReport {
    /// `--label`.
    pub label: String,
    /// Always `idle`.
    pub mode: &'static str,
    /// Connections attempted.
    pub attempted: u64,
    /// Connections open (CONNECTED and subscribed) when RSS was read.
    pub open: u64,
    /// Attempts that failed.
    pub connect_failures: u64,
    /// The first failure, for the operator.
    pub first_connect_error: Option<String>,
    /// Connections the server closed while they were held.
    pub dropped_while_held: u64,
    /// Every connection sent a JWT (`--jwt-secret`): the server verified one per CONNECT.
    pub jwt: bool,
    /// Seconds to open them all (the ramp: TCP, WebSocket, CONNECT, SUBSCRIBE with its
    /// receipt, --connect-concurrency at a time).
    pub connect_secs: f64,
    /// Connections established per second over `connect_secs` (failures not counted).
    pub connects_per_sec: f64,
    /// Watched server processes.
    pub server_pids: Vec<u32>,
    /// Their RSS before the first connection, bytes.
    pub server_rss_before_bytes: Option<u64>,
    /// Their RSS with all connections held (after the hold), bytes.
    pub server_rss_after_bytes: Option<u64>,
    /// Their peak RSS, bytes.
    pub server_peak_rss_bytes: Option<u64>,
    /// `(after - before) / open`: what one idle connection costs the server.
    pub server_rss_per_connection_bytes: Option<f64>,
    /// Server CPU seconds while the connections sat idle (heart-beats and timers).
    pub server_cpu_while_idle_s: Option<f64>,
    /// The generator's own RSS per connection (it is on the same machine).
    pub bench_rss_per_connection_bytes: Option<f64>,
    /// The open-file limit the generator ran with.
    pub nofile_limit: Option<u64>,
}

/// Runs idle mode as `args` describe.
///
/// # Errors
/// Invalid arguments or rooms that cannot be created. Failed connections are counted.
pub async fn run_idle(args: &BenchArgs) -> Result<IdleReport, BenchError> {
    args.validate()?;
    let minter = TokenMinter::from_args(args);
    let destinations = idle_destinations(args, minter.as_ref()).await?;
    let mut report = IdleReport {
        label: args.label.clone(),
        mode: "idle",
        attempted: args.connections as u64,
        jwt: minter.is_some(),
        server_pids: args.watch_pids.clone(),
        nofile_limit: rlimit::getrlimit(rlimit::Resource::NOFILE)
            .ok()
            .map(|(soft, _)| soft),
        ..IdleReport::default()
    };
    let server_before = procstat::sample_all(&args.watch_pids);
    let bench_before = procstat::sample_self();
    report.server_rss_before_bytes = server_before.map(|s| s.rss_bytes);

    let open = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(args.connect_concurrency));
    let mut attempts = JoinSet::new();
    let mut holders = JoinSet::new();
    let started = Instant::now();
    let progress = spawn_progress(args.progress, open.clone(), args.connections);
    for i in 0..args.connections {
        let options = ConnectOptions {
            login: args.login.clone(),
            passcode: args.passcode.clone(),
            vhost: args.vhost.clone(),
            token: token::mint_optional(
                minter.as_ref(),
                token::listener_user(i),
                &format!("bench-idle-{i}"),
            )?,
            source_ip: source_ip(args.source_ips, i),
            websocket: ConnectOptions::reader_config(),
            timeout: args.connect_timeout_duration(),
        };
        let url = args.urls[i % args.urls.len()].clone();
        let destination = destinations[i % destinations.len()].clone();
        let permit = permits.clone().acquire_owned().await;
        // Reap finished attempts as we go so the set does not grow with the count.
        while let Some(result) = attempts.try_join_next() {
            account(&mut report, result, &mut holders, &open, &dropped, &stop_rx);
        }
        attempts.spawn(async move {
            let _permit = permit;
            let mut connection = StompConnection::open(&url, &options).await?;
            connection
                .subscribe(&format!("idle{i}"), &destination)
                .await?;
            Ok::<_, BenchError>(connection)
        });
    }
    while let Some(result) = attempts.join_next().await {
        account(&mut report, result, &mut holders, &open, &dropped, &stop_rx);
    }
    report.connect_secs = started.elapsed().as_secs_f64();
    report.connects_per_sec = open.load(Ordering::Relaxed) as f64 / report.connect_secs.max(1e-9);

    tokio::time::sleep(SETTLE).await;
    let cpu_before = procstat::sample_all(&args.watch_pids);
    tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    let server_after = procstat::sample_all(&args.watch_pids);
    let bench_after = procstat::sample_self();
    progress.abort();

    report.open = open.load(Ordering::Relaxed);
    report.dropped_while_held = dropped.load(Ordering::Relaxed);
    report.server_rss_after_bytes = server_after.map(|s| s.rss_bytes);
    report.server_peak_rss_bytes = server_after.map(|s| s.peak_rss_bytes);
    report.server_rss_per_connection_bytes =
        per_connection(server_before, server_after, report.open);
    report.server_cpu_while_idle_s = cpu_before
        .zip(server_after)
        .map(|(before, after)| after.cpu_secs - before.cpu_secs);
    report.bench_rss_per_connection_bytes = per_connection(bench_before, bench_after, report.open);

    let _ = stop_tx.send(true);
    holders.abort_all();
    Ok(report)
}

fn per_connection(before: Option<ProcSample>, after: Option<ProcSample>, open: u64) -> Option<f64> {
    let (before, after) = before.zip(after)?;
    (open > 0).then(|| (after.rss_bytes as f64 - before.rss_bytes as f64) / open as f64)
}

/// 127.0.0.2 … 127.0.0.(1+count) in turn; `None` (kernel's choice) when `count` is 0.
#[must_use]
pub fn source_ip(count: u8, connection: usize) -> Option<IpAddr> {
    if count == 0 {
        return None;
    }
    let offset = u8::try_from(connection % usize::from(count)).unwrap_or(0);
    Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + offset.min(253))))
}

async fn idle_destinations(
    args: &BenchArgs,
    minter: Option<&TokenMinter>,
) -> Result<Vec<String>, BenchError> {
    if args.raw_topic {
        let prefix = args
            .topic_prefix
            .clone()
            .unwrap_or_else(|| "/topic/bench.idle.".to_owned());
        return Ok((0..args.rooms).map(|i| format!("{prefix}{i}")).collect());
    }
    let authority = rooms::authority_of(&args.urls[0])?;
    let prefix = args
        .topic_prefix
        .clone()
        .unwrap_or_else(|| "/topic/chatroom/".to_owned());
    // Any user may create a room; use the id a first publisher would have.
    let token = token::mint_optional(minter, token::publisher_user(0), "bench-0")?;
    let mut destinations = Vec::with_capacity(args.rooms);
    for i in 0..args.rooms {
        let id =
            rooms::create_room(&authority, &format!("bench-idle-{i}"), token.as_deref()).await?;
        destinations.push(format!("{prefix}{id}"));
    }
    Ok(destinations)
}

type Attempt = Result<Result<StompConnection, BenchError>, tokio::task::JoinError>;

fn account(
    report: &mut IdleReport,
    result: Attempt,
    holders: &mut JoinSet<()>,
    open: &Arc<AtomicU64>,
    dropped: &Arc<AtomicU64>,
    stop: &watch::Receiver<bool>,
) {
    match result {
        Ok(Ok(connection)) => {
            open.fetch_add(1, Ordering::Relaxed);
            holders.spawn(hold(
                connection,
                open.clone(),
                dropped.clone(),
                stop.clone(),
            ));
        }
        Ok(Err(error)) => {
            report.connect_failures += 1;
            report
                .first_connect_error
                .get_or_insert_with(|| error.to_string());
        }
        Err(join_error) => {
            report.connect_failures += 1;
            report
                .first_connect_error
                .get_or_insert_with(|| join_error.to_string());
        }
    }
}

/// Keeps one connection open, reading only to notice that the server closed it.
async fn hold(
    mut connection: StompConnection,
    open: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            message = connection.socket.next() => match message {
                Some(Ok(message)) if !message.is_close() => {}
                _ => {
                    open.fetch_sub(1, Ordering::Relaxed);
                    dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
        }
    }
}

fn spawn_progress(every: f64, open: Arc<AtomicU64>, target: usize) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if every <= 0.0 {
            return;
        }
        let started = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs_f64(every)).await;
            eprintln!(
                "[{:6.1}s idle] open {} of {target}",
                started.elapsed().as_secs_f64(),
                open.load(Ordering::Relaxed)
            );
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_rotate_over_the_loopback_range() {
        assert_eq!(source_ip(0, 5), None);
        assert_eq!(
            source_ip(3, 0),
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        );
        assert_eq!(
            source_ip(3, 4),
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)))
        );
        assert_eq!(
            source_ip(3, 5),
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4)))
        );
    }
}
