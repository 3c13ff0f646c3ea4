DROP TABLE chat_read_cursors;
