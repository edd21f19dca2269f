//! The control-plane client: create, connect, list, inspect, time out, pause and kill
//! sandboxes over the E2B REST API, with the official SDKs' retry rules.

mod life;
mod pages;
mod query;
mod retry;
mod snapshots;
mod templates;
mod volumes;

use std::{fmt, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use reqwest::Method;
use serde::{Serialize, de::DeserializeOwned};
use url::Url;

pub use crate::models;
pub use life::{IDEMPOTENCY_KEY_HEADER, LogsQuery};
pub use query::{SandboxPage, SandboxQuery, SortOrder};
pub use snapshots::{PauseOptions, SnapshotPage, SnapshotQuery, SnapshotStream};
pub use templates::{DEFAULT_BUILD_POLL_INTERVAL, Templates};

use crate::{
    ConnectionConfig, Error, Result,
    models::{ListedSandbox, NewSandbox, SandboxDetail, SandboxMetric, SandboxRecord},
};

/// The sandbox id debug mode reports for created sandboxes (as the official SDK).
pub const DEBUG_SANDBOX_ID: &str = "debug_sandbox_id";
/// The envd version debug mode assumes (all features on).
pub const DEBUG_ENVD_VERSION: &str = "99.99.99";

/// A paginated stream of sandboxes, fetched page by page as it is polled.
pub type SandboxStream = BoxStream<'static, Result<ListedSandbox>>;

/// The E2B client: holds the configuration and the HTTP connection pools. Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> courier_e2b::Result<()> {
/// use courier_e2b::Client;
/// let client = Client::from_env()?;
/// let info = client.get_info("sandbox-id").await?;
/// println!("{} ends at {}", info.sandbox_id, info.end_at);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    config: ConnectionConfig,
    http: reqwest::Client,
    http1: reqwest::Client,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

const USER_AGENT: &str = concat!("courier-e2b/", env!("CARGO_PKG_VERSION"));

impl Client {
    /// A client for this configuration.
    ///
    /// ```
    /// use courier_e2b::{Client, ConnectionConfig};
    /// let client = Client::new(ConnectionConfig::builder().api_key("e2b_x").build().unwrap()).unwrap();
    /// assert_eq!(client.config().domain(), "e2b.app");
    /// ```
    pub fn new(config: ConnectionConfig) -> Result<Client> {
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(config.request_timeout())
            .build()
            .map_err(Error::Transport)?;
        // Downloads go over HTTP/1.1: E2B's edge pads them with empty HTTP/2 DATA frames
        // that trip h2's flood protection.
        let http1 = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(config.request_timeout())
            .http1_only()
            .build()
            .map_err(Error::Transport)?;
        Ok(Client {
            inner: Arc::new(ClientInner {
                config,
                http,
                http1,
            }),
        })
    }

    /// A client configured from the `E2B_*` environment variables.
    ///
    /// ```no_run
    /// let client = courier_e2b::Client::from_env().unwrap();
    /// ```
    pub fn from_env() -> Result<Client> {
        Client::new(ConnectionConfig::from_env()?)
    }

    /// The configuration.
    pub fn config(&self) -> &ConnectionConfig {
        &self.inner.config
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    pub(crate) fn http1(&self) -> &reqwest::Client {
        &self.inner.http1
    }

    /// Creates a sandbox (`POST /v2/sandboxes`). Never retried: a retry could create a
    /// second sandbox. Prefer [`Sandbox::builder`](crate::Sandbox::builder).
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// use courier_e2b::models::NewSandbox;
    /// let record = client
    ///     .create_sandbox(&NewSandbox { template_id: "base".into(), ..Default::default() })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_sandbox(&self, body: &NewSandbox) -> Result<SandboxRecord> {
        if self.config().debug() {
            return Ok(debug_record(DEBUG_SANDBOX_ID, &body.template_id));
        }
        let url = self.endpoint("/v2/sandboxes", &[])?;
        self.json(Method::POST, url, Some(body), false).await
    }

    /// Connects to (and resumes, if paused) a sandbox (`POST /v2/sandboxes/{id}/connect`).
    /// `timeout` only ever extends the sandbox's life. Prefer
    /// [`Sandbox::connect`](crate::Sandbox::connect).
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// let record = client.connect_sandbox("abc", Some(std::time::Duration::from_secs(300))).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_sandbox(
        &self,
        sandbox_id: &str,
        timeout: Option<Duration>,
    ) -> Result<SandboxRecord> {
        if self.config().debug() {
            return Ok(debug_record(sandbox_id, "debug"));
        }
        #[derive(Serialize)]
        struct Body {
            #[serde(skip_serializing_if = "Option::is_none")]
            timeout: Option<u64>,
        }
        let url = self.endpoint(
            &format!("/v2/sandboxes/{}/connect", segment(sandbox_id)),
            &[],
        )?;
        let body = Body {
            timeout: timeout.map(ceil_secs),
        };
        self.json(Method::POST, url, Some(&body), true).await
    }

    /// Lists sandboxes as a stream that fetches pages lazily (`GET /v2/sandboxes`,
    /// following `X-Next-Token`).
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// use futures::TryStreamExt;
    /// use courier_e2b::{SandboxQuery, models::SandboxState};
    /// let running: Vec<_> = client
    ///     .list(SandboxQuery::new().state(SandboxState::Running).metadata("project", "p1"))
    ///     .try_collect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn list(&self, query: SandboxQuery) -> SandboxStream {
        let client = self.clone();
        pages::all_pages(move |token| {
            let (client, query) = (client.clone(), query.clone());
            async move {
                let page = client.list_page(&query, token.as_deref()).await?;
                Ok((page.sandboxes, page.next_token))
            }
        })
    }

    /// One page of [`Client::list`]; `next_token` is `None` on the last page.
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// let page = client.list_page(&courier_e2b::SandboxQuery::new().limit(10), None).await?;
    /// # Ok(()) }
    /// ```
    pub async fn list_page(
        &self,
        query: &SandboxQuery,
        next_token: Option<&str>,
    ) -> Result<SandboxPage> {
        let (sandboxes, next_token) = self
            .get_page("/v2/sandboxes", query.to_query_pairs()?, next_token)
            .await?;
        Ok(SandboxPage {
            sandboxes,
            next_token,
        })
    }

    /// Everything about one sandbox (`GET /sandboxes/{id}`); unknown id →
    /// [`Error::NotFound`].
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// let info = client.get_info("abc").await?;
    /// # Ok(()) }
    /// ```
    pub async fn get_info(&self, sandbox_id: &str) -> Result<SandboxDetail> {
        let url = self.endpoint(&format!("/sandboxes/{}", segment(sandbox_id)), &[])?;
        self.json(Method::GET, url, None::<&()>, true).await
    }

    /// Kills a sandbox (`DELETE /sandboxes/{id}`): `false` when it did not exist. A no-op
    /// returning `true` in debug mode.
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// let killed = client.kill("abc").await?;
    /// # Ok(()) }
    /// ```
    pub async fn kill(&self, sandbox_id: &str) -> Result<bool> {
        if self.config().debug() {
            return Ok(true);
        }
        let url = self.endpoint(&format!("/sandboxes/{}", segment(sandbox_id)), &[])?;
        match self.send(Method::DELETE, url, None::<&()>, true).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sets the sandbox to end `timeout` from now (may shorten it); whole seconds, rounded
    /// up. A no-op in debug mode.
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// client.set_timeout("abc", std::time::Duration::from_secs(600)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_timeout(&self, sandbox_id: &str, timeout: Duration) -> Result<()> {
        if self.config().debug() {
            return Ok(());
        }
        let url = self.endpoint(&format!("/sandboxes/{}/timeout", segment(sandbox_id)), &[])?;
        let body = serde_json::json!({ "timeout": ceil_secs(timeout) });
        self.send(Method::POST, url, Some(&body), true)
            .await
            .map(drop)
    }

    /// Replaces a sandbox's egress rules (`PUT /sandboxes/{id}/network`): `allowOut`,
    /// `denyOut` and the per-host transform `rules` all at once; what `update` leaves
    /// out is cleared. Established connections keep going; new ones follow the rules.
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// use courier_e2b::models::{NetworkRule, NetworkUpdate};
    /// let update = NetworkUpdate {
    ///     allow_out: Some(vec!["10.0.0.7".into()]),
    ///     deny_out: Some(vec!["0.0.0.0/0".into()]),
    ///     rules: Some([("10.0.0.7".to_owned(), vec![NetworkRule::set_headers([("X-Proof", "p")])])].into()),
    ///     ..Default::default()
    /// };
    /// client.update_network("abc", &update).await?;
    /// # Ok(()) }
    /// ```
    pub async fn update_network(
        &self,
        sandbox_id: &str,
        update: &crate::models::NetworkUpdate,
    ) -> Result<()> {
        let url = self.endpoint(&format!("/sandboxes/{}/network", segment(sandbox_id)), &[])?;
        self.send(Method::PUT, url, Some(update), true)
            .await
            .map(drop)
    }

    /// Pauses a sandbox (`POST /sandboxes/{id}/pause`): `false` when it was already paused.
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// let paused = client.pause("abc").await?;
    /// # Ok(()) }
    /// ```
    pub async fn pause(&self, sandbox_id: &str) -> Result<bool> {
        let url = self.endpoint(&format!("/sandboxes/{}/pause", segment(sandbox_id)), &[])?;
        match self
            .send(Method::POST, url, Some(&serde_json::json!({})), true)
            .await
        {
            Ok(_) => Ok(true),
            Err(Error::Api { status: 409, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Keeps a sandbox alive for `duration` more (0–3600 s, `POST /sandboxes/{id}/refreshes`).
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// client.refresh("abc", std::time::Duration::from_secs(60)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn refresh(&self, sandbox_id: &str, duration: Duration) -> Result<()> {
        let secs = ceil_secs(duration);
        if secs > 3600 {
            return Err(Error::InvalidArgument {
                message: format!("refresh duration {secs} s is out of range 0..=3600 s"),
            });
        }
        let url = self.endpoint(
            &format!("/sandboxes/{}/refreshes", segment(sandbox_id)),
            &[],
        )?;
        let body = serde_json::json!({ "duration": secs });
        self.send(Method::POST, url, Some(&body), true)
            .await
            .map(drop)
    }

    /// Resource samples between `start` and `end` (`GET /sandboxes/{id}/metrics`, unix
    /// seconds). Empty in debug mode.
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// let samples = client.metrics("abc", None, None).await?;
    /// # Ok(()) }
    /// ```
    pub async fn metrics(
        &self,
        sandbox_id: &str,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
    ) -> Result<Vec<SandboxMetric>> {
        if self.config().debug() {
            return Ok(Vec::new());
        }
        let mut pairs = Vec::new();
        if let Some(start) = start {
            pairs.push(("start".to_owned(), start.timestamp().to_string()));
        }
        if let Some(end) = end {
            pairs.push(("end".to_owned(), end.timestamp().to_string()));
        }
        let url = self.endpoint(
            &format!("/sandboxes/{}/metrics", segment(sandbox_id)),
            &pairs,
        )?;
        self.json(Method::GET, url, None::<&()>, true).await
    }

    fn endpoint(&self, path: &str, query: &[(String, String)]) -> Result<Url> {
        let base = self.config().api_url().as_str().trim_end_matches('/');
        let mut url = Url::parse(&format!("{base}{path}")).map_err(|e| Error::InvalidArgument {
            message: format!("bad API URL for {path}: {e}"),
        })?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    async fn json<B: Serialize + ?Sized + Sync, T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
        retry: bool,
    ) -> Result<T> {
        read_json(self.send(method, url, body, retry).await?).await
    }

    async fn send<B: Serialize + ?Sized + Sync>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
        retry: bool,
    ) -> Result<reqwest::Response> {
        self.send_with(method, url, body, retry, &[]).await
    }

    /// [`send`](Self::send) with extra request headers.
    async fn send_with<B: Serialize + ?Sized + Sync>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
        retry: bool,
        headers: &[(&str, &str)],
    ) -> Result<reqwest::Response> {
        let Some(key) = self.config().api_key() else {
            return Err(Error::Authentication {
                message: "no API key: set E2B_API_KEY or ConnectionConfig::builder().api_key(..)"
                    .to_owned(),
            });
        };
        let body =
            body.map(serde_json::to_vec)
                .transpose()
                .map_err(|e| Error::InvalidArgument {
                    message: format!("request body does not serialize: {e}"),
                })?;
        let policy = retry::Policy {
            max_retries: if retry {
                self.config().max_retries()
            } else {
                0
            },
            timeout: self.config().request_timeout(),
        };
        policy
            .run(|remaining| {
                let mut request = self
                    .http()
                    .request(method.clone(), url.clone())
                    .header("X-API-Key", key.expose())
                    .timeout(remaining);
                for (name, value) in headers {
                    request = request.header(*name, *value);
                }
                if let Some(body) = &body {
                    request = request
                        .header(http::header::CONTENT_TYPE, "application/json")
                        .body(body.clone());
                }
                request
            })
            .await
    }
}

async fn read_json<T: DeserializeOwned>(response: reqwest::Response) -> Result<T> {
    let bytes = response.bytes().await.map_err(Error::from_reqwest)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::protocol(format!("unexpected API response: {e}")))
}

fn debug_record(sandbox_id: &str, template_id: &str) -> SandboxRecord {
    SandboxRecord {
        template_id: template_id.to_owned(),
        sandbox_id: sandbox_id.to_owned(),
        client_id: String::new(),
        envd_version: DEBUG_ENVD_VERSION.to_owned(),
        alias: None,
        envd_access_token: None,
        traffic_access_token: None,
        domain: None,
    }
}

/// Whole seconds, rounded up (as the JS SDK converts milliseconds).
pub(crate) fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// Percent-encodes one path segment.
fn segment(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, crate::STRICT).to_string()
}
