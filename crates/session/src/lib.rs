//! One STOMP chat session as a sans-I/O state machine, in the manner of `quinn-proto`: the
//! caller feeds it what arrived ([`Session::handle_input`]), the answers of what it asked
//! for ([`Session::handle_subscribed`], [`Session::handle_send_done`]) and the time
//! ([`Session::handle_timeout`]), and carries out what it decides
//! ([`Session::poll_action`]): bytes to write, subscriptions for the delivery engine,
//! messages for the chat service, and when to close and why. There are no sockets, no
//! tasks and no clock in here, so every protocol rule is a unit test.
//!
//! It sits between `chat-stomp` (frames, which knows nothing of chat) and `chat-domain`
//! (the chat, which knows nothing of STOMP); the server's WebSocket code only moves bytes.
#![forbid(unsafe_code)]

pub mod destination;
mod session;

pub use session::{
    Action, Authenticated, CloseReason, Member, Note, SendId, Session, SessionConfig, Topic,
    bearer_token,
};

#[cfg(test)]
mod tests;
