//! The receiving side of the bus: one subscribed Redis connection per instance (one per
//! node on a cluster), a relay task that moves every message off fred's channel at once and
//! fans it out to the local subscriptions, and a supervisor that follows connection events,
//! keeps the per-room channels in line with the rooms this instance follows, resubscribes
//! after a reconnect and tells the subscriptions when messages may have been missed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chat_domain::{BusEvent, ChatMessagePublish, ControlEvent, RoomId};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::channels::{self, Carried, Channels, Interest, RoomChanges};
use crate::signing::{self, Signer};
use fred::clients::SubscriberClient;
use fred::error::{Error as FredError, ErrorKind};
use fred::prelude::{ClientLike, PubsubInterface, Server};
use fred::types::{Message, Value};
use tokio::sync::{broadcast, watch};
use tracing::{debug, error, info, warn};

/// How much of an undecodable payload goes into the log line.
const SAMPLE_BYTES: usize = 200;
/// Log the first few undecodable payloads, then one in this many, so a misbehaving publisher
/// cannot flood the log.
const DECODE_LOG_EVERY: u64 = 1_000;
/// Pause before forcing a fresh connection when a resubscribe failed on a live connection,
/// so a persistent failure cannot spin.
const RESUBSCRIBE_RETRY_PAUSE: Duration = Duration::from_secs(1);
/// How often the subscribed connection is asked for a PING while it waits for messages.
/// A subscribed connection otherwise sends nothing, so a frozen Redis or a half-open path
/// would only be noticed by TCP keepalive, tens of seconds later.
pub(crate) const PING_INTERVAL: Duration = Duration::from_secs(1);
/// How long a PING on the subscribed connection may go unanswered before the connection is
/// taken for wedged and replaced: with [`PING_INTERVAL`], a wedge is noticed within 3 s.
pub(crate) const PING_DEADLINE: Duration = Duration::from_secs(2);

/// Pause before subscribing rooms' channels again after Redis refused or failed it.
const ROOM_RETRY_PAUSE: Duration = Duration::from_secs(1);
/// On a cluster, how often every followed room's shard channel is subscribed again. Redis
/// drops a shard channel's subscribers when its slot moves to another node (and fred does
/// not report it); until this pass, that room's messages arrive through the engine's
/// reconciliation with the store.
const SHARD_RESYNC_EVERY: Duration = Duration::from_secs(5);

/// What the bus, the relay and the supervisor share.
#[derive(Debug)]
pub(crate) struct SubscriptionState {
    /// The channel names. Control events go on `{channel}:control`, apart from the message
    /// channel so Spring replicas sharing it never see them.
    pub(crate) channels: Channels,
    /// Signs what is published and checks what is received, when a secret is set.
    pub(crate) signer: Option<Signer>,
    pub(crate) endpoint: String,
    pub(crate) reconnects: AtomicU64,
    pub(crate) decode_failures: AtomicU64,
    /// Messages relayed to local subscriptions.
    pub(crate) received: AtomicU64,
    /// Rooms whose channel is in effect (per-room mode).
    pub(crate) rooms_watched: AtomicU64,
    /// The rooms local subscribers follow (per-room mode), and a wake-up for the
    /// supervisor when that set changes.
    pub(crate) interest: Interest,
    pub(crate) interest_changed: Notify,
    /// `true` while SUBSCRIBE on `channel` is in effect on a live connection.
    pub(crate) active: watch::Sender<bool>,
    /// Set once an outage of the subscription was logged, so it is logged once, not at
    /// every reconnect attempt.
    outage_logged: AtomicBool,
}

impl SubscriptionState {
    pub(crate) fn new(channels: Channels, endpoint: String, signer: Option<Signer>) -> Self {
        Self {
            signer,
            channels,
            endpoint,
            reconnects: AtomicU64::new(0),
            decode_failures: AtomicU64::new(0),
            received: AtomicU64::new(0),
            rooms_watched: AtomicU64::new(0),
            interest: Interest::default(),
            interest_changed: Notify::new(),
            active: watch::Sender::new(false),
            outage_logged: AtomicBool::new(false),
        }
    }

    /// `true` the first time it is called during an outage: whether to log it at warn level.
    fn first_report_of_outage(&self) -> bool {
        !self.outage_logged.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn is_active(&self) -> bool {
        *self.active.borrow()
    }

    /// The name to put in log lines: the channel, or the prefix of the per-room ones.
    pub(crate) fn channel(&self) -> &str {
        &self.channels.base
    }
}

/// Moves messages off fred's broadcast channel as fast as they come (a full channel means
/// lost messages), decodes them and fans them out. Ends when fred closes the channel (QUIT).
pub(crate) async fn relay_messages(
    mut received: broadcast::Receiver<Message>,
    events: broadcast::Sender<BusEvent>,
    state: Arc<SubscriptionState>,
) {
    loop {
        match received.recv().await {
            Ok(message) => {
                let carried = state.channels.classify(&message.channel);
                if carried == Carried::Other {
                    continue;
                }
                let opened = message
                    .value
                    .as_bytes()
                    .map(|payload| open(&state, payload));
                let decoded = match (opened, carried) {
                    (Some(Err((reason, sample))), _) => Err((reason, sample)),
                    (Some(Ok(payload)), Carried::Control) => {
                        ControlEvent::from_bus_payload(payload)
                            .map(BusEvent::Control)
                            .map_err(|e| (e.to_string(), sample(payload)))
                    }
                    (Some(Ok(payload)), _) => ChatMessagePublish::from_bus_payload(payload)
                        .map_err(|e| (e.to_string(), sample(payload)))
                        .and_then(|message| match carried {
                            // A room's channel carries that room only: anything else is
                            // forged or misrouted.
                            Carried::Message(Some(room)) if message.chat_room_id != room => Err((
                                format!(
                                    "a message of room {} on the channel of room {room}",
                                    message.chat_room_id
                                ),
                                sample(payload),
                            )),
                            _ => Ok(BusEvent::Message(message)),
                        }),
                    (None, _) => Err((
                        "payload is not a string".to_owned(),
                        format!("{:?}", message.value.kind()),
                    )),
                };
                match decoded {
                    // No local subscription right now is not an error.
                    Ok(event) => {
                        if matches!(event, BusEvent::Message(_)) {
                            state.received.fetch_add(1, Ordering::Relaxed);
                        }
                        drop(events.send(event));
                    }
                    Err((reason, sample)) => {
                        let count = state.decode_failures.fetch_add(1, Ordering::Relaxed) + 1;
                        if count <= 10 || count.is_multiple_of(DECODE_LOG_EVERY) {
                            warn!(
                                channel = %state.channel(),
                                %reason,
                                %sample,
                                undecodable_so_far = count,
                                "ignored a Redis message that is not a chat message; \
                                 check what else publishes to this channel"
                            );
                        }
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(skipped)) => {
                warn!(
                    channel = %state.channel(),
                    skipped,
                    "the Redis subscriber fell behind and dropped messages; \
                     local subscribers will backfill from the database \
                     (raise the subscriber capacity if this repeats)"
                );
                drop(events.send(BusEvent::MayHaveMissedMessages));
            }
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
    debug!(channel = %state.channel(), "Redis message relay stopped");
}

/// The JSON of a received payload: checked and unwrapped when this bus signs, refused
/// when it does not but the payload is signed (the instances disagree on the secret).
fn open<'a>(state: &SubscriptionState, payload: &'a [u8]) -> Result<&'a [u8], (String, String)> {
    match &state.signer {
        Some(signer) => signer
            .open(payload)
            .map_err(|why| (why.as_str().to_owned(), sample(payload))),
        None if signing::is_signed(payload) => Err((
            "a signed payload, and this instance has no CHAT_BUS_SECRET".to_owned(),
            sample(payload),
        )),
        None => Ok(payload),
    }
}

/// The start of a payload, as text, for a log line.
fn sample(payload: &[u8]) -> String {
    let cut = &payload[..payload.len().min(SAMPLE_BYTES)];
    let mut text = String::from_utf8_lossy(cut).into_owned();
    if payload.len() > SAMPLE_BYTES {
        text.push('…');
    }
    text
}

/// The connection events the supervisor follows, taken from fred before anything can happen.
pub(crate) struct ConnectionEvents {
    pub(crate) subscriber_reconnected: broadcast::Receiver<Server>,
    pub(crate) subscriber_failed: broadcast::Receiver<(FredError, Option<Server>)>,
    pub(crate) publisher_reconnected: broadcast::Receiver<Server>,
    pub(crate) publisher_failed: broadcast::Receiver<(FredError, Option<Server>)>,
}

/// Follows both clients' connection events: logs and counts reconnects, marks the
/// subscription down when its connection fails, keeps the rooms' channels in line with the
/// rooms local subscribers follow, and after every reconnect of the subscriber subscribes
/// again, marks it active and tells local subscriptions they may have missed messages (sent
/// only once the new SUBSCRIBE is in effect, so a backfill that follows it cannot leave a
/// hole before the first live message).
///
/// fred's `manage_subscriptions()` would resubscribe too, but it reports neither success nor
/// failure, and health and the catch-up signal both depend on exactly that.
pub(crate) async fn supervise(
    subscriber: SubscriberClient,
    mut connection: ConnectionEvents,
    events: broadcast::Sender<BusEvent>,
    state: Arc<SubscriptionState>,
) {
    let mut publisher_up = true;
    let mut rooms = RoomChannels::default();
    let resync_every = state.channels.sharded.then_some(SHARD_RESYNC_EVERY);
    let mut next_resync = resync_every.map(|every| Instant::now() + every);
    loop {
        tokio::select! {
            // Failures first: when both are pending, the reconnect is the newer event.
            biased;
            failed = connection.subscriber_failed.recv() => match failed {
                Ok((error, _)) => {
                    subscriber_failed(&state, &error);
                    rooms.lost(&state);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    subscriber_failed(&state, &FredError::new(ErrorKind::IO, "many errors"));
                    rooms.lost(&state);
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            failed = connection.publisher_failed.recv() => match failed {
                Ok((error, _)) => {
                    if publisher_up {
                        warn!(
                            endpoint = %state.endpoint,
                            error = %error.details(),
                            "lost the Redis publishing connection; reconnecting with backoff, \
                             publishes fail until it is back"
                        );
                    } else {
                        debug!(endpoint = %state.endpoint, error = %error.details(), "Redis publisher still reconnecting");
                    }
                    publisher_up = false;
                }
                Err(broadcast::error::RecvError::Lagged(_)) => publisher_up = false,
                Err(broadcast::error::RecvError::Closed) => break,
            },
            reconnected = connection.subscriber_reconnected.recv() => match reconnected {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    let total = state.reconnects.fetch_add(1, Ordering::Relaxed) + 1;
                    info!(endpoint = %state.endpoint, reconnects = total, "Redis subscriber reconnected; subscribing again");
                    rooms.lost(&state);
                    resubscribe(&subscriber, &events, &state, &mut rooms).await;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            reconnected = connection.publisher_reconnected.recv() => match reconnected {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    let total = state.reconnects.fetch_add(1, Ordering::Relaxed) + 1;
                    info!(endpoint = %state.endpoint, reconnects = total, "Redis publisher reconnected");
                    publisher_up = true;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            () = state.interest_changed.notified() => {
                if state.is_active() {
                    rooms.sync(&subscriber, &events, &state, true).await;
                }
            }
            () = sleep_until_some(rooms.retry_at) => {
                rooms.retry_at = None;
                if state.is_active() {
                    rooms.sync(&subscriber, &events, &state, true).await;
                }
            }
            () = sleep_until_some(next_resync) => {
                next_resync = resync_every.map(|every| Instant::now() + every);
                if state.is_active() {
                    rooms.resync(&subscriber, &state).await;
                }
            }
        }
    }
    debug!(channel = %state.channel(), "Redis connection supervisor stopped");
}

/// The rooms whose channel is subscribed on the live connection (per-room mode), owned by
/// the supervisor: the one task that subscribes and unsubscribes.
#[derive(Debug, Default)]
struct RoomChannels {
    subscribed: BTreeSet<RoomId>,
    /// When to try again after Redis failed a change.
    retry_at: Option<Instant>,
}

impl RoomChannels {
    /// The connection is gone, and its subscriptions with it.
    fn lost(&mut self, state: &SubscriptionState) {
        self.subscribed.clear();
        state.rooms_watched.store(0, Ordering::Relaxed);
    }

    /// Subscribes the rooms wanted and not subscribed, unsubscribes the others. With
    /// `announce`, each newly subscribed room is reported as
    /// [`BusEvent::MayHaveMissedRoom`]: what was published before never reached us.
    async fn sync(
        &mut self,
        subscriber: &SubscriberClient,
        events: &broadcast::Sender<BusEvent>,
        state: &SubscriptionState,
        announce: bool,
    ) {
        if state.channels.mode == crate::config::ChannelMode::Single {
            return;
        }
        let changes = RoomChanges::between(&self.subscribed, &state.interest.wanted());
        if changes.is_empty() {
            return;
        }
        let mut failed = None;
        if !changes.subscribe.is_empty() {
            let names = changes
                .subscribe
                .iter()
                .map(|room| state.channels.for_room(*room))
                .collect();
            match subscribe_to(subscriber, &state.channels, names).await {
                Ok(()) => {
                    for room in changes.subscribe {
                        self.subscribed.insert(room);
                        if announce {
                            drop(events.send(BusEvent::MayHaveMissedRoom(room)));
                        }
                    }
                }
                Err(e) => failed = Some(e),
            }
        }
        if !changes.unsubscribe.is_empty() {
            let names = changes
                .unsubscribe
                .iter()
                .map(|room| state.channels.for_room(*room))
                .collect();
            match unsubscribe_from(subscriber, &state.channels, names).await {
                Ok(()) => {
                    for room in changes.unsubscribe {
                        self.subscribed.remove(&room);
                    }
                }
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        state
            .rooms_watched
            .store(self.subscribed.len() as u64, Ordering::Relaxed);
        if let Some(e) = failed {
            debug!(endpoint = %state.endpoint, error = %e, "changing the rooms' Redis channels failed; trying again shortly");
            self.retry_at = Some(Instant::now() + ROOM_RETRY_PAUSE);
        }
    }

    /// Subscribes every subscribed room's shard channel again, in case Redis dropped it
    /// when its slot moved. Already subscribed channels are unaffected.
    async fn resync(&mut self, subscriber: &SubscriberClient, state: &SubscriptionState) {
        let names: Vec<String> = self
            .subscribed
            .iter()
            .map(|room| state.channels.for_room(*room))
            .collect();
        if names.is_empty() {
            return;
        }
        if let Err(e) = subscribe_to(subscriber, &state.channels, names).await {
            debug!(endpoint = %state.endpoint, error = %e, "re-subscribing the rooms' shard channels failed; the next pass tries again");
        }
    }
}

/// SUBSCRIBE, or SSUBSCRIBE one hash slot at a time on a cluster; `Ok` once Redis has the
/// subscription in effect.
///
/// fred resolves a SUBSCRIBE as soon as it is written (Redis confirms out of band), so a
/// PING on the same connection follows it: Redis answers commands of a connection in order,
/// so its reply means the SUBSCRIBE before it has been processed. Without it, a message
/// published right after "subscribed" can reach Redis first and go to nobody, and a
/// catch-up read taken at that moment leaves a hole nobody is told about. SSUBSCRIBE is
/// awaited for its reply by fred (it follows cluster redirections), so needs no PING.
pub(crate) async fn subscribe_to(
    subscriber: &SubscriberClient,
    channels: &Channels,
    names: Vec<String>,
) -> Result<(), FredError> {
    if names.is_empty() {
        return Ok(());
    }
    if channels.sharded {
        for group in channels::by_slot(names) {
            subscriber.ssubscribe(group).await?;
        }
        Ok(())
    } else {
        subscriber.subscribe(names).await?;
        subscriber.ping::<Value>(None).await.map(drop)
    }
}

async fn unsubscribe_from(
    subscriber: &SubscriberClient,
    channels: &Channels,
    names: Vec<String>,
) -> Result<(), FredError> {
    if channels.sharded {
        for group in channels::by_slot(names) {
            subscriber.sunsubscribe(group).await?;
        }
        Ok(())
    } else {
        subscriber.unsubscribe(names).await
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Pings the subscribed connection while the subscription is active; one that does not
/// answer within [`PING_DEADLINE`] is marked down and replaced. The reconnect then
/// resubscribes and tells local subscriptions they may have missed messages.
pub(crate) async fn watch_liveness(subscriber: SubscriberClient, state: Arc<SubscriptionState>) {
    let mut ticks = tokio::time::interval(PING_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if !state.is_active() {
            continue;
        }
        let answered = tokio::time::timeout(PING_DEADLINE, subscriber.ping::<Value>(None)).await;
        let failure = match answered {
            Ok(Ok(_)) => continue,
            Ok(Err(e)) if e.kind() == &ErrorKind::Canceled && !subscriber.is_connected() => {
                // QUIT at shutdown, or a reconnect already under way.
                continue;
            }
            Ok(Err(e)) => e.details().to_owned(),
            Err(_) => format!("no answer to PING within {} ms", PING_DEADLINE.as_millis()),
        };
        state.active.send_replace(false);
        if state.first_report_of_outage() {
            warn!(
                endpoint = %state.endpoint,
                channel = %state.channel(),
                reason = %failure,
                "the Redis subscriber connection is wedged; replacing it. Messages are \
                 fetched from the database meanwhile"
            );
        }
        if let Err(e) = subscriber.force_reconnection().await {
            debug!(error = %e, "forcing a Redis reconnection failed; fred keeps retrying");
        }
    }
}

fn subscriber_failed(state: &SubscriptionState, error: &FredError) {
    state.active.send_replace(false);
    if state.first_report_of_outage() {
        warn!(
            endpoint = %state.endpoint,
            channel = %state.channel(),
            error = %error.details(),
            "lost the Redis subscription; reconnecting with backoff. This instance reports \
             not ready until it is back, then backfills what it missed from the database"
        );
    } else {
        debug!(endpoint = %state.endpoint, error = %error.details(), "Redis subscriber still reconnecting");
    }
}

async fn resubscribe(
    subscriber: &SubscriberClient,
    events: &broadcast::Sender<BusEvent>,
    state: &SubscriptionState,
    rooms: &mut RoomChannels,
) {
    match subscribe_to(subscriber, &state.channels, state.channels.fixed()).await {
        Ok(()) => {
            // Every room's channel again; the gap below covers them all.
            rooms.sync(subscriber, events, state, false).await;
            state.active.send_replace(true);
            state.outage_logged.store(false, Ordering::Release);
            info!(
                endpoint = %state.endpoint,
                channel = %state.channel(),
                "Redis subscription restored; local subscribers backfill what they missed"
            );
            drop(events.send(BusEvent::MayHaveMissedMessages));
        }
        Err(e) => {
            state.active.send_replace(false);
            let transient = matches!(
                e.kind(),
                ErrorKind::IO | ErrorKind::Timeout | ErrorKind::Canceled
            );
            if transient {
                if state.first_report_of_outage() {
                    warn!(
                        endpoint = %state.endpoint,
                        channel = %state.channel(),
                        error = %e,
                        "subscribing again after a reconnect failed; forcing a fresh connection \
                         until it works (logged once per outage)"
                    );
                } else {
                    debug!(endpoint = %state.endpoint, error = %e, "resubscribe failed again; forcing a fresh connection");
                }
                // A new connection brings a new reconnect event and with it another attempt.
                tokio::time::sleep(RESUBSCRIBE_RETRY_PAUSE).await;
                if let Err(e) = subscriber.force_reconnection().await {
                    debug!(error = %e, "forcing a Redis reconnection failed; fred keeps retrying");
                }
            } else {
                error!(
                    endpoint = %state.endpoint,
                    channel = %state.channel(),
                    error = %e,
                    "Redis refused SUBSCRIBE after a reconnect; this instance stays not ready. \
                     Check the Redis ACL for this channel, then restart the instance"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_payload_sample_is_cut_and_marked() {
        let payload = vec![b'x'; 1_000];
        let text = sample(&payload);
        assert_eq!(text.chars().filter(|c| *c == 'x').count(), SAMPLE_BYTES);
        assert!(text.ends_with('…'));
        assert_eq!(sample(b"short"), "short");
    }
}
