//! The crate's one error type.

use thiserror::Error;

/// Everything that can go wrong when building plans or command lines from bad input.
///
/// Each variant names the offending field and, where there is one, the allowed values,
/// so a caller can report it to a person as is.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ToolsError {
    /// A field held a value outside its allowed set (tool id, thinking effort, …).
    #[error("invalid {field} {value:?}: allowed values are {allowed}")]
    InvalidValue {
        /// The field that was being parsed, e.g. `tool`.
        field: &'static str,
        /// The value that was given.
        value: String,
        /// The allowed values, comma separated.
        allowed: String,
    },
    /// The tool needs a provider key that the context does not hold.
    #[error("tool {tool} needs {needs}, but none was provided")]
    MissingProviderKey {
        /// The tool being set up.
        tool: &'static str,
        /// A description of the keys that would satisfy it, e.g. `an Anthropic API key or an Anthropic OAuth token`.
        needs: String,
    },
    /// A name (branch, skill, command, env var, template) does not have the allowed shape.
    #[error("invalid {field} {value:?}: {rule}")]
    InvalidName {
        /// The field, e.g. `branch_name`.
        field: &'static str,
        /// The value that was given.
        value: String,
        /// What a valid value looks like.
        rule: &'static str,
    },
    /// A file's contents (a skill's `SKILL.md`, a command's markdown) do not have the
    /// format its tool reads.
    #[error("invalid {field} {name:?}: {problem}")]
    InvalidFile {
        /// The field, e.g. `skills.content`.
        field: &'static str,
        /// The file's name.
        name: String,
        /// What is wrong and what is expected.
        problem: String,
    },
}
