-- A message's room is no longer checked by a foreign key on every insert. Every insert
-- takes the message's seq from its room's row, which the same statement (or transaction)
-- locks and updates, so a message for a room that does not exist is never inserted; the
-- per-row check of the key (a trigger and a query per message) cost about a tenth of the
-- database CPU per message at low load (docs/benchmarks.md, issue 14). Deleting a room that
-- has messages is still refused, as the foreign key refused it: rooms are never deleted by
-- the service, and the trigger below runs only when someone deletes one by hand. Both steps
-- are catalog changes (no table scan, locks held for milliseconds).
ALTER TABLE chat_messages DROP CONSTRAINT chat_messages_chat_room_id_fkey;

CREATE FUNCTION chat_rooms_keep_messages() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM chat_messages WHERE chat_room_id = OLD.id) THEN
        RAISE EXCEPTION 'room % still has messages', OLD.id
            USING ERRCODE = 'foreign_key_violation',
                  TABLE = 'chat_messages';
    END IF;
    RETURN OLD;
END;
$$;

CREATE TRIGGER chat_rooms_keep_messages
    BEFORE DELETE ON chat_rooms
    FOR EACH ROW EXECUTE FUNCTION chat_rooms_keep_messages();
