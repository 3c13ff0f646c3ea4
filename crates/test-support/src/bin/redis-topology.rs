//! `redis-topology`: the Sentinel group or the Redis Cluster of the failover tests, held up
//! for a script (`scripts/bench-faults sentinel|cluster`) so load runs use the very same
//! fixtures as the tests instead of a second copy in shell.
//!
//! ```text
//! redis-topology sentinel|cluster
//!   stdout, once ready:    url <REDIS_URL for chat-server>
//!   stdin `kill-master [KEY]` (KEY: the channel whose slot's master dies, cluster only)
//!   stdout:                killed <port>
//!                          promoted <new port> <milliseconds from the kill>
//!   end of stdin, SIGTERM or SIGINT: everything stops, the process exits
//! ```
//!
//! The fixtures' processes and directories go when this process ends; a failed start or
//! failover panics with the tail of every log, as in the tests.

use std::time::{Duration, Instant};

use chat_test_support::topologies::{RedisCluster, SentinelGroup};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::signal::unix::{SignalKind, signal};

/// Longer than the tests allow: a loaded machine may promote slowly, and the script wants
/// the figure rather than a panic.
const FAILOVER_WITHIN: Duration = Duration::from_secs(60);

enum Topology {
    Sentinel(SentinelGroup),
    Cluster(RedisCluster),
}

impl Topology {
    fn url(&self) -> String {
        match self {
            Self::Sentinel(group) => group.url(),
            Self::Cluster(cluster) => cluster.url(),
        }
    }

    /// Kills the master (of `key`'s slot on a cluster), says so, and waits for its
    /// successor: `(new master port, time from the kill)`.
    async fn kill_master(&mut self, key: Option<&str>) -> Result<(u16, Duration), String> {
        match (self, key) {
            (Self::Sentinel(group), None) => {
                let killed = group.kill_master().await;
                let started = Instant::now();
                println!("killed {killed}");
                let promoted = group.wait_for_new_master(killed, FAILOVER_WITHIN).await;
                Ok((promoted, started.elapsed()))
            }
            (Self::Cluster(cluster), Some(key)) => {
                let killed = cluster.kill_master_of(key).await;
                let started = Instant::now();
                println!("killed {killed}");
                let promoted = cluster
                    .wait_for_failover(key, killed, FAILOVER_WITHIN)
                    .await;
                Ok((promoted, started.elapsed()))
            }
            (Self::Sentinel(_), Some(_)) => Err("a Sentinel group has one master: no KEY".into()),
            (Self::Cluster(_), None) => {
                Err("say whose master: kill-master KEY (e.g. the room's channel)".into())
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let kind = std::env::args().nth(1).unwrap_or_default();
    let mut topology = match kind.as_str() {
        "sentinel" => Topology::Sentinel(SentinelGroup::start().await),
        "cluster" => Topology::Cluster(RedisCluster::start().await),
        _ => {
            eprintln!(
                "usage: redis-topology sentinel|cluster (commands on stdin: kill-master [KEY])"
            );
            std::process::exit(2);
        }
    };
    println!("url {}", topology.url());
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
    loop {
        // A signal ends the loop like the end of stdin, so the fixtures' Drop stops the
        // Redis processes instead of leaving them behind.
        let line = tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => line,
                Ok(None) | Err(_) => break,
            },
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        };
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("kill-master"), key) => match topology.kill_master(key).await {
                Ok((promoted, took)) => println!("promoted {promoted} {}", took.as_millis()),
                Err(why) => println!("error {why}"),
            },
            (None, _) => {}
            (Some(other), _) => println!("error unknown command {other:?} (kill-master [KEY])"),
        }
    }
}
