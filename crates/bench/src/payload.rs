//! The bench marker every message carries: publisher id, per-publisher sequence number and
//! intended send time, written as `cb:<publisher>:<seq>:<sent_us>;` and padded to the message
//! size. Plain ASCII without JSON escapes, so it survives chat-service's JSON round trip
//! unchanged and a receiver can find it with a substring search instead of parsing JSON
//! (the generator shares the CPU with the server it measures).

use memchr::memmem;

/// Smallest message size that always fits the marker.
pub const MIN_SIZE: usize = 48;

const PREFIX: &[u8] = b"cb:";

/// What a receiver learns from one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// The publisher's index.
    pub publisher: u32,
    /// Per-publisher sequence number, from 0.
    pub seq: u64,
    /// Intended send time, microseconds since the run's clock origin.
    pub sent_us: u64,
}

impl Marker {
    /// Writes the marker padded with `x` to `size` bytes (longer only if the marker itself
    /// is).
    pub fn write_padded(&self, size: usize, out: &mut String) {
        use std::fmt::Write;
        let start = out.len();
        // Writing to a String cannot fail.
        let _ = write!(out, "cb:{}:{}:{};", self.publisher, self.seq, self.sent_us);
        let written = out.len() - start;
        out.extend(std::iter::repeat_n('x', size.saturating_sub(written)));
    }

    /// Finds and parses the marker anywhere in `bytes` (a raw body or chat-service's JSON).
    #[must_use]
    pub fn find(bytes: &[u8]) -> Option<Marker> {
        let at = memmem::find(bytes, PREFIX)? + PREFIX.len();
        let rest = &bytes[at..];
        let (publisher, rest) = parse_number(rest, b':')?;
        let (seq, rest) = parse_number(rest, b':')?;
        let (sent_us, _) = parse_number(rest, b';')?;
        Some(Marker {
            publisher: u32::try_from(publisher).ok()?,
            seq,
            sent_us,
        })
    }
}

/// Decimal digits up to `end`; returns the number and what follows `end`.
fn parse_number(bytes: &[u8], end: u8) -> Option<(u64, &[u8])> {
    let mut value: u64 = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        if byte == end && i > 0 {
            return Some((value, &bytes[i + 1..]));
        }
        let digit = byte.checked_sub(b'0').filter(|d| *d <= 9)?;
        value = value.checked_mul(10)?.checked_add(u64::from(digit))?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_survives_a_round_trip_and_fills_the_requested_size() {
        let marker = Marker {
            publisher: 17,
            seq: 123_456,
            sent_us: 9_876_543_210,
        };
        let mut text = String::new();
        marker.write_padded(256, &mut text);
        assert_eq!(text.len(), 256);
        assert_eq!(Marker::find(text.as_bytes()), Some(marker));
    }

    #[test]
    fn the_marker_is_found_inside_chat_service_json() {
        let marker = Marker {
            publisher: 3,
            seq: 0,
            sent_us: 42,
        };
        let mut content = String::new();
        marker.write_padded(MIN_SIZE, &mut content);
        let body = format!(
            r#"{{"chatRoomId":1,"messageId":9,"senderId":3,"senderNickname":"bench-3","content":"{content}","messageType":"TEXT","seq":1}}"#
        );
        assert_eq!(Marker::find(body.as_bytes()), Some(marker));
    }

    #[test]
    fn the_largest_numbers_fit_the_minimum_size() {
        let marker = Marker {
            publisher: u32::MAX,
            seq: 99_999_999_999,
            sent_us: 999_999_999_999,
        };
        let mut text = String::new();
        marker.write_padded(MIN_SIZE, &mut text);
        assert!(text.len() <= MIN_SIZE, "{text}");
    }

    #[test]
    fn bodies_without_a_well_formed_marker_are_rejected() {
        for body in [
            "hello",
            "cb:",
            "cb:1:2",
            "cb:1:2:x;",
            "cb::2:3;",
            "cb:1:2:3",
        ] {
            assert_eq!(Marker::find(body.as_bytes()), None, "{body}");
        }
    }
}
