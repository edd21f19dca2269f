//! # courier-secret: one `Secret` type for every Courier crate
//!
//! API keys, access tokens and provider keys are held as [`Secret`]. It never shows its
//! value by accident: `Debug`, `Display` *and* `Serialize` write the masked form
//! (`****abcd`, or `****` for secrets under eight characters, so a short secret is not half
//! revealed). The value comes out only where a caller asks for it by name:
//!
//! - [`Secret::expose`] for headers, environments and files written into a sandbox;
//! - [`Exposed`] and the [`exposed`] serde module for the wire fields that must carry the
//!   raw value (an `envdAccessToken` in a create answer, a token in a persisted record):
//!   `#[serde(with = "courier_secret::exposed")]` on a `Secret` field,
//!   `#[serde(with = "courier_secret::exposed::option")]` on an `Option<Secret>`.
//!
//! Deserializing reads the raw value, so a secret read from the wire or a config file is
//! the real one. The value is zeroed when the `Secret` is dropped.
//!
//! Invariant: this crate depends on no other Courier crate, so every crate (the SDK
//! included) can share it.
//!
//! ```
//! use courier_secret::Secret;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Answer {
//!     /// Shown masked wherever the answer is logged or serialized.
//!     shown: Secret,
//!     /// Written raw: the caller needs the value itself.
//!     #[serde(with = "courier_secret::exposed")]
//!     token: Secret,
//! }
//!
//! let answer = Answer { shown: Secret::new("sk-0123456789"), token: Secret::new("tok-abcdefgh") };
//! let json = serde_json::to_string(&answer).unwrap();
//! assert_eq!(json, r#"{"shown":"****6789","token":"tok-abcdefgh"}"#);
//! let back: Answer = serde_json::from_str(&json).unwrap();
//! assert_eq!(back.token.expose(), "tok-abcdefgh");
//! ```

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroize as _;

/// Secrets shorter than this are masked completely (`****`): showing four characters of a
/// six-character token would give most of it away.
const MIN_LEN_FOR_TAIL: usize = 8;

/// A secret string (API key, access token, provider key, GitHub token).
///
/// `Debug`, `Display` and `Serialize` show only the last four characters as `****abcd`
/// (`****` when the secret is shorter than eight characters); `Deserialize` reads the raw
/// value. The value itself is reachable only through [`Secret::expose`] and [`Exposed`].
///
/// ```
/// use courier_secret::Secret;
///
/// let key = Secret::new("sk-ant-api03-abcdefgh1234");
/// assert_eq!(format!("{key:?}"), "****1234");
/// assert_eq!(key.to_string(), "****1234");
/// assert_eq!(serde_json::to_string(&key).unwrap(), r#""****1234""#);
/// assert_eq!(key.expose(), "sk-ant-api03-abcdefgh1234");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    ///
    /// ```
    /// let token = courier_secret::Secret::new(String::from("tok_0123456789"));
    /// assert_eq!(token.expose(), "tok_0123456789");
    /// ```
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value. Call it only where the value must leave the process (a request
    /// header, a file written into a sandbox, a child's environment).
    ///
    /// ```
    /// assert_eq!(courier_secret::Secret::new("abc").expose(), "abc");
    /// ```
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The masked form shown everywhere else: `****` plus the last four characters, or
    /// `****` alone for secrets under eight characters.
    ///
    /// ```
    /// use courier_secret::Secret;
    /// assert_eq!(Secret::new("e2b_0123456789abcdef").masked(), "****cdef");
    /// assert_eq!(Secret::new("short").masked(), "****");
    /// ```
    pub fn masked(&self) -> String {
        format!("****{}", self.shown_tail())
    }

    /// What the masked form shows of the value: its last four characters, or nothing for
    /// secrets under eight characters. For callers that store it beside a ciphertext and
    /// mask later (the value itself is gone by then).
    ///
    /// ```
    /// use courier_secret::Secret;
    /// assert_eq!(Secret::new("s3cret-value").shown_tail(), "alue");
    /// assert_eq!(Secret::new("8080").shown_tail(), "");
    /// ```
    pub fn shown_tail(&self) -> String {
        let chars: Vec<char> = self.0.chars().collect();
        if chars.len() < MIN_LEN_FOR_TAIL {
            return String::new();
        }
        chars[chars.len() - 4..].iter().collect()
    }

    /// A view that serializes the raw value, for one field or value that must carry it.
    ///
    /// ```
    /// let token = courier_secret::Secret::new("tok-abcdefgh");
    /// assert_eq!(serde_json::to_string(&token.exposed()).unwrap(), r#""tok-abcdefgh""#);
    /// ```
    pub fn exposed(&self) -> Exposed<'_> {
        Exposed(self)
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// Writes the masked form: a serialized `Secret` is as safe to log as its `Debug`. Fields
/// that must carry the value say so with [`exposed`].
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.masked())
    }
}

/// Reads the raw value (a string).
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

/// A borrowed [`Secret`] that serializes its raw value: the explicit way to put a secret on
/// the wire. `Debug` stays masked.
///
/// ```
/// use courier_secret::{Exposed, Secret};
/// let token = Secret::new("tok-abcdefgh");
/// let body = serde_json::json!({ "accessToken": Exposed(&token) });
/// assert_eq!(body.to_string(), r#"{"accessToken":"tok-abcdefgh"}"#);
/// assert_eq!(format!("{:?}", Exposed(&token)), "Exposed(****efgh)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exposed<'a>(pub &'a Secret);

impl Serialize for Exposed<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.expose())
    }
}

/// `#[serde(with = "courier_secret::exposed")]`: a `Secret` field written and read raw.
///
/// ```
/// use courier_secret::Secret;
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Created {
///     #[serde(rename = "envdAccessToken", with = "courier_secret::exposed")]
///     envd_access_token: Secret,
/// }
/// let json = serde_json::to_string(&Created { envd_access_token: Secret::new("tok-abcdefgh") }).unwrap();
/// assert_eq!(json, r#"{"envdAccessToken":"tok-abcdefgh"}"#);
/// ```
pub mod exposed {
    use serde::{Deserialize as _, Deserializer, Serialize as _, Serializer};

    use super::{Exposed, Secret};

    /// Writes the raw value.
    pub fn serialize<S: Serializer>(secret: &Secret, serializer: S) -> Result<S::Ok, S::Error> {
        Exposed(secret).serialize(serializer)
    }

    /// Reads the raw value (as `Secret`'s own `Deserialize`).
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
        Secret::deserialize(deserializer)
    }

    /// `#[serde(with = "courier_secret::exposed::option")]`: the same for an
    /// `Option<Secret>` (`None` is `null`, or absent with `skip_serializing_if`).
    ///
    /// ```
    /// use courier_secret::Secret;
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Detail {
    ///     #[serde(default, skip_serializing_if = "Option::is_none", with = "courier_secret::exposed::option")]
    ///     token: Option<Secret>,
    /// }
    /// let json = serde_json::to_string(&Detail { token: Some(Secret::new("tok-abcdefgh")) }).unwrap();
    /// assert_eq!(json, r#"{"token":"tok-abcdefgh"}"#);
    /// let none: Detail = serde_json::from_str("{}").unwrap();
    /// assert!(none.token.is_none());
    /// ```
    pub mod option {
        use serde::{Deserialize as _, Deserializer, Serialize as _, Serializer};

        use crate::{Exposed, Secret};

        /// Writes the raw value, or `null`.
        pub fn serialize<S: Serializer>(
            secret: &Option<Secret>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            secret.as_ref().map(Exposed).serialize(serializer)
        }

        /// Reads the raw value, or `None` for `null`.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<Secret>, D::Error> {
            Option::<Secret>::deserialize(deserializer)
        }
    }
}

#[cfg(test)]
mod tests;
