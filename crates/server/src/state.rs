//! What the routes share: the chat service, the gateway context, the draining flag and the
//! count of open sessions that shutdown waits for.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use chat_domain::ChatService;
use tokio::sync::Notify;

use crate::gateway::session::GatewayContext;

#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) service: ChatService,
    pub(crate) gateway: Arc<GatewayContext>,
    pub(crate) sessions: Arc<SessionCount>,
    draining: AtomicBool,
}

impl AppState {
    pub(crate) fn new(service: ChatService, gateway: Arc<GatewayContext>) -> Self {
        Self {
            service,
            gateway,
            sessions: Arc::new(SessionCount::default()),
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
