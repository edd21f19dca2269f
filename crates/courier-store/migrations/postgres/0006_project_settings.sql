-- Project settings: defaults every sandbox of the project starts from. One row per
-- project (none until first saved); lists and sandbox defaults are JSON text.
-- Keep in step with ../sqlite/0006_project_settings.sql: only the column types differ.
CREATE TABLE project_settings (
    project_id UUID PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
    repo_url TEXT,
    base_branch TEXT,
    system_prompt TEXT,
    claude_md TEXT,
    skills TEXT NOT NULL,
    commands TEXT NOT NULL,
    sandbox_defaults TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Project env vars, encrypted by the orchestrator like provider keys.
CREATE TABLE project_env_vars (
    project_id UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    ciphertext BYTEA NOT NULL,
    last_four TEXT NOT NULL,
    PRIMARY KEY (project_id, name)
);
