//! A wrapper for secret strings that never shows them.

use std::fmt;

use serde::{Serialize, Serializer};

/// A secret string (provider key, OAuth token, GitHub token, project env value).
///
/// `Debug`, `Display` and `Serialize` show only the last four characters as `****abcd`
/// (or `****` when the secret is shorter than eight characters, so short secrets are not
/// half revealed). The value itself is reachable only through [`Secret::expose`].
///
/// ```
/// use courier_tools::Secret;
///
/// let key = Secret::new("sk-ant-api03-abcdefgh1234");
/// assert_eq!(format!("{key:?}"), "****1234");
/// assert_eq!(key.expose(), "sk-ant-api03-abcdefgh1234");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value. Call it only where the value must leave the process (a file written
    /// into the sandbox, a child's environment).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The masked form shown everywhere else: `****` plus the last four characters.
    pub fn masked(&self) -> String {
        let chars: Vec<char> = self.0.chars().collect();
        if chars.len() < 8 {
            return "****".to_owned();
        }
        let tail: String = chars[chars.len() - 4..].iter().collect();
        format!("****{tail}")
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

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.masked())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_display_and_serialize_show_only_last_four() {
        let s = Secret::new("ghp_0123456789abcd");
        assert_eq!(format!("{s:?}"), "****abcd");
        assert_eq!(s.to_string(), "****abcd");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"****abcd\"");
        assert!(!format!("{:?}", Some(&s)).contains("0123"));
    }

    #[test]
    fn short_secrets_are_fully_masked() {
        assert_eq!(Secret::new("abc").masked(), "****");
        assert_eq!(Secret::new("").masked(), "****");
    }

    #[test]
    fn multibyte_tail_is_cut_on_char_boundaries() {
        assert_eq!(Secret::new("ééééééééé").masked(), "****éééé");
    }
}
