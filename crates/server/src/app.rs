//! Building and running the application: pick the adapters from the settings, bind the
//! listener (port 0 works, for tests), start the hub and the HTTP server, and drain
//! gracefully on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use std::time::Duration;

use chat_adapters_memory::{InMemoryBus, InMemoryRepository};
use chat_adapters_postgres::{PostgresConfig, PostgresRepository};
use chat_adapters_redis::{RedisBus, RedisConfig};
use chat_domain::{BusError, ChatService, MessageBus, MessageRepository, ReadCursors, RoomMembers};
use chat_session::SessionConfig;
use chat_stomp::Limits;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::Authenticator;
use crate::config::Settings;
use crate::gateway::admission::Admission;
use crate::gateway::hub::{Hub, HubConfig};
use crate::gateway::revocations::Revocations;
use crate::gateway::topics::Topics;
use crate::gateway::{GatewayContext, Lifecycle};
use crate::http::Surface;
use crate::metrics::{MeasuredBus, MeasuredRepository, Metrics};
use crate::origin::OriginPolicy;
use crate::publish_queue::QueuedBus;
use crate::state::AppState;

/// SENDs of one connection being stored at once; past it the session stops reading, which
/// pushes back on the client through TCP instead of queueing without bound.
const MAX_SENDS_IN_FLIGHT: usize = 64;

/// Why the application could not start. Each message says what to check.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(
        "cannot listen on {address}: {source} (is another process using the port? set CHAT_BIND)"
    )]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot subscribe to the message bus: {0}")]
    Bus(#[from] BusError),
    #[error("{0}")]
    Adapter(String),
    #[error("authentication is misconfigured: {0}")]
    Auth(#[from] crate::auth::AuthConfigError),
}

/// The storage and bus an application runs on.
#[derive(Clone)]
pub struct Adapters {
    pub repository: Arc<dyn MessageRepository>,
    /// The members of private rooms, in the same store as `repository`.
    pub members: Arc<dyn RoomMembers>,
    /// Users' read cursors, in the same store as `repository`.
    pub cursors: Arc<dyn ReadCursors>,
    pub bus: Arc<dyn MessageBus>,
}

impl std::fmt::Debug for Adapters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapters").finish_non_exhaustive()
    }
}

impl Adapters {
    /// In-memory storage and bus: one instance, data lost on exit.
    #[must_use]
    pub fn in_memory() -> Self {
        let store = Arc::new(InMemoryRepository::new());
        Self {
            repository: store.clone(),
            members: store.clone(),
            cursors: store,
            bus: Arc::new(InMemoryBus::new()),
        }
    }

    /// The adapters the settings ask for: PostgreSQL when `DATABASE_URL` is set, Redis when
    /// `REDIS_URL` is set, in memory otherwise.
    ///
    /// # Errors
    /// [`StartupError::Adapter`] when a configured dependency cannot be used.
    pub async fn from_settings(settings: &Settings) -> Result<Self, StartupError> {
        let (repository, members, cursors): (
            Arc<dyn MessageRepository>,
            Arc<dyn RoomMembers>,
            Arc<dyn ReadCursors>,
        ) = match &settings.database_url {
            Some(url) => {
                let mut config = PostgresConfig::new(url.clone());
                config.pool_size = settings.db_pool_size;
                config.max_batch = settings.db_max_batch;
                config.writers = settings.db_writers;
                config.connect_timeout = Duration::from_secs(settings.db_connect_timeout_secs);
                config.statement_timeout = Duration::from_secs(settings.db_statement_timeout_secs);
                let target = config.redacted_url();
                let repository = PostgresRepository::connect(config)
                    .await
                    .map_err(|e| StartupError::Adapter(e.to_string()))?;
                tracing::info!(database = %target, "storing messages in PostgreSQL");
                let repository = Arc::new(repository);
                (repository.clone(), repository.clone(), repository)
            }
            None => {
                tracing::warn!(
                    "DATABASE_URL is not set: messages are kept IN MEMORY ONLY and are lost when this process exits"
                );
                let repository = Arc::new(InMemoryRepository::new());
                (repository.clone(), repository.clone(), repository)
            }
        };
        let bus: Arc<dyn MessageBus> = match &settings.redis_url {
            Some(url) => {
                let mut config = RedisConfig::new(url.clone());
                config.channel.clone_from(&settings.redis_channel);
                config.channel_mode = settings.redis_channel_mode;
                config.secret.clone_from(&settings.bus_secret);
                config.command_timeout = Duration::from_millis(settings.redis_command_timeout_ms);
                let bus = RedisBus::connect(config)
                    .await
                    .map_err(|e| StartupError::Adapter(e.to_string()))?;
                tracing::info!(channel = %settings.redis_channel, "fanning out through Redis Pub/Sub");
                Arc::new(bus)
            }
            None => {
                tracing::warn!(
                    "REDIS_URL is not set: in-memory bus, this instance cannot share rooms with others"
                );
                Arc::new(InMemoryBus::new())
            }
        };
        Ok(Self {
            repository,
            members,
            cursors,
            bus,
        })
    }
}

/// The token bucket of one connection's SENDs: `rate` per second, `burst` at once; `None`
/// when `rate` is 0 (no limit).
fn send_quota(rate: u32, burst: u32) -> Option<governor::Quota> {
    let rate = std::num::NonZeroU32::new(rate)?;
    let burst = std::num::NonZeroU32::new(burst).unwrap_or(rate);
    Some(governor::Quota::per_second(rate).allow_burst(burst))
}

/// Triggers a graceful shutdown of a running [`Application`].
#[derive(Debug, Clone)]
pub struct ShutdownHandle(Arc<watch::Sender<bool>>);

impl ShutdownHandle {
    /// Starts the drain: not ready, no new connections, sessions told to reconnect.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

/// A running chat server.
#[derive(Debug)]
pub struct Application {
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    state: Arc<AppState>,
    shutdown: ShutdownHandle,
    server: JoinHandle<()>,
    stop_listening: watch::Sender<bool>,
    hub: JoinHandle<()>,
    grace: std::time::Duration,
}

impl Application {
    /// Builds the application with the adapters the settings ask for.
    ///
    /// # Errors
    /// See [`StartupError`].
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        // Settings first: a misconfiguration is reported before any dependency is dialled.
        let auth = Authenticator::from_settings(&settings)?;
        let adapters = Adapters::from_settings(&settings).await?;
        Self::start(settings, adapters, auth).await
    }

    /// Builds the application on the given adapters; several applications may share them.
    ///
    /// # Errors
    /// See [`StartupError`].
    pub async fn build_with(settings: Settings, adapters: Adapters) -> Result<Self, StartupError> {
        let auth = Authenticator::from_settings(&settings)?;
        Self::start(settings, adapters, auth).await
    }

    async fn start(
        settings: Settings,
        adapters: Adapters,
        auth: Authenticator,
    ) -> Result<Self, StartupError> {
        let auth = Arc::new(auth);
        reload_keys_on_sighup(&auth);
        let listener = tokio::net::TcpListener::bind(settings.bind)
            .await
            .map_err(|source| StartupError::Bind {
                address: settings.bind,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| StartupError::Bind {
            address: settings.bind,
            source,
        })?;
        let admin_listener = match settings.admin_bind {
            Some(address) => Some(
                tokio::net::TcpListener::bind(address)
                    .await
                    .map_err(|source| StartupError::Bind { address, source })?,
            ),
            None => None,
        };
        let admin_addr = admin_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok());
        let metrics = Arc::new(Metrics::new());
        let adapters = Adapters {
            repository: Arc::new(MeasuredRepository {
                inner: adapters.repository,
                metrics: metrics.clone(),
            }),
            members: adapters.members,
            cursors: adapters.cursors,
            // The RECEIPT follows the commit, never the bus: publishes only enqueue.
            bus: QueuedBus::start(
                Arc::new(MeasuredBus {
                    inner: adapters.bus,
                    metrics: metrics.clone(),
                }),
                usize::try_from(settings.publish_queue).unwrap_or(usize::MAX),
                metrics.clone(),
            ),
        };
        // Subscribe before accepting anyone, so nothing published after start-up is missed.
        let events = adapters.bus.subscribe().await?;
        let service = ChatService::new(
            adapters.repository.clone(),
            adapters.members,
            adapters.bus.clone(),
        )
        .with_read_cursors(adapters.cursors);
        let revocations = Arc::new(Revocations::new(service.clone()));
        let topics = Topics::start(
            adapters.bus.clone(),
            Duration::from_millis(settings.presence_timeout_ms),
            metrics.clone(),
        );
        let (hub, hub_task) = Hub::spawn(
            adapters.repository.clone(),
            adapters.bus.clone(),
            events,
            HubConfig {
                held_limit: settings.outbound_queue,
                reconcile_every: Duration::from_millis(settings.reconcile_interval_ms),
            },
            metrics.clone(),
            revocations.clone(),
            topics.clone(),
        );
        let (shutdown_sender, shutdown) = watch::channel(false);
        let (stop_listening, listening_stopped) = watch::channel(false);
        let gateway = Arc::new(GatewayContext {
            service: service.clone(),
            hub,
            revocations,
            topics,
            origins: OriginPolicy::new(
                &settings.allowed_origins,
                !matches!(auth.as_ref(), Authenticator::Open),
            ),
            auth,
            session: SessionConfig {
                server_heartbeat: settings.heartbeat,
                heartbeat_grace: settings.heartbeat_grace,
                limits: Limits {
                    max_frame_bytes: settings.max_frame_bytes,
                    ..Limits::default()
                },
                connect_timeout: settings.connect_timeout(),
                instance: instance_id(local_addr),
                max_sends_in_flight: MAX_SENDS_IN_FLIGHT,
                max_subscriptions: usize::try_from(settings.max_subscriptions)
                    .unwrap_or(usize::MAX),
                max_subscription_id_bytes: usize::try_from(settings.max_subscription_id_bytes)
                    .unwrap_or(usize::MAX),
                idle_timeout: settings.idle_timeout,
            },
            outbound_queue: settings.outbound_queue,
            outbound_queue_bytes: settings.outbound_queue_bytes,
            write_timeout: settings.write_timeout,
            send_rate: send_quota(settings.send_rate, settings.send_burst),
            send_rate_per_sec: settings.send_rate,
            admission: Arc::new(Admission::new(
                settings.max_connections,
                settings.max_connections_per_ip,
            )),
            shutdown: shutdown.clone(),
            lifecycle: Arc::new(Lifecycle::new(settings.drain_window())),
            metrics: metrics.clone(),
            sockjs: Default::default(),
        });
        let state = Arc::new(AppState {
            service,
            gateway,
            metrics,
            room_creations: crate::state::room_creation_limit(settings.room_create_rate),
            room_create_rate: settings.room_create_rate,
        });
        // The listener stays open while draining, so probes see 503 and new upgrades get a
        // clear refusal; it closes once the sessions are gone.
        if let Some(admin) = admin_listener {
            tokio::spawn(crate::listener::serve(
                admin,
                state.clone(),
                listening_stopped.clone(),
                settings.header_read_timeout,
                Surface::Admin,
            ));
        }
        let server = tokio::spawn(crate::listener::serve(
            listener,
            state.clone(),
            listening_stopped,
            settings.header_read_timeout,
            Surface::Public {
                with_admin: admin_addr.is_none(),
            },
        ));
        if let Some(admin) = admin_addr {
            tracing::info!(address = %admin, "admin listener: /metrics, /health/details and the probes");
        }
        tracing::info!(address = %local_addr, "chat-server listening; STOMP over WebSocket at /ws");
        Ok(Self {
            local_addr,
            admin_addr,
            state,
            shutdown: ShutdownHandle(Arc::new(shutdown_sender)),
            server,
            stop_listening,
            hub: hub_task,
            grace: settings.shutdown_grace(),
        })
    }

    /// The address actually bound (the real port when the settings said port 0).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The admin listener's address, when `CHAT_ADMIN_BIND` is set.
    #[must_use]
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    #[must_use]
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Serves until shutdown is triggered, then drains: readiness goes 503, no new
    /// connections, every session gets an ERROR telling it to reconnect, and this returns
    /// once all sessions are closed or the grace period is over.
    pub async fn run_until_stopped(self) {
        let mut stopping = self.shutdown.0.subscribe();
        let _ = stopping.wait_for(|stopping| *stopping).await;
        self.state.gateway.lifecycle.start_draining();
        tracing::info!(
            sessions = self.state.gateway.lifecycle.open(),
            grace = ?self.grace,
            "shutting down: draining connections"
        );
        let deadline = tokio::time::Instant::now() + self.grace;
        let drained =
            tokio::time::timeout_at(deadline, self.state.gateway.lifecycle.all_closed()).await;
        if drained.is_err() {
            tracing::warn!(
                sessions = self.state.gateway.lifecycle.open(),
                "grace period over with sessions still open; exiting anyway"
            );
        }
        self.stop_listening.send_replace(true);
        let _ = tokio::time::timeout_at(
            deadline.max(tokio::time::Instant::now() + std::time::Duration::from_secs(1)),
            self.server,
        )
        .await;
        self.hub.abort();
        tracing::info!("chat-server stopped");
    }
}

/// SIGHUP re-reads a JWKS file, so keys rotate without a restart.
fn reload_keys_on_sighup(auth: &Arc<Authenticator>) {
    #[cfg(unix)]
    if matches!(auth.as_ref(), Authenticator::Jwt(_)) {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            return;
        };
        let auth = Arc::downgrade(auth);
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                match auth.upgrade() {
                    Some(auth) => auth.reload(),
                    None => return,
                }
            }
        });
    }
}

fn instance_id(addr: SocketAddr) -> String {
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    format!("{:x}-{}", started, addr.port())
}
