//! Encode-once fan-out of `MESSAGE` frames: everything a room's subscribers share is escaped
//! and encoded once; each delivery only adds its own `subscription` header.

use crate::escape::escape_header_value_into;

const SUBSCRIPTION_HEADER_PREFIX: &[u8] = b"subscription:";

/// A `MESSAGE` frame with every part except the `subscription` header already encoded.
///
/// Broadcasting one chat message to N subscribers then costs N buffer copies instead of N
/// full encodes (header escaping, body copy into a fresh frame). It is immutable, `Send` and
/// `Sync`: build it once and share it in an `Arc`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedMessage {
    /// The `MESSAGE` command line and shared headers, then the blank line, body and NUL.
    encoded: Box<[u8]>,
    /// Where the shared headers end and the subscription header goes.
    headers_end: usize,
}

impl PreparedMessage {
    /// Encodes the shared part of a `MESSAGE` frame.
    ///
    /// Headers come in this order: `destination`, `message-id`, `content-type`,
    /// `content-length` (set to `body.len()`, so the body may contain NULs), then
    /// `extra_headers`. Since the first of repeated headers wins, extra headers cannot
    /// override the standard ones.
    #[must_use]
    pub fn new(
        destination: &str,
        message_id: &str,
        content_type: &str,
        extra_headers: &[(&str, &str)],
        body: &[u8],
    ) -> Self {
        let content_length = body.len().to_string();
        let standard_headers = [
            ("destination", destination),
            ("message-id", message_id),
            ("content-type", content_type),
            ("content-length", content_length.as_str()),
        ];

        let mut encoded = Vec::with_capacity(256 + body.len());
        encoded.extend_from_slice(b"MESSAGE\n");
        for (name, value) in standard_headers.iter().chain(extra_headers) {
            escape_header_value_into(name, &mut encoded);
            encoded.push(b':');
            escape_header_value_into(value, &mut encoded);
            encoded.push(b'\n');
        }
        let headers_end = encoded.len();
        encoded.push(b'\n');
        encoded.extend_from_slice(body);
        encoded.push(0);

        PreparedMessage {
            encoded: encoded.into_boxed_slice(),
            headers_end,
        }
    }

    /// Appends to `out` the complete `MESSAGE` frame (NUL included) for one subscription.
    pub fn write_for_subscription(&self, subscription_id: &str, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len_hint() + subscription_id.len());
        let (headers, rest) = self.encoded.split_at(self.headers_end);
        out.extend_from_slice(headers);
        out.extend_from_slice(SUBSCRIPTION_HEADER_PREFIX);
        escape_header_value_into(subscription_id, out);
        out.push(b'\n');
        out.extend_from_slice(rest);
    }

    /// How many bytes [`write_for_subscription`](Self::write_for_subscription) appends, not
    /// counting the subscription id itself (add its length, exact unless it needs escaping).
    #[must_use]
    pub fn encoded_len_hint(&self) -> usize {
        self.encoded.len() + SUBSCRIPTION_HEADER_PREFIX.len() + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Command, Decoder, Frame, Item};

    fn decode_single(bytes: &[u8]) -> Frame {
        let mut decoder = Decoder::default();
        decoder.feed(bytes);
        let Ok(Some(Item::Frame(frame))) = decoder.next_item() else {
            panic!(
                "expected one frame from {:?}",
                String::from_utf8_lossy(bytes)
            );
        };
        assert_eq!(decoder.next_item(), Ok(None), "exactly one frame");
        frame
    }

    fn sample() -> PreparedMessage {
        PreparedMessage::new(
            "/topic/chatroom/7",
            "msg-42",
            "application/json",
            &[("x-seq", "12"), ("x-note", "a:b\nc")],
            b"{\"content\":\"hi\"}\0tail",
        )
    }

    #[test]
    fn each_subscription_gets_the_shared_frame_plus_its_own_id() {
        let prepared = sample();
        for subscription in ["sub-0", "sub:1"] {
            let mut out = Vec::new();
            prepared.write_for_subscription(subscription, &mut out);
            let expected = Frame::new(Command::Message)
                .with_header("destination", "/topic/chatroom/7")
                .with_header("message-id", "msg-42")
                .with_header("content-type", "application/json")
                .with_header("content-length", "21")
                .with_header("x-seq", "12")
                .with_header("x-note", "a:b\nc")
                .with_header("subscription", subscription)
                .with_body(&b"{\"content\":\"hi\"}\0tail"[..]);
            assert_eq!(decode_single(&out), expected);
        }
    }

    #[test]
    fn writes_append_and_the_length_hint_is_exact_for_plain_ids() {
        let prepared = sample();
        let mut out = b"previous".to_vec();
        prepared.write_for_subscription("sub-0", &mut out);
        assert!(out.starts_with(b"previous"));
        assert_eq!(out.len(), 8 + prepared.encoded_len_hint() + "sub-0".len());
    }

    #[test]
    fn extra_headers_cannot_override_the_standard_ones() {
        let prepared = PreparedMessage::new("/d", "1", "text/plain", &[("destination", "/x")], b"");
        let mut out = Vec::new();
        prepared.write_for_subscription("s", &mut out);
        assert_eq!(decode_single(&out).header("destination"), Some("/d"));
    }

    #[test]
    fn a_prepared_message_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<PreparedMessage>();
    }
}
