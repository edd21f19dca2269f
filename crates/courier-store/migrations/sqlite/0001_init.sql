-- Courier's schema. Times are unix microseconds (INTEGER) so that both backends store
-- and compare them identically; money is integer micro-dollars for exact sums.
-- Keep in step with ../postgres/0001_init.sql: only the column types differ.

CREATE TABLE users (
    id BLOB PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE projects (
    id BLOB PRIMARY KEY,
    user_id BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    -- Denormalized: running, not soft-deleted sandboxes. Only the store's atomic
    -- transitions change it.
    active_sandboxes INTEGER NOT NULL DEFAULT 0 CHECK (active_sandboxes >= 0),
    -- Last learning version number handed out; locking this row serializes numbering.
    learning_version_seq INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX projects_user ON projects (user_id, created_at);

CREATE TABLE api_keys (
    id BLOB PRIMARY KEY,
    user_id BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    provider TEXT NOT NULL CHECK (provider IN ('anthropic', 'openrouter', 'openai', 'github', 'e2b')),
    ciphertext BLOB NOT NULL,
    last_four TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (user_id, provider)
);

CREATE TABLE project_provider_keys (
    id BLOB PRIMARY KEY,
    project_id BLOB NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    provider TEXT NOT NULL CHECK (provider IN ('anthropic', 'openrouter', 'openai', 'github', 'e2b')),
    ciphertext BLOB NOT NULL,
    last_four TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (project_id, provider)
);

CREATE TABLE sandboxes (
    id BLOB PRIMARY KEY,
    user_id BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    project_id BLOB NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    provider_sandbox_id TEXT,
    status TEXT NOT NULL CHECK (status IN ('creating', 'running', 'paused', 'killed', 'error')),
    error_message TEXT,
    config TEXT NOT NULL,
    cli_tool TEXT NOT NULL,
    model TEXT,
    prompt TEXT NOT NULL,
    run_id TEXT,
    issue_session_id TEXT,
    background_task_id TEXT,
    repo_url TEXT,
    branch TEXT,
    pr_url TEXT,
    pr_number INTEGER,
    pr_status TEXT CHECK (pr_status IN ('creating', 'created', 'failed', 'skipped', 'merged')),
    learning_status TEXT NOT NULL CHECK (learning_status IN ('pending', 'running', 'completed', 'skipped', 'error')),
    learning_error TEXT,
    -- Last message sequence number handed out; locking this row serializes numbering.
    message_seq INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    started_at INTEGER,
    ended_at INTEGER,
    deleted_at INTEGER
);
CREATE INDEX sandboxes_page ON sandboxes (created_at, id);
CREATE INDEX sandboxes_project_page ON sandboxes (project_id, created_at, id);

CREATE TABLE sandbox_messages (
    id BLOB PRIMARY KEY,
    sandbox_id BLOB NOT NULL REFERENCES sandboxes(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('streaming', 'completed', 'error')),
    raw_log TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (sandbox_id, seq)
);

CREATE TABLE learnings (
    id BLOB PRIMARY KEY,
    project_id BLOB NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    category TEXT NOT NULL CHECK (category IN ('pattern', 'preference', 'gotcha', 'architecture')),
    content TEXT NOT NULL,
    source_sandbox_id BLOB REFERENCES sandboxes(id) ON DELETE SET NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX learnings_project ON learnings (project_id, created_at);

CREATE TABLE learning_versions (
    id BLOB PRIMARY KEY,
    project_id BLOB NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    compiled TEXT NOT NULL,
    active BOOLEAN NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (project_id, version)
);
-- At most one active version per project, enforced by the database itself.
CREATE UNIQUE INDEX learning_versions_one_active ON learning_versions (project_id) WHERE active;

CREATE TABLE template_builds (
    id BLOB PRIMARY KEY,
    tool_id TEXT NOT NULL,
    template_name TEXT NOT NULL,
    cli_version TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'building', 'succeeded', 'failed')),
    error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX template_builds_tool ON template_builds (tool_id, created_at);

CREATE TABLE usage_records (
    id BLOB PRIMARY KEY,
    -- Kept (as NULL) when the sandbox is purged: usage is billing history.
    sandbox_id BLOB REFERENCES sandboxes(id) ON DELETE SET NULL,
    project_id BLOB NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    service TEXT NOT NULL CHECK (service IN ('e2b', 'anthropic', 'openai', 'openrouter')),
    metric TEXT NOT NULL,
    quantity REAL NOT NULL,
    cost_micros INTEGER NOT NULL,
    recorded_at INTEGER NOT NULL
);
CREATE INDEX usage_records_sandbox ON usage_records (sandbox_id);
CREATE INDEX usage_records_project ON usage_records (project_id, recorded_at);

CREATE TABLE cost_rates (
    id BLOB PRIMARY KEY,
    service TEXT NOT NULL CHECK (service IN ('e2b', 'anthropic', 'openai', 'openrouter')),
    metric TEXT NOT NULL,
    usd_per_unit REAL NOT NULL,
    effective_from INTEGER NOT NULL,
    UNIQUE (service, metric, effective_from)
);
