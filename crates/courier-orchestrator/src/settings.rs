//! Project settings: the defaults a project's sandboxes start from (repository, base
//! branch, sandbox configuration) and what their setup plans inject (env vars, system
//! prompt, `CLAUDE.md`, skills, slash commands).
//!
//! Env var values are encrypted with the key vault's master key like provider keys, each
//! bound to its project and name; the store keeps only ciphertext and the last four
//! characters. Names follow the rules courier-tools' setup plans enforce, checked when the
//! settings are saved so a create never fails on them later.

use std::collections::BTreeMap;

use courier_store::{EncryptedEnvVar, NamedText, ProjectId, ProjectSettings, SandboxDefaults};
use courier_tools::{
    CommandFile, Secret, Skill, validate_branch, validate_command_content, validate_command_name,
    validate_env_name, validate_repo_url, validate_skill_content, validate_skill_name,
};

use crate::config::CreateRequest;
use crate::keys::KeyVault;
use crate::{OrchestratorError, Result};

/// New settings for a project, replacing the stored ones whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsUpdate {
    /// Default repository to clone.
    pub repo_url: Option<String>,
    /// Default base branch.
    pub base_branch: Option<String>,
    /// Env vars by name; `None` keeps the value already stored under that name (which
    /// must exist). Names left out are removed.
    pub env_vars: BTreeMap<String, Option<Secret>>,
    /// The agent's system prompt (the tool's default when `None`).
    pub system_prompt: Option<String>,
    /// The project's `CLAUDE.md`.
    pub claude_md: Option<String>,
    /// Skills: lowercase `a-z0-9-` names, the full `SKILL.md` text.
    pub skills: Vec<NamedText>,
    /// Slash commands: `A-Za-z0-9_-` names, the command's Markdown.
    pub commands: Vec<NamedText>,
    /// Default sandbox configuration, checked like a create request.
    pub sandbox_defaults: SandboxDefaults,
}

/// What a project's settings give a sandbox's setup plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanSettings {
    /// Decrypted env vars.
    pub env_vars: BTreeMap<String, Secret>,
    /// System prompt.
    pub system_prompt: Option<String>,
    /// `CLAUDE.md`.
    pub claude_md: Option<String>,
    /// Skills.
    pub skills: Vec<Skill>,
    /// Slash commands.
    pub commands: Vec<CommandFile>,
}

impl PlanSettings {
    /// Adds a persona's profile: its system prompt after the project's, its skills
    /// replacing project skills of the same name and joining the rest.
    pub fn add_profile(&mut self, profile: &crate::config::AgentProfile) {
        if let Some(extra) = profile.system_prompt.as_deref().map(str::trim)
            && !extra.is_empty()
        {
            self.system_prompt = Some(match self.system_prompt.take() {
                Some(base) if !base.trim().is_empty() => format!("{}\n\n{extra}", base.trim_end()),
                _ => extra.to_owned(),
            });
        }
        for skill in &profile.skills {
            self.skills.retain(|s| s.name != skill.name);
            self.skills.push(Skill {
                name: skill.name.clone(),
                content: skill.content.clone(),
            });
        }
    }
}

/// The associated data binding an env var's ciphertext to its project and name.
fn env_aad(project: ProjectId, name: &str) -> Vec<u8> {
    format!("courier/env-var/v1|project:{project}|{name}").into_bytes()
}

/// A blank optional text is no text.
fn present(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

pub(crate) fn names(e: courier_tools::ToolsError, field: &'static str) -> OrchestratorError {
    match e {
        courier_tools::ToolsError::InvalidName { value, rule, .. } => {
            OrchestratorError::InvalidConfig {
                field,
                message: format!("{value:?} is not allowed: {rule}"),
            }
        }
        courier_tools::ToolsError::InvalidFile { name, problem, .. } => {
            OrchestratorError::InvalidConfig {
                field,
                message: format!("{name:?}: {problem}"),
            }
        }
        other => other.into(),
    }
}

impl SettingsUpdate {
    /// Checks every name and the sandbox defaults; errors name the field and what is
    /// allowed.
    pub fn validate(&self) -> Result<()> {
        if let Some(url) = &self.repo_url {
            validate_repo_url(url).map_err(|e| names(e, "repo_url"))?;
        }
        if let Some(branch) = &self.base_branch {
            validate_branch(branch).map_err(|e| names(e, "base_branch"))?;
        }
        for name in self.env_vars.keys() {
            validate_env_name(name).map_err(|e| names(e, "env_vars"))?;
        }
        for skill in &self.skills {
            validate_skill_name(&skill.name).map_err(|e| names(e, "skills.name"))?;
            validate_skill_content(&skill.name, &skill.content)
                .map_err(|e| names(e, "skills.content"))?;
        }
        for command in &self.commands {
            validate_command_name(&command.name).map_err(|e| names(e, "commands.name"))?;
            validate_command_content(&command.name, &command.content)
                .map_err(|e| names(e, "commands.content"))?;
        }
        let d = &self.sandbox_defaults;
        CreateRequest {
            tool: d.tool.clone(),
            model: d.model.clone(),
            prompt: "settings".into(),
            memory_mb: d.memory_mb,
            cpu_count: d.cpu_count,
            timeout_ms: d.timeout_ms,
            template_id: d.template_id.clone(),
            ..CreateRequest::default()
        }
        .validate()?;
        if let Some(template) = &d.checker_template_id {
            courier_tools::select_template(courier_tools::ToolId::default(), Some(template))
                .map_err(|e| OrchestratorError::InvalidConfig {
                    field: "checker_template_id",
                    message: e.to_string(),
                })?;
        }
        for (model, effort) in &d.thinking_effort {
            if model.trim().is_empty() {
                return Err(OrchestratorError::InvalidConfig {
                    field: "thinking_effort",
                    message: "a model name must not be empty".into(),
                });
            }
            effort
                .parse::<courier_tools::ThinkingEffort>()
                .map_err(|e| OrchestratorError::InvalidConfig {
                    field: "thinking_effort",
                    message: format!("{model}: {e}"),
                })?;
        }
        if d.token_budget == Some(0) {
            return Err(OrchestratorError::InvalidConfig {
                field: "token_budget",
                message: "a token budget must be at least 1 (leave it out for no limit)".into(),
            });
        }
        Ok(())
    }
}

impl KeyVault {
    /// Validates `update`, encrypts its env vars and replaces the project's settings.
    /// Env vars given without a value keep their stored one.
    pub async fn put_project_settings(
        &self,
        project: ProjectId,
        update: SettingsUpdate,
    ) -> Result<ProjectSettings> {
        update.validate()?;
        let stored = self.store().get_project_settings(project).await?;
        let mut env_vars = Vec::with_capacity(update.env_vars.len());
        for (name, value) in &update.env_vars {
            let var = match value {
                Some(secret) => EncryptedEnvVar {
                    name: name.clone(),
                    ciphertext: self.seal_bytes(&env_aad(project, name), secret.expose()),
                    // The one masking rule (courier-secret): a short value shows nothing of itself.
                    last_four: secret.shown_tail(),
                },
                None => stored
                    .env_vars
                    .iter()
                    .find(|v| &v.name == name)
                    .cloned()
                    .ok_or_else(|| OrchestratorError::InvalidConfig {
                        field: "env_vars",
                        message: format!("{name} has no stored value to keep: give its value"),
                    })?,
            };
            env_vars.push(var);
        }
        let settings = ProjectSettings {
            repo_url: present(update.repo_url),
            base_branch: present(update.base_branch),
            env_vars,
            system_prompt: present(update.system_prompt),
            claude_md: present(update.claude_md),
            skills: update.skills,
            commands: update.commands,
            sandbox_defaults: update.sandbox_defaults,
        };
        Ok(self.store().put_project_settings(project, settings).await?)
    }

    /// What the project's settings inject into a setup plan, env vars decrypted.
    pub fn plan_settings(
        &self,
        project: ProjectId,
        settings: &ProjectSettings,
    ) -> Result<PlanSettings> {
        let mut env_vars = BTreeMap::new();
        for var in &settings.env_vars {
            let secret = self
                .open_bytes(&env_aad(project, &var.name), &var.ciphertext)
                .ok_or_else(|| OrchestratorError::EnvVarDecryption {
                    name: var.name.clone(),
                })?;
            env_vars.insert(var.name.clone(), secret);
        }
        Ok(PlanSettings {
            env_vars,
            system_prompt: settings.system_prompt.clone(),
            claude_md: settings.claude_md.clone(),
            skills: settings
                .skills
                .iter()
                .map(|s| Skill {
                    name: s.name.clone(),
                    content: s.content.clone(),
                })
                .collect(),
            commands: settings
                .commands
                .iter()
                .map(|c| CommandFile {
                    name: c.name.clone(),
                    content: c.content.clone(),
                })
                .collect(),
        })
    }
}

/// `request` with every field it leaves unset taken from the project's settings: the
/// request's own values win.
pub fn with_defaults(mut request: CreateRequest, settings: &ProjectSettings) -> CreateRequest {
    fn fill<T: Clone>(field: &mut Option<T>, default: &Option<T>) {
        if field.is_none() {
            field.clone_from(default);
        }
    }
    let d = &settings.sandbox_defaults;
    fill(&mut request.repo_url, &settings.repo_url);
    fill(&mut request.base_branch, &settings.base_branch);
    fill(&mut request.tool, &d.tool);
    // A model belongs to its tool: the default model applies only with the default tool.
    if request.tool == d.tool {
        fill(&mut request.model, &d.model);
    }
    fill(&mut request.memory_mb, &d.memory_mb);
    fill(&mut request.cpu_count, &d.cpu_count);
    fill(&mut request.timeout_ms, &d.timeout_ms);
    fill(&mut request.template_id, &d.template_id);
    if request.thinking_effort.is_none() && !d.thinking_effort.is_empty() {
        let tool = request
            .tool
            .as_deref()
            .and_then(|t| t.trim().parse::<courier_tools::ToolId>().ok())
            .unwrap_or_default();
        let model = request
            .model
            .clone()
            .filter(|m| !m.trim().is_empty())
            .or_else(|| {
                courier_tools::registry::spec(tool)
                    .default_model
                    .map(str::to_owned)
            });
        if let Some(model) = model
            && courier_tools::registry::spec(tool)
                .capabilities
                .thinking_effort
        {
            request.thinking_effort = d.thinking_effort.get(&model).cloned();
        }
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Seeded;

    /// A file valid both as a skill (front matter naming it) and as a command body.
    fn text(name: &str) -> NamedText {
        NamedText {
            name: name.into(),
            content: format!("---\nname: {name}\ndescription: for tests\n---\nDo it.\n"),
        }
    }

    fn field_of(result: Result<ProjectSettings>) -> (&'static str, String) {
        match result {
            Err(OrchestratorError::InvalidConfig { field, message }) => (field, message),
            other => panic!("expected invalid config, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn env_vars_are_stored_encrypted_masked_and_decrypt_for_the_plan() {
        let seeded = Seeded::new().await;
        let vault = seeded.vault();
        let project = seeded.project.id;
        let update = SettingsUpdate {
            env_vars: [("API_TOKEN".to_owned(), Some(Secret::new("s3cret-value")))].into(),
            system_prompt: Some("Be brief.".into()),
            skills: vec![text("review")],
            commands: vec![NamedText {
                name: "Deploy_1".into(),
                content: "Deploy $ARGUMENTS.".into(),
            }],
            ..SettingsUpdate::default()
        };
        let stored = vault.put_project_settings(project, update).await.unwrap();
        let var = &stored.env_vars[0];
        assert_eq!(var.last_four, "alue");
        assert!(!String::from_utf8_lossy(&var.ciphertext).contains("s3cret"));
        let plan = vault.plan_settings(project, &stored).unwrap();
        assert_eq!(plan.env_vars["API_TOKEN"].expose(), "s3cret-value");
        assert_eq!(plan.system_prompt.as_deref(), Some("Be brief."));
        assert_eq!(plan.skills[0].name, "review");
        assert_eq!(plan.commands[0].name, "Deploy_1");

        // A short value shows nothing of itself.
        let short = SettingsUpdate {
            env_vars: [("PORT".to_owned(), Some(Secret::new("8080")))].into(),
            ..SettingsUpdate::default()
        };
        let shown = vault.put_project_settings(project, short).await.unwrap();
        assert_eq!(shown.env_vars[0].last_four, "");
        let stored = vault
            .put_project_settings(
                project,
                SettingsUpdate {
                    env_vars: [("API_TOKEN".to_owned(), Some(Secret::new("s3cret-value")))].into(),
                    system_prompt: Some("Be brief.".into()),
                    ..SettingsUpdate::default()
                },
            )
            .await
            .unwrap();

        // A name given without a value keeps the stored one; one left out is removed.
        let keep = SettingsUpdate {
            env_vars: [("API_TOKEN".to_owned(), None)].into(),
            ..SettingsUpdate::default()
        };
        let kept = vault.put_project_settings(project, keep).await.unwrap();
        assert_eq!(kept.env_vars, stored.env_vars);
        assert_eq!(kept.system_prompt, None);
        let unknown = SettingsUpdate {
            env_vars: [("OTHER".to_owned(), None)].into(),
            ..SettingsUpdate::default()
        };
        let (field, message) = field_of(vault.put_project_settings(project, unknown).await);
        assert_eq!(field, "env_vars");
        assert!(message.contains("OTHER"), "{message}");

        // A ciphertext moved to another project does not decrypt there.
        let other = Seeded::new().await;
        let err = vault.plan_settings(other.project.id, &stored).unwrap_err();
        assert!(
            matches!(err, OrchestratorError::EnvVarDecryption { ref name } if name == "API_TOKEN"),
            "{err:?}"
        );
        assert!(!err.to_string().contains("s3cret"));
    }

    #[tokio::test]
    async fn invalid_names_and_defaults_are_refused_naming_the_field_and_the_rule() {
        let seeded = Seeded::new().await;
        let vault = seeded.vault();
        let cases: Vec<(SettingsUpdate, &str, &str)> = vec![
            (
                SettingsUpdate {
                    env_vars: [("1BAD".to_owned(), Some(Secret::new("x")))].into(),
                    ..Default::default()
                },
                "env_vars",
                "A-Za-z0-9_",
            ),
            (
                SettingsUpdate {
                    skills: vec![text("Bad Skill")],
                    ..Default::default()
                },
                "skills.name",
                "a-z, 0-9",
            ),
            (
                SettingsUpdate {
                    commands: vec![text("a/b")],
                    ..Default::default()
                },
                "commands.name",
                "A-Za-z0-9",
            ),
            (
                SettingsUpdate {
                    skills: vec![NamedText {
                        name: "review".into(),
                        content: "Review it.".into(),
                    }],
                    ..Default::default()
                },
                "skills.content",
                "front matter",
            ),
            (
                SettingsUpdate {
                    commands: vec![NamedText {
                        name: "ship".into(),
                        content: "---\ncolour: red\n---\nShip.".into(),
                    }],
                    ..Default::default()
                },
                "commands.content",
                "allowed-tools",
            ),
            (
                SettingsUpdate {
                    base_branch: Some("-main".into()),
                    ..Default::default()
                },
                "base_branch",
                "not starting with '-'",
            ),
            (
                SettingsUpdate {
                    repo_url: Some("-u evil".into()),
                    ..Default::default()
                },
                "repo_url",
                "without whitespace",
            ),
            (
                SettingsUpdate {
                    sandbox_defaults: SandboxDefaults {
                        memory_mb: Some(99_999),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                "memory_mb",
                "allowed",
            ),
            (
                SettingsUpdate {
                    sandbox_defaults: SandboxDefaults {
                        tool: Some("vim".into()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                "tool",
                "claude",
            ),
        ];
        for (update, want_field, want_rule) in cases {
            let (field, message) =
                field_of(vault.put_project_settings(seeded.project.id, update).await);
            assert_eq!(field, want_field);
            assert!(message.contains(want_rule), "{field}: {message}");
        }
        assert_eq!(
            seeded
                .store
                .get_project_settings(seeded.project.id)
                .await
                .unwrap(),
            ProjectSettings::default()
        );
    }

    #[test]
    fn request_values_win_over_the_defaults() {
        let settings = ProjectSettings {
            repo_url: Some("https://example.invalid/a.git".into()),
            base_branch: Some("main".into()),
            sandbox_defaults: SandboxDefaults {
                tool: Some("codex".into()),
                model: Some("gpt-5".into()),
                memory_mb: Some(2048),
                cpu_count: Some(4),
                timeout_ms: Some(120_000),
                template_id: Some("tpl".into()),
                ..Default::default()
            },
            ..ProjectSettings::default()
        };
        let filled = with_defaults(CreateRequest::default(), &settings);
        assert_eq!(filled.tool.as_deref(), Some("codex"));
        assert_eq!(filled.model.as_deref(), Some("gpt-5"));
        assert_eq!(filled.repo_url, settings.repo_url);
        assert_eq!(filled.base_branch.as_deref(), Some("main"));
        assert_eq!(
            (filled.memory_mb, filled.cpu_count, filled.timeout_ms),
            (Some(2048), Some(4), Some(120_000))
        );
        assert_eq!(filled.template_id.as_deref(), Some("tpl"));

        let own = CreateRequest {
            tool: Some("claude".into()),
            memory_mb: Some(512),
            repo_url: Some("https://example.invalid/b.git".into()),
            ..CreateRequest::default()
        };
        let kept = with_defaults(own, &settings);
        assert_eq!(kept.tool.as_deref(), Some("claude"));
        // Another tool than the default one does not inherit the default's model.
        assert_eq!(kept.model, None);
        assert_eq!(kept.memory_mb, Some(512));
        assert_eq!(
            kept.repo_url.as_deref(),
            Some("https://example.invalid/b.git")
        );
    }

    #[test]
    fn the_projects_effort_for_the_resolved_model_applies_unless_the_request_sets_one() {
        let settings = ProjectSettings {
            sandbox_defaults: SandboxDefaults {
                thinking_effort: [("claude-opus-4-6".to_owned(), "high".to_owned())].into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let request = |model: &str, effort: Option<&str>| CreateRequest {
            tool: Some("claude".into()),
            model: Some(model.into()),
            thinking_effort: effort.map(str::to_owned),
            prompt: "x".into(),
            ..Default::default()
        };
        let effort = |r: CreateRequest| with_defaults(r, &settings).thinking_effort;
        assert_eq!(
            effort(request("claude-opus-4-6", None)).as_deref(),
            Some("high")
        );
        assert_eq!(effort(request("claude-haiku-4-5", None)), None);
        assert_eq!(
            effort(request("claude-opus-4-6", Some("low"))).as_deref(),
            Some("low")
        );
        let bad = SettingsUpdate {
            sandbox_defaults: SandboxDefaults {
                thinking_effort: [("claude-opus-4-6".to_owned(), "extreme".to_owned())].into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let err = bad.validate().unwrap_err().to_string();
        assert!(
            err.contains("thinking_effort") && err.contains("claude-opus-4-6"),
            "{err}"
        );
    }
}
