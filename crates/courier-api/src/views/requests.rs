//! The JSON bodies the API accepts. Unknown fields are refused (400), so a misspelt
//! option is an error rather than a silent default.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::schema::Object;

/// `POST /v1/projects`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProject {
    /// 1 to 200 characters (trimmed).
    pub name: String,
}

/// `PUT …/keys/{provider}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyValue {
    /// The provider key; it is stored encrypted and never shown again.
    #[schema(write_only)]
    pub value: String,
}

/// `POST /v1/sandboxes`: everything but `prompt` is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSandbox {
    /// The project; default: the caller's first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = "uuid")]
    pub project_id: Option<String>,
    /// The agent CLI; default `claude`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = tool)]
    pub tool: Option<String>,
    /// The model; default: the tool's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The task.
    pub prompt: String,
    /// Memory in MB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 256, maximum = 8192, default = 1024)]
    pub memory_mb: Option<i64>,
    /// CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 8, default = 2)]
    pub cpu_count: Option<i64>,
    /// Lifetime in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 60000, maximum = 14400000, default = 900000)]
    pub timeout_ms: Option<i64>,
    /// A custom template instead of the tool's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    /// Thinking effort for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_effort: Option<String>,
    /// A git repository to clone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_url: Option<String>,
    /// The branch to start from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_branch: Option<String>,
    /// The branch to work on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

/// `POST /v1/sandboxes/{id}/messages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    /// The follow-up for the agent (not blank).
    pub text: String,
}

/// `POST /v1/template-builds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateBuildRequest {
    /// A tool with a template to build.
    #[schema(schema_with = buildable_tool)]
    pub tool: String,
}

/// What `POST /v1/github/webhook` reads of GitHub's delivery (sent as GitHub sends it,
/// with many more fields; the signature covers the raw bytes). Documentation only: the
/// handler checks the signature over the bytes before reading them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GitHubWebhookPayload {
    /// `closed` for a merge.
    #[schema(examples("closed"))]
    pub action: Option<String>,
    /// The pull request's number.
    pub number: Option<i64>,
    /// The pull request: `html_url`, `number` and `merged` are read.
    #[schema(value_type = Option<Object>)]
    pub pull_request: Option<serde_json::Value>,
    /// The repository: `owner.login` and `name` are read.
    #[schema(value_type = Option<Object>)]
    pub repository: Option<serde_json::Value>,
}

/// Any tool id.
fn tool() -> Object {
    super::one_of(courier_tools::ToolId::ALL.iter().map(|t| t.as_str()), false)
}

/// The tools whose template the server can build.
fn buildable_tool() -> Object {
    let tools = courier_orchestrator::templates::buildable_tools();
    super::one_of(tools.iter().map(|t| t.as_str()), false)
}
