DROP INDEX chat_messages_idempotency_unique;
ALTER TABLE chat_messages DROP COLUMN idempotency_key;
