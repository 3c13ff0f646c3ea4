//! chat-bench: a load generator for STOMP-over-WebSocket servers.
//!
//! It drives chat-service through its real wire contract (REST to create rooms, SEND to
//! `/app/chat.sendMessage`, SUBSCRIBE to `/topic/chatroom/{id}`) or, with `--raw-topic`,
//! any plain STOMP broker (RabbitMQ Web-STOMP) by publishing straight to the topic, or, with
//! `--socketio`, a Socket.IO server (Engine.IO v4 / Socket.IO v5, [`socketio`]). Every
//! message carries its publisher, a per-publisher sequence number and its intended send
//! time, so each subscriber measures end-to-end latency and finds lost, duplicated and
//! reordered messages on its own.
//!
//! Entry points: [`run_load`] (paced publishers + subscribers), [`run_idle`] (hold as many
//! idle connections as possible) and [`run_presence`] (what presence costs, and a reconnect
//! storm). With `--jwt-secret` every connection carries its own JWT
//! (see [`token`]). Both take the parsed [`BenchArgs`] and return a report that
//! serialises to one JSON line.
#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod idle;
pub mod latency;
pub mod load;
pub mod payload;
pub mod presence;
pub mod procstat;
pub mod report;
pub mod rooms;
pub mod socketio;
pub mod socketio_ws;
pub mod stomp_ws;
pub mod token;
pub mod tracker;

pub use config::BenchArgs;
pub use error::BenchError;
pub use idle::{IdleReport, run_idle};
pub use load::run_load;
pub use presence::{PresenceReport, run_presence};
pub use report::LoadReport;
