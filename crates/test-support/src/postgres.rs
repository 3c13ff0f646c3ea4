//! PostgreSQL fixtures (owned by the postgres adapter work).
