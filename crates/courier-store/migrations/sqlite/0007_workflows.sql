-- Personas, workflow runs and their steps, work chains and their items, issue sessions
-- and their cards. Nested structures (skills, workflow specs) are JSON text.
-- Keep in step with ../postgres/0007_workflows.sql: only the column types differ.

CREATE TABLE personas (
    id BLOB PRIMARY KEY,
    project_id BLOB NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    tool TEXT,
    model TEXT,
    thinking_effort TEXT,
    system_prompt TEXT,
    skills TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (project_id, name)
);

CREATE TABLE work_chains (
    id BLOB PRIMARY KEY,
    user_id BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    project_id BLOB NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    title TEXT NOT NULL,
    spec TEXT NOT NULL,
    repo_url TEXT,
    base_branch TEXT,
    branch TEXT NOT NULL,
    pr_mode TEXT NOT NULL CHECK (pr_mode IN ('single', 'per_issue')),
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    error TEXT,
    -- Last item position handed out; locking this row serializes appends.
    item_seq INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX work_chains_project ON work_chains (project_id, created_at, id);
CREATE INDEX work_chains_status ON work_chains (status, created_at);

CREATE TABLE issue_sessions (
    id BLOB PRIMARY KEY,
    user_id BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    project_id BLOB NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    focus TEXT,
    sandbox_id BLOB REFERENCES sandboxes(id) ON DELETE SET NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    error TEXT,
    created_at INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX issue_sessions_project ON issue_sessions (project_id, created_at, id);
CREATE INDEX issue_sessions_status ON issue_sessions (status, created_at);

CREATE TABLE issue_cards (
    id BLOB PRIMARY KEY,
    session_id BLOB NOT NULL REFERENCES issue_sessions(id) ON DELETE CASCADE,
    project_id BLOB NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    severity TEXT NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    suggested_prompt TEXT NOT NULL,
    sandbox_id BLOB REFERENCES sandboxes(id) ON DELETE SET NULL,
    chain_id BLOB REFERENCES work_chains(id) ON DELETE SET NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (session_id, position)
);

CREATE TABLE workflow_runs (
    id BLOB PRIMARY KEY,
    user_id BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    project_id BLOB NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    chain_id BLOB REFERENCES work_chains(id) ON DELETE CASCADE,
    title TEXT NOT NULL,
    prompt TEXT NOT NULL,
    spec TEXT NOT NULL,
    repo_url TEXT,
    base_branch TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    iteration INTEGER NOT NULL,
    designer_sandbox_id BLOB REFERENCES sandboxes(id) ON DELETE SET NULL,
    verdict TEXT CHECK (verdict IN ('pass', 'needs_changes')),
    branch TEXT,
    error TEXT,
    -- Last step number handed out; locking this row serializes numbering.
    step_seq INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX workflow_runs_project ON workflow_runs (project_id, created_at, id);
CREATE INDEX workflow_runs_chain ON workflow_runs (chain_id, created_at);
CREATE INDEX workflow_runs_status ON workflow_runs (status, created_at);

CREATE TABLE workflow_steps (
    id BLOB PRIMARY KEY,
    run_id BLOB NOT NULL REFERENCES workflow_runs(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('designer', 'checker', 'optimizer')),
    iteration INTEGER NOT NULL,
    sandbox_id BLOB REFERENCES sandboxes(id) ON DELETE SET NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    verdict TEXT CHECK (verdict IN ('pass', 'needs_changes')),
    feedback TEXT,
    output TEXT,
    error TEXT,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    UNIQUE (run_id, seq)
);

CREATE TABLE chain_items (
    chain_id BLOB NOT NULL REFERENCES work_chains(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    title TEXT NOT NULL,
    prompt TEXT NOT NULL,
    card_id BLOB REFERENCES issue_cards(id) ON DELETE SET NULL,
    run_id BLOB REFERENCES workflow_runs(id) ON DELETE SET NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    error TEXT,
    PRIMARY KEY (chain_id, position)
);

-- Sandboxes listed by the run or issue session they belong to.
CREATE INDEX sandboxes_run ON sandboxes (run_id) WHERE run_id IS NOT NULL;
CREATE INDEX sandboxes_issue_session ON sandboxes (issue_session_id)
    WHERE issue_session_id IS NOT NULL;
