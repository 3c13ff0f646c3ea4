//! The decoded form of a STOMP frame, and what the decoder yields: a frame or a heart-beat.

use crate::Command;

/// One STOMP frame: a command, ordered headers and a binary body.
///
/// Headers keep their wire order, repeats included; STOMP 1.2 says the first occurrence of a
/// repeated header is the one that counts, which is what [`Frame::header`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The frame's command.
    pub command: Command,
    /// Header `(name, value)` pairs, unescaped, in wire order.
    pub headers: Vec<(String, String)>,
    /// The body bytes (may hold NULs when the frame has a `content-length`).
    pub body: Vec<u8>,
}

impl Frame {
    /// A frame with no headers and an empty body.
    #[must_use]
    pub fn new(command: Command) -> Self {
        Frame {
            command,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Appends a header (after any existing one of the same name, which keeps precedence).
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Replaces the body.
    #[must_use]
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The value of the first header called `name`, if any (STOMP 1.2: the first occurrence of
    /// a repeated header wins).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header_name, _)| header_name == name)
            .map(|(_, value)| value.as_str())
    }
}

/// What the decoder yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A complete frame.
    Frame(Frame),
    /// A bare end-of-line (LF or CRLF) between frames: the peer's keep-alive.
    HeartBeat,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_repeated_headers_wins() {
        let frame = Frame::new(Command::Send)
            .with_header("destination", "/first")
            .with_header("destination", "/second");
        assert_eq!(frame.header("destination"), Some("/first"));
        assert_eq!(frame.headers.len(), 2, "repeats are kept, not replaced");
    }

    #[test]
    fn header_lookup_is_exact_and_missing_headers_are_none() {
        let frame = Frame::new(Command::Send).with_header("Destination", "/a");
        assert_eq!(frame.header("destination"), None);
        assert_eq!(frame.header("Destination"), Some("/a"));
    }

    #[test]
    fn builders_set_the_body() {
        let frame = Frame::new(Command::Send).with_body("hello");
        assert_eq!(frame.body, b"hello");
        assert_eq!(frame.command, Command::Send);
    }
}
