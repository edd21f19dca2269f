//! The command-line client: `courier sandbox|keys|project|persona|workflow|chain|issues|
//! templates|usage …` over the HTTP API.
//!
//! Answers are read as courier-api's typed [views](courier_api::views), the same types
//! the server answers with; `--json` prints them as the server sent them.

mod chains;
mod events;
mod issues;
mod keys;
mod personas;
mod project;
mod sandbox;
mod templates;
mod transcript;
mod workflows;

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use clap::Args;
use courier_api::views::ErrorBody;
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use chains::{ChainCommand, chain};
pub use issues::{IssuesCommand, issues};
pub use keys::{KeysCommand, keys};
pub use personas::{PersonaCommand, persona};
pub use project::{ProjectCommand, project};
pub use sandbox::{SandboxCommand, sandbox};
pub use templates::{TemplatesCommand, templates, usage};
pub use workflows::{WorkflowCommand, workflow};

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
        let error = res.json::<ErrorBody>().await.ok().map(|body| body.error);
        let mut message = error
            .as_ref()
            .map_or("request failed", |e| e.message.as_str())
            .to_owned();
        if let Some(field) = error.as_ref().and_then(|e| e.field.as_deref())
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

    /// Sends `req` and reads the answer as view `T`.
    async fn read<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T> {
        let res = self.send(req).await?;
        let text = res
            .text()
            .await
            .map_err(|e| fail(1, format!("reading the answer: {e}")))?;
        serde_json::from_str(&text).map_err(|e| fail(1, format!("unexpected answer: {e}")))
    }

    /// Calls a route without a body, answering view `T`.
    async fn fetch<T: DeserializeOwned>(&self, method: Method, path: &str) -> Result<T> {
        self.read(self.request(method, path)).await
    }

    /// Calls a route with JSON `body`, answering view `T`.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T> {
        self.read(self.request(method, path).json(body)).await
    }

    /// Calls a route that answers no body (204).
    async fn done(&self, method: Method, path: &str) -> Result<()> {
        self.send(self.request(method, path)).await.map(drop)
    }
}

/// The id of `project`, or of the caller's first project.
async fn project_id(http: &Http, project: Option<String>) -> Result<String> {
    match project {
        Some(p) => Ok(p),
        None => {
            let list: courier_api::views::ProjectList =
                http.fetch(Method::GET, "/v1/projects").await?;
            list.items
                .first()
                .map(|p| p.id.to_string())
                .ok_or_else(|| fail(4, "you have no project"))
        }
    }
}

/// Splits `NAME=VALUE` (bad usage, exit 2, when there is no `=` or no name).
fn split_pair<'a>(flag: &str, pair: &'a str) -> Result<(&'a str, &'a str)> {
    pair.split_once('=')
        .filter(|(name, _)| !name.is_empty())
        .ok_or_else(|| fail(2, format!("{flag} takes NAME=VALUE, got {pair:?}")))
}

/// Reads a file named by a flag.
fn read_file(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| fail(1, format!("reading {}: {e}", path.display())))
}

/// How often `--wait` asks the server again.
const WAIT_POLL: Duration = Duration::from_millis(500);

/// Prints a view as the server sent it (pretty JSON, keys sorted).
fn print_json(view: &impl Serialize) {
    let text = serde_json::to_value(view)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_default();
    println!("{text}");
}

/// A value for a table cell, `-` when absent.
fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// A time as the API writes it (RFC 3339, UTC).
fn wire_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A time for people: local, to the minute.
fn short_time(t: &DateTime<Utc>) -> String {
    t.with_timezone(&chrono::Local)
        .format("%Y-%m-%d %H:%M")
        .to_string()
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
                // A spinner frame that does not show is harmless; the work goes on.
                let _ = std::io::stderr().flush();
                i += 1;
            }
        }
    };
    eprint!("\r\x1b[2K");
    out
}
