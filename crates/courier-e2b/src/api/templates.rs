//! Template builds over E2B's template API: request a build, start it from a typed
//! [`Recipe`], follow its status and logs, list and delete templates.
//!
//! The wire format is the official SDKs' (`TemplateBuildRequestV3`,
//! `TemplateBuildStartV2`, `TemplateBuildInfo`), so the same calls work against E2B
//! cloud and courier-sandboxd.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::{Deserialize, Serialize, Serializer, ser::SerializeStruct};

use super::{Client, segment};
use crate::{Error, NotFoundKind, Result};

/// How often [`Templates::wait`] polls by default (the official SDK's 0.2 s).
pub const DEFAULT_BUILD_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The template API of a [`Client`]: `client.templates()`.
///
/// ```no_run
/// # async fn demo() -> courier_e2b::Result<()> {
/// use courier_e2b::{BuildRequest, Client, Recipe, Step};
///
/// let client = Client::from_env()?;
/// let templates = client.templates();
/// let build = templates.request_build(&BuildRequest::new("claude")).await?;
/// let recipe = Recipe::from_template("base")
///     .step(Step::run_as("npm install -g @anthropic-ai/claude-code", "root"));
/// templates.start_build(&build.template_id, &build.build_id, &recipe).await?;
/// templates
///     .wait(&build.template_id, &build.build_id, |entry| println!("{}", entry.message))
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Templates {
    client: Client,
}

impl Client {
    /// The template build API of this client.
    ///
    /// ```
    /// use courier_e2b::{Client, ConnectionConfig};
    /// let client = Client::new(ConnectionConfig::builder().api_key("e2b_x").build().unwrap()).unwrap();
    /// let templates = client.templates();
    /// ```
    pub fn templates(&self) -> Templates {
        Templates {
            client: self.clone(),
        }
    }
}

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
}

/// The answer to [`Templates::request_build`] (`TemplateRequestResponseV3`).
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

/// One build step. Serialized as the SDKs' `TemplateStep`: `{"type", "args", "force"}`.
///
/// ```
/// use courier_e2b::Step;
/// let json = serde_json::to_value(Step::run_as("apt-get install -y vim", "root")).unwrap();
/// assert_eq!(json, serde_json::json!({"type": "RUN", "args": ["apt-get install -y vim", "root"], "force": false}));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A shell command, as `user` (the template's user when `None`).
    Run {
        /// The command line.
        cmd: String,
        /// The Unix user to run it as.
        user: Option<String>,
    },
    /// Environment variables for later steps and for the template's sandboxes.
    Env(Vec<(String, String)>),
    /// The working directory of later steps and of the template's sandboxes.
    Workdir(String),
    /// The user of later steps and of the template's sandboxes.
    User(String),
}

impl Step {
    /// A `RUN` step as the template's current user.
    ///
    /// ```
    /// assert!(matches!(courier_e2b::Step::run("ls"), courier_e2b::Step::Run { user: None, .. }));
    /// ```
    pub fn run(cmd: impl Into<String>) -> Step {
        Step::Run {
            cmd: cmd.into(),
            user: None,
        }
    }

    /// A `RUN` step as `user`.
    ///
    /// ```
    /// assert!(matches!(courier_e2b::Step::run_as("ls", "root"), courier_e2b::Step::Run { user: Some(_), .. }));
    /// ```
    pub fn run_as(cmd: impl Into<String>, user: impl Into<String>) -> Step {
        Step::Run {
            cmd: cmd.into(),
            user: Some(user.into()),
        }
    }

    /// The wire `type` of this step.
    ///
    /// ```
    /// assert_eq!(courier_e2b::Step::Workdir("/app".into()).kind(), "WORKDIR");
    /// ```
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Run { .. } => "RUN",
            Step::Env(_) => "ENV",
            Step::Workdir(_) => "WORKDIR",
            Step::User(_) => "USER",
        }
    }

    fn args(&self) -> Vec<&str> {
        match self {
            Step::Run { cmd, user } => {
                let mut args = vec![cmd.as_str()];
                args.extend(user.as_deref());
                args
            }
            Step::Env(pairs) => pairs
                .iter()
                .flat_map(|(k, v)| [k.as_str(), v.as_str()])
                .collect(),
            Step::Workdir(path) => vec![path.as_str()],
            Step::User(user) => vec![user.as_str()],
        }
    }
}

impl Serialize for Step {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("TemplateStep", 3)?;
        s.serialize_field("type", self.kind())?;
        s.serialize_field("args", &self.args())?;
        s.serialize_field("force", &false)?;
        s.end()
    }
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
    /// The template the build starts from (`base`, or another built template).
    #[serde(rename = "fromTemplate")]
    pub from_template: String,
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
            start_cmd: None,
            ready_cmd: None,
        }
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

impl Templates {
    /// Registers a build (`POST /v3/templates`): the template id (new, or the existing
    /// template of that name) and the new build's id. Never retried.
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// let build = client.templates().request_build(&courier_e2b::BuildRequest::new("claude")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn request_build(&self, request: &BuildRequest) -> Result<BuildRequested> {
        if request.name.trim().is_empty() {
            return Err(Error::InvalidArgument {
                message: "name must not be empty".to_owned(),
            });
        }
        let url = self.client.endpoint("/v3/templates", &[])?;
        self.client
            .json(Method::POST, url, Some(request), false)
            .await
    }

    /// Starts a requested build with `recipe` (`POST /v2/templates/{id}/builds/{build}`).
    /// The build runs in the background: follow it with [`Templates::wait`].
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// use courier_e2b::{Recipe, Step};
    /// let recipe = Recipe::from_template("base").step(Step::run("echo hi"));
    /// client.templates().start_build("t1", "b1", &recipe).await?;
    /// # Ok(()) }
    /// ```
    pub async fn start_build(
        &self,
        template_id: &str,
        build_id: &str,
        recipe: &Recipe,
    ) -> Result<()> {
        let url = self.client.endpoint(
            &format!(
                "/v2/templates/{}/builds/{}",
                segment(template_id),
                segment(build_id)
            ),
            &[],
        )?;
        self.client
            .send(Method::POST, url, Some(recipe), false)
            .await
            .map(drop)
            .map_err(template_not_found)
    }

    /// A build's status and its log entries from `logs_offset` on
    /// (`GET /templates/{id}/builds/{build}/status?logsOffset=`).
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// let status = client.templates().build_status("t1", "b1", 0).await?;
    /// println!("{:?}, {} new log lines", status.status, status.log_entries.len());
    /// # Ok(()) }
    /// ```
    pub async fn build_status(
        &self,
        template_id: &str,
        build_id: &str,
        logs_offset: usize,
    ) -> Result<BuildStatus> {
        let url = self.client.endpoint(
            &format!(
                "/templates/{}/builds/{}/status",
                segment(template_id),
                segment(build_id)
            ),
            &[("logsOffset".to_owned(), logs_offset.to_string())],
        )?;
        self.client
            .json(Method::GET, url, None::<&()>, true)
            .await
            .map_err(template_not_found)
    }

    /// Polls a build every [`DEFAULT_BUILD_POLL_INTERVAL`] until it is `ready` (then
    /// `Ok`) or `error` (then [`Error::BuildFailed`] naming the step and reason), handing
    /// every log entry to `on_log` once, in order.
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// match client.templates().wait("t1", "b1", |e| eprintln!("{}", e.message)).await {
    ///     Ok(()) => println!("ready"),
    ///     Err(courier_e2b::Error::BuildFailed { step, message, .. }) => {
    ///         eprintln!("step {step:?} failed: {message}")
    ///     }
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn wait(
        &self,
        template_id: &str,
        build_id: &str,
        on_log: impl FnMut(&BuildLogEntry) + Send,
    ) -> Result<()> {
        self.wait_every(template_id, build_id, DEFAULT_BUILD_POLL_INTERVAL, on_log)
            .await
    }

    /// [`Templates::wait`] polling every `interval`.
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// use std::time::Duration;
    /// client.templates().wait_every("t1", "b1", Duration::from_secs(1), |_| {}).await?;
    /// # Ok(()) }
    /// ```
    pub async fn wait_every(
        &self,
        template_id: &str,
        build_id: &str,
        interval: Duration,
        mut on_log: impl FnMut(&BuildLogEntry) + Send,
    ) -> Result<()> {
        let mut offset = 0usize;
        loop {
            let status = self.build_status(template_id, build_id, offset).await?;
            offset += status.log_entries.len();
            status.log_entries.iter().for_each(&mut on_log);
            if status.status.is_finished() {
                // At most 100 entries come per answer: drain the rest before returning.
                let mut more = !status.log_entries.is_empty();
                while more {
                    let tail = self.build_status(template_id, build_id, offset).await?;
                    offset += tail.log_entries.len();
                    tail.log_entries.iter().for_each(&mut on_log);
                    more = !tail.log_entries.is_empty();
                }
                return match status.status {
                    BuildState::Ready => Ok(()),
                    _ => {
                        let reason = status.reason.unwrap_or(BuildReason {
                            message: "the build failed without a reason".to_owned(),
                            step: None,
                        });
                        Err(Error::BuildFailed {
                            template_id: status.template_id,
                            build_id: status.build_id,
                            step: reason.step,
                            message: reason.message,
                        })
                    }
                };
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// Every template of the account (`GET /templates`), whatever its build status.
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// for t in client.templates().list().await? {
    ///     println!("{} {:?} {:?}", t.template_id, t.aliases, t.build_status);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list(&self) -> Result<Vec<TemplateInfo>> {
        let url = self.client.endpoint("/templates", &[])?;
        self.client.json(Method::GET, url, None::<&()>, true).await
    }

    /// Deletes a template by id or alias (`DELETE /templates/{id}`): `false` when it did
    /// not exist.
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// let deleted = client.templates().delete("claude").await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete(&self, template_id: &str) -> Result<bool> {
        let url = self
            .client
            .endpoint(&format!("/templates/{}", segment(template_id)), &[])?;
        match self
            .client
            .send(Method::DELETE, url, None::<&()>, true)
            .await
        {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// A 404 of a template route is about a template or build, not a sandbox.
fn template_not_found(error: Error) -> Error {
    match error {
        Error::NotFound { message, .. } => Error::NotFound {
            kind: NotFoundKind::Template,
            message,
        },
        other => other,
    }
}
