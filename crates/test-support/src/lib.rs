//! Test fixtures for integration tests against real PostgreSQL and Redis. A fixture takes
//! `CHAT_TEST_DATABASE_URL` / `CHAT_TEST_REDIS_URL` when set, otherwise starts a container
//! with testcontainers, and otherwise fails saying what to set. It never silently skips.
#![forbid(unsafe_code)]

pub mod postgres;
pub mod redis;
