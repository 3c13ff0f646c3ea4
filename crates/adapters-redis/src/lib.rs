//! `MessageBus` over Redis Pub/Sub with fred: every server instance publishes stored messages
//! to one channel and relays what it receives to its local subscribers; with a shared
//! secret, every payload is signed and unsigned ones are refused.
//!
//! fred's long-term maintenance is uncertain, so no fred type appears in this crate's public
//! API: swapping the client library touches this crate only.
#![forbid(unsafe_code)]

mod bus;
mod config;
mod error;
mod signing;
mod subscription;

pub use bus::RedisBus;
pub use config::RedisConfig;
pub use error::RedisError;
pub use signing::MIN_SECRET_BYTES;
