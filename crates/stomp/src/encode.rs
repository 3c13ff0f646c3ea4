//! Frame encoder: turns a [`Frame`] into STOMP 1.2 wire bytes with LF line endings.

use crate::Frame;
use crate::escape::escape_header_value_into;

/// What a heart-beat looks like on the wire: one bare end-of-line.
pub const HEARTBEAT_EOL: &[u8] = b"\n";

/// Appends the wire form of `frame` to `out`: the command line, the headers, a blank line, the
/// body and the terminating NUL.
///
/// Header names and values are escaped except in `CONNECT` and `CONNECTED` frames, which STOMP
/// 1.2 sends verbatim; do not put CR, LF (or `:` in a name) in the headers of those two.
///
/// No `content-length` is added: the caller decides. Set one whenever the body may contain a
/// NUL byte, otherwise the peer stops reading the body at that NUL.
pub fn encode(frame: &Frame, out: &mut Vec<u8>) {
    let header_bytes: usize = frame
        .headers
        .iter()
        .map(|(name, value)| name.len() + value.len() + 2)
        .sum();
    out.reserve(frame.command.as_str().len() + header_bytes + frame.body.len() + 3);

    out.extend_from_slice(frame.command.as_str().as_bytes());
    out.push(b'\n');
    let escape = frame.command.escapes_headers();
    for (name, value) in &frame.headers {
        write_header_text(name, escape, out);
        out.push(b':');
        write_header_text(value, escape, out);
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(&frame.body);
    out.push(0);
}

fn write_header_text(text: &str, escape: bool, out: &mut Vec<u8>) {
    if escape {
        escape_header_value_into(text, out);
    } else {
        out.extend_from_slice(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;

    fn encoded(frame: &Frame) -> Vec<u8> {
        let mut out = Vec::new();
        encode(frame, &mut out);
        out
    }

    #[test]
    fn a_frame_is_command_headers_blank_line_body_and_nul() {
        let frame = Frame::new(Command::Send)
            .with_header("destination", "/app/chat")
            .with_body("hi");
        assert_eq!(encoded(&frame), b"SEND\ndestination:/app/chat\n\nhi\0");
    }

    #[test]
    fn headers_are_escaped_in_ordinary_frames() {
        let frame = Frame::new(Command::Message).with_header("a:b", "line\nbreak\\");
        assert_eq!(encoded(&frame), b"MESSAGE\na\\cb:line\\nbreak\\\\\n\n\0");
    }

    #[test]
    fn connect_and_connected_headers_are_written_verbatim() {
        for command in [Command::Connect, Command::Connected] {
            let frame = Frame::new(command).with_header("passcode", "a:b\\c");
            let expected = format!("{}\npasscode:a:b\\c\n\n\0", command.as_str());
            assert_eq!(encoded(&frame), expected.as_bytes());
        }
    }

    #[test]
    fn no_content_length_is_added() {
        let frame = Frame::new(Command::Send).with_body(vec![1, 0, 2]);
        assert_eq!(encoded(&frame), b"SEND\n\n\x01\x00\x02\0");
    }

    #[test]
    fn encoding_appends_to_what_is_already_in_the_buffer() {
        let mut out = b"\n".to_vec();
        encode(&Frame::new(Command::Receipt), &mut out);
        assert_eq!(out, b"\nRECEIPT\n\n\0");
    }
}
