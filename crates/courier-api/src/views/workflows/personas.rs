//! Personas: named agent configurations for workflow steps.

use chrono::{DateTime, Utc};
use courier_orchestrator::work;
use courier_store::{self as store, PersonaId, ProjectId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::views::NamedFile;

/// A named agent setup of a project that workflow steps can run as.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Persona {
    /// Its id.
    #[schema(value_type = uuid::Uuid)]
    pub id: PersonaId,
    /// Its project.
    #[schema(value_type = uuid::Uuid)]
    pub project_id: ProjectId,
    /// Its name, unique in the project.
    pub name: String,
    /// CLI tool id (`null`: the workflow's).
    pub tool: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Thinking effort.
    pub thinking_effort: Option<String>,
    /// Appended to the project's system prompt.
    pub system_prompt: Option<String>,
    /// Skills added to the project's.
    pub skills: Vec<NamedFile>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Time of the last change.
    pub updated_at: DateTime<Utc>,
}

impl From<store::Persona> for Persona {
    fn from(p: store::Persona) -> Self {
        Persona {
            id: p.id,
            project_id: p.project_id,
            name: p.name,
            tool: p.tool,
            model: p.model,
            thinking_effort: p.thinking_effort,
            system_prompt: p.system_prompt,
            skills: p
                .skills
                .into_iter()
                .map(|s| NamedFile {
                    name: s.name,
                    content: s.content,
                })
                .collect(),
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// A project's personas, by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PersonaList {
    /// The personas.
    pub items: Vec<Persona>,
}

/// `POST /v1/projects/{id}/personas` and `PUT /v1/personas/{id}` (replaces it whole).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PersonaRequest {
    /// 1 to 100 characters, unique in the project.
    pub name: String,
    /// CLI tool id (`claude`, `opencode`, `codex`, `pi`, `shell`); `null`: the workflow's.
    #[serde(default)]
    pub tool: Option<String>,
    /// Model (one of its tool's).
    #[serde(default)]
    pub model: Option<String>,
    /// Thinking effort (`none`, `low`, `medium`, `high`), for tools that have one.
    #[serde(default)]
    pub thinking_effort: Option<String>,
    /// Appended to the project's system prompt.
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// Skills added to the project's (names unique).
    #[serde(default)]
    pub skills: Vec<NamedFile>,
}

impl From<PersonaRequest> for work::PersonaRequest {
    fn from(r: PersonaRequest) -> Self {
        work::PersonaRequest {
            name: r.name,
            tool: r.tool,
            model: r.model,
            thinking_effort: r.thinking_effort,
            system_prompt: r.system_prompt,
            skills: r
                .skills
                .into_iter()
                .map(|s| store::NamedText {
                    name: s.name,
                    content: s.content,
                })
                .collect(),
        }
    }
}
