//! `MessageBus` over Redis Pub/Sub with fred, on one server, behind Sentinel or on a
//! Cluster: every server instance publishes stored messages, to one channel for all rooms or
//! to a channel per room (sharded pub/sub on a cluster), and relays what it receives to its
//! local subscribers; with a shared secret, every payload is signed and unsigned ones are
//! refused.
//!
//! fred's long-term maintenance is uncertain, so no fred type appears in this crate's public
//! API: swapping the client library touches this crate only.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bus;
mod channels;
mod config;
mod error;
mod signing;
mod subscription;

pub use bus::RedisBus;
pub use config::{ChannelMode, RedisConfig};
pub use error::RedisError;
pub use signing::MIN_SECRET_BYTES;
