//! What the routes share: the chat service, the gateway context (with the instance's
//! lifecycle) and the metrics.

use std::sync::Arc;

use chat_domain::ChatService;

use crate::gateway::GatewayContext;
use crate::metrics::Metrics;

#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) service: ChatService,
    pub(crate) gateway: Arc<GatewayContext>,
    pub(crate) metrics: Arc<Metrics>,
}

impl AppState {
    pub(crate) fn is_draining(&self) -> bool {
        self.gateway.lifecycle.is_draining()
    }
}
