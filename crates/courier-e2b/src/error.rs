//! The crate's one error type and how every error body on the wire maps onto it.

use std::time::Duration;

use crate::codec::{Code, ConnectError, FrameError};

/// What was not found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotFoundKind {
    /// A sandbox (control plane 404).
    Sandbox,
    /// A file or directory inside a sandbox.
    File,
    /// A process inside a sandbox.
    Process,
    /// A template or template build (the template routes' 404).
    Template,
    /// A volume, or a path inside one.
    Volume,
}

impl std::fmt::Display for NotFoundKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NotFoundKind::Sandbox => "sandbox",
            NotFoundKind::File => "file",
            NotFoundKind::Process => "process",
            NotFoundKind::Template => "template",
            NotFoundKind::Volume => "volume",
        })
    }
}

/// Everything that can go wrong, in variants a caller can act on.
///
/// Secrets never appear in messages: API keys and tokens travel only in headers.
///
/// ```
/// use courier_e2b::{Error, NotFoundKind};
/// let err = Error::NotFound { kind: NotFoundKind::File, message: "path '/x' does not exist".into() };
/// assert_eq!(err.to_string(), "file not found: path '/x' does not exist");
/// assert!(err.is_not_found());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The API key or access token is missing or wrong (HTTP 401, `unauthenticated`).
    #[error("authentication failed: {message}")]
    Authentication {
        /// The server's explanation.
        message: String,
    },
    /// A sandbox, file or process does not exist.
    #[error("{kind} not found: {message}")]
    NotFound {
        /// What was missing.
        kind: NotFoundKind,
        /// The server's explanation.
        message: String,
    },
    /// The request or its deadline (`Connect-Timeout-Ms`) timed out.
    #[error("timed out: {message}")]
    Timeout {
        /// What timed out.
        message: String,
    },
    /// Too many requests (HTTP 429, `resource_exhausted`).
    #[error("rate limited: {message}")]
    RateLimited {
        /// The server's explanation.
        message: String,
        /// The server's `Retry-After`, when given.
        retry_after: Option<Duration>,
    },
    /// The request was rejected as malformed (HTTP 400, `invalid_argument`), or a local
    /// option is out of range.
    #[error("invalid argument: {message}")]
    InvalidArgument {
        /// What is wrong, naming the field.
        message: String,
    },
    /// A command finished with a non-zero exit code.
    #[error("command exited with code {exit_code}{}", error.as_deref().map(|e| format!(": {e}")).unwrap_or_default())]
    CommandExited {
        /// Everything the command wrote to stdout.
        stdout: String,
        /// Everything the command wrote to stderr.
        stderr: String,
        /// The exit code (-1 when killed by a signal).
        exit_code: i32,
        /// envd's error text (`exit status 3`, `signal: killed`).
        error: Option<String>,
    },
    /// The sandbox was killed, paused or reached its end of life (the proxy's 502
    /// "The sandbox was not found").
    #[error("sandbox is gone: {message}")]
    SandboxGone {
        /// The proxy's message.
        message: String,
    },
    /// A stream (a command's output, a watch) was cut mid-flight and the sandbox's health
    /// probe then confirmed it gone: the sandbox was killed or reached its end of life
    /// while the request was in flight (what the official SDKs report as "The sandbox
    /// was killed or reached its end of life").
    ///
    /// ```
    /// let err = courier_e2b::Error::SandboxKilled { message: "connection reset".into() };
    /// assert!(err.to_string().contains("killed or reached its end of life"));
    /// ```
    #[error(
        "the sandbox was killed or reached its end of life while the request was in flight: {message}"
    )]
    SandboxKilled {
        /// How the stream ended.
        message: String,
    },
    /// The server broke the protocol (bad framing, missing end-of-stream, bad JSON, a
    /// process stream without an end event).
    #[error("protocol error: {message}")]
    Protocol {
        /// What was wrong.
        message: String,
    },
    /// A template build ended in `error` ([`Templates::wait`](crate::Templates::wait)).
    #[error("template build {template_id}/{build_id} failed{}: {message}", step.as_deref().map(|s| format!(" at step {s}")).unwrap_or_default())]
    BuildFailed {
        /// The template.
        template_id: String,
        /// The build.
        build_id: String,
        /// The failed step as the provider names it (1-based index, or `base`/`finalize`).
        step: Option<String>,
        /// The provider's reason.
        message: String,
    },
    /// A git command of [`Git`](crate::envd::Git) failed for want of (valid)
    /// credentials.
    #[error("git authentication: {message}")]
    GitAuth {
        /// Which operation, and what to pass.
        message: String,
    },
    /// A git push or pull failed because the branch has no upstream.
    #[error("git upstream: {message}")]
    GitUpstream {
        /// Which operation, and what to pass.
        message: String,
    },
    /// The connection failed (DNS, TCP, TLS, reset).
    #[error("transport error: {0}")]
    Transport(#[source] reqwest::Error),
    /// Any other error status from the control plane, envd or a Connect call.
    #[error("API error {status}{}: {message}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Api {
        /// The HTTP status (for Connect errors, the status of the code).
        status: u16,
        /// The machine code: control-plane `error_code` or the Connect code name.
        code: Option<String>,
        /// The server's message.
        message: String,
    },
}

impl Error {
    /// Whether this is [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// The Connect code of a Connect error reported as [`Error::Api`], if any.
    ///
    /// ```
    /// use courier_e2b::Error;
    /// let err = Error::Api { status: 409, code: Some("already_exists".into()), message: "x".into() };
    /// assert_eq!(err.connect_code(), Some("already_exists"));
    /// ```
    pub fn connect_code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Error {
        Error::Protocol {
            message: message.into(),
        }
    }

    /// Maps a Connect error (unary body or end-of-stream trailer), §5.6.
    pub(crate) fn from_connect(error: ConnectError, kind: NotFoundKind) -> Error {
        let message = error.message;
        match error.code {
            Code::InvalidArgument => Error::InvalidArgument { message },
            Code::Unauthenticated => Error::Authentication { message },
            Code::NotFound => Error::NotFound { kind, message },
            Code::ResourceExhausted => Error::RateLimited {
                message,
                retry_after: None,
            },
            Code::Canceled | Code::DeadlineExceeded => Error::Timeout { message },
            Code::Unavailable if message.contains("was not found") => {
                Error::SandboxGone { message }
            }
            code => Error::Api {
                status: code.http_status(),
                code: Some(code.as_str().to_owned()),
                message,
            },
        }
    }

    /// Maps an envd plain-HTTP error (`{code, message}` JSON or text), §4.6.
    pub(crate) fn from_envd_http(status: u16, body: &[u8], kind: NotFoundKind) -> Error {
        let (message, error_code) = read_error_body(status, body);
        match status {
            400 => Error::InvalidArgument { message },
            401 => Error::Authentication { message },
            404 => Error::NotFound { kind, message },
            429 => Error::RateLimited {
                message,
                retry_after: None,
            },
            502 if message.contains("was not found") => Error::SandboxGone { message },
            _ => Error::Api {
                status,
                code: error_code,
                message,
            },
        }
    }

    /// Maps a control-plane error (`{code, message, error_code?}`), §3.2.
    pub(crate) fn from_api(status: u16, body: &[u8], retry_after: Option<Duration>) -> Error {
        let (message, error_code) = read_error_body(status, body);
        match status {
            400 => Error::InvalidArgument { message },
            401 => Error::Authentication { message },
            404 => Error::NotFound {
                kind: NotFoundKind::Sandbox,
                message,
            },
            429 => Error::RateLimited {
                message,
                retry_after,
            },
            502 if message.contains("was not found") => Error::SandboxGone { message },
            _ => Error::Api {
                status,
                code: error_code,
                message,
            },
        }
    }

    pub(crate) fn from_reqwest(error: reqwest::Error) -> Error {
        if error.is_timeout() {
            return Error::Timeout {
                message: error.to_string(),
            };
        }
        Error::Transport(error)
    }
}

impl From<FrameError> for Error {
    fn from(error: FrameError) -> Error {
        Error::Protocol {
            message: error.to_string(),
        }
    }
}

/// The `message` (and machine `error_code`, or a string Connect `code`) of an error body;
/// non-JSON bodies are used as text.
fn read_error_body(status: u16, body: &[u8]) -> (String, Option<String>) {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        let message = value
            .get("message")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        let code = value
            .get("error_code")
            .or_else(|| value.get("code").filter(|c| c.is_string()))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        if let Some(message) = message {
            return (message, code);
        }
    }
    let text = String::from_utf8_lossy(body).trim().to_owned();
    let text = if text.is_empty() {
        format!("HTTP status {status}")
    } else {
        text
    };
    (text, None)
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
