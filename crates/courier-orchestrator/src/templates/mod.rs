//! Tool templates: each agent CLI's sandbox template (`claude`, `opencode`, …) built at
//! the provider from `base` with the CLI installed, each build recorded in the store's
//! `template_builds` table and followed to `succeeded` or `failed`.
//!
//! E2B cloud has these templates; an embedded courier-sandboxd starts with `base` only,
//! so [`ToolTemplates::build`] (or [`ToolTemplates::build_missing`] at start) makes them.

use std::{collections::HashMap, sync::Arc, time::Duration};

use courier_e2b::{BuildState, Recipe, SandboxApi, Step};
use courier_store::{NewTemplateBuild, Store, TemplateBuild, TemplateBuildStatus};
use courier_tools::{
    ToolId,
    registry::{install_command, spec, validate_cli_version},
};
use tokio::task::JoinHandle;

use crate::{OrchestratorError, Result};

/// The template every tool template is built from.
pub const BASE_TEMPLATE: &str = "base";
/// What the recipe's version step prints before the CLI's `--version` output.
pub const VERSION_MARKER: &str = "courier-cli-version: ";
/// Recorded as a build's `cli_version` when a custom install command replaced the
/// registry's (the version step's output is recorded once the build succeeds).
pub const CUSTOM: &str = "custom";
/// How often a build's status is polled by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How long a build is followed by default before it is recorded as failed: courier-sandboxd's
/// default build deadline (1 h) plus ten minutes for its queue and its capture of the layer.
pub const DEFAULT_BUILD_DEADLINE: Duration = Duration::from_secs(70 * 60);
/// Status reads that may fail in a row (provider restarting, network blip) before the
/// build is recorded as failed.
const MAX_STATUS_ERRORS: u32 = 30;

/// The tools that have a template of their own (an install command in the registry).
///
/// ```
/// use courier_orchestrator::templates::buildable_tools;
/// use courier_tools::ToolId;
/// assert!(buildable_tools().contains(&ToolId::Claude));
/// assert!(!buildable_tools().contains(&ToolId::Shell));
/// ```
pub fn buildable_tools() -> Vec<ToolId> {
    ToolId::ALL
        .into_iter()
        .filter(|t| spec(*t).package.is_some())
        .collect()
}

/// The CLI version in a build log line printed by the recipe's version step.
///
/// ```
/// use courier_orchestrator::templates::cli_version_in;
/// assert_eq!(cli_version_in("courier-cli-version: 2.1.197 (Claude Code)"), Some("2.1.197 (Claude Code)"));
/// assert_eq!(cli_version_in("[2/2] RUN claude --version"), None);
/// ```
pub fn cli_version_in(line: &str) -> Option<&str> {
    line.trim()
        .strip_prefix(VERSION_MARKER)
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// A build that was started: its row (`building`) and the task following it to its end.
#[derive(Debug)]
pub struct StartedBuild {
    /// The `template_builds` row, as of the start.
    pub row: TemplateBuild,
    /// Ends with the row as finally recorded. Dropping it does not stop the following.
    pub finished: JoinHandle<Result<TemplateBuild>>,
}

/// Builds the tools' templates at the provider and records each build.
///
/// ```no_run
/// # async fn demo(store: std::sync::Arc<dyn courier_store::Store>, api: std::sync::Arc<dyn courier_e2b::SandboxApi>) -> courier_orchestrator::Result<()> {
/// use courier_orchestrator::templates::ToolTemplates;
/// use courier_tools::ToolId;
/// let templates = ToolTemplates::new(store, api);
/// let started = templates.build(ToolId::Claude).await?;
/// println!("build {} is {}", started.row.id, started.row.status);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ToolTemplates {
    store: Arc<dyn Store>,
    api: Arc<dyn SandboxApi>,
    install: HashMap<ToolId, String>,
    versions: HashMap<ToolId, String>,
    npm_cache: Option<String>,
    poll_interval: Duration,
    deadline: Duration,
}

impl std::fmt::Debug for ToolTemplates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolTemplates")
            .field("install", &self.install)
            .field("versions", &self.versions)
            .field("npm_cache", &self.npm_cache)
            .field("poll_interval", &self.poll_interval)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl ToolTemplates {
    /// Tool templates over this store and provider, with the registry's install commands.
    pub fn new(store: Arc<dyn Store>, api: Arc<dyn SandboxApi>) -> ToolTemplates {
        ToolTemplates {
            store,
            api,
            install: HashMap::new(),
            versions: HashMap::new(),
            npm_cache: None,
            poll_interval: DEFAULT_POLL_INTERVAL,
            deadline: DEFAULT_BUILD_DEADLINE,
        }
    }

    /// Installs `tool` with `command` (run as root) instead of the registry's install
    /// command: a pinned version, a mirror, or a test's fake CLI.
    pub fn with_install_command(mut self, tool: ToolId, command: impl Into<String>) -> Self {
        self.install.insert(tool, command.into());
        self
    }

    /// Installs with these commands (tool → command) instead of the registry's.
    pub fn with_install_commands(mut self, commands: HashMap<ToolId, String>) -> Self {
        self.install.extend(commands);
        self
    }

    /// Installs `tool`'s CLI at `version` (an npm version or dist-tag) instead of the
    /// registry's pinned one: a deployment moving a pin ahead of a Courier release. A
    /// malformed version is [`OrchestratorError::InvalidConfig`] naming `cli_version`.
    pub fn with_cli_version(mut self, tool: ToolId, version: &str) -> Result<Self> {
        validate_cli_version(version).map_err(|e| OrchestratorError::InvalidConfig {
            field: "cli_version",
            message: format!("{tool}: {e}"),
        })?;
        self.versions.insert(tool, version.to_owned());
        Ok(self)
    }

    /// The CLI version `tool`'s template installs: this deployment's pin, else the
    /// registry's (`None` for tools without a package).
    pub fn cli_version(&self, tool: ToolId) -> Option<String> {
        self.versions
            .get(&tool)
            .cloned()
            .or_else(|| spec(tool).package.map(|p| p.version.to_owned()))
    }

    /// Installs from (and into) the npm cache at `dir` inside the build sandbox,
    /// preferring what it holds (`--cache DIR --prefer-offline`): a cache shared into
    /// build sandboxes so repeated builds do not download the CLIs again.
    pub fn with_npm_cache(mut self, dir: impl Into<String>) -> Self {
        self.npm_cache = Some(dir.into());
        self
    }

    /// Polls build status every `interval` (default [`DEFAULT_POLL_INTERVAL`]).
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Gives up on a build that has not ended `deadline` after it started (default
    /// [`DEFAULT_BUILD_DEADLINE`]): its row becomes `failed` with the reason. Set it
    /// above the provider's own build deadline, so the provider's reason wins when it
    /// has one.
    pub fn with_build_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The recipe of `tool`'s template: from `base`, RUN as root the install command,
    /// then RUN (as the template's user) `<cli> --version` (stdout and stderr), printed after
    /// [`VERSION_MARKER`]. A tool without a template is [`OrchestratorError::InvalidConfig`]
    /// naming `tool` and the tools that have one.
    ///
    /// ```
    /// # async fn demo(store: std::sync::Arc<dyn courier_store::Store>, api: std::sync::Arc<dyn courier_e2b::SandboxApi>) {
    /// use courier_orchestrator::templates::ToolTemplates;
    /// let recipe = ToolTemplates::new(store, api).recipe(courier_tools::ToolId::Claude).unwrap();
    /// assert_eq!(recipe.from_template, "base");
    /// # }
    /// ```
    pub fn recipe(&self, tool: ToolId) -> Result<Recipe> {
        let spec = spec(tool);
        let pinned = install_command(tool, self.versions.get(&tool).map(String::as_str)).map(
            |mut command| {
                if let Some(cache) = &self.npm_cache {
                    command.push_str(&format!(
                        " --cache {} --prefer-offline",
                        courier_tools::shell_quote(cache)
                    ));
                }
                command
            },
        );
        let install = self.install.get(&tool).cloned().or(pinned).ok_or_else(|| {
            OrchestratorError::InvalidConfig {
                field: "tool",
                message: format!(
                    "{tool} has no template to build (it runs in {}); tools with one: {}",
                    spec.default_template,
                    buildable_tools()
                        .iter()
                        .map(|t| t.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        })?;
        Ok(Recipe::from_template(BASE_TEMPLATE)
            .step(Step::run_as(install.as_str(), "root"))
            // Some CLIs print their version on stderr.
            .step(Step::run(format!(
                "v=$({} --version 2>&1) && echo \"{VERSION_MARKER}$v\"",
                spec.binary
            ))))
    }

    /// Starts a build of `tool`'s template (named after its `default_template`): a
    /// `template_builds` row (`cli_version` the pinned version, or [`CUSTOM`] with a custom
    /// install command; replaced by what the CLI's `--version` printed once the build
    /// succeeds) goes `pending` → `building`, and
    /// a background task follows the provider's build to `succeeded`, or `failed` with
    /// the provider's reason (step and message), or `failed` saying so when the build
    /// outlives its deadline ([`with_build_deadline`](Self::with_build_deadline)). If the provider refuses to start it the
    /// row is `failed` and the provider's error returned.
    pub async fn build(&self, tool: ToolId) -> Result<StartedBuild> {
        let recipe = self.recipe(tool)?;
        let template = spec(tool).default_template;
        let row = self
            .store
            .create_template_build(NewTemplateBuild {
                tool_id: tool.as_str().to_owned(),
                template_name: template.to_owned(),
                cli_version: if self.install.contains_key(&tool) {
                    CUSTOM.to_owned()
                } else {
                    self.cli_version(tool).unwrap_or_else(|| CUSTOM.to_owned())
                },
            })
            .await?;
        let requested = match self.api.build_template(template, recipe).await {
            Ok(requested) => requested,
            Err(e) => {
                let message = format!("the provider did not start the build: {e}");
                self.store
                    .update_template_build(row.id, TemplateBuildStatus::Failed, Some(message))
                    .await?;
                return Err(e.into());
            }
        };
        let row = self
            .store
            .update_template_build(row.id, TemplateBuildStatus::Building, None)
            .await?;
        tracing::info!(
            tool = %tool,
            template,
            template_id = %requested.template_id,
            build_id = %requested.build_id,
            "template build started"
        );
        let follower = self.clone();
        let id = row.id;
        let finished = tokio::spawn(async move {
            let recorded = follower
                .follow(tool, id, &requested.template_id, &requested.build_id)
                .await;
            if let Err(e) = &recorded {
                tracing::error!(tool = %tool, build = %id, error = %e, "could not record the end of a template build");
            }
            recorded
        });
        Ok(StartedBuild { row, finished })
    }

    /// The buildable tools whose template the provider lacks, or has only as a failed
    /// build.
    pub async fn missing(&self) -> Result<Vec<TemplateMissing>> {
        let templates = self.api.list_templates().await?;
        Ok(buildable_tools()
            .into_iter()
            .filter_map(|tool| {
                let name = spec(tool).default_template;
                let found = templates.iter().find(|t| t.is_named(name));
                match found {
                    None => Some(TemplateMissing {
                        tool,
                        failed: false,
                    }),
                    Some(t) if t.build_status == BuildState::Error => {
                        Some(TemplateMissing { tool, failed: true })
                    }
                    Some(_) => None,
                }
            })
            .collect())
    }

    /// Starts a build for every tool in [`ToolTemplates::missing`]; a tool whose build
    /// does not start is logged and skipped.
    pub async fn build_missing(&self) -> Result<Vec<StartedBuild>> {
        let mut started = Vec::new();
        for missing in self.missing().await? {
            match self.build(missing.tool).await {
                Ok(build) => started.push(build),
                Err(e) => {
                    tracing::warn!(tool = %missing.tool, error = %e, "tool template build did not start")
                }
            }
        }
        Ok(started)
    }

    /// Polls the provider's build until it ends or its deadline passes, logging its lines,
    /// and records the end.
    ///
    /// The deadline is measured on tokio's clock, like the poll interval it paces (tests
    /// run it with paused time); it bounds the whole follow, status calls included.
    async fn follow(
        &self,
        tool: ToolId,
        id: courier_store::TemplateBuildId,
        template_id: &str,
        build_id: &str,
    ) -> Result<TemplateBuild> {
        let mut offset = 0usize;
        let mut errors = 0u32;
        let mut version = None::<String>;
        let give_up_at = tokio::time::Instant::now() + self.deadline;
        let past_deadline = || {
            format!(
                "the build did not finish within {} (the template build deadline); \
                 Courier stopped following it",
                whole_or_millis(self.deadline)
            )
        };
        let outcome = loop {
            let status = tokio::time::timeout_at(
                give_up_at,
                self.api
                    .template_build_status(template_id, build_id, offset),
            )
            .await;
            let Ok(status) = status else {
                break Err(past_deadline());
            };
            match status {
                Ok(status) => {
                    errors = 0;
                    offset += status.log_entries.len();
                    for entry in &status.log_entries {
                        if let Some(v) = cli_version_in(&entry.message) {
                            version = Some(v.to_owned());
                        }
                        tracing::debug!(tool = %tool, build_id, step = entry.step.as_deref().unwrap_or(""), "{}", entry.message);
                    }
                    match status.status {
                        BuildState::Ready if status.log_entries.is_empty() => break Ok(()),
                        BuildState::Error if status.log_entries.is_empty() => {
                            break Err(status.reason.map_or_else(
                                || "the build failed without a reason".to_owned(),
                                |r| match r.step {
                                    Some(step) => format!("step {step}: {}", r.message),
                                    None => r.message,
                                },
                            ));
                        }
                        // Finished with lines still coming (100 per answer): drain them.
                        BuildState::Ready | BuildState::Error => continue,
                        BuildState::Waiting | BuildState::Building => {}
                    }
                }
                Err(courier_e2b::Error::NotFound { message, .. }) => {
                    break Err(format!("the provider lost the build: {message}"));
                }
                Err(e) => {
                    errors += 1;
                    if errors >= MAX_STATUS_ERRORS {
                        break Err(format!("build status unreadable: {e}"));
                    }
                }
            }
            if tokio::time::Instant::now() + self.poll_interval >= give_up_at {
                break Err(past_deadline());
            }
            tokio::time::sleep(self.poll_interval).await;
        };
        let (status, error) = match outcome {
            Ok(()) => {
                tracing::info!(tool = %tool, build_id, cli_version = version.as_deref().unwrap_or("unknown"), "tool template ready");
                // What the CLI says it is, for the dashboard and `courier templates list`.
                if let Some(version) = version.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
                    let mut end = version.len().min(200);
                    while !version.is_char_boundary(end) {
                        end -= 1;
                    }
                    self.store
                        .set_template_build_version(id, &version[..end])
                        .await?;
                }
                (TemplateBuildStatus::Succeeded, None)
            }
            Err(reason) => {
                tracing::warn!(tool = %tool, build_id, reason = %reason, "tool template build failed");
                (TemplateBuildStatus::Failed, Some(reason))
            }
        };
        Ok(self.store.update_template_build(id, status, error).await?)
    }
}

/// `90 s`, or `300 ms` below a whole second.
fn whole_or_millis(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// A tool whose template the provider lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateMissing {
    /// The tool.
    pub tool: ToolId,
    /// Whether the provider has it, but only as a failed build.
    pub failed: bool,
}

/// The fix for a missing tool template, as error messages name it.
pub(crate) fn build_hint(tool: ToolId) -> String {
    format!(
        "build it with `courier templates build {tool}` (POST /v1/template-builds \
         {{\"tool\": \"{tool}\"}}), or pass a custom template_id"
    )
}

#[cfg(test)]
mod tests;
