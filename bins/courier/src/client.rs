//! The command-line client: `courier sandbox|keys|usage …` over the HTTP API.

use std::collections::HashMap;
use std::io::{IsTerminal, Read, Write};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use crate::table;

/// A failed command: what to print and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure {
            code: 1,
            message: format!("{e:#}"),
        }
    }
}

fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

type Result<T, E = Failure> = std::result::Result<T, E>;

/// Where the server is and who is asking.
#[derive(Debug, Args)]
pub struct Conn {
    /// Server URL.
    #[arg(
        long,
        global = true,
        env = "COURIER_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// API token (from `courier admin user create`).
    #[arg(long, global = true, env = "COURIER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

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
    /// Prints the sandbox's messages; `-f` follows live output until it ends.
    Logs {
        /// Sandbox id.
        id: String,
        /// Follow live output.
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
    /// Return once the sandbox runs instead of streaming its output.
    #[arg(long, short)]
    detach: bool,
}

/// Parses `15m`, `90s`, `1h`, `900000ms` or bare minutes into milliseconds.
fn parse_timeout(text: &str) -> std::result::Result<i64, String> {
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

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Sets a provider key (the value is read from stdin when omitted).
    Set {
        /// anthropic, openrouter, openai, github or e2b.
        provider: String,
        /// The key (prefer stdin: it stays out of shell history).
        value: Option<String>,
        /// Set it on this project instead of on your user.
        #[arg(long)]
        project: Option<String>,
    },
    /// Lists keys, masked.
    List {
        /// This project's keys instead of your user's.
        #[arg(long)]
        project: Option<String>,
    },
    /// Deletes a provider key.
    Delete {
        /// The provider.
        provider: String,
        /// On this project instead of on your user.
        #[arg(long)]
        project: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// Builds a tool's sandbox template at the server's provider (from `base`, with the
    /// CLI installed); needed once on the embedded backend.
    Build {
        /// claude, opencode, codex or pi.
        tool: String,
    },
    /// Lists template builds, newest first.
    List {
        /// Only this tool's builds.
        #[arg(long)]
        tool: Option<String>,
    },
}

struct Http {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Http {
    fn new(conn: &Conn) -> Result<Http> {
        let token = conn.token.clone().filter(|t| !t.is_empty()).ok_or_else(|| {
            fail(
                3,
                "no API token: set COURIER_TOKEN or pass --token (create one with `courier admin user create`)",
            )
        })?;
        Ok(Http {
            client: reqwest::Client::new(),
            base: conn.url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let res = req.send().await.map_err(|e| {
            fail(
                8,
                format!("cannot reach the server at {} ({e}); is `courier serve` running? (COURIER_URL)", self.base),
            )
        })?;
        if res.status().is_success() {
            return Ok(res);
        }
        let status = res.status().as_u16();
        let retry = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body: Value = res.json().await.unwrap_or(Value::Null);
        let mut message = body["error"]["message"]
            .as_str()
            .unwrap_or("request failed")
            .to_owned();
        if let Some(field) = body["error"]["field"].as_str()
            && !message.contains(field)
        {
            message = format!("{field}: {message}");
        }
        if let Some(retry) = retry {
            message.push_str(&format!(" (retry after {retry} s)"));
        }
        let code = match status {
            401 | 403 => 3,
            404 => 4,
            400 | 413 | 422 => 5,
            409 => 6,
            429 => 7,
            _ => 1,
        };
        Err(fail(code, format!("{message} [HTTP {status}]")))
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let mut req = self.request(method, path);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = self.send(req).await?;
        let text = res
            .text()
            .await
            .map_err(|e| fail(1, format!("reading the answer: {e}")))?;
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn short_time(v: &Value) -> String {
    v.as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_else(|| s(v))
}

/// A spinner on stderr while `work` runs (only when stderr is a terminal).
async fn with_spinner<T>(label: &str, work: impl std::future::Future<Output = T>) -> T {
    if !std::io::stderr().is_terminal() {
        return work.await;
    }
    let frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tokio::pin!(work);
    let mut i = 0;
    let out = loop {
        tokio::select! {
            out = &mut work => break out,
            _ = tick.tick() => {
                eprint!("\r{} {label} ({}s)", frames[i % frames.len()], start.elapsed().as_secs());
                let _ = std::io::stderr().flush();
                i += 1;
            }
        }
    };
    eprint!("\r\x1b[2K");
    out
}

/// Prints a sandbox's output from its events, never printing a byte twice.
#[derive(Default)]
struct Printer {
    printed: HashMap<i64, usize>,
    json: bool,
    mid_line: bool,
}

impl Printer {
    fn write(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        print!("{text}");
        self.mid_line = !text.ends_with('\n');
        let _ = std::io::stdout().flush();
    }

    fn end_line(&mut self) {
        if self.mid_line {
            println!();
            self.mid_line = false;
        }
    }

    fn show(&mut self, seq: i64, role: &str, content: &str, finished: bool) {
        let done = *self.printed.get(&seq).unwrap_or(&0);
        if role == "user" {
            if done == 0 {
                self.end_line();
                println!("> {content}");
                self.printed.insert(seq, content.len().max(1));
            }
            return;
        }
        if content.len() > done {
            self.write(content.get(done..).unwrap_or_default());
            self.printed.insert(seq, content.len());
        }
        if finished {
            self.end_line();
        }
    }

    /// Handles one event.
    fn event(&mut self, name: &str, id: Option<&str>, data: &Value) {
        if self.json {
            println!("{}", json!({ "event": name, "id": id, "data": data }));
            return;
        }
        let seq = data["seq"].as_i64().unwrap_or(0);
        match name {
            "message" => {
                let m = &data["message"];
                self.show(
                    seq,
                    m["role"].as_str().unwrap_or(""),
                    m["content"].as_str().unwrap_or(""),
                    m["status"] != "streaming",
                );
            }
            "text" => {
                let end = data["content_end"].as_u64().unwrap_or(0) as usize;
                let text = data["text"].as_str().unwrap_or("");
                let done = *self.printed.get(&seq).unwrap_or(&0);
                let start = end.saturating_sub(text.len());
                if end > done {
                    self.write(text.get(done.saturating_sub(start)..).unwrap_or(text));
                    self.printed.insert(seq, end);
                }
            }
            "finished" | "end" => self.end_line(),
            _ => {}
        }
    }
}

/// Follows `/events`, resuming with `Last-Event-ID` after drops, until `end` or `stop`.
async fn follow(
    http: &Http,
    id: &str,
    printer: &mut Printer,
    stop: impl Fn(&str, &Value) -> bool,
) -> Result<()> {
    let mut last: Option<String> = None;
    let mut failures = 0;
    loop {
        let mut req = http.request(Method::GET, &format!("/v1/sandboxes/{id}/events"));
        if let Some(last) = &last {
            req = req.header("last-event-id", last);
        }
        let res = match http.send(req).await {
            Ok(res) => res,
            Err(e) if e.code == 8 && failures < 30 => {
                failures += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        failures = 0;
        let mut stream = res.bytes_stream();
        let mut buf = String::new();
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { break };
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let (mut name, mut data, mut event_id) = (String::new(), String::new(), None);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        event_id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if name.is_empty() {
                    continue;
                }
                if event_id.is_some() {
                    last = event_id.clone();
                }
                let data: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                printer.event(&name, event_id.as_deref(), &data);
                match name.as_str() {
                    "end" => return Ok(()),
                    "error" => return Err(fail(1, s(&data["message"]))),
                    _ => {}
                }
                if stop(&name, &data) {
                    return Ok(());
                }
            }
        }
        // Dropped (or the server restarts: `shutdown`): resume where we were.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn sandbox_rows(items: &[Value]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|x| {
            vec![
                s(&x["id"]),
                s(&x["status"]),
                s(&x["cli_tool"]),
                short_time(&x["created_at"]),
                table::clip(x["prompt"].as_str().unwrap_or(""), 48),
            ]
        })
        .collect()
}

/// `courier sandbox …`.
pub async fn sandbox(conn: &Conn, command: SandboxCommand) -> Result<()> {
    let http = Http::new(conn)?;
    match command {
        SandboxCommand::Create(a) => {
            let mut body = json!({ "prompt": a.prompt });
            let fields = [
                ("tool", a.tool.map(Value::from)),
                ("repo_url", a.repo.map(Value::from)),
                ("model", a.model.map(Value::from)),
                ("memory_mb", a.memory.map(Value::from)),
                ("cpu_count", a.cpu.map(Value::from)),
                ("timeout_ms", a.timeout.map(Value::from)),
                ("thinking_effort", a.effort.map(Value::from)),
                ("project_id", a.project.map(Value::from)),
                ("branch", a.branch.map(Value::from)),
            ];
            for (k, v) in fields {
                if let Some(v) = v {
                    body[k] = v;
                }
            }
            let sandbox = with_spinner(
                "Setting up the sandbox",
                http.call(Method::POST, "/v1/sandboxes", Some(body)),
            )
            .await?;
            let id = s(&sandbox["id"]);
            if conn.json || a.detach {
                if conn.json {
                    print_json(&sandbox);
                } else {
                    println!("{id}");
                }
                return Ok(());
            }
            eprintln!("sandbox {id} is {}", s(&sandbox["status"]));
            let mut printer = Printer::default();
            // Until the agent's first answer finishes.
            follow(&http, &id, &mut printer, |name, data| {
                (name == "finished" && data["seq"].as_i64() >= Some(2))
                    || (name == "message"
                        && data["message"]["role"] == "assistant"
                        && data["message"]["status"] != "streaming")
            })
            .await?;
            eprintln!(
                "\nsandbox {id} is still running: `courier sandbox send {id} \"…\"`, `courier sandbox logs -f {id}`, `courier sandbox kill {id}`"
            );
            Ok(())
        }
        SandboxCommand::List(a) => {
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
            let page: Value = http
                .send(req)
                .await?
                .json()
                .await
                .map_err(|e| fail(1, e.to_string()))?;
            if conn.json {
                print_json(&page);
                return Ok(());
            }
            let items = page["items"].as_array().cloned().unwrap_or_default();
            print!(
                "{}",
                table::render(
                    &["ID", "STATUS", "TOOL", "CREATED", "PROMPT"],
                    &sandbox_rows(&items)
                )
            );
            if let Some(c) = page["next_cursor"].as_str() {
                eprintln!("more: --cursor {c}");
            }
            Ok(())
        }
        SandboxCommand::Get { id } => {
            let x = http
                .call(Method::GET, &format!("/v1/sandboxes/{id}"), None)
                .await?;
            if conn.json {
                print_json(&x);
                return Ok(());
            }
            let rows = [
                ("id", s(&x["id"])),
                ("status", s(&x["status"])),
                ("tool", s(&x["cli_tool"])),
                ("model", s(&x["model"])),
                ("project", s(&x["project_id"])),
                ("created", short_time(&x["created_at"])),
                ("memory", format!("{} MB", s(&x["config"]["memory_mb"]))),
                ("cpu", s(&x["config"]["cpu_count"])),
                (
                    "timeout",
                    format!(
                        "{} s",
                        x["config"]["timeout_ms"].as_i64().unwrap_or(0) / 1000
                    ),
                ),
                ("repo", s(&x["git"]["repo_url"])),
                ("branch", s(&x["git"]["branch"])),
                ("pr", s(&x["git"]["pr_url"])),
                ("error", s(&x["error_message"])),
                ("deleted", s(&x["deleted_at"])),
                ("prompt", s(&x["prompt"])),
            ];
            for (k, v) in rows {
                println!("{k:<9} {v}");
            }
            Ok(())
        }
        SandboxCommand::Logs { id, follow: true } => {
            let mut printer = Printer {
                json: conn.json,
                ..Printer::default()
            };
            follow(&http, &id, &mut printer, |_, _| false).await
        }
        SandboxCommand::Logs { id, follow: false } => {
            let mut after = 0;
            loop {
                let page = http
                    .call(
                        Method::GET,
                        &format!("/v1/sandboxes/{id}/messages?after_seq={after}&limit=500"),
                        None,
                    )
                    .await?;
                let items = page["items"].as_array().cloned().unwrap_or_default();
                for m in &items {
                    after = m["seq"].as_i64().unwrap_or(after);
                    if conn.json {
                        println!("{m}");
                    } else if m["role"] == "user" {
                        println!("> {}", s(&m["content"]));
                    } else {
                        println!("{}", s(&m["content"]).trim_end());
                    }
                }
                if items.len() < 500 {
                    return Ok(());
                }
            }
        }
        SandboxCommand::Send { id, text } => {
            let m = http
                .call(
                    Method::POST,
                    &format!("/v1/sandboxes/{id}/messages"),
                    Some(json!({ "text": text })),
                )
                .await?;
            if conn.json {
                print_json(&m);
            } else {
                println!("sent (message {})", s(&m["seq"]));
            }
            Ok(())
        }
        SandboxCommand::Kill { id } => {
            let x = with_spinner(
                "Killing (saving work)",
                http.call(Method::POST, &format!("/v1/sandboxes/{id}/kill"), None),
            )
            .await?;
            if conn.json {
                print_json(&x);
            } else {
                println!("{id} {}", s(&x["status"]));
            }
            Ok(())
        }
        SandboxCommand::Delete { id, purge } => {
            if purge {
                http.call(Method::POST, &format!("/v1/sandboxes/{id}/purge"), None)
                    .await?;
                println!("{id} purged");
            } else {
                http.call(Method::DELETE, &format!("/v1/sandboxes/{id}"), None)
                    .await?;
                println!("{id} deleted (restore with `courier sandbox restore {id}`)");
            }
            Ok(())
        }
        SandboxCommand::Restore { id } => {
            let x = http
                .call(Method::POST, &format!("/v1/sandboxes/{id}/restore"), None)
                .await?;
            if conn.json {
                print_json(&x);
            } else {
                println!("{id} restored ({})", s(&x["status"]));
            }
            Ok(())
        }
    }
}

fn keys_base(project: Option<&str>) -> String {
    match project {
        Some(p) => format!("/v1/projects/{p}/keys"),
        None => "/v1/keys".to_owned(),
    }
}

/// `courier keys …`.
pub async fn keys(conn: &Conn, command: KeysCommand) -> Result<()> {
    let http = Http::new(conn)?;
    match command {
        KeysCommand::Set {
            provider,
            value,
            project,
        } => {
            let value = match value {
                Some(v) => v,
                None => {
                    if std::io::stdin().is_terminal() {
                        eprint!("{provider} key: ");
                    }
                    let mut v = String::new();
                    std::io::stdin()
                        .read_to_string(&mut v)
                        .map_err(|e| fail(1, format!("reading stdin: {e}")))?;
                    v.trim().to_owned()
                }
            };
            let key = http
                .call(
                    Method::PUT,
                    &format!("{}/{provider}", keys_base(project.as_deref())),
                    Some(json!({ "value": value })),
                )
                .await?;
            if conn.json {
                print_json(&key);
            } else {
                println!("{} key set: {}", s(&key["provider"]), s(&key["masked"]));
            }
            Ok(())
        }
        KeysCommand::List { project } => {
            let list = http
                .call(Method::GET, &keys_base(project.as_deref()), None)
                .await?;
            if conn.json {
                print_json(&list);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|k| {
                    vec![
                        s(&k["provider"]),
                        s(&k["owner"]),
                        s(&k["masked"]),
                        short_time(&k["updated_at"]),
                    ]
                })
                .collect();
            print!(
                "{}",
                table::render(&["PROVIDER", "OWNER", "KEY", "UPDATED"], &rows)
            );
            Ok(())
        }
        KeysCommand::Delete { provider, project } => {
            http.call(
                Method::DELETE,
                &format!("{}/{provider}", keys_base(project.as_deref())),
                None,
            )
            .await?;
            println!("{provider} key deleted");
            Ok(())
        }
    }
}

fn template_build_row(b: &Value) -> Vec<String> {
    vec![
        s(&b["id"]),
        s(&b["tool_id"]),
        s(&b["template_name"]),
        s(&b["status"]),
        short_time(&b["created_at"]),
        b["error"].as_str().unwrap_or("").to_owned(),
    ]
}

const TEMPLATE_BUILD_HEADERS: [&str; 6] = ["ID", "TOOL", "TEMPLATE", "STATUS", "CREATED", "ERROR"];

/// `courier templates build|list`.
pub async fn templates(conn: &Conn, command: TemplatesCommand) -> Result<()> {
    let http = Http::new(conn)?;
    match command {
        TemplatesCommand::Build { tool } => {
            let build = http
                .call(
                    Method::POST,
                    "/v1/template-builds",
                    Some(json!({ "tool": tool })),
                )
                .await?;
            if conn.json {
                print_json(&build);
            } else {
                print!(
                    "{}",
                    table::render(&TEMPLATE_BUILD_HEADERS, &[template_build_row(&build)])
                );
                println!("follow it with: courier templates list --tool {tool}");
            }
            Ok(())
        }
        TemplatesCommand::List { tool } => {
            let path = match &tool {
                Some(tool) if tool.chars().all(|c| c.is_ascii_alphanumeric()) => {
                    format!("/v1/template-builds?tool={tool}")
                }
                Some(tool) => {
                    return Err(fail(
                        5,
                        format!(
                            "invalid tool {tool:?}: a tool id such as claude, opencode, codex or pi"
                        ),
                    ));
                }
                None => "/v1/template-builds".to_owned(),
            };
            let list = http.call(Method::GET, &path, None).await?;
            if conn.json {
                print_json(&list);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(template_build_row)
                .collect();
            print!("{}", table::render(&TEMPLATE_BUILD_HEADERS, &rows));
            Ok(())
        }
    }
}

/// `courier usage`.
pub async fn usage(conn: &Conn) -> Result<()> {
    let http = Http::new(conn)?;
    let report = http.call(Method::GET, "/v1/usage", None).await?;
    if conn.json {
        print_json(&report);
        return Ok(());
    }
    let row = |name: String, active: String, u: &Value| {
        vec![
            name,
            active,
            format!("{:.0}", u["compute_seconds"].as_f64().unwrap_or(0.0)),
            format!("{:.0}", u["input_tokens"].as_f64().unwrap_or(0.0)),
            format!("{:.0}", u["output_tokens"].as_f64().unwrap_or(0.0)),
            format!("${:.4}", u["cost_usd"].as_f64().unwrap_or(0.0)),
        ]
    };
    let mut rows: Vec<Vec<String>> = report["projects"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| row(s(&p["name"]), s(&p["active_sandboxes"]), &p["usage"]))
        .collect();
    rows.push(row("TOTAL".into(), String::new(), &report["total"]));
    print!(
        "{}",
        table::render(
            &[
                "PROJECT",
                "ACTIVE",
                "COMPUTE S",
                "IN TOKENS",
                "OUT TOKENS",
                "COST"
            ],
            &rows
        )
    );
    Ok(())
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

    #[test]
    fn printer_never_prints_twice() {
        let mut p = Printer::default();
        p.show(2, "assistant", "hello", false);
        assert_eq!(p.printed[&2], 5);
        p.show(2, "assistant", "hello world", true);
        assert_eq!(p.printed[&2], 11);
        p.event(
            "text",
            Some("1"),
            &json!({ "seq": 2, "text": "world", "content_end": 11 }),
        );
        assert_eq!(p.printed[&2], 11);
    }
}
