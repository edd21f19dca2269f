//! Several sandbox providers from the settings: the `[[providers]]` array of the config
//! file (or `COURIER_PROVIDERS`, the same array as inline TOML) and
//! `provider_template_labels`, checked at start and turned into a
//! [`ProviderSet`] of courier-e2b clients.
//!
//! ```toml
//! [[providers]]
//! name = "host-1"                       # [a-z0-9-]{1,32}: the prefix of its sandbox ids
//! api_url = "http://10.0.0.5:3000"      # courier-sandboxd's API (E2B_API_URL)
//! sandbox_url = "http://10.0.0.5:3001"  # its proxy (E2B_SANDBOX_URL), optional
//! api_key_env = "HOST1_API_KEY"         # or api_key = "e2b_…"
//! capacity = 40                         # live sandboxes, optional
//! labels = ["big"]                      # optional
//! ```
//!
//! Keys are [`Secret`]s: never in errors, logs or `Debug`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Result, bail};
use courier_e2b::{Client, ConnectionConfig};
use courier_orchestrator::providers::{ProviderSet, ProviderSpec, is_valid_name};
use courier_tools::Secret;

/// The fields a `[[providers]]` entry may set.
const FIELDS: &[&str] = &[
    "name",
    "api_url",
    "sandbox_url",
    "api_key",
    "api_key_env",
    "domain",
    "capacity",
    "labels",
];

/// One configured provider. No `Debug`: it holds a key.
pub struct ProviderEntry {
    /// Its name, the prefix of its sandboxes' ids.
    pub name: String,
    /// Its control-plane URL.
    pub api_url: String,
    /// Where envd traffic goes, routed by headers (courier-sandboxd's proxy).
    pub sandbox_url: Option<String>,
    /// Its API key (from `api_key`, or the variable `api_key_env` names).
    pub api_key: Secret,
    /// Its sandbox domain (E2B cloud's `e2b.app` by default).
    pub domain: Option<String>,
    /// Live sandboxes it may hold.
    pub capacity: Option<u32>,
    /// Labels creates can be placed by.
    pub labels: Vec<String>,
}

/// Parses the `providers` value (`source` says where it came from, for errors: "config
/// file X" or "COURIER_PROVIDERS"), reading `api_key_env` variables through `env`.
///
/// Every error names the field (`providers[1].api_url`) and what it accepts; key values
/// are never shown.
pub fn parse(
    value: &toml::Value,
    source: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<ProviderEntry>> {
    let Some(array) = value.as_array() else {
        bail!(
            "bad value for `providers` in {source}: expected an array of tables ([[providers]]), got a {}",
            value.type_str()
        );
    };
    let mut entries: Vec<ProviderEntry> = Vec::with_capacity(array.len());
    for (i, item) in array.iter().enumerate() {
        let field = |name: &str| format!("`providers[{i}].{name}`");
        let Some(table) = item.as_table() else {
            bail!("bad value for `providers[{i}]` in {source}: expected a table");
        };
        if let Some(unknown) = table.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            bail!(
                "unknown key {} in {source}; allowed: {}",
                field(unknown),
                FIELDS.join(", ")
            );
        }
        let text = |name: &str| -> Result<Option<String>> {
            match table.get(name) {
                None => Ok(None),
                Some(toml::Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
                Some(_) => bail!(
                    "bad value for {} in {source}: expected a non-empty string",
                    field(name)
                ),
            }
        };
        let url = |name: &str| -> Result<Option<String>> {
            let value = text(name)?;
            if let Some(url) = &value
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                bail!(
                    "bad value for {} in {source}: expected an http:// or https:// URL, got {url:?}",
                    field(name)
                );
            }
            Ok(value)
        };
        let Some(name) = text("name")? else {
            bail!(
                "{} is required in {source}: 1 to 32 of a-z, 0-9 and -",
                field("name")
            );
        };
        if !is_valid_name(&name) {
            bail!(
                "bad value for {} in {source}: expected 1 to 32 of a-z, 0-9 and -, got {name:?}",
                field("name")
            );
        }
        if entries.iter().any(|e| e.name == name) {
            bail!(
                "bad value for {} in {source}: {name:?} names two providers; names must be unique",
                field("name")
            );
        }
        let Some(api_url) = url("api_url")? else {
            bail!(
                "{} is required in {source} (provider {name:?}): an http:// or https:// URL",
                field("api_url")
            );
        };
        let api_key = match (table.get("api_key"), text("api_key_env")?) {
            (Some(_), Some(_)) => bail!(
                "{} and {} are both set in {source}: set one",
                field("api_key"),
                field("api_key_env")
            ),
            (Some(toml::Value::String(key)), None) if !key.trim().is_empty() => {
                Secret::new(key.clone())
            }
            // The value is a secret: say what is wrong without it.
            (Some(_), None) => bail!(
                "bad value for {} in {source}: expected a non-empty string",
                field("api_key")
            ),
            (None, Some(var)) => match env(&var) {
                Some(key) if !key.is_empty() => Secret::new(key),
                _ => bail!(
                    "{} names {var}, which is not set (provider {name:?})",
                    field("api_key_env")
                ),
            },
            (None, None) => bail!(
                "provider {name:?} in {source} has no key: set {} or {}",
                field("api_key"),
                field("api_key_env")
            ),
        };
        let capacity = match table.get("capacity") {
            None => None,
            Some(v) => Some(
                v.as_integer()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "bad value for {} in {source}: expected a positive whole number of live sandboxes",
                            field("capacity")
                        )
                    })?,
            ),
        };
        let labels = match table.get("labels") {
            None => Vec::new(),
            Some(v) => {
                let bad = || {
                    anyhow::anyhow!(
                        "bad value for {} in {source}: expected a list of labels, each 1 to 32 of a-z, 0-9 and -",
                        field("labels")
                    )
                };
                v.as_array()
                    .ok_or_else(bad)?
                    .iter()
                    .map(|l| {
                        l.as_str()
                            .filter(|l| is_valid_name(l))
                            .map(str::to_owned)
                            .ok_or_else(bad)
                    })
                    .collect::<Result<Vec<_>>>()?
            }
        };
        if let Some(domain) = text("domain")?
            && domain.contains(['/', ':', ' '])
        {
            bail!(
                "bad value for {} in {source}: expected a bare domain name such as \"e2b.app\", got {domain:?}",
                field("domain")
            );
        }
        entries.push(ProviderEntry {
            sandbox_url: url("sandbox_url")?,
            domain: text("domain")?,
            name,
            api_url,
            api_key,
            capacity,
            labels,
        });
    }
    if entries.is_empty() {
        bail!("bad value for `providers` in {source}: the list is empty (leave it out instead)");
    }
    Ok(entries)
}

/// Parses `COURIER_PROVIDERS`: the `providers` array as inline TOML.
pub fn parse_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<ProviderEntry>> {
    let table: toml::Table = format!("providers = {text}").parse().map_err(|_| {
        anyhow::anyhow!(
            "bad value for COURIER_PROVIDERS: expected the providers as an inline TOML array, e.g. [{{ name = \"h1\", api_url = \"http://10.0.0.5:3000\", api_key_env = \"H1_KEY\" }}]"
        )
    })?;
    match table.get("providers") {
        Some(value) => parse(value, "COURIER_PROVIDERS", env),
        None => bail!("bad value for COURIER_PROVIDERS: no array"),
    }
}

/// What [`resolve`] found: the providers, and `(template, label)` pairs.
pub type Resolved = (Vec<ProviderEntry>, Vec<(String, String)>);

/// The providers and template labels from the settings: `COURIER_PROVIDERS` over the
/// file's `providers`, `COURIER_PROVIDER_TEMPLATE_LABELS` (`claude=big,codex=small`)
/// over the file's `provider_template_labels`. Refuses providers beside `E2B_*`
/// (`e2b_set`): which one would a sandbox go to?
pub fn resolve(
    env_providers: Option<String>,
    file_providers: Option<(&toml::Value, &Path)>,
    env_labels: Option<String>,
    file_labels: Option<Vec<(String, Option<String>)>>,
    e2b_set: bool,
) -> Result<Resolved> {
    let env = |var: &str| std::env::var(var).ok();
    let providers = match (env_providers, file_providers) {
        (Some(text), _) => parse_env(&text, &env)?,
        (None, Some((value, path))) => {
            parse(value, &format!("config file {}", path.display()), &env)?
        }
        (None, None) => Vec::new(),
    };
    if !providers.is_empty() && e2b_set {
        bail!(
            "both `providers` (or COURIER_PROVIDERS) and E2B_API_KEY/E2B_API_URL (or `e2b_api_key`/`e2b_api_url`) are set: \
             choose one (list E2B cloud as one of the providers to use it beside other hosts)"
        );
    }
    let labels: Vec<(String, Option<String>)> = match env_labels {
        Some(v) => v
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|pair| {
                let (template, label) = pair.split_once('=').unwrap_or((pair, ""));
                (template.trim().to_owned(), Some(label.trim().to_owned()))
            })
            .collect(),
        None => file_labels.unwrap_or_default(),
    };
    let labels = parse_template_labels(labels.into_iter(), &providers).map_err(|e| {
        anyhow::anyhow!(
            "bad value for `provider_template_labels` (or COURIER_PROVIDER_TEMPLATE_LABELS): {e:#}"
        )
    })?;
    Ok((providers, labels))
}

/// Parses `template = label` pairs (`provider_template_labels`): each label must be one
/// some provider carries.
pub fn parse_template_labels(
    pairs: impl Iterator<Item = (String, Option<String>)>,
    providers: &[ProviderEntry],
) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (template, label) in pairs {
        let label = label.unwrap_or_default();
        if template.trim().is_empty() {
            bail!("a template name is empty");
        }
        if !providers.iter().any(|p| p.labels.contains(&label)) {
            bail!("template {template:?}: no provider carries the label {label:?}");
        }
        out.push((template, label));
    }
    Ok(out)
}

/// The [`ProviderSet`] of courier-e2b clients the entries describe.
pub fn provider_set(
    entries: &[ProviderEntry],
    template_labels: &[(String, String)],
) -> Result<ProviderSet> {
    let mut specs = Vec::with_capacity(entries.len());
    for entry in entries {
        let mut builder = ConnectionConfig::builder()
            .api_url(entry.api_url.clone())
            .api_key(entry.api_key.clone());
        if let Some(url) = &entry.sandbox_url {
            builder = builder.sandbox_url(url.clone());
        }
        if let Some(domain) = &entry.domain {
            builder = builder.domain(domain.clone());
        }
        let config = builder
            .build()
            .map_err(|e| anyhow::anyhow!("configuring sandbox provider {:?}: {e}", entry.name))?;
        let client = Client::new(config)
            .map_err(|e| anyhow::anyhow!("configuring sandbox provider {:?}: {e}", entry.name))?;
        specs.push(ProviderSpec {
            name: entry.name.clone(),
            api: Arc::new(client),
            capacity: entry.capacity,
            labels: entry.labels.clone(),
        });
    }
    let mut set = ProviderSet::new(specs)?;
    for (template, label) in template_labels {
        set = set.with_template_label(template.clone(), label.clone())?;
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse_toml(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<ProviderEntry>> {
        let table: toml::Table = text.parse().unwrap();
        parse(&table["providers"], "config file /etc/courier.toml", env)
    }

    fn err(text: &str) -> String {
        match parse_toml(text, &no_env) {
            Ok(_) => panic!("{text:?} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn entries_parse_with_every_field() {
        let env = |var: &str| (var == "H2_KEY").then(|| "e2b_from_env".to_owned());
        let entries = parse_toml(
            r#"
[[providers]]
name = "host-1"
api_url = "http://10.0.0.5:3000"
sandbox_url = "http://10.0.0.5:3001"
api_key = "e2b_inline_key"
capacity = 40
labels = ["big", "eu"]

[[providers]]
name = "e2b-cloud"
api_url = "https://api.e2b.app"
api_key_env = "H2_KEY"
domain = "e2b.app"
"#,
            &env,
        )
        .unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].name, "host-1");
        assert_eq!(
            entries[0].sandbox_url.as_deref(),
            Some("http://10.0.0.5:3001")
        );
        assert_eq!(entries[0].api_key.expose(), "e2b_inline_key");
        assert_eq!(entries[0].capacity, Some(40));
        assert_eq!(entries[0].labels, ["big", "eu"]);
        assert_eq!(entries[1].api_key.expose(), "e2b_from_env");
        assert_eq!(entries[1].domain.as_deref(), Some("e2b.app"));
        assert_eq!(entries[1].capacity, None);
        let set = provider_set(&entries, &[("claude".into(), "big".into())]).unwrap();
        assert_eq!(set.names(), ["host-1", "e2b-cloud"]);
    }

    #[test]
    fn bad_entries_are_named() {
        let e = err("[[providers]]\nname = \"Host_1\"\napi_url = \"http://h\"\napi_key = \"k\"");
        assert!(
            e.contains("`providers[0].name`") && e.contains("a-z, 0-9"),
            "{e}"
        );
        let e = err("[[providers]]\nname = \"h1\"\napi_key = \"k\"");
        assert!(e.contains("`providers[0].api_url` is required"), "{e}");
        let e = err("[[providers]]\nname = \"h1\"\napi_url = \"ftp://h\"\napi_key = \"k\"");
        assert!(
            e.contains("`providers[0].api_url`") && e.contains("http://"),
            "{e}"
        );
        let e = err(
            "[[providers]]\nname = \"h1\"\napi_url = \"http://a\"\napi_key = \"k\"\n\
             [[providers]]\nname = \"h1\"\napi_url = \"http://b\"\napi_key = \"k\"",
        );
        assert!(
            e.contains("`providers[1].name`") && e.contains("unique"),
            "{e}"
        );
        let e = err("[[providers]]\nname = \"h1\"\napi_url = \"http://a\"");
        assert!(e.contains("no key") && e.contains("api_key_env"), "{e}");
        let e = err("[[providers]]\nname = \"h1\"\napi_url = \"http://a\"\napi_key_env = \"NOPE\"");
        assert!(e.contains("NOPE") && e.contains("not set"), "{e}");
        let e = err(
            "[[providers]]\nname = \"h1\"\napi_url = \"http://a\"\napi_key = \"k\"\ncapacity = 0",
        );
        assert!(e.contains("`providers[0].capacity`"), "{e}");
        let e = err(
            "[[providers]]\nname = \"h1\"\napi_url = \"http://a\"\napi_key = \"k\"\nlabels = [\"GPU\"]",
        );
        assert!(e.contains("`providers[0].labels`"), "{e}");
        let e = err(
            "[[providers]]\nname = \"h1\"\napi_url = \"http://a\"\napi_key = \"k\"\nregion = \"eu\"",
        );
        assert!(e.contains("unknown key `providers[0].region`"), "{e}");
        let e = err("providers = \"h1\"");
        assert!(e.contains("array of tables"), "{e}");
        let e = err("providers = []");
        assert!(e.contains("empty"), "{e}");
    }

    #[test]
    fn keys_are_never_echoed() {
        // An operator's key in a wrong place must not end up in a log line.
        let e = err("[[providers]]\nname = \"h1\"\napi_url = \"http://a\"\napi_key = 12345678");
        assert!(
            e.contains("`providers[0].api_key`") && !e.contains("12345678"),
            "{e}"
        );
        let e = err(
            "[[providers]]\nname = \"h1\"\napi_url = \"http://a\"\napi_key = \"e2b_hunter2\"\napi_key_env = \"K\"",
        );
        assert!(e.contains("both set") && !e.contains("hunter2"), "{e}");
        let e =
            err("[[providers]]\nname = \"BAD\"\napi_url = \"http://a\"\napi_key = \"e2b_hunter2\"");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn the_environment_form_is_the_same_array_inline() {
        let env = |var: &str| (var == "K").then(|| "e2b_k".to_owned());
        let entries = parse_env(
            r#"[{ name = "h1", api_url = "http://a:3000", api_key_env = "K", capacity = 2 }]"#,
            &env,
        )
        .unwrap();
        assert_eq!(entries[0].capacity, Some(2));
        let e = parse_env("not toml [", &env).err().unwrap().to_string();
        assert!(e.contains("COURIER_PROVIDERS"), "{e}");
        let e = parse_env(r#"[{ name = "h1" }]"#, &env)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("COURIER_PROVIDERS") && e.contains("api_url"),
            "{e}"
        );
    }

    #[test]
    fn template_labels_must_be_carried_by_a_provider() {
        let entries = parse_toml(
            "[[providers]]\nname = \"h1\"\napi_url = \"http://a\"\napi_key = \"k\"\nlabels = [\"big\"]",
            &no_env,
        )
        .unwrap();
        let ok = parse_template_labels(
            [("claude".to_owned(), Some("big".to_owned()))].into_iter(),
            &entries,
        )
        .unwrap();
        assert_eq!(ok, [("claude".to_owned(), "big".to_owned())]);
        let e = parse_template_labels(
            [("claude".to_owned(), Some("gpu".to_owned()))].into_iter(),
            &entries,
        )
        .unwrap_err();
        assert!(e.to_string().contains("\"gpu\""), "{e}");
    }

    #[test]
    fn providers_beside_e2b_settings_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("courier.toml");
        std::fs::write(
            &path,
            "e2b_api_key = \"e2b_secret_value\"\n\
             [[providers]]\nname = \"h1\"\napi_url = \"http://10.0.0.5:3000\"\napi_key = \"e2b_other\"\n",
        )
        .unwrap();
        let e = match crate::config::resolve(crate::config::Overrides {
            config: Some(path),
            ..crate::config::Overrides::default()
        }) {
            Ok(_) => panic!("both were accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains("both `providers`") && e.contains("E2B_API_KEY"),
            "{e}"
        );
        assert!(
            !e.contains("secret_value") && !e.contains("e2b_other"),
            "{e}"
        );
        let inline = r#"[{ name = "h1", api_url = "http://a", api_key = "k" }]"#;
        let e = resolve(Some(inline.into()), None, None, None, true)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("choose one"), "{e}");
        let (providers, _) = resolve(Some(inline.into()), None, None, None, false).unwrap();
        assert_eq!(providers.len(), 1);
        assert!(
            resolve(None, None, Some("claude=big".into()), None, false).is_err(),
            "a template label no provider carries is refused"
        );
    }

    #[test]
    fn providers_in_the_file_are_checked_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("courier.toml");
        std::fs::write(&path, "[[providers]]\nname = \"h1\"\napi_key = \"k\"\n").unwrap();
        let e = match crate::config::resolve(crate::config::Overrides {
            config: Some(path.clone()),
            ..crate::config::Overrides::default()
        }) {
            Ok(_) => panic!("a provider without a URL was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains("`providers[0].api_url` is required") && e.contains("courier.toml"),
            "{e}"
        );
        std::fs::write(
            &path,
            "provider_template_labels = { claude = \"gpu\" }\n\
             [[providers]]\nname = \"h1\"\napi_url = \"http://a\"\napi_key = \"k\"\nlabels = [\"big\"]\n",
        )
        .unwrap();
        let e = match crate::config::resolve(crate::config::Overrides {
            config: Some(path),
            ..crate::config::Overrides::default()
        }) {
            Ok(_) => panic!("a label no provider carries was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains("provider_template_labels") && e.contains("\"gpu\""),
            "{e}"
        );
    }
}
