//! Setup plans: the ordered, typed steps that prepare a sandbox for a tool.
//!
//! A plan is data. The orchestrator executes its steps in order and stops at the first
//! failure. The contract for an executor:
//!
//! - [`SetupStep::WriteFile`] creates missing parent directories, then writes the file and
//!   sets its mode.
//! - [`SetupStep::Run`] runs `command` with `sh -c`, in `cwd` when given, with `env` added,
//!   and fails the plan on a non-zero exit.
//! - [`SetupStep::SetEnv`] adds a variable to the environment of every **later** step and of
//!   the agent itself.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};

use crate::PROJECT_DIR;
use crate::error::ToolsError;
use crate::registry::{ProviderKeyKind, ToolId, spec};
use crate::secret::Secret;
use crate::shell::shell_quote;

mod tools;
mod validate;

#[cfg(test)]
mod tests;

use tools::{claude_steps, codex_steps, opencode_steps, pi_steps};
use validate::invalid;
pub use validate::{
    COMMAND_KEYS, MAX_FILE_BYTES, validate_branch, validate_command_content, validate_command_name,
    validate_env_name, validate_repo_url, validate_skill_content, validate_skill_name,
};

/// The system prompt used when the project sets none.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are working in a Courier sandbox on a git repository in /home/user/project, \
on a feature branch created for this task. Make focused changes, run the project's tests when you can, \
and commit your work with clear messages. Do not push to main or master.";

/// Where the system prompt is written for every tool.
pub const SYSTEM_PROMPT_PATH: &str = "/home/user/.courier/system-prompt.md";

/// The file holding the GitHub token (mode 0600), read by the credential helper.
pub const GITHUB_TOKEN_PATH: &str = "/home/user/.courier/github-token";

/// The git credential helper script (mode 0700).
pub const CREDENTIAL_HELPER_PATH: &str = "/home/user/.courier/git-credential-courier";

/// A value a step carries: plain text, or a secret that must never be shown.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum StepValue {
    /// Text that may be logged.
    Plain(String),
    /// A secret; shown as `****abcd`.
    Secret(Secret),
}

impl StepValue {
    /// The real value, for the executor to write or export.
    pub fn expose(&self) -> &str {
        match self {
            StepValue::Plain(s) => s,
            StepValue::Secret(s) => s.expose(),
        }
    }

    /// Whether the value is a secret.
    pub fn is_secret(&self) -> bool {
        matches!(self, StepValue::Secret(_))
    }
}

impl std::fmt::Debug for StepValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepValue::Plain(s) => std::fmt::Debug::fmt(s, f),
            StepValue::Secret(s) => std::fmt::Debug::fmt(s, f),
        }
    }
}

fn octal_mode<S: Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{mode:04o}"))
}

/// One setup step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum SetupStep {
    /// Write a file (creating parent directories) and set its permission bits.
    WriteFile {
        /// Absolute path in the sandbox.
        path: String,
        /// The file's contents.
        contents: StepValue,
        /// Unix permission bits, e.g. `0o600`.
        #[serde(serialize_with = "octal_mode")]
        mode: u32,
    },
    /// Run a shell command; a non-zero exit fails the setup.
    Run {
        /// The `sh -c` script. Never contains a secret: secrets travel in `env` or files.
        command: String,
        /// Working directory, when it matters.
        cwd: Option<String>,
        /// Extra environment for this command only.
        env: BTreeMap<String, StepValue>,
    },
    /// Set a variable for all later steps and for the agent.
    SetEnv {
        /// Variable name.
        name: String,
        /// Its value.
        value: StepValue,
    },
}

/// An ordered setup plan for one tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetupPlan {
    /// The tool the plan prepares.
    pub tool: ToolId,
    /// The steps, in execution order.
    pub steps: Vec<SetupStep>,
}

impl SetupPlan {
    /// The variables the plan's `SetEnv` steps set, in order (what the agent's process needs).
    pub fn env(&self) -> BTreeMap<String, StepValue> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                SetupStep::SetEnv { name, value } => Some((name.clone(), value.clone())),
                _ => None,
            })
            .collect()
    }
}

/// A skill: `.claude/skills/<name>/SKILL.md` for Claude and OpenCode,
/// `<name>/SKILL.md` in Codex's and Pi's own skills folders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skill {
    /// Lowercase `a-z0-9-`, at most 64 characters (the folder name).
    pub name: String,
    /// The full `SKILL.md` text, front matter included.
    pub content: String,
}

/// A slash command injected as `.claude/commands/<name>.md`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandFile {
    /// `A-Za-z0-9_-`, at most 64 characters (the file name without `.md`).
    pub name: String,
    /// The command's Markdown text.
    pub content: String,
}

/// The provider keys available to a sandbox (project keys already preferred over user keys).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProviderKeys {
    /// `ANTHROPIC_API_KEY`.
    pub anthropic_api_key: Option<Secret>,
    /// `CLAUDE_CODE_OAUTH_TOKEN` (subscription).
    pub anthropic_oauth_token: Option<Secret>,
    /// `OPENROUTER_API_KEY`.
    pub openrouter_api_key: Option<Secret>,
    /// OpenAI API key (Codex's `CODEX_API_KEY`).
    pub openai_api_key: Option<Secret>,
}

impl ProviderKeys {
    /// The key of a kind, if present.
    pub fn get(&self, kind: ProviderKeyKind) -> Option<&Secret> {
        match kind {
            ProviderKeyKind::AnthropicApiKey => self.anthropic_api_key.as_ref(),
            ProviderKeyKind::AnthropicOauthToken => self.anthropic_oauth_token.as_ref(),
            ProviderKeyKind::OpenrouterApiKey => self.openrouter_api_key.as_ref(),
            ProviderKeyKind::OpenaiApiKey => self.openai_api_key.as_ref(),
        }
    }

    /// Whether these keys satisfy `tool` (any one of its required kinds, or none needed).
    pub fn satisfy(&self, tool: ToolId) -> bool {
        let required = spec(tool).required_keys;
        required.is_empty() || required.iter().any(|k| self.get(*k).is_some())
    }
}

/// Everything a setup plan is built from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SetupContext {
    /// The tool to prepare.
    pub tool: ToolId,
    /// The repository to clone; without one an empty repository is created.
    pub repo_url: Option<String>,
    /// The branch to clone (the remote's default when `None`).
    pub base_branch: Option<String>,
    /// The sandbox's feature branch (checked out if it exists on the remote, else created).
    pub branch_name: String,
    /// A GitHub token; when present a credential helper is configured so the agent can push.
    pub github_token: Option<Secret>,
    /// Git through Courier's gateway instead of a token in the sandbox: GitHub URLs are
    /// rewritten to the gateway, and the run token is git's only credential. Takes the
    /// place of `github_token`.
    pub git_gateway: Option<GitGateway>,
    /// Project environment variables (treated as secrets: they often hold credentials).
    pub env_vars: BTreeMap<String, Secret>,
    /// The project's system prompt ([`DEFAULT_SYSTEM_PROMPT`] when `None`).
    pub system_prompt: Option<String>,
    /// The project's `CLAUDE.md` (Claude, Pi; OpenCode and Codex read it when the
    /// repository has no `AGENTS.md`).
    pub claude_md: Option<String>,
    /// Skills to inject (every agent CLI, each where it lists skills).
    pub skills: Vec<Skill>,
    /// Slash commands to inject (Claude).
    pub commands: Vec<CommandFile>,
    /// Compiled learnings from earlier sandboxes (Claude).
    pub learnings: Option<String>,
    /// Provider keys.
    pub keys: ProviderKeys,
    /// Where the agents reach their model providers, when not the providers' own hosts
    /// (an LLM gateway; tests point them at a stand-in).
    pub endpoints: ProviderEndpoints,
}

/// Courier's gateway as the sandbox's git reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GitGateway {
    /// The gateway's root URL (`{url}/git/{owner}/{repo}.git` serves GitHub's
    /// `https://github.com/{owner}/{repo}.git`).
    pub url: String,
    /// The run token (worthless outside the run's sandbox and after the run).
    pub token: Secret,
}

/// The git config file that routes GitHub through the gateway (mode 0600).
pub const GATEWAY_GITCONFIG_PATH: &str = "/home/user/.courier/gateway.gitconfig";

/// Base URLs replacing the providers' own, per provider; `None` keeps the CLI's default.
///
/// Each CLI takes its endpoint from its own setting: Claude `ANTHROPIC_BASE_URL`; Codex
/// `openai_base_url` in `~/.codex/config.toml`; OpenCode
/// `provider.openrouter.options.baseURL` in its config; Pi `baseUrl` of the `openrouter`
/// provider in `~/.pi/agent/models.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProviderEndpoints {
    /// The Anthropic API root (without `/v1`), e.g. `https://gateway.example/anthropic`.
    pub anthropic: Option<String>,
    /// The OpenAI API root including `/v1`, e.g. `https://gateway.example/openai/v1`.
    pub openai: Option<String>,
    /// The OpenRouter API root including `/api/v1`.
    pub openrouter: Option<String>,
}

impl ProviderEndpoints {
    /// Checks every URL: `http://` or `https://`, then only URL characters (no quotes,
    /// backslashes, spaces or control characters: they end up inside TOML and JSON
    /// config files). The error names the field and the rule.
    pub fn validate(&self) -> Result<(), ToolsError> {
        for (field, url) in [
            ("endpoints.anthropic", &self.anthropic),
            ("endpoints.openai", &self.openai),
            ("endpoints.openrouter", &self.openrouter),
        ] {
            let Some(url) = url else { continue };
            let rest = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"));
            let ok = rest.is_some_and(|r| {
                !r.is_empty()
                    && url.len() <= 2048
                    && r.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&()*+,;=%".contains(&b)
                    })
            });
            if !ok {
                return Err(invalid(
                    field,
                    url,
                    "an http:// or https:// URL of at most 2048 URL characters (no quotes, backslashes or spaces)",
                ));
            }
        }
        Ok(())
    }
}

const CREDENTIAL_HELPER: &str = r#"#!/bin/sh
# Courier's git credential helper: answers `get` for github.com with the sandbox's token,
# which lives in a 0600 file so it never appears on a command line.
[ "$1" = get ] || exit 0
host=
while IFS= read -r line && [ -n "$line" ]; do
  case "$line" in host=*) host=${line#host=} ;; esac
done
[ "$host" = github.com ] || exit 0
printf 'username=x-access-token\npassword=%s\n' "$(cat /home/user/.courier/github-token)"
"#;

struct Steps(Vec<SetupStep>);

impl Steps {
    fn write(&mut self, path: impl Into<String>, contents: impl Into<String>, mode: u32) {
        self.0.push(SetupStep::WriteFile {
            path: path.into(),
            contents: StepValue::Plain(contents.into()),
            mode,
        });
    }
    fn write_secret(&mut self, path: impl Into<String>, contents: Secret, mode: u32) {
        self.0.push(SetupStep::WriteFile {
            path: path.into(),
            contents: StepValue::Secret(contents),
            mode,
        });
    }
    fn run(&mut self, command: impl Into<String>, cwd: Option<&str>) {
        self.0.push(SetupStep::Run {
            command: command.into(),
            cwd: cwd.map(str::to_owned),
            env: BTreeMap::new(),
        });
    }
    fn set_plain(&mut self, name: &str, value: &str) {
        self.0.push(SetupStep::SetEnv {
            name: name.to_owned(),
            value: StepValue::Plain(value.to_owned()),
        });
    }
    fn set_secret(&mut self, name: &str, value: &Secret) {
        self.0.push(SetupStep::SetEnv {
            name: name.to_owned(),
            value: StepValue::Secret(value.clone()),
        });
    }
}

/// Builds the setup plan for `ctx.tool`.
///
/// Common steps, in order: git identity, credential helper (only with a GitHub token:
/// the token goes to a 0600 file read by a 0700 helper script, never onto a command line),
/// clone into `/home/user/project` (or `git init` without a repository), the feature
/// branch, project env vars, the system prompt file. Then the tool's own steps: for Claude
/// `CLAUDE.md`, skills, commands, learnings and the Anthropic key; for OpenCode
/// `CLAUDE.md`, skills, its config and the OpenRouter key; for Codex the OpenAI key,
/// install-if-missing, login, `CLAUDE.md`, skills and config; for Pi the OpenRouter key,
/// `CLAUDE.md`, skills and its system prompt file. Each file goes where the real CLI reads it
/// (checked against the pinned CLIs by courier-orchestrator's real-CLI suite).
///
/// # Errors
///
/// [`ToolsError::MissingProviderKey`] when the keys do not satisfy the tool, and
/// [`ToolsError::InvalidName`] for a malformed branch, repository URL, env var, skill or
/// command name.
pub fn build_setup_plan(ctx: &SetupContext) -> Result<SetupPlan, ToolsError> {
    let tool = ctx.tool;
    if !ctx.keys.satisfy(tool) {
        let needs = spec(tool)
            .required_keys
            .iter()
            .map(|k| k.describe())
            .collect::<Vec<_>>()
            .join(" or ");
        return Err(ToolsError::MissingProviderKey {
            tool: tool.as_str(),
            needs,
        });
    }
    validate_branch(&ctx.branch_name)?;
    if let Some(base) = &ctx.base_branch {
        validate_branch(base)?;
    }
    if let Some(url) = &ctx.repo_url {
        validate_repo_url(url)?;
    }
    for name in ctx.env_vars.keys() {
        validate_env_name(name)?;
    }
    for s in &ctx.skills {
        validate_skill_name(&s.name)?;
    }
    for c in &ctx.commands {
        validate_command_name(&c.name)?;
    }
    ctx.endpoints.validate()?;
    if let Some(gateway) = &ctx.git_gateway {
        ProviderEndpoints {
            anthropic: Some(gateway.url.clone()),
            ..Default::default()
        }
        .validate()
        .map_err(|_| {
            invalid(
                "git_gateway.url",
                &gateway.url,
                "an http:// or https:// URL of at most 2048 URL characters (no quotes, backslashes or spaces)",
            )
        })?;
    }

    let mut steps = Steps(Vec::new());

    // Git identity for the agent's commits, unless the template already set one.
    steps.run(
        "git config --global user.name >/dev/null || git config --global user.name Courier; \
         git config --global user.email >/dev/null || git config --global user.email courier@users.noreply.github.com",
        None,
    );

    if let Some(gateway) = &ctx.git_gateway {
        // An included file, so the run token is on no command line; the URL is validated
        // (no quote, backslash or newline can end the value).
        let url = gateway.url.trim_end_matches('/');
        let config = format!(
            "[url \"{url}/git/\"]\n\tinsteadOf = https://github.com/\n\
             [http \"{url}/\"]\n\textraHeader = x-courier-run-token: {}\n",
            gateway.token.expose()
        );
        steps.write_secret(GATEWAY_GITCONFIG_PATH, Secret::new(config), 0o600);
        steps.run(
            format!(
                "git config --global include.path {}",
                shell_quote(GATEWAY_GITCONFIG_PATH)
            ),
            None,
        );
    } else if let Some(token) = &ctx.github_token {
        steps.write_secret(GITHUB_TOKEN_PATH, token.clone(), 0o600);
        steps.write(CREDENTIAL_HELPER_PATH, CREDENTIAL_HELPER, 0o700);
        steps.run(
            format!(
                "git config --global credential.helper {}",
                shell_quote(CREDENTIAL_HELPER_PATH)
            ),
            None,
        );
    }

    match &ctx.repo_url {
        Some(url) => {
            let branch = ctx
                .base_branch
                .as_deref()
                .map(|b| format!("--branch {} ", shell_quote(b)))
                .unwrap_or_default();
            steps.run(
                format!("git clone {branch}-- {} {PROJECT_DIR}", shell_quote(url)),
                None,
            );
        }
        None => steps.run(format!("git init -q {PROJECT_DIR}"), None),
    }
    let branch = shell_quote(&ctx.branch_name);
    // An existing remote branch (work chains reuse one) is checked out; otherwise it is created.
    steps.run(
        format!("git checkout -q {branch} 2>/dev/null || git checkout -q -b {branch}"),
        Some(PROJECT_DIR),
    );

    for (name, value) in &ctx.env_vars {
        steps.set_secret(name, value);
    }

    let system_prompt = ctx
        .system_prompt
        .as_deref()
        .unwrap_or(DEFAULT_SYSTEM_PROMPT);
    steps.write(SYSTEM_PROMPT_PATH, system_prompt, 0o644);

    let mut injected: Vec<String> = Vec::new();
    match tool {
        ToolId::Claude => claude_steps(ctx, system_prompt, &mut steps, &mut injected),
        ToolId::Opencode => opencode_steps(ctx, &mut steps, &mut injected),
        ToolId::Codex => codex_steps(ctx, system_prompt, &mut steps, &mut injected),
        ToolId::Pi => pi_steps(ctx, system_prompt, &mut steps, &mut injected),
        ToolId::Shell => {}
    }

    // Files Courier injected into the work tree stay out of the agent's commits.
    if !injected.is_empty() {
        let words: Vec<String> = injected.iter().map(|p| shell_quote(p)).collect();
        steps.run(
            format!(
                "mkdir -p .git/info && printf '%s\\n' {} >> .git/info/exclude",
                words.join(" ")
            ),
            Some(PROJECT_DIR),
        );
    }

    Ok(SetupPlan {
        tool,
        steps: steps.0,
    })
}
