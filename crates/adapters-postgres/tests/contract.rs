//! The port contract suite from chat-domain, run against a real PostgreSQL with a fresh
//! database per test.

mod support;

chat_domain::repository_contract_tests!(async { support::Fixture::new().await });
chat_domain::membership_contract_tests!(async { support::Fixture::new().await });
chat_domain::read_cursor_contract_tests!(async { support::Fixture::new().await });
