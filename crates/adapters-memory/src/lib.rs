//! In-memory `MessageRepository` (with `RoomMembers` and `ReadCursors`) and `MessageBus`: the embedded
//! default of a single instance and the test double of every other crate. Data is lost
//! when the process exits.
//!
//! Several server instances in one process can share one bus and one repository (clone the
//! `Arc`), which is how the tests prove the bus port is the seam between instances.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bus;
mod cursors;
mod repository;

pub use bus::InMemoryBus;
pub use repository::InMemoryRepository;

#[cfg(test)]
mod contract {
    use std::sync::Arc;

    use chat_domain::{MessageBus, MessageRepository, ReadCursors, RoomMembers};

    use crate::{InMemoryBus, InMemoryRepository};

    chat_domain::repository_contract_tests!(async {
        Arc::new(InMemoryRepository::new()) as Arc<dyn MessageRepository>
    });
    struct Store(Arc<InMemoryRepository>);
    impl AsRef<dyn MessageRepository> for Store {
        fn as_ref(&self) -> &(dyn MessageRepository + 'static) {
            &*self.0
        }
    }
    impl AsRef<dyn RoomMembers> for Store {
        fn as_ref(&self) -> &(dyn RoomMembers + 'static) {
            &*self.0
        }
    }
    impl AsRef<dyn ReadCursors> for Store {
        fn as_ref(&self) -> &(dyn ReadCursors + 'static) {
            &*self.0
        }
    }
    chat_domain::membership_contract_tests!(async { Store(Arc::new(InMemoryRepository::new())) });
    chat_domain::read_cursor_contract_tests!(async { Store(Arc::new(InMemoryRepository::new())) });
    chat_domain::bus_contract_tests!(async { Arc::new(InMemoryBus::new()) as Arc<dyn MessageBus> });
}
