//! A `MessageBus` over a tokio broadcast channel. A subscriber that falls more than the
//! channel's capacity behind is told it may have missed messages, exactly like a Redis
//! subscriber after a reconnect, so the catch-up path is exercised in tests too.

use async_trait::async_trait;
use chat_domain::{
    BusError, BusEvent, BusEvents, ChatMessagePublish, ControlEvent, MessageBus, RoomId,
};
use tokio::sync::broadcast;

/// The in-memory bus. Share one `Arc<InMemoryBus>` between instances in one process.
#[derive(Debug)]
pub struct InMemoryBus {
    sender: broadcast::Sender<Published>,
}

/// What goes through the channel: messages and control events in one order.
#[derive(Debug, Clone)]
enum Published {
    Message(ChatMessagePublish),
    Control(ControlEvent),
}

impl InMemoryBus {
    /// Default per-subscriber backlog before it is told it lagged.
    pub const DEFAULT_CAPACITY: usize = 65_536;

    /// A bus with [`Self::DEFAULT_CAPACITY`].
    #[must_use]
    pub fn new() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }

    /// A bus on which a subscriber may fall `capacity` events behind (at least 1) before
    /// it gets [`BusEvent::MayHaveMissedMessages`].
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self { sender }
    }
}

impl Default for InMemoryBus {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl MessageBus for InMemoryBus {
    async fn publish(&self, message: &ChatMessagePublish) -> Result<(), BusError> {
        // An error only means nobody is subscribed right now, which is not a failure.
        let _ = self.sender.send(Published::Message(message.clone()));
        Ok(())
    }

    async fn publish_control(&self, event: &ControlEvent) -> Result<(), BusError> {
        let _ = self.sender.send(Published::Control(event.clone()));
        Ok(())
    }

    /// One channel carries every room here: nothing to subscribe to.
    fn watch_room(&self, _room: RoomId) {}

    fn unwatch_room(&self, _room: RoomId) {}

    async fn subscribe(&self) -> Result<BusEvents, BusError> {
        let receiver = self.sender.subscribe();
        let events = futures_util::stream::unfold(receiver, |mut receiver| async move {
            let event = match receiver.recv().await {
                Ok(Published::Message(message)) => BusEvent::Message(message),
                Ok(Published::Control(event)) => BusEvent::Control(event),
                Err(broadcast::error::RecvError::Lagged(_)) => BusEvent::MayHaveMissedMessages,
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            Some((event, receiver))
        });
        Ok(Box::pin(events))
    }

    async fn check_health(&self) -> Result<(), BusError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chat_domain::{MessageId, MessageType, RoomId, SenderId, Seq};
    use futures_util::StreamExt;

    use super::*;

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_it_may_have_missed_messages() {
        let bus = InMemoryBus::with_capacity(2);
        let mut events = bus.subscribe().await.unwrap();
        for seq in 1..=5 {
            let message = ChatMessagePublish {
                chat_room_id: RoomId(1),
                message_id: MessageId(seq),
                sender_id: SenderId(1),
                sender_nickname: "a".into(),
                content: "b".into(),
                message_type: MessageType::Text,
                created_at: chrono::Utc::now(),
                seq: Some(Seq(seq)),
            };
            bus.publish(&message).await.unwrap();
        }
        assert_eq!(events.next().await, Some(BusEvent::MayHaveMissedMessages));
        match events.next().await {
            Some(BusEvent::Message(m)) => assert_eq!(m.seq, Some(Seq(4))),
            other => panic!("expected the newest messages after the lag, got {other:?}"),
        }
    }
}
