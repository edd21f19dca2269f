//! Courier's storage: one async [`Store`] trait, two implementations ([`SqliteStore`],
//! the embedded default, and [`PgStore`] for replicated deployments), their embedded
//! migrations, and one [`conformance`] suite both must pass (feature `conformance`).
//!
//! # Invariant
//!
//! Every write is atomic, and every change of a sandbox's status or deletion state is one
//! compare-and-set that also keeps the owning project's `active_sandboxes` counter
//! exact: it always equals the number of that project's sandboxes that are `running`
//! and not soft-deleted, however many writers race. A failed operation leaves nothing
//! behind. Workflow runs, work chains and issue sessions follow the same rule: each
//! status change is one compare-and-set on the expected status, a final status never
//! changes again, and a workflow step finishes once. (A chain item's status is simply
//! recorded: which item runs again is the orchestrator's call.)
//!
//! The store holds no business rules beyond that: it validates shapes (enums, cursors,
//! lifecycle edges) but not policy (config ranges, which keys win, prices). It stores
//! provider keys as ciphertext only; encryption is the orchestrator's.
//!
//! # Adding a backend
//!
//! Implement [`Store`], then run the suite with one line in a test file:
//! `courier_store::conformance_tests!(my_setup_fn);` (see [`conformance`]).
//!
//! # Example
//!
//! ```
//! use courier_store::{NewProject, NewUser, SqliteStore, Store};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = SqliteStore::in_memory().await?;
//! let user = store
//!     .create_user(NewUser { email: "ada@example.com".into(), name: "Ada".into() })
//!     .await?;
//! let project = store
//!     .create_project(NewProject { user_id: user.id, name: "engine".into() })
//!     .await?;
//! assert_eq!(project.active_sandboxes, 0);
//! # Ok::<(), courier_store::StoreError>(())
//! # }).unwrap();
//! ```

#[macro_use]
mod backend;
pub mod cluster;
mod error;
mod ids;
mod kinds;
mod page;
mod postgres;
mod records;
mod settings;
mod sql;
mod sqlite;
mod workflows;

#[cfg(feature = "conformance")]
pub mod conformance;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use cluster::{Cluster, Owner, Replica, Wakeups};
pub use error::{Result, StoreError};
pub use ids::{
    CostRateId, IssueCardId, IssueSessionId, LearningId, LearningVersionId, MessageId, PersonaId,
    ProjectId, ProviderKeyId, SandboxId, TemplateBuildId, UsageRecordId, UserId, WorkChainId,
    WorkflowRunId, WorkflowStepId,
};
pub use kinds::{
    LearningCategory, LearningStatus, MessageRole, MessageStatus, PrMode, PrStatus, Provider,
    RunStatus, SandboxStatus, Service, Severity, StepRole, TemplateBuildStatus, UsageMetric,
    Verdict,
};
pub use page::{Cursor, DeletedFilter, MAX_PAGE_LIMIT, Page, PageRequest, SandboxFilter};
pub use postgres::PgStore;
pub use records::{
    CliOverrides, CostRate, DailyUsage, GitInfo, KeyOwner, Learning, LearningVersion, Message,
    MessageAppend, Money, NewCostRate, NewLearning, NewMessage, NewProject, NewProviderKey,
    NewSandbox, NewTemplateBuild, NewUsage, NewUser, Project, ProviderKey, QuotaScope, Sandbox,
    SandboxConfig, SandboxLinks, SandboxQuota, TemplateBuild, UsageRecord, UsageTotal, User,
};
pub use settings::{EncryptedEnvVar, NamedText, ProjectSettings, SandboxDefaults};
pub use sqlite::SqliteStore;
pub use workflows::{
    ChainItem, IssueCard, IssueSession, NewChainItem, NewIssueCard, NewIssueSession, NewPersona,
    NewWorkChain, NewWorkflowRun, NewWorkflowStep, Persona, RunState, StepOutcome, StepSpec,
    WorkChain, WorkflowRun, WorkflowSpec, WorkflowStep,
};

/// Everything Courier persists. Object-safe: share it as `Arc<dyn Store>`.
///
/// Lookups of a missing record fail with [`StoreError::NotFound`]; writes that lose a
/// race or contradict stored state fail with [`StoreError::Conflict`].
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Store: Send + Sync {
    // ---- users and projects ----

    /// Creates a user; a duplicate e-mail is a conflict.
    async fn create_user(&self, new: NewUser) -> Result<User>;
    /// Gets a user.
    async fn get_user(&self, id: UserId) -> Result<User>;
    /// Gets a user by e-mail.
    async fn get_user_by_email(&self, email: &str) -> Result<User>;
    /// Creates a project with no active sandboxes.
    async fn create_project(&self, new: NewProject) -> Result<Project>;
    /// Gets a project, with its exact active-sandbox counter.
    async fn get_project(&self, id: ProjectId) -> Result<Project>;
    /// A user's projects, oldest first.
    async fn list_projects(&self, user_id: UserId) -> Result<Vec<Project>>;
    /// A project's settings ([`ProjectSettings::default`] if never saved); not found if
    /// the project is missing. Env vars come sorted by name.
    async fn get_project_settings(&self, project_id: ProjectId) -> Result<ProjectSettings>;
    /// Replaces a project's settings whole, in one transaction; invalid input for
    /// duplicate names, not found if the project is missing.
    async fn put_project_settings(
        &self,
        project_id: ProjectId,
        settings: ProjectSettings,
    ) -> Result<ProjectSettings>;

    // ---- provider keys ----

    /// Stores (or replaces) the owner's key for a provider.
    async fn put_provider_key(
        &self,
        owner: KeyOwner,
        provider: Provider,
        key: NewProviderKey,
    ) -> Result<ProviderKey>;
    /// The owner's key for a provider, if any.
    async fn get_provider_key(
        &self,
        owner: KeyOwner,
        provider: Provider,
    ) -> Result<Option<ProviderKey>>;
    /// All of the owner's keys, by provider name.
    async fn list_provider_keys(&self, owner: KeyOwner) -> Result<Vec<ProviderKey>>;
    /// Deletes the owner's key for a provider; not found if there is none.
    async fn delete_provider_key(&self, owner: KeyOwner, provider: Provider) -> Result<()>;

    // ---- sandboxes ----

    /// Records a new sandbox in `creating`.
    async fn create_sandbox(&self, new: NewSandbox) -> Result<Sandbox>;
    /// Records a new sandbox in `creating` like [`create_sandbox`](Store::create_sandbox),
    /// only if its user and its project stay within `quota` of live sandboxes
    /// (`creating`, `running`, `paused`; soft-deleted ones included); otherwise
    /// [`StoreError::QuotaExceeded`] and nothing is recorded. Count and insert are one
    /// transaction that first locks the user's and the project's rows, so concurrent
    /// creates cannot pass the count together.
    async fn create_sandbox_within(&self, new: NewSandbox, quota: SandboxQuota) -> Result<Sandbox>;
    /// Gets a sandbox, soft-deleted or not.
    async fn get_sandbox(&self, id: SandboxId) -> Result<Sandbox>;
    /// Lists sandboxes newest first, continuing after `page.cursor` (see [`Cursor`]).
    async fn list_sandboxes(
        &self,
        filter: SandboxFilter,
        page: PageRequest,
    ) -> Result<Page<Sandbox>>;
    /// Atomically moves a sandbox from `from` to `to` if it is still in `from`, keeping
    /// the project's counter exact, stamping `started_at` (first `running`) and
    /// `ended_at` (final states), and recording `error_message` when given.
    ///
    /// Fails with [`StoreError::InvalidTransition`] if the lifecycle forbids the edge,
    /// [`StoreError::Conflict`] if the sandbox is no longer in `from`.
    async fn transition_sandbox(
        &self,
        id: SandboxId,
        from: SandboxStatus,
        to: SandboxStatus,
        error_message: Option<String>,
    ) -> Result<Sandbox>;
    /// Records the provider's id for the sandbox.
    async fn set_provider_sandbox_id(&self, id: SandboxId, provider_sandbox_id: &str)
    -> Result<()>;
    /// Replaces the sandbox's git and pull request information.
    async fn update_sandbox_git(&self, id: SandboxId, git: GitInfo) -> Result<()>;
    /// Records the learning extraction step.
    async fn set_learning_status(
        &self,
        id: SandboxId,
        status: LearningStatus,
        error: Option<String>,
    ) -> Result<()>;
    /// Hides a sandbox (it stops counting as active); a conflict if already deleted.
    async fn soft_delete_sandbox(&self, id: SandboxId) -> Result<()>;
    /// Unhides a soft-deleted sandbox (counting again if running); a conflict if not deleted.
    async fn restore_sandbox(&self, id: SandboxId) -> Result<()>;
    /// Removes a sandbox and its messages for good; its usage records stay.
    async fn purge_sandbox(&self, id: SandboxId) -> Result<()>;

    // ---- messages ----

    /// Adds a message with the sandbox's next sequence number.
    async fn create_message(&self, new: NewMessage) -> Result<Message>;
    /// Appends text to a `streaming` message in one cheap update; a conflict if the
    /// message is finished.
    async fn append_message_content(&self, id: MessageId, delta: &str) -> Result<()>;
    /// Appends to a `streaming` message's raw stream log.
    async fn append_message_raw_log(&self, id: MessageId, delta: &str) -> Result<()>;
    /// Appends text and raw log lines to `streaming` messages in one write transaction (a
    /// group commit: one lock and one sync for many agents' lines). Each append's text and
    /// raw lines are stored together or not at all (what a re-attach after a crash relies
    /// on), in the order given; empty parts are skipped. An append to a message that is
    /// not `streaming` (or not stored) is skipped without failing the others; the ids of
    /// those are returned, in order.
    async fn append_messages(&self, appends: &[MessageAppend]) -> Result<Vec<MessageId>>;
    /// Finishes a `streaming` message as `completed` or `error`.
    async fn finish_message(&self, id: MessageId, status: MessageStatus) -> Result<Message>;
    /// Up to `limit` messages with `seq > after_seq`, in sequence order (replay: pass the
    /// last `seq` seen, 0 at first).
    async fn list_messages(
        &self,
        sandbox_id: SandboxId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<Message>>;

    // ---- learnings ----

    /// Records a learning.
    async fn create_learning(&self, new: NewLearning) -> Result<Learning>;
    /// A project's learnings, oldest first.
    async fn list_learnings(&self, project_id: ProjectId) -> Result<Vec<Learning>>;
    /// Records `learnings` of one project and, with `compiled`, the project's next learning
    /// version (made active), in one transaction: either all of it is stored or nothing.
    async fn record_learnings(
        &self,
        project_id: ProjectId,
        learnings: Vec<NewLearning>,
        compiled: Option<String>,
    ) -> Result<(Vec<Learning>, Option<LearningVersion>)>;
    /// Adds the project's next learning version; with `activate`, it becomes the one
    /// active version.
    async fn create_learning_version(
        &self,
        project_id: ProjectId,
        compiled: String,
        activate: bool,
    ) -> Result<LearningVersion>;
    /// Makes `version` the project's one active version.
    async fn activate_learning_version(
        &self,
        project_id: ProjectId,
        version: i64,
    ) -> Result<LearningVersion>;
    /// The project's active version, if any.
    async fn active_learning_version(
        &self,
        project_id: ProjectId,
    ) -> Result<Option<LearningVersion>>;
    /// A project's versions, oldest first.
    async fn list_learning_versions(&self, project_id: ProjectId) -> Result<Vec<LearningVersion>>;

    // ---- template builds ----

    /// Queues a template build (`pending`).
    async fn create_template_build(&self, new: NewTemplateBuild) -> Result<TemplateBuild>;
    /// Gets a template build.
    async fn get_template_build(&self, id: TemplateBuildId) -> Result<TemplateBuild>;
    /// Records a build's progress; finished states stamp `finished_at`.
    async fn update_template_build(
        &self,
        id: TemplateBuildId,
        status: TemplateBuildStatus,
        error: Option<String>,
    ) -> Result<TemplateBuild>;
    /// Records the CLI version a build actually installed (known only once it ran).
    async fn set_template_build_version(
        &self,
        id: TemplateBuildId,
        cli_version: &str,
    ) -> Result<TemplateBuild>;
    /// Template builds, newest first, optionally of one tool.
    async fn list_template_builds(&self, tool_id: Option<String>) -> Result<Vec<TemplateBuild>>;

    // ---- usage ----

    /// Records usage, all or nothing: one unknown sandbox records none.
    async fn record_usage(&self, records: &[NewUsage]) -> Result<Vec<UsageRecord>>;
    /// A sandbox's totals per service and metric.
    async fn usage_for_sandbox(&self, sandbox_id: SandboxId) -> Result<Vec<UsageTotal>>;
    /// A project's totals per service and metric.
    async fn usage_for_project(&self, project_id: ProjectId) -> Result<Vec<UsageTotal>>;
    /// A project's totals per UTC day, service and metric for usage in `[from, to)`.
    async fn daily_usage(
        &self,
        project_id: ProjectId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<DailyUsage>>;
    /// Adds a price that applies from its `effective_from` on.
    async fn put_cost_rate(&self, new: NewCostRate) -> Result<CostRate>;
    /// The price in force at `at`: the latest rate effective at or before it.
    async fn cost_rate_at(
        &self,
        service: Service,
        metric: UsageMetric,
        at: DateTime<Utc>,
    ) -> Result<Option<CostRate>>;
    /// All rates, by service, metric and time.
    async fn list_cost_rates(&self) -> Result<Vec<CostRate>>;

    // ---- personas ----

    /// Creates a persona; a duplicate name in the project is a conflict, duplicate skill
    /// names are invalid input.
    async fn create_persona(&self, new: NewPersona) -> Result<Persona>;
    /// Gets a persona.
    async fn get_persona(&self, id: PersonaId) -> Result<Persona>;
    /// A project's personas, by name.
    async fn list_personas(&self, project_id: ProjectId) -> Result<Vec<Persona>>;
    /// Replaces everything of a persona but its id, project (`new.project_id` is ignored)
    /// and creation time; a duplicate name in the project is a conflict.
    async fn update_persona(&self, id: PersonaId, new: NewPersona) -> Result<Persona>;
    /// Deletes a persona; not found if there is none.
    async fn delete_persona(&self, id: PersonaId) -> Result<()>;

    // ---- workflow runs ----

    /// Records a run: `pending`, iteration 0, on `new.branch`.
    async fn create_workflow_run(&self, new: NewWorkflowRun) -> Result<WorkflowRun>;
    /// Gets a run.
    async fn get_workflow_run(&self, id: WorkflowRunId) -> Result<WorkflowRun>;
    /// A project's runs (only `chain_id`'s, if given), newest first.
    async fn list_workflow_runs(
        &self,
        project_id: ProjectId,
        chain_id: Option<WorkChainId>,
    ) -> Result<Vec<WorkflowRun>>;
    /// Every `pending` or `running` run, oldest first (to resume after a restart).
    async fn list_unfinished_workflow_runs(&self) -> Result<Vec<WorkflowRun>>;
    /// Compare-and-set: saves `state` only if the run's status is still `from`;
    /// [`StoreError::Conflict`] otherwise; [`StoreError::InvalidRunTransition`] when
    /// `from` is final; stamps `finished_at` when `state.status` is final; bumps
    /// `updated_at`.
    async fn update_workflow_run(
        &self,
        id: WorkflowRunId,
        from: RunStatus,
        state: RunState,
    ) -> Result<WorkflowRun>;
    /// Adds a `running` step with the run's next sequence number (1, 2, …), atomically.
    async fn add_workflow_step(&self, new: NewWorkflowStep) -> Result<WorkflowStep>;
    /// Records the sandbox a step runs in.
    async fn set_workflow_step_sandbox(
        &self,
        id: WorkflowStepId,
        sandbox_id: SandboxId,
    ) -> Result<WorkflowStep>;
    /// Finishes a `running` step (a conflict otherwise) with a final status (invalid
    /// input otherwise), stamping `finished_at`.
    async fn finish_workflow_step(
        &self,
        id: WorkflowStepId,
        outcome: StepOutcome,
    ) -> Result<WorkflowStep>;
    /// A run's steps, by sequence number.
    async fn list_workflow_steps(&self, run_id: WorkflowRunId) -> Result<Vec<WorkflowStep>>;

    // ---- work chains ----

    /// Records a `pending` chain and its `pending` items (positions 1, 2, …) in one
    /// transaction; invalid input if there are no items.
    async fn create_work_chain(&self, new: NewWorkChain) -> Result<WorkChain>;
    /// Gets a chain.
    async fn get_work_chain(&self, id: WorkChainId) -> Result<WorkChain>;
    /// A project's chains, newest first.
    async fn list_work_chains(&self, project_id: ProjectId) -> Result<Vec<WorkChain>>;
    /// Every `pending` or `running` chain, oldest first.
    async fn list_unfinished_work_chains(&self) -> Result<Vec<WorkChain>>;
    /// A chain's items, by position.
    async fn list_chain_items(&self, chain_id: WorkChainId) -> Result<Vec<ChainItem>>;
    /// Adds a `pending` item at the chain's next position; a conflict if the chain is final.
    async fn append_chain_item(
        &self,
        chain_id: WorkChainId,
        new: NewChainItem,
    ) -> Result<ChainItem>;
    /// Records an item's progress: `status` and `error` replace what is stored, `run_id`
    /// overwrites when `Some` and keeps the stored run when `None`.
    async fn update_chain_item(
        &self,
        chain_id: WorkChainId,
        position: i64,
        run_id: Option<WorkflowRunId>,
        status: RunStatus,
        error: Option<String>,
    ) -> Result<ChainItem>;
    /// Compare-and-set like [`update_workflow_run`](Store::update_workflow_run): moves the
    /// chain from `from` to `to` (recording `error`) only if it is still in `from`.
    async fn update_work_chain(
        &self,
        id: WorkChainId,
        from: RunStatus,
        to: RunStatus,
        error: Option<String>,
    ) -> Result<WorkChain>;

    // ---- issue sessions ----

    /// Records a `running` issue session.
    async fn create_issue_session(&self, new: NewIssueSession) -> Result<IssueSession>;
    /// Gets an issue session.
    async fn get_issue_session(&self, id: IssueSessionId) -> Result<IssueSession>;
    /// A project's issue sessions, newest first.
    async fn list_issue_sessions(&self, project_id: ProjectId) -> Result<Vec<IssueSession>>;
    /// Every `pending` or `running` issue session, oldest first.
    async fn list_unfinished_issue_sessions(&self) -> Result<Vec<IssueSession>>;
    /// Records the sandbox a session looks in.
    async fn set_issue_session_sandbox(
        &self,
        id: IssueSessionId,
        sandbox_id: SandboxId,
    ) -> Result<IssueSession>;
    /// Ends a session with a final `status` (invalid input otherwise) and stores its
    /// cards (positions 1, 2, …) in one transaction; a conflict if already final.
    async fn finish_issue_session(
        &self,
        id: IssueSessionId,
        status: RunStatus,
        error: Option<String>,
        cards: Vec<NewIssueCard>,
    ) -> Result<(IssueSession, Vec<IssueCard>)>;
    /// A session's cards, by position.
    async fn list_issue_cards(&self, session_id: IssueSessionId) -> Result<Vec<IssueCard>>;
    /// Gets an issue card.
    async fn get_issue_card(&self, id: IssueCardId) -> Result<IssueCard>;
    /// Records what a card became: `Some` values overwrite, `None` keeps.
    async fn link_issue_card(
        &self,
        id: IssueCardId,
        sandbox_id: Option<SandboxId>,
        chain_id: Option<WorkChainId>,
    ) -> Result<IssueCard>;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn mock_store_stands_in_for_a_shared_dyn_store() {
        let mut mock = MockStore::new();
        mock.expect_get_sandbox().returning(|id| {
            Err(StoreError::NotFound {
                entity: "sandbox",
                id: id.to_string(),
            })
        });
        let store: Arc<dyn Store> = Arc::new(mock);
        let err = store.get_sandbox(SandboxId::new()).await.unwrap_err();
        assert!(matches!(
            err,
            StoreError::NotFound {
                entity: "sandbox",
                ..
            }
        ));
    }
}
