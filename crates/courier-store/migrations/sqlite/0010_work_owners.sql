-- The PostgreSQL backend's work owners, kept in step so both backends share one schema
-- history. SQLite serves one replica only, so nothing writes this table here.
CREATE TABLE work_owners (
    job TEXT PRIMARY KEY,
    replica_id TEXT NOT NULL,
    claimed_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
