//! The crate's one error type, and how it maps to Connect codes and HTTP statuses.

use std::io;

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use courier_e2b::codec::{Code, ConnectError};

/// Everything that can go wrong while serving a request.
///
/// Each variant says what the caller can do about it; [`Error::code`] maps it to the
/// Connect code the E2B SDKs turn into their exception types.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or names something that cannot be used (bad path, bad body).
    #[error("{0}")]
    InvalidArgument(String),
    /// A file, directory, process or watcher does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The thing to create exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The operating system refused the operation.
    #[error("{0}")]
    PermissionDenied(String),
    /// No or a wrong access token, signature or user name.
    #[error("{0}")]
    Unauthenticated(String),
    /// The target is in a state that does not allow this (stdin closed, no PTY, ...).
    #[error("{0}")]
    FailedPrecondition(String),
    /// An upload is bigger than the configured limit.
    #[error("{0}")]
    TooLarge(String),
    /// The disk is full.
    #[error("{0}")]
    NoSpace(String),
    /// The request's deadline (`Connect-Timeout-Ms`) passed.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// Anything else; the message says what failed.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// Wraps an I/O error, naming what was being done, with the code its kind implies.
    pub fn io(what: impl std::fmt::Display, err: &io::Error) -> Error {
        let message = format!("{what}: {err}");
        match err.kind() {
            io::ErrorKind::NotFound => Error::NotFound(message),
            io::ErrorKind::PermissionDenied => Error::PermissionDenied(message),
            io::ErrorKind::AlreadyExists => Error::AlreadyExists(message),
            io::ErrorKind::InvalidInput
            | io::ErrorKind::InvalidFilename
            | io::ErrorKind::NotADirectory
            | io::ErrorKind::IsADirectory
            | io::ErrorKind::DirectoryNotEmpty => Error::InvalidArgument(message),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Error::NoSpace(message),
            _ => Error::Internal(message),
        }
    }

    /// The Connect code for this error.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::TooLarge(_) | Error::NoSpace(_) => Code::ResourceExhausted,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::Internal(_) => Code::Internal,
        }
    }

    /// The HTTP status for plain-HTTP endpoints (`/files`, `/init`, ...), as envd answers.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::TooLarge(_) => 413,
            Error::NoSpace(_) => 507,
            other => other.code().http_status(),
        }
    }

    /// The Connect form, for RPC responses.
    pub fn to_connect(&self) -> ConnectError {
        ConnectError::new(self.code(), self.to_string())
    }
}

impl From<ConnectError> for Error {
    fn from(err: ConnectError) -> Error {
        match err.code {
            Code::InvalidArgument | Code::OutOfRange => Error::InvalidArgument(err.message),
            Code::NotFound => Error::NotFound(err.message),
            Code::AlreadyExists => Error::AlreadyExists(err.message),
            Code::PermissionDenied => Error::PermissionDenied(err.message),
            Code::Unauthenticated => Error::Unauthenticated(err.message),
            Code::FailedPrecondition => Error::FailedPrecondition(err.message),
            Code::ResourceExhausted => Error::TooLarge(err.message),
            Code::DeadlineExceeded => Error::DeadlineExceeded(err.message),
            _ => Error::Internal(err.message),
        }
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A JSON error response `{"code": <status>, "message": "..."}`, as envd's HTTP API sends.
pub(crate) fn json_error(err: &Error) -> Response {
    let status =
        StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::json!({ "code": status.as_u16(), "message": err.to_string() });
    (status, Json(body)).into_response()
}
