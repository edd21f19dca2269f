//! The crate's one error type.

use crate::{RunStatus, SandboxStatus};

/// Everything a [`Store`](crate::Store) operation can fail with.
///
/// Every failed operation leaves the store as it was: multi-statement writes run in one
/// transaction that is rolled back on any error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The record does not exist (or was purged).
    #[error("{entity} {id} not found")]
    NotFound {
        /// What was looked up, e.g. `"sandbox"`.
        entity: &'static str,
        /// The id or key that was looked up.
        id: String,
    },
    /// The lifecycle does not allow going from `from` to `to`.
    #[error("invalid sandbox transition from `{from}` to `{to}`")]
    InvalidTransition {
        /// The state the caller transitions from.
        from: SandboxStatus,
        /// The state the caller asked for.
        to: SandboxStatus,
    },
    /// A workflow run, work chain or issue session cannot move from `from` (final) to `to`.
    #[error("invalid {entity} transition from `{from}` to `{to}`")]
    InvalidRunTransition {
        /// What was changed, e.g. `"workflow run"`.
        entity: &'static str,
        /// The status the caller moves from.
        from: RunStatus,
        /// The status the caller asked for.
        to: RunStatus,
    },
    /// The write lost a race or contradicts what is stored (a stale expected status, a
    /// duplicate unique value, a finished message): re-read and decide again.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A value from outside failed to parse or is out of range.
    #[error("invalid {field}: {message}")]
    InvalidInput {
        /// The field that was wrong.
        field: &'static str,
        /// What was wrong and what is allowed.
        message: String,
    },
    /// Creating the sandbox would give its user or project more live sandboxes than its
    /// quota allows (see [`Store::create_sandbox_within`](crate::Store::create_sandbox_within));
    /// nothing was recorded.
    #[error("the {scope}'s quota of {limit} live sandboxes is reached ({in_use} live)")]
    QuotaExceeded {
        /// Whose quota.
        scope: crate::QuotaScope,
        /// The quota.
        limit: u32,
        /// Live sandboxes it has now.
        in_use: i64,
    },
    /// The database failed (connection, I/O, corrupt data, failed migration).
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl StoreError {
    pub(crate) fn not_found(entity: &'static str, id: impl ToString) -> Self {
        StoreError::NotFound {
            entity,
            id: id.to_string(),
        }
    }

    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        StoreError::InvalidInput {
            field,
            message: message.into(),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    /// Turns the constraint violations a caller can act on into typed variants.
    fn from(err: sqlx::Error) -> Self {
        use sqlx::error::ErrorKind;
        if let sqlx::Error::Database(db) = &err {
            match db.kind() {
                ErrorKind::UniqueViolation => return StoreError::Conflict(db.message().to_owned()),
                ErrorKind::ForeignKeyViolation => {
                    return StoreError::NotFound {
                        entity: "referenced record",
                        id: db.message().to_owned(),
                    };
                }
                ErrorKind::CheckViolation => {
                    return StoreError::invalid("value", db.message().to_owned());
                }
                _ => {}
            }
        }
        StoreError::Database(err)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        StoreError::Database(sqlx::Error::Migrate(Box::new(err)))
    }
}

/// Shorthand for results of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
