DROP TABLE chat_room_members;
DROP INDEX IF EXISTS chat_rooms_by_owner;
ALTER TABLE chat_rooms DROP COLUMN owner_id, DROP COLUMN visibility;
