//! Work beyond one sandbox: workflow runs (designer, checker and optimizer steps),
//! personas for their steps, work chains (issues run one after another on one branch)
//! and issue sessions (a scanning agent's findings as cards).
//!
//! ## Workflow runs
//!
//! A run's steps are rows in the store, each with its sandbox (linked to the run by
//! `run_id`). The designer's sandbox is created once and reused: each later iteration
//! is a follow-up message carrying the checker's feedback. Between steps the designer's
//! work is committed and pushed, so each checker gets a fresh sandbox on the same branch
//! (its template is `checker_template_id` when set), answers with a verdict line
//! ([`parse_verdict`]) and is killed without saving anything. `needs_changes` sends the
//! designer round again, up to `max_iterations`; `pass` moves to the optimizer (when the
//! workflow has one, in its own sandbox on the branch, after the designer's sandbox is
//! ended) or ends the run. The run ends by killing its last writer, which pushes and opens
//! the pull request; a run that never passed keeps its work on the branch without one.
//!
//! ## Restart safety
//!
//! Nothing a run needs lives only in memory: the next action is derived from the stored
//! steps ([`next_action`]), a prompt is sent again only when the sandbox's last prompt is
//! not it, a step's sandbox created just before a crash is found again by its `run_id`,
//! and waiting reads the store. [`Workflows::resume`] (at startup, after
//! [`Orchestrator::reconcile`]) drives every unfinished run, chain and session on from
//! where it stood.
//!
//! In a cluster each piece of work is driven by one replica, its owner in the store
//! (`Cluster::claim_work`): the replica that records it claims it, and every replica's
//! periodic [`Workflows::resume`] claims the work of replicas that died.
//!
//! ## Where each part lives
//!
//! - `spec`: a requested workflow validated; a step's sandbox resolved.
//! - `prompts`: what each role and the scanner are asked.
//! - `parse`: verdicts and issue cards read from answers.
//! - `personas`: persona validation.
//! - `runs`: the run driver.
//! - `chains`: the work chain driver.
//! - `issues`: issue sessions and their cards.

mod chains;
mod issues;
mod parse;
mod personas;
mod prompts;
mod runs;
mod spec;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use courier_store::{IssueSessionId, Store, WorkChainId, WorkflowRunId};
use tokio::task::JoinHandle;

use crate::lifecycle::Orchestrator;

pub use chains::{ChainDetail, ChainRequest};
pub use issues::IssueSessionDetail;
pub use parse::{MAX_CARDS, parse_cards, parse_verdict};
pub use personas::PersonaRequest;
pub use prompts::VERDICT_FORMAT;
pub use runs::{NextAction, RunDetail, RunRequest, next_action};
pub use spec::{
    DEFAULT_MAX_ITERATIONS, MAX_ITERATIONS, StepTarget, WorkflowRequest, step_request,
    validate_steps,
};

/// How often a waiting step reads the store.
const POLL: Duration = Duration::from_millis(200);

/// What a background task drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Job {
    Run(WorkflowRunId),
    Chain(WorkChainId),
    Session(IssueSessionId),
}

impl Job {
    /// Its name among the cluster's work owners.
    fn name(&self) -> String {
        match self {
            Job::Run(id) => format!("run:{id}"),
            Job::Chain(id) => format!("chain:{id}"),
            Job::Session(id) => format!("session:{id}"),
        }
    }
}

/// Runs workflows, work chains and issue sessions over an [`Orchestrator`]. Cheap to
/// clone; clones share their background tasks.
#[derive(Clone)]
pub struct Workflows {
    orchestrator: Orchestrator,
    store: Arc<dyn Store>,
    jobs: Arc<Mutex<HashMap<Job, JoinHandle<()>>>>,
    poll: Duration,
}

impl std::fmt::Debug for Workflows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workflows").finish_non_exhaustive()
    }
}

/// What [`Workflows::resume`] picked up again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResumeReport {
    /// Workflow runs driven on (those of chains are driven by their chain).
    pub runs: usize,
    /// Work chains driven on.
    pub chains: usize,
    /// Issue sessions driven on.
    pub sessions: usize,
}

impl Workflows {
    /// Workflows over an orchestrator (and its store).
    pub fn new(orchestrator: Orchestrator) -> Self {
        Workflows {
            store: orchestrator.store().clone(),
            orchestrator,
            jobs: Arc::new(Mutex::new(HashMap::new())),
            poll: POLL,
        }
    }

    /// The orchestrator the steps run on.
    pub fn orchestrator(&self) -> &Orchestrator {
        &self.orchestrator
    }

    /// Drives every unfinished run, chain and session on from where the store says it
    /// stands. Call it at startup, after [`Orchestrator::reconcile`]. In a cluster
    /// ([`Orchestrator::with_cluster`]) it drives only the work no live replica drives
    /// (claimed first, so no piece is driven twice); call it periodically there too, to
    /// take over the work of replicas that die. Work this process drove before (even if
    /// it stopped on an error) is not started again: a restart resumes that.
    pub async fn resume(&self) -> crate::Result<ResumeReport> {
        let mut jobs = Vec::new();
        for run in self.store.list_unfinished_workflow_runs().await? {
            // A chain drives its own runs.
            if run.chain_id.is_none() {
                jobs.push(Job::Run(run.id));
            }
        }
        for chain in self.store.list_unfinished_work_chains().await? {
            jobs.push(Job::Chain(chain.id));
        }
        for session in self.store.list_unfinished_issue_sessions().await? {
            jobs.push(Job::Session(session.id));
        }
        {
            let driven = self.lock();
            jobs.retain(|job| !driven.contains_key(job));
        }
        let mut report = ResumeReport::default();
        for job in self.claim(jobs).await? {
            self.spawn(job);
            match job {
                Job::Run(_) => report.runs += 1,
                Job::Chain(_) => report.chains += 1,
                Job::Session(_) => report.sessions += 1,
            }
        }
        Ok(report)
    }

    /// Of `jobs`, those this process may drive: all of them on its own, those it owns
    /// (now or before) in a cluster.
    async fn claim(&self, jobs: Vec<Job>) -> crate::Result<Vec<Job>> {
        let Some(cluster) = self.orchestrator.cluster() else {
            return Ok(jobs);
        };
        let names: Vec<String> = jobs.iter().map(Job::name).collect();
        let mine = cluster.claim_work(&names).await?;
        Ok(jobs
            .into_iter()
            .filter(|job| mine.contains(&job.name()))
            .collect())
    }

    /// Drives a piece of work just recorded here, unless (in a cluster) another
    /// replica's [`resume`](Self::resume) claimed it first: that one drives it.
    async fn drive_new(&self, job: Job) -> crate::Result<()> {
        for job in self.claim(vec![job]).await? {
            self.spawn(job);
        }
        Ok(())
    }

    /// Stops driving everything without touching the store or the sandboxes, as a
    /// process exit would (tests simulate a restart with it).
    pub fn detach_all(&self) {
        for (_, task) in self.lock().drain() {
            task.abort();
        }
    }

    /// Whether a run, chain or session is being driven by this process.
    fn is_driving(&self, job: Job) -> bool {
        self.lock().get(&job).is_some_and(|t| !t.is_finished())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Job, JoinHandle<()>>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drives `job` in the background (once: a job already driven is left alone).
    fn spawn(&self, job: Job) {
        if self.is_driving(job) {
            return;
        }
        let this = self.clone();
        let task = tokio::spawn(async move {
            let result = match job {
                Job::Run(id) => this.drive_run(id).await.map(drop),
                Job::Chain(id) => this.drive_chain(id).await.map(drop),
                Job::Session(id) => this.drive_session(id).await.map(drop),
            };
            if let Err(e) = result {
                tracing::warn!(?job, error = %e, "stopped driving; a restart resumes it");
            }
        });
        self.lock().insert(job, task);
    }

    /// Stops driving `job` (after a cancel).
    fn abort(&self, job: Job) {
        if let Some(task) = self.lock().remove(&job) {
            task.abort();
        }
    }
}
