//! Gap detection on a room's `seq`: decides, for each message an instance receives from the
//! bus, whether to deliver it, drop it as already delivered, or first backfill what is
//! missing. Pure bookkeeping; the caller does the backfill.

use std::collections::HashMap;

use crate::{RoomId, Seq};

/// What to do with a message that arrived from the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceDecision {
    /// The next one in order: deliver it.
    Deliver,
    /// Already delivered (or older): drop it.
    Duplicate,
    /// Messages `first..=last` are missing: fetch and deliver them, then this one.
    Gap {
        /// The first missing seq: the one after the last delivered.
        first: Seq,
        /// The last missing seq: the one before the message that arrived.
        last: Seq,
    },
    /// No seq (a Spring publisher) or a room nobody here follows: deliver as it comes.
    Untracked,
}

/// The last delivered `seq` of each room this instance follows.
#[derive(Debug, Default, Clone)]
pub struct RoomSequencer {
    last_delivered: HashMap<RoomId, Seq>,
}

impl RoomSequencer {
    /// A sequencer that follows no room yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts following a room from `last_seq` (the room's newest seq when the first local
    /// subscriber arrived). Keeps the current position if the room is already followed.
    pub fn follow(&mut self, room: RoomId, last_seq: Seq) {
        self.last_delivered.entry(room).or_insert(last_seq);
    }

    /// Stops following a room (its last local subscriber left).
    pub fn forget(&mut self, room: RoomId) {
        self.last_delivered.remove(&room);
    }

    /// The newest seq delivered in `room`, if it is followed.
    #[must_use]
    pub fn last_delivered(&self, room: RoomId) -> Option<Seq> {
        self.last_delivered.get(&room).copied()
    }

    /// Classifies a message. Only [`SequenceDecision::Deliver`] advances the position; after
    /// a gap is filled the caller reports it with [`RoomSequencer::delivered`].
    pub fn observe(&mut self, room: RoomId, seq: Option<Seq>) -> SequenceDecision {
        let (Some(seq), Some(last)) = (seq, self.last_delivered.get_mut(&room)) else {
            return SequenceDecision::Untracked;
        };
        if seq <= *last {
            SequenceDecision::Duplicate
        } else if seq == last.next() {
            *last = seq;
            SequenceDecision::Deliver
        } else {
            SequenceDecision::Gap {
                first: last.next(),
                last: seq.prev(),
            }
        }
    }

    /// Records that everything up to `seq` has been delivered in `room`.
    pub fn delivered(&mut self, room: RoomId, seq: Seq) {
        if let Some(last) = self.last_delivered.get_mut(&room)
            && seq > *last
        {
            *last = seq;
        }
    }

    /// Every followed room with its position, e.g. to backfill all after a bus interruption.
    pub fn followed(&self) -> impl Iterator<Item = (RoomId, Seq)> + '_ {
        self.last_delivered.iter().map(|(room, seq)| (*room, *seq))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const ROOM: RoomId = RoomId(1);

    #[test]
    fn in_order_messages_are_delivered_and_repeats_dropped() {
        let mut s = RoomSequencer::new();
        s.follow(ROOM, Seq(0));
        assert_eq!(s.observe(ROOM, Some(Seq(1))), SequenceDecision::Deliver);
        assert_eq!(s.observe(ROOM, Some(Seq(2))), SequenceDecision::Deliver);
        assert_eq!(s.observe(ROOM, Some(Seq(2))), SequenceDecision::Duplicate);
        assert_eq!(s.observe(ROOM, Some(Seq(1))), SequenceDecision::Duplicate);
        assert_eq!(s.last_delivered(ROOM), Some(Seq(2)));
    }

    #[test]
    fn a_jump_reports_the_missing_range_and_waits_for_the_backfill() {
        let mut s = RoomSequencer::new();
        s.follow(ROOM, Seq(4));
        assert_eq!(
            s.observe(ROOM, Some(Seq(8))),
            SequenceDecision::Gap {
                first: Seq(5),
                last: Seq(7)
            }
        );
        assert_eq!(s.last_delivered(ROOM), Some(Seq(4)));
        s.delivered(ROOM, Seq(8));
        assert_eq!(s.observe(ROOM, Some(Seq(6))), SequenceDecision::Duplicate);
        assert_eq!(s.observe(ROOM, Some(Seq(9))), SequenceDecision::Deliver);
    }

    #[test]
    fn unfollowed_rooms_and_messages_without_seq_are_untracked() {
        let mut s = RoomSequencer::new();
        assert_eq!(s.observe(ROOM, Some(Seq(3))), SequenceDecision::Untracked);
        s.follow(ROOM, Seq(0));
        assert_eq!(s.observe(ROOM, None), SequenceDecision::Untracked);
        s.forget(ROOM);
        assert_eq!(s.last_delivered(ROOM), None);
    }

    #[test]
    fn following_again_keeps_the_position() {
        let mut s = RoomSequencer::new();
        s.follow(ROOM, Seq(3));
        s.follow(ROOM, Seq(0));
        assert_eq!(s.last_delivered(ROOM), Some(Seq(3)));
    }

    proptest! {
        /// Whatever order and repetition the bus delivers in, acting on the decisions
        /// (backfilling gaps from the "store") delivers 1..=n exactly once, in order.
        #[test]
        fn any_arrival_order_delivers_every_seq_once_in_order(
            arrivals in proptest::collection::vec(1i64..=30, 1..80)
        ) {
            let mut s = RoomSequencer::new();
            s.follow(ROOM, Seq(0));
            let mut delivered = Vec::new();
            for seq in arrivals {
                match s.observe(ROOM, Some(Seq(seq))) {
                    SequenceDecision::Deliver => delivered.push(seq),
                    SequenceDecision::Duplicate | SequenceDecision::Untracked => {}
                    SequenceDecision::Gap { first, last } => {
                        delivered.extend(first.0..=last.0);
                        delivered.push(seq);
                        s.delivered(ROOM, Seq(seq));
                    }
                }
            }
            let expected: Vec<i64> = (1..=delivered.len() as i64).collect();
            prop_assert_eq!(delivered, expected);
        }
    }
}
