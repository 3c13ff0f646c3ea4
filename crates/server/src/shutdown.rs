//! Waiting for SIGTERM (what Kubernetes sends) or Ctrl-C.

/// Which signal asked the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Terminate,
    Interrupt,
}

impl StopSignal {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Terminate => "SIGTERM",
            Self::Interrupt => "SIGINT",
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT. It logs nothing, so the caller can start the
/// shutdown before anything that could fail (writing a log line to a broken pipe).
pub async fn signal() -> StopSignal {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return StopSignal::Interrupt;
        };
        tokio::select! {
            _ = term.recv() => StopSignal::Terminate,
            _ = tokio::signal::ctrl_c() => StopSignal::Interrupt,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        StopSignal::Interrupt
    }
}
