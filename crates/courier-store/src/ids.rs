//! Typed ids: UUID v7, so they sort by creation time and index well.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::StoreError;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident, $entity:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh time-ordered (v7) id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps an existing UUID (e.g. one read from a URL).
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The underlying UUID.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = StoreError;

            fn from_str(s: &str) -> Result<Self, StoreError> {
                Uuid::parse_str(s).map(Self).map_err(|e| {
                    StoreError::invalid(concat!($entity, " id"), format!("`{s}` is not a UUID: {e}"))
                })
            }
        }
    };
}

id_type!(
    /// Identifies a user.
    UserId, "user"
);
id_type!(
    /// Identifies a project.
    ProjectId, "project"
);
id_type!(
    /// Identifies a sandbox (Courier's own id, not the provider's).
    SandboxId, "sandbox"
);
id_type!(
    /// Identifies a sandbox message.
    MessageId, "message"
);
id_type!(
    /// Identifies a stored provider key.
    ProviderKeyId, "provider key"
);
id_type!(
    /// Identifies a learning.
    LearningId, "learning"
);
id_type!(
    /// Identifies a compiled learning version.
    LearningVersionId, "learning version"
);
id_type!(
    /// Identifies a template build.
    TemplateBuildId, "template build"
);
id_type!(
    /// Identifies a usage record.
    UsageRecordId, "usage record"
);
id_type!(
    /// Identifies a cost rate.
    CostRateId, "cost rate"
);
id_type!(
    /// Identifies an agent persona of a project.
    PersonaId, "persona"
);
id_type!(
    /// Identifies a workflow run (designer, checker, optimizer steps over iterations).
    WorkflowRunId, "workflow run"
);
id_type!(
    /// Identifies one step of a workflow run.
    WorkflowStepId, "workflow step"
);
id_type!(
    /// Identifies a work chain (workflow runs one after another on one branch).
    WorkChainId, "work chain"
);
id_type!(
    /// Identifies an issue-finding session.
    IssueSessionId, "issue session"
);
id_type!(
    /// Identifies an issue card found by an issue session.
    IssueCardId, "issue card"
);
