//! Filters and keyset pagination.
//!
//! Lists are ordered newest first by `(created_at, id)` and continue *after* the last
//! item of the previous page, so rows inserted meanwhile (which are newer) never shift
//! or repeat what a reader has not seen yet, unlike `OFFSET` pagination.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{ProjectId, SandboxStatus, StoreError, UserId};

/// Largest page a caller may ask for.
pub const MAX_PAGE_LIMIT: u32 = 500;

/// Where the next page starts. Opaque: pass back what a [`Page`] returned.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cursor(String);

impl Cursor {
    pub(crate) fn encode(created_at_micros: i64, id: Uuid) -> Self {
        Cursor(format!("{:016x}{}", created_at_micros, id.simple()))
    }

    /// `(created_at micros, id)` of the last row already seen.
    pub(crate) fn decode(&self) -> Result<(i64, Uuid), StoreError> {
        let bad = || StoreError::invalid("cursor", "not a cursor returned by this store");
        let s = &self.0;
        if s.len() != 48 || !s.is_ascii() {
            return Err(bad());
        }
        let micros = u64::from_str_radix(&s[..16], 16).map_err(|_| bad())? as i64;
        let id = Uuid::parse_str(&s[16..]).map_err(|_| bad())?;
        Ok((micros, id))
    }

    /// The cursor's text, for URLs.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Cursor {
    type Err = StoreError;

    /// Checks the shape now so a mangled cursor fails at the edge with a clear error.
    fn from_str(s: &str) -> Result<Self, StoreError> {
        let cursor = Cursor(s.to_owned());
        cursor.decode()?;
        Ok(cursor)
    }
}

/// Which page to fetch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    /// Items per page, 1–[`MAX_PAGE_LIMIT`].
    pub limit: u32,
    /// `None` for the first page.
    pub cursor: Option<Cursor>,
}

impl PageRequest {
    /// The first page of `limit` items.
    pub fn first(limit: u32) -> Self {
        PageRequest {
            limit,
            cursor: None,
        }
    }

    /// The page after `cursor`.
    pub fn after(limit: u32, cursor: Cursor) -> Self {
        PageRequest {
            limit,
            cursor: Some(cursor),
        }
    }

    pub(crate) fn checked_limit(&self) -> Result<i64, StoreError> {
        if self.limit == 0 || self.limit > MAX_PAGE_LIMIT {
            return Err(StoreError::invalid(
                "limit",
                format!("{} is outside 1–{MAX_PAGE_LIMIT}", self.limit),
            ));
        }
        Ok(i64::from(self.limit))
    }
}

impl Default for PageRequest {
    /// The first page of 50.
    fn default() -> Self {
        PageRequest::first(50)
    }
}

/// One page of a list, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<Cursor>,
}

/// Whether soft-deleted rows are listed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeletedFilter {
    /// Only rows that are not soft-deleted (the default).
    #[default]
    Exclude,
    /// Only soft-deleted rows (a trash view).
    Only,
    /// Both.
    Include,
}

/// Which sandboxes to list; every `None` means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxFilter {
    /// Only this status.
    pub status: Option<SandboxStatus>,
    /// Only this project.
    pub project_id: Option<ProjectId>,
    /// Only this user's.
    pub user_id: Option<UserId>,
    /// Only this CLI tool.
    pub cli_tool: Option<String>,
    /// Soft-deleted or not.
    pub deleted: DeletedFilter,
    /// Only sandboxes of this workflow run ([`SandboxLinks::run_id`](crate::SandboxLinks)).
    pub run_id: Option<String>,
    /// Only sandboxes of this issue session
    /// ([`SandboxLinks::issue_session_id`](crate::SandboxLinks)).
    pub issue_session_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let id = Uuid::now_v7();
        let c = Cursor::encode(1_700_000_000_000_000, id);
        let parsed: Cursor = c.as_str().parse().unwrap();
        assert_eq!(parsed.decode().unwrap(), (1_700_000_000_000_000, id));
        let err = "nope".parse::<Cursor>().unwrap_err().to_string();
        assert!(err.contains("cursor"), "{err}");
    }

    #[test]
    fn limit_outside_range_names_the_field() {
        let err = PageRequest::first(0)
            .checked_limit()
            .unwrap_err()
            .to_string();
        assert!(err.contains("limit") && err.contains("1–500"), "{err}");
        assert_eq!(PageRequest::first(500).checked_limit().unwrap(), 500);
    }
}
