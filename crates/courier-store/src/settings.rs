//! Project settings: the defaults every sandbox of a project starts from.

use serde::{Deserialize, Serialize};

use crate::{Result, StoreError};

/// A project's settings, as stored and as given to
/// [`Store::put_project_settings`](crate::Store::put_project_settings) (which replaces
/// them whole). A project never saved has the [`Default`]: nothing set.
///
/// The store checks shapes only (no duplicate names, `last_four` length); name rules and
/// ranges are the orchestrator's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectSettings {
    /// Default repository to clone.
    pub repo_url: Option<String>,
    /// Default base branch.
    pub base_branch: Option<String>,
    /// Env vars, encrypted by the orchestrator; by name.
    pub env_vars: Vec<EncryptedEnvVar>,
    /// The agent's system prompt.
    pub system_prompt: Option<String>,
    /// The project's `CLAUDE.md`.
    pub claude_md: Option<String>,
    /// Skills (`.claude/skills/<name>/SKILL.md`), in the order given.
    pub skills: Vec<NamedText>,
    /// Slash commands (`.claude/commands/<name>.md`), in the order given.
    pub commands: Vec<NamedText>,
    /// Default sandbox configuration.
    pub sandbox_defaults: SandboxDefaults,
}

/// An env var whose value the orchestrator encrypted. The store never sees the plaintext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedEnvVar {
    /// The variable's name.
    pub name: String,
    /// The encrypted value.
    pub ciphertext: Vec<u8>,
    /// At most four characters of the plaintext's end, for display as `****abcd`.
    pub last_four: String,
}

/// A named text file: a skill or a slash command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedText {
    /// Its name.
    pub name: String,
    /// Its full text.
    pub content: String,
}

/// The sandbox configuration a create falls back to; `None` leaves the product default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxDefaults {
    /// CLI tool id.
    pub tool: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Memory in MB.
    pub memory_mb: Option<i64>,
    /// CPU count.
    pub cpu_count: Option<i64>,
    /// Sandbox lifetime in milliseconds.
    pub timeout_ms: Option<i64>,
    /// Custom template.
    pub template_id: Option<String>,
    /// The workflow checker's template (falls back to `template_id`).
    #[serde(default)]
    pub checker_template_id: Option<String>,
    /// Thinking effort per model name.
    #[serde(default)]
    pub thinking_effort: std::collections::BTreeMap<String, String>,
    /// Keep provider keys and the GitHub token out of the sandboxes through Courier's
    /// gateway, where one is configured (`None`: yes).
    #[serde(default)]
    pub keys_via_gateway: Option<bool>,
    /// Each sandbox's token budget, counted at the gateway (`None`: no limit).
    #[serde(default)]
    pub token_budget: Option<u64>,
}

impl ProjectSettings {
    /// Rejects duplicate names and over-long `last_four`s.
    pub(crate) fn check_shape(&self) -> Result<()> {
        fn unique<'a>(field: &'static str, names: impl Iterator<Item = &'a str>) -> Result<()> {
            let mut seen = std::collections::BTreeSet::new();
            for name in names {
                if !seen.insert(name) {
                    return Err(StoreError::invalid(
                        field,
                        format!("{name} appears twice; names must be unique"),
                    ));
                }
            }
            Ok(())
        }
        unique("env_vars", self.env_vars.iter().map(|v| v.name.as_str()))?;
        unique("skills", self.skills.iter().map(|s| s.name.as_str()))?;
        unique("commands", self.commands.iter().map(|c| c.name.as_str()))?;
        for var in &self.env_vars {
            crate::sql::check_last_four(&var.last_four)?;
        }
        Ok(())
    }
}
