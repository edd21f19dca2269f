-- Streaming output is appended as chunks (one small insert per append) and folded into the
-- message when it finishes: an append costs the same at the first line and the
-- ten-thousandth, where `content = content || $2` rewrote the whole growing row each time.
CREATE TABLE message_chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id BLOB NOT NULL REFERENCES sandbox_messages(id) ON DELETE CASCADE,
    kind INTEGER NOT NULL CHECK (kind IN (0, 1)),
    text TEXT NOT NULL
);
CREATE INDEX message_chunks_by_message ON message_chunks (message_id, id);
