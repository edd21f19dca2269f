//! The control plane's wire types, with the exact field names of the E2B API: what the
//! SDK sends and reads, and what `courier-sandboxd` reads and answers. Compiled without
//! the `client` feature (`default-features = false`), so a server shares them without the
//! HTTP client.
//!
//! Secrets in answers ([`SandboxRecord::envd_access_token`], ...) are
//! [`Secret`](courier_secret::Secret)s: masked in `Debug`, written raw on the wire through
//! `courier_secret::exposed`, because the caller needs them.
//!
//! ```
//! use courier_e2b::models::{SandboxState, Step};
//! assert_eq!(SandboxState::Paused.as_str(), "paused");
//! assert_eq!(Step::run("make").kind(), "RUN");
//! ```

mod dockerfile;
mod envd;
mod logs;
mod sandbox;
mod snapshot;
mod step;
mod template;
mod volume;

pub use dockerfile::InvalidDockerfile;
pub use envd::EnvdInit;
pub use logs::{AutoResume, LogLevel, SandboxLogEntry, SandboxLogs, SandboxesWithMetrics};
pub use sandbox::{
    Lifecycle, ListedSandbox, NetworkConfig, NetworkRule, NetworkTransform, NetworkUpdate,
    NewSandbox, SandboxDetail, SandboxMetric, SandboxRecord, SandboxState, VolumeMount,
};
pub use snapshot::{
    ErrorBody, ForkRequest, ForkResult, PauseRequest, SnapshotInfo, SnapshotRequest,
};
pub use step::{InvalidStep, SUPPORTED_STEPS, Step, TemplateStep, valid_files_hash};
pub use template::{
    AssignTags, AssignedTags, BuildLogEntry, BuildLogs, BuildReason, BuildRequest, BuildRequested,
    BuildState, BuildStatus, Recipe, RemoveTags, TemplateBuild, TemplateInfo, TemplateTag,
    TemplateUpdate, TemplateUpdated, TemplateWithBuilds,
};
pub use volume::{NewVolume, VolumeAndToken, VolumeEntryStat, VolumeFileType, VolumeInfo};
