//! The server's side of the control plane's wire types: the answers are
//! `courier_e2b::models` (one definition for the SDK and this server), built here from
//! sandbox records; the request bodies are read here, because this server accepts more
//! than the SDK sends (Courier's `memoryMB`/`cpuCount`, the raw `network` object, so
//! unsupported fields are refused by name).

use std::collections::BTreeMap;

use courier_e2b::models;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::egress::policy::ALL_TRAFFIC;
use crate::egress::{EgressRules, TransformRules};
use crate::error::Error;
use crate::server::{ENVD_VERSION, Metric};
use crate::state::{NetworkRecord, SandboxRecord};

/// The constant E2B's API returns as the deprecated `clientID`.
pub const CLIENT_ID: &str = "6532622b";

/// `NewSandbox` (legacy) and `NewSandboxV2`, read after [`check_create_fields`] has
/// refused every field this server would otherwise drop.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NewSandbox {
    #[serde(rename = "templateID")]
    pub template_id: Option<String>,
    pub timeout: Option<u64>,
    pub metadata: Option<BTreeMap<String, String>>,
    pub env_vars: Option<BTreeMap<String, String>>,
    pub auto_pause: Option<bool>,
    /// `SandboxAutoResumeConfig` (see [`auto_resume`]).
    pub auto_resume: Option<Value>,
    #[serde(rename = "allow_internet_access")]
    pub allow_internet_access: Option<bool>,
    /// Courier extension: memory limit in MiB.
    #[serde(rename = "memoryMB")]
    pub memory_mb: Option<u64>,
    /// Courier extension: CPU count.
    pub cpu_count: Option<u32>,
    /// `SandboxNetworkConfig` (see [`create_network`]).
    pub network: Option<Map<String, Value>>,
    /// `volumeMounts`: volumes of the caller's API key, by name, and where to mount them.
    pub volume_mounts: Option<Vec<models::VolumeMount>>,
    /// Whether the timeout's auto-pause keeps memory (default true).
    pub auto_pause_memory: Option<bool>,
}

/// `SandboxPauseRequest`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct PauseBody {
    /// Keep memory (default) or pause filesystem-only (`false`).
    pub memory: Option<bool>,
}

/// What a request body field is to this server (see [`check_fields`]).
#[derive(Clone, Copy)]
pub(crate) enum Field {
    /// Read and honoured by the handler.
    Served,
    /// Not served: accepted only as E2B's default (`is_default`, which also covers
    /// absent and `null`: the official SDKs send defaults), otherwise refused naming the
    /// field and `why`.
    Unserved {
        is_default: fn(&Value) -> bool,
        why: &'static str,
    },
}

fn null_or_true(value: &Value) -> bool {
    matches!(value, Value::Null | Value::Bool(true))
}

/// Reads `autoResume` (E2B's `SandboxAutoResumeConfig`, `{"enabled": bool}`; absent,
/// `null` and `{}` are off). Anything else is refused naming the field.
pub(crate) fn auto_resume(value: Option<&Value>, _auto_pause: Option<bool>) -> Result<bool, Error> {
    let invalid = |reason: &str| Error::InvalidSpec {
        field: "autoResume",
        reason: reason.to_owned(),
    };
    match value {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Object(map)) => {
            if let Some(name) = map.keys().find(|k| *k != "enabled") {
                return Err(invalid(&format!(
                    "unknown field {name:?}: the only field is enabled (a boolean)"
                )));
            }
            match map.get("enabled") {
                None | Some(Value::Null) => Ok(false),
                Some(Value::Bool(enabled)) => Ok(*enabled),
                Some(_) => Err(invalid("enabled must be a boolean")),
            }
        }
        Some(_) => Err(invalid("must be an object {\"enabled\": bool} or null")),
    }
}

/// `iam`: `null`, `{}` or no tokens.
fn no_iam_tokens(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(map) => map.iter().all(|(name, v)| name == "tokens" && is_empty(v)),
        _ => false,
    }
}

/// `POST /sandboxes` and `/v2/sandboxes` (E2B's `NewSandbox`, plus Courier's `memoryMB`
/// and `cpuCount`).
///
/// `mcp` is served as E2B's API serves it: the API only records it (the server names, for
/// analytics) and the SDK itself starts the MCP gateway in the sandbox through envd, so
/// there is nothing for this server to enforce; it must be an object or `null`.
pub(crate) const CREATE_FIELDS: &[(&str, Field)] = &[
    ("templateID", Field::Served),
    ("timeout", Field::Served),
    ("metadata", Field::Served),
    ("envVars", Field::Served),
    ("autoPause", Field::Served),
    ("autoResume", Field::Served),
    ("allow_internet_access", Field::Served),
    ("network", Field::Served),
    ("mcp", Field::Served),
    ("memoryMB", Field::Served),
    ("cpuCount", Field::Served),
    ("autoPauseMemory", Field::Served),
    (
        "secure",
        Field::Unserved {
            is_default: null_or_true,
            why: "every sandbox is secured: envd always requires the sandbox's access token",
        },
    ),
    (
        "iam",
        Field::Unserved {
            is_default: no_iam_tokens,
            why: "workload identity tokens (iam.tokens) are not served",
        },
    ),
    ("volumeMounts", Field::Served),
];

/// `POST /sandboxes/{id}/connect` (`ConnectSandbox`).
pub(crate) const CONNECT_FIELDS: &[(&str, Field)] = &[
    ("timeout", Field::Served),
    (
        "memory",
        Field::Unserved {
            is_default: null_or_true,
            why: "resuming from disk only (memory: false) is not served; a paused sandbox \
                  always resumes with its memory",
        },
    ),
];

/// The deprecated `POST /sandboxes/{id}/resume` (`ResumedSandbox`); `autoPause` is
/// checked against the sandbox by the handler.
pub(crate) const RESUME_FIELDS: &[(&str, Field)] = &[
    ("timeout", Field::Served),
    ("autoPause", Field::Served),
    CONNECT_FIELDS[1],
];

/// `POST /sandboxes/{id}/pause` (`SandboxPauseRequest`).
pub(crate) const PAUSE_FIELDS: &[(&str, Field)] = &[("memory", Field::Served)];

/// `POST /sandboxes/{id}/timeout`.
pub(crate) const TIMEOUT_FIELDS: &[(&str, Field)] = &[("timeout", Field::Served)];

/// `POST /sandboxes/{id}/refreshes`.
pub(crate) const REFRESH_FIELDS: &[(&str, Field)] = &[("duration", Field::Served)];

/// Refuses, naming the field, every field of `body` that this server would otherwise
/// accept and drop: an unserved field with a value other than E2B's default, and an
/// unknown field with a value (unknown `null`, `[]`, `{}` or `""` are let through, as
/// SDKs send empty defaults of fields newer than this server).
pub(crate) fn check_fields(
    body: &Map<String, Value>,
    fields: &[(&str, Field)],
) -> Result<(), Error> {
    for (name, value) in body {
        match fields.iter().find(|(known, _)| known == name) {
            Some((_, Field::Served)) => {}
            Some((_, Field::Unserved { is_default, why })) => {
                if !is_default(value) {
                    return Err(Error::Unsupported(format!(
                        "{name} is not supported by courier-sandboxd: {why}"
                    )));
                }
            }
            None if is_empty(value) => {}
            None => {
                let served: Vec<&str> = fields
                    .iter()
                    .filter(|(_, f)| matches!(f, Field::Served))
                    .map(|(n, _)| *n)
                    .collect();
                return Err(Error::Unsupported(format!(
                    "{name} is not a field courier-sandboxd knows here; supported: {}",
                    served.join(", ")
                )));
            }
        }
    }
    Ok(())
}

/// Checks a create body ([`CREATE_FIELDS`]) and reads it.
pub(crate) fn read_create(body: Map<String, Value>) -> Result<NewSandbox, Error> {
    check_fields(&body, CREATE_FIELDS)?;
    if !matches!(body.get("mcp"), None | Some(Value::Null | Value::Object(_))) {
        return Err(Error::InvalidSpec {
            field: "mcp",
            reason: "must be an object (MCP server name to its configuration) or null".to_owned(),
        });
    }
    serde_json::from_value(Value::Object(body)).map_err(|e| Error::InvalidSpec {
        field: "body",
        reason: e.to_string(),
    })
}

/// A create request's network settings, validated.
#[derive(Debug)]
pub(crate) struct CreateNetwork {
    /// The egress rules to enforce (`allow_internet_access: false` folded in as
    /// `denyOut: ["0.0.0.0/0"]`, as E2B defines it).
    pub rules: EgressRules,
    /// Whether outbound access was asked for at all.
    pub internet: bool,
    /// `network.allowPublicTraffic` (default true).
    pub allow_public_traffic: bool,
    /// `network.maskRequestHost`: the `Host` requests to the sandbox's ports arrive with.
    pub mask_request_host: Option<String>,
}

/// Fields of E2B's `SandboxNetworkConfig` this server does not implement, and why: a
/// non-empty value is refused naming the field, rather than accepted and not enforced (a
/// sandbox must never get more than its creator asked for).
const UNSUPPORTED_NETWORK_FIELDS: [(&str, &str); 3] = [
    (
        "egressProxy",
        "outbound traffic is not tunneled through a SOCKS5 proxy",
    ),
    (
        "dnsServers",
        "the sandbox resolves through the host's resolver",
    ),
    ("httpsPorts", "domain rules apply to ports 80 and 443"),
];

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// A list of strings (absent or null = empty).
fn string_list(
    network: &Map<String, Value>,
    name: &str,
    field: &'static str,
) -> Result<Vec<String>, Error> {
    let not_a_list = || Error::InvalidSpec {
        field,
        reason: "must be a list of strings (CIDRs, IP addresses or domains)".to_owned(),
    };
    match network.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or_else(not_a_list))
            .collect(),
        Some(_) => Err(not_a_list()),
    }
}

/// Refuses fields outside `known` and set fields of [`UNSUPPORTED_NETWORK_FIELDS`].
fn check_network_fields(
    network: &Map<String, Value>,
    prefix: &str,
    known: &[&str],
) -> Result<(), Error> {
    for (field, value) in network {
        if known.contains(&field.as_str()) || is_empty(value) {
            continue;
        }
        let why = UNSUPPORTED_NETWORK_FIELDS
            .iter()
            .find(|(name, _)| name == field)
            .map_or("unknown field", |(_, why)| why);
        return Err(Error::Unsupported(format!(
            "{prefix}{field} is not supported by courier-sandboxd ({why}); supported: \
             {}",
            known.join(", ")
        )));
    }
    Ok(())
}

/// Longest `maskRequestHost`.
const MAX_MASK: usize = 253;

/// Reads `maskRequestHost`: a host (`name`, `name:port`, with `${PORT}` anywhere) that
/// must be a valid `Host` header value once `${PORT}` is replaced.
fn mask_request_host(network: &Map<String, Value>) -> Result<Option<String>, Error> {
    let invalid = |reason: &str| Error::InvalidSpec {
        field: "network.maskRequestHost",
        reason: reason.to_owned(),
    };
    match network.get("maskRequestHost") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => {
            let probe = s.replace("${PORT}", "65535");
            let valid = s.len() <= MAX_MASK
                && probe.parse::<http::uri::Authority>().is_ok()
                && !probe.contains('@');
            if !valid {
                return Err(invalid(
                    "must be a host, optionally with a port, where ${PORT} stands for the \
                     sandbox port (e.g. \"${PORT}-app.example.com\" or \
                     \"custom-host.example.com:${PORT}\"), at most 253 characters",
                ));
            }
            Ok(Some(s.clone()))
        }
        Some(_) => Err(invalid("must be a string")),
    }
}

/// Reads a create request's `allow_internet_access` and `network`: `allowOut` and
/// `denyOut` are enforced (see [`crate::egress`]), `rules` transform plain-HTTP requests
/// (see `egress/policy/transform.rs`), `maskRequestHost` rewrites the `Host` of requests to the
/// sandbox's ports, `allowPublicTraffic: false` protects those ports with a traffic access
/// token; the other fields are refused.
///
/// Without `allow_internet_access`, the sandbox gets outbound access when network rules
/// are given (courier's default is no network); `allow_internet_access: false` is
/// `denyOut: ["0.0.0.0/0"]`, so an `allowOut` still lets its destinations through.
pub(crate) fn create_network(
    allow_internet_access: Option<bool>,
    network: Option<&Map<String, Value>>,
) -> Result<CreateNetwork, Error> {
    let empty = Map::new();
    let network = network.unwrap_or(&empty);
    check_network_fields(
        network,
        "network.",
        &[
            "allowOut",
            "denyOut",
            "allowPublicTraffic",
            "rules",
            "maskRequestHost",
        ],
    )?;
    let transforms = TransformRules::parse(network.get("rules"), "network.rules")?;
    let mask_request_host = mask_request_host(network)?;
    let allow = string_list(network, "allowOut", "network.allowOut")?;
    let mut deny = string_list(network, "denyOut", "network.denyOut")?;
    let allow_public_traffic = match network.get("allowPublicTraffic") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(Error::InvalidSpec {
                field: "network.allowPublicTraffic",
                reason: "must be true or false".to_owned(),
            });
        }
    };
    let internet = match allow_internet_access {
        Some(true) => true,
        Some(false) => !allow.is_empty(),
        None => !allow.is_empty() || !deny.is_empty(),
    };
    if allow_internet_access == Some(false) && !deny.iter().any(|d| d == ALL_TRAFFIC) {
        deny.push(ALL_TRAFFIC.to_owned());
    }
    Ok(CreateNetwork {
        rules: EgressRules::parse(&allow, &deny, "network.")?.with_transforms(transforms),
        internet,
        allow_public_traffic,
        mask_request_host,
    })
}

/// Reads `PUT /sandboxes/{id}/network` (`SandboxNetworkUpdateConfig`): the new rules,
/// replacing all the old ones (omitted lists and `rules` are cleared);
/// `allow_internet_access: false` adds `0.0.0.0/0` to `denyOut`.
pub(crate) fn update_network(body: &Map<String, Value>) -> Result<EgressRules, Error> {
    check_network_fields(
        body,
        "",
        &["allowOut", "denyOut", "allow_internet_access", "rules"],
    )?;
    let transforms = TransformRules::parse(body.get("rules"), "rules")?;
    let allow = string_list(body, "allowOut", "allowOut")?;
    let mut deny = string_list(body, "denyOut", "denyOut")?;
    match body.get("allow_internet_access") {
        None | Some(Value::Null) | Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => {
            if !deny.iter().any(|d| d == ALL_TRAFFIC) {
                deny.push(ALL_TRAFFIC.to_owned());
            }
        }
        Some(_) => {
            return Err(Error::InvalidSpec {
                field: "allow_internet_access",
                reason: "must be true or false".to_owned(),
            });
        }
    }
    Ok(EgressRules::parse(&allow, &deny, "")?.with_transforms(transforms))
}

/// Body of connect (v2 and legacy) and the deprecated resume.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConnectBody {
    pub timeout: Option<u64>,
    /// The deprecated resume's `autoPause` (see [`RESUME_FIELDS`]).
    pub auto_pause: Option<bool>,
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

/// The create/connect answer (E2B's `Sandbox`): the tokens the caller needs, written raw.
pub(crate) fn sandbox(record: &SandboxRecord, domain: Option<&str>) -> models::SandboxRecord {
    models::SandboxRecord {
        template_id: record.template_id.clone(),
        sandbox_id: record.sandbox_id.clone(),
        client_id: CLIENT_ID.to_owned(),
        envd_version: ENVD_VERSION.to_owned(),
        alias: record.alias.clone(),
        envd_access_token: Some(record.envd_access_token.clone()),
        traffic_access_token: record.traffic_access_token.clone(),
        domain: domain.map(str::to_owned),
    }
}

/// A list item (`ListedSandbox`).
pub(crate) fn listed(record: &SandboxRecord) -> models::ListedSandbox {
    models::ListedSandbox {
        template_id: record.template_id.clone(),
        sandbox_id: record.sandbox_id.clone(),
        client_id: CLIENT_ID.to_owned(),
        started_at: record.started_at,
        end_at: record.end_at,
        envd_version: ENVD_VERSION.to_owned(),
        cpu_count: record.cpu_count,
        memory_mb: record.memory_mb,
        disk_size_mb: record.disk_size_mb,
        state: record.state,
        alias: record.alias.clone(),
        metadata: record
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        volume_mounts: record
            .volume_mounts
            .iter()
            .map(|m| models::VolumeMount {
                name: m.name.clone(),
                path: m.path.clone(),
            })
            .collect(),
        envd_unresponsive_at_pause: None,
    }
}

/// The full detail (`GET /sandboxes/{id}`): the list item plus tokens, network policy and
/// lifecycle.
pub(crate) fn detail(record: &SandboxRecord, domain: Option<&str>) -> models::SandboxDetail {
    models::SandboxDetail {
        envd_access_token: Some(record.envd_access_token.clone()),
        traffic_access_token: record.traffic_access_token.clone(),
        allow_internet_access: Some(record.allow_internet_requested),
        domain: domain.map(str::to_owned),
        network: Some(network(&record.network)),
        lifecycle: Some(models::Lifecycle {
            auto_resume: record.auto_resume_timeout_secs.is_some(),
            on_timeout: if record.auto_pause { "pause" } else { "kill" }.to_owned(),
        }),
        ..models::SandboxDetail::from(listed(record))
    }
}

/// `SandboxNetworkConfig` as a sandbox's detail reports it: every field this server
/// enforces, always written.
fn network(n: &NetworkRecord) -> models::NetworkConfig {
    models::NetworkConfig {
        allow_public_traffic: Some(n.allow_public_traffic),
        allow_out: Some(n.allow_out.clone()),
        deny_out: Some(n.deny_out.clone()),
        mask_request_host: n.mask_request_host.clone(),
        rules: (!n.rules.is_empty()).then(|| n.rules.to_sdk()),
        other: Map::new(),
    }
}

/// `SandboxMetric`. The page cache is not measured (always 0).
impl From<Metric> for models::SandboxMetric {
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

#[cfg(test)]
mod network_tests {
    use super::*;

    fn create(allow_internet_access: Option<bool>, json: &str) -> Result<CreateNetwork, Error> {
        let value: Value = serde_json::from_str(json).unwrap();
        create_network(allow_internet_access, value.as_object())
    }

    #[test]
    fn allow_and_deny_lists_are_enforced_and_imply_internet() {
        let n = create(
            None,
            r#"{"allowOut": ["example.com"], "denyOut": ["0.0.0.0/0"]}"#,
        )
        .unwrap();
        assert!(n.internet && n.allow_public_traffic);
        assert!(n.rules.allows_domain("example.com"));
        let n = create(None, r#"{"denyOut": ["8.8.8.8"]}"#).unwrap();
        assert!(n.internet);
        // Nothing said: courier's default, no network.
        assert!(!create(None, "{}").unwrap().internet);
        assert!(create(Some(true), "{}").unwrap().internet);
        // E2B's "no internet", alone or spelled as a deny-all rule.
        let n = create(Some(false), "{}").unwrap();
        assert!(!n.internet && !n.rules.allows_any_traffic());
        let n = create(None, r#"{"denyOut": ["0.0.0.0/0"]}"#).unwrap();
        assert!(!n.rules.allows_any_traffic());
        // allow_internet_access: false is denyOut 0.0.0.0/0, so allowOut still allows.
        let n = create(Some(false), r#"{"allowOut": ["1.1.1.1"]}"#).unwrap();
        assert!(n.internet && n.rules.allows_any_traffic());
        assert_eq!(n.rules.deny_out(), ["0.0.0.0/0"]);
    }

    #[test]
    fn private_traffic_is_a_setting() {
        let n = create(None, r#"{"allowPublicTraffic": false}"#).unwrap();
        assert!(!n.allow_public_traffic);
        let err = create(None, r#"{"allowPublicTraffic": "no"}"#).unwrap_err();
        assert!(
            err.to_string().contains("network.allowPublicTraffic"),
            "{err}"
        );
    }

    #[test]
    fn unsupported_or_malformed_fields_are_refused_naming_the_field() {
        for (json, field) in [
            (r#"{"dnsServers": ["1.1.1.1"]}"#, "network.dnsServers"),
            (
                r#"{"egressProxy": {"address": "p:1080"}}"#,
                "network.egressProxy",
            ),
            (r#"{"rules": {"a.com": {}}}"#, r#"network.rules["a.com"]"#),
            (
                r#"{"rules": {"a.com": [{"transform": {"headers": {"Host": "b"}}}]}}"#,
                r#"network.rules["a.com"][0].transform.headers["Host"]"#,
            ),
            (
                r#"{"maskRequestHost": "bad host/${PORT}"}"#,
                "network.maskRequestHost",
            ),
            (r#"{"maskRequestHost": 8080}"#, "network.maskRequestHost"),
            (r#"{"whatever": 1}"#, "network.whatever"),
            (r#"{"allowOut": "example.com"}"#, "network.allowOut"),
            (r#"{"denyOut": [1]}"#, "network.denyOut"),
            (r#"{"denyOut": ["example.com"]}"#, "network.denyOut[0]"),
            (
                r#"{"allowOut": ["ok.com", "not ok"]}"#,
                "network.allowOut[1]",
            ),
        ] {
            let err = create(None, json).unwrap_err().to_string();
            assert!(err.contains(field), "{json}: {err}");
        }
        // Empty unsupported fields are fine (SDKs send defaults).
        assert!(
            create(
                None,
                r#"{"rules": {}, "egressProxy": null, "allowOut": []}"#
            )
            .is_ok()
        );
    }

    #[test]
    fn transform_rules_and_the_host_mask_are_read() {
        let n = create(
            None,
            r#"{"allowOut": ["10.0.0.7"], "maskRequestHost": "custom-host.example.com:${PORT}",
                "rules": {"10.0.0.7": [{"transform": {"headers": {"X-Proof": "p-0123456789"}}}]}}"#,
        )
        .unwrap();
        assert_eq!(
            n.mask_request_host.as_deref(),
            Some("custom-host.example.com:${PORT}")
        );
        let headers = n
            .rules
            .transforms()
            .headers_for("10.0.0.7".parse().unwrap(), None);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].value.expose(), "p-0123456789");
        // The error of a bad value names the header, never the value.
        let err = create(
            None,
            r#"{"rules": {"a.com": [{"transform": {"headers": {"X-Proof": "p-0123456789\u0000"}}}]}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("X-Proof") && !err.contains("p-0123456789"),
            "{err}"
        );
        let update =
            serde_json::json!({"rules": {"a.com": [{"transform": {"headers": {"X": "v"}}}]}});
        let rules = update_network(update.as_object().unwrap()).unwrap();
        assert!(rules.transforms().names("a.com"));
        assert!(
            update_network(&Map::new()).unwrap().transforms().is_empty(),
            "an update without rules clears them"
        );
    }

    #[test]
    fn network_updates_replace_every_rule() {
        let update = |json: &str| {
            let value: Value = serde_json::from_str(json).unwrap();
            update_network(value.as_object().unwrap())
        };
        let rules = update(r#"{"allowOut": ["10.0.0.0/8"], "denyOut": ["0.0.0.0/0"]}"#).unwrap();
        assert_eq!(rules.allow_out(), ["10.0.0.0/8"]);
        assert!(update("{}").unwrap().allows_any_traffic());
        let rules = update(r#"{"allow_internet_access": false}"#).unwrap();
        assert!(!rules.allows_any_traffic());
        let err = update(r#"{"denyOut": ["x.com"]}"#).unwrap_err().to_string();
        assert!(err.contains("denyOut[0]"), "{err}");
        let err = update(r#"{"egressProxy": {"address": "p:1"}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("egressProxy"), "{err}");
    }
}

#[cfg(test)]
mod field_tests {
    use super::*;

    fn create(json: &str) -> Result<NewSandbox, Error> {
        let value: Value = serde_json::from_str(json).unwrap();
        read_create(value.as_object().unwrap().clone())
    }

    #[test]
    fn auto_resume_is_read_and_anything_but_enabled_refused_by_name() {
        let read = |json: &str| {
            let value: Value = serde_json::from_str(json).unwrap();
            auto_resume(Some(&value), Some(true))
        };
        assert!(read(r#"{"enabled": true}"#).unwrap());
        assert!(!read(r#"{"enabled": false}"#).unwrap());
        assert!(!read("{}").unwrap());
        assert!(!read("null").unwrap());
        assert!(!auto_resume(None, None).unwrap());
        for bad in [r#"{"when": "x"}"#, r#"{"enabled": "yes"}"#, "true"] {
            let err = read(bad).unwrap_err().to_string();
            assert!(err.contains("autoResume"), "{bad}: {err}");
        }
    }

    #[test]
    fn sdk_defaults_are_accepted_and_other_values_refused_by_name() {
        create(
            r#"{"templateID": "base", "secure": true, "autoResume": {"enabled": false},
                "autoPauseMemory": true, "mcp": null, "iam": {"tokens": {}},
                "volumeMounts": [], "somethingEmpty": null}"#,
        )
        .unwrap();
        let body = create(r#"{"templateID": "base", "mcp": {"server": {}}}"#).unwrap();
        let mounts = create(r#"{"volumeMounts": [{"name": "v", "path": "/v"}]}"#)
            .unwrap()
            .volume_mounts
            .unwrap();
        assert_eq!(
            (mounts[0].name.as_str(), mounts[0].path.as_str()),
            ("v", "/v")
        );
        assert_eq!(body.template_id.as_deref(), Some("base"));
        for (json, field) in [
            (r#"{"secure": false}"#, "secure"),
            (r#"{"iam": {"tokens": {"t": {}}}}"#, "iam"),
            // Served now, but only in E2B's shape.
            (r#"{"volumeMounts": [{"name": "v"}]}"#, "path"),
            (r#"{"volumeMounts": {"v": "/v"}}"#, "sequence"),
            (r#"{"mcp": []}"#, "mcp"),
            (r#"{"other": 0}"#, "other"),
        ] {
            let err = create(json).unwrap_err().to_string();
            assert!(err.contains(field), "{json}: {err}");
        }
        let pause = |json: &str| {
            let value: Value = serde_json::from_str(json).unwrap();
            check_fields(value.as_object().unwrap(), PAUSE_FIELDS)
        };
        pause(r#"{"memory": true}"#).unwrap();
        pause("{}").unwrap();
        // Filesystem-only pause is served.
        pause(r#"{"memory": false}"#).unwrap();
        assert_eq!(
            create(r#"{"templateID": "base", "autoPauseMemory": false}"#)
                .unwrap()
                .auto_pause_memory,
            Some(false)
        );
    }
}
