-- The PostgreSQL backend's cluster tables, kept in step so both backends share one
-- schema history. SQLite serves one replica only (`courier serve` refuses a second one
-- on the same file), so nothing writes these here.
CREATE TABLE courier_replicas (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    lock_key INTEGER NOT NULL,
    started_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE sandbox_owners (
    sandbox_id BLOB PRIMARY KEY REFERENCES sandboxes(id) ON DELETE CASCADE,
    replica_id TEXT NOT NULL,
    claimed_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
