//! E2B's `network.rules`: per-host request transforms (`transform.headers`), parsed,
//! validated and matched. Pure: the proxy that applies them is `domain_proxy/transform_proxy.rs`.
//!
//! ```json
//! "rules": { "api.example.com": [ { "transform": { "headers": { "Authorization": "Bearer …" } } } ],
//!            "10.77.0.1":       [ { "transform": { "headers": { "X-Proof": "…" } } } ] }
//! ```
//!
//! A key is a domain (`api.example.com`, `*.example.com`), an IP address or a CIDR. A
//! rule never allows traffic by itself (as on E2B): the destination must also pass
//! `allowOut`/`denyOut` and the internal ranges. Where a rule applies:
//!
//! - **IP/CIDR keys**: every TCP connection to an address they cover, on any port;
//! - **domain keys**: TCP connections to ports 80 and 443, on the requests whose `Host`
//!   (or absolute URI) names the domain *and* whose name resolves, on the host, to the
//!   address the sandbox connected to (so a sandbox cannot have the header sent to a
//!   server of its choosing by naming the rule's host in a request to it).
//!
//! Transforms are applied to plain HTTP/1 only: TLS to a host with rules cannot be
//! rewritten without terminating it (no MITM here), so such a connection is closed and
//! the refusal logged (fail closed).
//!
//! Header values are secrets (a gateway proof, a bearer token): they are held as
//! [`Secret`] (masked in `Debug`), never logged, and only leave the server in the
//! forwarded request and in the API's sandbox detail (which needs the API key).

use std::fmt;
use std::net::IpAddr;

use courier_secret::Secret;
use serde_json::{Map, Value};

use super::{Cidr, DOMAIN_PORTS, DomainPattern};

/// Most hosts in one `rules` map.
pub const MAX_HOSTS: usize = 100;
/// Most rules for one host.
pub const MAX_RULES_PER_HOST: usize = 16;
/// Most headers in one transform.
pub const MAX_HEADERS: usize = 32;
/// Longest header value, bytes.
pub const MAX_VALUE: usize = 8 * 1024;
/// Largest total of every name and value of one sandbox's rules, bytes.
pub const MAX_TOTAL: usize = 64 * 1024;

/// Headers a transform may not set: they frame the message or the connection (setting
/// them would desynchronize the proxy and the server, i.e. request smuggling), or name
/// the destination (the forwarded `Host` is the one the rule was matched against).
const FORBIDDEN_HEADERS: [&str; 10] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// What a rule key matches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Domain(DomainPattern),
    Net(Cidr),
}

/// One header a transform sets: its lowercase name and its (secret) value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderSet {
    /// Lowercase header name.
    pub name: String,
    /// The value, a secret.
    pub value: Secret,
}

/// The rules of one key, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostRules {
    /// The key as given.
    key: String,
    target: Target,
    /// Each rule's headers (a rule without `transform` has none), names as given.
    rules: Vec<Vec<(String, Secret)>>,
}

/// A sandbox's validated `network.rules`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TransformRules {
    hosts: Vec<HostRules>,
}

impl fmt::Debug for TransformRules {
    /// Keys and header names only: the values are secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for host in &self.hosts {
            let names: Vec<&str> = host
                .rules
                .iter()
                .flatten()
                .map(|(n, _)| n.as_str())
                .collect();
            map.entry(&host.key, &names);
        }
        map.finish()
    }
}

/// Why `rules` was refused: the field path (`network.rules["api.example.com"][0]…`) and
/// what is allowed. Never contains a header value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct TransformError {
    /// Where, e.g. `network.rules["api.example.com"][0].transform.headers["Host"]`.
    pub field: String,
    /// Why, and what would be accepted.
    pub reason: String,
}

fn err(field: String, reason: impl Into<String>) -> TransformError {
    TransformError {
        field,
        reason: reason.into(),
    }
}

impl TransformRules {
    /// Parses E2B's `rules` object (`null` or absent = none). `field` names it in errors
    /// (`network.rules` on create, `rules` on a network update).
    pub fn parse(value: Option<&Value>, field: &str) -> Result<Self, TransformError> {
        let map = match value {
            None | Some(Value::Null) => return Ok(Self::default()),
            Some(Value::Object(map)) => map,
            Some(_) => {
                return Err(err(
                    field.to_owned(),
                    "must be an object mapping a host (domain, IP or CIDR) to a list of rules",
                ));
            }
        };
        if map.len() > MAX_HOSTS {
            return Err(err(
                field.to_owned(),
                format!("has {} hosts: at most {MAX_HOSTS}", map.len()),
            ));
        }
        let mut total = 0usize;
        let mut hosts = Vec::with_capacity(map.len());
        for (key, list) in map {
            let key_field = format!("{field}[{key:?}]");
            let target = parse_target(key).map_err(|why| err(key_field.clone(), why))?;
            let Value::Array(list) = list else {
                return Err(err(key_field, "must be a list of rules"));
            };
            if list.len() > MAX_RULES_PER_HOST {
                return Err(err(
                    key_field,
                    format!("has {} rules: at most {MAX_RULES_PER_HOST}", list.len()),
                ));
            }
            let mut rules = Vec::with_capacity(list.len());
            for (i, rule) in list.iter().enumerate() {
                let rule_field = format!("{key_field}[{i}]");
                rules.push(parse_rule(rule, &rule_field, &mut total)?);
            }
            hosts.push(HostRules {
                key: key.clone(),
                target,
                rules,
            });
        }
        if total > MAX_TOTAL {
            return Err(err(
                field.to_owned(),
                format!("header names and values total {total} bytes: at most {MAX_TOTAL}"),
            ));
        }
        Ok(Self { hosts })
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// The rules as E2B's sandbox detail writes them (`SandboxNetworkRuleInfo`), values
    /// included: only for the API's detail route and the sandbox's record.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut out = Map::new();
        for host in &self.hosts {
            let rules = host
                .rules
                .iter()
                .map(|headers| {
                    if headers.is_empty() {
                        return Value::Object(Map::new());
                    }
                    let headers: Map<String, Value> = headers
                        .iter()
                        .map(|(n, v)| (n.clone(), Value::String(v.expose().to_owned())))
                        .collect();
                    serde_json::json!({ "transform": { "headers": headers } })
                })
                .collect();
            out.insert(host.key.clone(), Value::Array(rules));
        }
        out
    }

    /// The rules in the SDK's shape (the API's sandbox detail), values included.
    pub fn to_sdk(
        &self,
    ) -> std::collections::BTreeMap<String, Vec<courier_e2b::models::NetworkRule>> {
        self.hosts
            .iter()
            .map(|host| {
                let rules = host
                    .rules
                    .iter()
                    .map(|headers| courier_e2b::models::NetworkRule {
                        transform: (!headers.is_empty()).then(|| {
                            courier_e2b::models::NetworkTransform {
                                headers: headers.iter().cloned().collect(),
                            }
                        }),
                    })
                    .collect();
                (host.key.clone(), rules)
            })
            .collect()
    }

    /// Whether a TCP connection to `ip:port` must go through the transform proxy: an
    /// IP/CIDR key covers `ip`, or a domain key exists and `port` is 80 or 443.
    pub fn intercepts(&self, ip: IpAddr, port: u16) -> bool {
        self.hosts.iter().any(|h| match &h.target {
            Target::Net(net) => net.contains(ip),
            Target::Domain(_) => DOMAIN_PORTS.contains(&port),
        })
    }

    /// Whether an IP/CIDR key covers `ip`.
    pub fn covers_ip(&self, ip: IpAddr) -> bool {
        self.hosts
            .iter()
            .any(|h| matches!(&h.target, Target::Net(net) if net.contains(ip)))
    }

    /// Whether a domain key matches `name`.
    pub fn names(&self, name: &str) -> bool {
        self.hosts
            .iter()
            .any(|h| matches!(&h.target, Target::Domain(d) if d.matches(name)))
    }

    /// The headers to set on a request to `ip`, named `name` (when `name_checked`: the
    /// name resolves to `ip`), in order: IP/CIDR keys first, then domain keys, each
    /// key's rules in order; a later value for the same name replaces an earlier one.
    pub fn headers_for(&self, ip: IpAddr, name: Option<&str>) -> Vec<HeaderSet> {
        let mut out: Vec<HeaderSet> = Vec::new();
        let nets = self
            .hosts
            .iter()
            .filter(|h| matches!(&h.target, Target::Net(net) if net.contains(ip)));
        let domains = self.hosts.iter().filter(
            |h| matches!((&h.target, name), (Target::Domain(d), Some(name)) if d.matches(name)),
        );
        for host in nets.chain(domains) {
            for (n, value) in host.rules.iter().flatten() {
                let name = n.to_ascii_lowercase();
                out.retain(|h| h.name != name);
                out.push(HeaderSet {
                    name,
                    value: value.clone(),
                });
            }
        }
        out
    }
}

/// Written as E2B's `rules` object, values raw: only the sandbox's record (a 0600 file of
/// the server's data dir) and the API's detail serialize it.
impl serde::Serialize for TransformRules {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

/// Read back (and validated again) from that form.
impl<'de> serde::Deserialize<'de> for TransformRules {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Self::parse(Some(&value), "rules").map_err(serde::de::Error::custom)
    }
}

fn parse_target(key: &str) -> Result<Target, String> {
    if let Ok(net) = key.parse::<Cidr>() {
        return Ok(Target::Net(net));
    }
    let addressy = key.contains('/')
        || key.contains(':')
        || key.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if addressy {
        return Err(format!(
            "{:?} is not a valid IP address or CIDR (a key is a domain, an IP or a CIDR; \
             no port)",
            key.chars().take(100).collect::<String>()
        ));
    }
    key.parse::<DomainPattern>()
        .map(Target::Domain)
        .map_err(|why| {
            format!("{why}; a key is a domain (api.example.com, *.example.com), an IP or a CIDR")
        })
}

fn parse_rule(
    rule: &Value,
    field: &str,
    total: &mut usize,
) -> Result<Vec<(String, Secret)>, TransformError> {
    let Value::Object(rule) = rule else {
        return Err(err(
            field.to_owned(),
            "must be an object ({\"transform\": {...}})",
        ));
    };
    if let Some(other) = rule.keys().find(|k| *k != "transform") {
        return Err(err(
            format!("{field}.{other}"),
            "is not supported: a rule has only `transform`",
        ));
    }
    let transform = match rule.get("transform") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(t)) => t,
        Some(_) => {
            return Err(err(
                format!("{field}.transform"),
                "must be an object ({\"headers\": {...}})",
            ));
        }
    };
    if let Some(other) = transform.keys().find(|k| *k != "headers") {
        return Err(err(
            format!("{field}.transform.{other}"),
            "is not supported: a transform has only `headers`",
        ));
    }
    let headers = match transform.get("headers") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(h)) => h,
        Some(_) => {
            return Err(err(
                format!("{field}.transform.headers"),
                "must be an object of header names to string values",
            ));
        }
    };
    if headers.len() > MAX_HEADERS {
        return Err(err(
            format!("{field}.transform.headers"),
            format!("has {} headers: at most {MAX_HEADERS}", headers.len()),
        ));
    }
    let mut out = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let header_field = format!("{field}.transform.headers[{name:?}]");
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(err(
                header_field,
                "is not a valid HTTP header name (a token)",
            ));
        }
        if FORBIDDEN_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(err(
                header_field,
                format!(
                    "may not be set by a transform (it frames the message or names the \
                     destination): not one of {}",
                    FORBIDDEN_HEADERS.join(", ")
                ),
            ));
        }
        // The value is never quoted back: it is a secret.
        let Value::String(value) = value else {
            return Err(err(header_field, "must be a string"));
        };
        if value.len() > MAX_VALUE {
            return Err(err(
                header_field,
                format!("value is {} bytes: at most {MAX_VALUE}", value.len()),
            ));
        }
        if http::HeaderValue::from_str(value).is_err() {
            return Err(err(
                header_field,
                "value is not a valid HTTP header value (visible ASCII, spaces and tabs; no \
                 CR, LF or other control characters)",
            ));
        }
        *total += name.len() + value.len();
        out.push((name.clone(), Secret::new(value.clone())));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<TransformRules, TransformError> {
        let value: Value = serde_json::from_str(json).unwrap();
        TransformRules::parse(Some(&value), "network.rules")
    }

    #[test]
    fn rules_parse_match_and_round_trip() {
        let rules = parse(
            r#"{"api.example.com": [{"transform": {"headers": {"X-Token": "a"}}},
                                    {"transform": {"headers": {"x-token": "b", "X-Other": "c"}}}],
                "10.77.0.0/24": [{"transform": {"headers": {"X-Proof": "p"}}}],
                "plain.example.com": [{}]}"#,
        )
        .unwrap();
        let ip: IpAddr = "10.77.0.1".parse().unwrap();
        let public: IpAddr = "203.0.113.10".parse().unwrap();
        assert!(rules.intercepts(ip, 8080), "a CIDR key covers every port");
        assert!(rules.intercepts(public, 80) && rules.intercepts(public, 443));
        assert!(
            !rules.intercepts(public, 8080),
            "domain keys: 80 and 443 only"
        );
        let got = |ip, name| {
            rules
                .headers_for(ip, name)
                .into_iter()
                .map(|h| format!("{}={}", h.name, h.value.expose()))
                .collect::<Vec<_>>()
        };
        // A later rule for the same header replaces the earlier one (a rule's headers
        // come in name order: JSON objects are read sorted).
        assert_eq!(
            got(public, Some("API.example.com")),
            ["x-other=c", "x-token=b"]
        );
        assert_eq!(
            got(ip, Some("api.example.com")),
            ["x-proof=p", "x-other=c", "x-token=b"]
        );
        assert_eq!(got(ip, None), ["x-proof=p"]);
        assert!(got(public, None).is_empty());
        assert!(got(public, Some("evil.example.com")).is_empty());
        let json = Value::Object(rules.to_json());
        assert_eq!(
            json["api.example.com"][1]["transform"]["headers"]["X-Other"],
            "c"
        );
        assert_eq!(json["plain.example.com"][0], serde_json::json!({}));
        // What was written reads back the same (the record stores this form).
        assert_eq!(TransformRules::parse(Some(&json), "r").unwrap(), rules);
    }

    #[test]
    fn values_never_appear_in_debug_or_errors() {
        let secret = "s3cr3t-proof-value-0123456789";
        let rules = parse(&format!(
            r#"{{"api.example.com": [{{"transform": {{"headers": {{"X-Proof": "{secret}"}}}}}}]}}"#
        ))
        .unwrap();
        let debug = format!("{rules:?}");
        assert!(
            !debug.contains(secret) && debug.contains("X-Proof"),
            "{debug}"
        );
        let bad = parse(&format!(
            r#"{{"api.example.com": [{{"transform": {{"headers": {{"X-Proof": "{secret}\r\nX-Injected: 1"}}}}}}]}}"#
        ))
        .unwrap_err();
        assert!(!bad.to_string().contains(secret), "{bad}");
        assert!(bad.to_string().contains("X-Proof"), "{bad}");
    }

    #[test]
    fn bad_rules_are_refused_naming_the_field() {
        for (json, field) in [
            (r#"[]"#, "network.rules"),
            (r#"{"a.com": {}}"#, r#"network.rules["a.com"]"#),
            (r#"{"a.com:80": []}"#, r#"network.rules["a.com:80"]"#),
            (r#"{"10.0.0.0/33": []}"#, r#"network.rules["10.0.0.0/33"]"#),
            (r#"{"bad host!": []}"#, r#"network.rules["bad host!"]"#),
            (
                r#"{"a.com": [{"match": 1}]}"#,
                r#"network.rules["a.com"][0].match"#,
            ),
            (
                r#"{"a.com": [{"transform": {"body": "x"}}]}"#,
                r#"network.rules["a.com"][0].transform.body"#,
            ),
            (
                r#"{"a.com": [{"transform": {"headers": {"Host": "b.com"}}}]}"#,
                r#"network.rules["a.com"][0].transform.headers["Host"]"#,
            ),
            (
                r#"{"a.com": [{"transform": {"headers": {"Content-Length": "0"}}}]}"#,
                r#"network.rules["a.com"][0].transform.headers["Content-Length"]"#,
            ),
            (
                r#"{"a.com": [{"transform": {"headers": {"Bad Name": "x"}}}]}"#,
                r#"network.rules["a.com"][0].transform.headers["Bad Name"]"#,
            ),
            (
                r#"{"a.com": [{"transform": {"headers": {"X": 1}}}]}"#,
                r#"network.rules["a.com"][0].transform.headers["X"]"#,
            ),
        ] {
            let e = parse(json).unwrap_err();
            assert_eq!(e.field, field, "{json}: {e}");
        }
        let big = "v".repeat(MAX_VALUE + 1);
        let e = parse(&format!(
            r#"{{"a.com": [{{"transform": {{"headers": {{"X": "{big}"}}}}}}]}}"#
        ))
        .unwrap_err();
        assert!(e.reason.contains("at most"), "{e}");
        let many: Map<String, Value> = (0..=MAX_HOSTS)
            .map(|i| (format!("h{i}.com"), Value::Array(Vec::new())))
            .collect();
        assert!(TransformRules::parse(Some(&Value::Object(many)), "rules").is_err());
        assert!(TransformRules::parse(None, "rules").unwrap().is_empty());
        assert!(
            TransformRules::parse(Some(&Value::Null), "rules")
                .unwrap()
                .is_empty()
        );
    }
}
