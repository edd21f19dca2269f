//! `courier issues scan|list|show|start|chain`.

use clap::Subcommand;
use courier_api::views::{
    CardToChain, ChainItem, IssueCard, IssueSession, IssueSessionDetail, IssueSessionList,
    NewIssueSession, StartCard, StartedCard,
};
use reqwest::Method;

use super::workflows::ended;
use super::{Conn, Http, Result, WAIT_POLL, or_dash, print_json, project_id, short_time};
use crate::table;

#[derive(Debug, Subcommand)]
pub enum IssuesCommand {
    /// Starts an issue session: an agent looks through the project's repository and
    /// reports what it finds as cards (severity, title, a suggested prompt).
    Scan {
        /// The project (default: your first).
        #[arg(long)]
        project: Option<String>,
        /// What to look at (default: everything).
        #[arg(long, value_name = "TEXT")]
        focus: Option<String>,
        /// The scanning agent's CLI (default: the project's).
        #[arg(long, value_name = "TOOL")]
        tool: Option<String>,
        /// Its model.
        #[arg(long, value_name = "MODEL")]
        model: Option<String>,
        /// Wait until the scan ends, then print its cards (exit 1 when it fails).
        #[arg(long)]
        wait: bool,
    },
    /// Lists the project's issue sessions.
    List {
        /// The project (default: your first).
        #[arg(long)]
        project: Option<String>,
    },
    /// Shows a session and its cards: position, severity, title, suggested prompt.
    Show {
        /// Issue session id.
        session: String,
    },
    /// Starts a sandbox on a card's suggested prompt and prints it.
    Start {
        /// Issue card id (`courier issues show`).
        card: String,
        /// The CLI (default: the project's).
        #[arg(long, value_name = "TOOL")]
        tool: Option<String>,
        /// Its model.
        #[arg(long, value_name = "MODEL")]
        model: Option<String>,
    },
    /// Adds a card to a work chain that has not ended, as its next issue.
    Chain {
        /// Issue card id.
        card: String,
        /// Work chain id.
        chain: String,
    },
}

const SESSION_HEADER: [&str; 5] = ["ID", "STATUS", "SANDBOX", "CREATED", "FOCUS"];

fn session_row(s: &IssueSession) -> Vec<String> {
    vec![
        s.id.to_string(),
        s.status.to_string(),
        or_dash(s.sandbox_id),
        short_time(&s.created_at),
        table::clip(s.focus.as_deref().unwrap_or("-"), 48),
    ]
}

const CARD_HEADER: [&str; 6] = ["POS", "SEVERITY", "ID", "TITLE", "WORK", "SUGGESTED PROMPT"];

fn card_row(c: &IssueCard) -> Vec<String> {
    let work = match (c.sandbox_id, c.chain_id) {
        (Some(s), _) => format!("sandbox {s}"),
        (None, Some(ch)) => format!("chain {ch}"),
        (None, None) => "-".to_owned(),
    };
    vec![
        c.position.to_string(),
        c.severity.to_string(),
        c.id.to_string(),
        table::clip(&c.title, 40),
        work,
        table::clip(&c.suggested_prompt, 60),
    ]
}

fn print_detail(d: &IssueSessionDetail) {
    let s = &d.session;
    let rows = [
        ("id", s.id.to_string()),
        ("status", s.status.to_string()),
        ("focus", or_dash(s.focus.as_deref())),
        ("sandbox", or_dash(s.sandbox_id)),
        ("error", or_dash(s.error.as_deref())),
        ("created", short_time(&s.created_at)),
    ];
    for (k, v) in rows {
        println!("{k:<8} {v}");
    }
    println!();
    let rows: Vec<_> = d.cards.iter().map(card_row).collect();
    print!("{}", table::render(&CARD_HEADER, &rows));
}

/// `courier issues …`.
pub async fn issues(conn: &Conn, command: IssuesCommand) -> Result<()> {
    let http = Http::new(conn)?;
    match command {
        IssuesCommand::Scan {
            project,
            focus,
            tool,
            model,
            wait,
        } => {
            let project = project_id(&http, project).await?;
            let session: IssueSession = http
                .call(
                    Method::POST,
                    &format!("/v1/projects/{project}/issue-sessions"),
                    &NewIssueSession { focus, tool, model },
                )
                .await?;
            let id = session.id.to_string();
            if !wait {
                if conn.json {
                    print_json(&session);
                } else {
                    print!(
                        "{}",
                        table::render(&SESSION_HEADER, &[session_row(&session)])
                    );
                    println!("see its cards with: courier issues show {id}");
                }
                return Ok(());
            }
            if !conn.json {
                println!("issue session {id} started");
            }
            let path = format!("/v1/issue-sessions/{id}");
            let detail = loop {
                let d: IssueSessionDetail = http.fetch(Method::GET, &path).await?;
                if d.session.status.is_final() {
                    break d;
                }
                tokio::time::sleep(WAIT_POLL).await;
            };
            if conn.json {
                print_json(&detail);
            } else {
                print_detail(&detail);
            }
            ended(
                "issue session",
                detail.session.status,
                detail.session.error.as_deref(),
            )
        }
        IssuesCommand::List { project } => {
            let project = project_id(&http, project).await?;
            let list: IssueSessionList = http
                .fetch(
                    Method::GET,
                    &format!("/v1/projects/{project}/issue-sessions"),
                )
                .await?;
            if conn.json {
                print_json(&list);
            } else {
                let rows: Vec<_> = list.items.iter().map(session_row).collect();
                print!("{}", table::render(&SESSION_HEADER, &rows));
            }
            Ok(())
        }
        IssuesCommand::Show { session } => {
            let d: IssueSessionDetail = http
                .fetch(Method::GET, &format!("/v1/issue-sessions/{session}"))
                .await?;
            if conn.json {
                print_json(&d);
            } else {
                print_detail(&d);
            }
            Ok(())
        }
        IssuesCommand::Start { card, tool, model } => {
            let started: StartedCard = http
                .call(
                    Method::POST,
                    &format!("/v1/issue-cards/{card}/start"),
                    &StartCard { tool, model },
                )
                .await?;
            if conn.json {
                print_json(&started);
            } else {
                let s = &started.sandbox;
                println!("sandbox {} is {} ({})", s.id, s.status, s.cli_tool);
                println!(
                    "follow it with: courier sandbox logs -f {}",
                    started.sandbox.id
                );
            }
            Ok(())
        }
        IssuesCommand::Chain { card, chain } => {
            let item: ChainItem = http
                .call(
                    Method::POST,
                    &format!("/v1/issue-cards/{card}/chain"),
                    &CardToChain { chain_id: chain },
                )
                .await?;
            if conn.json {
                print_json(&item);
            } else {
                println!(
                    "card {card} is issue {} of work chain {} ({})",
                    item.position, item.chain_id, item.status
                );
            }
            Ok(())
        }
    }
}
