//! What the routes share: the chat service, the gateway context (with the instance's
//! lifecycle), the metrics and the REST rate limits.

use std::net::IpAddr;
use std::sync::Arc;

use chat_domain::{Caller, ChatService};

use crate::gateway::GatewayContext;
use crate::metrics::Metrics;

/// Who a room-creation limit counts against: the signed-in user, or in open mode the
/// client address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Creator {
    User(i64),
    Address(IpAddr),
    Unknown,
}

impl Creator {
    pub(crate) fn of(caller: &Caller, address: Option<IpAddr>) -> Self {
        match (caller, address) {
            (Caller::User(identity), _) => Self::User(identity.user.get()),
            (Caller::Open, Some(address)) => Self::Address(address),
            (Caller::Open, None) => Self::Unknown,
        }
    }
}

/// Rooms created per minute, by creator.
pub(crate) type RoomCreationLimit = governor::DefaultKeyedRateLimiter<Creator>;

pub(crate) struct AppState {
    pub(crate) service: ChatService,
    pub(crate) gateway: Arc<GatewayContext>,
    pub(crate) metrics: Arc<Metrics>,
    /// `None`: no limit.
    pub(crate) room_creations: Option<RoomCreationLimit>,
    pub(crate) room_create_rate: u32,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// The room-creation limit for `per_minute` rooms per creator (all at once, then one every
/// `60 / per_minute` s); `None` for 0.
pub(crate) fn room_creation_limit(per_minute: u32) -> Option<RoomCreationLimit> {
    let per_minute = std::num::NonZeroU32::new(per_minute)?;
    Some(governor::RateLimiter::keyed(governor::Quota::per_minute(
        per_minute,
    )))
}

impl AppState {
    pub(crate) fn is_draining(&self) -> bool {
        self.gateway.lifecycle.is_draining()
    }
}
