//! Who is asking: the access token (`X-Access-Token`), v1 signed `/files` URLs, and the
//! Unix user chosen by `Authorization: Basic base64("<user>:")`.

use base64::Engine as _;
use http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::Error;

/// The header carrying the access token.
pub const ACCESS_TOKEN_HEADER: &str = "x-access-token";

/// What a signed URL allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `GET /files`.
    Read,
    /// `POST /files`.
    Write,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Write => "write",
        }
    }
}

/// The v1 signature of a `/files` URL (§4.3):
/// `"v1_" + base64_nopad(sha256("<path>:<op>:<user>:<token>[:<expiration>]"))`.
///
/// ```
/// use courier_envd::auth::{sign, Operation};
/// let sig = sign("a.txt", Operation::Read, "", "secret", None);
/// assert!(sig.starts_with("v1_") && !sig.ends_with('='));
/// ```
pub fn sign(path: &str, op: Operation, user: &str, token: &str, expiration: Option<i64>) -> String {
    let mut text = format!("{path}:{}:{user}:{token}", op.as_str());
    if let Some(exp) = expiration {
        text.push_str(&format!(":{exp}"));
    }
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "v1_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

/// Compares secrets without an early exit, so timing does not reveal a matching prefix.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The message envd answers when the token is missing or wrong.
pub const UNAUTHORIZED: &str =
    "unauthorized access, please provide a valid access token or method signing if supported";

/// Checks `X-Access-Token` against `token` (no token configured ⇒ everything passes).
pub fn check_token(headers: &HeaderMap, token: Option<&str>) -> Result<(), Error> {
    let Some(token) = token else { return Ok(()) };
    match headers
        .get(ACCESS_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        Some(given) if secrets_equal(given, token) => Ok(()),
        _ => Err(Error::Unauthenticated(UNAUTHORIZED.to_owned())),
    }
}

/// The signing fields of a `/files` query.
#[derive(Debug, Clone, Copy)]
pub struct SignedQuery<'a> {
    /// The `path` query value, exactly as sent.
    pub path: &'a str,
    /// The `username` query value (`""` when absent).
    pub user: &'a str,
    /// `signature`.
    pub signature: Option<&'a str>,
    /// `signature_expiration` (unix seconds).
    pub expiration: Option<&'a str>,
}

/// Authorizes a `/files` request: a present `X-Access-Token` must match; without it a
/// valid, unexpired signature is required. No token configured ⇒ no checks.
pub fn check_files_access(
    headers: &HeaderMap,
    token: Option<&str>,
    op: Operation,
    query: SignedQuery<'_>,
    now_unix: i64,
) -> Result<(), Error> {
    let Some(token) = token else { return Ok(()) };
    if headers.contains_key(ACCESS_TOKEN_HEADER) {
        return check_token(headers, Some(token));
    }
    let Some(signature) = query.signature else {
        return Err(Error::Unauthenticated(
            "missing signature query parameter".to_owned(),
        ));
    };
    let expiration = match query.expiration {
        None => None,
        Some(raw) => Some(raw.parse::<i64>().map_err(|_| {
            Error::Unauthenticated(format!("invalid signature_expiration {raw:?}"))
        })?),
    };
    let expected = sign(query.path, op, query.user, token, expiration);
    if !secrets_equal(signature, &expected) {
        return Err(Error::Unauthenticated("invalid signature".to_owned()));
    }
    if expiration.is_some_and(|exp| exp < now_unix) {
        return Err(Error::Unauthenticated(
            "signature is already expired".to_owned(),
        ));
    }
    Ok(())
}

/// The user named by `Authorization: Basic base64("<user>:")`, `None` when absent.
pub fn basic_user(headers: &HeaderMap) -> Result<Option<String>, Error> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let invalid = || Error::Unauthenticated("invalid authorization header".to_owned());
    let value = value.to_str().map_err(|_| invalid())?;
    let Some(encoded) = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
    else {
        return Err(invalid());
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| invalid())?;
    let text = String::from_utf8(decoded).map_err(|_| invalid())?;
    let name = text.split(':').next().unwrap_or_default();
    Ok((!name.is_empty()).then(|| name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_with_expiration_differs_and_expires() {
        let token = Some("tok");
        let exp = 1_000;
        let sig = sign("/a", Operation::Read, "user", "tok", Some(exp));
        let q = SignedQuery {
            path: "/a",
            user: "user",
            signature: Some(&sig),
            expiration: Some("1000"),
        };
        let headers = HeaderMap::new();
        assert!(check_files_access(&headers, token, Operation::Read, q, 999).is_ok());
        assert!(check_files_access(&headers, token, Operation::Write, q, 999).is_err());
        let err = check_files_access(&headers, token, Operation::Read, q, 1001).unwrap_err();
        assert!(err.to_string().contains("expired"));
    }

    #[test]
    fn basic_user_parses_name() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Basic dXNlcjo=".parse().unwrap());
        assert_eq!(basic_user(&headers).unwrap().as_deref(), Some("user"));
        headers.insert("authorization", "Bearer x".parse().unwrap());
        assert!(basic_user(&headers).is_err());
    }
}
