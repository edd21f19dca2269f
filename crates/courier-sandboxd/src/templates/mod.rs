//! Templates: named sets of read-only layers a sandbox starts from, with default limits,
//! environment, user and working directory.
//!
//! `base` (alias `base`) is assembled from the host's system directories by
//! [`crate::base_layer`] into `<data_dir>/layers/base`. Every other template is built
//! from a recipe through E2B's template build API ([`build`]): a parent template plus
//! steps (RUN, ENV, WORKDIR, USER, COPY) run once in a build sandbox, whose writes are
//! captured as one new read-only layer ([`crate::runtime::Runtime::capture_layer`]). A
//! built template's layers are its parent's plus that layer, so templates stack.
//!
//! On disk (every JSON file written atomically: temp file + rename):
//!
//! ```text
//! <data_dir>/templates/<templateID>/template.json        a TemplateRecord
//!                                  /builds/<buildID>.json  a BuildRecord
//!                                  /builds/<buildID>.log   its log, one JSON entry a line
//!                                  /files/<hash>           archives uploaded for COPY steps
//!                                                          (until no build of the template
//!                                                          waits or runs; see [`uploads`])
//! <data_dir>/layers/<templateID>/<buildID>/               the captured layer
//! ```
//!
//! A build that a restart interrupted becomes `error` ("interrupted by a server
//! restart") when the store opens again, and its half-made layer is removed.
//!
//! Deleting a template is refused for `base`, while one of its builds runs, while a
//! sandbox runs from it, and while another template is built on it (its layers are part
//! of that template's stack); the caller deletes the dependants first.

pub mod build;
mod names;
mod store;
#[cfg(test)]
mod tests;
pub mod uploads;

pub use names::parse_name;
pub use store::Templates;

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::runtime::Isolation;

/// The id (and alias) of the built-in template.
pub const BASE_TEMPLATE: &str = "base";
/// Default CPU count of templates that name none.
pub const DEFAULT_CPU_COUNT: u32 = 2;
/// Default memory of templates that name none, in MiB.
pub const DEFAULT_MEMORY_MB: u64 = 1024;
/// Disk size reported for sandboxes, in MiB.
const DISK_SIZE_MB: u64 = 4096;
/// Most log entries one status call returns (what the official SDKs expect).
pub const MAX_LOG_ENTRIES: usize = 100;
/// Most tags one template may carry: each may pin an older build's layers on disk, so
/// their number is bounded.
pub const MAX_TAGS: usize = 64;

/// One template, as sandboxes and the API see it.
#[derive(Debug, Clone)]
pub struct Template {
    /// Its id.
    pub id: String,
    /// Names that resolve to it (`base`, or the name it was built under).
    pub aliases: Vec<String>,
    /// Its tags (`default` plus those given at build).
    pub tags: Vec<String>,
    /// Its read-only layers, bottom first; empty while no build of it is ready.
    pub layers: Vec<PathBuf>,
    /// Default CPU count of its sandboxes.
    pub cpu_count: u32,
    /// Default memory of its sandboxes, in MiB.
    pub memory_mb: u64,
    /// Size of its sandboxes' disks (their writable layer), in MiB.
    pub disk_size_mb: u64,
    /// How its sandboxes are isolated; `None` = the server's default.
    pub isolation: Option<Isolation>,
    /// When it was first requested (or, for `base`, its layer assembled).
    pub created_at: DateTime<Utc>,
    /// When it last changed (a build requested or finished).
    pub updated_at: DateTime<Utc>,
    /// Its latest build (the ready one when there is one, else the newest).
    pub build_id: String,
    /// Status of that build.
    pub build_status: BuildState,
    /// How many builds it has had.
    pub build_count: u64,
    /// Environment of its sandboxes (ENV steps, its parent's included).
    pub envs: BTreeMap<String, String>,
    /// Default user of its sandboxes (last USER step); `None` = `user`.
    pub user: Option<String>,
    /// Default working directory of its sandboxes (last WORKDIR step); `None` = home.
    pub workdir: Option<String>,
    /// Command started in the background in each of its sandboxes at create (`startCmd`).
    pub start_cmd: Option<String>,
    /// Command that must succeed before a create returns (`readyCmd`), retried for up to
    /// [`build::READY_TIMEOUT`].
    pub ready_cmd: Option<String>,
    /// Whether every API key may see and use it (E2B's `public`); `base` is.
    pub public: bool,
    /// The API key that made it ([`crate::keys::owner_of`]); `None` for `base`, pulled
    /// images and templates recorded before owners were (any key may manage those).
    pub owner: Option<String>,
}

impl Template {
    /// Whether sandboxes can start from it (a build of it is ready).
    pub fn is_ready(&self) -> bool {
        !self.layers.is_empty()
    }

    /// Whether the API key `owner` may manage it (rebuild, update, tag, delete, read its
    /// builds): it is that key's, or it has no owner.
    pub fn owned_by(&self, owner: &str) -> bool {
        self.owner.as_deref().is_none_or(|o| o == owner)
    }

    /// Whether the API key `owner` may see it and start sandboxes from it: it is public
    /// or that key's (see [`owned_by`](Self::owned_by)).
    pub fn visible_to(&self, owner: &str) -> bool {
        self.public || self.owned_by(owner)
    }
}

/// Sandbox settings a build request may give its template (`None`: keep / default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BuildSettings {
    /// Default CPU count of its sandboxes (1..=64).
    pub cpu_count: Option<u32>,
    /// Default memory of its sandboxes, MiB (128..=65536).
    pub memory_mb: Option<u64>,
    /// Disk size of its sandboxes, MiB.
    pub disk_size_mb: Option<u64>,
    /// How its sandboxes are isolated.
    pub isolation: Option<Isolation>,
}

/// Where a build is: the SDK's state, one type on both sides of the wire.
pub use courier_e2b::models::BuildState;

/// Level of a build log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Details.
    Debug,
    /// Progress and command output.
    Info,
    /// Something odd that did not stop the build.
    Warn,
    /// What stopped the build.
    Error,
}

/// One build log line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// When it was logged.
    pub timestamp: DateTime<Utc>,
    /// Its level.
    pub level: LogLevel,
    /// The text (one line).
    pub message: String,
    /// The step it belongs to: `base` (setting up), `1`.. (the recipe's steps, in
    /// order, as the SDKs number them), `finalize` (capturing the layer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

/// Why a build failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildReason {
    /// What happened, naming the step.
    pub message: String,
    /// The failed step (see [`LogEntry::step`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

/// What a ready build made (persisted in the template record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuiltVersion {
    /// The build.
    pub build_id: String,
    /// The template's layers: its parent's plus the build's own, bottom first.
    pub layers: Vec<PathBuf>,
    /// Environment of the template's sandboxes.
    pub envs: BTreeMap<String, String>,
    /// Default user, if a USER step (here or in the parent) set one.
    pub user: Option<String>,
    /// Default working directory, if a WORKDIR step set one.
    pub workdir: Option<String>,
    /// Started in the background in each of its sandboxes at create.
    #[serde(default)]
    pub start_cmd: Option<String>,
    /// Run until it succeeds (bounded) before a create of its sandboxes returns.
    #[serde(default)]
    pub ready_cmd: Option<String>,
    /// What it was built from (parent layers, steps, start and ready commands, hashed):
    /// a later build of the template with the same key reuses this version's layer
    /// unless it asks to skip the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe_key: Option<String>,
}

/// A built template's persisted record (`template.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateRecord {
    /// Its id.
    pub id: String,
    /// Its name (its one alias).
    pub name: String,
    /// Tags given before tags named builds (read from older records only, then moved to
    /// [`tag_builds`](Self::tag_builds)); written empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Its tags: each names one ready build (`name:tag` starts sandboxes from it).
    #[serde(default)]
    pub tag_builds: BTreeMap<String, TagRecord>,
    /// Ready versions older than [`ready`](Self::ready) that a tag still names (their
    /// layers are kept while it does).
    #[serde(default)]
    pub tagged_versions: Vec<BuiltVersion>,
    /// Default CPU count of its sandboxes.
    pub cpu_count: u32,
    /// Default memory of its sandboxes, MiB.
    pub memory_mb: u64,
    /// Size of its sandboxes' disks, MiB (`None`: the default).
    #[serde(default)]
    pub disk_size_mb: Option<u64>,
    /// How its sandboxes are isolated (`None`: the server's default).
    #[serde(default)]
    pub isolation: Option<Isolation>,
    /// When it was first requested.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Its builds, oldest first.
    pub builds: Vec<String>,
    /// The version sandboxes start from (the latest ready build).
    pub ready: Option<BuiltVersion>,
    /// Whether every API key may see and use it (`PATCH /templates/{id}` sets it).
    #[serde(default)]
    pub public: bool,
    /// The API key that requested its first build ([`crate::keys::owner_of`]); `None`
    /// in records from before owners were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// What one tag names (persisted in the template record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRecord {
    /// The build it names.
    pub build_id: String,
    /// When it was assigned (to this build).
    pub created_at: DateTime<Utc>,
}

/// One tag of a template, as `GET /templates/{id}/tags` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagView {
    /// The tag.
    pub tag: String,
    /// The build it names.
    pub build_id: String,
    /// When it was assigned.
    pub created_at: DateTime<Utc>,
}

/// A build's persisted record (`builds/<buildID>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildRecord {
    /// The template it builds.
    pub template_id: String,
    /// Its id.
    pub build_id: String,
    /// Where it is.
    pub status: BuildState,
    /// When it was requested.
    pub created_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// The parent template (once started).
    pub from_template: Option<String>,
    /// Why it failed.
    pub reason: Option<BuildReason>,
    /// The tags it takes once ready (`name:tag` and the request's `tags`, else
    /// `default`).
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A build's status and a page of its log (`GET .../status`).
#[derive(Debug, Clone, PartialEq)]
pub struct BuildView {
    /// The build record.
    pub record: BuildRecord,
    /// Log entries from the requested offset (at most [`MAX_LOG_ENTRIES`]).
    pub entries: Vec<LogEntry>,
}

/// What `POST /v3/templates` answers.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestedBuild {
    /// The template (new, or the existing one of that name).
    pub template_id: String,
    /// The new build.
    pub build_id: String,
    /// The template's name.
    pub name: String,
    /// Its tags.
    pub tags: Vec<String>,
}
