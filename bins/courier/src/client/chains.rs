//! `courier chain start|list|show|cancel|add`.

use std::collections::HashSet;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use courier_api::views::{
    ChainDetail, ChainItem, NewChainItem, NewWorkChain, WorkChain, WorkChainList,
};
use courier_store::RunStatus;
use reqwest::Method;
use serde::Deserialize;

use super::workflows::{GitFlags, WorkflowFlags, ended, follow_run};
use super::{
    Conn, Http, Result, WAIT_POLL, fail, or_dash, print_json, project_id, read_file, short_time,
};
use crate::table;

#[derive(Debug, Subcommand)]
pub enum ChainCommand {
    /// Starts a work chain: issues worked on one after another, each by a workflow run,
    /// on one branch (one pull request for the chain, or one per issue).
    Start(Box<StartArgs>),
    /// Lists the project's work chains.
    List {
        /// The project (default: your first).
        #[arg(long)]
        project: Option<String>,
    },
    /// Shows a chain: its issues in order, each with its status and run.
    Show {
        /// Work chain id.
        id: String,
    },
    /// Cancels a chain that has not ended (its running run too).
    Cancel {
        /// Work chain id.
        id: String,
    },
    /// Adds an issue at the end of a chain that has not ended.
    Add {
        /// Work chain id.
        id: String,
        /// Title (default: the prompt's first line).
        #[arg(long)]
        title: Option<String>,
        /// The task.
        #[arg(long, value_name = "TEXT")]
        prompt: String,
    },
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// The project (default: your first).
    #[arg(long)]
    project: Option<String>,
    /// The chain's title.
    #[arg(long)]
    title: Option<String>,
    /// An issue: "TITLE=PROMPT" (repeatable, in order).
    #[arg(
        long = "issue",
        value_name = "TITLE=PROMPT",
        required_unless_present = "issues_file"
    )]
    issue: Vec<String>,
    /// The issues from a JSON file: a list of {"title", "prompt"}.
    #[arg(long, value_name = "FILE")]
    issues_file: Option<PathBuf>,
    /// Pull requests: `single` (one for the chain) or `per-issue` [default: single].
    #[arg(long, value_name = "MODE")]
    pr_mode: Option<String>,
    #[command(flatten)]
    git: GitFlags,
    #[command(flatten)]
    workflow: WorkflowFlags,
    /// Follow the chain until it ends, printing each issue's steps as they start and end
    /// (exit 1 when the chain fails or is cancelled).
    #[arg(long)]
    wait: bool,
}

/// One issue of `--issues-file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIssue {
    #[serde(default)]
    title: Option<String>,
    prompt: String,
}

fn items(a: &StartArgs) -> Result<Vec<NewChainItem>> {
    let mut items = Vec::new();
    if let Some(file) = &a.issues_file {
        let issues: Vec<FileIssue> = serde_json::from_str(&read_file(file)?).map_err(|e| {
            fail(
                5,
                format!(
                    "{}: not a JSON list of {{\"title\", \"prompt\"}}: {e}",
                    file.display()
                ),
            )
        })?;
        items.extend(issues.into_iter().map(|i| NewChainItem {
            title: i.title,
            prompt: i.prompt,
            card_id: None,
        }));
    }
    for pair in &a.issue {
        let (title, prompt) = pair
            .split_once('=')
            .ok_or_else(|| fail(2, format!("--issue takes TITLE=PROMPT, got {pair:?}")))?;
        items.push(NewChainItem {
            title: Some(title.to_owned()).filter(|t| !t.is_empty()),
            prompt: prompt.to_owned(),
            card_id: None,
        });
    }
    Ok(items)
}

const CHAIN_HEADER: [&str; 6] = ["ID", "STATUS", "PR MODE", "BRANCH", "CREATED", "TITLE"];

fn chain_row(c: &WorkChain) -> Vec<String> {
    vec![
        c.id.to_string(),
        c.status.to_string(),
        c.pr_mode.to_string(),
        c.branch.clone(),
        short_time(&c.created_at),
        table::clip(&c.title, 40),
    ]
}

const ITEM_HEADER: [&str; 4] = ["POS", "STATUS", "RUN", "TITLE"];

fn item_row(i: &ChainItem) -> Vec<String> {
    vec![
        i.position.to_string(),
        i.status.to_string(),
        or_dash(i.run_id),
        table::clip(&i.title, 48),
    ]
}

fn print_detail(d: &ChainDetail) {
    let c = &d.chain;
    let rows = [
        ("id", c.id.to_string()),
        ("title", c.title.clone()),
        ("status", c.status.to_string()),
        ("pr_mode", c.pr_mode.to_string()),
        ("repo", or_dash(c.repo_url.as_deref())),
        ("branch", c.branch.clone()),
        ("error", or_dash(c.error.as_deref())),
        ("created", short_time(&c.created_at)),
    ];
    for (k, v) in rows {
        println!("{k:<8} {v}");
    }
    println!();
    let rows: Vec<_> = d.items.iter().map(item_row).collect();
    print!("{}", table::render(&ITEM_HEADER, &rows));
}

/// Follows a chain until it ends: each issue as it starts (its run's steps as they
/// start and end) and ends.
async fn follow_chain(http: &Http, id: &str) -> Result<ChainDetail> {
    let path = format!("/v1/work-chains/{id}");
    let mut followed: HashSet<i64> = HashSet::new();
    loop {
        let d: ChainDetail = http.fetch(Method::GET, &path).await?;
        let next = d
            .items
            .iter()
            .find(|i| i.run_id.is_some() && !followed.contains(&i.position));
        if let Some(item) = next {
            println!(
                "issue {} \"{}\" started (workflow run {})",
                item.position,
                item.title,
                or_dash(item.run_id)
            );
            if let Some(run) = item.run_id {
                let run = follow_run(http, &run.to_string(), "  ").await?;
                println!("issue {} {}", item.position, run.run.status);
            }
            followed.insert(item.position);
            continue;
        }
        if d.chain.status.is_final() {
            return Ok(d);
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

/// `courier chain …`.
pub async fn chain(conn: &Conn, command: ChainCommand) -> Result<()> {
    let http = Http::new(conn)?;
    match command {
        ChainCommand::Start(a) => {
            let a = *a;
            let project = project_id(&http, a.project.clone()).await?;
            let items = items(&a)?;
            let body = NewWorkChain {
                title: a.title,
                items,
                pr_mode: a.pr_mode.map(|m| m.replace('-', "_")),
                repo_url: a.git.repo,
                base_branch: a.git.base,
                branch: a.git.branch,
                workflow: a.workflow.options()?,
            };
            let started: WorkChain = http
                .call(
                    Method::POST,
                    &format!("/v1/projects/{project}/work-chains"),
                    &body,
                )
                .await?;
            let id = started.id.to_string();
            if !a.wait {
                if conn.json {
                    print_json(&started);
                } else {
                    print!("{}", table::render(&CHAIN_HEADER, &[chain_row(&started)]));
                    println!("follow it with: courier chain show {id}");
                }
                return Ok(());
            }
            let detail = if conn.json {
                loop {
                    let d: ChainDetail = http
                        .fetch(Method::GET, &format!("/v1/work-chains/{id}"))
                        .await?;
                    if d.chain.status.is_final() {
                        break d;
                    }
                    tokio::time::sleep(WAIT_POLL).await;
                }
            } else {
                println!("work chain {id} started");
                follow_chain(&http, &id).await?
            };
            if conn.json {
                print_json(&detail);
            } else {
                let done = detail
                    .items
                    .iter()
                    .filter(|i| i.status == RunStatus::Succeeded)
                    .count();
                println!(
                    "work chain {id} {}: {done} of {} issue(s) succeeded",
                    detail.chain.status,
                    detail.items.len()
                );
            }
            ended(
                "work chain",
                detail.chain.status,
                detail.chain.error.as_deref(),
            )
        }
        ChainCommand::List { project } => {
            let project = project_id(&http, project).await?;
            let list: WorkChainList = http
                .fetch(Method::GET, &format!("/v1/projects/{project}/work-chains"))
                .await?;
            if conn.json {
                print_json(&list);
            } else {
                let rows: Vec<_> = list.items.iter().map(chain_row).collect();
                print!("{}", table::render(&CHAIN_HEADER, &rows));
            }
            Ok(())
        }
        ChainCommand::Show { id } => {
            let d: ChainDetail = http
                .fetch(Method::GET, &format!("/v1/work-chains/{id}"))
                .await?;
            if conn.json {
                print_json(&d);
            } else {
                print_detail(&d);
            }
            Ok(())
        }
        ChainCommand::Cancel { id } => {
            let c: WorkChain = http
                .fetch(Method::POST, &format!("/v1/work-chains/{id}/cancel"))
                .await?;
            if conn.json {
                print_json(&c);
            } else {
                println!("{id} {}", c.status);
            }
            Ok(())
        }
        ChainCommand::Add { id, title, prompt } => {
            let item: ChainItem = http
                .call(
                    Method::POST,
                    &format!("/v1/work-chains/{id}/items"),
                    &NewChainItem {
                        title,
                        prompt,
                        card_id: None,
                    },
                )
                .await?;
            if conn.json {
                print_json(&item);
            } else {
                print!("{}", table::render(&ITEM_HEADER, &[item_row(&item)]));
            }
            Ok(())
        }
    }
}
