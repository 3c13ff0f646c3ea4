//! Arbitrary bytes as a bus payload (what anyone who can PUBLISH on the channel sends):
//! decoding never panics, what it accepts re-encodes stably, and control events too.
#![no_main]

use chat_domain::{ChatMessagePublish, ControlEvent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = ChatMessagePublish::from_bus_payload(data) {
        let once = message.to_json();
        let again = ChatMessagePublish::from_bus_payload(&once)
            .expect("what we encode, we decode");
        assert_eq!(again.to_json(), once, "encoding is stable");
    }
    if let Ok(event) = ControlEvent::from_bus_payload(data) {
        assert_eq!(ControlEvent::from_bus_payload(&event.to_json()), Ok(event));
    }
});
