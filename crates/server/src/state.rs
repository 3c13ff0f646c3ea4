//! What the routes share: the chat service, the gateway context, the draining flag and the
//! count of open sessions that shutdown waits for.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use chat_domain::ChatService;
use tokio::sync::Notify;

use crate::gateway::session::GatewayContext;
use crate::metrics::Metrics;

#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) service: ChatService,
    pub(crate) gateway: Arc<GatewayContext>,
    pub(crate) sessions: Arc<SessionCount>,
    pub(crate) metrics: Arc<Metrics>,
    draining: AtomicBool,
}

impl AppState {
    pub(crate) fn new(
        service: ChatService,
        gateway: Arc<GatewayContext>,
        sessions: Arc<SessionCount>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            service,
            gateway,
            sessions,
            metrics,
            draining: AtomicBool::new(false),
        }
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
}

/// Open WebSocket sessions; shutdown waits until it reaches zero.
#[derive(Debug, Default)]
pub(crate) struct SessionCount {
    open: AtomicUsize,
    changed: Notify,
}

/// Decrements the count when the session ends, however it ends.
#[derive(Debug)]
pub(crate) struct SessionGuard(Arc<SessionCount>);

impl SessionCount {
    pub(crate) fn enter(self: &Arc<Self>) -> SessionGuard {
        self.open.fetch_add(1, Ordering::AcqRel);
        SessionGuard(self.clone())
    }

    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    pub(crate) async fn all_closed(&self) {
        loop {
            let changed = self.changed.notified();
            if self.open() == 0 {
                return;
            }
            changed.await;
        }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_waiters();
    }
}

/// Spreads the reconnect ERRORs of a drain over a window, so the instances that remain are
/// not hit by every client of this one at the same moment.
#[derive(Debug)]
pub(crate) struct DrainSchedule {
    window: Duration,
    next_slot: AtomicUsize,
    sessions: Arc<SessionCount>,
}

impl DrainSchedule {
    pub(crate) fn new(window: Duration, sessions: Arc<SessionCount>) -> Self {
        Self {
            window,
            next_slot: AtomicUsize::new(0),
            sessions,
        }
    }

    /// How long the calling session keeps serving before it tells its client to reconnect:
    /// the k-th of n sessions to ask waits `window * k / n`.
    pub(crate) fn delay(&self) -> Duration {
        let slot = self.next_slot.fetch_add(1, Ordering::AcqRel);
        let open = self.sessions.open().max(slot + 1);
        let fraction = slot as f64 / open as f64;
        self.window.mul_f64(fraction)
    }
}
