-- Read cursors: how far each user has read each room. The unread count is the room's
-- last_seq minus the cursor, so nothing ever counts messages. A cursor never moves
-- backwards and never passes the room's last_seq (the writer clamps it).
CREATE TABLE chat_read_cursors (
    room_id BIGINT NOT NULL REFERENCES chat_rooms (id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL,
    last_read_seq BIGINT NOT NULL CONSTRAINT chat_read_cursors_not_negative CHECK (last_read_seq >= 0),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, user_id)
);

-- "Which rooms has this user read" (GET /api/me/rooms), by keyset on the room id.
CREATE INDEX chat_read_cursors_by_user ON chat_read_cursors (user_id, room_id);
