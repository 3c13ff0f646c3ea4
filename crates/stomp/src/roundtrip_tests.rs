//! Property tests across the encoder and decoder: whatever we encode decodes back unchanged,
//! and the decoder's output does not depend on how the input is split into chunks.

use proptest::prelude::*;

use crate::{Command, DecodeError, Decoder, Frame, HEARTBEAT_EOL, Item, Limits, encode};

/// Commands whose headers are escaped, so any header text survives a round trip.
fn escaping_command() -> impl Strategy<Value = Command> {
    prop::sample::select(
        Command::ALL
            .into_iter()
            .filter(|command| command.escapes_headers())
            .collect::<Vec<_>>(),
    )
}

/// Header text biased towards the bytes that need escaping.
fn header_text(min_chars: usize) -> impl Strategy<Value = String> {
    let character = prop_oneof![
        3 => any::<char>(),
        2 => prop::sample::select(vec![':', '\n', '\r', '\\', 'c', 'n', 'r']),
    ];
    prop::collection::vec(character, min_chars..12).prop_map(|chars| chars.into_iter().collect())
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((header_text(1), header_text(0)), 0..6)
}

/// A frame with a `content-length` header and an arbitrary binary body.
fn frame_with_content_length() -> impl Strategy<Value = Frame> {
    (
        escaping_command(),
        headers(),
        prop::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(command, headers, body)| {
            let mut frame =
                Frame::new(command).with_header("content-length", body.len().to_string());
            frame.headers.extend(headers);
            frame.with_body(body)
        })
}

/// A frame without `content-length`, so its body cannot contain a NUL.
fn frame_ended_by_nul() -> impl Strategy<Value = Frame> {
    (
        escaping_command(),
        headers(),
        prop::collection::vec(1..=u8::MAX, 0..200),
    )
        .prop_map(|(command, headers, body)| {
            let mut frame = Frame::new(command).with_body(body);
            // Keep the property about NUL-terminated bodies even if a generated name collides.
            frame.headers = headers
                .into_iter()
                .filter(|(name, _)| name != "content-length")
                .collect();
            frame
        })
}

/// A stream of items and a way of writing each: heart-beats as LF or CRLF.
fn item_stream() -> impl Strategy<Value = Vec<(Item, bool)>> {
    let item = prop_oneof![
        2 => frame_with_content_length().prop_map(Item::Frame),
        2 => frame_ended_by_nul().prop_map(Item::Frame),
        1 => Just(Item::HeartBeat),
    ];
    prop::collection::vec((item, any::<bool>()), 0..8)
}

fn write_stream(items: &[(Item, bool)]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (item, heart_beat_as_crlf) in items {
        match item {
            Item::Frame(frame) => encode(frame, &mut bytes),
            Item::HeartBeat if *heart_beat_as_crlf => bytes.extend_from_slice(b"\r\n"),
            Item::HeartBeat => bytes.extend_from_slice(HEARTBEAT_EOL),
        }
    }
    bytes
}

fn decode_in_chunks(input: &[u8], split_points: &[usize]) -> Result<Vec<Item>, DecodeError> {
    let mut decoder = Decoder::new(Limits::default());
    let mut items = Vec::new();
    let mut chunk_start = 0;
    for &chunk_end in split_points.iter().chain(std::iter::once(&input.len())) {
        decoder.feed(&input[chunk_start..chunk_end]);
        chunk_start = chunk_end;
        while let Some(item) = decoder.next_item()? {
            items.push(item);
        }
    }
    assert_eq!(decoder.buffered_len(), 0, "nothing left over");
    Ok(items)
}

proptest! {
    #[test]
    fn any_frame_with_content_length_round_trips(frame in frame_with_content_length()) {
        let mut bytes = Vec::new();
        encode(&frame, &mut bytes);
        prop_assert_eq!(decode_in_chunks(&bytes, &[]), Ok(vec![Item::Frame(frame)]));
    }

    #[test]
    fn any_frame_without_content_length_round_trips(frame in frame_ended_by_nul()) {
        let mut bytes = Vec::new();
        encode(&frame, &mut bytes);
        prop_assert_eq!(decode_in_chunks(&bytes, &[]), Ok(vec![Item::Frame(frame)]));
    }

    #[test]
    fn decoding_does_not_depend_on_how_the_input_is_split(
        stream in item_stream(),
        split_indexes in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let bytes = write_stream(&stream);
        let mut split_points: Vec<usize> =
            split_indexes.iter().map(|index| index.index(bytes.len() + 1)).collect();
        split_points.sort_unstable();
        let expected: Vec<Item> = stream.into_iter().map(|(item, _)| item).collect();
        prop_assert_eq!(decode_in_chunks(&bytes, &split_points), Ok(expected));
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        split in any::<prop::sample::Index>(),
    ) {
        let limits = Limits { max_frame_bytes: 128, max_headers: 4, max_header_bytes: 32 };
        let mut decoder = Decoder::new(limits);
        let (first, second) = bytes.split_at(split.index(bytes.len() + 1));
        for chunk in [first, second] {
            decoder.feed(chunk);
            while let Ok(Some(_)) = decoder.next_item() {}
            prop_assert!(decoder.buffered_len() <= limits.max_frame_bytes.max(chunk.len()) + 1);
        }
    }
}

#[test]
fn every_single_split_point_of_a_mixed_stream_gives_the_same_items() {
    let stream = [
        (Item::HeartBeat, true),
        (
            Item::Frame(
                Frame::new(Command::Connect)
                    .with_header("accept-version", "1.2")
                    .with_header("heart-beat", "10000,10000"),
            ),
            false,
        ),
        (Item::HeartBeat, false),
        (
            Item::Frame(
                Frame::new(Command::Send)
                    .with_header("content-length", "4")
                    .with_header("destination", "/app/chat:send\n")
                    .with_body(&b"\0a\0b"[..]),
            ),
            false,
        ),
        (Item::HeartBeat, true),
        (
            Item::Frame(Frame::new(Command::Disconnect).with_header("receipt", "r\\1")),
            false,
        ),
    ];
    let bytes = write_stream(&stream);
    let expected: Vec<Item> = stream.into_iter().map(|(item, _)| item).collect();
    for split in 0..=bytes.len() {
        assert_eq!(
            decode_in_chunks(&bytes, &[split]),
            Ok(expected.clone()),
            "split at {split}"
        );
    }
}

#[test]
fn connect_frames_round_trip_when_their_headers_need_no_escaping() {
    let frame = Frame::new(Command::Connect)
        .with_header("accept-version", "1.0,1.1,1.2")
        .with_header("host", "chat.example:443")
        .with_header("passcode", "p\\a\\ss");
    let mut bytes = Vec::new();
    encode(&frame, &mut bytes);
    assert_eq!(decode_in_chunks(&bytes, &[]), Ok(vec![Item::Frame(frame)]));
}
