//! The diesel view of the tables created by `migrations/`. Kept by hand (there is no
//! `diesel print-schema` step in the build); a mismatch shows up in the contract tests.

diesel::table! {
    chat_rooms (id) {
        id -> BigInt,
        name -> Text,
        created_at -> Timestamptz,
        last_seq -> BigInt,
        visibility -> Text,
        owner_id -> Nullable<BigInt>,
    }
}

diesel::table! {
    chat_room_members (chat_room_id, user_id) {
        chat_room_id -> BigInt,
        user_id -> BigInt,
        added_at -> Timestamptz,
    }
}

diesel::table! {
    chat_messages (id) {
        id -> BigInt,
        chat_room_id -> BigInt,
        seq -> BigInt,
        sender_id -> BigInt,
        sender_nickname -> Text,
        content -> Text,
        message_type -> Text,
        created_at -> Timestamptz,
        idempotency_key -> Nullable<Text>,
    }
}

diesel::joinable!(chat_messages -> chat_rooms (chat_room_id));
diesel::joinable!(chat_room_members -> chat_rooms (chat_room_id));
diesel::allow_tables_to_appear_in_same_query!(chat_rooms, chat_messages, chat_room_members);
