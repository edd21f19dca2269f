//! The rules for names and URLs a plan writes into commands and config files.

use crate::error::ToolsError;

pub(super) fn invalid(field: &'static str, value: &str, rule: &'static str) -> ToolsError {
    ToolsError::InvalidName {
        field,
        value: value.to_owned(),
        rule,
    }
}

/// Checks a name against the rule a setup plan enforces; the error names the field and
/// the rule.
pub fn validate_branch(name: &str) -> Result<(), ToolsError> {
    const RULE: &str = "1 to 200 characters of A-Za-z0-9 . _ / -, not starting with '-', '/' or '.', \
                        without '..', '//' or a trailing '/', '.' or '.lock'";
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b))
        && !name.starts_with(['-', '/', '.'])
        && !name.ends_with(['/', '.'])
        && !name.ends_with(".lock")
        && !name.contains("..")
        && !name.contains("//")
        && !name.contains("/.");
    if ok {
        Ok(())
    } else {
        Err(invalid("branch_name", name, RULE))
    }
}

/// Checks a name against the rule a setup plan enforces; the error names the field and
/// the rule.
pub fn validate_env_name(name: &str) -> Result<(), ToolsError> {
    let mut bytes = name.bytes();
    let ok = matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "env_vars",
            name,
            "a name of A-Za-z0-9_ not starting with a digit",
        ))
    }
}

/// Checks a name against the rule a setup plan enforces; the error names the field and
/// the rule.
pub fn validate_skill_name(name: &str) -> Result<(), ToolsError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "skills.name",
            name,
            "1 to 64 characters of a-z, 0-9 and '-'",
        ))
    }
}

/// Checks a name against the rule a setup plan enforces; the error names the field and
/// the rule.
pub fn validate_command_name(name: &str) -> Result<(), ToolsError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "commands.name",
            name,
            "1 to 64 characters of A-Za-z0-9, '_' and '-'",
        ))
    }
}

/// Checks a name against the rule a setup plan enforces; the error names the field and
/// the rule.
pub fn validate_repo_url(url: &str) -> Result<(), ToolsError> {
    let ok = !url.is_empty()
        && !url.starts_with('-')
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "repo_url",
            url,
            "a non-empty URL without whitespace, not starting with '-'",
        ))
    }
}
