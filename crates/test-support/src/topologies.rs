//! Real Redis topologies for failover tests, started from the local `redis-server` and
//! `redis-cli` binaries (Debian `redis-server` 7.0, which brings `redis-tools`):
//! [`SentinelGroup`] (a master, its replica and three sentinels) and [`RedisCluster`]
//! (three masters with one replica each). A test kills a master with SIGKILL, like a crash,
//! and waits for the promotion, so reconnect and fail-over paths run against the real thing
//! rather than a mock.
//!
//! Everything listens on 127.0.0.1 with persistence off. Each fixture owns one temporary
//! directory with one sub-directory per process (a cluster node writes its `nodes.conf` in
//! its working directory, and a sentinel rewrites its own config file), where every process
//! also writes its log. Dropping a fixture kills its processes; the directory is removed,
//! unless the test is panicking: then it is kept and its path and the tail of every log go
//! to stderr, which is what one needs to understand a failed fail-over.
//!
//! Admin queries go through `redis-cli` rather than a Redis client crate, so the fixtures do
//! not depend on (and cannot share a bug with) the client the product uses.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::process::{Child, Command};
use tokio::time::Instant;

/// How long a whole topology may take to come up before the fixture gives up. It normally
/// takes a few seconds; a loaded 2-core CI machine may be much slower.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one `redis-cli` admin query may take. A process that does not answer in this
/// time counts as not answering (a killed node, a hung one).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);
/// The pause between two polls of a topology's state.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How many ports one process is tried on before the start gives up: a failed start is
/// almost always a port another process took between our check and the server's bind.
const SPAWN_ATTEMPTS: usize = 5;
/// How many lines of each log a failure report shows.
const LOG_TAIL_LINES: usize = 20;
/// The log every process writes in its own directory (`--logfile`).
const LOG_FILE: &str = "redis.log";
/// Stdout and stderr of a process: where `redis-server` writes what happens before it opens
/// its log file, e.g. a configuration error.
const STDOUT_FILE: &str = "stdout.log";

/// Ports are handed out from `PORT_LOW..PORT_LOW + PORT_SPAN`. A cluster node also listens
/// on its port + [`CLUSTER_BUS_OFFSET`], so both ranges stay below Linux's ephemeral range
/// (32768 and up), where outgoing connections would take ports at random.
const PORT_LOW: u16 = 20_000;
const PORT_SPAN: u16 = 2_700;
/// A cluster node's bus port is its port + 10000 (a node on a port above 55535 fails).
const CLUSTER_BUS_OFFSET: u16 = 10_000;

/// A Redis master with one replica, watched by three sentinels (quorum 2) that fail over
/// fast: `down-after-milliseconds 1000`, `failover-timeout 5000`, `parallel-syncs 1`. A
/// master killed with [`kill_master`](Self::kill_master) is replaced by its replica within
/// about three seconds.
///
/// Dropping the group kills every process (see the [module docs](self) for the logs).
pub struct SentinelGroup {
    fixture: Fixture,
    /// The master's and the replica's ports, as started.
    data_ports: [u16; 2],
    sentinel_ports: [u16; 3],
}

impl SentinelGroup {
    /// The name under which the sentinels monitor the master.
    pub const SERVICE: &'static str = "mymaster";

    /// Starts the master, its replica and three sentinels and waits until every sentinel
    /// knows the master, the replica (with its link to the master up) and the two other
    /// sentinels, so that a fail-over can happen as soon as the master dies.
    ///
    /// # Panics
    /// When `redis-server` or `redis-cli` is missing, or the group is not ready within 30 s
    /// (the message then carries the tail of every log).
    pub async fn start() -> Self {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut fixture = Fixture::new("sentinel");
        let master = fixture.spawn("redis", deadline, data_node).await;
        let replica = fixture
            .spawn("redis", deadline, |port, dir| {
                let mut command = data_node(port, dir);
                command.args(["--replicaof", "127.0.0.1", &master.to_string()]);
                command
            })
            .await;
        let mut sentinel_ports = [0; 3];
        for sentinel in &mut sentinel_ports {
            *sentinel = fixture
                .spawn("sentinel", deadline, |port, dir| {
                    sentinel_node(port, dir, master)
                })
                .await;
        }
        let group = Self {
            fixture,
            data_ports: [master, replica],
            sentinel_ports,
        };
        if !poll_until(deadline, || group.is_ready()).await {
            let report = group.fixture.failure_report();
            panic!(
                "the sentinel group (master {master}, replica {replica}, sentinels \
                 {sentinel_ports:?}) was not ready within {START_TIMEOUT:?}: not every sentinel \
                 saw the master, the replica with its link up and the two other sentinels\n\
                 {report}"
            );
        }
        group
    }

    /// `redis-sentinel://127.0.0.1:S1?sentinelServiceName=mymaster&node=127.0.0.1:S2&node=127.0.0.1:S3`,
    /// the form fred's `Config::from_url` reads.
    #[must_use]
    pub fn url(&self) -> String {
        let [first, second, third] = self.sentinel_ports;
        format!(
            "redis-sentinel://127.0.0.1:{first}?sentinelServiceName={}\
             &node=127.0.0.1:{second}&node=127.0.0.1:{third}",
            Self::SERVICE
        )
    }

    /// The master's and the replica's ports, as started (the roles change on fail-over;
    /// [`master_port`](Self::master_port) gives the current master).
    #[must_use]
    pub fn data_ports(&self) -> [u16; 2] {
        self.data_ports
    }

    /// The current master's port, as the first sentinel that answers reports it.
    ///
    /// # Panics
    /// When no sentinel answers `SENTINEL get-master-addr-by-name`.
    pub async fn master_port(&self) -> u16 {
        for sentinel in self.sentinel_ports {
            if let Some(port) = sentinel_master(sentinel).await {
                return port;
            }
        }
        let report = self.fixture.failure_report();
        panic!(
            "no sentinel of {:?} answered SENTINEL get-master-addr-by-name {}\n{report}",
            self.sentinel_ports,
            Self::SERVICE
        );
    }

    /// Kills the current master with SIGKILL (a crash: no goodbye to replicas or sentinels)
    /// and returns its port.
    ///
    /// # Panics
    /// When the sentinels still name a master that was already killed: call
    /// [`wait_for_new_master`](Self::wait_for_new_master) between two kills.
    pub async fn kill_master(&mut self) -> u16 {
        let port = self.master_port().await;
        self.fixture.kill(port).await;
        port
    }

    /// Waits until every sentinel names the same master, other than `old_port`, and that
    /// server answers `ROLE` as a master; returns its port.
    ///
    /// # Panics
    /// When that does not happen `within` the given time, with what the sentinels said last
    /// and the tail of every log.
    pub async fn wait_for_new_master(&self, old_port: u16, within: Duration) -> u16 {
        let deadline = Instant::now() + within;
        let mut last_seen = Vec::new();
        loop {
            last_seen.clear();
            for sentinel in self.sentinel_ports {
                last_seen.push(sentinel_master(sentinel).await);
            }
            if let Some(Some(port)) = last_seen.first().copied()
                && port != old_port
                && last_seen.iter().all(|seen| *seen == Some(port))
                && role(port).await.as_deref() == Some("master")
            {
                return port;
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        let report = self.fixture.failure_report();
        panic!(
            "the sentinels {:?} did not agree on a new master (other than port {old_port}) \
             within {within:?}; they named {last_seen:?} last\n{report}",
            self.sentinel_ports
        );
    }

    /// Whether every sentinel sees the master, its replica with the link up and the two
    /// other sentinels.
    async fn is_ready(&self) -> bool {
        let [master, replica] = self.data_ports;
        for sentinel in self.sentinel_ports {
            let Some(text) = cli(sentinel, &["SENTINEL", "master", Self::SERVICE]).await else {
                return false;
            };
            let view = key_values(&text);
            let master_ok = field(&view, "port") == Some(&master.to_string())
                && field(&view, "flags") == Some("master")
                && field(&view, "num-slaves") == Some("1")
                && field(&view, "num-other-sentinels") == Some("2");
            if !master_ok {
                return false;
            }
            let Some(text) = cli(sentinel, &["SENTINEL", "replicas", Self::SERVICE]).await else {
                return false;
            };
            let replicas = records(&text, "name");
            let replica_ok = replicas.iter().any(|view| {
                field(view, "port") == Some(&replica.to_string())
                    && field(view, "flags") == Some("slave")
                    && field(view, "master-link-status") == Some("ok")
            });
            if !replica_ok {
                return false;
            }
        }
        true
    }
}

/// A Redis Cluster of three masters, each with one replica, made by `redis-cli --cluster
/// create`. `cluster-node-timeout` is 1000 ms, so a replica takes over about two to three
/// seconds after its master dies.
///
/// Dropping the cluster kills every node (see the [module docs](self) for the logs).
pub struct RedisCluster {
    fixture: Fixture,
    ports: Vec<u16>,
}

impl RedisCluster {
    /// How many nodes the cluster has: three masters and their replicas.
    const NODES: usize = 6;
    const MASTERS: usize = 3;

    /// Starts six nodes, joins them with `redis-cli --cluster create … --cluster-replicas 1`
    /// and waits until every node says `cluster_state:ok`, knows all six nodes, and every
    /// master has its replica attached with the replication link up (a replica that never
    /// synced would refuse to take over).
    ///
    /// # Panics
    /// When `redis-server` or `redis-cli` is missing, or the cluster is not ready within
    /// 30 s (the message then carries the tail of every log).
    pub async fn start() -> Self {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut fixture = Fixture::new("cluster");
        let mut ports = Vec::with_capacity(Self::NODES);
        for _ in 0..Self::NODES {
            ports.push(fixture.spawn("node", deadline, cluster_node).await);
        }
        let cluster = Self { fixture, ports };
        cluster.create(deadline).await;
        if !poll_until(deadline, || cluster.is_ready()).await {
            let report = cluster.fixture.failure_report();
            panic!(
                "the Redis Cluster on ports {:?} was not ready within {START_TIMEOUT:?}: not \
                 every node said cluster_state:ok with 3 masters and their connected \
                 replicas\n{report}",
                cluster.ports
            );
        }
        cluster
    }

    /// `redis-cluster://127.0.0.1:P1?node=127.0.0.1:P2&node=127.0.0.1:P3`: three seed nodes,
    /// the form fred's `Config::from_url` reads. A client learns the others from them.
    #[must_use]
    pub fn url(&self) -> String {
        format!(
            "redis-cluster://127.0.0.1:{}?node=127.0.0.1:{}&node=127.0.0.1:{}",
            self.ports[0], self.ports[1], self.ports[2]
        )
    }

    /// The ports of all six nodes, as started (killed ones included).
    #[must_use]
    pub fn ports(&self) -> Vec<u16> {
        self.ports.clone()
    }

    /// The port of the master that owns `key`'s hash slot, as the first live node that
    /// answers sees it.
    ///
    /// # Panics
    /// When no live node answers, or none knows a healthy master for that slot (e.g. right
    /// after a kill: use [`wait_for_failover`](Self::wait_for_failover) first).
    pub async fn master_of(&self, key: &str) -> u16 {
        let slot = self.slot_of(key).await;
        for port in self.fixture.live_ports() {
            if let Some(nodes) = cluster_nodes(port).await
                && let Some(owner) = owner_of(&nodes, slot)
            {
                return owner.port;
            }
        }
        let report = self.fixture.failure_report();
        panic!(
            "no live node of the cluster knows a healthy master for slot {slot} (key {key:?})\n{report}"
        );
    }

    /// Kills the master that owns `key`'s slot with SIGKILL (a crash) and returns its port.
    ///
    /// # Panics
    /// As [`master_of`](Self::master_of).
    pub async fn kill_master_of(&mut self, key: &str) -> u16 {
        let port = self.master_of(key).await;
        self.fixture.kill(port).await;
        port
    }

    /// Waits until all live nodes agree that a live master other than `old_port` owns
    /// `key`'s slot, that master says so itself, and every live node says
    /// `cluster_state:ok`; returns the new master's port.
    ///
    /// # Panics
    /// When that does not happen `within` the given time, with the tail of every log.
    pub async fn wait_for_failover(&self, key: &str, old_port: u16, within: Duration) -> u16 {
        let slot = self.slot_of(key).await;
        let deadline = Instant::now() + within;
        loop {
            if let Some(port) = self.agreed_owner(slot).await
                && port != old_port
            {
                return port;
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        let report = self.fixture.failure_report();
        panic!(
            "the cluster did not fail over slot {slot} (key {key:?}) from port {old_port} to \
             another master within {within:?}\n{report}"
        );
    }

    /// The union of `PUBSUB SHARDCHANNELS` over the live nodes, sorted: the shard channels
    /// that have a subscriber somewhere in the cluster. Channel names with a line break
    /// would be split (`redis-cli` prints one per line).
    ///
    /// # Panics
    /// When a live node does not answer.
    pub async fn shard_channels(&self) -> Vec<String> {
        let mut channels = Vec::new();
        for port in self.fixture.live_ports() {
            let Some(text) = cli(port, &["PUBSUB", "SHARDCHANNELS"]).await else {
                let report = self.fixture.failure_report();
                panic!("cluster node {port} did not answer PUBSUB SHARDCHANNELS\n{report}");
            };
            channels.extend(
                text.lines()
                    .filter(|line| !line.is_empty())
                    .map(String::from),
            );
        }
        channels.sort_unstable();
        channels.dedup();
        channels
    }

    /// Runs `redis-cli --cluster create` over the six nodes; its output goes to
    /// `cluster-create.log` in the fixture's directory.
    async fn create(&self, deadline: Instant) {
        let mut command = Command::new("redis-cli");
        command
            .arg("--cluster")
            .arg("create")
            .args(self.ports.iter().map(|port| format!("127.0.0.1:{port}")))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let outcome = tokio::time::timeout_at(deadline, command.output()).await;
        let (succeeded, output) = match outcome {
            Err(_elapsed) => (false, format!("timed out after {START_TIMEOUT:?}")),
            Ok(Err(e)) => panic!("{}", missing_binary("redis-cli", &e)),
            Ok(Ok(output)) => (
                output.status.success(),
                format!(
                    "{}{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr),
                    output.status
                ),
            ),
        };
        // Best effort: the file only helps diagnose a failure.
        let _ = std::fs::write(self.fixture.dir.join("cluster-create.log"), &output);
        if !succeeded {
            let report = self.fixture.failure_report();
            panic!(
                "redis-cli --cluster create on ports {:?} failed:\n{output}\n{report}",
                self.ports
            );
        }
    }

    /// `CLUSTER KEYSLOT key` on the first live node that answers.
    async fn slot_of(&self, key: &str) -> u16 {
        for port in self.fixture.live_ports() {
            if let Some(slot) = cli(port, &["CLUSTER", "KEYSLOT", key])
                .await
                .and_then(|text| text.trim().parse().ok())
            {
                return slot;
            }
        }
        let report = self.fixture.failure_report();
        panic!("no live node of the cluster answered CLUSTER KEYSLOT {key:?}\n{report}");
    }

    /// The master of `slot` when every live node says `cluster_state:ok` and names the same
    /// live master for it, which sees itself as that slot's master.
    async fn agreed_owner(&self, slot: u16) -> Option<u16> {
        let live = self.fixture.live_ports();
        let mut agreed = None;
        for &port in &live {
            let info = cli(port, &["CLUSTER", "INFO"]).await?;
            if info_field(&info, "cluster_state") != Some("ok") {
                return None;
            }
            let owner = owner_of(&cluster_nodes(port).await?, slot)?.port;
            if *agreed.get_or_insert(owner) != owner {
                return None;
            }
        }
        let owner = agreed?;
        let own_view = cluster_nodes(owner).await?;
        let myself = own_view.iter().find(|node| node.has_flag("myself"))?;
        (live.contains(&owner) && myself.is_healthy_master() && myself.owns(slot)).then_some(owner)
    }

    /// Whether every node says `cluster_state:ok`, knows the six nodes and sees three
    /// healthy masters covering all slots and three connected replicas, and each node's own
    /// replication is set up (a master with one replica, a replica with its link up).
    async fn is_ready(&self) -> bool {
        for &port in &self.ports {
            let Some(info) = cli(port, &["CLUSTER", "INFO"]).await else {
                return false;
            };
            if info_field(&info, "cluster_state") != Some("ok")
                || info_field(&info, "cluster_known_nodes") != Some("6")
                || info_field(&info, "cluster_slots_ok") != Some("16384")
            {
                return false;
            }
            let Some(nodes) = cluster_nodes(port).await else {
                return false;
            };
            let masters = nodes
                .iter()
                .filter(|node| node.is_healthy_master() && !node.slots.is_empty())
                .count();
            let replicas = nodes
                .iter()
                .filter(|node| node.has_flag("slave") && !node.is_failing() && node.connected)
                .count();
            if masters != Self::MASTERS || replicas != Self::NODES - Self::MASTERS {
                return false;
            }
            let Some(replication) = cli(port, &["INFO", "replication"]).await else {
                return false;
            };
            let replication_ok = match info_field(&replication, "role") {
                Some("master") => info_field(&replication, "connected_slaves") == Some("1"),
                Some("slave") => info_field(&replication, "master_link_status") == Some("up"),
                _ => false,
            };
            if !replication_ok {
                return false;
            }
        }
        true
    }
}

/// The processes of one topology and the directory they run in. Dropping it kills them and
/// removes the directory, or keeps it and prints the logs' tails when the thread panics.
struct Fixture {
    dir: PathBuf,
    nodes: Vec<Node>,
    /// Set once a panic message carried the logs, so `Drop` does not print them twice.
    reported: AtomicBool,
}

/// One `redis-server` process (a data node, a sentinel or a cluster node).
struct Node {
    port: u16,
    dir: PathBuf,
    /// `None` once killed.
    process: Option<Child>,
}

impl Fixture {
    /// Creates `chat-{kind}-{pid}-{time}-{n}` in the temporary directory.
    fn new(kind: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "chat-{kind}-{}-{nanos}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| {
            panic!("cannot create the fixture directory {}: {e}", dir.display())
        });
        Self {
            dir,
            nodes: Vec::new(),
            reported: AtomicBool::new(false),
        }
    }

    /// Starts the process `command` builds for a free port and its own directory (named
    /// `{role}-{port}`), waits until that very process answers on the port, and returns the
    /// port. A process that exits early (most likely its port was taken meanwhile) is
    /// retried on another port.
    async fn spawn(
        &mut self,
        role: &str,
        deadline: Instant,
        command: impl Fn(u16, &Path) -> Command,
    ) -> u16 {
        let mut failures = String::new();
        for attempt in 1..=SPAWN_ATTEMPTS {
            let port = free_port();
            let dir = self.dir.join(format!("{role}-{port}"));
            std::fs::create_dir_all(&dir)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
            let stdout = std::fs::File::create(dir.join(STDOUT_FILE)).unwrap_or_else(|e| {
                panic!("cannot create {}: {e}", dir.join(STDOUT_FILE).display())
            });
            let stderr = stdout
                .try_clone()
                .expect("a second handle to the stdout file");
            let process = command(port, &dir)
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr)
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("{}", missing_binary("redis-server", &e)));
            let mut node = Node {
                port,
                dir,
                process: Some(process),
            };
            if node.wait_until_serving(deadline).await {
                self.nodes.push(node);
                return port;
            }
            node.kill().await;
            let _ = write!(
                failures,
                "attempt {attempt} on port {port}:\n{}",
                node.logs_tail()
            );
            if Instant::now() >= deadline {
                break;
            }
        }
        let report = self.failure_report();
        panic!(
            "a {role} redis-server did not start within {START_TIMEOUT:?} (or after \
             {SPAWN_ATTEMPTS} attempts):\n{failures}\n{report}"
        );
    }

    /// The ports of the processes not killed, in start order.
    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|node| node.process.is_some())
            .map(|node| node.port)
            .collect()
    }

    /// Kills the process on `port` with SIGKILL and waits until it is gone.
    async fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|node| node.port == port && node.process.is_some())
            .unwrap_or_else(|| {
                panic!("port {port} is not a running process of this fixture (already killed?)")
            });
        node.kill().await;
    }

    /// The directory's path and the tail of every log, for a panic message. Marks the logs
    /// as reported, so `Drop` only repeats the path.
    fn failure_report(&self) -> String {
        self.reported.store(true, Ordering::Relaxed);
        let mut report = format!("Redis topology files kept in {}\n", self.dir.display());
        let create_log = self.dir.join("cluster-create.log");
        if create_log.exists() {
            report.push_str(&file_tail(&create_log));
        }
        for node in &self.nodes {
            report.push_str(&node.logs_tail());
        }
        report
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // start_kill works outside a runtime too; kill_on_drop would need one.
        for node in &mut self.nodes {
            if let Some(process) = node.process.as_mut() {
                let _ = process.start_kill();
            }
        }
        // SIGKILL takes a moment: wait (briefly) so no process still writes into the
        // directory while it is removed or read.
        let until = std::time::Instant::now() + Duration::from_secs(2);
        for node in &mut self.nodes {
            if let Some(process) = node.process.as_mut() {
                while matches!(process.try_wait(), Ok(None)) && std::time::Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        if std::thread::panicking() {
            if self.reported.load(Ordering::Relaxed) {
                eprintln!("Redis topology files kept in {}", self.dir.display());
            } else {
                eprintln!("{}", self.failure_report());
            }
        } else {
            // Best effort: a leftover directory in /tmp is harmless.
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Node {
    /// `true` once this very process (its pid, from `INFO server`) answers on the port:
    /// a bare TCP check could be answered by another server that won the port. `false` if
    /// the process exited or the deadline passed.
    async fn wait_until_serving(&mut self, deadline: Instant) -> bool {
        let Some(process) = self.process.as_mut() else {
            return false;
        };
        let Some(pid) = process.id().map(|pid| pid.to_string()) else {
            return false;
        };
        loop {
            if let Ok(Some(_exit)) = process.try_wait() {
                return false;
            }
            if let Some(info) = cli(self.port, &["INFO", "server"]).await
                && info_field(&info, "process_id") == Some(pid.as_str())
            {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, then waits until the process is gone.
    async fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            // Already exited is fine: gone is what we want.
            let _ = process.kill().await;
        }
    }

    /// The last lines of this process's log and of its stdout/stderr (when not empty).
    fn logs_tail(&self) -> String {
        let mut tail = file_tail(&self.dir.join(LOG_FILE));
        let stdout = self.dir.join(STDOUT_FILE);
        if std::fs::metadata(&stdout).is_ok_and(|meta| meta.len() > 0) {
            tail.push_str(&file_tail(&stdout));
        }
        tail
    }
}

/// `--- path (last lines) ---` and the last [`LOG_TAIL_LINES`] lines of the file.
fn file_tail(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(LOG_TAIL_LINES);
            let mut tail = format!(
                "--- {} (last {} lines) ---\n",
                path.display(),
                lines.len() - start
            );
            for line in &lines[start..] {
                tail.push_str(line);
                tail.push('\n');
            }
            tail
        }
        Err(e) => format!("--- {}: cannot read it ({e}) ---\n", path.display()),
    }
}

/// A port `p` such that both `p` and `p + 10000` (a cluster node's bus) could be bound a
/// moment ago. Ports come from a process-wide counter seeded by the pid, so parallel tests
/// and parallel test binaries start far apart; the race with another process taking the
/// port before the server binds it is retried by [`Fixture::spawn`].
fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = u64::from(std::process::id()) * 7_919;
    for _ in 0..PORT_SPAN {
        let n = u64::from(NEXT.fetch_add(1, Ordering::Relaxed));
        let offset = u16::try_from((seed + n) % u64::from(PORT_SPAN))
            .expect("an offset below PORT_SPAN fits in u16");
        let port = PORT_LOW + offset;
        if can_bind(port) && can_bind(port + CLUSTER_BUS_OFFSET) {
            return port;
        }
    }
    panic!(
        "no free port p with p + {CLUSTER_BUS_OFFSET} free on 127.0.0.1 in {PORT_LOW}..{}",
        PORT_LOW + PORT_SPAN
    );
}

fn can_bind(port: u16) -> bool {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// `redis-server` for `port` with its data and log in `dir` and persistence off. Masters
/// start a replica's full sync at once instead of waiting 5 s (`repl-diskless-sync-delay`)
/// for more replicas to join it: a replica that has not synced cannot be promoted.
fn data_node(port: u16, dir: &Path) -> Command {
    let mut command = Command::new("redis-server");
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(["--repl-diskless-sync-delay", "0"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join(LOG_FILE));
    command
}

/// A cluster node: a data node with cluster mode on, its `nodes.conf` in `dir`, and a node
/// timeout of one second so a dead master is replaced within a few seconds.
fn cluster_node(port: u16, dir: &Path) -> Command {
    let mut command = data_node(port, dir);
    command.args([
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
    ]);
    command.args(["--cluster-node-timeout", "1000"]);
    command
}

/// A sentinel watching the master on `master`, with its own config file in `dir` (a
/// sentinel rewrites its config file with what it learns: sentinels must not share one).
fn sentinel_node(port: u16, dir: &Path, master: u16) -> Command {
    let service = SentinelGroup::SERVICE;
    let config = dir.join("sentinel.conf");
    let text = format!(
        "sentinel monitor {service} 127.0.0.1 {master} 2\n\
         sentinel down-after-milliseconds {service} 1000\n\
         sentinel failover-timeout {service} 5000\n\
         sentinel parallel-syncs {service} 1\n"
    );
    std::fs::write(&config, text)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", config.display()));
    let mut command = Command::new("redis-server");
    command
        .arg(&config)
        .arg("--sentinel")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join(LOG_FILE));
    command
}

/// Runs `redis-cli -p {port} -e {args}` and returns its output, without `\r`; `None` when
/// the server is down, answers an error (`-e` makes that a failure exit) or does not answer
/// within [`ADMIN_TIMEOUT`].
///
/// # Panics
/// When `redis-cli` cannot be run at all.
async fn cli(port: u16, args: &[&str]) -> Option<String> {
    let mut command = Command::new("redis-cli");
    command
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-e"])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(ADMIN_TIMEOUT, command.output()).await {
        Err(_elapsed) => return None,
        Ok(Err(e)) => panic!("{}", missing_binary("redis-cli", &e)),
        Ok(Ok(output)) => output,
    };
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).replace('\r', ""))
}

/// What to tell someone whose machine lacks a binary.
fn missing_binary(binary: &str, error: &std::io::Error) -> String {
    format!(
        "cannot run {binary} ({error}); install Redis 7 (apt-get install redis-server, which \
         brings redis-cli) so that redis-server and redis-cli are on PATH"
    )
}

/// Polls `check` every [`POLL_INTERVAL`] until it says `true` (then `true`) or the
/// deadline passes (then `false`). It is checked at least once.
async fn poll_until<F, Fut>(deadline: Instant, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The value of `key:value` in `INFO`-style text (`INFO`, `CLUSTER INFO`).
fn info_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
}

/// A flat reply of alternating keys and values, one per line (what `redis-cli` prints for
/// `SENTINEL master`), as pairs.
fn key_values(text: &str) -> Vec<(&str, &str)> {
    let mut lines = text.lines();
    let mut pairs = Vec::new();
    while let (Some(key), Some(value)) = (lines.next(), lines.next()) {
        pairs.push((key, value));
    }
    pairs
}

/// Several flat key/value records printed one after another (`SENTINEL replicas`), split
/// where `first_key` starts a new one.
fn records<'a>(text: &'a str, first_key: &str) -> Vec<Vec<(&'a str, &'a str)>> {
    let mut records: Vec<Vec<(&str, &str)>> = Vec::new();
    for pair in key_values(text) {
        match records.last_mut() {
            Some(record) if pair.0 != first_key => record.push(pair),
            _ => records.push(vec![pair]),
        }
    }
    records
}

fn field<'a>(pairs: &[(&'a str, &'a str)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// The master's port a sentinel reports (`SENTINEL get-master-addr-by-name`), if it answers.
async fn sentinel_master(sentinel: u16) -> Option<u16> {
    let text = cli(
        sentinel,
        &[
            "SENTINEL",
            "get-master-addr-by-name",
            SentinelGroup::SERVICE,
        ],
    )
    .await?;
    text.lines().nth(1)?.trim().parse().ok()
}

/// The first line of `ROLE` (`master`, `slave` or `sentinel`), if the server answers.
async fn role(port: u16) -> Option<String> {
    let text = cli(port, &["ROLE"]).await?;
    text.lines().next().map(|line| line.trim().to_owned())
}

/// One line of `CLUSTER NODES`:
/// `<id> <ip:port@bus[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>…`.
#[derive(Debug)]
struct ClusterNode {
    port: u16,
    flags: String,
    connected: bool,
    /// Inclusive slot ranges this node serves (migrating/importing entries left out).
    slots: Vec<(u16, u16)>,
}

impl ClusterNode {
    fn parse(line: &str) -> Option<Self> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            return None;
        }
        let address = fields[1].split(['@', ',']).next()?;
        let port = address.rsplit_once(':')?.1.parse().ok()?;
        let slots = fields[8..]
            .iter()
            .filter(|slot| !slot.starts_with('['))
            .filter_map(|slot| match slot.split_once('-') {
                Some((first, last)) => Some((first.parse().ok()?, last.parse().ok()?)),
                None => slot.parse().ok().map(|single| (single, single)),
            })
            .collect();
        Some(Self {
            port,
            flags: fields[2].to_owned(),
            connected: fields[7] == "connected",
            slots,
        })
    }

    fn has_flag(&self, flag: &str) -> bool {
        self.flags.split(',').any(|f| f == flag)
    }

    /// Marked `fail` or `fail?` (suspected by this node).
    fn is_failing(&self) -> bool {
        self.has_flag("fail") || self.has_flag("fail?")
    }

    fn is_healthy_master(&self) -> bool {
        self.has_flag("master") && !self.is_failing()
    }

    fn owns(&self, slot: u16) -> bool {
        self.slots
            .iter()
            .any(|&(first, last)| (first..=last).contains(&slot))
    }
}

/// `CLUSTER NODES` of the node on `port`, parsed, if it answers.
async fn cluster_nodes(port: u16) -> Option<Vec<ClusterNode>> {
    let text = cli(port, &["CLUSTER", "NODES"]).await?;
    Some(text.lines().filter_map(ClusterNode::parse).collect())
}

/// The healthy master that serves `slot` in one node's view.
fn owner_of(nodes: &[ClusterNode], slot: u16) -> Option<&ClusterNode> {
    nodes
        .iter()
        .find(|node| node.is_healthy_master() && node.owns(slot))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cluster_nodes_lines() {
        let line = "9ba3 127.0.0.1:21031@31031 myself,master - 0 1796240235000 1 connected \
                    0-5460 5465 [5470->-00a7]";
        let node = ClusterNode::parse(line).expect("a valid line");
        assert_eq!(node.port, 21031);
        assert!(node.is_healthy_master() && node.has_flag("myself") && node.connected);
        assert!(node.owns(0) && node.owns(5460) && node.owns(5465));
        assert!(!node.owns(5461) && !node.owns(5470));

        let failed =
            ClusterNode::parse("b413 127.0.0.1:21033@31033,host master,fail - 1 2 3 disconnected")
                .expect("a valid line");
        assert_eq!(failed.port, 21033);
        assert!(failed.is_failing() && !failed.is_healthy_master() && !failed.connected);
        assert!(ClusterNode::parse("garbage").is_none());
    }

    #[test]
    fn reads_info_and_key_value_replies() {
        let info = "# Cluster\ncluster_state:ok\ncluster_slots_ok:16384\n";
        assert_eq!(info_field(info, "cluster_state"), Some("ok"));
        assert_eq!(info_field(info, "cluster_slots"), None);

        let replicas =
            "name\na:1\nport\n1\nflags\nslave\nname\nb:2\nport\n2\nrunid\n\nflags\nslave\n";
        let records = records(replicas, "name");
        assert_eq!(records.len(), 2);
        assert_eq!(field(&records[1], "port"), Some("2"));
        assert_eq!(field(&records[1], "runid"), Some(""));
        assert_eq!(field(&records[1], "flags"), Some("slave"));
    }

    #[test]
    fn free_ports_leave_room_for_the_cluster_bus() {
        let port = free_port();
        assert!((PORT_LOW..PORT_LOW + PORT_SPAN).contains(&port));
        assert!(port + CLUSTER_BUS_OFFSET < 32_768);
    }
}
