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

use crate::command::shell_quote;
use crate::error::ToolsError;
use crate::registry::{ProviderKeyKind, ToolId, spec};
use crate::secret::Secret;
use crate::{HOME_DIR, PROJECT_DIR};

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

/// A skill injected as `.claude/skills/<name>/SKILL.md`.
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
    /// Project environment variables (treated as secrets: they often hold credentials).
    pub env_vars: BTreeMap<String, Secret>,
    /// The project's system prompt ([`DEFAULT_SYSTEM_PROMPT`] when `None`).
    pub system_prompt: Option<String>,
    /// The project's `CLAUDE.md`, for tools that read it.
    pub claude_md: Option<String>,
    /// Skills to inject (Claude).
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

fn invalid(field: &'static str, value: &str, rule: &'static str) -> ToolsError {
    ToolsError::InvalidName {
        field,
        value: value.to_owned(),
        rule,
    }
}

fn validate_branch(name: &str) -> Result<(), ToolsError> {
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

fn validate_env_name(name: &str) -> Result<(), ToolsError> {
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

fn validate_skill_name(name: &str) -> Result<(), ToolsError> {
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

fn validate_command_name(name: &str) -> Result<(), ToolsError> {
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

fn validate_repo_url(url: &str) -> Result<(), ToolsError> {
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
/// `CLAUDE.md`, skills, commands, learnings and the Anthropic key; for OpenCode its config
/// and the OpenRouter key; for Codex the OpenAI key, install-if-missing, login and config;
/// for Pi the OpenRouter key, `CLAUDE.md` and its system prompt file.
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

    let mut steps = Steps(Vec::new());

    // Git identity for the agent's commits, unless the template already set one.
    steps.run(
        "git config --global user.name >/dev/null || git config --global user.name Courier; \
         git config --global user.email >/dev/null || git config --global user.email courier@users.noreply.github.com",
        None,
    );

    if let Some(token) = &ctx.github_token {
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
        ToolId::Opencode => opencode_steps(ctx, &mut steps),
        ToolId::Codex => codex_steps(ctx, system_prompt, &mut steps),
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

fn project_claude_md(ctx: &SetupContext, steps: &mut Steps, injected: &mut Vec<String>) {
    if let Some(md) = &ctx.claude_md {
        steps.write(format!("{PROJECT_DIR}/CLAUDE.md"), md.clone(), 0o644);
        injected.push("/CLAUDE.md".to_owned());
    }
}

fn claude_steps(
    ctx: &SetupContext,
    system_prompt: &str,
    steps: &mut Steps,
    injected: &mut Vec<String>,
) {
    project_claude_md(ctx, steps, injected);
    for skill in &ctx.skills {
        steps.write(
            format!("{PROJECT_DIR}/.claude/skills/{}/SKILL.md", skill.name),
            skill.content.clone(),
            0o644,
        );
        injected.push(format!("/.claude/skills/{}/", skill.name));
    }
    for command in &ctx.commands {
        steps.write(
            format!("{PROJECT_DIR}/.claude/commands/{}.md", command.name),
            command.content.clone(),
            0o644,
        );
        injected.push(format!("/.claude/commands/{}.md", command.name));
    }
    // The user-level memory file carries the system prompt and the compiled learnings, so
    // they apply without touching the repository.
    let mut memory = system_prompt.trim_end().to_owned();
    memory.push('\n');
    if let Some(learnings) = ctx.learnings.as_deref().filter(|l| !l.trim().is_empty()) {
        memory.push_str("\n# Learnings from earlier sandboxes\n\n");
        memory.push_str(learnings.trim_end());
        memory.push('\n');
    }
    steps.write(format!("{HOME_DIR}/.claude/CLAUDE.md"), memory, 0o644);
    if let Some(url) = &ctx.endpoints.anthropic {
        steps.set_plain("ANTHROPIC_BASE_URL", url);
    }
    // An API key beats a subscription token; setting both would be ambiguous.
    if let Some(key) = &ctx.keys.anthropic_api_key {
        steps.set_secret("ANTHROPIC_API_KEY", key);
    } else if let Some(token) = &ctx.keys.anthropic_oauth_token {
        steps.set_secret("CLAUDE_CODE_OAUTH_TOKEN", token);
    }
}

fn opencode_steps(ctx: &SetupContext, steps: &mut Steps) {
    let mut options = serde_json::json!({ "apiKey": "{env:OPENROUTER_API_KEY}" });
    if let Some(url) = &ctx.endpoints.openrouter {
        options["baseURL"] = serde_json::Value::String(url.clone());
    }
    let config = serde_json::json!({
        "$schema": "https://opencode.ai/config.json",
        "instructions": [SYSTEM_PROMPT_PATH],
        "provider": { "openrouter": { "options": options } },
        "permission": { "*": "allow", "external_directory": "allow" },
        "autoupdate": false,
        "share": "disabled"
    });
    let text = serde_json::to_string_pretty(&config).unwrap_or_default() + "\n";
    steps.write(
        format!("{HOME_DIR}/.config/opencode/opencode.json"),
        text,
        0o644,
    );
    if let Some(key) = &ctx.keys.openrouter_api_key {
        steps.set_secret("OPENROUTER_API_KEY", key);
    }
}

fn codex_steps(ctx: &SetupContext, system_prompt: &str, steps: &mut Steps) {
    if let Some(key) = &ctx.keys.openai_api_key {
        // Codex reads CODEX_API_KEY for exec, not OPENAI_API_KEY.
        steps.set_secret("CODEX_API_KEY", key);
    }
    if let Some(install) = crate::registry::install_command(ToolId::Codex, None) {
        steps.run(
            format!("command -v codex >/dev/null 2>&1 || {install}"),
            None,
        );
    }
    // The key comes from the environment set above, never from the command line.
    steps.run("printenv CODEX_API_KEY | codex login --with-api-key", None);
    let mut config = "approval_policy = \"never\"\n\
                      sandbox_mode = \"danger-full-access\"\n\
                      project_doc_fallback_filenames = [\"CLAUDE.md\"]\n"
        .to_owned();
    if let Some(url) = &ctx.endpoints.openai {
        // Validated: no quote or backslash can end the TOML string.
        config.push_str(&format!("openai_base_url = \"{url}\"\n"));
    }
    steps.write(format!("{HOME_DIR}/.codex/config.toml"), config, 0o644);
    steps.write(format!("{HOME_DIR}/.codex/AGENTS.md"), system_prompt, 0o644);
}

fn pi_steps(
    ctx: &SetupContext,
    system_prompt: &str,
    steps: &mut Steps,
    injected: &mut Vec<String>,
) {
    if let Some(key) = &ctx.keys.openrouter_api_key {
        steps.set_secret("OPENROUTER_API_KEY", key);
    }
    project_claude_md(ctx, steps, injected);
    steps.write(
        format!("{HOME_DIR}/.pi/agent/APPEND_SYSTEM.md"),
        system_prompt,
        0o644,
    );
    if let Some(url) = &ctx.endpoints.openrouter {
        let models = serde_json::json!({ "providers": { "openrouter": { "baseUrl": url } } });
        let text = serde_json::to_string_pretty(&models).unwrap_or_default() + "\n";
        steps.write(format!("{HOME_DIR}/.pi/agent/models.json"), text, 0o644);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(tool: ToolId) -> SetupContext {
        SetupContext {
            tool,
            repo_url: Some("https://github.com/acme/app.git".into()),
            branch_name: "courier/fix-login".into(),
            github_token: Some(Secret::new("ghp_supersecrettoken9876")),
            keys: ProviderKeys {
                anthropic_api_key: Some(Secret::new("sk-ant-api03-xxxxxxxx1111")),
                openrouter_api_key: Some(Secret::new("sk-or-v1-yyyyyyyy2222")),
                openai_api_key: Some(Secret::new("sk-proj-zzzzzzzz3333")),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn github_token_never_appears_in_a_command_or_debug_output() {
        for tool in ToolId::ALL {
            let plan = build_setup_plan(&ctx(tool)).unwrap();
            let debug = format!("{plan:?}");
            assert!(!debug.contains("supersecret"), "{debug}");
            for step in &plan.steps {
                if let SetupStep::Run { command, .. } = step {
                    assert!(
                        !command.contains("ghp_") && !command.contains("sk-"),
                        "{command}"
                    );
                }
            }
            let token_file = plan.steps.iter().find_map(|s| match s {
                SetupStep::WriteFile {
                    path,
                    mode,
                    contents,
                } if path == GITHUB_TOKEN_PATH => Some((*mode, contents)),
                _ => None,
            });
            let (mode, contents) = token_file.unwrap();
            assert_eq!(mode, 0o600);
            assert_eq!(contents.expose(), "ghp_supersecrettoken9876");
        }
    }

    #[test]
    fn no_credential_helper_without_a_token() {
        let mut c = ctx(ToolId::Claude);
        c.github_token = None;
        let plan = build_setup_plan(&c).unwrap();
        assert!(!format!("{plan:?}").contains("credential"));
    }

    #[test]
    fn credential_helper_comes_before_clone_and_branch_after() {
        let plan = build_setup_plan(&ctx(ToolId::Claude)).unwrap();
        let pos = |needle: &str| {
            plan.steps
                .iter()
                .position(
                    |s| matches!(s, SetupStep::Run { command, .. } if command.contains(needle)),
                )
                .unwrap()
        };
        assert!(pos("credential.helper") < pos("git clone"));
        assert!(pos("git clone") < pos("checkout"));
    }

    #[test]
    fn missing_keys_are_reported_with_what_would_do() {
        let mut c = ctx(ToolId::Claude);
        c.keys = ProviderKeys::default();
        let err = build_setup_plan(&c).unwrap_err().to_string();
        assert_eq!(
            err,
            "tool claude needs an Anthropic API key or an Anthropic OAuth token, but none was provided"
        );
        c.keys.anthropic_oauth_token = Some(Secret::new("sk-ant-oat01-abcdefgh"));
        let plan = build_setup_plan(&c).unwrap();
        assert!(plan.env().contains_key("CLAUDE_CODE_OAUTH_TOKEN"));
        c.tool = ToolId::Shell;
        c.keys = ProviderKeys::default();
        assert!(build_setup_plan(&c).is_ok());
    }

    #[test]
    fn bad_names_are_rejected_with_the_field() {
        let mut c = ctx(ToolId::Claude);
        c.branch_name = "-x; rm -rf /".into();
        assert!(matches!(
            build_setup_plan(&c),
            Err(ToolsError::InvalidName {
                field: "branch_name",
                ..
            })
        ));
        let mut c = ctx(ToolId::Claude);
        c.skills.push(Skill {
            name: "../etc".into(),
            content: String::new(),
        });
        assert!(matches!(
            build_setup_plan(&c),
            Err(ToolsError::InvalidName {
                field: "skills.name",
                ..
            })
        ));
        let mut c = ctx(ToolId::Claude);
        c.env_vars.insert("1BAD".into(), Secret::new("v"));
        assert!(matches!(
            build_setup_plan(&c),
            Err(ToolsError::InvalidName {
                field: "env_vars",
                ..
            })
        ));
    }

    #[test]
    fn endpoints_reach_each_clis_own_setting() {
        let mut c = ctx(ToolId::Claude);
        c.endpoints = ProviderEndpoints {
            anthropic: Some("http://127.0.0.1:8787".into()),
            openai: Some("http://127.0.0.1:8787/v1".into()),
            openrouter: Some("http://127.0.0.1:8787/api/v1".into()),
        };
        let plan = build_setup_plan(&c).unwrap();
        assert_eq!(
            plan.env()["ANTHROPIC_BASE_URL"].expose(),
            "http://127.0.0.1:8787"
        );
        let file = |tool, suffix: &str| {
            let mut c = c.clone();
            c.tool = tool;
            build_setup_plan(&c)
                .unwrap()
                .steps
                .into_iter()
                .find_map(|s| match s {
                    SetupStep::WriteFile { path, contents, .. } if path.ends_with(suffix) => {
                        Some(contents.expose().to_owned())
                    }
                    _ => None,
                })
                .unwrap()
        };
        assert!(
            file(ToolId::Codex, "config.toml")
                .contains("openai_base_url = \"http://127.0.0.1:8787/v1\"\n")
        );
        assert!(
            file(ToolId::Opencode, "opencode.json")
                .contains("\"baseURL\": \"http://127.0.0.1:8787/api/v1\"")
        );
        assert!(
            file(ToolId::Pi, "models.json")
                .contains("\"baseUrl\": \"http://127.0.0.1:8787/api/v1\"")
        );
    }

    #[test]
    fn an_endpoint_that_could_break_out_of_a_config_file_is_refused() {
        // An operator typo or a hostile value must not inject TOML keys into Codex's
        // config (e.g. a second line turning the sandbox policy off).
        for url in [
            "http://x\"\nsandbox_mode = \"read-only",
            "ftp://x",
            "http://",
            "http://a b",
            "http://a\\b",
        ] {
            let mut c = ctx(ToolId::Codex);
            c.endpoints.openai = Some(url.into());
            assert!(
                matches!(
                    build_setup_plan(&c),
                    Err(ToolsError::InvalidName {
                        field: "endpoints.openai",
                        ..
                    })
                ),
                "{url}"
            );
        }
    }

    #[test]
    fn without_a_repo_an_empty_one_is_created() {
        let mut c = ctx(ToolId::Shell);
        c.repo_url = None;
        let plan = build_setup_plan(&c).unwrap();
        assert!(format!("{plan:?}").contains("git init -q /home/user/project"));
    }
}
