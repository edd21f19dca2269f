//! The tool registry: which agent CLIs exist, what they need and what they can do.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ToolsError;

/// An agent CLI Courier can run in a sandbox.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ToolId {
    /// Claude Code (`claude`), the default and fullest tool.
    #[default]
    Claude,
    /// OpenCode (`opencode`), with OpenRouter models.
    Opencode,
    /// OpenAI Codex CLI (`codex`).
    Codex,
    /// Pi (`pi`), with OpenRouter models and CLAUDE.md support.
    Pi,
    /// Runs the prompt as a shell command: scripted tasks and demos with no model key.
    Shell,
}

impl ToolId {
    /// Every tool, in registry order.
    pub const ALL: [ToolId; 5] = [
        ToolId::Claude,
        ToolId::Opencode,
        ToolId::Codex,
        ToolId::Pi,
        ToolId::Shell,
    ];

    /// The tool's id as used in configs and URLs (`claude`, `opencode`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ToolId::Claude => "claude",
            ToolId::Opencode => "opencode",
            ToolId::Codex => "codex",
            ToolId::Pi => "pi",
            ToolId::Shell => "shell",
        }
    }
}

impl fmt::Display for ToolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn allowed_list(values: impl IntoIterator<Item = &'static str>) -> String {
    values.into_iter().collect::<Vec<_>>().join(", ")
}

impl FromStr for ToolId {
    type Err = ToolsError;

    /// Parses a tool id; the error names the field `tool` and the allowed values.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ToolId::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| ToolsError::InvalidValue {
                field: "tool",
                value: s.to_owned(),
                allowed: allowed_list(ToolId::ALL.map(ToolId::as_str)),
            })
    }
}

/// A kind of provider credential a tool can run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKeyKind {
    /// An Anthropic API key (`ANTHROPIC_API_KEY`).
    AnthropicApiKey,
    /// An Anthropic subscription OAuth token (`CLAUDE_CODE_OAUTH_TOKEN`).
    AnthropicOauthToken,
    /// An OpenRouter API key (`OPENROUTER_API_KEY`).
    OpenrouterApiKey,
    /// An OpenAI API key (passed to Codex as `CODEX_API_KEY`).
    OpenaiApiKey,
}

impl ProviderKeyKind {
    /// Every key kind.
    pub const ALL: [ProviderKeyKind; 4] = [
        ProviderKeyKind::AnthropicApiKey,
        ProviderKeyKind::AnthropicOauthToken,
        ProviderKeyKind::OpenrouterApiKey,
        ProviderKeyKind::OpenaiApiKey,
    ];

    /// The key kind's id (`anthropic_api_key`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKeyKind::AnthropicApiKey => "anthropic_api_key",
            ProviderKeyKind::AnthropicOauthToken => "anthropic_oauth_token",
            ProviderKeyKind::OpenrouterApiKey => "openrouter_api_key",
            ProviderKeyKind::OpenaiApiKey => "openai_api_key",
        }
    }

    /// A human description, e.g. `an Anthropic API key`.
    pub fn describe(self) -> &'static str {
        match self {
            ProviderKeyKind::AnthropicApiKey => "an Anthropic API key",
            ProviderKeyKind::AnthropicOauthToken => "an Anthropic OAuth token",
            ProviderKeyKind::OpenrouterApiKey => "an OpenRouter API key",
            ProviderKeyKind::OpenaiApiKey => "an OpenAI API key",
        }
    }
}

impl fmt::Display for ProviderKeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderKeyKind {
    type Err = ToolsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProviderKeyKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| ToolsError::InvalidValue {
                field: "provider_key_kind",
                value: s.to_owned(),
                allowed: allowed_list(ProviderKeyKind::ALL.map(ProviderKeyKind::as_str)),
            })
    }
}

/// How hard the model should think. Each tool maps it to its own flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThinkingEffort {
    /// Thinking off.
    None,
    /// Low effort.
    Low,
    /// Medium effort.
    Medium,
    /// High effort.
    High,
}

impl ThinkingEffort {
    /// Every level.
    pub const ALL: [ThinkingEffort; 4] = [
        ThinkingEffort::None,
        ThinkingEffort::Low,
        ThinkingEffort::Medium,
        ThinkingEffort::High,
    ];

    /// The level's name (`none`, `low`, `medium`, `high`).
    pub fn as_str(self) -> &'static str {
        match self {
            ThinkingEffort::None => "none",
            ThinkingEffort::Low => "low",
            ThinkingEffort::Medium => "medium",
            ThinkingEffort::High => "high",
        }
    }
}

impl fmt::Display for ThinkingEffort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ThinkingEffort {
    type Err = ToolsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ThinkingEffort::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| ToolsError::InvalidValue {
                field: "thinking_effort",
                value: s.to_owned(),
                allowed: allowed_list(ThinkingEffort::ALL.map(ThinkingEffort::as_str)),
            })
    }
}

/// A model a tool offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ModelSpec {
    /// The id passed to the CLI's model flag.
    pub id: &'static str,
    /// A short description for pickers.
    pub description: &'static str,
}

/// What a tool supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// It prints a machine-readable JSON event stream.
    pub stream_json: bool,
    /// It reads a `CLAUDE.md` in the project.
    pub claude_md: bool,
    /// Skills and commands can be injected (`.claude/skills`, `.claude/commands`).
    pub skills: bool,
    /// Compiled learnings are injected and extracted.
    pub learnings: bool,
    /// It accepts a thinking effort.
    pub thinking_effort: bool,
    /// It can continue its previous session (follow-up messages keep context).
    pub continue_session: bool,
}

/// Everything the registry knows about one tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolSpec {
    /// The tool's id.
    pub id: ToolId,
    /// A display name, e.g. `Claude Code`.
    pub display_name: &'static str,
    /// The executable's name, e.g. `claude`.
    pub binary: &'static str,
    /// The sandbox template that has the CLI pre-installed.
    pub default_template: &'static str,
    /// Key kinds of which **any one** satisfies the tool; empty when it needs none.
    pub required_keys: &'static [ProviderKeyKind],
    /// Models offered, in picker order.
    pub models: &'static [ModelSpec],
    /// The model used when none is chosen (`None` for tools without models).
    pub default_model: Option<&'static str>,
    /// What the tool supports.
    pub capabilities: Capabilities,
    /// The npm package the CLI is installed from, at its pinned version (`None` if built
    /// in). See [`install_command`].
    pub package: Option<NpmPackage>,
}

/// An agent CLI's npm package, pinned.
///
/// Templates install exactly [`NpmPackage::version`] (a deployment may pin another, see
/// [`install_command`]) so every sandbox of a template runs the CLI whose stream format
/// Courier's parsers were checked against (`tests/fixtures/real/<tool>-<version>-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NpmPackage {
    /// The package name, e.g. `@anthropic-ai/claude-code`.
    pub name: &'static str,
    /// The pinned version, e.g. `2.1.332`.
    pub version: &'static str,
    /// Packages of its dependency tree whose install scripts must run (npm's
    /// `--allow-scripts`): the CLIs that copy their native binary in a postinstall, and
    /// native helpers.
    pub allow_scripts: &'static [&'static str],
}

const CLAUDE_MODELS: &[ModelSpec] = &[
    ModelSpec {
        id: "claude-opus-4-6",
        description: "Highest quality: complex architecture and multi-file changes",
    },
    ModelSpec {
        id: "claude-sonnet-4-6",
        description: "Balanced quality and speed: most development tasks",
    },
    ModelSpec {
        id: "claude-haiku-4-5",
        description: "Fastest and cheapest: simple changes and reviews",
    },
];

const OPENCODE_MODELS: &[ModelSpec] = &[
    ModelSpec {
        id: "openrouter/google/gemini-2.5-pro",
        description: "Gemini 2.5 Pro via OpenRouter",
    },
    ModelSpec {
        id: "openrouter/anthropic/claude-sonnet-4",
        description: "Claude Sonnet 4 via OpenRouter",
    },
    ModelSpec {
        id: "openrouter/moonshotai/kimi-k2.6",
        description: "Kimi K2.6 via OpenRouter",
    },
];

/// Every id here is in the model catalog of the pinned Codex (`codex debug models`):
/// a model outside it runs on fallback metadata, without the `apply_patch` tool.
const CODEX_MODELS: &[ModelSpec] = &[
    ModelSpec {
        id: "gpt-6.2-sol",
        description: "GPT-6.2-Sol: fast, go-to model for coding (Codex's default)",
    },
    ModelSpec {
        id: "gpt-6.2-astra",
        description: "GPT-6.2-Astra: most capable, for complex work",
    },
    ModelSpec {
        id: "gpt-5.5",
        description: "GPT-5.5: the previous coding model",
    },
];

const PI_MODELS: &[ModelSpec] = &[
    ModelSpec {
        id: "openrouter/moonshotai/kimi-k2.6",
        description: "Kimi K2.6 via OpenRouter (Pi's default)",
    },
    ModelSpec {
        id: "openrouter/google/gemini-2.5-pro",
        description: "Gemini 2.5 Pro via OpenRouter",
    },
    ModelSpec {
        id: "openrouter/anthropic/claude-sonnet-4",
        description: "Claude Sonnet 4 via OpenRouter",
    },
];

const CLAUDE: ToolSpec = ToolSpec {
    id: ToolId::Claude,
    display_name: "Claude Code",
    binary: "claude",
    default_template: "claude",
    required_keys: &[
        ProviderKeyKind::AnthropicApiKey,
        ProviderKeyKind::AnthropicOauthToken,
    ],
    models: CLAUDE_MODELS,
    default_model: Some("claude-opus-4-6"),
    capabilities: Capabilities {
        stream_json: true,
        claude_md: true,
        skills: true,
        learnings: true,
        thinking_effort: true,
        continue_session: true,
    },
    package: Some(NpmPackage {
        name: "@anthropic-ai/claude-code",
        version: "2.1.332",
        // Its postinstall copies the native binary out of an optional dependency.
        allow_scripts: &["@anthropic-ai/claude-code"],
    }),
};

const OPENCODE: ToolSpec = ToolSpec {
    id: ToolId::Opencode,
    display_name: "OpenCode",
    binary: "opencode",
    default_template: "opencode",
    required_keys: &[ProviderKeyKind::OpenrouterApiKey],
    models: OPENCODE_MODELS,
    default_model: Some("openrouter/google/gemini-2.5-pro"),
    capabilities: Capabilities {
        stream_json: true,
        claude_md: true,
        skills: false,
        learnings: false,
        thinking_effort: true,
        continue_session: true,
    },
    package: Some(NpmPackage {
        name: "opencode-ai",
        version: "1.18.33",
        // Its postinstall copies the native binary out of an optional dependency.
        allow_scripts: &["opencode-ai"],
    }),
};

const CODEX: ToolSpec = ToolSpec {
    id: ToolId::Codex,
    display_name: "Codex",
    binary: "codex",
    default_template: "codex",
    required_keys: &[ProviderKeyKind::OpenaiApiKey],
    models: CODEX_MODELS,
    default_model: Some("gpt-6.2-sol"),
    capabilities: Capabilities {
        stream_json: true,
        claude_md: false,
        skills: false,
        learnings: false,
        thinking_effort: true,
        continue_session: true,
    },
    package: Some(NpmPackage {
        name: "@openai/codex",
        version: "0.171.0",
        allow_scripts: &[],
    }),
};

const PI: ToolSpec = ToolSpec {
    id: ToolId::Pi,
    display_name: "Pi",
    binary: "pi",
    default_template: "pi",
    required_keys: &[ProviderKeyKind::OpenrouterApiKey],
    models: PI_MODELS,
    default_model: Some("openrouter/moonshotai/kimi-k2.6"),
    capabilities: Capabilities {
        stream_json: true,
        claude_md: true,
        skills: false,
        learnings: false,
        thinking_effort: true,
        continue_session: true,
    },
    package: Some(NpmPackage {
        name: "@mariozechner/pi-coding-agent",
        version: "0.73.1",
        allow_scripts: &["koffi", "protobufjs", "@google/genai"],
    }),
};

const SHELL: ToolSpec = ToolSpec {
    id: ToolId::Shell,
    display_name: "Shell",
    binary: "sh",
    default_template: "base",
    required_keys: &[],
    models: &[],
    default_model: None,
    capabilities: Capabilities {
        stream_json: false,
        claude_md: false,
        skills: false,
        learnings: false,
        thinking_effort: false,
        continue_session: false,
    },
    package: None,
};

/// The registry entry for a tool.
pub fn spec(tool: ToolId) -> &'static ToolSpec {
    match tool {
        ToolId::Claude => &CLAUDE,
        ToolId::Opencode => &OPENCODE,
        ToolId::Codex => &CODEX,
        ToolId::Pi => &PI,
        ToolId::Shell => &SHELL,
    }
}

/// Every registry entry, in registry order.
pub fn all() -> impl Iterator<Item = &'static ToolSpec> {
    ToolId::ALL.into_iter().map(spec)
}

/// The shell command that installs `tool`'s CLI (run as root): `npm install -g` of its
/// [`NpmPackage`] at `version` (the pinned one when `None`), allowing exactly the install
/// scripts it needs. `None` for tools without a package.
///
/// ```
/// use courier_tools::{ToolId, registry::install_command};
///
/// assert_eq!(
///     install_command(ToolId::Claude, None).unwrap(),
///     "npm install -g --no-fund --no-audit --allow-scripts=@anthropic-ai/claude-code @anthropic-ai/claude-code@2.1.332"
/// );
/// assert!(install_command(ToolId::Codex, Some("0.170.0")).unwrap().ends_with(" @openai/codex@0.170.0"));
/// assert_eq!(install_command(ToolId::Shell, None), None);
/// ```
pub fn install_command(tool: ToolId, version: Option<&str>) -> Option<String> {
    let package = spec(tool).package?;
    let version = version
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .unwrap_or(package.version);
    let mut words = vec!["npm install -g --no-fund --no-audit".to_owned()];
    if !package.allow_scripts.is_empty() {
        words.push(format!(
            "--allow-scripts={}",
            package.allow_scripts.join(",")
        ));
    }
    words.push(crate::shell::shell_quote(&format!(
        "{}@{version}",
        package.name
    )));
    Some(words.join(" "))
}

/// Checks a CLI version a deployment pins (`tool_versions`): an npm version or dist-tag
/// (`1.2.3`, `1.2.3-beta.1`, `latest`). The error names the field and the rule.
pub fn validate_cli_version(version: &str) -> Result<(), ToolsError> {
    let ok = !version.is_empty()
        && version.len() <= 64
        && version.as_bytes()[0].is_ascii_alphanumeric()
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-+_".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ToolsError::InvalidName {
            field: "cli_version",
            value: version.to_owned(),
            rule: "an npm version or dist-tag: 1 to 64 characters of A-Za-z0-9 . - + _, starting with a letter or digit",
        })
    }
}

/// The model to run: the requested one (trimmed, when not empty) or the tool's default.
pub fn resolve_model(tool: ToolId, requested: Option<&str>) -> Option<String> {
    requested
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .or_else(|| spec(tool).default_model.map(str::to_owned))
}

const TEMPLATE_RULE: &str =
    "1 to 63 characters of a-z, 0-9, '-' and '_', with an optional ':tag' of the same characters";

fn is_template_word(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn validate_template(field: &'static str, value: &str) -> Result<(), ToolsError> {
    let ok = match value.split_once(':') {
        Some((name, tag)) => is_template_word(name) && is_template_word(tag),
        None => is_template_word(value),
    };
    if ok {
        Ok(())
    } else {
        Err(ToolsError::InvalidName {
            field,
            value: value.to_owned(),
            rule: TEMPLATE_RULE,
        })
    }
}

/// The template a sandbox is created from: a custom template (when given and not blank)
/// beats the tool's default.
///
/// ```
/// use courier_tools::{ToolId, select_template};
///
/// assert_eq!(select_template(ToolId::Codex, None).unwrap(), "codex");
/// assert_eq!(select_template(ToolId::Codex, Some("team-codex:v2")).unwrap(), "team-codex:v2");
/// ```
pub fn select_template(tool: ToolId, custom: Option<&str>) -> Result<String, ToolsError> {
    match custom.map(str::trim).filter(|c| !c.is_empty()) {
        Some(custom) => {
            validate_template("template", custom)?;
            Ok(custom.to_owned())
        }
        None => Ok(spec(tool).default_template.to_owned()),
    }
}

/// The template of a workflow's checker step: its own when set, else the main template.
pub fn checker_template(main_template: &str, checker_template: Option<&str>) -> String {
    checker_template
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .unwrap_or(main_template)
        .to_owned()
}

/// Builds the tag of a custom template built for `tool`: `<name>-<tool>[:<cli version>]`,
/// lowercased, with every character outside `a-z0-9-_` replaced by `-`.
///
/// ```
/// use courier_tools::{ToolId, build_custom_tag};
///
/// assert_eq!(build_custom_tag("Data Team", ToolId::Claude, Some("2.1.197")).unwrap(), "data-team-claude:2-1-197");
/// assert_eq!(build_custom_tag("ml", ToolId::Pi, None).unwrap(), "ml-pi");
/// ```
pub fn build_custom_tag(
    name: &str,
    tool: ToolId,
    cli_version: Option<&str>,
) -> Result<String, ToolsError> {
    fn sanitize(s: &str) -> String {
        let mapped: String = s
            .trim()
            .chars()
            .map(|c| {
                let c = c.to_ascii_lowercase();
                if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let mut out = String::with_capacity(mapped.len());
        for c in mapped.chars() {
            if c == '-' && (out.is_empty() || out.ends_with('-')) {
                continue;
            }
            out.push(c);
        }
        out.trim_end_matches('-').to_owned()
    }
    let base = sanitize(name);
    if base.is_empty() {
        return Err(ToolsError::InvalidName {
            field: "template_name",
            value: name.to_owned(),
            rule: "must contain at least one letter or digit",
        });
    }
    let mut tag = format!("{base}-{tool}");
    if let Some(version) = cli_version.map(sanitize).filter(|v| !v.is_empty()) {
        tag.push(':');
        tag.push_str(&version);
    }
    validate_template("template_name", &tag)?;
    Ok(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_ids_round_trip_and_unknown_names_the_field_and_allowed_values() {
        for t in ToolId::ALL {
            assert_eq!(t.as_str().parse::<ToolId>().unwrap(), t);
        }
        let err = "gemini".parse::<ToolId>().unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid tool \"gemini\": allowed values are claude, opencode, codex, pi, shell"
        );
    }

    #[test]
    fn claude_is_default_and_needs_an_anthropic_key_or_token() {
        assert_eq!(ToolId::default(), ToolId::Claude);
        let c = spec(ToolId::Claude);
        assert_eq!(c.default_model, Some("claude-opus-4-6"));
        assert!(c.models.iter().any(|m| m.id == "claude-haiku-4-5"));
        assert_eq!(
            c.required_keys,
            &[
                ProviderKeyKind::AnthropicApiKey,
                ProviderKeyKind::AnthropicOauthToken
            ]
        );
        assert!(spec(ToolId::Shell).required_keys.is_empty());
    }

    #[test]
    fn every_default_model_is_in_the_tools_model_list() {
        for s in all() {
            if let Some(d) = s.default_model {
                assert!(s.models.iter().any(|m| m.id == d), "{}", s.id);
            }
        }
    }

    #[test]
    fn effort_parse_error_lists_levels() {
        let err = "max".parse::<ThinkingEffort>().unwrap_err().to_string();
        assert!(
            err.contains("thinking_effort") && err.contains("none, low, medium, high"),
            "{err}"
        );
    }

    #[test]
    fn custom_template_beats_default_and_blank_custom_is_ignored() {
        assert_eq!(
            select_template(ToolId::Claude, Some("  ")).unwrap(),
            "claude"
        );
        assert_eq!(
            select_template(ToolId::Claude, Some("mine")).unwrap(),
            "mine"
        );
        assert!(select_template(ToolId::Claude, Some("Bad Name")).is_err());
    }

    #[test]
    fn checker_falls_back_to_main_template() {
        assert_eq!(checker_template("claude", None), "claude");
        assert_eq!(checker_template("claude", Some("")), "claude");
        assert_eq!(checker_template("claude", Some("opencode")), "opencode");
    }

    #[test]
    fn custom_tag_rejects_empty_names() {
        assert!(build_custom_tag("!!!", ToolId::Claude, None).is_err());
        assert_eq!(
            build_custom_tag("--a__b--", ToolId::Codex, Some("")).unwrap(),
            "a__b-codex"
        );
    }

    #[test]
    fn resolve_model_prefers_requested() {
        assert_eq!(
            resolve_model(ToolId::Claude, Some("claude-haiku-4-5")).as_deref(),
            Some("claude-haiku-4-5")
        );
        assert_eq!(
            resolve_model(ToolId::Claude, Some(" ")).as_deref(),
            Some("claude-opus-4-6")
        );
        assert_eq!(resolve_model(ToolId::Shell, None), None);
    }
}
