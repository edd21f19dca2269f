//! Which headers travel through the gateway: nothing of one hop, no credential the
//! sandbox sent, no compression that would hide an answer's usage.

use crate::{PROOF_HEADER, RUN_TOKEN_HEADER};

/// Headers that belong to one hop, or carry credentials that must not travel on.
pub(crate) fn forwardable(name: &http::HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "host"
            | "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
            | "authorization"
            | "x-api-key"
            | "cookie"
            // The answer must be readable for its usage: no compression.
            | "accept-encoding"
            | PROOF_HEADER
            | RUN_TOKEN_HEADER
    )
}

/// Headers of an answer passed back (the body is re-framed, so no length).
pub(crate) fn answer_header(name: &http::HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
            | "set-cookie"
    )
}
