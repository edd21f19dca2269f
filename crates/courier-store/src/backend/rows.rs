//! Decoding rows into records, the same for every backend.

/// The row decoders, for the backend database `$db`.
macro_rules! store_rows {
    ($db:ty) => {
        type DbRow = <$db as sqlx::Database>::Row;

        fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
            serde_json::to_string(value)
                .map_err(|e| StoreError::Database(sqlx::Error::Encode(Box::new(e))))
        }

        fn from_json<T: serde::de::DeserializeOwned>(text: String) -> Result<T> {
            serde_json::from_str(&text)
                .map_err(|e| StoreError::Database(sqlx::Error::Decode(Box::new(e))))
        }

        fn user_from_row(r: &DbRow) -> Result<User> {
            Ok(User {
                id: UserId::from_uuid(r.try_get("id")?),
                email: r.try_get("email")?,
                name: r.try_get("name")?,
                created_at: time(r.try_get("created_at")?)?,
            })
        }

        fn project_from_row(r: &DbRow) -> Result<Project> {
            Ok(Project {
                id: ProjectId::from_uuid(r.try_get("id")?),
                user_id: UserId::from_uuid(r.try_get("user_id")?),
                name: r.try_get("name")?,
                active_sandboxes: r.try_get("active_sandboxes")?,
                created_at: time(r.try_get("created_at")?)?,
                updated_at: time(r.try_get("updated_at")?)?,
            })
        }

        fn key_from_row(r: &DbRow, owner: KeyOwner) -> Result<ProviderKey> {
            let owner_id: Uuid = r.try_get("owner_id")?;
            let owner = match owner {
                KeyOwner::User(_) => KeyOwner::User(UserId::from_uuid(owner_id)),
                KeyOwner::Project(_) => KeyOwner::Project(ProjectId::from_uuid(owner_id)),
            };
            Ok(ProviderKey {
                id: ProviderKeyId::from_uuid(r.try_get("id")?),
                owner,
                provider: Provider::parse_field(r.try_get("provider")?, "provider")?,
                ciphertext: r.try_get("ciphertext")?,
                last_four: r.try_get("last_four")?,
                created_at: time(r.try_get("created_at")?)?,
                updated_at: time(r.try_get("updated_at")?)?,
            })
        }

        fn sandbox_from_row(r: &DbRow) -> Result<Sandbox> {
            let config: String = r.try_get("config")?;
            let config = serde_json::from_str(&config)
                .map_err(|e| StoreError::Database(sqlx::Error::Decode(Box::new(e))))?;
            let pr_status: Option<String> = r.try_get("pr_status")?;
            Ok(Sandbox {
                id: SandboxId::from_uuid(r.try_get("id")?),
                user_id: UserId::from_uuid(r.try_get("user_id")?),
                project_id: ProjectId::from_uuid(r.try_get("project_id")?),
                provider_sandbox_id: r.try_get("provider_sandbox_id")?,
                status: SandboxStatus::parse_field(r.try_get("status")?, "status")?,
                error_message: r.try_get("error_message")?,
                config,
                cli_tool: r.try_get("cli_tool")?,
                model: r.try_get("model")?,
                prompt: r.try_get("prompt")?,
                links: SandboxLinks {
                    run_id: r.try_get("run_id")?,
                    issue_session_id: r.try_get("issue_session_id")?,
                    background_task_id: r.try_get("background_task_id")?,
                },
                git: GitInfo {
                    repo_url: r.try_get("repo_url")?,
                    branch: r.try_get("branch")?,
                    pr_url: r.try_get("pr_url")?,
                    pr_number: r.try_get("pr_number")?,
                    pr_status: pr_status
                        .map(|s| PrStatus::parse_field(&s, "pr status"))
                        .transpose()?,
                    pr_error: r.try_get("pr_error")?,
                },
                learning_status: LearningStatus::parse_field(
                    r.try_get("learning_status")?,
                    "learning status",
                )?,
                learning_error: r.try_get("learning_error")?,
                created_at: time(r.try_get("created_at")?)?,
                updated_at: time(r.try_get("updated_at")?)?,
                started_at: opt_time(r.try_get("started_at")?)?,
                ended_at: opt_time(r.try_get("ended_at")?)?,
                deleted_at: opt_time(r.try_get("deleted_at")?)?,
            })
        }

        fn message_from_row(r: &DbRow) -> Result<Message> {
            Ok(Message {
                id: MessageId::from_uuid(r.try_get("id")?),
                sandbox_id: SandboxId::from_uuid(r.try_get("sandbox_id")?),
                seq: r.try_get("seq")?,
                role: MessageRole::parse_field(r.try_get("role")?, "role")?,
                content: r.try_get("content")?,
                status: MessageStatus::parse_field(r.try_get("status")?, "message status")?,
                raw_log: r.try_get("raw_log")?,
                created_at: time(r.try_get("created_at")?)?,
                updated_at: time(r.try_get("updated_at")?)?,
            })
        }

        /// Concatenates chunk rows (in id order) into (content, raw log).
        fn fold_chunks(rows: &[DbRow]) -> Result<(String, String)> {
            let mut content = String::new();
            let mut raw_log = String::new();
            for row in rows {
                let kind: i32 = row.try_get("kind")?;
                let text: &str = row.try_get("text")?;
                if kind == sql::CHUNK_RAW_LOG {
                    raw_log.push_str(text);
                } else {
                    debug_assert_eq!(kind, sql::CHUNK_CONTENT);
                    content.push_str(text);
                }
            }
            Ok((content, raw_log))
        }

        fn learning_from_row(r: &DbRow) -> Result<Learning> {
            let source: Option<Uuid> = r.try_get("source_sandbox_id")?;
            Ok(Learning {
                id: LearningId::from_uuid(r.try_get("id")?),
                project_id: ProjectId::from_uuid(r.try_get("project_id")?),
                category: LearningCategory::parse_field(r.try_get("category")?, "category")?,
                content: r.try_get("content")?,
                evidence: r.try_get("evidence")?,
                source_sandbox_id: source.map(SandboxId::from_uuid),
                created_at: time(r.try_get("created_at")?)?,
            })
        }

        fn version_from_row(r: &DbRow) -> Result<LearningVersion> {
            Ok(LearningVersion {
                id: LearningVersionId::from_uuid(r.try_get("id")?),
                project_id: ProjectId::from_uuid(r.try_get("project_id")?),
                version: r.try_get("version")?,
                compiled: r.try_get("compiled")?,
                active: r.try_get("active")?,
                created_at: time(r.try_get("created_at")?)?,
            })
        }

        fn build_from_row(r: &DbRow) -> Result<TemplateBuild> {
            Ok(TemplateBuild {
                id: TemplateBuildId::from_uuid(r.try_get("id")?),
                tool_id: r.try_get("tool_id")?,
                template_name: r.try_get("template_name")?,
                cli_version: r.try_get("cli_version")?,
                status: TemplateBuildStatus::parse_field(
                    r.try_get("status")?,
                    "template build status",
                )?,
                error: r.try_get("error")?,
                created_at: time(r.try_get("created_at")?)?,
                updated_at: time(r.try_get("updated_at")?)?,
                finished_at: opt_time(r.try_get("finished_at")?)?,
            })
        }

        fn usage_from_row(r: &DbRow) -> Result<UsageRecord> {
            let sandbox: Option<Uuid> = r.try_get("sandbox_id")?;
            Ok(UsageRecord {
                id: UsageRecordId::from_uuid(r.try_get("id")?),
                sandbox_id: sandbox.map(SandboxId::from_uuid),
                project_id: ProjectId::from_uuid(r.try_get("project_id")?),
                service: Service::parse_field(r.try_get("service")?, "service")?,
                metric: UsageMetric::parse_field(r.try_get("metric")?, "metric")?,
                quantity: r.try_get("quantity")?,
                cost: Money::from_micros(r.try_get("cost_micros")?),
                recorded_at: time(r.try_get("recorded_at")?)?,
            })
        }

        fn total_from_row(r: &DbRow) -> Result<UsageTotal> {
            Ok(UsageTotal {
                service: Service::parse_field(r.try_get("service")?, "service")?,
                metric: UsageMetric::parse_field(r.try_get("metric")?, "metric")?,
                quantity: r.try_get("quantity")?,
                cost: Money::from_micros(r.try_get("cost_micros")?),
            })
        }

        fn rate_from_row(r: &DbRow) -> Result<CostRate> {
            Ok(CostRate {
                id: CostRateId::from_uuid(r.try_get("id")?),
                service: Service::parse_field(r.try_get("service")?, "service")?,
                metric: UsageMetric::parse_field(r.try_get("metric")?, "metric")?,
                usd_per_unit: r.try_get("usd_per_unit")?,
                effective_from: time(r.try_get("effective_from")?)?,
            })
        }

        fn persona_from_row(r: &DbRow) -> Result<Persona> {
            Ok(Persona {
                id: PersonaId::from_uuid(r.try_get("id")?),
                project_id: ProjectId::from_uuid(r.try_get("project_id")?),
                name: r.try_get("name")?,
                tool: r.try_get("tool")?,
                model: r.try_get("model")?,
                thinking_effort: r.try_get("thinking_effort")?,
                system_prompt: r.try_get("system_prompt")?,
                skills: from_json(r.try_get("skills")?)?,
                created_at: time(r.try_get("created_at")?)?,
                updated_at: time(r.try_get("updated_at")?)?,
            })
        }

        fn opt_verdict(r: &DbRow) -> Result<Option<Verdict>> {
            let verdict: Option<String> = r.try_get("verdict")?;
            verdict
                .map(|v| Verdict::parse_field(&v, "verdict"))
                .transpose()
        }

        fn run_status(r: &DbRow) -> Result<RunStatus> {
            RunStatus::parse_field(r.try_get("status")?, "run status")
        }

        fn run_from_row(r: &DbRow) -> Result<WorkflowRun> {
            let chain: Option<Uuid> = r.try_get("chain_id")?;
            let designer: Option<Uuid> = r.try_get("designer_sandbox_id")?;
            Ok(WorkflowRun {
                id: WorkflowRunId::from_uuid(r.try_get("id")?),
                user_id: UserId::from_uuid(r.try_get("user_id")?),
                project_id: ProjectId::from_uuid(r.try_get("project_id")?),
                chain_id: chain.map(WorkChainId::from_uuid),
                title: r.try_get("title")?,
                prompt: r.try_get("prompt")?,
                spec: from_json(r.try_get("spec")?)?,
                repo_url: r.try_get("repo_url")?,
                base_branch: r.try_get("base_branch")?,
                state: RunState {
                    status: run_status(r)?,
                    iteration: r.try_get("iteration")?,
                    designer_sandbox_id: designer.map(SandboxId::from_uuid),
                    verdict: opt_verdict(r)?,
                    branch: r.try_get("branch")?,
                    error: r.try_get("error")?,
                },
                created_at: time(r.try_get("created_at")?)?,
                updated_at: time(r.try_get("updated_at")?)?,
                finished_at: opt_time(r.try_get("finished_at")?)?,
            })
        }

        fn step_from_row(r: &DbRow) -> Result<WorkflowStep> {
            let sandbox: Option<Uuid> = r.try_get("sandbox_id")?;
            Ok(WorkflowStep {
                id: WorkflowStepId::from_uuid(r.try_get("id")?),
                run_id: WorkflowRunId::from_uuid(r.try_get("run_id")?),
                seq: r.try_get("seq")?,
                role: StepRole::parse_field(r.try_get("role")?, "role")?,
                iteration: r.try_get("iteration")?,
                sandbox_id: sandbox.map(SandboxId::from_uuid),
                status: run_status(r)?,
                verdict: opt_verdict(r)?,
                feedback: r.try_get("feedback")?,
                output: r.try_get("output")?,
                error: r.try_get("error")?,
                started_at: time(r.try_get("started_at")?)?,
                finished_at: opt_time(r.try_get("finished_at")?)?,
            })
        }

        fn chain_from_row(r: &DbRow) -> Result<WorkChain> {
            Ok(WorkChain {
                id: WorkChainId::from_uuid(r.try_get("id")?),
                user_id: UserId::from_uuid(r.try_get("user_id")?),
                project_id: ProjectId::from_uuid(r.try_get("project_id")?),
                title: r.try_get("title")?,
                spec: from_json(r.try_get("spec")?)?,
                repo_url: r.try_get("repo_url")?,
                base_branch: r.try_get("base_branch")?,
                branch: r.try_get("branch")?,
                pr_mode: PrMode::parse_field(r.try_get("pr_mode")?, "pr mode")?,
                status: run_status(r)?,
                error: r.try_get("error")?,
                created_at: time(r.try_get("created_at")?)?,
                updated_at: time(r.try_get("updated_at")?)?,
                finished_at: opt_time(r.try_get("finished_at")?)?,
            })
        }

        fn item_from_row(r: &DbRow) -> Result<ChainItem> {
            let card: Option<Uuid> = r.try_get("card_id")?;
            let run: Option<Uuid> = r.try_get("run_id")?;
            Ok(ChainItem {
                chain_id: WorkChainId::from_uuid(r.try_get("chain_id")?),
                position: r.try_get("position")?,
                title: r.try_get("title")?,
                prompt: r.try_get("prompt")?,
                card_id: card.map(IssueCardId::from_uuid),
                run_id: run.map(WorkflowRunId::from_uuid),
                status: run_status(r)?,
                error: r.try_get("error")?,
            })
        }

        fn session_from_row(r: &DbRow) -> Result<IssueSession> {
            let sandbox: Option<Uuid> = r.try_get("sandbox_id")?;
            Ok(IssueSession {
                id: IssueSessionId::from_uuid(r.try_get("id")?),
                user_id: UserId::from_uuid(r.try_get("user_id")?),
                project_id: ProjectId::from_uuid(r.try_get("project_id")?),
                focus: r.try_get("focus")?,
                sandbox_id: sandbox.map(SandboxId::from_uuid),
                status: run_status(r)?,
                error: r.try_get("error")?,
                created_at: time(r.try_get("created_at")?)?,
                finished_at: opt_time(r.try_get("finished_at")?)?,
            })
        }

        fn card_from_row(r: &DbRow) -> Result<IssueCard> {
            let sandbox: Option<Uuid> = r.try_get("sandbox_id")?;
            let chain: Option<Uuid> = r.try_get("chain_id")?;
            Ok(IssueCard {
                id: IssueCardId::from_uuid(r.try_get("id")?),
                session_id: IssueSessionId::from_uuid(r.try_get("session_id")?),
                project_id: ProjectId::from_uuid(r.try_get("project_id")?),
                position: r.try_get("position")?,
                title: r.try_get("title")?,
                description: r.try_get("description")?,
                severity: Severity::parse_field(r.try_get("severity")?, "severity")?,
                suggested_prompt: r.try_get("suggested_prompt")?,
                sandbox_id: sandbox.map(SandboxId::from_uuid),
                chain_id: chain.map(WorkChainId::from_uuid),
                created_at: time(r.try_get("created_at")?)?,
            })
        }

        fn key_sql(owner: KeyOwner) -> (&'static KeySql, Uuid) {
            match owner {
                KeyOwner::User(id) => (&sql::USER_KEYS, id.as_uuid()),
                KeyOwner::Project(id) => (&sql::PROJECT_KEYS, id.as_uuid()),
            }
        }
    };
}
