//! # courier-orchestrator
//!
//! The heart of Courier: it carries a sandbox through its whole life and keeps the store
//! true at every step.
//!
//! Feature `mocks` exports mockall doubles of its own seams, `MockClock` and
//! `MockGitHubApi`, for other crates' tests (with `courier-e2b`'s `MockSandboxApi` and
//! `courier-store`'s `MockStore`).
//!
//! - [`clock`]: the [`Clock`](clock::Clock) every time-based decision asks (deadlines,
//!   checkpoints, billed compute seconds), mockable in tests.
//! - [`keys`]: the key vault (AES-256-GCM under a master key, project keys beat user keys,
//!   required providers checked before anything is created).
//! - [`config`]: create-request validation (ranges, defaults, tool, model, template).
//! - [`gateway`]: keys that never enter the sandbox: run tokens and proofs for
//!   `courier-gateway`, what each run may do, usage counted at the gateway, budgets.
//! - [`settings`]: project settings (default repository, branch and sandbox
//!   configuration; env vars encrypted like keys; system prompt, `CLAUDE.md`, skills,
//!   commands) validated, stored, applied to creates and injected into setup plans.
//! - [`usage`]: compute seconds, tokens and cost without double counting, rate-table prices,
//!   totals.
//! - [`lifecycle`]: the [`Orchestrator`](lifecycle::Orchestrator): create, follow-ups,
//!   kill, pause and resume, soft delete, restore, purge, timeouts (checkpoint before the
//!   deadline, extension while the agent works), restart reconciliation and re-attaching
//!   to running agents' output.
//! - [`pr`]: a finished sandbox's branch pushed and opened as a GitHub pull request,
//!   followed to `merged` by polling or a signed webhook.
//! - [`learnings`]: learnings extracted from a finished sandbox's transcript by an LLM,
//!   merged, compiled into the project's active version and given to later sandboxes.
//! - [`providers`]: several sandbox providers (E2B cloud, courier-sandboxd hosts) as one
//!   `SandboxApi`: ids `<provider>:<id>` routed by prefix, placement by load, capacity
//!   and label, templates built everywhere.
//! - [`templates`]: each tool's sandbox template built at the provider from `base` with
//!   the CLI installed, recorded in `template_builds` and followed to its end.
//! - [`work`]: workflow runs (designer, checker, optimizer steps in sandboxes linked by
//!   `run_id`, the checker's verdict driving the loop), personas, work chains and issue
//!   sessions, all restart-safe.
//! - [`stream`]: an agent's output bytes turned into persisted messages and published
//!   events, with late subscribers replaying from the store without gaps or duplicates.
//!
//! ## Invariant
//!
//! The orchestrator talks to sandboxes only through `courier-e2b`, to storage only through
//! the [`Store`](courier_store::Store) trait, to GitHub only through
//! [`GitHubApi`](pr::GitHubApi), to time only through [`Clock`](clock::Clock), and takes
//! every per-tool decision from `courier-tools`. It never speaks HTTP to users. Secrets are held as
//! [`Secret`](courier_tools::Secret) (shown as `****abcd`) and stored only encrypted.

pub mod clock;
pub mod config;
mod error;
pub mod gateway;
pub mod keys;
pub mod learnings;
pub mod lifecycle;
pub mod pr;
pub mod providers;
pub mod settings;
pub mod stream;
pub mod templates;
pub mod usage;
pub mod work;

#[cfg(test)]
mod testing;

pub use error::{MasterKeyError, OrchestratorError, Result, WebhookRejection};
