//! STOMP heart-beats: the `heart-beat` header, interval negotiation, and a sans-I/O timer
//! that tells the caller when to send a heart-beat and when the peer has been silent too long.

use std::time::{Duration, Instant};

/// A `heart-beat` header value `cx,cy`: how often the sender can send heart-beats and how
/// often it wants to receive them, in milliseconds; 0 means "cannot" / "does not want".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HeartBeat {
    /// `cx`: the smallest interval at which the sender can send heart-beats (0: never).
    pub can_send_ms: u32,
    /// `cy`: the interval at which the sender wants to receive heart-beats (0: not at all).
    pub want_receive_ms: u32,
}

/// Why a `heart-beat` header could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeartBeatError {
    /// The value is not two fields separated by one comma.
    #[error(
        "heart-beat header {0:?} is not two comma-separated millisecond counts like \"10000,10000\""
    )]
    Malformed(String),
    /// One of the two fields is not a whole number of milliseconds that fits in 32 bits.
    #[error("heart-beat interval {0:?} is not a whole number of milliseconds (0 to 4294967295)")]
    InvalidInterval(String),
}

impl HeartBeat {
    /// No heart-beats either way; also what a missing `heart-beat` header means.
    pub const DISABLED: HeartBeat = HeartBeat {
        can_send_ms: 0,
        want_receive_ms: 0,
    };

    /// Parses a `heart-beat` header value such as `"10000,10000"` (spaces around the numbers
    /// are tolerated).
    ///
    /// # Errors
    /// [`HeartBeatError::Malformed`] without exactly one comma, and
    /// [`HeartBeatError::InvalidInterval`] when a field is not a `u32` decimal number.
    pub fn parse(value: &str) -> Result<HeartBeat, HeartBeatError> {
        let mut fields = value.split(',');
        let (Some(can_send), Some(want_receive), None) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(HeartBeatError::Malformed(value.to_owned()));
        };
        Ok(HeartBeat {
            can_send_ms: parse_interval(can_send)?,
            want_receive_ms: parse_interval(want_receive)?,
        })
    }

    /// The header value, e.g. `"10000,10000"`.
    #[must_use]
    pub fn to_header_value(self) -> String {
        format!("{},{}", self.can_send_ms, self.want_receive_ms)
    }
}

fn parse_interval(field: &str) -> Result<u32, HeartBeatError> {
    let digits = field.trim();
    // `u32::from_str` alone would accept a leading `+`.
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(HeartBeatError::InvalidInterval(field.to_owned()));
    }
    digits
        .parse()
        .map_err(|_| HeartBeatError::InvalidInterval(field.to_owned()))
}

/// The negotiated heart-beat intervals, from the server's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// How often the server must send something (a frame or a heart-beat); `None`: never.
    pub send_every: Option<Duration>,
    /// How often the client promised to send something; `None`: no promise, never time out.
    pub expect_every: Option<Duration>,
}

/// Negotiates intervals per STOMP 1.2: a direction is enabled only if its sender can send and
/// its receiver wants to receive, and then runs at the slower of the two rates.
///
/// Server to client: `max(server.cx, client.cy)`; client to server: `max(client.cx, server.cy)`.
#[must_use]
pub fn negotiate(client: HeartBeat, server: HeartBeat) -> Negotiated {
    Negotiated {
        send_every: interval(server.can_send_ms, client.want_receive_ms),
        expect_every: interval(client.can_send_ms, server.want_receive_ms),
    }
}

fn interval(sender_can_send_ms: u32, receiver_wants_ms: u32) -> Option<Duration> {
    if sender_can_send_ms == 0 || receiver_wants_ms == 0 {
        return None;
    }
    Some(Duration::from_millis(u64::from(
        sender_can_send_ms.max(receiver_wants_ms),
    )))
}

/// What the connection should do now, according to [`HeartBeatMonitor::poll`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeartBeatAction {
    /// Nothing is due.
    Idle,
    /// Nothing was sent for a whole send interval: send [`HEARTBEAT_EOL`](crate::HEARTBEAT_EOL).
    SendHeartBeat,
    /// The peer has been silent past the grace window: close the connection.
    PeerTimedOut,
}

/// Heart-beat timer for one connection. It holds no clock: every method takes `now`, so the
/// caller owns the timer (e.g. sleeps until [`next_deadline`](Self::next_deadline)) and tests
/// use synthetic instants.
#[derive(Clone, Debug)]
pub struct HeartBeatMonitor {
    send_every: Option<Duration>,
    /// How long the peer may stay silent: its promised interval times the grace factor, which
    /// absorbs network jitter. `None`: never time out.
    silence_allowed: Option<Duration>,
    last_sent: Instant,
    last_received: Instant,
}

impl HeartBeatMonitor {
    /// Starts timing at `now` (typically when `CONNECTED` is sent). The peer is considered
    /// dead once silent for `expect_every * grace_factor`; 1.5 to 2 is typical. A factor
    /// below 1 (or NaN) is treated as 1, because timing out before the promised interval
    /// would drop healthy peers.
    #[must_use]
    pub fn new(negotiated: Negotiated, now: Instant, grace_factor: f32) -> Self {
        let grace_factor = if grace_factor >= 1.0 {
            f64::from(grace_factor)
        } else {
            1.0
        };
        let silence_allowed = negotiated.expect_every.and_then(|expected| {
            // An absurdly large factor overflows; it then means "never time out".
            Duration::try_from_secs_f64(expected.as_secs_f64() * grace_factor).ok()
        });
        HeartBeatMonitor {
            send_every: negotiated.send_every,
            silence_allowed,
            last_sent: now,
            last_received: now,
        }
    }

    /// Records that bytes (a frame or a heart-beat) arrived from the peer.
    pub fn on_bytes_received(&mut self, now: Instant) {
        self.last_received = self.last_received.max(now);
    }

    /// Records that bytes (a frame or a heart-beat) were sent to the peer; any outgoing data
    /// counts as a heart-beat.
    pub fn on_bytes_sent(&mut self, now: Instant) {
        self.last_sent = self.last_sent.max(now);
    }

    /// What is due at `now`. A timed-out peer takes precedence over sending, and stays timed
    /// out until bytes arrive from it. Returning [`HeartBeatAction::SendHeartBeat`] counts as sending it, so the same
    /// heart-beat is not requested twice.
    pub fn poll(&mut self, now: Instant) -> HeartBeatAction {
        if self.peer_deadline().is_some_and(|deadline| now >= deadline) {
            return HeartBeatAction::PeerTimedOut;
        }
        if self.send_deadline().is_some_and(|deadline| now >= deadline) {
            self.on_bytes_sent(now);
            return HeartBeatAction::SendHeartBeat;
        }
        HeartBeatAction::Idle
    }

    /// The earliest moment [`poll`](Self::poll) could return something other than `Idle`
    /// (assuming no bytes move in between); `None` when heart-beats are off both ways.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        match (self.send_deadline(), self.peer_deadline()) {
            (Some(send), Some(peer)) => Some(send.min(peer)),
            (send, peer) => send.or(peer),
        }
    }

    fn send_deadline(&self) -> Option<Instant> {
        self.send_every
            .and_then(|every| self.last_sent.checked_add(every))
    }

    fn peer_deadline(&self) -> Option<Instant> {
        self.silence_allowed
            .and_then(|allowed| self.last_received.checked_add(allowed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(can_send_ms: u32, want_receive_ms: u32) -> HeartBeat {
        HeartBeat {
            can_send_ms,
            want_receive_ms,
        }
    }

    fn millis(ms: u64) -> Option<Duration> {
        Some(Duration::from_millis(ms))
    }

    #[test]
    fn a_header_value_parses_into_both_intervals() {
        assert_eq!(HeartBeat::parse("10000,20000"), Ok(beat(10_000, 20_000)));
        assert_eq!(HeartBeat::parse("0,0"), Ok(HeartBeat::DISABLED));
        assert_eq!(HeartBeat::parse(" 5 , 7 "), Ok(beat(5, 7)));
    }

    #[test]
    fn a_value_without_exactly_one_comma_is_malformed() {
        for value in ["", "10000", "1,2,3"] {
            assert_eq!(
                HeartBeat::parse(value),
                Err(HeartBeatError::Malformed(value.to_owned()))
            );
        }
    }

    #[test]
    fn a_field_that_is_not_a_u32_is_an_invalid_interval() {
        for value in ["a,1", "1,-1", "1,+1", "1,", "4294967296,0", "1.5,0"] {
            assert!(
                matches!(
                    HeartBeat::parse(value),
                    Err(HeartBeatError::InvalidInterval(_))
                ),
                "{value}"
            );
        }
    }

    #[test]
    fn header_values_round_trip() {
        let value = beat(4_294_967_295, 0);
        assert_eq!(value.to_header_value(), "4294967295,0");
        assert_eq!(HeartBeat::parse(&value.to_header_value()), Ok(value));
    }

    #[test]
    fn negotiation_follows_the_stomp_table() {
        // (client cx,cy), (server cx,cy) -> (server sends every, server expects every)
        let table = [
            (beat(0, 0), beat(10_000, 10_000), None, None),
            (beat(10_000, 10_000), beat(0, 0), None, None),
            (
                beat(5_000, 20_000),
                beat(10_000, 10_000),
                millis(20_000),
                millis(10_000),
            ),
            (
                beat(30_000, 1_000),
                beat(10_000, 10_000),
                millis(10_000),
                millis(30_000),
            ),
            (beat(0, 5_000), beat(10_000, 10_000), millis(10_000), None),
            (beat(5_000, 0), beat(10_000, 10_000), None, millis(10_000)),
            (beat(5_000, 5_000), beat(10_000, 0), millis(10_000), None),
            (beat(5_000, 5_000), beat(0, 10_000), None, millis(10_000)),
        ];
        for (client, server, send_every, expect_every) in table {
            assert_eq!(
                negotiate(client, server),
                Negotiated {
                    send_every,
                    expect_every
                },
                "client {client:?}, server {server:?}"
            );
        }
    }

    fn ten_seconds_both_ways() -> Negotiated {
        Negotiated {
            send_every: millis(10_000),
            expect_every: millis(10_000),
        }
    }

    #[test]
    fn the_monitor_asks_for_a_heart_beat_once_per_idle_send_interval() {
        let start = Instant::now();
        let mut monitor = HeartBeatMonitor::new(ten_seconds_both_ways(), start, 2.0);
        monitor.on_bytes_received(start + Duration::from_secs(9));
        assert_eq!(
            monitor.poll(start + Duration::from_millis(9_999)),
            HeartBeatAction::Idle
        );
        assert_eq!(
            monitor.poll(start + Duration::from_secs(10)),
            HeartBeatAction::SendHeartBeat
        );
        assert_eq!(
            monitor.poll(start + Duration::from_secs(10)),
            HeartBeatAction::Idle
        );
        assert_eq!(
            monitor.next_deadline(),
            Some(start + Duration::from_secs(20))
        );
    }

    #[test]
    fn outgoing_frames_postpone_the_next_heart_beat() {
        let start = Instant::now();
        let mut monitor = HeartBeatMonitor::new(ten_seconds_both_ways(), start, 2.0);
        monitor.on_bytes_sent(start + Duration::from_secs(8));
        assert_eq!(
            monitor.poll(start + Duration::from_secs(10)),
            HeartBeatAction::Idle
        );
        assert_eq!(
            monitor.poll(start + Duration::from_secs(18)),
            HeartBeatAction::SendHeartBeat
        );
    }

    #[test]
    fn a_peer_silent_past_the_grace_window_times_out() {
        let start = Instant::now();
        let negotiated = Negotiated {
            send_every: None,
            expect_every: millis(10_000),
        };
        let mut monitor = HeartBeatMonitor::new(negotiated, start, 1.5);
        assert_eq!(
            monitor.next_deadline(),
            Some(start + Duration::from_secs(15))
        );
        monitor.on_bytes_received(start + Duration::from_secs(12));
        assert_eq!(
            monitor.poll(start + Duration::from_secs(26)),
            HeartBeatAction::Idle
        );
        assert_eq!(
            monitor.next_deadline(),
            Some(start + Duration::from_secs(27))
        );
        assert_eq!(
            monitor.poll(start + Duration::from_secs(27)),
            HeartBeatAction::PeerTimedOut
        );
        assert_eq!(
            monitor.poll(start + Duration::from_secs(28)),
            HeartBeatAction::PeerTimedOut,
            "a timeout is sticky until bytes arrive"
        );
    }

    #[test]
    fn a_timeout_wins_over_a_due_heart_beat() {
        let start = Instant::now();
        let mut monitor = HeartBeatMonitor::new(ten_seconds_both_ways(), start, 1.0);
        assert_eq!(
            monitor.next_deadline(),
            Some(start + Duration::from_secs(10))
        );
        assert_eq!(
            monitor.poll(start + Duration::from_secs(10)),
            HeartBeatAction::PeerTimedOut
        );
    }

    #[test]
    fn disabled_heart_beats_never_fire() {
        let start = Instant::now();
        let negotiated = negotiate(HeartBeat::DISABLED, beat(10_000, 10_000));
        let mut monitor = HeartBeatMonitor::new(negotiated, start, 2.0);
        assert_eq!(monitor.next_deadline(), None);
        assert_eq!(
            monitor.poll(start + Duration::from_secs(86_400)),
            HeartBeatAction::Idle
        );
    }

    #[test]
    fn nonsensical_grace_factors_neither_panic_nor_shorten_the_window() {
        let start = Instant::now();
        for factor in [0.0, -3.0, f32::NAN] {
            let monitor = HeartBeatMonitor::new(ten_seconds_both_ways(), start, factor);
            assert_eq!(
                monitor.next_deadline(),
                Some(start + Duration::from_secs(10))
            );
        }
        for factor in [f32::MAX, f32::INFINITY] {
            let mut monitor = HeartBeatMonitor::new(
                Negotiated {
                    send_every: None,
                    expect_every: millis(10_000),
                },
                start,
                factor,
            );
            assert_eq!(monitor.next_deadline(), None, "overflow means never");
            assert_eq!(
                monitor.poll(start + Duration::from_secs(1 << 30)),
                HeartBeatAction::Idle
            );
        }
    }

    #[test]
    fn instants_from_the_past_do_not_move_the_timers_backwards() {
        let start = Instant::now();
        let mut monitor =
            HeartBeatMonitor::new(ten_seconds_both_ways(), start + Duration::from_secs(5), 2.0);
        monitor.on_bytes_received(start);
        monitor.on_bytes_sent(start);
        assert_eq!(
            monitor.next_deadline(),
            Some(start + Duration::from_secs(15))
        );
    }
}
