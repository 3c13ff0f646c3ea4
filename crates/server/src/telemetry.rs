//! Log set-up: readable lines by default, JSON lines with `CHAT_LOG_FORMAT=json`; the level
//! comes from `RUST_LOG` (default `info`). Colours only when stdout is a terminal, so a log
//! file or a pipe gets plain text.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Call once, from `main`.
///
/// A log line that cannot be written (stdout closed, a broken pipe) is dropped silently:
/// by default the subscriber would report it on stderr with `eprintln!`, which panics when
/// stderr is broken too, and a panic in the task that waits for SIGTERM leaves a process
/// that only SIGKILL ends.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal())
        .log_internal_errors(false);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
