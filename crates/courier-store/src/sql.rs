//! SQL shared by both backends, and the one `Store` implementation both expand.
//!
//! SQLite and PostgreSQL agree on everything used here (`$n` parameters, `RETURNING`,
//! `ON CONFLICT`, row values, `TRUE`/`FALSE`), and times are stored as integer
//! microseconds, so one SQL text and one implementation serve both. The macro
//! [`impl_store!`] expands that implementation per backend, because sqlx row and
//! executor types are backend-specific; each backend only supplies its pool and how a
//! write transaction begins.

use chrono::{DateTime, Utc};

use crate::{Result, SandboxStatus, StoreError};

/// The current time truncated to what the store keeps (microseconds).
pub(crate) fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn time(micros: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| {
        StoreError::Database(sqlx::Error::Decode(
            format!("timestamp {micros} µs is out of range").into(),
        ))
    })
}

pub(crate) fn opt_time(micros: Option<i64>) -> Result<Option<DateTime<Utc>>> {
    micros.map(time).transpose()
}

/// How a transition changes the project's active counter: +1 entering `running`,
/// −1 leaving it.
pub(crate) fn active_delta(from: SandboxStatus, to: SandboxStatus) -> i64 {
    i64::from(to == SandboxStatus::Running) - i64::from(from == SandboxStatus::Running)
}

pub(crate) fn check_message_limit(limit: u32) -> Result<i64> {
    crate::PageRequest::first(limit).checked_limit()
}

pub(crate) fn check_last_four(last_four: &str) -> Result<()> {
    if last_four.chars().count() > 4 {
        return Err(StoreError::invalid("last_four", "at most 4 characters"));
    }
    Ok(())
}

pub(crate) fn check_non_negative(field: &'static str, value: f64) -> Result<()> {
    if !value.is_finite() || value < 0.0 {
        return Err(StoreError::invalid(
            field,
            format!("{value} is not a finite number ≥ 0"),
        ));
    }
    Ok(())
}

macro_rules! user_cols {
    () => {
        "id, email, name, created_at"
    };
}
macro_rules! project_cols {
    () => {
        "id, user_id, name, active_sandboxes, created_at, updated_at"
    };
}
macro_rules! sandbox_cols {
    () => {
        "id, user_id, project_id, provider_sandbox_id, status, error_message, config, cli_tool, \
         model, prompt, run_id, issue_session_id, background_task_id, repo_url, branch, pr_url, \
         pr_number, pr_status, pr_error, learning_status, learning_error, created_at, updated_at, \
         started_at, ended_at, deleted_at"
    };
}
macro_rules! message_cols {
    () => {
        "id, sandbox_id, seq, role, content, status, raw_log, created_at, updated_at"
    };
}
macro_rules! learning_cols {
    () => {
        "id, project_id, category, content, evidence, source_sandbox_id, created_at"
    };
}
macro_rules! version_cols {
    () => {
        "id, project_id, version, compiled, active, created_at"
    };
}
macro_rules! build_cols {
    () => {
        "id, tool_id, template_name, cli_version, status, error, created_at, updated_at, finished_at"
    };
}
macro_rules! usage_cols {
    () => {
        "id, sandbox_id, project_id, service, metric, quantity, cost_micros, recorded_at"
    };
}
macro_rules! rate_cols {
    () => {
        "id, service, metric, usd_per_unit, effective_from"
    };
}
macro_rules! key_sql {
    ($table:literal, $owner:literal) => {
        KeySql {
            upsert: concat!(
                "INSERT INTO ",
                $table,
                " (id, ",
                $owner,
                ", provider, ciphertext, last_four, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6) \
                 ON CONFLICT (",
                $owner,
                ", provider) DO UPDATE SET ciphertext = excluded.ciphertext, \
                 last_four = excluded.last_four, updated_at = excluded.updated_at \
                 RETURNING id, ",
                $owner,
                " AS owner_id, provider, ciphertext, last_four, created_at, updated_at"
            ),
            get: concat!(
                "SELECT id, ",
                $owner,
                " AS owner_id, provider, ciphertext, last_four, created_at, updated_at \
                 FROM ",
                $table,
                " WHERE ",
                $owner,
                " = $1 AND provider = $2"
            ),
            list: concat!(
                "SELECT id, ",
                $owner,
                " AS owner_id, provider, ciphertext, last_four, created_at, updated_at \
                 FROM ",
                $table,
                " WHERE ",
                $owner,
                " = $1"
            ),
            delete: concat!(
                "DELETE FROM ",
                $table,
                " WHERE ",
                $owner,
                " = $1 AND provider = $2"
            ),
        }
    };
}

/// The statements for one provider key table.
pub(crate) struct KeySql {
    pub upsert: &'static str,
    pub get: &'static str,
    pub list: &'static str,
    pub delete: &'static str,
}

pub(crate) const USER_KEYS: KeySql = key_sql!("api_keys", "user_id");
pub(crate) const PROJECT_KEYS: KeySql = key_sql!("project_provider_keys", "project_id");

pub(crate) const INSERT_USER: &str = concat!(
    "INSERT INTO users (id, email, name, created_at) VALUES ($1, $2, $3, $4) RETURNING ",
    user_cols!()
);
pub(crate) const GET_USER: &str = concat!("SELECT ", user_cols!(), " FROM users WHERE id = $1");
pub(crate) const GET_USER_BY_EMAIL: &str =
    concat!("SELECT ", user_cols!(), " FROM users WHERE email = $1");

pub(crate) const INSERT_PROJECT: &str = concat!(
    "INSERT INTO projects (id, user_id, name, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
     RETURNING ",
    project_cols!()
);
pub(crate) const GET_PROJECT: &str =
    concat!("SELECT ", project_cols!(), " FROM projects WHERE id = $1");
pub(crate) const LIST_PROJECTS: &str = concat!(
    "SELECT ",
    project_cols!(),
    " FROM projects WHERE user_id = $1 ORDER BY created_at, id"
);
pub(crate) const ADJUST_ACTIVE: &str =
    "UPDATE projects SET active_sandboxes = active_sandboxes + $2 WHERE id = $1";

pub(crate) const INSERT_SANDBOX: &str = concat!(
    "INSERT INTO sandboxes (id, user_id, project_id, status, config, cli_tool, model, prompt, \
     run_id, issue_session_id, background_task_id, repo_url, branch, learning_status, \
     created_at, updated_at) \
     VALUES ($1, $2, $3, 'creating', $4, $5, $6, $7, $8, $9, $10, $11, $12, 'pending', $13, $13) \
     RETURNING ",
    sandbox_cols!()
);
/// Locks the user's row for the rest of the transaction (a no-op write: SQLite's write
/// transaction is exclusive already, PostgreSQL takes the row lock), so quota counts of
/// one user are serialized. The project's row is locked after it with [`LOCK_PROJECT`].
pub(crate) const LOCK_USER: &str = "UPDATE users SET email = email WHERE id = $1";
/// Live sandboxes of a user (`$1`) and of a project (`$2`), soft-deleted ones included:
/// hiding a sandbox does not stop it.
pub(crate) const COUNT_LIVE_SANDBOXES: &str = "SELECT \
     (SELECT COUNT(*) FROM sandboxes WHERE user_id = $1 \
        AND status IN ('creating', 'running', 'paused')) AS by_user, \
     (SELECT COUNT(*) FROM sandboxes WHERE project_id = $2 \
        AND status IN ('creating', 'running', 'paused')) AS by_project";
pub(crate) const GET_SANDBOX: &str =
    concat!("SELECT ", sandbox_cols!(), " FROM sandboxes WHERE id = $1");
pub(crate) const SANDBOX_STATE: &str = "SELECT status, deleted_at FROM sandboxes WHERE id = $1";
/// The start of a sandbox list; the store appends only the filters given (see
/// `list_sandboxes`), so each combination gets a plan that uses its index.
pub(crate) const LIST_SANDBOXES_WHERE: &str =
    concat!("SELECT ", sandbox_cols!(), " FROM sandboxes WHERE ");
/// The compare-and-set: only a row still in `$2` changes.
pub(crate) const TRANSITION: &str = concat!(
    "UPDATE sandboxes SET status = $3, updated_at = $4, \
       error_message = COALESCE($5, error_message), \
       started_at = CASE WHEN $3 = 'running' THEN COALESCE(started_at, $4) ELSE started_at END, \
       ended_at = CASE WHEN $3 = 'killed' OR $3 = 'error' THEN $4 ELSE ended_at END \
     WHERE id = $1 AND status = $2 RETURNING ",
    sandbox_cols!()
);
pub(crate) const SET_PROVIDER_ID: &str =
    "UPDATE sandboxes SET provider_sandbox_id = $2, updated_at = $3 WHERE id = $1";
pub(crate) const SET_GIT: &str = "UPDATE sandboxes SET repo_url = $2, branch = $3, pr_url = $4, \
     pr_number = $5, pr_status = $6, pr_error = $7, updated_at = $8 WHERE id = $1";
pub(crate) const SET_LEARNING_STATUS: &str = "UPDATE sandboxes SET learning_status = $2, \
     learning_error = $3, updated_at = $4 WHERE id = $1";
pub(crate) const SOFT_DELETE: &str = "UPDATE sandboxes SET deleted_at = $2, updated_at = $2 \
     WHERE id = $1 AND deleted_at IS NULL RETURNING project_id, status";
pub(crate) const RESTORE: &str = "UPDATE sandboxes SET deleted_at = NULL, updated_at = $2 \
     WHERE id = $1 AND deleted_at IS NOT NULL RETURNING project_id, status";
pub(crate) const PURGE: &str =
    "DELETE FROM sandboxes WHERE id = $1 RETURNING project_id, status, deleted_at";

/// Taking the next number locks the sandbox row until commit, so numbers are handed out
/// and become visible in order, with no gaps.
pub(crate) const NEXT_MESSAGE_SEQ: &str =
    "UPDATE sandboxes SET message_seq = message_seq + 1 WHERE id = $1 RETURNING message_seq";
pub(crate) const INSERT_MESSAGE: &str = concat!(
    "INSERT INTO sandbox_messages (id, sandbox_id, seq, role, content, status, raw_log, \
     created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, '', $7, $7) RETURNING ",
    message_cols!()
);
/// Chunk kinds in `message_chunks`.
pub(crate) const CHUNK_CONTENT: i32 = 0;
pub(crate) const CHUNK_RAW_LOG: i32 = 1;
pub(crate) const APPEND_CONTENT: &str = "INSERT INTO message_chunks (message_id, kind, text) \
     SELECT id, 0, $2 FROM sandbox_messages WHERE id = $1 AND status = 'streaming'";
pub(crate) const APPEND_RAW_LOG: &str = "INSERT INTO message_chunks (message_id, kind, text) \
     SELECT id, 1, $2 FROM sandbox_messages WHERE id = $1 AND status = 'streaming'";
/// Both appends of one batch of lines in one statement, so a crash never stores a line's
/// text without its raw line (a re-attach counts raw lines to know where to go on).
pub(crate) const APPEND_BOTH: &str = "INSERT INTO message_chunks (message_id, kind, text) \
     SELECT m.id, k.kind, k.text FROM sandbox_messages m, \
     (SELECT 0 AS kind, $2 AS text UNION ALL SELECT 1, $3) k \
     WHERE m.id = $1 AND m.status = 'streaming' AND k.text <> ''";
pub(crate) const MESSAGE_CHUNKS: &str =
    "SELECT id, kind, text FROM message_chunks WHERE message_id = $1 ORDER BY id";
pub(crate) const FOLD_CHUNKS: &str = "UPDATE sandbox_messages SET content = content || $2, \
     raw_log = raw_log || $3 WHERE id = $1";
pub(crate) const DELETE_CHUNKS: &str =
    "DELETE FROM message_chunks WHERE message_id = $1 AND id <= $2";
pub(crate) const MESSAGE_STATUS: &str = "SELECT status FROM sandbox_messages WHERE id = $1";
pub(crate) const FINISH_MESSAGE: &str = concat!(
    "UPDATE sandbox_messages SET status = $2, updated_at = $3 \
     WHERE id = $1 AND status = 'streaming' RETURNING ",
    message_cols!()
);
pub(crate) const LIST_MESSAGES: &str = concat!(
    "SELECT ",
    message_cols!(),
    " FROM sandbox_messages WHERE sandbox_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
);

pub(crate) const INSERT_LEARNING: &str = concat!(
    "INSERT INTO learnings (id, project_id, category, content, evidence, source_sandbox_id, \
     created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ",
    learning_cols!()
);
pub(crate) const LIST_LEARNINGS: &str = concat!(
    "SELECT ",
    learning_cols!(),
    " FROM learnings WHERE project_id = $1 ORDER BY created_at, id"
);
/// Locks the project row: serializes version numbering and activation per project.
pub(crate) const NEXT_VERSION: &str = "UPDATE projects SET learning_version_seq = \
     learning_version_seq + 1 WHERE id = $1 RETURNING learning_version_seq";
pub(crate) const LOCK_PROJECT: &str = "UPDATE projects SET learning_version_seq = \
     learning_version_seq WHERE id = $1 RETURNING learning_version_seq";
pub(crate) const DEACTIVATE_VERSIONS: &str =
    "UPDATE learning_versions SET active = FALSE WHERE project_id = $1 AND active = TRUE";
pub(crate) const INSERT_VERSION: &str = concat!(
    "INSERT INTO learning_versions (id, project_id, version, compiled, active, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
    version_cols!()
);
pub(crate) const ACTIVATE_VERSION: &str = concat!(
    "UPDATE learning_versions SET active = TRUE WHERE project_id = $1 AND version = $2 RETURNING ",
    version_cols!()
);
pub(crate) const ACTIVE_VERSION: &str = concat!(
    "SELECT ",
    version_cols!(),
    " FROM learning_versions WHERE project_id = $1 AND active = TRUE"
);
pub(crate) const LIST_VERSIONS: &str = concat!(
    "SELECT ",
    version_cols!(),
    " FROM learning_versions WHERE project_id = $1 ORDER BY version"
);

pub(crate) const INSERT_BUILD: &str = concat!(
    "INSERT INTO template_builds (id, tool_id, template_name, cli_version, status, created_at, \
     updated_at) VALUES ($1, $2, $3, $4, 'pending', $5, $5) RETURNING ",
    build_cols!()
);
pub(crate) const GET_BUILD: &str = concat!(
    "SELECT ",
    build_cols!(),
    " FROM template_builds WHERE id = $1"
);
pub(crate) const UPDATE_BUILD: &str = concat!(
    "UPDATE template_builds SET status = $2, error = $3, updated_at = $4, \
     finished_at = COALESCE($5, finished_at) WHERE id = $1 RETURNING ",
    build_cols!()
);
pub(crate) const SET_BUILD_VERSION: &str = concat!(
    "UPDATE template_builds SET cli_version = $2, updated_at = $3 WHERE id = $1 RETURNING ",
    build_cols!()
);
pub(crate) const LIST_BUILDS: &str = concat!(
    "SELECT ",
    build_cols!(),
    " FROM template_builds WHERE ($1 IS NULL OR tool_id = $1) ORDER BY created_at DESC, id DESC"
);

/// Takes the project from the sandbox row; no row inserted means no such sandbox.
pub(crate) const INSERT_USAGE: &str = concat!(
    "INSERT INTO usage_records (id, sandbox_id, project_id, service, metric, quantity, \
     cost_micros, recorded_at) SELECT $1, id, project_id, $3, $4, $5, $6, $7 \
     FROM sandboxes WHERE id = $2 RETURNING ",
    usage_cols!()
);
// Postgres sums BIGINT into NUMERIC; the cast keeps the column an i64 on both backends.
pub(crate) const USAGE_FOR_SANDBOX: &str = "SELECT service, metric, SUM(quantity) AS quantity, \
     CAST(SUM(cost_micros) AS BIGINT) AS cost_micros FROM usage_records WHERE sandbox_id = $1 \
     GROUP BY service, metric";
pub(crate) const USAGE_FOR_PROJECT: &str = "SELECT service, metric, SUM(quantity) AS quantity, \
     CAST(SUM(cost_micros) AS BIGINT) AS cost_micros FROM usage_records WHERE project_id = $1 \
     GROUP BY service, metric";
/// UTC days are whole multiples of 86 400 000 000 µs since the epoch.
pub(crate) const DAILY_USAGE: &str = "SELECT recorded_at / 86400000000 AS day, service, metric, \
     SUM(quantity) AS quantity, CAST(SUM(cost_micros) AS BIGINT) AS cost_micros \
     FROM usage_records WHERE project_id = $1 AND recorded_at >= $2 AND recorded_at < $3 \
     GROUP BY recorded_at / 86400000000, service, metric";
pub(crate) const INSERT_RATE: &str = concat!(
    "INSERT INTO cost_rates (id, service, metric, usd_per_unit, effective_from) \
     VALUES ($1, $2, $3, $4, $5) RETURNING ",
    rate_cols!()
);
pub(crate) const RATE_AT: &str = concat!(
    "SELECT ",
    rate_cols!(),
    " FROM cost_rates WHERE service = $1 AND metric = $2 AND effective_from <= $3 \
     ORDER BY effective_from DESC LIMIT 1"
);
pub(crate) const LIST_RATES: &str = concat!("SELECT ", rate_cols!(), " FROM cost_rates");
pub(crate) const GET_SETTINGS: &str = "SELECT repo_url, base_branch, system_prompt, claude_md, \
     skills, commands, sandbox_defaults FROM project_settings WHERE project_id = $1";
pub(crate) const PUT_SETTINGS: &str = "INSERT INTO project_settings (project_id, repo_url, \
     base_branch, system_prompt, claude_md, skills, commands, sandbox_defaults, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (project_id) DO UPDATE SET \
     repo_url = excluded.repo_url, base_branch = excluded.base_branch, \
     system_prompt = excluded.system_prompt, claude_md = excluded.claude_md, \
     skills = excluded.skills, commands = excluded.commands, \
     sandbox_defaults = excluded.sandbox_defaults, updated_at = excluded.updated_at";
pub(crate) const LIST_ENV_VARS: &str =
    "SELECT name, ciphertext, last_four FROM project_env_vars WHERE project_id = $1";
pub(crate) const DELETE_ENV_VARS: &str = "DELETE FROM project_env_vars WHERE project_id = $1";
pub(crate) const INSERT_ENV_VAR: &str = "INSERT INTO project_env_vars (project_id, name, \
     ciphertext, last_four) VALUES ($1, $2, $3, $4)";

mod workflows;
pub(crate) use workflows::*;
