//! `RedisBus`: the `MessageBus` port over Redis Pub/Sub. Publishing and subscribing use two
//! separate connections (a subscribed connection cannot publish); see `subscription` for the
//! receiving side.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chat_domain::{
    BusCounters, BusError, BusEvent, BusEvents, ChatMessagePublish, ControlEvent, MessageBus,
    RoomId,
};
use fred::clients::{Client, SubscriberClient};
use fred::prelude::{ClientLike, EventInterface, Options, PubsubInterface};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tracing::{debug, info};

use crate::channels::Channels;
use crate::config::{ChannelMode, RedisConfig, Target, Topology};
use crate::error::{RedisError, unavailable, unreachable_message};
use crate::signing::{MIN_SECRET_BYTES, Signer};
use crate::subscription::{
    ConnectionEvents, SubscriptionState, relay_messages, subscribe_to, supervise, watch_liveness,
};

/// The publisher only reports connection events (errors, reconnects), a handful at a time;
/// fred's default capacity. A lag there is handled like the event itself.
const PUBLISHER_EVENT_CAPACITY: usize = 32;

/// How long `shutdown` waits for Redis to acknowledge QUIT before dropping the connections.
const QUIT_TIMEOUT: Duration = Duration::from_secs(2);

/// The Redis bus of one server instance. Create it once with [`RedisBus::connect`] and share
/// it (`Arc`); every [`MessageBus::subscribe`] shares its single Redis subscription.
pub struct RedisBus {
    publisher: Client,
    subscriber: SubscriberClient,
    /// Per-command settings: a publish or ping fails at once while the connection is down and
    /// after `command_timeout` when no reply comes, instead of queueing until Redis is back.
    fail_fast: Options,
    command_timeout: Duration,
    state: Arc<SubscriptionState>,
    /// `None` after `shutdown`: new subscriptions are refused and, once the tasks are gone,
    /// every open subscription stream ends.
    events: Mutex<Option<broadcast::Sender<BusEvent>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl RedisBus {
    /// Connects the publisher and the subscriber, subscribes to the channel and starts
    /// relaying. Fails within about `connect_timeout` + `command_timeout` instead of hanging.
    ///
    /// # Errors
    /// [`RedisError::InvalidUrl`] for a malformed `REDIS_URL`, [`RedisError::InvalidConfig`]
    /// for an empty channel name; [`RedisError::Unreachable`]
    /// when nothing answers in time; [`RedisError::AuthFailed`], [`RedisError::Tls`] or
    /// [`RedisError::Rejected`] when Redis answers but refuses.
    pub async fn connect(config: RedisConfig) -> Result<Self, RedisError> {
        if config.channel.is_empty() {
            return Err(RedisError::InvalidConfig(
                "the Redis channel name is empty; set CHAT_REDIS_CHANNEL to a name or leave it unset for chat:messages".into(),
            ));
        }
        let signer = match &config.secret {
            None => None,
            Some(secret) => Some(Signer::new(secret.as_bytes()).ok_or_else(|| {
                RedisError::InvalidConfig(format!(
                    "CHAT_BUS_SECRET must be at least {MIN_SECRET_BYTES} bytes (openssl rand -hex 32)"
                ))
            })?),
        };
        let target = Target::parse(&config.url)?;
        let channels = channels_for(&config, target.topology)?;
        let endpoint = target.endpoint.clone();
        let startup = |what: &str, e: &fred::error::Error| {
            RedisError::at_startup(&endpoint, target.tls, what, e)
        };
        let publisher = target
            .builder(&config, PUBLISHER_EVENT_CAPACITY)
            .build()
            .map_err(|e| startup("client set-up", &e))?;
        let subscriber = target
            .builder(&config, config.subscriber_capacity)
            .build_subscriber_client()
            .map_err(|e| startup("client set-up", &e))?;

        // fred bounds each connection attempt by `connect_timeout`; this outer bound also
        // covers AUTH and SELECT (SUBSCRIBE below has the command timeout), so start-up
        // never hangs on a server that accepts connections but does not answer.
        let deadline = config.connect_timeout + config.command_timeout;
        let connected = tokio::time::timeout(deadline, async {
            let (published, subscribed) = tokio::join!(publisher.init(), subscriber.init());
            published.map_err(|e| startup("connect", &e))?;
            subscribed.map_err(|e| startup("connect", &e))?;
            Ok::<_, RedisError>(())
        })
        .await
        .unwrap_or_else(|_| {
            Err(RedisError::Unreachable(unreachable_message(
                &endpoint,
                &format!("no answer within {deadline:?}"),
            )))
        });
        if let Err(e) = connected {
            quit_quietly(&publisher, &subscriber).await;
            return Err(e);
        }

        // Taken after `init` on purpose: fred also reports the first connection as a
        // "reconnect", and that one is not a reconnect.
        let connection = ConnectionEvents {
            subscriber_reconnected: subscriber.reconnect_rx(),
            subscriber_failed: subscriber.error_rx(),
            publisher_reconnected: publisher.reconnect_rx(),
            publisher_failed: publisher.error_rx(),
        };
        let received = subscriber.message_rx();
        let mode = channels.mode;
        let state = Arc::new(SubscriptionState::new(channels, endpoint.clone(), signer));
        if let Err(e) = subscribe_to(&subscriber, &state.channels, state.channels.fixed()).await {
            quit_quietly(&publisher, &subscriber).await;
            return Err(startup(&format!("SUBSCRIBE {}", config.channel), &e));
        }
        state.active.send_replace(true);

        let (events, _) = broadcast::channel(config.subscriber_capacity.max(1));
        let tasks = vec![
            tokio::spawn(relay_messages(received, events.clone(), Arc::clone(&state))),
            tokio::spawn(supervise(
                subscriber.clone(),
                connection,
                events.clone(),
                Arc::clone(&state),
            )),
            tokio::spawn(watch_liveness(subscriber.clone(), Arc::clone(&state))),
        ];
        info!(
            endpoint = %endpoint,
            channel = %config.channel,
            channel_mode = mode.as_str(),
            "connected to Redis; publishing and subscribed"
        );
        Ok(Self {
            publisher,
            subscriber,
            fail_fast: Options {
                timeout: Some(config.command_timeout),
                fail_fast: true,
                ..Options::default()
            },
            command_timeout: config.command_timeout,
            state,
            events: Mutex::new(Some(events)),
            tasks: Mutex::new(tasks),
        })
    }

    /// Closes both connections and ends every subscription stream. Idempotent.
    pub async fn shutdown(&self) {
        let was_open = lock(&self.events).take().is_some();
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        self.state.active.send_replace(false);
        if was_open {
            quit_quietly(&self.publisher, &self.subscriber).await;
            info!(endpoint = %self.state.endpoint, "disconnected from Redis");
        }
    }

    /// How many times a connection to Redis (publisher or subscriber) was re-established
    /// since start-up.
    #[must_use]
    pub fn reconnects(&self) -> u64 {
        self.state.reconnects.load(Ordering::Relaxed)
    }

    /// How many received payloads were not chat messages and were skipped.
    #[must_use]
    pub fn decode_failures(&self) -> u64 {
        self.state.decode_failures.load(Ordering::Relaxed)
    }

    /// The payload as it goes on the wire: signed when this bus has a secret.
    fn seal(&self, payload: Vec<u8>) -> Vec<u8> {
        match &self.state.signer {
            Some(signer) => signer.sign(&payload),
            None => payload,
        }
    }

    fn down(&self, why: &str) -> BusError {
        BusError::Unavailable(format!(
            "Redis subscription to {} at {} {why}",
            self.state.channel(),
            self.state.endpoint
        ))
    }

    /// PUBLISH, or SPUBLISH on a cluster (routed to the node owning the channel's slot).
    async fn send(&self, channel: String, payload: Vec<u8>) -> Result<(), BusError> {
        let publisher = self.publisher.with_options(&self.fail_fast);
        let sent = if self.state.channels.sharded {
            publisher.spublish::<i64, _, _>(channel, payload).await
        } else {
            publisher.publish::<i64, _, _>(channel, payload).await
        };
        sent.map(drop)
            .map_err(|e| unavailable("PUBLISH", &self.state.endpoint, &e))
    }
}

/// The channels of this bus: the mode asked for, or the topology's default, and refused
/// where the topology cannot carry it.
fn channels_for(config: &RedisConfig, topology: Topology) -> Result<Channels, RedisError> {
    let cluster = topology == Topology::Cluster;
    let mode = match (config.channel_mode, cluster) {
        (Some(ChannelMode::Single), true) => {
            return Err(RedisError::InvalidConfig(
                "a Redis Cluster needs CHAT_REDIS_CHANNEL_MODE=per-room (or unset): one channel \
                 for every room would make every node relay every message"
                    .into(),
            ));
        }
        (Some(mode), _) => mode,
        (None, true) => ChannelMode::PerRoom,
        (None, false) => ChannelMode::Single,
    };
    Ok(Channels::new(config.channel.clone(), mode, cluster))
}

#[async_trait]
impl MessageBus for RedisBus {
    async fn publish(&self, message: &ChatMessagePublish) -> Result<(), BusError> {
        // One PUBLISH, awaited for its reply only: concurrent callers are pipelined by fred
        // on the one connection, and sequential ones keep their order.
        let channel = self.state.channels.for_room(message.chat_room_id);
        self.send(channel, self.seal(message.to_json())).await
    }

    async fn publish_control(&self, event: &ControlEvent) -> Result<(), BusError> {
        let channel = self.state.channels.control.clone();
        self.send(channel, self.seal(event.to_json())).await
    }

    fn watch_room(&self, room: RoomId) {
        if self.state.channels.mode == ChannelMode::PerRoom && self.state.interest.watch(room) {
            self.state.interest_changed.notify_one();
        }
    }

    fn unwatch_room(&self, room: RoomId) {
        if self.state.channels.mode == ChannelMode::PerRoom && self.state.interest.unwatch(room) {
            self.state.interest_changed.notify_one();
        }
    }

    async fn subscribe(&self) -> Result<BusEvents, BusError> {
        // Receiver first: whatever arrives from the moment the subscription is active is kept.
        let receiver = lock(&self.events)
            .as_ref()
            .map(broadcast::Sender::subscribe)
            .ok_or_else(|| self.down("is closed (the bus was shut down)"))?;
        // Normally active already; during a reconnect wait a little for it.
        let mut active = self.state.active.subscribe();
        let ready = tokio::time::timeout(self.command_timeout, active.wait_for(|on| *on)).await;
        if !matches!(ready, Ok(Ok(_))) {
            return Err(self.down("is down (reconnecting)"));
        }
        let events = futures_util::stream::unfold(receiver, |mut receiver| async move {
            let event = match receiver.recv().await {
                Ok(event) => event,
                // This subscription fell behind the others: it lost events locally.
                Err(broadcast::error::RecvError::Lagged(_)) => BusEvent::MayHaveMissedMessages,
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            Some((event, receiver))
        });
        Ok(Box::pin(events))
    }

    async fn check_health(&self) -> Result<(), BusError> {
        // The subscription first: publishing fine while nothing is received is not healthy.
        if !self.state.is_active() || !self.subscriber.is_connected() {
            return Err(self.down("is down (reconnecting)"));
        }
        self.publisher
            .with_options(&self.fail_fast)
            .ping::<String>(None)
            .await
            .map(drop)
            .map_err(|e| unavailable("PING", &self.state.endpoint, &e))
    }

    fn counters(&self) -> BusCounters {
        BusCounters {
            reconnects: self.reconnects(),
            decode_failures: self.decode_failures(),
            received: self.state.received.load(Ordering::Relaxed),
            rooms_watched: self.state.rooms_watched.load(Ordering::Relaxed),
        }
    }
}

impl fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBus")
            .field("endpoint", &self.state.endpoint)
            .field("channel", &self.state.channel())
            .field("channel_mode", &self.state.channels.mode)
            .field("subscribed", &self.state.is_active())
            .field("reconnects", &self.reconnects())
            .field("decode_failures", &self.decode_failures())
            .finish_non_exhaustive()
    }
}

impl Drop for RedisBus {
    fn drop(&mut self) {
        // Without `shutdown` the relay and supervisor would outlive the bus; the fred clients
        // close their connections when the runtime drops their tasks.
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        if lock(&self.events).take().is_some()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (publisher, subscriber) = (self.publisher.clone(), self.subscriber.clone());
            runtime.spawn(async move { quit_quietly(&publisher, &subscriber).await });
        }
    }
}

/// A poisoned lock only means another thread panicked while holding it; the data (a sender,
/// task handles) is still valid.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn quit_quietly(publisher: &Client, subscriber: &SubscriberClient) {
    let quit = async { tokio::join!(publisher.quit(), subscriber.quit()) };
    match tokio::time::timeout(QUIT_TIMEOUT, quit).await {
        Ok((Ok(()), Ok(()))) => {}
        Ok((published, subscribed)) => {
            // Closing anyway; the server forgets the connections when they drop.
            if let Err(e) = published.and(subscribed) {
                debug!(error = %e, "Redis did not acknowledge QUIT; closing anyway");
            }
        }
        Err(_) => debug!("Redis did not acknowledge QUIT in time; closing anyway"),
    }
}
