//! SQL of personas, workflow runs and steps, work chains and issue sessions.

macro_rules! persona_cols {
    () => {
        "id, project_id, name, tool, model, thinking_effort, system_prompt, skills, created_at, \
         updated_at"
    };
}
macro_rules! run_cols {
    () => {
        "id, user_id, project_id, chain_id, title, prompt, spec, repo_url, base_branch, status, \
         iteration, designer_sandbox_id, verdict, branch, error, created_at, updated_at, \
         finished_at"
    };
}
macro_rules! step_cols {
    () => {
        "id, run_id, seq, role, iteration, sandbox_id, status, verdict, feedback, output, error, \
         started_at, finished_at"
    };
}
macro_rules! chain_cols {
    () => {
        "id, user_id, project_id, title, spec, repo_url, base_branch, branch, pr_mode, status, \
         error, created_at, updated_at, finished_at"
    };
}
macro_rules! item_cols {
    () => {
        "chain_id, position, title, prompt, card_id, run_id, status, error"
    };
}
macro_rules! session_cols {
    () => {
        "id, user_id, project_id, focus, sandbox_id, status, error, created_at, finished_at"
    };
}
macro_rules! card_cols {
    () => {
        "id, session_id, project_id, position, title, description, severity, suggested_prompt, \
         sandbox_id, chain_id, created_at"
    };
}

pub(crate) const INSERT_PERSONA: &str = concat!(
    "INSERT INTO personas (id, project_id, name, tool, model, thinking_effort, system_prompt, \
     skills, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING ",
    persona_cols!()
);
pub(crate) const GET_PERSONA: &str =
    concat!("SELECT ", persona_cols!(), " FROM personas WHERE id = $1");
pub(crate) const LIST_PERSONAS: &str = concat!(
    "SELECT ",
    persona_cols!(),
    " FROM personas WHERE project_id = $1"
);
pub(crate) const UPDATE_PERSONA: &str = concat!(
    "UPDATE personas SET name = $2, tool = $3, model = $4, thinking_effort = $5, \
     system_prompt = $6, skills = $7, updated_at = $8 WHERE id = $1 RETURNING ",
    persona_cols!()
);
pub(crate) const DELETE_PERSONA: &str = "DELETE FROM personas WHERE id = $1";

pub(crate) const INSERT_RUN: &str = concat!(
    "INSERT INTO workflow_runs (id, user_id, project_id, chain_id, title, prompt, spec, \
     repo_url, base_branch, status, iteration, branch, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', 0, $10, $11, $11) RETURNING ",
    run_cols!()
);
pub(crate) const GET_RUN: &str =
    concat!("SELECT ", run_cols!(), " FROM workflow_runs WHERE id = $1");
pub(crate) const RUN_STATUS: &str = "SELECT status FROM workflow_runs WHERE id = $1";
pub(crate) const LIST_RUNS: &str = concat!(
    "SELECT ",
    run_cols!(),
    " FROM workflow_runs WHERE project_id = $1 AND ($2 IS NULL OR chain_id = $2) \
     ORDER BY created_at DESC, id DESC"
);
pub(crate) const LIST_UNFINISHED_RUNS: &str = concat!(
    "SELECT ",
    run_cols!(),
    " FROM workflow_runs WHERE status IN ('pending', 'running') ORDER BY created_at, id"
);
/// The compare-and-set: only a run still in `$2` changes.
pub(crate) const UPDATE_RUN: &str = concat!(
    "UPDATE workflow_runs SET status = $3, iteration = $4, designer_sandbox_id = $5, \
     verdict = $6, branch = $7, error = $8, updated_at = $9, finished_at = $10 \
     WHERE id = $1 AND status = $2 RETURNING ",
    run_cols!()
);
/// Taking the next number locks the run row until commit, so numbers have no gaps.
pub(crate) const NEXT_STEP_SEQ: &str =
    "UPDATE workflow_runs SET step_seq = step_seq + 1 WHERE id = $1 RETURNING step_seq";
pub(crate) const INSERT_STEP: &str = concat!(
    "INSERT INTO workflow_steps (id, run_id, seq, role, iteration, status, started_at) \
     VALUES ($1, $2, $3, $4, $5, 'running', $6) RETURNING ",
    step_cols!()
);
pub(crate) const SET_STEP_SANDBOX: &str = concat!(
    "UPDATE workflow_steps SET sandbox_id = $2 WHERE id = $1 RETURNING ",
    step_cols!()
);
pub(crate) const STEP_STATUS: &str = "SELECT status FROM workflow_steps WHERE id = $1";
pub(crate) const FINISH_STEP: &str = concat!(
    "UPDATE workflow_steps SET status = $2, verdict = $3, feedback = $4, output = $5, \
     error = $6, finished_at = $7 WHERE id = $1 AND status = 'running' RETURNING ",
    step_cols!()
);
pub(crate) const LIST_STEPS: &str = concat!(
    "SELECT ",
    step_cols!(),
    " FROM workflow_steps WHERE run_id = $1 ORDER BY seq"
);

pub(crate) const INSERT_CHAIN: &str = concat!(
    "INSERT INTO work_chains (id, user_id, project_id, title, spec, repo_url, base_branch, \
     branch, pr_mode, status, item_seq, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10, $11, $11) RETURNING ",
    chain_cols!()
);
pub(crate) const GET_CHAIN: &str =
    concat!("SELECT ", chain_cols!(), " FROM work_chains WHERE id = $1");
pub(crate) const CHAIN_STATUS: &str = "SELECT status FROM work_chains WHERE id = $1";
pub(crate) const LIST_CHAINS: &str = concat!(
    "SELECT ",
    chain_cols!(),
    " FROM work_chains WHERE project_id = $1 ORDER BY created_at DESC, id DESC"
);
pub(crate) const LIST_UNFINISHED_CHAINS: &str = concat!(
    "SELECT ",
    chain_cols!(),
    " FROM work_chains WHERE status IN ('pending', 'running') ORDER BY created_at, id"
);
/// Takes the next position of a chain that is not final, locking its row until commit.
pub(crate) const NEXT_ITEM_POSITION: &str = "UPDATE work_chains SET item_seq = item_seq + 1, \
     updated_at = $2 WHERE id = $1 AND status IN ('pending', 'running') RETURNING item_seq";
pub(crate) const INSERT_ITEM: &str = concat!(
    "INSERT INTO chain_items (chain_id, position, title, prompt, card_id, status) \
     VALUES ($1, $2, $3, $4, $5, 'pending') RETURNING ",
    item_cols!()
);
pub(crate) const LIST_ITEMS: &str = concat!(
    "SELECT ",
    item_cols!(),
    " FROM chain_items WHERE chain_id = $1 ORDER BY position"
);
pub(crate) const UPDATE_ITEM: &str = concat!(
    "UPDATE chain_items SET run_id = COALESCE($3, run_id), status = $4, error = $5 \
     WHERE chain_id = $1 AND position = $2 RETURNING ",
    item_cols!()
);
/// The compare-and-set: only a chain still in `$2` changes.
pub(crate) const UPDATE_CHAIN: &str = concat!(
    "UPDATE work_chains SET status = $3, error = $4, updated_at = $5, finished_at = $6 \
     WHERE id = $1 AND status = $2 RETURNING ",
    chain_cols!()
);

pub(crate) const INSERT_SESSION: &str = concat!(
    "INSERT INTO issue_sessions (id, user_id, project_id, focus, status, created_at) \
     VALUES ($1, $2, $3, $4, 'running', $5) RETURNING ",
    session_cols!()
);
pub(crate) const GET_SESSION: &str = concat!(
    "SELECT ",
    session_cols!(),
    " FROM issue_sessions WHERE id = $1"
);
pub(crate) const SESSION_STATUS: &str = "SELECT status FROM issue_sessions WHERE id = $1";
pub(crate) const LIST_SESSIONS: &str = concat!(
    "SELECT ",
    session_cols!(),
    " FROM issue_sessions WHERE project_id = $1 ORDER BY created_at DESC, id DESC"
);
pub(crate) const LIST_UNFINISHED_SESSIONS: &str = concat!(
    "SELECT ",
    session_cols!(),
    " FROM issue_sessions WHERE status IN ('pending', 'running') ORDER BY created_at, id"
);
pub(crate) const SET_SESSION_SANDBOX: &str = concat!(
    "UPDATE issue_sessions SET sandbox_id = $2 WHERE id = $1 RETURNING ",
    session_cols!()
);
pub(crate) const FINISH_SESSION: &str = concat!(
    "UPDATE issue_sessions SET status = $2, error = $3, finished_at = $4 \
     WHERE id = $1 AND status IN ('pending', 'running') RETURNING ",
    session_cols!()
);
pub(crate) const INSERT_CARD: &str = concat!(
    "INSERT INTO issue_cards (id, session_id, project_id, position, title, description, \
     severity, suggested_prompt, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
     RETURNING ",
    card_cols!()
);
pub(crate) const LIST_CARDS: &str = concat!(
    "SELECT ",
    card_cols!(),
    " FROM issue_cards WHERE session_id = $1 ORDER BY position"
);
pub(crate) const GET_CARD: &str =
    concat!("SELECT ", card_cols!(), " FROM issue_cards WHERE id = $1");
pub(crate) const LINK_CARD: &str = concat!(
    "UPDATE issue_cards SET sandbox_id = COALESCE($2, sandbox_id), \
     chain_id = COALESCE($3, chain_id) WHERE id = $1 RETURNING ",
    card_cols!()
);
