//! The world the pull request tests share: the seeded store, a sandbox provider whose
//! repository is on a chosen branch, and pipelines over a GitHub that expects exactly
//! what each test says.

use std::sync::Arc;

use courier_e2b::MockSandboxApi;
use courier_store::{GitInfo, PrStatus, Project, SandboxId};
use courier_tools::Secret;

use crate::pr::{MockGitHubApi, PrConfig, PrOutcome, PrPipeline, PullRequest};
use crate::testing::{Seeded, command_output, sandbox_record};

/// The GitHub key the tests hand the pipeline.
pub const TOKEN: &str = "ghp_mocktoken000000000000000000000000abcd";
/// The sandbox repository's remote, with a clone token that must never be stored.
const REMOTE: &str = "https://x-access-token:ghs_clone@github.com/acme/engine.git";

/// A sandbox whose repository has `branch` checked out; pushes succeed.
pub fn sandbox_on(branch: &str, pushes: usize) -> MockSandboxApi {
    let mut api = MockSandboxApi::new();
    let state = format!("remote={REMOTE}\nbranch={branch}\nbase=origin/main\n");
    api.expect_run()
        .withf(|_, spec| spec.cmd.contains("git config --get remote.origin.url"))
        .times(1)
        .returning(move |_, _| Ok(command_output(0, &state, "")));
    api.expect_run()
        .withf(|_, spec| spec.cmd.contains("git push"))
        .times(pushes)
        .returning(|_, _| Ok(command_output(0, "", "")));
    api
}

/// The seeded store, and pipelines over it.
pub struct World(Seeded);

impl std::ops::Deref for World {
    type Target = Seeded;

    fn deref(&self) -> &Seeded {
        &self.0
    }
}

impl World {
    /// A fresh seeded store.
    pub async fn new() -> World {
        World(Seeded::new().await)
    }

    /// A pipeline over the store, `api` and `github`.
    pub fn pipeline(&self, api: MockSandboxApi, github: MockGitHubApi) -> PrPipeline {
        PrPipeline::new(self.store.clone(), Arc::new(api), PrConfig::default())
            .with_github(Arc::new(github))
    }

    /// Opens the seeded sandbox's pull request with [`TOKEN`].
    pub async fn open(&self, pipeline: &PrPipeline) -> PrOutcome {
        pipeline
            .open(
                self.sandbox.id,
                &sandbox_record(),
                Some(&Secret::new(TOKEN)),
            )
            .await
            .unwrap()
    }

    /// A sandbox's git state as stored.
    pub async fn git(&self, id: SandboxId) -> GitInfo {
        self.store.get_sandbox(id).await.unwrap().git
    }

    /// A sandbox of `project` (the seeded one when `None`) whose PR `number` is
    /// open.
    pub async fn with_open_pr(&self, project: Option<&Project>, number: i64) -> SandboxId {
        let project = project.unwrap_or(&self.project);
        let sandbox = self
            .store
            .create_sandbox(courier_store::NewSandbox {
                user_id: project.user_id,
                project_id: project.id,
                config: Default::default(),
                cli_tool: "claude".into(),
                model: None,
                prompt: "fix it".into(),
                links: Default::default(),
                repo_url: None,
                branch: None,
            })
            .await
            .unwrap();
        self.store
            .update_sandbox_git(
                sandbox.id,
                GitInfo {
                    repo_url: Some("https://github.com/acme/engine.git".into()),
                    branch: Some(format!("courier/{number}")),
                    pr_url: Some(format!("https://github.com/acme/engine/pull/{number}")),
                    pr_number: Some(number),
                    pr_status: Some(PrStatus::Created),
                    pr_error: None,
                },
            )
            .await
            .unwrap();
        sandbox.id
    }
}

pub fn pull(number: u64, merged: bool) -> PullRequest {
    PullRequest {
        number,
        url: format!("https://github.com/acme/engine/pull/{number}"),
        merged,
    }
}
