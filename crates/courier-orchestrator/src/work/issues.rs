//! Issue sessions: one sandbox (linked by `issue_session_id`) runs a scanning agent over
//! the repository; its answer's cards are parsed and stored with the session. Each card
//! can start a sandbox on its suggested prompt or join a work chain.

use courier_store::{
    ChainItem, DeletedFilter, IssueCard, IssueCardId, IssueSession, IssueSessionId, NewChainItem,
    NewIssueSession, PageRequest, ProjectId, RunStatus, Sandbox, SandboxFilter, SandboxLinks,
    UserId, WorkChainId,
};

use super::parse::{MAX_CARDS, parse_cards};
use super::{Job, Workflows, prompts};
use crate::config::CreateRequest;
use crate::lifecycle::KillOptions;
use crate::{OrchestratorError, Result};

/// A session with its cards and its sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct IssueSessionDetail {
    /// The session.
    pub session: IssueSession,
    /// Its cards in order (none until it succeeded).
    pub cards: Vec<IssueCard>,
    /// The scanning sandbox, once created.
    pub sandbox: Option<Sandbox>,
}

impl Workflows {
    /// Starts an issue session: records it, creates its sandbox with the scanning prompt
    /// (`tool` and `model` as for any create: default the project's), then follows it in
    /// the background.
    pub async fn start_issue_session(
        &self,
        user_id: UserId,
        project_id: ProjectId,
        focus: Option<String>,
        tool: Option<String>,
        model: Option<String>,
    ) -> Result<IssueSession> {
        let focus = focus.map(|f| f.trim().to_owned()).filter(|f| !f.is_empty());
        let prompt = prompts::issue_scan(focus.as_deref(), MAX_CARDS);
        let settings = self.store.get_project_settings(project_id).await?;
        let probe = CreateRequest {
            user_id,
            project_id,
            tool: tool.clone(),
            model: model.clone(),
            prompt: prompt.clone(),
            ..Default::default()
        };
        crate::settings::with_defaults(probe, &settings).validate()?;
        let session = self
            .store
            .create_issue_session(NewIssueSession {
                user_id,
                project_id,
                focus,
            })
            .await?;
        let created = self
            .orchestrator
            .create(CreateRequest {
                user_id,
                project_id,
                tool,
                model,
                prompt,
                links: SandboxLinks {
                    issue_session_id: Some(session.id.to_string()),
                    ..Default::default()
                },
                ..Default::default()
            })
            .await;
        match created {
            Ok(sandbox) => {
                let session = self
                    .store
                    .set_issue_session_sandbox(session.id, sandbox.id)
                    .await?;
                self.drive_new(Job::Session(session.id)).await?;
                Ok(session)
            }
            Err(e) => {
                self.store
                    .finish_issue_session(
                        session.id,
                        RunStatus::Failed,
                        Some(e.to_string()),
                        Vec::new(),
                    )
                    .await?;
                Err(e)
            }
        }
    }

    /// A session with its cards and sandbox.
    pub async fn issue_session_detail(&self, id: IssueSessionId) -> Result<IssueSessionDetail> {
        let session = self.store.get_issue_session(id).await?;
        let cards = self.store.list_issue_cards(id).await?;
        let sandbox = match session.sandbox_id {
            Some(s) => Some(self.store.get_sandbox(s).await?),
            None => None,
        };
        Ok(IssueSessionDetail {
            session,
            cards,
            sandbox,
        })
    }

    /// The session's sandbox: recorded, else found by its link (a crash between the
    /// create and its recording).
    async fn session_sandbox(&self, session: &IssueSession) -> Result<Option<Sandbox>> {
        if let Some(id) = session.sandbox_id {
            return Ok(Some(self.store.get_sandbox(id).await?));
        }
        let found = self
            .store
            .list_sandboxes(
                SandboxFilter {
                    issue_session_id: Some(session.id.to_string()),
                    deleted: DeletedFilter::Include,
                    ..Default::default()
                },
                PageRequest::default(),
            )
            .await?;
        let sandbox = found.items.into_iter().next();
        if let Some(sandbox) = &sandbox {
            self.store
                .set_issue_session_sandbox(session.id, sandbox.id)
                .await?;
        }
        Ok(sandbox)
    }

    /// Follows a session to its end: the scanner's answer parsed into cards, its sandbox
    /// killed (nothing saved).
    pub(super) async fn drive_session(&self, id: IssueSessionId) -> Result<IssueSession> {
        let session = self.store.get_issue_session(id).await?;
        if session.status.is_final() {
            return Ok(session);
        }
        let Some(sandbox) = self.session_sandbox(&session).await? else {
            let (session, _) = self
                .store
                .finish_issue_session(
                    id,
                    RunStatus::Failed,
                    Some("interrupted before its sandbox was created".into()),
                    Vec::new(),
                )
                .await?;
            return Ok(session);
        };
        let answer = self
            .orchestrator
            .wait_for_answer(sandbox.id, self.poll)
            .await;
        if let Err(e) = self
            .orchestrator
            .kill_with(
                sandbox.id,
                Some("issue scan done".into()),
                KillOptions::discard(),
            )
            .await
        {
            tracing::debug!(sandbox = %sandbox.id, error = %e, "scanner sandbox already ended");
        }
        let parsed = match answer {
            Err(e @ OrchestratorError::Store(_)) => return Err(e),
            Err(e) => Err(e.to_string()),
            Ok(answer) if !answer.succeeded() => {
                Err(format!("the scanning agent failed: {}", answer.text.trim()))
            }
            Ok(answer) => parse_cards(&answer.text),
        };
        let (session, _) = match parsed {
            Ok(cards) => {
                self.store
                    .finish_issue_session(id, RunStatus::Succeeded, None, cards)
                    .await?
            }
            Err(reason) => {
                self.store
                    .finish_issue_session(id, RunStatus::Failed, Some(reason), Vec::new())
                    .await?
            }
        };
        Ok(session)
    }

    /// Starts a sandbox on a card's suggested prompt (`tool` and `model` as for any
    /// create) and records it on the card.
    pub async fn start_card(
        &self,
        card: IssueCardId,
        user_id: UserId,
        tool: Option<String>,
        model: Option<String>,
    ) -> Result<(IssueCard, Sandbox)> {
        let found = self.store.get_issue_card(card).await?;
        let sandbox = self
            .orchestrator
            .create(CreateRequest {
                user_id,
                project_id: found.project_id,
                tool,
                model,
                prompt: found.suggested_prompt.clone(),
                ..Default::default()
            })
            .await?;
        let card = self
            .store
            .link_issue_card(card, Some(sandbox.id), None)
            .await?;
        Ok((card, sandbox))
    }

    /// Adds a card to a chain as its next issue.
    pub async fn add_card_to_chain(
        &self,
        card: IssueCardId,
        chain: WorkChainId,
    ) -> Result<ChainItem> {
        let found = self.store.get_issue_card(card).await?;
        let target = self.store.get_work_chain(chain).await?;
        if target.project_id != found.project_id {
            return Err(OrchestratorError::InvalidConfig {
                field: "chain_id",
                message: format!("chain {chain} belongs to another project"),
            });
        }
        self.add_to_chain(
            chain,
            NewChainItem {
                title: found.title.clone(),
                prompt: found.suggested_prompt.clone(),
                card_id: Some(card),
            },
        )
        .await
    }
}
