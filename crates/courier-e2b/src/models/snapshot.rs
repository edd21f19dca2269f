//! Snapshot, fork and pause shapes (`POST /sandboxes/{id}/snapshots`, `GET /snapshots`,
//! `POST /sandboxes/{id}/fork`, `POST /sandboxes/{id}/pause`), with E2B's field names.

use serde::{Deserialize, Serialize};

use super::SandboxRecord;

/// Body of `POST /sandboxes/{id}/snapshots` (`SandboxSnapshotRequest`).
///
/// ```
/// use courier_e2b::models::SnapshotRequest;
/// let body = SnapshotRequest { name: Some("ready".into()) };
/// assert_eq!(serde_json::to_string(&body).unwrap(), r#"{"name":"ready"}"#);
/// assert_eq!(serde_json::to_string(&SnapshotRequest::default()).unwrap(), "{}");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRequest {
    /// A name to find the snapshot by; taking one under a name used before replaces that
    /// snapshot (same id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A snapshot (`SnapshotInfo`): its id, a `templateID` creates accept, and its names.
///
/// ```
/// let json = r#"{"snapshotID":"snap_0123456789abcdef","names":["ready"]}"#;
/// let info: courier_e2b::models::SnapshotInfo = serde_json::from_str(json).unwrap();
/// assert_eq!(info.snapshot_id, "snap_0123456789abcdef");
/// assert_eq!(info.names, ["ready"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// The snapshot's id.
    #[serde(rename = "snapshotID")]
    pub snapshot_id: String,
    /// Its names (empty when it was taken without one).
    #[serde(default)]
    pub names: Vec<String>,
}

/// Body of `POST /sandboxes/{id}/fork` (`SandboxForkRequest`).
///
/// ```
/// use courier_e2b::models::ForkRequest;
/// let body = ForkRequest { timeout: Some(60), count: Some(2) };
/// assert_eq!(serde_json::to_string(&body).unwrap(), r#"{"timeout":60,"count":2}"#);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkRequest {
    /// Time to live of each fork in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// How many forks (1..=100, default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
}

/// The API's error body (`Error`): a status code and a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The HTTP status the failure corresponds to.
    pub code: u16,
    /// What went wrong.
    pub message: String,
}

/// One fork's outcome (`SandboxForkResult`): exactly one of `sandbox` and `error`.
///
/// ```
/// let json = r#"[{"error":{"code":429,"message":"full"}}]"#;
/// let results: Vec<courier_e2b::models::ForkResult> = serde_json::from_str(json).unwrap();
/// assert!(results[0].sandbox.is_none());
/// assert_eq!(results[0].error.as_ref().unwrap().code, 429);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForkResult {
    /// The started fork.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxRecord>,
    /// Why this fork did not start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// Body of `POST /sandboxes/{id}/pause` (`SandboxPauseRequest`).
///
/// ```
/// use courier_e2b::models::PauseRequest;
/// let body = PauseRequest { memory: Some(false) };
/// assert_eq!(serde_json::to_string(&body).unwrap(), r#"{"memory":false}"#);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseRequest {
    /// Keep memory (`true`, the default: the sandbox is frozen) or only the filesystem
    /// (`false`: processes end, resume reboots it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<bool>,
}
