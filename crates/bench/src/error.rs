//! The generator's errors. A failed connection during a run is counted, not fatal; these
//! are the failures that stop a run or a single connection attempt.

use std::io;

/// Why a connection, a room creation or a whole run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A `--url` that is not a usable `ws://host:port/path`.
    #[error("invalid endpoint URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// TCP connect (or source-address bind) failed.
    #[error(
        "cannot connect to {target}: {source}; is the server running and is the file-descriptor limit high enough?"
    )]
    Connect {
        /// The address tried.
        target: String,
        /// The socket error.
        source: io::Error,
    },
    /// The WebSocket handshake failed.
    #[error("WebSocket handshake with {url} failed: {reason}")]
    Handshake {
        /// The endpoint.
        url: String,
        /// What tungstenite reported.
        reason: String,
    },
    /// The STOMP conversation went wrong (ERROR frame, unexpected frame, closed socket).
    #[error("STOMP error from {url}: {reason}")]
    Stomp {
        /// The endpoint.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The Socket.IO conversation went wrong (refused namespace or join, unexpected
    /// packet, closed socket).
    #[error("Socket.IO error from {url}: {reason}")]
    SocketIo {
        /// The endpoint.
        url: String,
        /// What happened.
        reason: String,
    },
    /// A step did not finish in time.
    #[error("{what} timed out after {secs:.1} s")]
    Timeout {
        /// The step.
        what: String,
        /// How long we waited.
        secs: f64,
    },
    /// Creating a room over REST failed.
    #[error("creating a room at {url} failed: {reason}")]
    CreateRoom {
        /// The REST endpoint.
        url: String,
        /// Status line or I/O error.
        reason: String,
    },
    /// Flags that cannot work together.
    #[error("invalid arguments: {0}")]
    InvalidArgs(String),
    /// A result file could not be written.
    #[error("cannot write {path}: {source}")]
    Output {
        /// The file.
        path: String,
        /// The I/O error.
        source: io::Error,
    },
    /// Every subscriber or every publisher failed to connect: nothing to measure.
    #[error("no usable connections: {0}")]
    NoConnections(String),
}
