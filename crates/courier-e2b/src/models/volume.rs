//! Volumes (E2B's `/volumes` and the volume content API).

use chrono::{DateTime, Utc};
use courier_secret::Secret;
use serde::{Deserialize, Serialize};

/// `Volume`: a volume as `GET /volumes` lists it.
///
/// ```
/// let v: courier_e2b::models::VolumeInfo =
///     serde_json::from_str(r#"{"volumeID": "v1", "name": "data"}"#).unwrap();
/// assert_eq!((v.volume_id.as_str(), v.name.as_str()), ("v1", "data"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    /// Its id.
    #[serde(rename = "volumeID")]
    pub volume_id: String,
    /// Its name (unique per team / API key).
    pub name: String,
}

/// `VolumeAndToken`: a volume with the token of its content API (create, get).
///
/// ```
/// let v: courier_e2b::models::VolumeAndToken = serde_json::from_str(
///     r#"{"volumeID": "v1", "name": "data", "token": "vol_secret"}"#,
/// ).unwrap();
/// assert_eq!(v.token.expose(), "vol_secret");
/// assert!(!format!("{v:?}").contains("vol_secret"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeAndToken {
    /// Its id.
    #[serde(rename = "volumeID")]
    pub volume_id: String,
    /// Its name.
    pub name: String,
    /// `Authorization: Bearer` of the content API.
    #[serde(with = "courier_secret::exposed")]
    pub token: Secret,
    /// E2B's BYOC domain of the content API (`https://api.<domain>`); `None` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// `NewVolume` (`POST /volumes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewVolume {
    /// `^[a-zA-Z0-9_-]+$`.
    pub name: String,
}

/// What a volume entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeFileType {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link (never followed by the content API).
    Symlink,
    /// Anything else (FIFO, socket...).
    #[serde(other)]
    Unknown,
}

/// `VolumeEntryStat`: one entry of a volume.
///
/// ```
/// use courier_e2b::models::{VolumeEntryStat, VolumeFileType};
/// let e: VolumeEntryStat = serde_json::from_str(r#"{"name": "a.txt", "type": "file",
///     "path": "/a.txt", "size": 5, "mode": 420, "uid": 1000, "gid": 1000,
///     "atime": "2026-01-01T00:00:00Z", "mtime": "2026-01-01T00:00:00Z",
///     "ctime": "2026-01-01T00:00:00Z"}"#).unwrap();
/// assert_eq!((e.kind, e.size, e.mode), (VolumeFileType::File, 5, 0o644));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeEntryStat {
    /// Base name.
    pub name: String,
    /// What it is.
    #[serde(rename = "type")]
    pub kind: VolumeFileType,
    /// Absolute path in the volume.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Access time.
    pub atime: DateTime<Utc>,
    /// Modification time.
    pub mtime: DateTime<Utc>,
    /// Status change time.
    pub ctime: DateTime<Utc>,
    /// A symlink's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}
