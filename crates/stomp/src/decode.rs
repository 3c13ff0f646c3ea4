//! Streaming STOMP 1.2 frame decoder: feed it bytes as they arrive, in any split, and pull out
//! complete frames and heart-beats. Size limits are checked while bytes stream in, so a peer
//! can never make it buffer more than one frame's worth of input.

use std::mem;

use crate::escape::unescape_header_text;
use crate::{Command, Frame, Item};

/// Size limits applied while decoding; exceeding any of them is a protocol error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted frame, counted from the first byte of the command through the
    /// terminating NUL (heart-beats between frames do not count).
    pub max_frame_bytes: usize,
    /// Most header lines accepted in one frame (repeats count).
    pub max_headers: usize,
    /// Longest accepted header line, `name:value` as sent (escaped, without the line ending).
    pub max_header_bytes: usize,
}

impl Default for Limits {
    /// 64 KiB per frame, 64 headers, 4 KiB per header line.
    fn default() -> Self {
        Limits {
            max_frame_bytes: 64 * 1024,
            max_headers: 64,
            max_header_bytes: 4 * 1024,
        }
    }
}

/// Why a byte stream is not valid STOMP 1.2. Every variant is fatal for the connection: the
/// messages are meant to be sent back in an `ERROR` frame and to be read by an operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame (command line through NUL) is bigger than [`Limits::max_frame_bytes`].
    #[error("frame exceeds the {limit}-byte limit; send smaller messages")]
    FrameTooLarge {
        /// The limit that was exceeded, in bytes.
        limit: usize,
    },
    /// The frame has more header lines than [`Limits::max_headers`].
    #[error("frame has more than {limit} headers")]
    TooManyHeaders {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// A header line is longer than [`Limits::max_header_bytes`].
    #[error("a header line exceeds the {limit}-byte limit")]
    HeaderTooLong {
        /// The limit that was exceeded, in bytes.
        limit: usize,
    },
    /// The command line is not one of the STOMP 1.2 commands.
    #[error("unknown STOMP command {0:?}")]
    UnknownCommand(String),
    /// A header line is not `name:value` with a non-empty name.
    #[error("malformed header line {0:?}: expected `name:value`")]
    MalformedHeader(String),
    /// A header contains a backslash escape other than `\r`, `\n`, `\c` or `\\`.
    #[error(
        "invalid escape sequence {0:?} in a header; STOMP 1.2 allows only \\r, \\n, \\c and \\\\"
    )]
    InvalidEscape(String),
    /// The command or a header is not valid UTF-8.
    #[error("the command or a header is not valid UTF-8")]
    InvalidUtf8,
    /// The first `content-length` header is not a decimal byte count.
    #[error("content-length {0:?} is not a non-negative decimal number of bytes")]
    InvalidContentLength(String),
    /// The byte right after the `content-length` bytes of the body is not a NUL.
    #[error(
        "the frame body is longer than its content-length header says (no NUL where the body should end)"
    )]
    MissingNulAfterBody,
}

/// How much of a malformed line an error message quotes: enough to recognise it, not so much
/// that a hostile peer can make us echo kilobytes back.
const QUOTED_LINE_MAX_BYTES: usize = 64;

/// A streaming STOMP 1.2 decoder.
///
/// Call [`feed`](Decoder::feed) with whatever bytes arrived, then [`next_item`](Decoder::next_item)
/// until it returns `Ok(None)`. Any split of the input, down to one byte per call, yields the
/// same items.
///
/// After an error the decoder stays failed: it drops its buffer, ignores further input and
/// every later `next_item` returns the same error. Nothing after a protocol violation can be
/// trusted, so the caller is expected to send an `ERROR` frame and close the connection.
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    buffer: Vec<u8>,
    /// Bytes at the front of `buffer` that belong to items already returned. They are drained
    /// on the next `feed`, so each chunk costs at most one move of the unread tail, instead of
    /// one per item.
    consumed: usize,
    /// The frame being read, `None` between frames.
    partial: Option<PartialFrame>,
    failure: Option<DecodeError>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(Limits::default())
    }
}

impl Decoder {
    /// An empty decoder enforcing `limits`.
    #[must_use]
    pub fn new(limits: Limits) -> Self {
        Decoder {
            limits,
            buffer: Vec::new(),
            consumed: 0,
            partial: None,
            failure: None,
        }
    }

    /// Appends received bytes. Ignored once the decoder has failed.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.failure.is_some() {
            return;
        }
        if self.consumed > 0 {
            // The partial frame's offsets are relative to its first byte, which sits at
            // `consumed`, so dropping everything before it leaves them valid.
            self.buffer.drain(..self.consumed);
            self.consumed = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete item, or `Ok(None)` if more bytes are needed.
    ///
    /// # Errors
    /// Any [`DecodeError`] as soon as the buffered input is known to be invalid, including
    /// limits exceeded by a frame that is not complete yet. The decoder stays failed afterwards
    /// and returns the same error on every call.
    pub fn next_item(&mut self) -> Result<Option<Item>, DecodeError> {
        if let Some(failure) = &self.failure {
            return Err(failure.clone());
        }
        let result = self.decode_next();
        if let Err(error) = &result {
            self.failure = Some(error.clone());
            // Release the memory now: the connection is about to close.
            self.buffer = Vec::new();
            self.consumed = 0;
            self.partial = None;
        }
        result
    }

    /// Bytes fed but not yet returned as items (the partial frame, if any, included).
    #[must_use]
    pub fn buffered_len(&self) -> usize {
        self.buffer.len() - self.consumed
    }

    fn decode_next(&mut self) -> Result<Option<Item>, DecodeError> {
        let input = &self.buffer[self.consumed..];
        if self.partial.is_none() {
            // Between frames a bare EOL is a heart-beat; anything else starts a frame.
            match input {
                [] | [b'\r'] => return Ok(None),
                [b'\n', ..] => {
                    self.consumed += 1;
                    return Ok(Some(Item::HeartBeat));
                }
                [b'\r', b'\n', ..] => {
                    self.consumed += 2;
                    return Ok(Some(Item::HeartBeat));
                }
                _ => {}
            }
        }
        let partial = self.partial.get_or_insert_with(PartialFrame::default);
        let Some((frame, frame_len)) = partial.advance(input, &self.limits)? else {
            return Ok(None);
        };
        self.partial = None;
        self.consumed += frame_len;
        if self.consumed == self.buffer.len() {
            // Cheap reset that keeps the allocation for the next chunk.
            self.buffer.clear();
            self.consumed = 0;
        }
        Ok(Some(Item::Frame(frame)))
    }
}

/// What has been learned so far about the frame at the front of the unread input.
///
/// All offsets are relative to the frame's first byte.
#[derive(Debug, Default)]
struct PartialFrame {
    phase: Phase,
    headers: Vec<(String, String)>,
    /// From the first `content-length` header, once it has been read.
    content_length: Option<usize>,
    /// Where the current line (or, in the body phase, the body) starts.
    section_start: usize,
    /// How far the current section has already been searched for its terminator. Searching
    /// resumes here, so a large frame arriving in many small chunks is scanned once.
    scanned: usize,
}

#[derive(Debug, Clone, Copy, Default)]
enum Phase {
    #[default]
    CommandLine,
    Headers(Command),
    Body(Command),
}

/// The result of looking for the end of the current line.
enum LineSearch {
    Complete {
        /// End of the line's content, a trailing CR excluded.
        content_end: usize,
        /// Start of the next line.
        next_line_start: usize,
    },
    NeedMore,
    /// More than the allowed line length arrived without an LF.
    LineTooLong,
    /// More than the whole frame's allowance arrived without an LF.
    FrameTooLarge,
}

impl PartialFrame {
    /// Consumes as much of `input` (which starts at this frame's first byte) as possible.
    /// Returns the frame and its length on the wire once it is complete.
    fn advance(
        &mut self,
        input: &[u8],
        limits: &Limits,
    ) -> Result<Option<(Frame, usize)>, DecodeError> {
        loop {
            match self.phase {
                Phase::CommandLine => {
                    let Some((content_end, next_line_start)) =
                        self.next_line(input, Command::LONGEST_NAME_BYTES, limits, |_| {
                            // No command is this long: reject now rather than wait for an LF.
                            unknown_command(&input[..=Command::LONGEST_NAME_BYTES])
                        })?
                    else {
                        return Ok(None);
                    };
                    let command = parse_command(&input[..content_end])?;
                    self.phase = Phase::Headers(command);
                    self.start_section(next_line_start);
                }
                Phase::Headers(command) => {
                    let Some((content_end, next_line_start)) =
                        self.next_line(input, limits.max_header_bytes, limits, |limits| {
                            DecodeError::HeaderTooLong {
                                limit: limits.max_header_bytes,
                            }
                        })?
                    else {
                        return Ok(None);
                    };
                    let line = &input[self.section_start..content_end];
                    if line.is_empty() {
                        self.start_body(command, next_line_start, limits)?;
                    } else {
                        self.add_header(command, line, limits)?;
                        self.start_section(next_line_start);
                    }
                }
                Phase::Body(command) => {
                    let Some(body_end) = self.find_body_end(input, limits)? else {
                        return Ok(None);
                    };
                    let frame = Frame {
                        command,
                        headers: mem::take(&mut self.headers),
                        body: input[self.section_start..body_end].to_vec(),
                    };
                    // The NUL terminator is part of the frame.
                    return Ok(Some((frame, body_end + 1)));
                }
            }
        }
    }

    fn start_section(&mut self, start: usize) {
        self.section_start = start;
        self.scanned = start;
    }

    /// The current line as `(content_end, next_line_start)` once its LF has arrived.
    ///
    /// `max_content_bytes` bounds the line without its EOL; `line_too_long` builds the error
    /// for a line that exceeds it.
    fn next_line(
        &mut self,
        input: &[u8],
        max_content_bytes: usize,
        limits: &Limits,
        line_too_long: impl FnOnce(&Limits) -> DecodeError,
    ) -> Result<Option<(usize, usize)>, DecodeError> {
        match self.search_line(input, max_content_bytes, limits.max_frame_bytes) {
            LineSearch::Complete {
                content_end,
                next_line_start,
            } => {
                if content_end - self.section_start > max_content_bytes {
                    Err(line_too_long(limits))
                } else {
                    Ok(Some((content_end, next_line_start)))
                }
            }
            LineSearch::NeedMore => Ok(None),
            LineSearch::LineTooLong => Err(line_too_long(limits)),
            LineSearch::FrameTooLarge => Err(DecodeError::FrameTooLarge {
                limit: limits.max_frame_bytes,
            }),
        }
    }

    fn search_line(
        &mut self,
        input: &[u8],
        max_content_bytes: usize,
        max_frame_bytes: usize,
    ) -> LineSearch {
        // The LF can come at most `max_content_bytes + 1` bytes after the line start (the +1
        // leaves room for a CR); nothing past that or past the frame limit needs looking at.
        let line_window_end = self
            .section_start
            .saturating_add(max_content_bytes)
            .saturating_add(2);
        let window_end = input.len().min(line_window_end).min(max_frame_bytes);
        let search_from = self.scanned.min(window_end);
        if let Some(offset) = input[search_from..window_end]
            .iter()
            .position(|&byte| byte == b'\n')
        {
            let line_feed = search_from + offset;
            let has_carriage_return =
                line_feed > self.section_start && input[line_feed - 1] == b'\r';
            return LineSearch::Complete {
                content_end: line_feed - usize::from(has_carriage_return),
                next_line_start: line_feed + 1,
            };
        }
        self.scanned = window_end;
        if input.len() >= line_window_end && line_window_end <= max_frame_bytes {
            LineSearch::LineTooLong
        } else if input.len() >= max_frame_bytes {
            LineSearch::FrameTooLarge
        } else {
            LineSearch::NeedMore
        }
    }

    fn add_header(
        &mut self,
        command: Command,
        line: &[u8],
        limits: &Limits,
    ) -> Result<(), DecodeError> {
        if self.headers.len() >= limits.max_headers {
            return Err(DecodeError::TooManyHeaders {
                limit: limits.max_headers,
            });
        }
        // An escaped colon travels as `\c`, so the first raw colon always ends the name;
        // later raw colons belong to the value, which tolerates sloppy 1.0-style peers.
        let colon = match line.iter().position(|&byte| byte == b':') {
            Some(colon) if colon > 0 => colon,
            _ => return Err(DecodeError::MalformedHeader(quote_line(line))),
        };
        let escaped = command.escapes_headers();
        let name = header_text(&line[..colon], escaped)?;
        let value = header_text(&line[colon + 1..], escaped)?;
        if name == "content-length" && self.content_length.is_none() {
            let length = parse_content_length(&value)?;
            if length > limits.max_frame_bytes {
                // Fail now rather than buffer a body we are going to reject anyway.
                return Err(DecodeError::FrameTooLarge {
                    limit: limits.max_frame_bytes,
                });
            }
            self.content_length = Some(length);
        }
        self.headers.push((name, value));
        Ok(())
    }

    fn start_body(
        &mut self,
        command: Command,
        body_start: usize,
        limits: &Limits,
    ) -> Result<(), DecodeError> {
        if let Some(length) = self.content_length {
            // Body plus NUL must fit; we know the exact size already, so check it up front.
            let frame_len = body_start.saturating_add(length).saturating_add(1);
            if frame_len > limits.max_frame_bytes {
                return Err(DecodeError::FrameTooLarge {
                    limit: limits.max_frame_bytes,
                });
            }
        }
        self.phase = Phase::Body(command);
        self.start_section(body_start);
        Ok(())
    }

    /// The offset of the NUL that ends the body, once it has arrived.
    fn find_body_end(
        &mut self,
        input: &[u8],
        limits: &Limits,
    ) -> Result<Option<usize>, DecodeError> {
        if let Some(length) = self.content_length {
            let body_end = self.section_start + length;
            return match input.get(body_end) {
                None => Ok(None),
                Some(0) => Ok(Some(body_end)),
                Some(_) => Err(DecodeError::MissingNulAfterBody),
            };
        }
        // The NUL must sit within the frame limit (the frame includes it), so never look
        // further than that.
        let window_end = input.len().min(limits.max_frame_bytes);
        let search_from = self.scanned.min(window_end);
        if let Some(offset) = input[search_from..window_end]
            .iter()
            .position(|&byte| byte == 0)
        {
            return Ok(Some(search_from + offset));
        }
        self.scanned = window_end;
        if input.len() >= limits.max_frame_bytes {
            Err(DecodeError::FrameTooLarge {
                limit: limits.max_frame_bytes,
            })
        } else {
            Ok(None)
        }
    }
}

fn parse_command(line: &[u8]) -> Result<Command, DecodeError> {
    Command::from_wire(line).ok_or_else(|| match std::str::from_utf8(line) {
        Ok(_) => unknown_command(line),
        Err(_) => DecodeError::InvalidUtf8,
    })
}

fn unknown_command(line: &[u8]) -> DecodeError {
    DecodeError::UnknownCommand(quote_line(line))
}

fn header_text(raw: &[u8], escaped: bool) -> Result<String, DecodeError> {
    let bytes = if escaped {
        unescape_header_text(raw)?
    } else {
        raw.to_vec()
    };
    String::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)
}

fn parse_content_length(value: &str) -> Result<usize, DecodeError> {
    // `usize::from_str` alone would accept a leading `+`; STOMP wants plain digits.
    if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(DecodeError::InvalidContentLength(quote_line(
            value.as_bytes(),
        )));
    }
    // Only overflow can fail here; such a length is over any limit anyway.
    Ok(value.parse().unwrap_or(usize::MAX))
}

/// A short, printable rendering of a rejected line for an error message.
fn quote_line(line: &[u8]) -> String {
    let shown = &line[..line.len().min(QUOTED_LINE_MAX_BYTES)];
    let mut quoted = String::from_utf8_lossy(shown).into_owned();
    if shown.len() < line.len() {
        quoted.push('…');
    }
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(limits: Limits, input: &[u8]) -> Result<Vec<Item>, DecodeError> {
        let mut decoder = Decoder::new(limits);
        decoder.feed(input);
        drain(&mut decoder)
    }

    fn drain(decoder: &mut Decoder) -> Result<Vec<Item>, DecodeError> {
        let mut items = Vec::new();
        while let Some(item) = decoder.next_item()? {
            items.push(item);
        }
        Ok(items)
    }

    fn decode_one(input: &[u8]) -> Result<Frame, DecodeError> {
        match decode_all(Limits::default(), input)?.as_slice() {
            [Item::Frame(frame)] => Ok(frame.clone()),
            other => panic!("expected exactly one frame, got {other:?}"),
        }
    }

    fn first_error(limits: Limits, input: &[u8]) -> DecodeError {
        decode_all(limits, input).expect_err("input should be rejected")
    }

    fn small_limits() -> Limits {
        Limits {
            max_frame_bytes: 64,
            max_headers: 3,
            max_header_bytes: 16,
        }
    }

    #[test]
    fn a_complete_frame_is_decoded() {
        let frame = decode_one(b"SEND\ndestination:/app/chat\nreceipt:7\n\nhello\0").unwrap();
        assert_eq!(
            frame,
            Frame::new(Command::Send)
                .with_header("destination", "/app/chat")
                .with_header("receipt", "7")
                .with_body("hello")
        );
    }

    #[test]
    fn several_frames_in_one_chunk_come_out_in_order() {
        let items = decode_all(Limits::default(), b"BEGIN\n\n\0COMMIT\n\n\0ABORT\n\n\0").unwrap();
        let commands: Vec<Command> = items
            .iter()
            .map(|item| match item {
                Item::Frame(frame) => frame.command,
                Item::HeartBeat => panic!("no heart-beat expected"),
            })
            .collect();
        assert_eq!(commands, [Command::Begin, Command::Commit, Command::Abort]);
    }

    #[test]
    fn an_incomplete_frame_waits_for_more_bytes() {
        let mut decoder = Decoder::default();
        decoder.feed(b"SEND\ndestination:/a\n\nbo");
        assert_eq!(decoder.next_item(), Ok(None));
        assert_eq!(decoder.buffered_len(), 23);
        decoder.feed(b"dy\0");
        let Ok(Some(Item::Frame(frame))) = decoder.next_item() else {
            panic!("frame expected");
        };
        assert_eq!(frame.body, b"body");
        assert_eq!(decoder.buffered_len(), 0);
        assert_eq!(decoder.next_item(), Ok(None));
    }

    #[test]
    fn feeding_one_byte_at_a_time_gives_the_same_items() {
        let input: &[u8] =
            b"\nCONNECT\r\naccept-version:1.2\r\n\r\n\0\r\n\nSEND\ncontent-length:3\n\na\0b\0\n";
        let whole = decode_all(Limits::default(), input).unwrap();
        let mut decoder = Decoder::default();
        let mut piecewise = Vec::new();
        for byte in input {
            decoder.feed(std::slice::from_ref(byte));
            piecewise.extend(drain(&mut decoder).unwrap());
        }
        assert_eq!(piecewise, whole);
        assert_eq!(whole.len(), 6, "{whole:?}");
    }

    #[test]
    fn crlf_line_endings_are_stripped() {
        let frame = decode_one(b"SEND\r\ndestination:/a\r\nreceipt:1\r\n\r\nbody\0").unwrap();
        assert_eq!(frame.command, Command::Send);
        assert_eq!(frame.header("destination"), Some("/a"));
        assert_eq!(frame.header("receipt"), Some("1"));
        assert_eq!(frame.body, b"body");
    }

    #[test]
    fn bare_eols_between_frames_are_heart_beats_and_crlf_counts_once() {
        let items = decode_all(Limits::default(), b"\n\r\nDISCONNECT\n\n\0\n\r\n").unwrap();
        assert_eq!(
            items,
            [
                Item::HeartBeat,
                Item::HeartBeat,
                Item::Frame(Frame::new(Command::Disconnect)),
                Item::HeartBeat,
                Item::HeartBeat,
            ]
        );
    }

    #[test]
    fn a_carriage_return_split_from_its_line_feed_is_still_one_heart_beat() {
        let mut decoder = Decoder::default();
        decoder.feed(b"\r");
        assert_eq!(decoder.next_item(), Ok(None));
        decoder.feed(b"\n");
        assert_eq!(decoder.next_item(), Ok(Some(Item::HeartBeat)));
        assert_eq!(decoder.next_item(), Ok(None));
    }

    #[test]
    fn content_length_reads_a_body_with_embedded_nuls() {
        let frame = decode_one(b"SEND\ncontent-length:5\n\na\0b\0c\0").unwrap();
        assert_eq!(frame.body, b"a\0b\0c");
    }

    #[test]
    fn without_content_length_the_body_ends_at_the_first_nul() {
        let items = decode_all(Limits::default(), b"SEND\n\nab\0\n").unwrap();
        assert_eq!(
            items,
            [
                Item::Frame(Frame::new(Command::Send).with_body("ab")),
                Item::HeartBeat
            ]
        );
    }

    #[test]
    fn a_body_longer_than_its_content_length_is_rejected() {
        assert_eq!(
            first_error(Limits::default(), b"SEND\ncontent-length:2\n\nabc\0"),
            DecodeError::MissingNulAfterBody
        );
    }

    #[test]
    fn an_empty_body_with_content_length_zero_is_fine() {
        let frame = decode_one(b"SEND\ncontent-length:0\n\n\0").unwrap();
        assert!(frame.body.is_empty());
    }

    #[test]
    fn header_escapes_are_undone_in_ordinary_frames() {
        let frame = decode_one(b"MESSAGE\na\\cb:1\\n2\\r3\\\\4\\c5\n\n\0").unwrap();
        assert_eq!(frame.header("a:b"), Some("1\n2\r3\\4:5"));
    }

    #[test]
    fn connect_and_connected_headers_are_taken_verbatim() {
        for command in ["CONNECT", "CONNECTED"] {
            let input = format!("{command}\nlogin:a\\cb\\x\n\n\0");
            let frame = decode_one(input.as_bytes()).unwrap();
            assert_eq!(frame.header("login"), Some("a\\cb\\x"), "{command}");
        }
    }

    #[test]
    fn the_stomp_command_is_unescaped_like_any_other_frame() {
        let frame = decode_one(b"STOMP\nhost:a\\cb\n\n\0").unwrap();
        assert_eq!(frame.header("host"), Some("a:b"));
    }

    #[test]
    fn repeated_headers_are_kept_in_order_and_the_first_wins() {
        let frame = decode_one(b"SEND\nfoo:1\nfoo:2\nbar:3\n\n\0").unwrap();
        assert_eq!(frame.header("foo"), Some("1"));
        let names: Vec<(&str, &str)> = frame
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        assert_eq!(names, [("foo", "1"), ("foo", "2"), ("bar", "3")]);
    }

    #[test]
    fn only_the_first_content_length_counts() {
        let frame = decode_one(b"SEND\ncontent-length:2\ncontent-length:junk\n\na\0\0").unwrap();
        assert_eq!(frame.body, b"a\0");
    }

    #[test]
    fn colons_after_the_first_belong_to_the_value_and_values_are_not_trimmed() {
        let frame = decode_one(b"SEND\nurl:http://x:80/ \n\n\0").unwrap();
        assert_eq!(frame.header("url"), Some("http://x:80/ "));
    }

    #[test]
    fn an_unknown_command_is_rejected() {
        assert_eq!(
            first_error(Limits::default(), b"PUBLISH\n\n\0"),
            DecodeError::UnknownCommand("PUBLISH".to_owned())
        );
        assert_eq!(
            first_error(Limits::default(), b"send\n\n\0"),
            DecodeError::UnknownCommand("send".to_owned())
        );
    }

    #[test]
    fn an_overlong_command_line_is_rejected_before_its_end_arrives() {
        let mut decoder = Decoder::default();
        decoder.feed(b"GET / HTTP/1.1");
        assert_eq!(
            decoder.next_item(),
            Err(DecodeError::UnknownCommand("GET / HTTP/1".to_owned()))
        );
    }

    #[test]
    fn a_header_line_without_a_colon_or_a_name_is_malformed() {
        assert_eq!(
            first_error(Limits::default(), b"SEND\nno-colon-here\n\n\0"),
            DecodeError::MalformedHeader("no-colon-here".to_owned())
        );
        assert_eq!(
            first_error(Limits::default(), b"SEND\n:value\n\n\0"),
            DecodeError::MalformedHeader(":value".to_owned())
        );
    }

    #[test]
    fn an_unknown_escape_sequence_is_rejected() {
        assert_eq!(
            first_error(Limits::default(), b"SEND\nname:tab\\there\n\n\0"),
            DecodeError::InvalidEscape("\\t".to_owned())
        );
    }

    #[test]
    fn non_utf8_commands_and_headers_are_rejected() {
        assert_eq!(
            first_error(Limits::default(), b"SE\xffND\n\n\0"),
            DecodeError::InvalidUtf8
        );
        assert_eq!(
            first_error(Limits::default(), b"SEND\nname:\xc3\x28\n\n\0"),
            DecodeError::InvalidUtf8
        );
    }

    #[test]
    fn binary_bodies_need_not_be_utf8() {
        let frame = decode_one(b"SEND\n\n\xff\xfe\0").unwrap();
        assert_eq!(frame.body, b"\xff\xfe");
    }

    #[test]
    fn a_content_length_that_is_not_a_plain_decimal_is_rejected() {
        for value in ["abc", "-1", "+5", "", " 5", "1e3"] {
            let input = format!("SEND\ncontent-length:{value}\n\n\0");
            assert_eq!(
                first_error(Limits::default(), input.as_bytes()),
                DecodeError::InvalidContentLength(value.to_owned())
            );
        }
    }

    #[test]
    fn a_content_length_over_the_limit_fails_before_the_body_arrives() {
        let mut decoder = Decoder::default();
        decoder.feed(b"SEND\ncontent-length:65537\n");
        assert_eq!(
            decoder.next_item(),
            Err(DecodeError::FrameTooLarge { limit: 65_536 })
        );
        let overflowing = b"SEND\ncontent-length:99999999999999999999999999\n";
        assert_eq!(
            first_error(Limits::default(), overflowing),
            DecodeError::FrameTooLarge { limit: 65_536 }
        );
    }

    #[test]
    fn a_frame_of_exactly_the_limit_is_accepted_and_one_byte_more_is_not() {
        let limits = small_limits();
        // "SEND\n\n" is 6 bytes and the NUL 1, leaving 57 for the body.
        let fits = [b"SEND\n\n".as_slice(), &[b'x'; 57], b"\0"].concat();
        assert_eq!(fits.len(), limits.max_frame_bytes);
        assert!(decode_all(limits, &fits).is_ok());
        let too_big = [b"SEND\n\n".as_slice(), &[b'x'; 58], b"\0"].concat();
        assert_eq!(
            first_error(limits, &too_big),
            DecodeError::FrameTooLarge { limit: 64 }
        );

        let with_length = |body_len: usize| {
            let head = format!("SEND\ncontent-length:{body_len}\n\n");
            [head.as_bytes(), &vec![0; body_len], b"\0"].concat()
        };
        let limits = Limits {
            max_header_bytes: 32,
            ..limits
        };
        // The header section is 24 bytes, plus the NUL: 39 bytes of body fit exactly.
        assert_eq!(with_length(39).len(), 64);
        assert!(decode_all(limits, &with_length(39)).is_ok());
        assert_eq!(
            first_error(limits, &with_length(40)[..30]),
            DecodeError::FrameTooLarge { limit: 64 },
            "known as soon as the blank line arrives"
        );
    }

    #[test]
    fn a_frame_without_nul_fails_once_it_outgrows_the_limit_instead_of_buffering_forever() {
        let limits = small_limits();
        let mut decoder = Decoder::new(limits);
        decoder.feed(b"SEND\n\n");
        for _ in 0..57 {
            decoder.feed(b"x");
            assert_eq!(decoder.next_item(), Ok(None));
        }
        decoder.feed(b"x");
        assert_eq!(
            decoder.next_item(),
            Err(DecodeError::FrameTooLarge { limit: 64 })
        );
    }

    #[test]
    fn endless_headers_fail_at_the_frame_limit() {
        let limits = Limits {
            max_headers: 100,
            ..small_limits()
        };
        let mut input = b"SEND\n".to_vec();
        while input.len() < 200 {
            input.extend_from_slice(b"a:b\n");
        }
        assert_eq!(
            first_error(limits, &input),
            DecodeError::FrameTooLarge { limit: 64 }
        );
    }

    #[test]
    fn a_header_line_of_exactly_the_limit_is_accepted_and_one_byte_more_is_not() {
        let limits = small_limits();
        assert!(decode_all(limits, b"SEND\nname:0123456789a\r\n\n\0").is_ok());
        assert_eq!(
            first_error(limits, b"SEND\nname:0123456789ab\n\n\0"),
            DecodeError::HeaderTooLong { limit: 16 }
        );
    }

    #[test]
    fn an_overlong_header_line_fails_before_its_end_arrives() {
        let mut decoder = Decoder::new(small_limits());
        decoder.feed(b"SEND\nname:0123456789a\r");
        assert_eq!(decoder.next_item(), Ok(None), "could still be a CRLF");
        decoder.feed(b"b");
        assert_eq!(
            decoder.next_item(),
            Err(DecodeError::HeaderTooLong { limit: 16 })
        );
    }

    #[test]
    fn header_count_is_limited() {
        let limits = small_limits();
        assert!(decode_all(limits, b"SEND\na:1\nb:2\nc:3\n\n\0").is_ok());
        let mut decoder = Decoder::new(limits);
        decoder.feed(b"SEND\na:1\nb:2\nc:3\nd:4\n");
        assert_eq!(
            decoder.next_item(),
            Err(DecodeError::TooManyHeaders { limit: 3 })
        );
    }

    #[test]
    fn a_failed_decoder_stays_failed_and_drops_its_input() {
        let mut decoder = Decoder::default();
        decoder.feed(b"SEND\n\n\0BOGUS\n\n\0");
        assert!(matches!(decoder.next_item(), Ok(Some(Item::Frame(_)))));
        let error = DecodeError::UnknownCommand("BOGUS".to_owned());
        assert_eq!(decoder.next_item(), Err(error.clone()));
        assert_eq!(decoder.buffered_len(), 0);
        decoder.feed(b"SEND\n\n\0");
        assert_eq!(decoder.buffered_len(), 0);
        assert_eq!(decoder.next_item(), Err(error));
    }

    #[test]
    fn consumed_bytes_are_released_and_partial_frames_survive_the_drain() {
        let mut decoder = Decoder::default();
        decoder.feed(b"SEND\n\na\0SEND\n\nb");
        assert!(matches!(decoder.next_item(), Ok(Some(Item::Frame(_)))));
        assert_eq!(decoder.next_item(), Ok(None));
        assert_eq!(decoder.buffered_len(), 7);
        decoder.feed(b"c\0");
        assert_eq!(decoder.buffer.len(), 9, "the first frame was drained");
        assert_eq!(
            decoder.next_item(),
            Ok(Some(Item::Frame(Frame::new(Command::Send).with_body("bc"))))
        );
    }

    #[test]
    fn a_large_frame_in_many_small_chunks_decodes() {
        let body = vec![b'x'; 60_000];
        let input = [b"SEND\n\n".as_slice(), &body, b"\0"].concat();
        let mut decoder = Decoder::default();
        let mut items = Vec::new();
        for chunk in input.chunks(7) {
            decoder.feed(chunk);
            items.extend(drain(&mut decoder).unwrap());
        }
        assert_eq!(
            items,
            [Item::Frame(Frame::new(Command::Send).with_body(body))]
        );
    }

    #[test]
    fn error_messages_read_well_and_quote_little() {
        assert_eq!(
            DecodeError::FrameTooLarge { limit: 65_536 }.to_string(),
            "frame exceeds the 65536-byte limit; send smaller messages"
        );
        let long_line = vec![b'z'; 500];
        let input = [b"SEND\n".as_slice(), &long_line, b"\n\n\0"].concat();
        let DecodeError::MalformedHeader(quoted) = first_error(Limits::default(), &input) else {
            panic!("malformed header expected");
        };
        assert_eq!(quoted.chars().count(), QUOTED_LINE_MAX_BYTES + 1);
        assert!(quoted.ends_with('…'));
    }
}
