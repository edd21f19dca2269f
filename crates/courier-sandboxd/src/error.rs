//! The crate's one error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while creating, controlling or cleaning up a sandbox.
///
/// Each variant names what failed, so a caller can tell bad input (`InvalidSpec`) from a
/// missing sandbox (`NotFound`) from a host problem (`Io`, `Sys`, `Cgroup`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The sandbox specification was rejected before anything was created.
    #[error("invalid sandbox spec: {field}: {reason}")]
    InvalidSpec {
        /// The offending field (`id`, `layers`, `limits.memory_mb`, ...).
        field: &'static str,
        /// Why it was rejected, including the allowed range where there is one.
        reason: String,
    },
    /// A sandbox with this id already exists in this data dir.
    #[error("sandbox {0} already exists")]
    AlreadyExists(String),
    /// No sandbox with this id is known to the runtime.
    #[error("sandbox {0} not found")]
    NotFound(String),
    /// The sandbox exists but its init process is gone (it exited or was killed).
    #[error("sandbox {0} is not running")]
    NotRunning(String),
    /// The feature is not available in this build or on this host.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A file-system operation on a host path failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What we were doing (`create dir`, `read`, `write`, `remove`...).
        op: &'static str,
        /// The host path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A system call made on the host side failed.
    #[error("{op}: {source}")]
    Sys {
        /// The call and its target (`spawn helper`, `setns`, ...).
        op: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A cgroup operation failed (create, limit, freeze, kill or remove).
    #[error("cgroup {op} {path}: {reason}")]
    Cgroup {
        /// The operation.
        op: &'static str,
        /// The cgroup directory or control file.
        path: PathBuf,
        /// Why it failed.
        reason: String,
    },
    /// The sandbox helper failed while setting up the sandbox (mounts, pivot_root, exec of
    /// the init program...). The message is the helper's own report.
    #[error("sandbox {id} setup failed: {message}")]
    Setup {
        /// The sandbox id.
        id: String,
        /// The helper's report, e.g. `exec /bin/envd: No such file or directory`.
        message: String,
    },
    /// The create request named a template this server does not have.
    #[error("template {0} not found")]
    UnknownTemplate(String),
    /// The request conflicts with the sandbox's state (e.g. pausing a paused sandbox).
    #[error("{0}")]
    Conflict(String),
    /// The sandbox started but its envd did not become ready (or rejected `/init`).
    #[error("sandbox {id}: envd: {message}")]
    Envd {
        /// The sandbox id.
        id: String,
        /// What went wrong, e.g. `envd not ready after 30s: ...`.
        message: String,
    },
    /// A memory checkpoint of a running sandbox failed (it runs on); the message says
    /// which step and why, e.g. runsc's first line.
    #[error("sandbox {id}: memory checkpoint: {message}")]
    Checkpoint {
        /// The sandbox id.
        id: String,
        /// What failed.
        message: String,
    },
    /// An egress rule (`network.allowOut[2]`, `denyOut[0]`...) was rejected; the error
    /// names the field with its index and what is allowed.
    #[error("invalid network rule: {0}")]
    InvalidEgressRule(#[from] crate::egress::RuleError),
    /// A `network.rules` transform was rejected; the error names the field (host, rule,
    /// header) and what is allowed, never a header value.
    #[error("invalid network transform rule: {0}")]
    InvalidTransformRule(#[from] crate::egress::TransformError),
    /// The server's configuration is unusable (e.g. no envd binary).
    #[error("configuration: {0}")]
    Config(String),
    /// The server is at capacity: the create would go past a server-wide limit (see
    /// [`crate::limits`]). Nothing was created.
    #[error(transparent)]
    Capacity(#[from] crate::limits::CapacityExceeded),
    /// Persisted sandbox state could not be read or written.
    #[error("sandbox state {path}: {reason}")]
    State {
        /// The state file.
        path: PathBuf,
        /// Why it failed.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }

    pub(crate) fn sys(op: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let op = op.into();
        move |source| Error::Sys { op, source }
    }
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
