//! The Socket.IO side of a load run: subscriber and publisher loops speaking Engine.IO v4 /
//! Socket.IO v5 (see [`crate::socketio`]) that feed the same counters, tracker and latency
//! histograms as the STOMP loops beside them.
//!
//! Acks map to receipts: with `--receipts` every `send` carries its intended send time as
//! the ack id, as a STOMP SEND carries it as the receipt id. The peer acks once it has
//! broadcast (nothing is stored), so this is not chat-service's "committed" receipt.

use std::sync::atomic::Ordering;
use std::time::Instant as StdInstant;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::{MAX_BURST, PublisherPlan, RunContext, SubscriberOutcome, lock, micros};
use crate::payload::Marker;
use crate::socketio::{self, EnginePacket, PacketKind};
use crate::socketio_ws::SocketIoConnection;
use crate::token;

/// The ack id of the `leave` that ends a publisher's run: 2^53 - 1, the largest integer a
/// JavaScript server reads exactly, and no intended send time in microseconds (that would
/// be 285 years into the run).
const BYE_ACK_ID: u64 = (1 << 53) - 1;

/// The event the peer broadcasts to a room.
const MESSAGE_EVENT: &str = "message";

pub(super) async fn subscriber_loop(
    mut connection: SocketIoConnection,
    context: &RunContext,
    mut stop: watch::Receiver<bool>,
) -> SubscriberOutcome {
    let mut outcome = SubscriberOutcome::default();
    let mut latency = context.latency.recorder();
    loop {
        let message = tokio::select! {
            _ = stop.changed() => break,
            message = connection.socket.next() => message,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_)) | Err(_)) | None => {
                context.live.disconnects.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Some(Ok(_)) => continue,
        };
        let now_us = context.now_us();
        match socketio::decode(&text) {
            Ok(EnginePacket::Message(packet)) if packet.kind == PacketKind::Event => {
                match socketio::split_event(packet.data) {
                    Ok(event) if event.name == MESSAGE_EVENT => {
                        // The marker is plain ASCII inside the content string: found
                        // without parsing the JSON, as in STOMP bodies.
                        if outcome.record(event.args.as_bytes(), now_us, context, &mut latency) {
                            context.live.delivered.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => outcome.tracker.unparsable += 1,
                }
            }
            Ok(EnginePacket::Ping(payload)) => {
                let pong = socketio::pong(payload);
                if connection.socket.send(Message::text(pong)).await.is_err() {
                    context.live.disconnects.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
            Ok(EnginePacket::Close) => {
                context.live.disconnects.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Ok(EnginePacket::Message(packet)) if packet.kind == PacketKind::Disconnect => {
                context.live.disconnects.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Ok(_) => {}
            Err(_) => {
                context.live.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    outcome
}

impl PublisherPlan {
    /// The `send` event of message `seq`: `{room, senderId, content}` with the marker in the
    /// content, and the intended send time as ack id when receipts are on.
    fn socketio_event(&self, seq: u64, sent_us: u64) -> String {
        let marker = Marker {
            publisher: self.index,
            seq,
            sent_us,
        };
        let mut content = String::with_capacity(self.size);
        marker.write_padded(self.size, &mut content);
        let mut args = String::with_capacity(self.size + self.destination.len() + 48);
        args.push_str("{\"room\":");
        socketio::push_json_string(&mut args, &self.destination);
        args.push_str(",\"senderId\":");
        args.push_str(&token::publisher_user(self.index).to_string());
        args.push_str(",\"content\":");
        socketio::push_json_string(&mut args, &content);
        args.push('}');
        let id = self.receipts.then_some(sent_us);
        socketio::event(id, "send", &args)
    }

    /// The acked `leave` a publisher ends with: the peer handles a socket's events in order,
    /// so its ack means every `send` before it has been broadcast.
    fn socketio_bye(&self) -> String {
        let mut room = String::new();
        socketio::push_json_string(&mut room, &self.destination);
        socketio::event(Some(BYE_ACK_ID), "leave", &room)
    }
}

pub(super) async fn publisher_loop(
    connection: SocketIoConnection,
    plan: PublisherPlan,
    context: &RunContext,
) {
    let (mut sink, mut stream) = connection.socket.split();
    // The read side answers pings through the write side, which owns the sink.
    let (pong_tx, mut pong_rx) = mpsc::unbounded_channel::<String>();
    let acks = async {
        let mut receipt_latency = context.receipt_latency.recorder();
        while let Some(Ok(message)) = stream.next().await {
            let text = match message {
                Message::Text(text) => text,
                Message::Close(_) => break,
                _ => continue,
            };
            let packet = match socketio::decode(&text) {
                Ok(EnginePacket::Ping(payload)) => {
                    let _ = pong_tx.send(socketio::pong(payload));
                    continue;
                }
                Ok(EnginePacket::Close) => break,
                Ok(EnginePacket::Message(packet)) => packet,
                Ok(_) => continue,
                Err(_) => {
                    context.live.errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            };
            match (packet.kind, packet.id) {
                // Every send before the leave has been handled.
                (PacketKind::Ack, Some(BYE_ACK_ID)) => return,
                (PacketKind::Ack, Some(sent_us)) => {
                    if socketio::ack_is_refusal(packet.data) {
                        context.live.errors.fetch_add(1, Ordering::Relaxed);
                        if let Some(outcomes) = &context.outcomes {
                            lock(outcomes).push((plan.index, sent_us, "REFUSED".to_owned()));
                        }
                        continue;
                    }
                    context.receipts.fetch_add(1, Ordering::Relaxed);
                    if let Some(outcomes) = &context.outcomes {
                        lock(outcomes).push((plan.index, sent_us, "RECEIPT".to_owned()));
                    }
                    if sent_us >= context.measure_from_us {
                        receipt_latency.record(context.now_us().saturating_sub(sent_us));
                    }
                }
                (PacketKind::Disconnect, _) => break,
                (PacketKind::ConnectError, _) => {
                    context.live.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                _ => {}
            }
        }
    };
    let sent_counter = &context.sent_by_publisher[plan.index as usize];
    let send = async {
        let mut seq = 0u64;
        loop {
            let due = plan.due_at(seq);
            if due >= plan.send_end {
                break;
            }
            tokio::select! {
                biased;
                Some(pong) = pong_rx.recv() => {
                    if sink.send(Message::text(pong)).await.is_err() {
                        return;
                    }
                    continue;
                }
                () = tokio::time::sleep_until(Instant::from_std(due)) => {}
            }
            let now = StdInstant::now();
            let mut burst = 0;
            while burst < MAX_BURST {
                let due = plan.due_at(seq);
                if due > now || due >= plan.send_end {
                    break;
                }
                let event = plan.socketio_event(seq, micros(due - context.origin));
                if sink.feed(Message::text(event)).await.is_err() {
                    return;
                }
                seq += 1;
                burst += 1;
                sent_counter.fetch_add(1, Ordering::Relaxed);
                context.live.sent.fetch_add(1, Ordering::Relaxed);
            }
            if sink.flush().await.is_err() {
                return;
            }
            if burst == MAX_BURST {
                tokio::task::yield_now().await;
            }
        }
        let _ = sink.send(Message::text(plan.socketio_bye())).await;
    };
    // Both to the end: acks of the last sends arrive after the leave is sent.
    tokio::join!(send, acks);
    let _ = sink.send(Message::text(socketio::disconnect())).await;
    let _ = sink.close().await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::Wire;
    use super::*;

    fn plan(receipts: bool) -> PublisherPlan {
        let start = StdInstant::now();
        PublisherPlan {
            index: 3,
            destination: "bench.1.\"q\"".into(),
            room_id: 0,
            wire: Wire::SocketIo,
            receipts,
            size: 64,
            interval: Duration::from_millis(1),
            phase: 0.0,
            start,
            send_end: start,
        }
    }

    #[test]
    fn a_send_event_carries_the_room_and_the_marker_in_its_content() {
        let wire = plan(false).socketio_event(9, 4321);
        let Ok(EnginePacket::Message(packet)) = socketio::decode(&wire) else {
            panic!("{wire}");
        };
        assert_eq!((packet.kind, packet.id), (PacketKind::Event, None));
        let event = socketio::split_event(packet.data).unwrap();
        assert_eq!(event.name, "send");
        let body: serde_json::Value = serde_json::from_str(event.args).unwrap();
        assert_eq!(body["room"], "bench.1.\"q\"");
        assert_eq!(body["senderId"], token::publisher_user(3));
        assert_eq!(body["content"].as_str().unwrap().len(), 64);
        assert_eq!(
            Marker::find(event.args.as_bytes()),
            Some(Marker {
                publisher: 3,
                seq: 9,
                sent_us: 4321
            })
        );
    }

    #[test]
    fn with_receipts_the_ack_id_is_the_intended_send_time() {
        let wire = plan(true).socketio_event(0, 987_654);
        let Ok(EnginePacket::Message(packet)) = socketio::decode(&wire) else {
            panic!("{wire}");
        };
        assert_eq!(packet.id, Some(987_654));
    }

    #[test]
    fn the_closing_leave_asks_for_the_reserved_ack() {
        let wire = plan(false).socketio_bye();
        assert_eq!(wire, r#"429007199254740991["leave","bench.1.\"q\""]"#);
        let Ok(EnginePacket::Message(packet)) = socketio::decode(&wire) else {
            panic!("{wire}");
        };
        assert_eq!(packet.id, Some(BYE_ACK_ID));
    }
}
