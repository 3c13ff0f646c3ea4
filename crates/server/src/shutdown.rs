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

/// The stop signals, caught from the moment [`StopSignals::install`] returns: install them
/// before the server says it listens, or a signal sent right after that line would still
/// get the default action and kill the process without a shutdown.
#[derive(Debug)]
pub struct StopSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Registers the handlers now. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// When the handlers cannot be registered.
    pub fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Resolves on the first SIGTERM or SIGINT. It logs nothing, so the caller can start
    /// the shutdown before anything that could fail (writing a log line to a broken pipe).
    pub async fn recv(&mut self) -> StopSignal {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => StopSignal::Terminate,
                _ = self.interrupt.recv() => StopSignal::Interrupt,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            StopSignal::Interrupt
        }
    }
}
