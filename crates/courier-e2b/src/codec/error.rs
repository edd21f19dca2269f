use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Code;

/// A Connect error: a code and a message, as found in a unary error body or an
/// end-of-stream trailer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ConnectError {
    /// What kind of failure.
    pub code: Code,
    /// What failed, for people.
    pub message: String,
}

#[derive(Serialize, Deserialize)]
struct WireError {
    code: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    message: String,
}

impl ConnectError {
    /// An error with this code and message.
    pub fn new(code: Code, message: impl Into<String>) -> ConnectError {
        ConnectError {
            code,
            message: message.into(),
        }
    }

    /// The JSON body of a unary error response.
    pub fn to_json(&self) -> Bytes {
        let wire = WireError {
            code: self.code.as_str().to_owned(),
            message: self.message.clone(),
        };
        Bytes::from(serde_json::to_vec(&wire).unwrap_or_default())
    }

    /// Reads a unary error response: the JSON body's code when it has one (an unknown code
    /// name reads as `unknown`, an integer `code` as an HTTP status), else the HTTP status.
    pub fn from_response(status: u16, body: &[u8]) -> ConnectError {
        let fallback = Code::from_http_status(status);
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
            let text = String::from_utf8_lossy(body).trim().to_owned();
            let message = if text.is_empty() {
                format!("HTTP status {status}")
            } else {
                text
            };
            return ConnectError::new(fallback, message);
        };
        let code = match value.get("code") {
            Some(serde_json::Value::String(name)) => name.parse().unwrap_or(Code::Unknown),
            Some(serde_json::Value::Number(n)) => n
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .map_or(fallback, Code::from_http_status),
            _ => fallback,
        };
        let message = value
            .get("message")
            .and_then(serde_json::Value::as_str)
            .map_or_else(|| format!("HTTP status {status}"), str::to_owned);
        ConnectError::new(code, message)
    }
}

/// The end-of-stream trailer: success, or the error that ended the stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndOfStream {
    /// The error, when the stream failed.
    pub error: Option<ConnectError>,
    /// Trailing metadata.
    pub metadata: BTreeMap<String, Vec<String>>,
}

#[derive(Serialize, Deserialize, Default)]
struct WireEnd {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<WireError>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    metadata: BTreeMap<String, Vec<String>>,
}

impl EndOfStream {
    /// A successful end.
    pub fn ok() -> EndOfStream {
        EndOfStream::default()
    }

    /// An end carrying `error`.
    pub fn error(error: ConnectError) -> EndOfStream {
        EndOfStream {
            error: Some(error),
            metadata: BTreeMap::new(),
        }
    }

    /// The JSON payload (always JSON, whatever the message codec).
    pub fn to_json(&self) -> Bytes {
        let wire = WireEnd {
            error: self.error.as_ref().map(|e| WireError {
                code: e.code.as_str().to_owned(),
                message: e.message.clone(),
            }),
            metadata: self.metadata.clone(),
        };
        Bytes::from(serde_json::to_vec(&wire).unwrap_or_default())
    }

    /// Parses a trailer payload.
    pub fn from_json(payload: &[u8]) -> Result<EndOfStream, ConnectError> {
        if payload.iter().all(u8::is_ascii_whitespace) {
            return Ok(EndOfStream::ok());
        }
        let wire: WireEnd = serde_json::from_slice(payload).map_err(|e| {
            ConnectError::new(
                Code::Internal,
                format!("malformed end-of-stream trailer: {e}"),
            )
        })?;
        Ok(EndOfStream {
            error: wire
                .error
                .map(|e| ConnectError::new(e.code.parse().unwrap_or(Code::Unknown), e.message)),
            metadata: wire.metadata,
        })
    }
}
