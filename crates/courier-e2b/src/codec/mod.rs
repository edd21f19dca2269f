//! The Connect-RPC codec, shared by the client in this crate and the server in
//! `courier-envd`: message encoding in JSON or protobuf, stream envelopes, end-of-stream
//! trailers and the error codes.
//!
//! ```
//! use courier_e2b::codec::{Codec, Envelope, EnvelopeDecoder};
//! use courier_e2b::proto::process::ProcessSelector;
//!
//! let msg = ProcessSelector { selector: Some(courier_e2b::proto::process::process_selector::Selector::Pid(7)) };
//! let frame = Envelope::message(Codec::Json.encode(&msg)).to_bytes();
//! let mut decoder = EnvelopeDecoder::new(1 << 20);
//! decoder.push(&frame);
//! let envelope = decoder.next_envelope().unwrap().unwrap();
//! let back: ProcessSelector = Codec::Json.decode(&envelope.payload).unwrap();
//! assert_eq!(back, msg);
//! ```

mod code;
mod envelope;
mod error;

pub use code::{Code, UnknownCode};
pub use envelope::{
    COMPRESSED_FLAG, DEFAULT_MAX_MESSAGE_SIZE, END_STREAM_FLAG, Envelope, EnvelopeDecoder,
    FrameError,
};
pub use error::{ConnectError, EndOfStream};

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

/// A message type that travels over Connect in either codec.
pub trait RpcMessage:
    prost::Message + Serialize + DeserializeOwned + Default + Send + 'static
{
}
impl<T> RpcMessage for T where
    T: prost::Message + Serialize + DeserializeOwned + Default + Send + 'static
{
}

/// How messages are encoded on the wire.
///
/// The official SDKs send JSON; every envd (E2B's and ours) also speaks protobuf, which is
/// smaller and several times faster to decode, so this crate defaults to [`Codec::Proto`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Codec {
    /// `application/proto` and `application/connect+proto`.
    #[default]
    Proto,
    /// `application/json` and `application/connect+json` (protojson).
    Json,
}

impl Codec {
    /// The `Content-Type` of a unary request or response.
    pub fn unary_content_type(self) -> &'static str {
        match self {
            Codec::Proto => "application/proto",
            Codec::Json => "application/json",
        }
    }

    /// The `Content-Type` of a streaming request or response.
    pub fn stream_content_type(self) -> &'static str {
        match self {
            Codec::Proto => "application/connect+proto",
            Codec::Json => "application/connect+json",
        }
    }

    /// The codec a `Content-Type` header names, with whether it is a streaming one, or
    /// `None` for anything else. Parameters such as `; charset=utf-8` are ignored.
    ///
    /// ```
    /// use courier_e2b::codec::Codec;
    /// assert_eq!(Codec::from_content_type("application/json; charset=utf-8"), Some((Codec::Json, false)));
    /// assert_eq!(Codec::from_content_type("application/connect+proto"), Some((Codec::Proto, true)));
    /// assert_eq!(Codec::from_content_type("text/plain"), None);
    /// ```
    pub fn from_content_type(value: &str) -> Option<(Codec, bool)> {
        let essence = value
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/proto" | "application/protobuf" => Some((Codec::Proto, false)),
            "application/json" => Some((Codec::Json, false)),
            "application/connect+proto" => Some((Codec::Proto, true)),
            "application/connect+json" => Some((Codec::Json, true)),
            _ => None,
        }
    }

    /// Encodes a message.
    pub fn encode<M: RpcMessage>(self, message: &M) -> Bytes {
        match self {
            Codec::Proto => Bytes::from(message.encode_to_vec()),
            // Serializing generated types into a Vec cannot fail: every field is a plain
            // value or map with string keys.
            Codec::Json => Bytes::from(serde_json::to_vec(message).unwrap_or_default()),
        }
    }

    /// Decodes a message; an empty JSON body is read as the empty message, as connect-go does.
    pub fn decode<M: RpcMessage>(self, payload: &[u8]) -> Result<M, ConnectError> {
        match self {
            Codec::Proto => M::decode(payload).map_err(|e| {
                ConnectError::new(
                    Code::InvalidArgument,
                    format!("malformed protobuf message: {e}"),
                )
            }),
            Codec::Json if payload.iter().all(u8::is_ascii_whitespace) => Ok(M::default()),
            Codec::Json => serde_json::from_slice(payload).map_err(|e| {
                ConnectError::new(
                    Code::InvalidArgument,
                    format!("malformed JSON message: {e}"),
                )
            }),
        }
    }
}
