//! Create-request validation: ranges and defaults, tool, model and template.

use std::ops::RangeInclusive;

use courier_store::{NamedText, ProjectId, SandboxConfig, SandboxLinks, UserId};
use courier_tools::{ThinkingEffort, ToolId, registry, select_template};

use crate::{OrchestratorError, Result};

/// Allowed memory in MB.
pub const MEMORY_MB: RangeInclusive<i64> = 256..=8192;
/// Memory when none is requested.
pub const DEFAULT_MEMORY_MB: i64 = 1024;
/// Allowed CPU count.
pub const CPU_COUNT: RangeInclusive<i64> = 1..=8;
/// CPUs when none are requested.
pub const DEFAULT_CPU_COUNT: i64 = 2;
/// Allowed sandbox lifetime in milliseconds (1 minute to 4 hours).
pub const TIMEOUT_MS: RangeInclusive<i64> = 60_000..=14_400_000;
/// Lifetime when none is requested (15 minutes).
pub const DEFAULT_TIMEOUT_MS: i64 = 900_000;

/// A request to create a sandbox, as it arrives from the API (not yet validated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateRequest {
    /// Who starts it.
    pub user_id: UserId,
    /// Its project.
    pub project_id: ProjectId,
    /// Tool id (`claude`, `opencode`, `codex`, `pi`, `shell`); `None` means `claude`.
    pub tool: Option<String>,
    /// Model; `None` or blank uses the tool's default.
    pub model: Option<String>,
    /// The first prompt (not blank).
    pub prompt: String,
    /// Memory in MB ([`MEMORY_MB`], default [`DEFAULT_MEMORY_MB`]).
    pub memory_mb: Option<i64>,
    /// CPUs ([`CPU_COUNT`], default [`DEFAULT_CPU_COUNT`]).
    pub cpu_count: Option<i64>,
    /// Lifetime in ms ([`TIMEOUT_MS`], default [`DEFAULT_TIMEOUT_MS`]).
    pub timeout_ms: Option<i64>,
    /// A custom template instead of the tool's.
    pub template_id: Option<String>,
    /// Thinking effort (`none`, `low`, `medium`, `high`), for tools that accept one.
    pub thinking_effort: Option<String>,
    /// Repository to clone.
    pub repo_url: Option<String>,
    /// Branch to clone from.
    pub base_branch: Option<String>,
    /// Feature branch; `None` derives `courier/<sandbox id>`.
    pub branch: Option<String>,
    /// Where it came from.
    pub links: SandboxLinks,
    /// What a persona adds to the project's setup (workflow steps).
    pub profile: AgentProfile,
}

/// A persona's part of a sandbox's setup, on top of the project's settings: its system
/// prompt follows the project's, its skills join the project's (a persona skill replaces
/// a project skill of the same name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentProfile {
    /// Appended to the project's system prompt.
    pub system_prompt: Option<String>,
    /// Added to the project's skills.
    pub skills: Vec<NamedText>,
}

/// A validated create request: every value in range, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidConfig {
    /// The tool.
    pub tool: ToolId,
    /// The model to run (`None` for tools without models).
    pub model: Option<String>,
    /// The template to create the sandbox from.
    pub template: String,
    /// The thinking effort, when requested.
    pub thinking_effort: Option<ThinkingEffort>,
    /// What the store records.
    pub sandbox: SandboxConfig,
}

fn in_range(
    field: &'static str,
    value: Option<i64>,
    range: RangeInclusive<i64>,
    default: i64,
    unit: &str,
) -> Result<i64> {
    let value = value.unwrap_or(default);
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(OrchestratorError::InvalidConfig {
            field,
            message: format!(
                "{value} is out of range: allowed {}–{} {unit}",
                range.start(),
                range.end()
            ),
        })
    }
}

/// The tool's model for a requested one: the tool's default when blank, one of the tool's
/// models, or (for OpenRouter tools) any `openrouter/` model id.
pub fn validate_model(tool: ToolId, requested: Option<&str>) -> Result<Option<String>> {
    let spec = registry::spec(tool);
    let requested = requested.map(str::trim).filter(|m| !m.is_empty());
    let Some(model) = requested else {
        return Ok(spec.default_model.map(str::to_owned));
    };
    let known = spec.models.iter().any(|m| m.id == model);
    let open_router = spec
        .default_model
        .is_some_and(|d| d.starts_with("openrouter/"))
        && model.starts_with("openrouter/")
        && model.len() > "openrouter/".len();
    if known || open_router {
        return Ok(Some(model.to_owned()));
    }
    let allowed = if spec.models.is_empty() {
        format!("{} takes no model", spec.display_name)
    } else {
        let ids: Vec<_> = spec.models.iter().map(|m| m.id).collect();
        format!("allowed for {}: {}", spec.display_name, ids.join(", "))
    };
    Err(OrchestratorError::InvalidConfig {
        field: "model",
        message: format!("`{model}` is not available: {allowed}"),
    })
}

impl CreateRequest {
    /// Validates every field and fills in the defaults.
    ///
    /// ```
    /// use courier_orchestrator::config::CreateRequest;
    ///
    /// let request = CreateRequest { prompt: "fix the login".into(), ..Default::default() };
    /// let valid = request.validate().unwrap();
    /// assert_eq!((valid.sandbox.memory_mb, valid.sandbox.cpu_count, valid.sandbox.timeout_ms), (1024, 2, 900_000));
    ///
    /// let err = CreateRequest { memory_mb: Some(100), ..request }.validate().unwrap_err();
    /// assert_eq!(err.to_string(), "invalid memory_mb: 100 is out of range: allowed 256–8192 MB");
    /// ```
    ///
    /// # Errors
    ///
    /// [`OrchestratorError::InvalidConfig`] naming the field and its allowed range or values.
    pub fn validate(&self) -> Result<ValidConfig> {
        let tool = match self
            .tool
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            Some(t) => t
                .parse::<ToolId>()
                .map_err(|e| OrchestratorError::InvalidConfig {
                    field: "tool",
                    message: e.to_string(),
                })?,
            None => ToolId::default(),
        };
        if self.prompt.trim().is_empty() {
            return Err(OrchestratorError::InvalidConfig {
                field: "prompt",
                message: "must not be empty".into(),
            });
        }
        let memory_mb = in_range(
            "memory_mb",
            self.memory_mb,
            MEMORY_MB,
            DEFAULT_MEMORY_MB,
            "MB",
        )?;
        let cpu_count = in_range(
            "cpu_count",
            self.cpu_count,
            CPU_COUNT,
            DEFAULT_CPU_COUNT,
            "CPUs",
        )?;
        let timeout_ms = in_range(
            "timeout_ms",
            self.timeout_ms,
            TIMEOUT_MS,
            DEFAULT_TIMEOUT_MS,
            "ms",
        )?;
        let model = validate_model(tool, self.model.as_deref())?;
        let template = select_template(tool, self.template_id.as_deref()).map_err(|e| {
            OrchestratorError::InvalidConfig {
                field: "template_id",
                message: e.to_string(),
            }
        })?;
        let thinking_effort = match self.thinking_effort.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(e) => {
                if !registry::spec(tool).capabilities.thinking_effort {
                    return Err(OrchestratorError::InvalidConfig {
                        field: "thinking_effort",
                        message: format!(
                            "{} has no thinking effort",
                            registry::spec(tool).display_name
                        ),
                    });
                }
                Some(e.parse::<ThinkingEffort>().map_err(|err| {
                    OrchestratorError::InvalidConfig {
                        field: "thinking_effort",
                        message: err.to_string(),
                    }
                })?)
            }
        };
        let custom_template = self
            .template_id
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        Ok(ValidConfig {
            tool,
            model,
            template,
            thinking_effort,
            sandbox: SandboxConfig {
                template_id: custom_template,
                timeout_ms,
                memory_mb,
                cpu_count,
                ..SandboxConfig::default()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> CreateRequest {
        CreateRequest {
            prompt: "add a health check".into(),
            ..Default::default()
        }
    }

    fn field_of(err: OrchestratorError) -> (&'static str, String) {
        match err {
            OrchestratorError::InvalidConfig { field, message } => (field, message),
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_1024_mb_2_cpus_15_minutes_and_claude() {
        let v = request().validate().unwrap();
        assert_eq!(v.tool, ToolId::Claude);
        assert_eq!(v.model.as_deref(), Some("claude-opus-4-6"));
        assert_eq!(v.template, "claude");
        assert_eq!(v.sandbox.memory_mb, 1024);
        assert_eq!(v.sandbox.cpu_count, 2);
        assert_eq!(v.sandbox.timeout_ms, 900_000);
        assert_eq!(v.sandbox.template_id, None);
    }

    #[test]
    fn range_bounds_are_inclusive() {
        for (mem, cpu, timeout) in [(256, 1, 60_000), (8192, 8, 14_400_000)] {
            let v = CreateRequest {
                memory_mb: Some(mem),
                cpu_count: Some(cpu),
                timeout_ms: Some(timeout),
                ..request()
            }
            .validate()
            .unwrap();
            assert_eq!(
                (
                    v.sandbox.memory_mb,
                    v.sandbox.cpu_count,
                    v.sandbox.timeout_ms
                ),
                (mem, cpu, timeout)
            );
        }
    }

    #[test]
    fn out_of_range_values_name_the_field_and_the_range() {
        let cases = [
            (
                CreateRequest {
                    memory_mb: Some(255),
                    ..request()
                },
                "memory_mb",
                "256–8192 MB",
            ),
            (
                CreateRequest {
                    memory_mb: Some(8193),
                    ..request()
                },
                "memory_mb",
                "256–8192 MB",
            ),
            (
                CreateRequest {
                    cpu_count: Some(0),
                    ..request()
                },
                "cpu_count",
                "1–8 CPUs",
            ),
            (
                CreateRequest {
                    cpu_count: Some(9),
                    ..request()
                },
                "cpu_count",
                "1–8 CPUs",
            ),
            (
                CreateRequest {
                    timeout_ms: Some(59_999),
                    ..request()
                },
                "timeout_ms",
                "60000–14400000 ms",
            ),
            (
                CreateRequest {
                    timeout_ms: Some(14_400_001),
                    ..request()
                },
                "timeout_ms",
                "60000–14400000 ms",
            ),
        ];
        for (req, field, range) in cases {
            let (f, message) = field_of(req.validate().unwrap_err());
            assert_eq!(f, field);
            assert!(message.contains(range), "{message}");
        }
    }

    #[test]
    fn an_unknown_tool_lists_the_allowed_tools() {
        let (field, message) = field_of(
            CreateRequest {
                tool: Some("cursor".into()),
                ..request()
            }
            .validate()
            .unwrap_err(),
        );
        assert_eq!(field, "tool");
        assert!(
            message.contains("claude, opencode, codex, pi, shell"),
            "{message}"
        );
    }

    #[test]
    fn models_must_belong_to_the_tool() {
        let v = CreateRequest {
            tool: Some("codex".into()),
            model: Some("gpt-5.5".into()),
            ..request()
        }
        .validate()
        .unwrap();
        assert_eq!(v.model.as_deref(), Some("gpt-5.5"));

        let (field, message) = field_of(
            CreateRequest {
                tool: Some("codex".into()),
                model: Some("claude-opus-4-6".into()),
                ..request()
            }
            .validate()
            .unwrap_err(),
        );
        assert_eq!(field, "model");
        assert!(message.contains("gpt-6.2-sol"), "{message}");

        let v = CreateRequest {
            tool: Some("opencode".into()),
            model: Some("openrouter/qwen/qwen3-coder".into()),
            ..request()
        }
        .validate()
        .unwrap();
        assert_eq!(v.model.as_deref(), Some("openrouter/qwen/qwen3-coder"));

        let (field, _) = field_of(
            CreateRequest {
                tool: Some("shell".into()),
                model: Some("gpt-6.2-astra".into()),
                ..request()
            }
            .validate()
            .unwrap_err(),
        );
        assert_eq!(field, "model");
    }

    #[test]
    fn a_custom_template_beats_the_tools_and_is_checked() {
        let v = CreateRequest {
            template_id: Some("team-claude:v2".into()),
            ..request()
        }
        .validate()
        .unwrap();
        assert_eq!(v.template, "team-claude:v2");
        assert_eq!(v.sandbox.template_id.as_deref(), Some("team-claude:v2"));
        let (field, _) = field_of(
            CreateRequest {
                template_id: Some("Bad Template".into()),
                ..request()
            }
            .validate()
            .unwrap_err(),
        );
        assert_eq!(field, "template_id");
    }

    #[test]
    fn thinking_effort_is_parsed_and_only_for_tools_that_take_it() {
        let v = CreateRequest {
            thinking_effort: Some("high".into()),
            ..request()
        }
        .validate()
        .unwrap();
        assert_eq!(v.thinking_effort, Some(ThinkingEffort::High));
        let (field, message) = field_of(
            CreateRequest {
                thinking_effort: Some("max".into()),
                ..request()
            }
            .validate()
            .unwrap_err(),
        );
        assert_eq!(field, "thinking_effort");
        assert!(message.contains("none, low, medium, high"), "{message}");
        assert!(
            CreateRequest {
                tool: Some("shell".into()),
                thinking_effort: Some("low".into()),
                ..request()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn a_blank_prompt_is_rejected() {
        let (field, _) = field_of(
            CreateRequest {
                prompt: "  ".into(),
                ..request()
            }
            .validate()
            .unwrap_err(),
        );
        assert_eq!(field, "prompt");
    }
}
