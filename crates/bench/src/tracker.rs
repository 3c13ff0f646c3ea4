//! Per-subscriber delivery bookkeeping: for every publisher a subscriber hears from, which
//! sequence numbers arrived (a bitset: one bit per message, so a long run stays small),
//! which arrived twice and which arrived after a later one. Loss is what was sent to the
//! subscriber's room and never arrived, computed at the end from the publishers' counts.

use std::collections::HashMap;

/// How one delivery relates to what the subscriber already had from that publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// New, and no later message of this publisher came before it.
    InOrder,
    /// New, but a later message of this publisher arrived first.
    Reordered,
    /// Already delivered once.
    Duplicate,
}

/// What one subscriber saw of one publisher.
#[derive(Debug, Default, Clone)]
struct PublisherStream {
    seen: Vec<u64>,
    highest: Option<u64>,
    distinct: u64,
    duplicates: u64,
    reordered: u64,
}

impl PublisherStream {
    fn record(&mut self, seq: u64) -> Arrival {
        let word = usize::try_from(seq / 64).unwrap_or(usize::MAX);
        let bit = 1u64 << (seq % 64);
        if word >= self.seen.len() {
            // Grow geometrically: sequence numbers only climb, one bit at a time.
            let wanted = (word + 1).max(self.seen.len() * 2);
            self.seen.resize(wanted, 0);
        }
        if self.seen[word] & bit != 0 {
            self.duplicates += 1;
            return Arrival::Duplicate;
        }
        self.seen[word] |= bit;
        self.distinct += 1;
        match self.highest {
            Some(highest) if seq < highest => {
                self.reordered += 1;
                Arrival::Reordered
            }
            _ => {
                self.highest = Some(seq);
                Arrival::InOrder
            }
        }
    }
}

/// Everything one subscriber received, by publisher.
#[derive(Debug, Default, Clone)]
pub struct DeliveryTracker {
    streams: HashMap<u32, PublisherStream>,
    /// MESSAGE frames without a readable bench marker.
    pub unparsable: u64,
}

/// Totals over subscribers, given what each publisher sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryTotals {
    /// Deliveries owed: for each subscriber, the messages its room's publishers sent.
    pub expected: u64,
    /// Distinct messages delivered (each counted once per subscriber).
    pub delivered: u64,
    /// `expected - delivered` over the publishers a subscriber should hear.
    pub lost: u64,
    /// Deliveries of a message the subscriber already had.
    pub duplicates: u64,
    /// Deliveries that arrived after a later message of the same publisher.
    pub reordered: u64,
    /// Deliveries from a publisher of another room: a routing bug.
    pub misrouted: u64,
    /// MESSAGE frames without a bench marker.
    pub unparsable: u64,
}

impl DeliveryTracker {
    /// Records one delivery.
    pub fn record(&mut self, publisher: u32, seq: u64) -> Arrival {
        self.streams.entry(publisher).or_default().record(seq)
    }

    /// Adds this subscriber's view to `totals`. `sent[p]` is what publisher `p` sent and
    /// `expects(p)` says whether this subscriber should have heard publisher `p`.
    pub fn add_to(&self, totals: &mut DeliveryTotals, sent: &[u64], expects: impl Fn(u32) -> bool) {
        for (publisher, &count) in (0u32..).zip(sent) {
            if !expects(publisher) {
                continue;
            }
            totals.expected += count;
            let distinct = self
                .streams
                .get(&publisher)
                .map_or(0, |stream| stream.distinct);
            totals.lost += count.saturating_sub(distinct);
        }
        for (publisher, stream) in &self.streams {
            if expects(*publisher) {
                totals.delivered += stream.distinct;
            } else {
                totals.misrouted += stream.distinct;
            }
            totals.duplicates += stream.duplicates;
            totals.reordered += stream.reordered;
        }
        totals.unparsable += self.unparsable;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_in_order_stream_has_no_loss_duplicates_or_reordering() {
        let mut tracker = DeliveryTracker::default();
        for seq in 0..1000 {
            assert_eq!(tracker.record(7, seq), Arrival::InOrder);
        }
        let mut totals = DeliveryTotals::default();
        tracker.add_to(&mut totals, &[0, 0, 0, 0, 0, 0, 0, 1000], |p| p == 7);
        assert_eq!(
            totals,
            DeliveryTotals {
                expected: 1000,
                delivered: 1000,
                ..DeliveryTotals::default()
            }
        );
    }

    #[test]
    fn missing_sequence_numbers_count_as_lost() {
        let mut tracker = DeliveryTracker::default();
        for seq in (0..100).filter(|seq| seq % 10 != 3) {
            tracker.record(0, seq);
        }
        let mut totals = DeliveryTotals::default();
        tracker.add_to(&mut totals, &[100], |_| true);
        assert_eq!(totals.lost, 10);
        assert_eq!(totals.delivered, 90);
        assert_eq!(totals.reordered, 0);
    }

    #[test]
    fn messages_after_the_last_delivered_one_are_lost_too() {
        let mut tracker = DeliveryTracker::default();
        tracker.record(0, 0);
        let mut totals = DeliveryTotals::default();
        tracker.add_to(&mut totals, &[5], |_| true);
        assert_eq!(totals.lost, 4);
    }

    #[test]
    fn a_publisher_never_heard_from_loses_everything_it_sent() {
        let tracker = DeliveryTracker::default();
        let mut totals = DeliveryTotals::default();
        tracker.add_to(&mut totals, &[3, 4], |_| true);
        assert_eq!((totals.expected, totals.lost), (7, 7));
    }

    #[test]
    fn a_repeated_delivery_is_a_duplicate_and_not_a_second_delivery() {
        let mut tracker = DeliveryTracker::default();
        assert_eq!(tracker.record(1, 0), Arrival::InOrder);
        assert_eq!(tracker.record(1, 1), Arrival::InOrder);
        assert_eq!(tracker.record(1, 1), Arrival::Duplicate);
        assert_eq!(tracker.record(1, 0), Arrival::Duplicate);
        let mut totals = DeliveryTotals::default();
        tracker.add_to(&mut totals, &[0, 2], |p| p == 1);
        assert_eq!(
            (totals.delivered, totals.duplicates, totals.lost),
            (2, 2, 0)
        );
    }

    #[test]
    fn a_message_overtaken_by_a_later_one_is_reordered_but_not_lost() {
        let mut tracker = DeliveryTracker::default();
        assert_eq!(tracker.record(0, 0), Arrival::InOrder);
        assert_eq!(tracker.record(0, 2), Arrival::InOrder);
        assert_eq!(tracker.record(0, 1), Arrival::Reordered);
        assert_eq!(tracker.record(0, 3), Arrival::InOrder);
        let mut totals = DeliveryTotals::default();
        tracker.add_to(&mut totals, &[4], |_| true);
        assert_eq!((totals.delivered, totals.reordered, totals.lost), (4, 1, 0));
    }

    #[test]
    fn streams_of_different_publishers_are_tracked_separately() {
        let mut tracker = DeliveryTracker::default();
        tracker.record(0, 5);
        // Publisher 1's seq 0 after publisher 0's seq 5 is not a reorder.
        assert_eq!(tracker.record(1, 0), Arrival::InOrder);
    }

    #[test]
    fn deliveries_from_another_rooms_publisher_are_misrouted_not_delivered() {
        let mut tracker = DeliveryTracker::default();
        tracker.record(0, 0);
        tracker.record(1, 0);
        let mut totals = DeliveryTotals::default();
        tracker.add_to(&mut totals, &[1, 1], |p| p == 0);
        assert_eq!(
            (
                totals.expected,
                totals.delivered,
                totals.misrouted,
                totals.lost
            ),
            (1, 1, 1, 0)
        );
    }

    #[test]
    fn large_sequence_numbers_grow_the_bitset_without_losing_earlier_bits() {
        let mut tracker = DeliveryTracker::default();
        tracker.record(0, 3);
        tracker.record(0, 100_000);
        assert_eq!(tracker.record(0, 3), Arrival::Duplicate);
        assert_eq!(tracker.record(0, 100_000), Arrival::Duplicate);
    }
}
