//! What template builds are given of the server (see [`BuildHost`]).

use std::sync::Arc;

use super::Sandboxd;
use super::config::{CreateRequest, MAX_TIMEOUT};
use crate::error::Result;
use crate::runtime::Runtime;
use crate::state::SandboxRecord;
use crate::templates::Templates;
use crate::templates::build::{BuildHost, BuildLimits, BuildSandbox};

impl BuildHost for Sandboxd {
    fn templates(&self) -> &Templates {
        &self.inner.templates
    }

    fn build_limits(&self) -> BuildLimits {
        let config = &self.inner.config;
        BuildLimits {
            step: config.limits.template_step_timeout,
            build: config.limits.template_build_timeout,
            ready: config.template_ready_timeout,
        }
    }

    async fn create_build_sandbox(&self, sandbox: BuildSandbox) -> Result<SandboxRecord> {
        self.create(CreateRequest {
            template: sandbox.template,
            timeout: sandbox.timeout.min(MAX_TIMEOUT),
            metadata: sandbox.metadata,
            memory_mb: Some(sandbox.memory_mb),
            cpu_count: Some(sandbox.cpu_count),
            allow_internet: sandbox.allow_internet,
            // A build must not outlive its server: nothing would capture or kill it.
            die_with_server: true,
            ..CreateRequest::default()
        })
        .await
    }

    async fn kill_sandbox(&self, id: &str) -> Result<()> {
        self.kill(id).await
    }

    fn has_sandbox(&self, id: &str) -> bool {
        self.entry(id).is_some()
    }

    fn sandboxes(&self) -> Vec<SandboxRecord> {
        self.list()
    }

    fn shared_runtime(&self) -> Arc<Runtime> {
        self.inner.runtime.clone()
    }

    async fn build_ended(&self) {
        // Warm sandboxes of the previous version would never be taken again.
        self.drop_stale_warm().await;
        // A new version may have made the previous one's layer unused.
        self.collect_layer_garbage().await;
    }
}
