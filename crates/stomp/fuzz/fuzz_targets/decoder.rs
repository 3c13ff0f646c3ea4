//! Fuzz target: arbitrary bytes, split in two at a point chosen by the first byte, must never
//! panic the decoder.
#![no_main]

use chat_stomp::{Decoder, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data
        .first()
        .map_or(0, |&byte| usize::from(byte).min(data.len()));
    let mut decoder = Decoder::new(Limits::default());
    for chunk in [&data[..split], &data[split..]] {
        decoder.feed(chunk);
        while let Ok(Some(_)) = decoder.next_item() {}
    }
});
