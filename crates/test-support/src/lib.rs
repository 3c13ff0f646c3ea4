//! Test fixtures for integration tests against real PostgreSQL and Redis. A fixture takes
//! `CHAT_TEST_DATABASE_URL` / `CHAT_TEST_REDIS_URL` when set, otherwise starts a container
//! with testcontainers, and otherwise fails saying what to set. It never silently skips.
//! [`topologies`] starts real Redis Sentinel groups and Redis Clusters from the local
//! `redis-server` for fail-over tests.
#![forbid(unsafe_code)]

pub mod postgres;
pub mod redis;
pub mod topologies;
