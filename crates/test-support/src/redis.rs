//! Redis fixtures (owned by the redis adapter work).
