//! Wire types of the control plane (E2B's OpenAPI names: camelCase, `...ID`, `...MB`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::server::{ENVD_VERSION, Metric};
use crate::state::SandboxRecord;

/// The constant E2B's API returns as the deprecated `clientID`.
pub const CLIENT_ID: &str = "6532622b";

/// `NewSandbox` (legacy) and `NewSandboxV2`: unknown fields (network, mcp, ...) are
/// ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NewSandbox {
    #[serde(rename = "templateID")]
    pub template_id: Option<String>,
    pub timeout: Option<u64>,
    pub metadata: Option<BTreeMap<String, String>>,
    pub env_vars: Option<BTreeMap<String, String>>,
    pub auto_pause: Option<bool>,
    #[serde(rename = "allow_internet_access")]
    pub allow_internet_access: Option<bool>,
    /// Courier extension: memory limit in MiB.
    #[serde(rename = "memoryMB")]
    pub memory_mb: Option<u64>,
    /// Courier extension: CPU count.
    pub cpu_count: Option<u32>,
}

/// Body of connect (v2 and legacy) and the deprecated resume.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ConnectBody {
    pub timeout: Option<u64>,
}

/// Body of `POST /sandboxes/{id}/timeout`.
#[derive(Debug, Deserialize)]
pub(crate) struct TimeoutBody {
    pub timeout: u64,
}

/// Body of `POST /sandboxes/{id}/refreshes`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RefreshBody {
    pub duration: Option<u64>,
}

/// `Sandbox`: the create/connect result.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Sandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: &'static str,
    pub envd_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    pub envd_access_token: String,
    pub traffic_access_token: Option<String>,
    pub domain: Option<String>,
}

impl Sandbox {
    pub fn new(record: &SandboxRecord, domain: Option<&str>) -> Self {
        Self {
            template_id: record.template_id.clone(),
            sandbox_id: record.sandbox_id.clone(),
            client_id: CLIENT_ID,
            envd_version: ENVD_VERSION,
            alias: record.alias.clone(),
            envd_access_token: record.envd_access_token.clone(),
            traffic_access_token: None,
            domain: domain.map(str::to_owned),
        }
    }
}

/// `lifecycle` of a SandboxDetail.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Lifecycle {
    pub auto_resume: bool,
    pub on_timeout: &'static str,
}

/// `SandboxDetail` (`GET /sandboxes/{id}`) and, with fewer fields, `ListedSandbox`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SandboxDetail {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: &'static str,
    pub started_at: DateTime<Utc>,
    pub end_at: DateTime<Utc>,
    pub envd_version: &'static str,
    pub cpu_count: u32,
    #[serde(rename = "memoryMB")]
    pub memory_mb: u64,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: u64,
    pub metadata: BTreeMap<String, String>,
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envd_access_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_internet_access: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
}

impl SandboxDetail {
    /// The full detail (get one).
    pub fn detail(record: &SandboxRecord, domain: Option<&str>) -> Self {
        Self {
            envd_access_token: Some(record.envd_access_token.clone()),
            allow_internet_access: Some(record.allow_internet_requested),
            domain: domain.map(str::to_owned),
            lifecycle: Some(Lifecycle {
                auto_resume: false,
                on_timeout: if record.auto_pause { "pause" } else { "kill" },
            }),
            ..Self::listed(record)
        }
    }

    /// A list item.
    pub fn listed(record: &SandboxRecord) -> Self {
        Self {
            template_id: record.template_id.clone(),
            alias: record.alias.clone(),
            sandbox_id: record.sandbox_id.clone(),
            client_id: CLIENT_ID,
            started_at: record.started_at,
            end_at: record.end_at,
            envd_version: ENVD_VERSION,
            cpu_count: record.cpu_count,
            memory_mb: record.memory_mb,
            disk_size_mb: record.disk_size_mb,
            metadata: record.metadata.clone(),
            state: record.state.as_str(),
            envd_access_token: None,
            allow_internet_access: None,
            domain: None,
            lifecycle: None,
        }
    }
}

/// `SandboxMetric`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SandboxMetric {
    pub timestamp: DateTime<Utc>,
    pub timestamp_unix: i64,
    pub cpu_count: u32,
    pub cpu_used_pct: f64,
    pub mem_used: u64,
    pub mem_total: u64,
    pub mem_cache: u64,
    pub disk_used: u64,
    pub disk_total: u64,
}

impl From<Metric> for SandboxMetric {
    fn from(m: Metric) -> Self {
        Self {
            timestamp: m.timestamp,
            timestamp_unix: m.timestamp.timestamp(),
            cpu_count: m.cpu_count,
            cpu_used_pct: m.cpu_used_pct,
            mem_used: m.mem_used,
            mem_total: m.mem_total,
            mem_cache: 0,
            disk_used: m.disk_used,
            disk_total: m.disk_total,
        }
    }
}

/// A template list item (`GET /templates`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TemplateItem {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "buildID")]
    pub build_id: String,
    pub aliases: Vec<String>,
    pub names: Vec<String>,
    pub cpu_count: u32,
    #[serde(rename = "memoryMB")]
    pub memory_mb: u64,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: u64,
    pub public: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub created_by: Option<String>,
    pub last_spawned_at: Option<DateTime<Utc>>,
    pub spawn_count: u64,
    pub build_count: u64,
    pub envd_version: &'static str,
    pub build_status: &'static str,
}
