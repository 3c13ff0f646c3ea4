//! Redis fixtures: [`redis_url`] for a shared Redis (CI's `CHAT_TEST_REDIS_URL`, else a
//! testcontainers Redis 7, else a clear failure), [`unique_channel`] so parallel tests do not
//! hear each other, and [`ThrowawayRedis`], a private `redis-server` a test may stop and
//! restart to exercise reconnects.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use testcontainers_modules::redis::Redis;
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::{ContainerAsync, ImageExt};
use tokio::process::{Child, Command};

/// The variable CI sets to a running Redis (e.g. `redis://127.0.0.1:6379`).
pub const REDIS_URL_VAR: &str = "CHAT_TEST_REDIS_URL";
/// The module's default image is Redis 5; the product targets 7.
const REDIS_IMAGE_TAG: &str = "7.2-alpine";

/// A Redis for one test. Keep it alive for the whole test: it owns the container, if any.
pub struct TestRedis {
    url: String,
    _container: Option<ContainerAsync<Redis>>,
}

impl TestRedis {
    /// `redis://host:port` of this Redis.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// A Redis to test against: `CHAT_TEST_REDIS_URL` when set, otherwise a Redis 7 container.
///
/// # Panics
/// When neither is available, with a message saying what to set. Tests never skip silently.
pub async fn redis_url() -> TestRedis {
    if let Ok(url) = std::env::var(REDIS_URL_VAR)
        && !url.trim().is_empty()
    {
        return TestRedis {
            url,
            _container: None,
        };
    }
    let started = Redis::default().with_tag(REDIS_IMAGE_TAG).start().await;
    match started {
        Ok(container) => {
            let host = container.get_host().await.expect("container host");
            let port = container
                .get_host_port_ipv4(6379)
                .await
                .expect("container port 6379");
            TestRedis {
                url: format!("redis://{host}:{port}"),
                _container: Some(container),
            }
        }
        Err(e) => panic!(
            "no Redis for integration tests: {REDIS_URL_VAR} is not set and a Redis container \
             could not be started ({e}). Set {REDIS_URL_VAR}=redis://127.0.0.1:6379 (a local \
             redis-server) or start Docker."
        ),
    }
}

/// A channel name no other test (or test run) uses: `{prefix}:{pid}:{time}:{n}`.
#[must_use]
pub fn unique_channel(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{prefix}:{}:{nanos}:{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A `redis-server` process of this test alone, on a free port of 127.0.0.1, with
/// persistence off. The binary must be on `PATH`. Dropping it kills the server.
pub struct ThrowawayRedis {
    port: u16,
    process: Option<Child>,
}

impl ThrowawayRedis {
    /// How long a start may take before the fixture gives up.
    const START_TIMEOUT: Duration = Duration::from_secs(10);

    /// Starts a server on a free port and waits until it accepts connections.
    ///
    /// # Panics
    /// When `redis-server` is not on `PATH` or does not come up.
    pub async fn start() -> Self {
        let port = free_port();
        let mut redis = Self {
            port,
            process: None,
        };
        redis.launch().await;
        redis
    }

    /// `redis://127.0.0.1:{port}`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL, like a crash) and waits until it is gone.
    pub async fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            // Already exited is fine: stopped is what we want.
            let _ = process.kill().await;
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing answers, as with a
    /// hung host or a half-open network path.
    pub async fn freeze(&self) {
        self.signal("-STOP").await;
    }

    /// Lets a frozen server go on (SIGCONT).
    pub async fn thaw(&self) {
        self.signal("-CONT").await;
    }

    async fn signal(&self, signal: &str) {
        let pid = self
            .process
            .as_ref()
            .and_then(Child::id)
            .expect("the throw-away redis-server is running");
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .await
            .expect("kill(1) runs");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Stops the server if it runs and starts a fresh, empty one on the same port.
    ///
    /// # Panics
    /// When the server does not come back.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch().await;
    }

    async fn launch(&mut self) {
        let deadline = tokio::time::Instant::now() + Self::START_TIMEOUT;
        loop {
            let mut process = Command::new("redis-server")
                .args(["--port", &self.port.to_string()])
                .args(["--bind", "127.0.0.1"])
                .args(["--save", ""])
                .args(["--appendonly", "no"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run redis-server ({e}); install it (apt-get install redis-server)"
                    )
                });
            if wait_until_listening(self.port, &mut process, deadline).await {
                self.process = Some(process);
                return;
            }
            // The port may still be held by the previous server for a moment: retry.
            let _ = process.kill().await;
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not start on port {} within {:?}",
                self.port,
                Self::START_TIMEOUT
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for ThrowawayRedis {
    fn drop(&mut self) {
        if let Some(process) = self.process.as_mut() {
            // kill_on_drop would do it too; this also works outside a runtime.
            let _ = process.start_kill();
        }
    }
}

/// A port that was free a moment ago (the OS picks it; the tiny race is retried by `launch`).
fn free_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("no free TCP port on 127.0.0.1")
}

/// `true` once the server accepts connections, `false` if it exited or the deadline passed.
async fn wait_until_listening(
    port: u16,
    process: &mut Child,
    deadline: tokio::time::Instant,
) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    while tokio::time::Instant::now() < deadline {
        if let Ok(Some(_exit)) = process.try_wait() {
            return false;
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}
