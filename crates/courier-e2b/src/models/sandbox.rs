//! Sandbox shapes of the control plane (`/sandboxes`, `/v2/sandboxes`), with the exact
//! field names of the E2B API.

use std::collections::{BTreeMap, HashMap};
use std::ops::Deref;

use chrono::{DateTime, Utc};
use courier_secret::Secret;
use serde::{Deserialize, Serialize};

/// Body of `POST /v2/sandboxes`. Only set keys are sent.
///
/// ```
/// use courier_e2b::models::NewSandbox;
/// let body = NewSandbox { template_id: "base".into(), timeout: Some(120), ..Default::default() };
/// assert_eq!(serde_json::to_string(&body).unwrap(), r#"{"templateID":"base","timeout":120,"metadata":{},"envVars":{}}"#);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewSandbox {
    /// Template id, alias (`base`), `team/name:tag` or snapshot id.
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// Time to live in seconds (server default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// Caller-defined labels (always sent, at least `{}`).
    #[serde(default)]
    pub metadata: HashMap<String, String>,
    /// Environment variables for every process (always sent, at least `{}`).
    #[serde(rename = "envVars", default)]
    pub env_vars: HashMap<String, String>,
    /// Pause instead of kill at timeout.
    #[serde(rename = "autoPause", default, skip_serializing_if = "Option::is_none")]
    pub auto_pause: Option<bool>,
    /// Resume the paused sandbox when traffic reaches it (`{"enabled": true}`).
    #[serde(
        rename = "autoResume",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub auto_resume: Option<super::AutoResume>,
    /// Whether the timeout's auto-pause keeps memory (default true); `false` makes it
    /// filesystem-only: resuming reboots the sandbox from its kept filesystem.
    #[serde(
        rename = "autoPauseMemory",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub auto_pause_memory: Option<bool>,
    /// Note the snake_case key, as in the API.
    #[serde(
        rename = "allow_internet_access",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_internet_access: Option<bool>,
    /// Network policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkConfig>,
    /// Volumes to mount.
    #[serde(
        rename = "volumeMounts",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub volume_mounts: Vec<VolumeMount>,
}

/// The API's `Sandbox` object, returned by create and connect: what is needed to reach the
/// sandbox's envd.
///
/// The tokens are [`Secret`]s: masked in `Debug`, written as they are on the wire (the
/// caller needs them to reach envd).
///
/// ```
/// let json = r#"{"templateID":"t","sandboxID":"abc","clientID":"6532622b","envdVersion":"0.6.13","envdAccessToken":"tok12345"}"#;
/// let record: courier_e2b::models::SandboxRecord = serde_json::from_str(json).unwrap();
/// assert_eq!(record.sandbox_id, "abc");
/// assert!(!format!("{record:?}").contains("tok12345"));
/// assert!(serde_json::to_string(&record).unwrap().contains(r#""envdAccessToken":"tok12345""#));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxRecord {
    /// The resolved template id.
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// The sandbox id (`[a-z0-9]+`).
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    /// Deprecated constant.
    #[serde(rename = "clientID", default)]
    pub client_id: String,
    /// The envd version inside the sandbox.
    #[serde(rename = "envdVersion")]
    pub envd_version: String,
    /// The template alias, if created from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// The token envd expects in `X-Access-Token` (secured sandboxes), on the wire as is.
    #[serde(
        rename = "envdAccessToken",
        default,
        skip_serializing_if = "Option::is_none",
        with = "courier_secret::exposed::option"
    )]
    pub envd_access_token: Option<Secret>,
    /// The token for `e2b-traffic-access-token` when public traffic is off, on the wire
    /// as is (`null` when there is none, as the API writes it).
    #[serde(
        rename = "trafficAccessToken",
        default,
        with = "courier_secret::exposed::option"
    )]
    pub traffic_access_token: Option<Secret>,
    /// The base domain of the sandbox's hosts, when it differs from the configured one
    /// (`null` otherwise).
    #[serde(default)]
    pub domain: Option<String>,
}

/// A sandbox's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxState {
    /// Running.
    Running,
    /// Paused (can be resumed by connect).
    Paused,
}

impl SandboxState {
    /// The wire name.
    ///
    /// ```
    /// assert_eq!(courier_e2b::models::SandboxState::Paused.as_str(), "paused");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Running => "running",
            SandboxState::Paused => "paused",
        }
    }
}

/// `GET /sandboxes/{id}`: everything about one sandbox: the [`ListedSandbox`] fields
/// (reachable through `Deref`, so `detail.sandbox_id` works) and the details a list leaves
/// out.
///
/// ```
/// let json = r#"{"templateID":"t","sandboxID":"abc","clientID":"6532622b",
///     "startedAt":"2026-01-02T03:04:05Z","endAt":"2026-01-02T03:09:05Z","envdVersion":"0.6.13",
///     "cpuCount":2,"memoryMB":512,"diskSizeMB":1024,"state":"running","metadata":{},
///     "envdAccessToken":"tok-0123456789","lifecycle":{"autoResume":false,"onTimeout":"kill"}}"#;
/// let detail: courier_e2b::models::SandboxDetail = serde_json::from_str(json).unwrap();
/// assert_eq!(detail.sandbox_id, "abc");
/// assert_eq!(detail.envd_access_token.as_ref().unwrap().expose(), "tok-0123456789");
/// assert_eq!(detail.lifecycle.as_ref().unwrap().on_timeout, "kill");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxDetail {
    /// What a list item says about the sandbox.
    #[serde(flatten)]
    pub sandbox: ListedSandbox,
    /// The envd access token, on the wire as is.
    #[serde(
        rename = "envdAccessToken",
        default,
        skip_serializing_if = "Option::is_none",
        with = "courier_secret::exposed::option"
    )]
    pub envd_access_token: Option<Secret>,
    /// The token for `e2b-traffic-access-token` when public traffic is off, on the wire as
    /// is.
    #[serde(
        rename = "trafficAccessToken",
        default,
        skip_serializing_if = "Option::is_none",
        with = "courier_secret::exposed::option"
    )]
    pub traffic_access_token: Option<Secret>,
    /// Whether outbound internet is allowed.
    #[serde(
        rename = "allowInternetAccess",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_internet_access: Option<bool>,
    /// The base domain of the sandbox's hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Network policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkConfig>,
    /// What happens at timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
    /// `full` or `filesystem`.
    #[serde(rename = "pauseMode", default, skip_serializing_if = "Option::is_none")]
    pub pause_mode: Option<String>,
}

impl Deref for SandboxDetail {
    type Target = ListedSandbox;

    fn deref(&self) -> &ListedSandbox {
        &self.sandbox
    }
}

impl From<ListedSandbox> for SandboxDetail {
    /// A detail with only the list item's fields set.
    fn from(sandbox: ListedSandbox) -> Self {
        SandboxDetail {
            sandbox,
            envd_access_token: None,
            traffic_access_token: None,
            allow_internet_access: None,
            domain: None,
            network: None,
            lifecycle: None,
            pause_mode: None,
        }
    }
}

/// One item of `GET /v2/sandboxes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListedSandbox {
    /// The resolved template id.
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// The sandbox id.
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    /// Deprecated constant.
    #[serde(rename = "clientID", default)]
    pub client_id: String,
    /// When it started.
    #[serde(rename = "startedAt")]
    pub started_at: DateTime<Utc>,
    /// When it ends.
    #[serde(rename = "endAt")]
    pub end_at: DateTime<Utc>,
    /// The envd version.
    #[serde(rename = "envdVersion")]
    pub envd_version: String,
    /// vCPUs.
    #[serde(rename = "cpuCount")]
    pub cpu_count: u32,
    /// Memory in MiB.
    #[serde(rename = "memoryMB")]
    pub memory_mb: u64,
    /// Disk in MiB.
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: u64,
    /// Running or paused.
    pub state: SandboxState,
    /// The template alias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Caller-defined labels.
    #[serde(default)]
    pub metadata: HashMap<String, String>,
    /// Mounted volumes.
    #[serde(
        rename = "volumeMounts",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub volume_mounts: Vec<VolumeMount>,
    /// Whether envd stopped answering when it was paused.
    #[serde(
        rename = "envdUnresponsiveAtPause",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub envd_unresponsive_at_pause: Option<bool>,
}

/// One metrics sample (`GET /sandboxes/{id}/metrics`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxMetric {
    /// Sample time (deprecated form).
    pub timestamp: DateTime<Utc>,
    /// Sample time in unix seconds.
    #[serde(rename = "timestampUnix")]
    pub timestamp_unix: i64,
    /// vCPUs.
    #[serde(rename = "cpuCount")]
    pub cpu_count: u32,
    /// CPU use in percent.
    #[serde(rename = "cpuUsedPct")]
    pub cpu_used_pct: f64,
    /// Memory used in bytes.
    #[serde(rename = "memUsed")]
    pub mem_used: u64,
    /// Memory total in bytes.
    #[serde(rename = "memTotal")]
    pub mem_total: u64,
    /// Page cache in bytes.
    #[serde(rename = "memCache")]
    pub mem_cache: u64,
    /// Disk used in bytes.
    #[serde(rename = "diskUsed")]
    pub disk_used: u64,
    /// Disk total in bytes.
    #[serde(rename = "diskTotal")]
    pub disk_total: u64,
}

/// `SandboxNetworkConfig`: egress and ingress policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// Whether user ports are reachable without the traffic token.
    #[serde(
        rename = "allowPublicTraffic",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_public_traffic: Option<bool>,
    /// Allowed destinations (CIDR, IP or domain).
    #[serde(rename = "allowOut", default, skip_serializing_if = "Option::is_none")]
    pub allow_out: Option<Vec<String>>,
    /// Denied destinations (CIDR or IP; `0.0.0.0/0` = all).
    #[serde(rename = "denyOut", default, skip_serializing_if = "Option::is_none")]
    pub deny_out: Option<Vec<String>>,
    /// Host header mask for user ports (may contain `${PORT}`).
    #[serde(
        rename = "maskRequestHost",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub mask_request_host: Option<String>,
    /// `rules`: per-host request transforms (`SandboxNetworkRule`), keyed by domain
    /// (`api.example.com`, `*.example.com`), IP or CIDR. A key does not allow egress by
    /// itself: the host must also pass `allowOut`/`denyOut`. courier-sandboxd applies
    /// the transforms to plain HTTP, and to HTTPS whose server name a domain key matches
    /// (it intercepts that TLS with a CA sandboxes created with rules trust, and verifies
    /// the real server's certificate); TLS it cannot intercept (an IP/CIDR key's address
    /// reached without such a name) is closed.
    ///
    /// ```
    /// use courier_e2b::models::{NetworkConfig, NetworkRule};
    /// let network = NetworkConfig {
    ///     allow_out: Some(vec!["10.0.0.7".into()]),
    ///     rules: Some([("10.0.0.7".to_owned(), vec![NetworkRule::set_headers([("X-Proof", "p-123")])])].into()),
    ///     ..Default::default()
    /// };
    /// let json = serde_json::to_value(&network).unwrap();
    /// assert_eq!(json["rules"]["10.0.0.7"][0]["transform"]["headers"]["X-Proof"], "p-123");
    /// // Debug never shows a header value.
    /// assert!(!format!("{network:?}").contains("p-123"));
    /// ```
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<BTreeMap<String, Vec<NetworkRule>>>,
    /// Fields this crate does not model (`egressProxy`, `dnsServers`, …), kept as is.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// `SandboxNetworkRule`: one rule of a host in [`NetworkConfig::rules`].
///
/// ```
/// use courier_e2b::models::NetworkRule;
/// let rule = NetworkRule::set_headers([("Authorization", "Bearer t-0123456789")]);
/// assert_eq!(
///     serde_json::to_string(&rule).unwrap(),
///     r#"{"transform":{"headers":{"Authorization":"Bearer t-0123456789"}}}"#
/// );
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRule {
    /// What to do to the matching requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<NetworkTransform>,
}

impl NetworkRule {
    /// A rule that sets `headers` (name, value) on every matching request, replacing any
    /// the sandbox sent under those names.
    ///
    /// ```
    /// let rule = courier_e2b::models::NetworkRule::set_headers([("X-Token", "abc")]);
    /// let headers = &rule.transform.unwrap().headers;
    /// assert_eq!(headers["X-Token"].expose(), "abc");
    /// ```
    pub fn set_headers<N: Into<String>, V: Into<String>>(
        headers: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        Self {
            transform: Some(NetworkTransform {
                headers: headers
                    .into_iter()
                    .map(|(n, v)| (n.into(), Secret::new(v.into())))
                    .collect(),
            }),
        }
    }
}

/// `SandboxNetworkTransform`: the headers set on matching requests. The values are
/// secrets (tokens, proofs): [`Secret`]s, masked in `Debug`, written raw on the wire.
///
/// ```
/// use courier_e2b::models::NetworkTransform;
/// let t: NetworkTransform = serde_json::from_str(r#"{"headers":{"X-Key":"k-0123456789"}}"#).unwrap();
/// assert_eq!(t.headers["X-Key"].expose(), "k-0123456789");
/// assert_eq!(format!("{t:?}"), r#"NetworkTransform { headers: ["X-Key"] }"#);
/// ```
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkTransform {
    /// Header name → value.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        serialize_with = "exposed_map"
    )]
    pub headers: BTreeMap<String, Secret>,
}

impl std::fmt::Debug for NetworkTransform {
    /// Header names only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkTransform")
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn exposed_map<S: serde::Serializer>(
    map: &BTreeMap<String, Secret>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(map.iter().map(|(k, v)| (k, v.exposed())))
}

/// Body of `PUT /sandboxes/{id}/network` (`SandboxNetworkUpdateConfig`): replaces every
/// egress rule at once; what is left out is cleared.
///
/// ```
/// use courier_e2b::models::{NetworkRule, NetworkUpdate};
/// let update = NetworkUpdate {
///     deny_out: Some(vec!["0.0.0.0/0".into()]),
///     allow_out: Some(vec!["api.example.com".into()]),
///     rules: Some([("api.example.com".to_owned(), vec![NetworkRule::set_headers([("X-K", "v")])])].into()),
///     ..Default::default()
/// };
/// assert_eq!(
///     serde_json::to_string(&update).unwrap(),
///     r#"{"allowOut":["api.example.com"],"denyOut":["0.0.0.0/0"],"rules":{"api.example.com":[{"transform":{"headers":{"X-K":"v"}}}]}}"#
/// );
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkUpdate {
    /// Allowed destinations (CIDR, IP or domain).
    #[serde(rename = "allowOut", default, skip_serializing_if = "Option::is_none")]
    pub allow_out: Option<Vec<String>>,
    /// Denied destinations (CIDR or IP; `0.0.0.0/0` = all).
    #[serde(rename = "denyOut", default, skip_serializing_if = "Option::is_none")]
    pub deny_out: Option<Vec<String>>,
    /// Per-host request transforms (see [`NetworkConfig::rules`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<BTreeMap<String, Vec<NetworkRule>>>,
    /// `false` denies all traffic (as `denyOut: ["0.0.0.0/0"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_internet_access: Option<bool>,
}

/// What happens when a sandbox times out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    /// Whether traffic resumes a paused sandbox.
    #[serde(rename = "autoResume")]
    pub auto_resume: bool,
    /// `kill` or `pause`.
    #[serde(rename = "onTimeout")]
    pub on_timeout: String,
}

/// A volume mounted into a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    /// Volume name.
    pub name: String,
    /// Mount path inside the sandbox.
    pub path: String,
}
