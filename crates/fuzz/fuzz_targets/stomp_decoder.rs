//! Arbitrary bytes, fed to the STOMP decoder in two pieces split where the input says: it
//! never panics, and every frame it yields encodes to bytes that decode to the same frame
//! (except CONNECT/CONNECTED/STOMP: STOMP 1.2 escapes nothing in those, so a header value
//! ending in CR cannot survive its own line ending; the server never writes such frames).
#![no_main]

use chat_stomp::{Command, Decoder, Item, Limits, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let split = usize::from(split).min(rest.len());
    let mut decoder = Decoder::new(Limits::default());
    let mut frames = Vec::new();
    for piece in [&rest[..split], &rest[split..]] {
        decoder.feed(piece);
        loop {
            match decoder.next_item() {
                Ok(Some(Item::Frame(frame))) => frames.push(frame),
                Ok(Some(Item::HeartBeat)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
    let escaped = |command: Command| {
        !matches!(
            command,
            Command::Connect | Command::Connected | Command::Stomp
        )
    };
    for frame in frames.into_iter().filter(|f| escaped(f.command)) {
        let mut bytes = Vec::new();
        encode(&frame, &mut bytes);
        let mut again = Decoder::new(Limits {
            max_frame_bytes: usize::MAX / 2,
            ..Limits::default()
        });
        again.feed(&bytes);
        match again.next_item() {
            Ok(Some(Item::Frame(decoded))) => assert_eq!(decoded, frame),
            other => panic!("an encoded frame did not decode: {other:?}"),
        }
    }
});
