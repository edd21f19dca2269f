//! Personas: named agent configurations (tool, model, effort, system prompt, skills) a
//! workflow's steps run as, validated before they are stored.

use courier_store::{NamedText, NewPersona, Persona, PersonaId, ProjectId};
use courier_tools::{
    ThinkingEffort, ToolId, registry, validate_skill_content, validate_skill_name,
};

use super::Workflows;
use crate::config::validate_model;
use crate::settings::names;
use crate::{OrchestratorError, Result};

/// The longest persona name (characters).
pub const MAX_NAME: usize = 100;

/// A persona as it arrives from the API or the CLI.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersonaRequest {
    /// 1 to [`MAX_NAME`] characters, unique in the project.
    pub name: String,
    /// Its CLI; `None` leaves the workflow's.
    pub tool: Option<String>,
    /// Its model (one of its tool's).
    pub model: Option<String>,
    /// Its thinking effort (tools that have one).
    pub thinking_effort: Option<String>,
    /// Appended to the project's system prompt.
    pub system_prompt: Option<String>,
    /// Skills added to the project's.
    pub skills: Vec<NamedText>,
}

fn invalid(field: &'static str, message: impl Into<String>) -> OrchestratorError {
    OrchestratorError::InvalidConfig {
        field,
        message: message.into(),
    }
}

fn present(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

impl PersonaRequest {
    /// Checks every field; errors name the field and what is allowed.
    pub fn to_new(&self, project_id: ProjectId) -> Result<NewPersona> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME {
            return Err(invalid(
                "name",
                format!("must be 1 to {MAX_NAME} characters"),
            ));
        }
        let tool = match present(&self.tool) {
            Some(t) => Some(
                t.parse::<ToolId>()
                    .map_err(|e| invalid("tool", e.to_string()))?,
            ),
            None => None,
        };
        let model = present(&self.model);
        if let Some(model) = &model {
            validate_model(tool.unwrap_or_default(), Some(model))?;
        }
        let effort = present(&self.thinking_effort);
        if let Some(effort) = &effort {
            effort
                .parse::<ThinkingEffort>()
                .map_err(|e| invalid("thinking_effort", e.to_string()))?;
            if let Some(tool) = tool
                && !registry::spec(tool).capabilities.thinking_effort
            {
                return Err(invalid(
                    "thinking_effort",
                    format!(
                        "{} has no thinking effort",
                        registry::spec(tool).display_name
                    ),
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for skill in &self.skills {
            validate_skill_name(&skill.name).map_err(|e| names(e, "skills.name"))?;
            validate_skill_content(&skill.name, &skill.content)
                .map_err(|e| names(e, "skills.content"))?;
            if !seen.insert(skill.name.as_str()) {
                return Err(invalid(
                    "skills.name",
                    format!("{} appears twice; names must be unique", skill.name),
                ));
            }
        }
        Ok(NewPersona {
            project_id,
            name: name.to_owned(),
            tool: tool.map(|t| t.as_str().to_owned()),
            model,
            thinking_effort: effort,
            system_prompt: present(&self.system_prompt),
            skills: self.skills.clone(),
        })
    }
}

impl Workflows {
    /// Validates and stores a persona; a name already used in the project is a conflict.
    pub async fn create_persona(
        &self,
        project_id: ProjectId,
        request: &PersonaRequest,
    ) -> Result<Persona> {
        let new = request.to_new(project_id)?;
        Ok(self.store.create_persona(new).await?)
    }

    /// Validates and replaces a persona whole.
    pub async fn update_persona(&self, id: PersonaId, request: &PersonaRequest) -> Result<Persona> {
        let current = self.store.get_persona(id).await?;
        let new = request.to_new(current.project_id)?;
        Ok(self.store.update_persona(id, new).await?)
    }
}
