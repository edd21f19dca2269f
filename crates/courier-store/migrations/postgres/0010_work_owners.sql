-- Which replica drives each unfinished workflow run, work chain and issue session
-- (`courier_store::Cluster::claim_work`). `job` is `run:<id>`, `chain:<id>` or
-- `session:<id>`. Work whose replica is no longer alive is claimed by another one.
CREATE TABLE work_owners (
    job TEXT PRIMARY KEY,
    replica_id TEXT NOT NULL,
    claimed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
