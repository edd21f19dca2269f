//! Creating a sandbox: the request and keys checked, `creating` recorded, the provider
//! sandbox created, the setup plan executed and the agent started; a failure on the way
//! ends in `error` with the provider sandbox destroyed.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use courier_e2b::CommandSpec;
use courier_e2b::models::{
    NetworkConfig, NetworkRule, NewSandbox as ProviderSandbox, SandboxRecord,
};
use courier_store::{GitInfo, NewSandbox, Provider, Sandbox, SandboxId, SandboxStatus, StoreError};
use courier_tools::{SetupContext, SetupStep, ToolId, build_setup_plan, shell_quote};

use super::{Live, METADATA_PROJECT_ID, METADATA_SANDBOX_ID, Orchestrator, default_branch};
use crate::config::CreateRequest;
use crate::keys::check_required;
use crate::learnings::active_learnings;
use crate::stream::record_user_message;
use crate::{OrchestratorError, Result};

/// How long one setup command may run.
const SETUP_COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

/// A create the provider answered 404: the sandbox does not exist yet, so what is
/// missing is its template. Says so and names the fix.
fn missing_template(error: courier_e2b::Error, tool: ToolId, template: &str) -> OrchestratorError {
    match error {
        courier_e2b::Error::NotFound { .. } => OrchestratorError::TemplateMissing {
            template: template.to_owned(),
            tool: tool.as_str(),
            hint: crate::templates::build_hint(tool),
        },
        other => other.into(),
    }
}

impl Orchestrator {
    /// Creates a sandbox and starts its agent on the prompt.
    ///
    /// Fields the request leaves unset come from the project's settings, whose env vars,
    /// system prompt, `CLAUDE.md`, skills and commands go into the setup plan.
    /// Validates the request and the keys before anything is recorded; then records
    /// `creating` (within the [sandbox quota](Self::with_sandbox_quota)), creates the
    /// provider sandbox, executes the setup plan, starts the agent
    /// in the background and moves to `running`. Any failure after recording ends in
    /// `error` with its message and the provider sandbox destroyed.
    pub async fn create(&self, request: CreateRequest) -> Result<Sandbox> {
        let settings = self.store.get_project_settings(request.project_id).await?;
        let request = crate::settings::with_defaults(request, &settings);
        let mut project = self.vault.plan_settings(request.project_id, &settings)?;
        project.add_profile(&request.profile);
        let valid = request.validate()?;
        let keys = self
            .vault
            .provider_keys(request.user_id, request.project_id)
            .await?;
        check_required(valid.tool, &keys)?;
        let github = self
            .vault
            .resolve(request.user_id, request.project_id, Provider::GitHub)
            .await?
            .map(|k| k.secret);
        let gateway = self
            .gateway
            .clone()
            .filter(|_| settings.sandbox_defaults.keys_via_gateway != Some(false));
        let mut config = valid.sandbox.clone();
        config.keys_via_gateway = gateway.is_some();
        config.token_budget = settings.sandbox_defaults.token_budget;
        let sandbox = self
            .store
            .create_sandbox_within(
                NewSandbox {
                    user_id: request.user_id,
                    project_id: request.project_id,
                    config,
                    cli_tool: valid.tool.as_str().to_owned(),
                    model: valid.model.clone(),
                    prompt: request.prompt.clone(),
                    links: request.links.clone(),
                    repo_url: request.repo_url.clone(),
                    branch: request.branch.clone(),
                },
                self.quota,
            )
            .await?;
        // Owned before anything is published or made at the provider: a replica that
        // dies from here on leaves a sandbox another one takes over.
        self.follow_here(sandbox.id).await?;
        let branch = request
            .branch
            .clone()
            .unwrap_or_else(|| default_branch(sandbox.id));
        // The project's env vars reach every process of the sandbox (setup, the agent,
        // the pushes at checkpoints and kill), not only the agent's.
        let sandbox_env: HashMap<String, String> = project
            .env_vars
            .iter()
            .map(|(name, value)| (name.clone(), value.expose().to_owned()))
            .collect();
        // Through the gateway, the sandbox holds its run's token in place of every key,
        // and the proof that goes with it is added by the backend's egress.
        let credentials = gateway
            .as_ref()
            .map(|g| g.minter.mint(&sandbox.id.to_string()));
        let (keys, github_token, git_gateway, endpoints) = match (&gateway, &credentials) {
            (Some(g), Some(c)) => (
                g.sandbox_keys(&keys, &c.token),
                None,
                github.is_some().then(|| g.git(c)),
                g.endpoints(),
            ),
            _ => (keys, github, None, self.endpoints.clone()),
        };
        let network = match (&gateway, &credentials) {
            (Some(g), Some(c)) if g.proof_at_egress => g.host().map(|host| NetworkConfig {
                allow_out: Some(vec![host.clone()]),
                rules: Some(
                    [(
                        host,
                        vec![NetworkRule::set_headers([(
                            courier_gateway::PROOF_HEADER,
                            c.proof.expose(),
                        )])],
                    )]
                    .into(),
                ),
                ..Default::default()
            }),
            _ => None,
        };
        let context = SetupContext {
            tool: valid.tool,
            repo_url: request.repo_url.clone(),
            base_branch: request.base_branch.clone(),
            branch_name: branch.clone(),
            github_token,
            git_gateway,
            keys,
            learnings: active_learnings(self.store.as_ref(), request.project_id).await?,
            endpoints,
            env_vars: project.env_vars,
            system_prompt: project.system_prompt,
            claude_md: project.claude_md,
            skills: project.skills,
            commands: project.commands,
        };
        let mut provider_id = None;
        let started = async {
            self.store
                .update_sandbox_git(
                    sandbox.id,
                    GitInfo {
                        repo_url: request.repo_url.clone(),
                        branch: Some(branch),
                        ..Default::default()
                    },
                )
                .await?;
            let plan = build_setup_plan(&context)?;
            let mut metadata = HashMap::new();
            metadata.insert(METADATA_SANDBOX_ID.to_owned(), sandbox.id.to_string());
            metadata.insert(
                METADATA_PROJECT_ID.to_owned(),
                sandbox.project_id.to_string(),
            );
            let record = self
                .api
                .create(ProviderSandbox {
                    template_id: valid.template.clone(),
                    timeout: Some((valid.sandbox.timeout_ms / 1000) as u64),
                    metadata,
                    allow_internet_access: Some(self.sandbox_internet),
                    env_vars: sandbox_env,
                    network,
                    ..Default::default()
                })
                .await
                .map_err(|e| missing_template(e, valid.tool, &valid.template))?;
            provider_id = Some(record.sandbox_id.clone());
            self.store
                .set_provider_sandbox_id(sandbox.id, &record.sandbox_id)
                .await?;
            let env = self.execute_plan(&record, &plan.steps).await?;
            record_user_message(self.store.as_ref(), &self.hub, sandbox.id, &request.prompt)
                .await?;
            self.lock().insert(
                sandbox.id,
                Live {
                    record,
                    tool: valid.tool,
                    model: valid.model.clone(),
                    thinking_effort: valid.thinking_effort,
                    env,
                    working: true,
                    queue: VecDeque::new(),
                    agent: None,
                    session_usage: None,
                    deadline: sandbox.created_at
                        + chrono::Duration::milliseconds(valid.sandbox.timeout_ms),
                    checkpointed: None,
                    metered_at_gateway: gateway.is_some(),
                },
            );
            let running = self
                .store
                .transition_sandbox(
                    sandbox.id,
                    SandboxStatus::Creating,
                    SandboxStatus::Running,
                    None,
                )
                .await?;
            self.start_run(sandbox.id, request.prompt.clone(), false)
                .await?;
            Ok::<_, OrchestratorError>(running)
        }
        .await;
        match started {
            Ok(running) => Ok(running),
            Err(err) => {
                self.fail(sandbox.id, provider_id.as_deref(), &err).await;
                Err(err)
            }
        }
    }

    /// Ends a failed create: provider sandbox destroyed, `error` with the message.
    async fn fail(&self, id: SandboxId, provider_id: Option<&str>, err: &OrchestratorError) {
        self.fail_with(id, provider_id, err.to_string()).await;
    }

    /// Ends a create with `message`: provider sandbox destroyed, `error`.
    pub(super) async fn fail_with(
        &self,
        id: SandboxId,
        provider_id: Option<&str>,
        message: String,
    ) {
        if let Some(live) = self.lock().remove(&id)
            && let Some(agent) = live.agent
        {
            agent.abort();
        }
        if let Some(pid) = provider_id
            && let Err(e) = self.api.kill(pid).await
        {
            tracing::warn!(sandbox = %id, error = %e, "could not destroy a failed sandbox");
        }
        for from in [SandboxStatus::Creating, SandboxStatus::Running] {
            match self
                .store
                .transition_sandbox(id, from, SandboxStatus::Error, Some(message.clone()))
                .await
            {
                Ok(_) => break,
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => {
                    tracing::error!(sandbox = %id, error = %e, "could not record a failed create");
                    break;
                }
            }
        }
    }

    /// Executes setup steps in order; returns the environment their `SetEnv` steps built.
    async fn execute_plan(
        &self,
        record: &SandboxRecord,
        steps: &[SetupStep],
    ) -> Result<HashMap<String, String>> {
        let mut env = HashMap::new();
        for (index, step) in steps.iter().enumerate() {
            let number = index + 1;
            let failed = |message: String| OrchestratorError::Setup {
                step: number,
                message,
            };
            match step {
                SetupStep::WriteFile {
                    path,
                    contents,
                    mode,
                } => {
                    self.api
                        .write_file(record, path, Bytes::from(contents.expose().to_owned()))
                        .await
                        .map_err(|e| failed(format!("writing {path}: {e}")))?;
                    let chmod = format!("chmod {mode:o} {}", shell_quote(path));
                    self.run_checked(record, self.command(chmod), &failed)
                        .await?;
                }
                SetupStep::Run {
                    command,
                    cwd,
                    env: step_env,
                } => {
                    let mut spec = self.command(command.clone()).timeout(SETUP_COMMAND_TIMEOUT);
                    spec.envs = env.clone();
                    spec.envs.extend(
                        step_env
                            .iter()
                            .map(|(k, v)| (k.clone(), v.expose().to_owned())),
                    );
                    spec.cwd = cwd.clone();
                    self.run_checked(record, spec, &failed).await?;
                }
                SetupStep::SetEnv { name, value } => {
                    env.insert(name.clone(), value.expose().to_owned());
                }
            }
        }
        Ok(env)
    }

    async fn run_checked(
        &self,
        record: &SandboxRecord,
        spec: CommandSpec,
        failed: &(dyn Fn(String) -> OrchestratorError + Sync),
    ) -> Result<()> {
        let output = self
            .api
            .run(record, spec)
            .await
            .map_err(|e| failed(e.to_string()))?;
        if output.exit_code != 0 {
            let detail = if output.stderr.trim().is_empty() {
                output.stdout.trim()
            } else {
                output.stderr.trim()
            };
            return Err(failed(format!("exit code {}: {detail}", output.exit_code)));
        }
        Ok(())
    }
}
