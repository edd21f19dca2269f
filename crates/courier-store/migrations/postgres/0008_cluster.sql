-- Several `courier serve` replicas on one database (`courier_store::Cluster`).
-- A replica is alive while its session holds the advisory lock `lock_key`; the row only
-- names it and says where other replicas forward requests for its sandboxes.
CREATE TABLE courier_replicas (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    lock_key BIGINT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Which replica follows each live sandbox (its agent's output, its timeouts). A sandbox
-- whose replica is no longer alive is claimed by another one.
CREATE TABLE sandbox_owners (
    sandbox_id UUID PRIMARY KEY REFERENCES sandboxes(id) ON DELETE CASCADE,
    replica_id TEXT NOT NULL,
    claimed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX sandbox_owners_replica ON sandbox_owners (replica_id);
