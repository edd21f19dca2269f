//! Template names (`name[:tag]`) and build ids.

use super::BASE_TEMPLATE;
use crate::error::{Error, Result};

/// A random build id in UUID form (what E2B's build ids look like).
pub(super) fn new_build_id() -> String {
    let hex = crate::state::random_hex(16);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Splits `name[:tag]` and checks both parts.
pub fn parse_name(full: &str) -> Result<(String, Option<String>)> {
    let (name, tag) = match full.split_once(':') {
        Some((n, t)) => (n, Some(t)),
        None => (full, None),
    };
    let name_ok = (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if !name_ok {
        return Err(Error::InvalidSpec {
            field: "name",
            reason: format!(
                "{name:?} must be 1-128 of [a-z0-9._-] starting with a letter or digit \
                 (optionally followed by :tag)"
            ),
        });
    }
    if name == BASE_TEMPLATE {
        return Err(Error::InvalidSpec {
            field: "name",
            reason: "`base` is the built-in template and cannot be rebuilt".to_owned(),
        });
    }
    if let Some(tag) = tag {
        check_tag(tag)?;
    }
    Ok((name.to_owned(), tag.map(str::to_owned)))
}

pub(super) fn check_tag(tag: &str) -> Result<()> {
    let ok = (1..=128).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidSpec {
            field: "tags",
            reason: format!("{tag:?} must be 1-128 of [A-Za-z0-9._-]"),
        })
    }
}
