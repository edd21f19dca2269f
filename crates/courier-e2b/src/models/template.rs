//! Template shapes of the build API (`TemplateBuildRequestV3`, `TemplateBuildStartV2`,
//! `TemplateBuildInfo`, `Template`), as the official SDKs send and read them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Step;

/// Body of `POST /v3/templates` (`TemplateBuildRequestV3`). Only set keys are sent.
///
/// ```
/// use courier_e2b::BuildRequest;
/// let body = BuildRequest::new("claude").cpu_count(2).memory_mb(1024);
/// assert_eq!(serde_json::to_string(&body).unwrap(), r#"{"name":"claude","cpuCount":2,"memoryMB":1024}"#);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BuildRequest {
    /// The template's name, optionally with a tag (`name:tag`).
    pub name: String,
    /// Tags to assign to the build.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// CPU cores of the template's sandboxes.
    #[serde(rename = "cpuCount", skip_serializing_if = "Option::is_none")]
    pub cpu_count: Option<u32>,
    /// Memory of the template's sandboxes, in MiB.
    #[serde(rename = "memoryMB", skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
}

impl BuildRequest {
    /// A request for a build of template `name` with the server's default resources.
    ///
    /// ```
    /// assert_eq!(courier_e2b::BuildRequest::new("claude").name, "claude");
    /// ```
    pub fn new(name: impl Into<String>) -> BuildRequest {
        BuildRequest {
            name: name.into(),
            ..BuildRequest::default()
        }
    }

    /// Sets the CPU cores.
    ///
    /// ```
    /// assert_eq!(courier_e2b::BuildRequest::new("t").cpu_count(4).cpu_count, Some(4));
    /// ```
    pub fn cpu_count(mut self, cpus: u32) -> Self {
        self.cpu_count = Some(cpus);
        self
    }

    /// Sets the memory in MiB.
    ///
    /// ```
    /// assert_eq!(courier_e2b::BuildRequest::new("t").memory_mb(2048).memory_mb, Some(2048));
    /// ```
    pub fn memory_mb(mut self, memory_mb: u64) -> Self {
        self.memory_mb = Some(memory_mb);
        self
    }

    /// Adds a tag the build takes once ready (besides a `name:tag`'s own).
    ///
    /// ```
    /// let r = courier_e2b::BuildRequest::new("t:v2").tag("stable");
    /// assert_eq!(r.tags, ["stable"]);
    /// ```
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }
}

/// The answer to `POST /v3/templates` (`TemplateRequestResponseV3`): what
/// `Templates::request_build` returns.
///
/// ```
/// let json = r#"{"templateID":"t1","buildID":"b1","public":false,"names":["claude"],"tags":[],"aliases":["claude"]}"#;
/// let r: courier_e2b::BuildRequested = serde_json::from_str(json).unwrap();
/// assert_eq!((r.template_id.as_str(), r.build_id.as_str()), ("t1", "b1"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRequested {
    /// The template's id.
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// The new build's id.
    #[serde(rename = "buildID")]
    pub build_id: String,
    /// Whether the template is public.
    #[serde(default)]
    pub public: bool,
    /// The template's names.
    #[serde(default)]
    pub names: Vec<String>,
    /// The build's tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The template's aliases.
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// What a build does: the body of `POST /v2/templates/{id}/builds/{build}`
/// (`TemplateBuildStartV2`), serialized as the official SDK sends it.
///
/// ```
/// use courier_e2b::{Recipe, Step};
/// let recipe = Recipe::from_template("base")
///     .step(Step::run_as("npm install -g @anthropic-ai/claude-code", "root"))
///     .step(Step::Env(vec![("CI".into(), "1".into())]))
///     .ready_cmd("claude --version");
/// assert_eq!(serde_json::to_value(&recipe).unwrap(), serde_json::json!({
///     "steps": [
///         {"type": "RUN", "args": ["npm install -g @anthropic-ai/claude-code", "root"], "force": false},
///         {"type": "ENV", "args": ["CI", "1"], "force": false}
///     ],
///     "force": false,
///     "fromTemplate": "base",
///     "readyCmd": "claude --version"
/// }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recipe {
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Rebuild every step, ignoring any cache.
    pub force: bool,
    /// The template the build starts from (`base`, or another built template); empty
    /// (and not sent) when the build starts from [`from_image`](Self::from_image).
    #[serde(rename = "fromTemplate", skip_serializing_if = "String::is_empty")]
    pub from_template: String,
    /// The container image the build starts from (`ubuntu:22.04`), instead of a template.
    #[serde(rename = "fromImage", skip_serializing_if = "Option::is_none")]
    pub from_image: Option<String>,
    /// A command started in every new sandbox of the template.
    #[serde(rename = "startCmd", skip_serializing_if = "Option::is_none")]
    pub start_cmd: Option<String>,
    /// A command that must succeed before a new sandbox counts as ready.
    #[serde(rename = "readyCmd", skip_serializing_if = "Option::is_none")]
    pub ready_cmd: Option<String>,
}

impl Recipe {
    /// An empty recipe starting from `template`.
    ///
    /// ```
    /// assert_eq!(courier_e2b::Recipe::from_template("base").from_template, "base");
    /// ```
    pub fn from_template(template: impl Into<String>) -> Recipe {
        Recipe {
            steps: Vec::new(),
            force: false,
            from_template: template.into(),
            from_image: None,
            start_cmd: None,
            ready_cmd: None,
        }
    }

    /// An empty recipe starting from container image `image` (`ubuntu:22.04`,
    /// `ghcr.io/org/app@sha256:…`), pulled by the server from its registry (or the
    /// operator's mirror of it).
    ///
    /// ```
    /// let recipe = courier_e2b::Recipe::from_image("ubuntu:22.04");
    /// assert_eq!(serde_json::to_value(&recipe).unwrap(), serde_json::json!({
    ///     "steps": [], "force": false, "fromImage": "ubuntu:22.04"
    /// }));
    /// ```
    pub fn from_image(image: impl Into<String>) -> Recipe {
        Recipe {
            from_image: Some(image.into()),
            ..Recipe::from_template(String::new())
        }
    }

    /// Rebuilds every step instead of reusing cached results (`force`, the SDKs'
    /// `skip_cache()`).
    ///
    /// ```
    /// assert!(courier_e2b::Recipe::from_template("base").skip_cache().force);
    /// ```
    pub fn skip_cache(mut self) -> Self {
        self.force = true;
        self
    }

    /// Appends a step.
    ///
    /// ```
    /// let recipe = courier_e2b::Recipe::from_template("base").step(courier_e2b::Step::run("ls"));
    /// assert_eq!(recipe.steps.len(), 1);
    /// ```
    pub fn step(mut self, step: Step) -> Self {
        self.steps.push(step);
        self
    }

    /// Sets the start command.
    ///
    /// ```
    /// let recipe = courier_e2b::Recipe::from_template("base").start_cmd("python3 -m http.server");
    /// assert!(recipe.start_cmd.is_some());
    /// ```
    pub fn start_cmd(mut self, cmd: impl Into<String>) -> Self {
        self.start_cmd = Some(cmd.into());
        self
    }

    /// Sets the ready command.
    ///
    /// ```
    /// let recipe = courier_e2b::Recipe::from_template("base").ready_cmd("true");
    /// assert_eq!(recipe.ready_cmd.as_deref(), Some("true"));
    /// ```
    pub fn ready_cmd(mut self, cmd: impl Into<String>) -> Self {
        self.ready_cmd = Some(cmd.into());
        self
    }
}

/// The state of a build (`TemplateBuildStatus`).
///
/// ```
/// let s: courier_e2b::BuildState = serde_json::from_str(r#""ready""#).unwrap();
/// assert!(s.is_finished());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildState {
    /// Requested, not started.
    Waiting,
    /// Running its steps.
    Building,
    /// Done: the template can be used.
    Ready,
    /// Failed (see [`BuildStatus::reason`]).
    Error,
}

impl BuildState {
    /// Whether the build is over (`ready` or `error`).
    ///
    /// ```
    /// assert!(!courier_e2b::BuildState::Building.is_finished());
    /// ```
    pub fn is_finished(self) -> bool {
        matches!(self, BuildState::Ready | BuildState::Error)
    }

    /// The wire name.
    ///
    /// ```
    /// assert_eq!(courier_e2b::BuildState::Error.as_str(), "error");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            BuildState::Waiting => "waiting",
            BuildState::Building => "building",
            BuildState::Ready => "ready",
            BuildState::Error => "error",
        }
    }
}

/// One build log line (`BuildLogEntry`).
///
/// ```
/// let json = r#"{"timestamp":"2026-01-02T03:04:05Z","level":"info","message":"hi","step":"1"}"#;
/// let e: courier_e2b::BuildLogEntry = serde_json::from_str(json).unwrap();
/// assert_eq!(e.step.as_deref(), Some("1"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildLogEntry {
    /// When it was logged.
    pub timestamp: DateTime<Utc>,
    /// `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// The line.
    pub message: String,
    /// The build step it belongs to, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

/// Why a build ended in `error` (`BuildStatusReason`).
///
/// ```
/// let r: courier_e2b::BuildReason = serde_json::from_str(r#"{"message":"exit 1","step":"2"}"#).unwrap();
/// assert_eq!(r.step.as_deref(), Some("2"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildReason {
    /// What went wrong.
    pub message: String,
    /// The failed step, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

/// A build's status with the log entries from the requested offset (`TemplateBuildInfo`).
///
/// ```
/// let json = r#"{"templateID":"t","buildID":"b","status":"building","logEntries":[],"logs":[]}"#;
/// let s: courier_e2b::BuildStatus = serde_json::from_str(json).unwrap();
/// assert_eq!(s.status, courier_e2b::BuildState::Building);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildStatus {
    /// The template.
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// The build.
    #[serde(rename = "buildID")]
    pub build_id: String,
    /// Its state.
    pub status: BuildState,
    /// Log entries from the requested offset on (at most 100 per answer).
    #[serde(rename = "logEntries", default)]
    pub log_entries: Vec<BuildLogEntry>,
    /// Why it failed, for `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<BuildReason>,
}

/// A template as `GET /templates` lists it (the fields Courier uses; others are ignored).
///
/// ```
/// let json = r#"{"templateID":"t","buildID":"b","aliases":["claude"],"names":["claude"],"cpuCount":2,"memoryMB":1024,"buildStatus":"ready","public":false}"#;
/// let t: courier_e2b::TemplateInfo = serde_json::from_str(json).unwrap();
/// assert!(t.is_named("claude"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateInfo {
    /// The template's id.
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// Its last build.
    #[serde(rename = "buildID")]
    pub build_id: String,
    /// Its aliases.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Its names (`team/alias` when namespaced).
    #[serde(default)]
    pub names: Vec<String>,
    /// CPU cores of its sandboxes.
    #[serde(rename = "cpuCount", default)]
    pub cpu_count: u32,
    /// Memory of its sandboxes, in MiB.
    #[serde(rename = "memoryMB", default)]
    pub memory_mb: u64,
    /// The state of its last build.
    #[serde(rename = "buildStatus")]
    pub build_status: BuildState,
    /// Whether it is public.
    #[serde(default)]
    pub public: bool,
}

impl TemplateInfo {
    /// Whether `name` is this template's id, one of its aliases or names (ignoring a
    /// `team/` namespace).
    ///
    /// ```
    /// let t: courier_e2b::TemplateInfo = serde_json::from_str(r#"{"templateID":"t","buildID":"b","names":["acme/claude"],"buildStatus":"ready"}"#).unwrap();
    /// assert!(t.is_named("claude") && t.is_named("t") && !t.is_named("codex"));
    /// ```
    pub fn is_named(&self, name: &str) -> bool {
        self.template_id == name
            || self.aliases.iter().any(|a| a == name)
            || self
                .names
                .iter()
                .any(|n| n == name || n.rsplit('/').next() == Some(name))
    }
}

/// Body of `POST /templates/tags` (`AssignTemplateTagsRequest`): point `tags` at the
/// build `target` (`name:tag`) names.
///
/// ```
/// let body = courier_e2b::AssignTags { target: "claude:v1".into(), tags: vec!["stable".into()] };
/// assert_eq!(serde_json::to_string(&body).unwrap(), r#"{"target":"claude:v1","tags":["stable"]}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignTags {
    /// The build to tag, as `name:tag` (or `name`: its current build).
    pub target: String,
    /// The tags to point at it (bare, or `name:tag`).
    pub tags: Vec<String>,
}

/// Body of `DELETE /templates/tags` (`DeleteTemplateTagsRequest`).
///
/// ```
/// let body = courier_e2b::RemoveTags { name: "claude".into(), tags: vec!["stable".into()] };
/// assert_eq!(serde_json::to_string(&body).unwrap(), r#"{"name":"claude","tags":["stable"]}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveTags {
    /// The template (its name or id).
    pub name: String,
    /// The tags to remove.
    pub tags: Vec<String>,
}

/// Body of `PATCH /v2/templates/{templateID}` (`TemplateUpdateRequest`): what to change;
/// a field left out stays as it is. Only the template's owner may update it.
///
/// ```
/// let body = courier_e2b::TemplateUpdate { public: Some(true) };
/// assert_eq!(serde_json::to_string(&body).unwrap(), r#"{"public":true}"#);
/// // Unknown fields are refused by name.
/// let err = serde_json::from_str::<courier_e2b::TemplateUpdate>(r#"{"color":1}"#).unwrap_err();
/// assert!(err.to_string().contains("color"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateUpdate {
    /// Whether every API key (E2B: every team) may see the template and start sandboxes
    /// from it; otherwise only its owner's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public: Option<bool>,
}

/// What `PATCH /v2/templates/{templateID}` answers (`TemplateUpdateResponse`).
///
/// ```
/// let t: courier_e2b::TemplateUpdated = serde_json::from_str(r#"{"names":["claude"]}"#).unwrap();
/// assert_eq!(t.names, ["claude"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateUpdated {
    /// The template's names.
    pub names: Vec<String>,
}

/// What `POST /templates/tags` answers (`AssignedTemplateTags`).
///
/// ```
/// let t: courier_e2b::AssignedTags = serde_json::from_str(r#"{"buildID":"b1","tags":["stable"]}"#).unwrap();
/// assert_eq!(t.build_id, "b1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignedTags {
    /// The tags now pointing at the build (without the template's name).
    pub tags: Vec<String>,
    /// The build they point at.
    #[serde(rename = "buildID")]
    pub build_id: String,
}

/// One tag of a template (`TemplateTag`, listed by `GET /templates/{id}/tags`).
///
/// ```
/// let t: courier_e2b::TemplateTag = serde_json::from_str(
///     r#"{"tag":"v1","buildID":"b1","createdAt":"2026-01-02T03:04:05Z"}"#,
/// ).unwrap();
/// assert_eq!(t.tag, "v1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateTag {
    /// The tag.
    pub tag: String,
    /// The build it names.
    #[serde(rename = "buildID")]
    pub build_id: String,
    /// When it was assigned.
    #[serde(rename = "createdAt")]
    pub created_at: DateTime<Utc>,
}

/// One build of a template (`TemplateBuild`, in [`TemplateWithBuilds`]).
///
/// ```
/// let b: courier_e2b::TemplateBuild = serde_json::from_str(
///     r#"{"buildID":"b1","status":"ready","createdAt":"2026-01-02T03:04:05Z","updatedAt":"2026-01-02T03:04:09Z","cpuCount":2,"memoryMB":1024}"#,
/// ).unwrap();
/// assert_eq!(b.status, courier_e2b::BuildState::Ready);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateBuild {
    /// The build.
    #[serde(rename = "buildID")]
    pub build_id: String,
    /// Its state.
    pub status: BuildState,
    /// When it was requested.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// CPU cores of the template's sandboxes.
    pub cpu_count: u32,
    /// Memory of the template's sandboxes, in MiB.
    #[serde(rename = "memoryMB")]
    pub memory_mb: u64,
    /// Disk size of the template's sandboxes, in MiB.
    #[serde(
        rename = "diskSizeMB",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub disk_size_mb: Option<u64>,
    /// The envd version its sandboxes run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envd_version: Option<String>,
}

/// A template with its builds, newest first (`TemplateWithBuilds`, `GET
/// /templates/{templateID}`).
///
/// ```
/// let t: courier_e2b::TemplateWithBuilds = serde_json::from_str(
///     r#"{"templateID":"t","public":false,"aliases":["a"],"names":["a"],"createdAt":"2026-01-02T03:04:05Z","updatedAt":"2026-01-02T03:04:05Z","lastSpawnedAt":null,"spawnCount":0,"builds":[]}"#,
/// ).unwrap();
/// assert_eq!(t.names, ["a"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateWithBuilds {
    /// The template's id.
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// Whether it is public.
    pub public: bool,
    /// Its aliases (deprecated spelling of `names`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Its names.
    #[serde(default)]
    pub names: Vec<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When a sandbox last started from it.
    #[serde(default)]
    pub last_spawned_at: Option<DateTime<Utc>>,
    /// How many sandboxes started from it.
    #[serde(default)]
    pub spawn_count: u64,
    /// Its builds, newest first.
    #[serde(default)]
    pub builds: Vec<TemplateBuild>,
}

/// What `GET /templates/{id}/builds/{build}/logs` answers (`TemplateBuildLogsResponse`).
///
/// ```
/// let l: courier_e2b::BuildLogs = serde_json::from_str(r#"{"logs":[]}"#).unwrap();
/// assert!(l.logs.is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildLogs {
    /// The entries, in the requested direction.
    #[serde(default)]
    pub logs: Vec<BuildLogEntry>,
}
