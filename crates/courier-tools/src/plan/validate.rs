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

/// The most a skill or command file may hold.
pub const MAX_FILE_BYTES: usize = 256 * 1024;
/// The front matter keys a slash command may set.
pub const COMMAND_KEYS: &[&str] = &[
    "allowed-tools",
    "argument-hint",
    "description",
    "model",
    "disable-model-invocation",
];

fn file_error(field: &'static str, name: &str, problem: impl Into<String>) -> ToolsError {
    ToolsError::InvalidFile {
        field,
        name: name.to_owned(),
        problem: problem.into(),
    }
}

/// A markdown file's front matter pairs and its body.
type FrontMatter<'a> = (Vec<(&'a str, &'a str)>, &'a str);

/// The YAML front matter of a markdown file, as its top-level `key: value` pairs, and
/// the body after it; `None` when the file has none. Nested lines (indented, list items)
/// belong to the key above and are not parsed.
fn front_matter<'a>(
    field: &'static str,
    name: &str,
    content: &'a str,
) -> Result<Option<FrontMatter<'a>>, ToolsError> {
    let Some(rest) = content
        .strip_prefix("---\n")
        .or_else(|| content.strip_prefix("---\r\n"))
    else {
        return Ok(None);
    };
    let mut pairs = Vec::new();
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        offset += line.len();
        let trimmed = line.trim_end();
        if trimmed == "---" {
            return Ok(Some((pairs, &rest[offset..])));
        }
        if trimmed.is_empty() || trimmed.starts_with([' ', '\t', '-', '#']) {
            continue;
        }
        let Some((key, value)) = trimmed.split_once(':') else {
            return Err(file_error(
                field,
                name,
                format!("front matter line {trimmed:?} is not `key: value`"),
            ));
        };
        pairs.push((key.trim(), value.trim().trim_matches(['"', '\''])));
    }
    Err(file_error(
        field,
        name,
        "the front matter opened by `---` is never closed by a `---` line",
    ))
}

/// Checks a skill's `SKILL.md` as Claude Code reads it: YAML front matter with `name`
/// (the skill's own name) and a `description` of at most 1024 characters, then the
/// instructions; at most [`MAX_FILE_BYTES`].
///
/// ```
/// use courier_tools::validate_skill_content;
///
/// let ok = "---\nname: review\ndescription: Reviews a diff\n---\nRead the diff.\n";
/// assert!(validate_skill_content("review", ok).is_ok());
/// let err = validate_skill_content("review", "Read the diff.").unwrap_err();
/// assert!(err.to_string().contains("front matter"));
/// ```
pub fn validate_skill_content(name: &str, content: &str) -> Result<(), ToolsError> {
    const FIELD: &str = "skills.content";
    if content.len() > MAX_FILE_BYTES {
        return Err(file_error(
            FIELD,
            name,
            format!("larger than {MAX_FILE_BYTES} bytes"),
        ));
    }
    let Some((pairs, body)) = front_matter(FIELD, name, content)? else {
        return Err(file_error(
            FIELD,
            name,
            "must start with YAML front matter: `---`, `name: <name>`, `description: <when to use it>`, `---`",
        ));
    };
    let get = |key: &str| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    match get("name") {
        Some(n) if n == name => {}
        Some(n) => {
            return Err(file_error(
                FIELD,
                name,
                format!("front matter names it {n:?}; it must be {name:?}"),
            ));
        }
        None => return Err(file_error(FIELD, name, "front matter has no `name`")),
    }
    match get("description") {
        Some(d) if !d.is_empty() && d.chars().count() <= 1024 => {}
        _ => {
            return Err(file_error(
                FIELD,
                name,
                "front matter needs a `description` of 1 to 1024 characters",
            ));
        }
    }
    if body.trim().is_empty() {
        return Err(file_error(
            FIELD,
            name,
            "has no instructions after its front matter",
        ));
    }
    Ok(())
}

/// Checks a slash command's markdown: a prompt, optionally after YAML front matter whose
/// keys are among [`COMMAND_KEYS`]; at most [`MAX_FILE_BYTES`].
///
/// ```
/// use courier_tools::validate_command_content;
///
/// assert!(validate_command_content("ship", "Ship $ARGUMENTS.").is_ok());
/// let err = validate_command_content("ship", "---\ncolour: red\n---\nShip.").unwrap_err();
/// assert!(err.to_string().contains("allowed-tools"));
/// ```
pub fn validate_command_content(name: &str, content: &str) -> Result<(), ToolsError> {
    const FIELD: &str = "commands.content";
    if content.len() > MAX_FILE_BYTES {
        return Err(file_error(
            FIELD,
            name,
            format!("larger than {MAX_FILE_BYTES} bytes"),
        ));
    }
    let body = match front_matter(FIELD, name, content)? {
        Some((pairs, body)) => {
            if let Some((key, _)) = pairs.iter().find(|(k, _)| !COMMAND_KEYS.contains(k)) {
                return Err(file_error(
                    FIELD,
                    name,
                    format!(
                        "front matter key {key:?} is not one of: {}",
                        COMMAND_KEYS.join(", ")
                    ),
                ));
            }
            body
        }
        None => content,
    };
    if body.trim().is_empty() {
        return Err(file_error(FIELD, name, "has no prompt"));
    }
    Ok(())
}
