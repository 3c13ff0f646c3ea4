//! STOMP 1.2 header escaping: CR, LF, `:` and `\` travel as two-byte escape sequences so that
//! header names and values can contain the bytes that otherwise end a line or a name.

use crate::DecodeError;

/// The escape sequence that replaces `byte` on the wire, or `None` if it travels as-is.
fn escape_sequence(byte: u8) -> Option<&'static str> {
    match byte {
        b'\\' => Some("\\\\"),
        b'\n' => Some("\\n"),
        b'\r' => Some("\\r"),
        b':' => Some("\\c"),
        _ => None,
    }
}

/// Calls `emit` with the escaped form of `text`, piece by piece, so that both the `String` and
/// the `Vec<u8>` writers share one implementation without an intermediate allocation.
fn for_each_escaped_piece<'a>(text: &'a str, mut emit: impl FnMut(&'a str)) {
    let mut run_start = 0;
    for (index, byte) in text.bytes().enumerate() {
        if let Some(sequence) = escape_sequence(byte) {
            // Every escaped byte is ASCII, so `index` is a char boundary.
            emit(&text[run_start..index]);
            emit(sequence);
            run_start = index + 1;
        }
    }
    emit(&text[run_start..]);
}

/// Appends `value` to `out` with the STOMP 1.2 header escapes applied (`\r`, `\n`, `\c`, `\\`).
///
/// Header names are escaped the same way. `CONNECT` and `CONNECTED` frames are not escaped at
/// all; [`encode`](crate::encode) takes care of that.
pub fn escape_header_value(value: &str, out: &mut String) {
    for_each_escaped_piece(value, |piece| out.push_str(piece));
}

/// Same as [`escape_header_value`], writing straight into an output frame buffer.
pub(crate) fn escape_header_value_into(value: &str, out: &mut Vec<u8>) {
    for_each_escaped_piece(value, |piece| out.extend_from_slice(piece.as_bytes()));
}

/// Undoes the STOMP 1.2 header escapes.
///
/// # Errors
/// [`DecodeError::InvalidEscape`] for a backslash followed by anything other than `r`, `n`,
/// `c` or `\`, or by nothing at all (the spec makes these fatal protocol errors).
pub(crate) fn unescape_header_text(raw: &[u8]) -> Result<Vec<u8>, DecodeError> {
    // Most headers contain no backslash at all; skip the byte-by-byte rewrite for them.
    if !raw.contains(&b'\\') {
        return Ok(raw.to_vec());
    }
    let mut unescaped = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter().copied();
    while let Some(byte) = bytes.next() {
        if byte != b'\\' {
            unescaped.push(byte);
            continue;
        }
        match bytes.next() {
            Some(b'r') => unescaped.push(b'\r'),
            Some(b'n') => unescaped.push(b'\n'),
            Some(b'c') => unescaped.push(b':'),
            Some(b'\\') => unescaped.push(b'\\'),
            Some(other) => {
                let sequence = format!("\\{}", String::from_utf8_lossy(&[other]));
                return Err(DecodeError::InvalidEscape(sequence));
            }
            None => return Err(DecodeError::InvalidEscape("\\".to_owned())),
        }
    }
    Ok(unescaped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(value: &str) -> String {
        let mut out = String::new();
        escape_header_value(value, &mut out);
        out
    }

    #[test]
    fn the_four_special_bytes_are_escaped() {
        assert_eq!(escaped("a:b\nc\rd\\e"), "a\\cb\\nc\\rd\\\\e");
    }

    #[test]
    fn plain_text_and_unicode_pass_through() {
        assert_eq!(escaped("héllo wörld ✓"), "héllo wörld ✓");
        assert_eq!(escaped(""), "");
    }

    #[test]
    fn string_and_byte_writers_agree() {
        let value = "x:\\y\n✓\r";
        let mut bytes = Vec::new();
        escape_header_value_into(value, &mut bytes);
        assert_eq!(bytes, escaped(value).into_bytes());
    }

    #[test]
    fn unescaping_reverses_escaping() {
        let value = "\\\\c::\n\r\\n";
        let unescaped = unescape_header_text(escaped(value).as_bytes()).unwrap();
        assert_eq!(unescaped, value.as_bytes());
    }

    #[test]
    fn an_unknown_escape_is_rejected() {
        assert_eq!(
            unescape_header_text(b"tab\\there"),
            Err(DecodeError::InvalidEscape("\\t".to_owned()))
        );
    }

    #[test]
    fn a_trailing_lone_backslash_is_rejected() {
        assert_eq!(
            unescape_header_text(b"oops\\"),
            Err(DecodeError::InvalidEscape("\\".to_owned()))
        );
    }
}
