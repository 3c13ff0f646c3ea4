-- A client's idempotency key for a send: a retry with the same (room, sender, key) finds the
-- message already stored instead of storing it again. The partial unique index holds only
-- keyed rows, so unkeyed sends pay nothing for it; appends look keys up under the room's
-- row lock, and the index is the last line of defence.
ALTER TABLE chat_messages ADD COLUMN idempotency_key TEXT;

CREATE UNIQUE INDEX chat_messages_idempotency_unique
    ON chat_messages (chat_room_id, sender_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
