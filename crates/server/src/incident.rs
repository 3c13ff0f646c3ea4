//! What clients are told when something inside failed: a stable code, a plain message and
//! a correlation id; the details (driver text, hosts, users, database names) go only to
//! the log line, which carries the same id. [`conceal`] is applied at the edge, to every
//! error a client is about to see (REST problems, STOMP errors).

use std::hash::{BuildHasher, Hasher};

use chat_domain::{ChatError, DisconnectReason};

/// A correlation id: 16 hex digits, random per call.
#[must_use]
pub(crate) fn correlation_id() -> String {
    // RandomState is seeded randomly per process and per call site use; enough to tell
    // incidents apart in logs, without a dependency for it.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", hasher.finish())
}

/// The error as a client may see it. Errors about the client's own request pass
/// unchanged; errors from inside (store, bus) are logged with their details and a new
/// correlation id, and come back with only that id as their detail.
#[must_use]
pub(crate) fn conceal(error: ChatError, during: &'static str) -> ChatError {
    let internal = match &error {
        ChatError::StoreUnavailable(details)
        | ChatError::StoreOutcomeUnknown(details)
        | ChatError::BusUnavailable(details) => details.clone(),
        _ => return error,
    };
    let id = correlation_id();
    tracing::warn!(correlation_id = %id, code = error.code(), during, details = %internal, "a request failed inside the server");
    let reference = format!("correlation id {id}");
    match error {
        ChatError::StoreUnavailable(_) => ChatError::StoreUnavailable(reference),
        ChatError::StoreOutcomeUnknown(_) => ChatError::StoreOutcomeUnknown(reference),
        _ => ChatError::BusUnavailable(reference),
    }
}

/// A replay that failed inside the store: the client is told the correlation id only.
#[must_use]
pub(crate) fn conceal_disconnect(reason: DisconnectReason) -> DisconnectReason {
    match reason {
        DisconnectReason::ReplayFailed(details) => {
            let id = correlation_id();
            tracing::warn!(correlation_id = %id, %details, "a resume's history could not be read");
            DisconnectReason::ReplayFailed(format!("correlation id {id}"))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use chat_domain::{RoomId, ValidationError};

    use super::*;

    #[test]
    fn internal_details_are_replaced_by_a_correlation_id_and_client_errors_pass() {
        let leaked = ChatError::StoreUnavailable(
            "connection to postgres@db.internal:5432/chat refused".into(),
        );
        let shown = conceal(leaked, "test");
        let text = shown.to_string();
        assert_eq!(shown.code(), "STORE_UNAVAILABLE");
        assert!(
            !text.contains("db.internal") && !text.contains("postgres@"),
            "{text}"
        );
        assert!(text.contains("correlation id "), "{text}");
        let own = ChatError::Invalid(ValidationError::EmptyContent);
        assert_eq!(conceal(own.clone(), "test"), own);
        let unknown = ChatError::UnknownRoom(RoomId(3));
        assert_eq!(conceal(unknown.clone(), "test"), unknown);
        assert_ne!(correlation_id(), correlation_id());
    }
}
