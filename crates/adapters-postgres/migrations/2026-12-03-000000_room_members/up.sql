-- Private rooms (spec §7): a room is public (everyone reads and writes, what every room
-- before this migration is) or private (its owner and members only). Visibility never
-- changes once the room exists, which lets instances cache it. The owner is the user who
-- created the room; rooms created without a signed-in user have none.
ALTER TABLE chat_rooms
    ADD COLUMN visibility TEXT NOT NULL DEFAULT 'public'
        CONSTRAINT chat_rooms_visibility_known CHECK (visibility IN ('public', 'private')),
    ADD COLUMN owner_id BIGINT;

-- Members of private rooms. The primary key answers "is this user a member of this
-- room" (every SUBSCRIBE and first SEND to a private room); the second index answers
-- "which rooms may this user see" (the room list).
CREATE TABLE chat_room_members (
    chat_room_id BIGINT NOT NULL REFERENCES chat_rooms (id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL,
    added_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (chat_room_id, user_id)
);

CREATE INDEX chat_room_members_by_user ON chat_room_members (user_id, chat_room_id);
CREATE INDEX chat_rooms_by_owner ON chat_rooms (owner_id, id) WHERE owner_id IS NOT NULL;
