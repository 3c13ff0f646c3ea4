-- Rooms carry the last seq they handed out: appending locks the room row, adds n to
-- last_seq and inserts n messages in one transaction, so writers in every replica are
-- serialised per room and a rollback gives the numbers back (no holes).
CREATE TABLE chat_rooms (
    id          BIGSERIAL   PRIMARY KEY,
    name        TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seq    BIGINT      NOT NULL DEFAULT 0 CHECK (last_seq >= 0)
);

CREATE TABLE chat_messages (
    id              BIGSERIAL   PRIMARY KEY,
    chat_room_id    BIGINT      NOT NULL REFERENCES chat_rooms (id),
    seq             BIGINT      NOT NULL CHECK (seq > 0),
    sender_id       BIGINT      NOT NULL,
    sender_nickname TEXT        NOT NULL,
    content         TEXT        NOT NULL,
    message_type    TEXT        NOT NULL
        CHECK (message_type IN ('TEXT', 'IMAGE', 'FILE', 'ENTER', 'LEAVE', 'SYSTEM')),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The last line of defence against a duplicate seq. Its index (room, seq) also serves
    -- every history query (keyset on seq in both directions) and the foreign key.
    CONSTRAINT chat_messages_room_seq_unique UNIQUE (chat_room_id, seq)
);
