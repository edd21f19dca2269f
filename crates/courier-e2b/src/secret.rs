//! Secrets (API keys, access tokens) that never show up in `Debug` or error output.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A secret string: its `Debug` and `Display` show only the last four characters
/// (`****abcd`), so it can sit in configs and models that get logged.
///
/// ```
/// use courier_e2b::Secret;
/// let key = Secret::new("e2b_0123456789abcdef");
/// assert_eq!(format!("{key:?}"), "****cdef");
/// assert_eq!(key.expose(), "e2b_0123456789abcdef");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself; call only where it goes on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The redacted form, `****` plus at most the last four characters.
    ///
    /// ```
    /// use courier_e2b::Secret;
    /// assert_eq!(Secret::new("ab").redacted(), "****");
    /// ```
    pub fn redacted(&self) -> String {
        let chars: Vec<char> = self.0.chars().collect();
        if chars.len() <= 4 {
            return "****".to_owned();
        }
        let tail: String = chars[chars.len() - 4..].iter().collect();
        format!("****{tail}")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_owned())
    }
}
