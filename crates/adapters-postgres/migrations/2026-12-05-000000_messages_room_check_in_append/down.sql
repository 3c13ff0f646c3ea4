DROP TRIGGER chat_rooms_keep_messages ON chat_rooms;
DROP FUNCTION chat_rooms_keep_messages();
ALTER TABLE chat_messages
    ADD CONSTRAINT chat_messages_chat_room_id_fkey
    FOREIGN KEY (chat_room_id) REFERENCES chat_rooms (id);
