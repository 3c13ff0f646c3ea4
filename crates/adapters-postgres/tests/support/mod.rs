//! Shared by the integration tests: a repository on a database of its own.
#![allow(dead_code)] // Each test binary uses its own part of this module.

use std::sync::Arc;

use chat_adapters_postgres::{PostgresConfig, PostgresRepository};
use chat_domain::{
    ChatMessageRequest, MessageRepository, MessageType, NewChatMessage, NewRoom, ReadCursors,
    RoomId, RoomMembers, RoomName, SenderId,
};
use chat_test_support::postgres::{TestDatabase, fresh_database};

/// A repository that owns its database; fields drop in order, so the pool goes first.
pub struct Fixture {
    pub repository: Arc<PostgresRepository>,
    pub database: TestDatabase,
}

impl Fixture {
    pub async fn new() -> Self {
        let database = fresh_database().await;
        let repository = PostgresRepository::connect(PostgresConfig::new(database.url()))
            .await
            .expect("connect to the test database");
        Self {
            repository: Arc::new(repository),
            database,
        }
    }
}

impl AsRef<dyn MessageRepository> for Fixture {
    fn as_ref(&self) -> &(dyn MessageRepository + 'static) {
        self.repository.as_ref()
    }
}

impl AsRef<dyn RoomMembers> for Fixture {
    fn as_ref(&self) -> &(dyn RoomMembers + 'static) {
        self.repository.as_ref()
    }
}

impl AsRef<dyn ReadCursors> for Fixture {
    fn as_ref(&self) -> &(dyn ReadCursors + 'static) {
        self.repository.as_ref()
    }
}

pub fn message(room: RoomId, content: &str) -> NewChatMessage {
    NewChatMessage::try_from(ChatMessageRequest {
        chat_room_id: Some(room),
        sender_id: Some(SenderId(1)),
        sender_nickname: Some("tester".into()),
        content: Some(content.into()),
        message_type: Some(MessageType::Text),
    })
    .expect("a valid test message")
}

pub async fn room(repository: &dyn MessageRepository, name: &str) -> RoomId {
    repository
        .create_room(NewRoom::public(
            RoomName::parse(name).expect("a valid room name"),
        ))
        .await
        .expect("create_room")
        .id
}
