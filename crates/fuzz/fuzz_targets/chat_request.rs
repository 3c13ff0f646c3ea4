//! Arbitrary bytes as the JSON body of a SEND: parsing and validation never panic, and
//! what validation accepts is within the documented bounds.
#![no_main]

use chat_domain::{ChatMessageRequest, MessageContent, NewChatMessage, SenderNickname};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = ChatMessageRequest::from_json(data) else {
        return;
    };
    if let Ok(message) = NewChatMessage::try_from(request) {
        let content = message.content.as_str();
        assert!(!content.trim().is_empty());
        assert!(content.chars().count() <= MessageContent::MAX_CHARS);
        assert!(!content.contains('\0'));
        assert!(message.sender_nickname.as_str().chars().count() <= SenderNickname::MAX_CHARS);
    }
});
