//! Sans-I/O STOMP 1.2: a streaming frame decoder, an encoder and heart-beat negotiation.
//!
//! There is no networking and no clock in here: bytes in, frames out; frames in, bytes out;
//! heart-beat timing takes `now` from the caller. The WebSocket gateway only moves bytes
//! between its socket and this crate, which keeps every protocol rule unit-testable.
//!
//! The API, by direction:
//! - **input**: [`Decoder::feed`] raw bytes, then [`Decoder::next_item`] until it returns
//!   `Ok(None)` ("need more bytes");
//! - **output**: [`encode`] a [`Frame`], or write a [`PreparedMessage`] once per subscriber;
//! - **negotiation**: [`version::negotiate`], [`version::select_subprotocol`],
//!   [`heartbeat::negotiate`];
//! - **timers**: [`HeartBeatMonitor::poll`] with the caller's `Instant`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod command;
mod decode;
mod encode;
mod escape;
mod frame;
pub mod heartbeat;
mod prepared;
pub mod version;

pub use command::Command;
pub use decode::{DecodeError, Decoder, Limits};
pub use encode::{HEARTBEAT_EOL, encode};
pub use escape::escape_header_value;
pub use frame::{Frame, Item};
pub use heartbeat::{HeartBeat, HeartBeatAction, HeartBeatError, HeartBeatMonitor};
pub use prepared::PreparedMessage;
pub use version::Version;

#[cfg(test)]
mod roundtrip_tests;
