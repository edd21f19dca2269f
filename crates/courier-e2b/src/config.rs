//! Connection settings: API key, domain, URL overrides, debug mode and timeouts, read from
//! options or from the official E2B environment variables.

use std::{collections::HashMap, time::Duration};

use url::Url;

use crate::{Error, Secret, codec::Codec};

/// The port envd listens on inside every sandbox.
pub const ENVD_PORT: u16 = 49983;
/// The default base domain.
pub const DEFAULT_DOMAIN: &str = "e2b.app";
/// The default request timeout (60 s, as the official SDKs).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How many times an idempotent control-plane call is retried by default.
pub const DEFAULT_MAX_RETRIES: u32 = 3;

/// Domains served by E2B itself: their envd traffic goes to the shared `sandbox.<domain>`
/// host and is routed by the `E2b-Sandbox-Id` / `E2b-Sandbox-Port` headers.
pub const SHARED_HOST_DOMAINS: [&str; 7] = [
    "e2b.app",
    "e2b.dev",
    "e2b.pro",
    "e2b-staging.dev",
    "e2b-tango.dev",
    "e2b-juliett.dev",
    "foxtrot-2.e2b.dev",
];

/// Everything needed to reach the control plane and the sandboxes.
///
/// Build it with [`ConnectionConfig::builder`] or read it from the environment with
/// [`ConnectionConfig::from_env`]. The API key is a [`Secret`]: `Debug` shows `****abcd`.
///
/// ```
/// use std::time::Duration;
/// use courier_e2b::ConnectionConfig;
///
/// let config = ConnectionConfig::builder()
///     .api_key("e2b_0123456789abcdef0123456789abcdef01234567")
///     .domain("example.com")
///     .request_timeout(Duration::from_secs(30))
///     .build()
///     .unwrap();
/// assert_eq!(config.api_url().as_str(), "https://api.example.com/");
/// assert!(!format!("{config:?}").contains("0123456789abcdef01234567"));
/// ```
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    api_key: Option<Secret>,
    domain: String,
    api_url: Url,
    sandbox_url: Option<Url>,
    volume_api_url: Option<Url>,
    debug: bool,
    request_timeout: Duration,
    max_retries: u32,
    codec: Codec,
}

impl ConnectionConfig {
    /// A builder with the defaults (domain `e2b.app`, 60 s timeout, 3 retries, protobuf).
    pub fn builder() -> ConnectionConfigBuilder {
        ConnectionConfigBuilder::default()
    }

    /// Reads `E2B_API_KEY`, `E2B_DOMAIN`, `E2B_API_URL`, `E2B_SANDBOX_URL` and `E2B_DEBUG`
    /// from the process environment.
    ///
    /// ```no_run
    /// let config = courier_e2b::ConnectionConfig::from_env().unwrap();
    /// ```
    pub fn from_env() -> Result<ConnectionConfig, Error> {
        ConnectionConfigBuilder::from_env().build()
    }

    /// The API key, when one is configured.
    pub fn api_key(&self) -> Option<&Secret> {
        self.api_key.as_ref()
    }

    /// The base domain (`e2b.app` by default).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The control-plane base URL.
    pub fn api_url(&self) -> &Url {
        &self.api_url
    }

    /// The volume content API's base URL: the `E2B_VOLUME_API_URL` override, else the
    /// control-plane URL (where courier-sandboxd and E2B, at `https://api.<domain>`,
    /// serve it).
    pub fn volume_api_url(&self) -> &Url {
        self.volume_api_url.as_ref().unwrap_or(&self.api_url)
    }

    /// The envd override (`E2B_SANDBOX_URL`), if set.
    pub fn sandbox_url(&self) -> Option<&Url> {
        self.sandbox_url.as_ref()
    }

    /// Whether debug mode is on (envd on `localhost:49983`, no control-plane calls for
    /// create/connect/kill/set_timeout/metrics).
    pub fn debug(&self) -> bool {
        self.debug
    }

    /// The timeout of one call, retries included.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// How many times an idempotent control-plane call is retried.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// The Connect codec used for envd RPCs.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The envd base URL of a sandbox, following the official SDK's rules: the
    /// `E2B_SANDBOX_URL` override, then debug (`http://localhost:49983`), then the shared
    /// `https://sandbox.<domain>` host for E2B's own domains, else
    /// `https://49983-<id>.<domain>`. `sandbox_domain` is the `domain` the API returned for
    /// the sandbox, if any.
    ///
    /// ```
    /// use courier_e2b::ConnectionConfig;
    /// let config = ConnectionConfig::builder().api_key("k").build().unwrap();
    /// assert_eq!(config.envd_url("abc", None).as_str(), "https://sandbox.e2b.app/");
    /// assert_eq!(config.envd_url("abc", Some("my.cloud")).as_str(), "https://49983-abc.my.cloud/");
    /// ```
    pub fn envd_url(&self, sandbox_id: &str, sandbox_domain: Option<&str>) -> Url {
        if let Some(url) = &self.sandbox_url {
            return url.clone();
        }
        if self.debug {
            return debug_envd_url();
        }
        let domain = sandbox_domain.unwrap_or(&self.domain);
        if SHARED_HOST_DOMAINS.contains(&domain) {
            return parse_url(&format!("https://sandbox.{domain}"));
        }
        self.direct_envd_url(sandbox_id, sandbox_domain)
    }

    /// The direct envd URL used for signed file URLs: the override, debug localhost, or
    /// `https://49983-<id>.<domain>`.
    ///
    /// ```
    /// use courier_e2b::ConnectionConfig;
    /// let config = ConnectionConfig::builder().api_key("k").build().unwrap();
    /// assert_eq!(config.direct_envd_url("abc", None).as_str(), "https://49983-abc.e2b.app/");
    /// ```
    pub fn direct_envd_url(&self, sandbox_id: &str, sandbox_domain: Option<&str>) -> Url {
        if let Some(url) = &self.sandbox_url {
            return url.clone();
        }
        if self.debug {
            return debug_envd_url();
        }
        let domain = sandbox_domain.unwrap_or(&self.domain);
        parse_url(&format!("https://{ENVD_PORT}-{sandbox_id}.{domain}"))
    }

    /// The host serving `port` of a sandbox: `<port>-<id>.<domain>`, or `localhost:<port>`
    /// in debug mode.
    ///
    /// ```
    /// use courier_e2b::ConnectionConfig;
    /// let config = ConnectionConfig::builder().api_key("k").build().unwrap();
    /// assert_eq!(config.host(3000, "abc", None), "3000-abc.e2b.app");
    /// ```
    pub fn host(&self, port: u16, sandbox_id: &str, sandbox_domain: Option<&str>) -> String {
        if self.debug {
            return format!("localhost:{port}");
        }
        let domain = sandbox_domain.unwrap_or(&self.domain);
        format!("{port}-{sandbox_id}.{domain}")
    }
}

fn debug_envd_url() -> Url {
    parse_url(&format!("http://localhost:{ENVD_PORT}"))
}

fn parse_url(text: &str) -> Url {
    // Only called with `https://<host>` strings built from a validated domain.
    Url::parse(text).unwrap_or_else(|_| debug_envd_url())
}

/// Builds a [`ConnectionConfig`]; every setting is optional.
///
/// ```
/// use courier_e2b::{ConnectionConfig, codec::Codec};
/// let config = ConnectionConfig::builder()
///     .api_key("e2b_abc")
///     .api_url("http://127.0.0.1:3000")
///     .sandbox_url("http://127.0.0.1:49983")
///     .codec(Codec::Json)
///     .build()
///     .unwrap();
/// assert_eq!(config.envd_url("abc", None).as_str(), "http://127.0.0.1:49983/");
/// ```
#[derive(Debug, Clone, Default)]
pub struct ConnectionConfigBuilder {
    api_key: Option<Secret>,
    domain: Option<String>,
    api_url: Option<String>,
    sandbox_url: Option<String>,
    volume_api_url: Option<String>,
    debug: bool,
    request_timeout: Option<Duration>,
    max_retries: Option<u32>,
    codec: Codec,
}

impl ConnectionConfigBuilder {
    /// A builder preset from the process environment (see [`ConnectionConfig::from_env`]).
    pub fn from_env() -> ConnectionConfigBuilder {
        let vars: HashMap<String, String> = std::env::vars().collect();
        ConnectionConfigBuilder::from_vars(&vars)
    }

    /// A builder preset from the given variables (same names as the environment), so
    /// tests do not depend on the machine.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use courier_e2b::ConnectionConfigBuilder;
    /// let vars = HashMap::from([("E2B_DEBUG".to_owned(), "TRUE".to_owned())]);
    /// let config = ConnectionConfigBuilder::from_vars(&vars).build().unwrap();
    /// assert!(config.debug());
    /// ```
    pub fn from_vars(vars: &HashMap<String, String>) -> ConnectionConfigBuilder {
        let get = |name: &str| vars.get(name).filter(|v| !v.is_empty()).cloned();
        ConnectionConfigBuilder {
            api_key: get("E2B_API_KEY").map(Secret::new),
            domain: get("E2B_DOMAIN"),
            api_url: get("E2B_API_URL"),
            sandbox_url: get("E2B_SANDBOX_URL"),
            volume_api_url: get("E2B_VOLUME_API_URL"),
            debug: get("E2B_DEBUG").is_some_and(|v| v.eq_ignore_ascii_case("true")),
            ..ConnectionConfigBuilder::default()
        }
    }

    /// The API key, sent as `X-API-Key`.
    pub fn api_key(mut self, key: impl Into<Secret>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The base domain (default `e2b.app`).
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// Overrides the control-plane URL (default `https://api.<domain>`).
    pub fn api_url(mut self, url: impl Into<String>) -> Self {
        self.api_url = Some(url.into());
        self
    }

    /// Sends all envd traffic (and signed file URLs) to this URL, routed by headers.
    pub fn sandbox_url(mut self, url: impl Into<String>) -> Self {
        self.sandbox_url = Some(url.into());
        self
    }

    /// Overrides the volume content API URL (`E2B_VOLUME_API_URL`; default: the
    /// control-plane URL, or `http://localhost:8080` in debug mode, as the official SDK).
    ///
    /// ```
    /// let config = courier_e2b::ConnectionConfig::builder()
    ///     .api_url("http://127.0.0.1:3000")
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(config.volume_api_url().as_str(), "http://127.0.0.1:3000/");
    /// let config = courier_e2b::ConnectionConfig::builder()
    ///     .volume_api_url("http://127.0.0.1:4000")
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(config.volume_api_url().as_str(), "http://127.0.0.1:4000/");
    /// ```
    pub fn volume_api_url(mut self, url: impl Into<String>) -> Self {
        self.volume_api_url = Some(url.into());
        self
    }

    /// Debug mode: envd on `http://localhost:49983`, API default `http://localhost:3000`.
    pub fn debug(mut self, debug: bool) -> Self {
        self.debug = debug;
        self
    }

    /// The timeout of one call, retries included (default 60 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// How many times idempotent control-plane calls are retried (default 3).
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = Some(retries);
        self
    }

    /// The Connect codec for envd RPCs (default [`Codec::Proto`]; [`Codec::Json`] is what
    /// the official SDKs send).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Validates the URLs and domain.
    pub fn build(self) -> Result<ConnectionConfig, Error> {
        let domain = self.domain.unwrap_or_else(|| DEFAULT_DOMAIN.to_owned());
        if domain.is_empty() || domain.contains(['/', ':', ' ']) {
            return Err(Error::InvalidArgument {
                message: format!("domain {domain:?} must be a bare host name such as \"e2b.app\""),
            });
        }
        let api_url = match self.api_url {
            Some(url) => parse_field("api_url", &url)?,
            None if self.debug => parse_field("api_url", "http://localhost:3000")?,
            None => parse_field("api_url", &format!("https://api.{domain}"))?,
        };
        let sandbox_url = self
            .sandbox_url
            .map(|url| parse_field("sandbox_url", &url))
            .transpose()?;
        let volume_api_url = match self.volume_api_url {
            Some(url) => Some(parse_field("volume_api_url", &url)?),
            None if self.debug => Some(parse_field("volume_api_url", "http://localhost:8080")?),
            None => None,
        };
        Ok(ConnectionConfig {
            api_key: self.api_key,
            domain,
            api_url,
            sandbox_url,
            volume_api_url,
            debug: self.debug,
            request_timeout: self.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT),
            max_retries: self.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
            codec: self.codec,
        })
    }
}

fn parse_field(field: &str, value: &str) -> Result<Url, Error> {
    let url = Url::parse(value).map_err(|e| Error::InvalidArgument {
        message: format!("{field} {value:?} is not a valid URL: {e}"),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::InvalidArgument {
            message: format!("{field} {value:?} must use http or https"),
        });
    }
    Ok(url)
}
