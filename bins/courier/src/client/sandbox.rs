//! `courier sandbox create|list|get|logs|send|kill|delete|restore`.

use clap::{Args, Subcommand};
use courier_api::views::{Message, MessageList, NewMessage, NewSandbox, Sandbox, SandboxPage};
use courier_store::{MessageRole, MessageStatus};
use reqwest::Method;

use super::events::{Answered, Printer, first_answer_done, follow};
use super::{Conn, Http, Result, or_dash, print_json, short_time, wire_time, with_spinner};
use crate::table;

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Creates a sandbox and streams the agent's output (`--detach` to return at once).
    Create(CreateArgs),
    /// Lists sandboxes, newest first.
    List(ListArgs),
    /// Shows one sandbox.
    Get {
        /// Sandbox id.
        id: String,
    },
    /// Prints the sandbox's messages, the agent's tool calls and results, errors and how
    /// each run ended, one line each; `-f` then follows the live output until the agent's
    /// answer is complete (or the sandbox ends).
    Logs {
        /// Sandbox id.
        id: String,
        /// Follow the live output until the answer is complete.
        #[arg(short, long)]
        follow: bool,
    },
    /// Sends a follow-up message to the agent.
    Send {
        /// Sandbox id.
        id: String,
        /// The message.
        text: String,
    },
    /// Kills a sandbox (its work is pushed and a PR opened when configured).
    Kill {
        /// Sandbox id.
        id: String,
    },
    /// Soft-deletes a sandbox (`--purge`: removes it for good).
    Delete {
        /// Sandbox id.
        id: String,
        /// Remove for good instead of hiding.
        #[arg(long)]
        purge: bool,
    },
    /// Restores a soft-deleted sandbox.
    Restore {
        /// Sandbox id.
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Agent CLI: claude, opencode, codex, pi or shell.
    #[arg(long)]
    tool: Option<String>,
    /// The task.
    #[arg(long)]
    prompt: String,
    /// Git repository to clone.
    #[arg(long)]
    repo: Option<String>,
    /// Model (default: the tool's).
    #[arg(long)]
    model: Option<String>,
    /// Memory in MB (256–8192).
    #[arg(long)]
    memory: Option<i64>,
    /// CPUs (1–8).
    #[arg(long)]
    cpu: Option<i64>,
    /// Lifetime: `15m`, `900s`, `1h` or minutes (1 minute to 4 hours).
    #[arg(long, value_parser = parse_timeout)]
    timeout: Option<i64>,
    /// Thinking effort.
    #[arg(long)]
    effort: Option<String>,
    /// Project id (default: your first project).
    #[arg(long)]
    project: Option<String>,
    /// Branch to work on.
    #[arg(long)]
    branch: Option<String>,
    /// Sandbox template to start from instead of the tool's (`courier templates list`).
    #[arg(long)]
    template: Option<String>,
    /// Return once the sandbox runs instead of streaming its output.
    #[arg(long, short)]
    detach: bool,
}

/// Parses `15m`, `90s`, `1h`, `900000ms` or bare minutes into milliseconds.
pub(super) fn parse_timeout(text: &str) -> std::result::Result<i64, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "m"),
    };
    let n: i64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 15m, 900s or 1h"))?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        other => return Err(format!("unknown unit `{other}`: use ms, s, m or h")),
    };
    Ok(n * ms)
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this status: creating, running, paused, killed, error.
    #[arg(long)]
    status: Option<String>,
    /// Only this tool.
    #[arg(long)]
    tool: Option<String>,
    /// Soft-deleted ones: exclude (default), only, include.
    #[arg(long)]
    deleted: Option<String>,
    /// Only this project.
    #[arg(long)]
    project: Option<String>,
    /// Page size.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Continue after a previous page.
    #[arg(long)]
    cursor: Option<String>,
}

fn sandbox_rows(items: &[Sandbox]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|x| {
            vec![
                x.id.to_string(),
                x.status.to_string(),
                x.cli_tool.clone(),
                short_time(&x.created_at),
                table::clip(&x.prompt, 48),
            ]
        })
        .collect()
}

/// `courier sandbox get`'s lines.
fn sandbox_details(x: &Sandbox) -> [(&'static str, String); 15] {
    [
        ("id", x.id.to_string()),
        ("status", x.status.to_string()),
        ("tool", x.cli_tool.clone()),
        ("model", or_dash(x.model.as_ref())),
        ("project", x.project_id.to_string()),
        ("created", short_time(&x.created_at)),
        ("memory", format!("{} MB", x.config.memory_mb)),
        ("cpu", x.config.cpu_count.to_string()),
        ("timeout", format!("{} s", x.config.timeout_ms / 1000)),
        ("repo", or_dash(x.git.repo_url.as_ref())),
        ("branch", or_dash(x.git.branch.as_ref())),
        ("pr", or_dash(x.git.pr_url.as_ref())),
        ("error", or_dash(x.error_message.as_ref())),
        ("deleted", or_dash(x.deleted_at.as_ref().map(wire_time))),
        ("prompt", x.prompt.clone()),
    ]
}

/// `courier sandbox create`.
async fn create(conn: &Conn, http: &Http, a: CreateArgs) -> Result<()> {
    let body = NewSandbox {
        project_id: a.project,
        tool: a.tool,
        model: a.model,
        prompt: a.prompt,
        memory_mb: a.memory,
        cpu_count: a.cpu,
        timeout_ms: a.timeout,
        thinking_effort: a.effort,
        repo_url: a.repo,
        branch: a.branch,
        template_id: a.template,
        ..NewSandbox::default()
    };
    let sandbox: Sandbox = with_spinner(
        "Setting up the sandbox",
        http.call(Method::POST, "/v1/sandboxes", &body),
    )
    .await?;
    let id = sandbox.id.to_string();
    if conn.json || a.detach {
        if conn.json {
            print_json(&sandbox);
        } else {
            println!("{id}");
        }
        return Ok(());
    }
    eprintln!("sandbox {id} is {}", sandbox.status);
    let mut printer = Printer::new(false);
    // Until the agent's first answer finishes.
    follow(http, &id, &mut printer, 0, first_answer_done).await?;
    eprintln!(
        "\nsandbox {id} is still running: `courier sandbox send {id} \"…\"`, `courier sandbox logs -f {id}`, `courier sandbox kill {id}`"
    );
    Ok(())
}

/// `courier sandbox list`.
async fn list(conn: &Conn, http: &Http, a: ListArgs) -> Result<()> {
    let mut query = vec![("limit", a.limit.to_string())];
    for (k, v) in [
        ("status", a.status),
        ("tool", a.tool),
        ("deleted", a.deleted),
        ("project_id", a.project),
        ("cursor", a.cursor),
    ] {
        if let Some(v) = v {
            query.push((k, v));
        }
    }
    let req = http.request(Method::GET, "/v1/sandboxes").query(&query);
    let page: SandboxPage = http.read(req).await?;
    if conn.json {
        print_json(&page);
        return Ok(());
    }
    print!(
        "{}",
        table::render(
            &["ID", "STATUS", "TOOL", "CREATED", "PROMPT"],
            &sandbox_rows(&page.items)
        )
    );
    if let Some(c) = &page.next_cursor {
        eprintln!("more: --cursor {c}");
    }
    Ok(())
}

/// `courier sandbox logs`: every stored message, a page at a time, the agent's with its
/// tool calls; with `follow_live`, then the live output until every prompt has its answer
/// complete, or the sandbox ends.
async fn logs(conn: &Conn, http: &Http, id: &str, follow_live: bool) -> Result<()> {
    let sandbox: Sandbox = http
        .fetch(Method::GET, &format!("/v1/sandboxes/{id}"))
        .await?;
    let mut printer = Printer::new(conn.json);
    // The server's parsed events give the tool calls; `--json` prints the messages as
    // served.
    let events = if conn.json { "" } else { "&events=true" };
    // Every message up to `after` is printed whole; a streaming one is left to `follow`.
    let mut after = 0;
    let mut prompt = 0;
    let mut pending = false;
    'pages: loop {
        let page: MessageList = http
            .fetch(
                Method::GET,
                &format!("/v1/sandboxes/{id}/messages?after_seq={after}&limit=500{events}"),
            )
            .await?;
        for m in &page.items {
            if follow_live && m.status == MessageStatus::Streaming {
                pending = true;
                break 'pages;
            }
            printer.stored(m);
            after = m.seq;
            if m.role == MessageRole::User {
                prompt = m.seq;
            }
            // A prompt not answered yet: its answer is still to come.
            pending = m.role == MessageRole::User;
        }
        if page.items.len() < 500 {
            break;
        }
    }
    // A final sandbox still gets its `end` (the JSON lines end with it).
    if follow_live && (pending || sandbox.status.is_final()) {
        let answered = Answered::new(prompt);
        follow(http, id, &mut printer, after, |name, data| {
            answered.after(name, data)
        })
        .await?;
    }
    Ok(())
}

/// `courier sandbox …`.
pub async fn sandbox(conn: &Conn, command: SandboxCommand) -> Result<()> {
    let http = Http::new(conn)?;
    match command {
        SandboxCommand::Create(a) => create(conn, &http, a).await,
        SandboxCommand::List(a) => list(conn, &http, a).await,
        SandboxCommand::Get { id } => {
            let x: Sandbox = http
                .fetch(Method::GET, &format!("/v1/sandboxes/{id}"))
                .await?;
            if conn.json {
                print_json(&x);
                return Ok(());
            }
            for (k, v) in sandbox_details(&x) {
                println!("{k:<9} {v}");
            }
            Ok(())
        }
        SandboxCommand::Logs { id, follow } => logs(conn, &http, &id, follow).await,
        SandboxCommand::Send { id, text } => {
            let m: Message = http
                .call(
                    Method::POST,
                    &format!("/v1/sandboxes/{id}/messages"),
                    &NewMessage { text },
                )
                .await?;
            if conn.json {
                print_json(&m);
            } else {
                println!("sent (message {})", m.seq);
            }
            Ok(())
        }
        SandboxCommand::Kill { id } => {
            let x: Sandbox = with_spinner(
                "Killing (saving work)",
                http.fetch(Method::POST, &format!("/v1/sandboxes/{id}/kill")),
            )
            .await?;
            if conn.json {
                print_json(&x);
            } else {
                println!("{id} {}", x.status);
            }
            Ok(())
        }
        SandboxCommand::Delete { id, purge } => {
            if purge {
                http.done(Method::POST, &format!("/v1/sandboxes/{id}/purge"))
                    .await?;
                println!("{id} purged");
            } else {
                http.done(Method::DELETE, &format!("/v1/sandboxes/{id}"))
                    .await?;
                println!("{id} deleted (restore with `courier sandbox restore {id}`)");
            }
            Ok(())
        }
        SandboxCommand::Restore { id } => {
            let x: Sandbox = http
                .fetch(Method::POST, &format!("/v1/sandboxes/{id}/restore"))
                .await?;
            if conn.json {
                print_json(&x);
            } else {
                println!("{id} restored ({})", x.status);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_with_units() {
        assert_eq!(parse_timeout("15"), Ok(900_000));
        assert_eq!(parse_timeout("15m"), Ok(900_000));
        assert_eq!(parse_timeout("90s"), Ok(90_000));
        assert_eq!(parse_timeout("1h"), Ok(3_600_000));
        assert_eq!(parse_timeout("500ms"), Ok(500));
        assert!(parse_timeout("soon").is_err());
        assert!(parse_timeout("5d").is_err());
    }
}
