//! Publishing off the critical path: a SEND's RECEIPT and its delivery on this instance
//! follow the commit, never the bus. [`QueuedBus`] takes a stored message into a bounded
//! queue and returns at once; one task publishes from it with a bounded number of publishes
//! in flight. When Redis is slow or down and the queue is full, the publish is dropped:
//! other instances then fetch the message from the store by reconciliation.
//!
//! A bus outage is logged once when it starts and once when it ends ([`PublishHealth`]),
//! not once per message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chat_domain::{BusCounters, BusError, BusEvents, ChatMessagePublish, ControlEvent, MessageBus};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// Publishes awaiting their reply at once; fred pipelines them on one connection.
const MAX_IN_FLIGHT: usize = 256;

/// A bus whose `publish` only enqueues. Subscribing and health go to the inner bus.
pub(crate) struct QueuedBus {
    inner: Arc<dyn MessageBus>,
    queue: mpsc::Sender<ChatMessagePublish>,
    metrics: Arc<Metrics>,
}

impl QueuedBus {
    /// Starts the publishing task; it ends when the last clone of the returned bus is gone
    /// and the queue is empty.
    pub(crate) fn start(
        inner: Arc<dyn MessageBus>,
        capacity: usize,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let (queue, receiver) = mpsc::channel(capacity.max(1));
        tokio::spawn(run_publisher(inner.clone(), receiver));
        Arc::new(Self {
            inner,
            queue,
            metrics,
        })
    }
}

#[async_trait]
impl MessageBus for QueuedBus {
    async fn publish(&self, message: &ChatMessagePublish) -> Result<(), BusError> {
        match self.queue.try_send(message.clone()) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.publish_dropped.inc();
                Err(BusError::Unavailable(
                    "the publish queue is full (the bus is slow or down); other instances \
                     fetch this message from the store instead"
                        .into(),
                ))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(BusError::Unavailable(
                "the publisher has stopped (the instance is shutting down)".into(),
            )),
        }
    }

    /// Control events are rare and their sender waits for them: they go straight out.
    async fn publish_control(&self, event: &ControlEvent) -> Result<(), BusError> {
        self.inner.publish_control(event).await
    }

    async fn subscribe(&self) -> Result<BusEvents, BusError> {
        self.inner.subscribe().await
    }

    fn watch_room(&self, room: chat_domain::RoomId) {
        self.inner.watch_room(room);
    }

    fn unwatch_room(&self, room: chat_domain::RoomId) {
        self.inner.unwatch_room(room);
    }

    async fn check_health(&self) -> Result<(), BusError> {
        self.inner.check_health().await
    }

    fn counters(&self) -> BusCounters {
        self.inner.counters()
    }
}

async fn run_publisher(bus: Arc<dyn MessageBus>, mut queue: mpsc::Receiver<ChatMessagePublish>) {
    let mut in_flight = FuturesUnordered::new();
    let mut health = PublishHealth::default();
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            next = queue.recv(), if open && in_flight.len() < MAX_IN_FLIGHT => match next {
                Some(message) => {
                    let bus = bus.clone();
                    in_flight.push(async move { bus.publish(&message).await });
                }
                None => open = false,
            },
            Some(result) = in_flight.next(), if !in_flight.is_empty() => {
                match health.handle_result(result.err(), Instant::now()) {
                    Some(Transition::WentDown(error)) => tracing::warn!(
                        %error,
                        "publishing to the message bus fails; messages are still stored, \
                         delivered on this instance and RECEIPTed, and other instances fetch \
                         them from the store every reconciliation period until it is back"
                    ),
                    Some(Transition::CameBack { failed, after }) => tracing::info!(
                        failed,
                        down_for_ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
                        "publishing to the message bus works again"
                    ),
                    None => {}
                }
            }
        }
    }
}

/// Whether publishing works, from the outcomes of publishes: a change of state is worth a
/// log line, each failure only a counter.
#[derive(Debug, Default)]
pub(crate) struct PublishHealth {
    down_since: Option<Instant>,
    failed: u64,
}

/// A change [`PublishHealth`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Transition {
    /// The first failure after a success (or at start).
    WentDown(BusError),
    /// The first success after failures: how many failed and for how long.
    CameBack { failed: u64, after: Duration },
}

impl PublishHealth {
    /// Takes one publish outcome (`None` for success).
    pub(crate) fn handle_result(
        &mut self,
        error: Option<BusError>,
        now: Instant,
    ) -> Option<Transition> {
        match (error, self.down_since) {
            (Some(error), None) => {
                self.down_since = Some(now);
                self.failed = 1;
                Some(Transition::WentDown(error))
            }
            (Some(_), Some(_)) => {
                self.failed += 1;
                None
            }
            (None, Some(since)) => {
                self.down_since = None;
                Some(Transition::CameBack {
                    failed: std::mem::take(&mut self.failed),
                    after: now.saturating_duration_since(since),
                })
            }
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down() -> Option<BusError> {
        Some(BusError::Unavailable("redis frozen".into()))
    }

    #[test]
    fn an_outage_is_reported_once_when_it_starts_and_once_when_it_ends() {
        let mut health = PublishHealth::default();
        let start = Instant::now();
        assert_eq!(health.handle_result(None, start), None);
        assert!(matches!(
            health.handle_result(down(), start),
            Some(Transition::WentDown(_))
        ));
        for i in 1..1000 {
            assert_eq!(
                health.handle_result(down(), start + Duration::from_millis(i)),
                None
            );
        }
        assert_eq!(
            health.handle_result(None, start + Duration::from_secs(40)),
            Some(Transition::CameBack {
                failed: 1000,
                after: Duration::from_secs(40)
            })
        );
        assert_eq!(health.handle_result(None, start), None);
    }

    fn message(seq: i64) -> ChatMessagePublish {
        serde_json::from_value(serde_json::json!({
            "chatRoomId": 1, "messageId": seq, "senderId": 1, "senderNickname": "a",
            "content": "x", "messageType": "TEXT", "createdAt": "2026-12-02T10:00:00.000Z",
            "seq": seq
        }))
        .expect("a valid message")
    }

    /// A bus frozen like a SIGSTOPped Redis: publishes never answer.
    struct FrozenBus;

    #[async_trait]
    impl MessageBus for FrozenBus {
        async fn publish(&self, _: &ChatMessagePublish) -> Result<(), BusError> {
            std::future::pending().await
        }
        async fn publish_control(&self, _: &ControlEvent) -> Result<(), BusError> {
            std::future::pending().await
        }
        async fn subscribe(&self) -> Result<BusEvents, BusError> {
            Err(BusError::Unavailable("frozen".into()))
        }
        fn watch_room(&self, _: chat_domain::RoomId) {}
        fn unwatch_room(&self, _: chat_domain::RoomId) {}
        async fn check_health(&self) -> Result<(), BusError> {
            Err(BusError::Unavailable("frozen".into()))
        }
    }

    #[tokio::test]
    async fn publishes_return_at_once_on_a_frozen_bus_and_past_the_queue_they_are_dropped() {
        let metrics = Arc::new(Metrics::new());
        let capacity = 8;
        let bus = QueuedBus::start(Arc::new(FrozenBus), capacity, metrics.clone());
        let mut dropped = 0;
        for seq in 1..=(MAX_IN_FLIGHT + capacity + 10) {
            let published = tokio::time::timeout(
                Duration::from_millis(100),
                bus.publish(&message(i64::try_from(seq).unwrap())),
            )
            .await
            .expect("publish must not wait for the bus");
            if published.is_err() {
                dropped += 1;
            }
            // Let the publisher take what it can into flight.
            tokio::task::yield_now().await;
        }
        assert!(dropped >= 10, "only {dropped} dropped");
        assert_eq!(metrics.publish_dropped.get(), dropped);
    }
}
