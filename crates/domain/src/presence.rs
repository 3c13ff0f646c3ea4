//! Presence across instances: who is in which room, as every instance comes to know it.
//! Each instance counts its own users' connections per room and gossips every change on
//! the bus ([`PresenceSignal`]); every instance merges what all instances say into one view
//! and tells its watchers when a user's first connection joins a room or their last one
//! leaves. An instance that stops saying it is alive is forgotten after a timeout, so a
//! crashed instance leaves no ghosts; a receiver that missed a change asks for the whole
//! state again, so the view heals after a bus interruption.

mod signal;
#[cfg(test)]
mod tests;
mod view;

pub use signal::{InstanceId, PresenceEntry, PresenceSignal};
pub use view::{Presence, PresenceConfig, PresenceMember, PresenceOutput, PresenceStats};
