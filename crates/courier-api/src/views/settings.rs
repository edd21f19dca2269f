//! Project settings: what `GET`/`PUT /v1/projects/{id}/settings` answer and accept.

use std::collections::BTreeMap;

use courier_orchestrator::pr::redact_url;
use courier_orchestrator::settings::SettingsUpdate;
use courier_store as store;
use courier_tools::Secret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A project's settings: the defaults its sandboxes start from and what their setup
/// injects. Env var values are never shown, only their last four characters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProjectSettings {
    /// Default repository to clone (credentials removed).
    pub repo_url: Option<String>,
    /// Default base branch.
    pub base_branch: Option<String>,
    /// Env vars set in every sandbox, by name, values masked.
    pub env_vars: Vec<EnvVar>,
    /// The agent's system prompt (`null`: the tool's default).
    pub system_prompt: Option<String>,
    /// The project's `CLAUDE.md`.
    pub claude_md: Option<String>,
    /// Skills (`SKILL.md` text), injected where each agent CLI lists skills.
    pub skills: Vec<NamedFile>,
    /// Slash commands, injected as `.claude/commands/<name>.md`.
    pub commands: Vec<NamedFile>,
    /// The sandbox configuration a create falls back to.
    pub sandbox_defaults: SandboxDefaults,
}

/// An env var as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EnvVar {
    /// Its name.
    pub name: String,
    /// `****` and the value's last four characters (only `****` for values under 8
    /// characters: courier-secret's rule).
    #[schema(examples("****abcd"))]
    pub masked: String,
}

/// A skill or a slash command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NamedFile {
    /// Skills: 1 to 64 of `a-z0-9-`; commands: 1 to 64 of `A-Za-z0-9_-`.
    pub name: String,
    /// The file's full text (a skill's `SKILL.md` with its front matter).
    pub content: String,
}

/// Defaults for a create's sandbox configuration; `null` keeps the product default. A
/// create's own values win.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SandboxDefaults {
    /// Tool id (`claude`, `opencode`, `codex`, `pi`, `shell`).
    #[serde(default)]
    pub tool: Option<String>,
    /// Model (used only when the create runs the default tool).
    #[serde(default)]
    pub model: Option<String>,
    /// Memory in MB (256–8192).
    #[serde(default)]
    pub memory_mb: Option<i64>,
    /// CPUs (1–8).
    #[serde(default)]
    pub cpu_count: Option<i64>,
    /// Lifetime in ms (60000–14400000).
    #[serde(default)]
    pub timeout_ms: Option<i64>,
    /// A custom template.
    #[serde(default)]
    pub template_id: Option<String>,
    /// The workflow checker's template (falls back to `template_id`).
    #[serde(default)]
    pub checker_template_id: Option<String>,
    /// Thinking effort per model name (`none`, `low`, `medium`, `high`), for tools that
    /// have one.
    #[serde(default)]
    pub thinking_effort: std::collections::BTreeMap<String, String>,
    /// Keep provider keys and the GitHub token out of the sandboxes through Courier's
    /// gateway, where the server runs one (`null`: yes).
    #[serde(default)]
    pub keys_via_gateway: Option<bool>,
    /// Each sandbox's token budget (input, output and cache tokens), counted at the
    /// gateway; over it the run is stopped with its work saved (`null`: no limit).
    #[serde(default)]
    pub token_budget: Option<u64>,
}

/// `PUT /v1/projects/{id}/settings`: replaces the settings whole (fields left out are
/// cleared). Its `Debug` shows env var names, never values.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectSettingsUpdate {
    /// Default repository to clone.
    #[serde(default)]
    pub repo_url: Option<String>,
    /// Default base branch.
    #[serde(default)]
    pub base_branch: Option<String>,
    /// Env vars by name (`A-Za-z0-9_`, not starting with a digit); a `null` value keeps
    /// the value stored under that name. Values are stored encrypted and never shown.
    #[serde(default)]
    #[schema(write_only)]
    pub env_vars: BTreeMap<String, Option<String>>,
    /// The agent's system prompt.
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// The project's `CLAUDE.md`.
    #[serde(default)]
    pub claude_md: Option<String>,
    /// Skills.
    #[serde(default)]
    pub skills: Vec<NamedFile>,
    /// Slash commands.
    #[serde(default)]
    pub commands: Vec<NamedFile>,
    /// Sandbox defaults.
    #[serde(default)]
    pub sandbox_defaults: SandboxDefaults,
}

impl std::fmt::Debug for ProjectSettingsUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectSettingsUpdate")
            .field("repo_url", &self.repo_url.as_deref().map(redact_url))
            .field("base_branch", &self.base_branch)
            .field("env_vars", &self.env_vars.keys().collect::<Vec<_>>())
            .field("system_prompt", &self.system_prompt)
            .field("claude_md", &self.claude_md)
            .field("skills", &self.skills)
            .field("commands", &self.commands)
            .field("sandbox_defaults", &self.sandbox_defaults)
            .finish()
    }
}

fn named(files: Vec<store::NamedText>) -> Vec<NamedFile> {
    files
        .into_iter()
        .map(|f| NamedFile {
            name: f.name,
            content: f.content,
        })
        .collect()
}

fn texts(files: Vec<NamedFile>) -> Vec<store::NamedText> {
    files
        .into_iter()
        .map(|f| store::NamedText {
            name: f.name,
            content: f.content,
        })
        .collect()
}

impl From<store::ProjectSettings> for ProjectSettings {
    fn from(s: store::ProjectSettings) -> Self {
        let d = s.sandbox_defaults;
        ProjectSettings {
            repo_url: s.repo_url.as_deref().map(redact_url),
            base_branch: s.base_branch,
            env_vars: s
                .env_vars
                .into_iter()
                .map(|v| EnvVar {
                    masked: format!("****{}", v.last_four),
                    name: v.name,
                })
                .collect(),
            system_prompt: s.system_prompt,
            claude_md: s.claude_md,
            skills: named(s.skills),
            commands: named(s.commands),
            sandbox_defaults: SandboxDefaults {
                tool: d.tool,
                model: d.model,
                memory_mb: d.memory_mb,
                cpu_count: d.cpu_count,
                timeout_ms: d.timeout_ms,
                template_id: d.template_id,
                checker_template_id: d.checker_template_id,
                thinking_effort: d.thinking_effort,
                keys_via_gateway: d.keys_via_gateway,
                token_budget: d.token_budget,
            },
        }
    }
}

impl From<ProjectSettingsUpdate> for SettingsUpdate {
    fn from(u: ProjectSettingsUpdate) -> Self {
        let d = u.sandbox_defaults;
        SettingsUpdate {
            repo_url: u.repo_url,
            base_branch: u.base_branch,
            env_vars: u
                .env_vars
                .into_iter()
                .map(|(name, value)| (name, value.map(Secret::new)))
                .collect(),
            system_prompt: u.system_prompt,
            claude_md: u.claude_md,
            skills: texts(u.skills),
            commands: texts(u.commands),
            sandbox_defaults: store::SandboxDefaults {
                tool: d.tool,
                model: d.model,
                memory_mb: d.memory_mb,
                cpu_count: d.cpu_count,
                timeout_ms: d.timeout_ms,
                template_id: d.template_id,
                checker_template_id: d.checker_template_id,
                thinking_effort: d.thinking_effort,
                keys_via_gateway: d.keys_via_gateway,
                token_budget: d.token_budget,
            },
        }
    }
}
