//! chat-server: wires the domain to its adapters and to the outside world — configuration,
//! the WebSocket STOMP gateway, the REST API, health, and graceful shutdown. Logic lives in
//! `chat-domain` and `chat-stomp`; this crate only wires.
//!
//! Tests and embedders build the real app on port 0 with [`Application::build_with`].
#![forbid(unsafe_code)]

mod app;
mod auth;
pub mod config;
mod gateway;
mod http;
mod incident;
mod listener;
mod metrics;
mod origin;
mod problem;
mod publish_queue;
pub mod shutdown;
mod state;
pub mod telemetry;

pub use app::{Adapters, Application, ShutdownHandle, StartupError};
pub use auth::{AuthConfigError, mint_token};
pub use config::{AuthMode, LogFormat, Settings, TokenArgs, Tool};
