//! What every session of this instance shares: the service and the hub they talk to, the
//! session settings, and the instance's lifecycle (open sessions, draining, and the
//! schedule that spreads a drain's reconnects). The routes reach it through the app state;
//! nothing in here knows about HTTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use chat_domain::ChatService;
use chat_session::SessionConfig;
use tokio::sync::{Notify, watch};

use super::admission::Admission;
use super::hub::HubHandle;
use super::revocations::Revocations;
use super::topics::Topics;
use crate::auth::Authenticator;
use crate::metrics::Metrics;
use crate::origin::OriginPolicy;

/// What every session of this instance shares.
#[derive(Debug)]
pub(crate) struct GatewayContext {
    pub(crate) service: ChatService,
    pub(crate) hub: HubHandle,
    pub(crate) revocations: Arc<Revocations>,
    /// Presence, typing and per-user queues.
    pub(crate) topics: Arc<Topics>,
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) origins: OriginPolicy,
    pub(crate) session: SessionConfig,
    pub(crate) outbound_queue: usize,
    /// Bytes that may wait for one client before it counts as too slow.
    pub(crate) outbound_queue_bytes: usize,
    /// How long one write to a client may wait.
    pub(crate) write_timeout: Duration,
    /// SENDs per second and burst of one connection; `None`: unlimited.
    pub(crate) send_rate: Option<governor::Quota>,
    pub(crate) send_rate_per_sec: u32,
    pub(crate) admission: Arc<Admission>,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) lifecycle: Arc<Lifecycle>,
    pub(crate) metrics: Arc<Metrics>,
    /// The SockJS sessions on the HTTP fallback transports.
    pub(crate) sockjs: super::sockjs::Sessions,
}

/// The open sessions and whether the instance drains. Shutdown waits until no session is
/// open; a drain spreads the sessions' reconnect ERRORs over a window, so the instances that
/// remain are not hit by every client of this one at the same moment.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    open: AtomicUsize,
    changed: Notify,
    draining: AtomicBool,
    drain_window: Duration,
    next_slot: AtomicUsize,
}

/// Counts one open session until dropped, however the session ends.
#[derive(Debug)]
pub(crate) struct SessionGuard(Arc<Lifecycle>);

impl Lifecycle {
    pub(crate) fn new(drain_window: Duration) -> Self {
        Self {
            open: AtomicUsize::new(0),
            changed: Notify::new(),
            draining: AtomicBool::new(false),
            drain_window,
            next_slot: AtomicUsize::new(0),
        }
    }

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

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// How long the calling session keeps serving before it tells its client to reconnect:
    /// the k-th of n sessions to ask waits `window * k / n`.
    pub(crate) fn reconnect_delay(&self) -> Duration {
        let slot = self.next_slot.fetch_add(1, Ordering::AcqRel);
        let open = self.open().max(slot + 1);
        let fraction = slot as f64 / open as f64;
        self.drain_window.mul_f64(fraction)
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_waiters();
    }
}
