//! The error of one step of the helper's work (assembling a root, entering it, capturing
//! a disk). The helper reports it to the runtime as its `error <message>` status line,
//! which a caller of `create` sees in [`crate::Error::Setup`].

use std::io;

/// A step of the helper's work that failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StepError {
    /// A system call or file operation failed.
    #[error("{step}: {source}")]
    Os {
        /// What the helper was doing, with its target (`mount /proc`, `open /etc`...).
        step: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The step was refused without an operating system error (a path that leaves the
    /// sandbox's root, a task that makes no sense...).
    #[error("{0}")]
    Refused(String),
    /// A step shared with the runtime's side failed with the crate's error.
    #[error(transparent)]
    Runtime(#[from] crate::error::Error),
}

impl StepError {
    /// Wraps the OS error of `step` (for `map_err`).
    pub(crate) fn os<E: Into<io::Error>>(step: impl Into<String>) -> impl FnOnce(E) -> StepError {
        let step = step.into();
        move |source| StepError::Os {
            step,
            source: source.into(),
        }
    }

    /// A step refused for `reason`.
    pub(crate) fn refused(reason: impl Into<String>) -> StepError {
        StepError::Refused(reason.into())
    }
}
