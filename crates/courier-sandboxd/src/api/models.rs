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
    /// `SandboxNetworkConfig`: only what maps onto on/off outbound access is accepted
    /// (see [`network_allows_internet`]).
    pub network: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Reads a create request's `network` config: `None` when it says nothing about
/// outbound access, `Some(false)` for `denyOut: ["0.0.0.0/0"]` (E2B's spelling of no
/// internet). Anything finer (allow/deny lists, DNS servers, egress proxy, rules,
/// private sandbox URLs) is refused with the field named, rather than accepted and not
/// enforced: a sandbox must never have more access than its creator asked for.
pub(crate) fn network_allows_internet(
    network: &serde_json::Map<String, serde_json::Value>,
) -> Result<Option<bool>, String> {
    use serde_json::Value;
    let unsupported = |field: &str| {
        Err(format!(
            "network.{field} is not supported by courier-sandboxd: outbound access is all or \
             nothing; use allow_internet_access (true or false)"
        ))
    };
    let mut allows = None;
    for (field, value) in network {
        let empty = match value {
            Value::Null => true,
            Value::Array(items) => items.is_empty(),
            Value::Object(map) => map.is_empty(),
            Value::String(s) => s.is_empty(),
            _ => false,
        };
        match field.as_str() {
            _ if empty => {}
            "denyOut" => match value.as_array().map(Vec::as_slice) {
                Some([only]) if only == "0.0.0.0/0" => allows = Some(false),
                _ => return unsupported("denyOut"),
            },
            "allowPublicTraffic" if value == &Value::Bool(true) => {}
            "allowPublicTraffic" => {
                return Err(
                    "network.allowPublicTraffic = false (token-protected sandbox URLs) \
                            is not supported by courier-sandboxd: sandbox URLs are reachable by \
                            whoever can reach its proxy"
                        .to_owned(),
                );
            }
            other => return unsupported(other),
        }
    }
    Ok(allows)
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

#[cfg(test)]
mod network_tests {
    use super::network_allows_internet;

    fn check(json: &str) -> Result<Option<bool>, String> {
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        network_allows_internet(value.as_object().unwrap())
    }

    #[test]
    fn only_all_or_nothing_outbound_access_is_accepted() {
        assert_eq!(check("{}"), Ok(None));
        assert_eq!(
            check(r#"{"allowPublicTraffic": true, "allowOut": []}"#),
            Ok(None)
        );
        assert_eq!(check(r#"{"denyOut": ["0.0.0.0/0"]}"#), Ok(Some(false)));
        for (json, field) in [
            (r#"{"denyOut": ["8.8.8.8"]}"#, "network.denyOut"),
            (r#"{"allowOut": ["example.com"]}"#, "network.allowOut"),
            (r#"{"dnsServers": ["1.1.1.1"]}"#, "network.dnsServers"),
            (
                r#"{"egressProxy": {"url": "socks5://x"}}"#,
                "network.egressProxy",
            ),
            (
                r#"{"allowPublicTraffic": false}"#,
                "network.allowPublicTraffic",
            ),
        ] {
            let err = check(json).unwrap_err();
            assert!(err.contains(field), "{json}: {err}");
        }
    }
}
