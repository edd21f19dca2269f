//! Sandbox logs (`GET /v2/sandboxes/{id}/logs`) and the several-sandboxes metrics answer
//! (`GET /sandboxes/metrics`), with the exact field names of the E2B API.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::SandboxMetric;

/// E2B's `LogLevel`, least to most severe.
///
/// ```
/// use courier_e2b::models::LogLevel;
/// assert!(LogLevel::Warn > LogLevel::Info);
/// assert_eq!(serde_json::to_string(&LogLevel::Error).unwrap(), r#""error""#);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// `debug`.
    Debug,
    /// `info`.
    Info,
    /// `warn`.
    Warn,
    /// `error`.
    Error,
}

impl LogLevel {
    /// The wire name.
    ///
    /// ```
    /// assert_eq!(courier_e2b::models::LogLevel::Warn.as_str(), "warn");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// One sandbox log entry (E2B's `SandboxLogEntry`).
///
/// ```
/// let json = r#"{"timestamp":"2026-01-01T00:00:00Z","level":"info","message":"sandbox created","fields":{"source":"sandboxd"}}"#;
/// let entry: courier_e2b::models::SandboxLogEntry = serde_json::from_str(json).unwrap();
/// assert_eq!(entry.fields["source"], "sandboxd");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxLogEntry {
    /// When it happened.
    pub timestamp: DateTime<Utc>,
    /// Its level.
    pub level: LogLevel,
    /// What happened.
    pub message: String,
    /// Structured fields (courier-sandboxd writes `source`: `sandboxd` or `envd`, and
    /// `event` for lifecycle events).
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

/// The answer of `GET /v2/sandboxes/{id}/logs` (`SandboxLogsV2Response`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SandboxLogs {
    /// The entries, in the order the query asked for.
    #[serde(default)]
    pub logs: Vec<SandboxLogEntry>,
}

/// The answer of `GET /sandboxes/metrics` (`SandboxesWithMetrics`): the newest sample of
/// each running sandbox asked for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SandboxesWithMetrics {
    /// Sandbox id to its newest sample.
    #[serde(default)]
    pub sandboxes: HashMap<String, SandboxMetric>,
}

/// `autoResume` on create (E2B's `SandboxAutoResumeConfig`).
///
/// ```
/// let on = courier_e2b::models::AutoResume { enabled: true };
/// assert_eq!(serde_json::to_string(&on).unwrap(), r#"{"enabled":true}"#);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoResume {
    /// Whether traffic reaching the paused sandbox resumes it.
    pub enabled: bool,
}
