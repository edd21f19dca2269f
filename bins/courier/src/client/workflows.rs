//! `courier workflow run|list|show|cancel`, and the workflow flags `courier chain start`
//! shares.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use courier_api::views::{
    NewWorkflowRun, RunDetail, StepRequest, WorkflowOptions, WorkflowRun, WorkflowRunList,
    WorkflowStep,
};
use courier_store::RunStatus;
use reqwest::Method;

use super::sandbox::parse_timeout;
use super::{
    Conn, Http, Result, WAIT_POLL, fail, or_dash, print_json, project_id, read_file, short_time,
    split_pair,
};
use crate::table;

#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Starts a workflow run: a designer works on the prompt, a checker reviews the work
    /// and answers with a verdict (`needs_changes` sends the designer round again, up to
    /// --max-iterations), an optional optimizer polishes it.
    Run(Box<RunArgs>),
    /// Lists the project's workflow runs, newest first.
    List {
        /// The project (default: your first).
        #[arg(long)]
        project: Option<String>,
    },
    /// Shows a run: its steps (role, iteration, verdict, sandbox, status), the checkers'
    /// feedback and the summed cost.
    Show {
        /// Workflow run id.
        id: String,
    },
    /// Cancels a run that has not ended.
    Cancel {
        /// Workflow run id.
        id: String,
    },
}

/// Where a run or chain works: repository and branches.
#[derive(Debug, Args)]
pub struct GitFlags {
    /// Repository to clone (default: the project's).
    #[arg(long, value_name = "URL")]
    pub repo: Option<String>,
    /// Base branch (default: the project's).
    #[arg(long, value_name = "BRANCH")]
    pub base: Option<String>,
    /// The branch to work on (default: a new one).
    #[arg(long, value_name = "BRANCH")]
    pub branch: Option<String>,
}

/// How a workflow runs; unset flags come from the project's settings, then the defaults.
#[derive(Debug, Args)]
pub struct WorkflowFlags {
    /// The steps, comma-separated: designer first, each role once, in the order
    /// designer,checker,optimizer [default: designer,checker].
    #[arg(long, value_name = "ROLES", value_delimiter = ',')]
    steps: Vec<String>,
    /// Designer–checker rounds at most (1–10) [default: 3].
    #[arg(long, value_name = "N")]
    max_iterations: Option<u32>,
    /// The CLI every step uses unless overridden: claude, opencode, codex, pi.
    #[arg(long, value_name = "TOOL")]
    tool: Option<String>,
    /// Its model.
    #[arg(long, value_name = "MODEL")]
    model: Option<String>,
    /// The designer's CLI.
    #[arg(long, value_name = "TOOL")]
    designer_cli: Option<String>,
    /// The checker's CLI.
    #[arg(long, value_name = "TOOL")]
    checker_cli: Option<String>,
    /// The optimizer's CLI.
    #[arg(long, value_name = "TOOL")]
    optimizer_cli: Option<String>,
    /// The designer's model.
    #[arg(long, value_name = "MODEL")]
    designer_model: Option<String>,
    /// The checker's model.
    #[arg(long, value_name = "MODEL")]
    checker_model: Option<String>,
    /// The template of every step's sandbox.
    #[arg(long, value_name = "TEMPLATE")]
    template: Option<String>,
    /// The checker's template (falls back to --template).
    #[arg(long, value_name = "TEMPLATE")]
    checker_template: Option<String>,
    /// Runs a step as a persona (`courier persona list`): ROLE=PERSONA_ID (repeatable).
    #[arg(long = "persona", value_name = "ROLE=PERSONA_ID")]
    persona: Vec<String>,
    /// Extra instructions for a step, read from FILE: ROLE=FILE (repeatable).
    #[arg(long = "instructions", value_name = "ROLE=FILE")]
    instructions: Vec<String>,
    /// Thinking effort for a model: MODEL=EFFORT, EFFORT none, low, medium or high
    /// (repeatable).
    #[arg(long = "effort", value_name = "MODEL=EFFORT")]
    effort: Vec<String>,
    /// Memory in MB per sandbox (256–8192).
    #[arg(long, value_name = "MB")]
    memory: Option<i64>,
    /// CPUs per sandbox (1–8).
    #[arg(long, value_name = "N")]
    cpus: Option<i64>,
    /// Lifetime of each sandbox: `15m`, `900s`, `1h` or minutes.
    #[arg(long, value_parser = parse_timeout, value_name = "DURATION")]
    timeout: Option<i64>,
}

impl WorkflowFlags {
    /// The API's workflow options.
    pub fn options(self) -> Result<WorkflowOptions> {
        let mut personas = HashMap::new();
        for pair in &self.persona {
            let (role, id) = split_pair("--persona", pair)?;
            personas.insert(role.to_owned(), id.to_owned());
        }
        let mut instructions = HashMap::new();
        for pair in &self.instructions {
            let (role, file) = split_pair("--instructions", pair)?;
            instructions.insert(role.to_owned(), read_file(Path::new(file))?);
        }
        let steps = if self.steps.is_empty() && personas.is_empty() && instructions.is_empty() {
            None
        } else {
            let roles: Vec<String> = if self.steps.is_empty() {
                vec!["designer".into(), "checker".into()]
            } else {
                self.steps.iter().map(|r| r.trim().to_owned()).collect()
            };
            for role in personas.keys().chain(instructions.keys()) {
                if !roles.contains(role) {
                    return Err(fail(
                        2,
                        format!(
                            "--persona/--instructions name role `{role}`, which is not one of the steps ({})",
                            roles.join(",")
                        ),
                    ));
                }
            }
            Some(
                roles
                    .into_iter()
                    .map(|role| StepRequest {
                        persona_id: personas.get(&role).cloned(),
                        instructions: instructions.get(&role).cloned(),
                        role,
                    })
                    .collect(),
            )
        };
        let mut thinking_effort = BTreeMap::new();
        for pair in &self.effort {
            let (model, effort) = split_pair("--effort", pair)?;
            thinking_effort.insert(model.to_owned(), effort.to_owned());
        }
        Ok(WorkflowOptions {
            tool: self.tool,
            model: self.model,
            steps,
            max_iterations: self.max_iterations,
            memory_mb: self.memory,
            cpu_count: self.cpus,
            timeout_ms: self.timeout,
            template_id: self.template,
            checker_template_id: self.checker_template,
            thinking_effort,
            designer_cli_id: self.designer_cli,
            checker_cli_id: self.checker_cli,
            optimizer_cli_id: self.optimizer_cli,
            designer_model: self.designer_model,
            checker_model: self.checker_model,
        })
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The project (default: your first).
    #[arg(long)]
    project: Option<String>,
    /// The task.
    #[arg(
        long,
        value_name = "TEXT",
        required_unless_present = "prompt_file",
        conflicts_with = "prompt_file"
    )]
    prompt: Option<String>,
    /// The task, read from FILE.
    #[arg(long, value_name = "FILE")]
    prompt_file: Option<PathBuf>,
    /// Title (default: the prompt's first line).
    #[arg(long)]
    title: Option<String>,
    #[command(flatten)]
    git: GitFlags,
    #[command(flatten)]
    workflow: WorkflowFlags,
    /// Follow the run until it ends, printing each step as it starts and ends (exit 1
    /// when the run fails or is cancelled).
    #[arg(long)]
    wait: bool,
}

const RUN_HEADER: [&str; 6] = ["ID", "STATUS", "ITER", "VERDICT", "CREATED", "TITLE"];

pub(super) fn run_row(r: &WorkflowRun) -> Vec<String> {
    vec![
        r.id.to_string(),
        r.status.to_string(),
        r.iteration.to_string(),
        or_dash(r.verdict),
        short_time(&r.created_at),
        table::clip(&r.title, 48),
    ]
}

fn step_rows(steps: &[WorkflowStep]) -> Vec<Vec<String>> {
    steps
        .iter()
        .map(|s| {
            vec![
                s.seq.to_string(),
                s.role.to_string(),
                s.iteration.to_string(),
                s.status.to_string(),
                or_dash(s.verdict),
                or_dash(s.sandbox_id),
            ]
        })
        .collect()
}

fn print_detail(d: &RunDetail) {
    let r = &d.run;
    let rows = [
        ("id", r.id.to_string()),
        ("title", r.title.clone()),
        ("status", r.status.to_string()),
        (
            "iteration",
            format!("{} of {}", r.iteration, r.spec.max_iterations),
        ),
        ("verdict", or_dash(r.verdict)),
        ("chain", or_dash(r.chain_id)),
        ("repo", or_dash(r.repo_url.as_deref())),
        ("branch", or_dash(r.branch.as_deref())),
        ("error", or_dash(r.error.as_deref())),
        ("created", short_time(&r.created_at)),
        ("cost", format!("${:.4}", d.usage.cost_usd)),
    ];
    for (k, v) in rows {
        println!("{k:<10} {v}");
    }
    println!();
    print!(
        "{}",
        table::render(
            &["STEP", "ROLE", "ITER", "STATUS", "VERDICT", "SANDBOX"],
            &step_rows(&d.steps)
        )
    );
    for s in &d.steps {
        if let Some(feedback) = &s.feedback {
            println!(
                "\nfeedback (step {}, {} {}):\n{feedback}",
                s.seq, s.role, s.iteration
            );
        }
        if let Some(error) = &s.error {
            println!("\nerror (step {}, {}): {error}", s.seq, s.role);
        }
    }
}

/// Follows a run until it ends, printing each step as it starts and ends; the final
/// detail.
pub(super) async fn follow_run(http: &Http, id: &str, indent: &str) -> Result<RunDetail> {
    let path = format!("/v1/workflow-runs/{id}");
    // Per step id: whether its end was printed.
    let mut seen: HashMap<String, bool> = HashMap::new();
    loop {
        let d: RunDetail = http.fetch(Method::GET, &path).await?;
        for s in &d.steps {
            let key = s.id.to_string();
            let sandbox = s
                .sandbox_id
                .map(|id| format!(" in sandbox {id}"))
                .unwrap_or_default();
            if !seen.contains_key(&key) {
                println!(
                    "{indent}step {} {} (iteration {}) started{sandbox}",
                    s.seq, s.role, s.iteration
                );
                seen.insert(key.clone(), false);
            }
            if s.status != RunStatus::Running
                && s.status != RunStatus::Pending
                && seen.get(&key) == Some(&false)
            {
                let verdict = s
                    .verdict
                    .map(|v| format!(", verdict {v}"))
                    .unwrap_or_default();
                println!(
                    "{indent}step {} {} (iteration {}) {}{sandbox}{verdict}",
                    s.seq, s.role, s.iteration, s.status
                );
                if let Some(feedback) = &s.feedback {
                    println!("{indent}  feedback: {}", table::clip(feedback, 200));
                }
                seen.insert(key, true);
            }
        }
        if d.run.status.is_final() {
            return Ok(d);
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

/// Exit 1 unless `status` is `succeeded`.
pub(super) fn ended(what: &str, status: RunStatus, error: Option<&str>) -> Result<()> {
    match status {
        RunStatus::Succeeded => Ok(()),
        other => Err(fail(
            1,
            format!(
                "{what} {other}{}",
                error.map(|e| format!(": {e}")).unwrap_or_default()
            ),
        )),
    }
}

async fn run(conn: &Conn, http: &Http, a: RunArgs) -> Result<()> {
    let project = project_id(http, a.project).await?;
    let prompt = match (a.prompt, a.prompt_file) {
        (Some(p), _) => p,
        (None, Some(file)) => read_file(&file)?,
        (None, None) => return Err(fail(2, "give --prompt TEXT or --prompt-file FILE")),
    };
    let o = a.workflow.options()?;
    let body = NewWorkflowRun {
        prompt,
        title: a.title,
        repo_url: a.git.repo,
        base_branch: a.git.base,
        branch: a.git.branch,
        tool: o.tool,
        model: o.model,
        steps: o.steps,
        max_iterations: o.max_iterations,
        memory_mb: o.memory_mb,
        cpu_count: o.cpu_count,
        timeout_ms: o.timeout_ms,
        template_id: o.template_id,
        checker_template_id: o.checker_template_id,
        thinking_effort: o.thinking_effort,
        designer_cli_id: o.designer_cli_id,
        checker_cli_id: o.checker_cli_id,
        optimizer_cli_id: o.optimizer_cli_id,
        designer_model: o.designer_model,
        checker_model: o.checker_model,
    };
    let started: WorkflowRun = http
        .call(
            Method::POST,
            &format!("/v1/projects/{project}/workflow-runs"),
            &body,
        )
        .await?;
    let id = started.id.to_string();
    if !a.wait {
        if conn.json {
            print_json(&started);
        } else {
            print!("{}", table::render(&RUN_HEADER, &[run_row(&started)]));
            println!("follow it with: courier workflow show {id}");
        }
        return Ok(());
    }
    if !conn.json {
        println!("workflow run {id} started");
    }
    let detail = if conn.json {
        follow_quietly(http, &id).await?
    } else {
        follow_run(http, &id, "").await?
    };
    if conn.json {
        print_json(&detail);
    } else {
        let r = &detail.run;
        println!(
            "workflow run {id} {} after {} iteration(s), verdict {}, cost ${:.4}",
            r.status,
            r.iteration,
            or_dash(r.verdict),
            detail.usage.cost_usd
        );
    }
    ended(
        "workflow run",
        detail.run.status,
        detail.run.error.as_deref(),
    )
}

/// Waits for a run to end without printing.
async fn follow_quietly(http: &Http, id: &str) -> Result<RunDetail> {
    let path = format!("/v1/workflow-runs/{id}");
    loop {
        let d: RunDetail = http.fetch(Method::GET, &path).await?;
        if d.run.status.is_final() {
            return Ok(d);
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

/// `courier workflow …`.
pub async fn workflow(conn: &Conn, command: WorkflowCommand) -> Result<()> {
    let http = Http::new(conn)?;
    match command {
        WorkflowCommand::Run(a) => run(conn, &http, *a).await,
        WorkflowCommand::List { project } => {
            let project = project_id(&http, project).await?;
            let list: WorkflowRunList = http
                .fetch(
                    Method::GET,
                    &format!("/v1/projects/{project}/workflow-runs"),
                )
                .await?;
            if conn.json {
                print_json(&list);
            } else {
                let rows: Vec<_> = list.items.iter().map(run_row).collect();
                print!("{}", table::render(&RUN_HEADER, &rows));
            }
            Ok(())
        }
        WorkflowCommand::Show { id } => {
            let d: RunDetail = http
                .fetch(Method::GET, &format!("/v1/workflow-runs/{id}"))
                .await?;
            if conn.json {
                print_json(&d);
            } else {
                print_detail(&d);
            }
            Ok(())
        }
        WorkflowCommand::Cancel { id } => {
            let r: WorkflowRun = http
                .fetch(Method::POST, &format!("/v1/workflow-runs/{id}/cancel"))
                .await?;
            if conn.json {
                print_json(&r);
            } else {
                println!("{id} {}", r.status);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        workflow: WorkflowFlags,
    }

    fn options(args: &[&str]) -> Result<WorkflowOptions> {
        let parsed = Flags::try_parse_from(std::iter::once("courier").chain(args.iter().copied()));
        parsed
            .map_err(|e| fail(2, e.to_string()))?
            .workflow
            .options()
    }

    #[test]
    fn steps_personas_and_efforts_become_the_workflow_options() {
        let o = options(&[]).map_err(|f| f.message).unwrap();
        assert_eq!(o.steps, None);
        let o = options(&[
            "--steps",
            "designer,checker,optimizer",
            "--persona",
            "checker=p-1",
            "--effort",
            "opus=high",
            "--timeout",
            "10m",
        ])
        .map_err(|f| f.message)
        .unwrap();
        let steps = o.steps.unwrap();
        let roles: Vec<_> = steps.iter().map(|s| s.role.as_str()).collect();
        assert_eq!(roles, ["designer", "checker", "optimizer"]);
        assert_eq!(steps[1].persona_id.as_deref(), Some("p-1"));
        assert_eq!(steps[0].persona_id, None);
        assert_eq!(
            o.thinking_effort.get("opus").map(String::as_str),
            Some("high")
        );
        assert_eq!(o.timeout_ms, Some(600_000));
        // A persona without --steps: the default steps carry it.
        let o = options(&["--persona", "designer=p-2"])
            .map_err(|f| f.message)
            .unwrap();
        assert_eq!(o.steps.unwrap().len(), 2);
    }

    #[test]
    fn a_persona_for_a_missing_step_or_a_bad_pair_is_bad_usage() {
        let f = options(&["--persona", "optimizer=p-1"]).unwrap_err();
        assert_eq!(f.code, 2);
        assert!(f.message.contains("optimizer"), "{}", f.message);
        assert_eq!(options(&["--effort", "high"]).unwrap_err().code, 2);
    }
}
