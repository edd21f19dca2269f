//! Snapshots, forks and filesystem-only pause on the control plane (`POST
//! /sandboxes/{id}/snapshots`, `GET /snapshots`, `DELETE /templates/{snapshot}`, `POST
//! /sandboxes/{id}/fork`, `POST /sandboxes/{id}/pause` with `memory`).

use futures::stream::BoxStream;
use reqwest::Method;

use super::{Client, pages, segment};
use crate::{
    Error, Result,
    models::{ForkRequest, ForkResult, PauseRequest, SnapshotInfo, SnapshotRequest},
};

/// A paginated stream of snapshots, fetched page by page as it is polled.
pub type SnapshotStream = BoxStream<'static, Result<SnapshotInfo>>;

/// Filters for [`Client::list_snapshots`]: the source sandbox, a name (or id, optionally
/// `:tag`-qualified) and the page size.
///
/// ```
/// let query = courier_e2b::SnapshotQuery::new().sandbox("abc").name("ready").limit(10);
/// assert_eq!(query.to_query_pairs(), [
///     ("sandboxID".to_owned(), "abc".to_owned()),
///     ("name".to_owned(), "ready".to_owned()),
///     ("limit".to_owned(), "10".to_owned()),
/// ]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotQuery {
    /// Only snapshots of this sandbox.
    pub sandbox_id: Option<String>,
    /// Only snapshots answering to this name or id.
    pub name: Option<String>,
    /// Page size (1..=100; the server's default 100).
    pub limit: Option<u32>,
}

impl SnapshotQuery {
    /// No filter.
    pub fn new() -> SnapshotQuery {
        SnapshotQuery::default()
    }

    /// Only snapshots of sandbox `sandbox_id`.
    pub fn sandbox(mut self, sandbox_id: impl Into<String>) -> Self {
        self.sandbox_id = Some(sandbox_id.into());
        self
    }

    /// Only snapshots answering to `name` (a name or an id).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Page size.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The query string pairs, in the API's names.
    pub fn to_query_pairs(&self) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        if let Some(id) = &self.sandbox_id {
            pairs.push(("sandboxID".to_owned(), id.clone()));
        }
        if let Some(name) = &self.name {
            pairs.push(("name".to_owned(), name.clone()));
        }
        if let Some(limit) = self.limit {
            pairs.push(("limit".to_owned(), limit.to_string()));
        }
        pairs
    }
}

/// One page of snapshots; `next_token` is `None` on the last page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPage {
    /// The snapshots of this page, newest first.
    pub snapshots: Vec<SnapshotInfo>,
    /// The token of the next page.
    pub next_token: Option<String>,
}

/// How [`Client::pause_with`] pauses.
///
/// ```
/// let options = courier_e2b::PauseOptions::filesystem_only();
/// assert!(!options.memory);
/// assert!(courier_e2b::PauseOptions::default().memory);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PauseOptions {
    /// Keep memory (the default: the sandbox is frozen and resumes where it was); `false`
    /// keeps only its filesystem: its processes end, its memory is freed and resuming
    /// reboots it from the kept filesystem (same id, same access token).
    pub memory: bool,
}

impl Default for PauseOptions {
    fn default() -> Self {
        PauseOptions { memory: true }
    }
}

impl PauseOptions {
    /// Keep only the filesystem (`memory: false`).
    pub fn filesystem_only() -> PauseOptions {
        PauseOptions { memory: false }
    }
}

impl Client {
    /// Takes a filesystem snapshot of a running or paused sandbox (`POST
    /// /sandboxes/{id}/snapshots`); the sandbox keeps running. A `name` used before
    /// gets the new capture under the same snapshot id. The snapshot id (or name) is a
    /// template new sandboxes start from.
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// let snapshot = client.create_snapshot("abc", Some("ready")).await?;
    /// let copy = courier_e2b::Sandbox::builder()
    ///     .template(snapshot.snapshot_id.clone())
    ///     .create(&client)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_snapshot(
        &self,
        sandbox_id: &str,
        name: Option<&str>,
    ) -> Result<SnapshotInfo> {
        let url = self.endpoint(
            &format!("/sandboxes/{}/snapshots", segment(sandbox_id)),
            &[],
        )?;
        let body = SnapshotRequest {
            name: name.map(str::to_owned),
        };
        // Not retried: a retry could take a second snapshot.
        self.json(Method::POST, url, Some(&body), false).await
    }

    /// One page of [`Client::list_snapshots`].
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// let page = client.list_snapshots_page(&courier_e2b::SnapshotQuery::new().limit(10), None).await?;
    /// # Ok(()) }
    /// ```
    pub async fn list_snapshots_page(
        &self,
        query: &SnapshotQuery,
        next_token: Option<&str>,
    ) -> Result<SnapshotPage> {
        let (snapshots, next_token) = self
            .get_page("/snapshots", query.to_query_pairs(), next_token)
            .await?;
        Ok(SnapshotPage {
            snapshots,
            next_token,
        })
    }

    /// The API key's snapshots as a stream fetching pages lazily (`GET /snapshots`,
    /// following `X-Next-Token`), newest first.
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// use futures::TryStreamExt;
    /// let mine: Vec<_> = client
    ///     .list_snapshots(courier_e2b::SnapshotQuery::new().sandbox("abc"))
    ///     .try_collect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn list_snapshots(&self, query: SnapshotQuery) -> SnapshotStream {
        let client = self.clone();
        pages::all_pages(move |token| {
            let (client, query) = (client.clone(), query.clone());
            async move {
                let page = client.list_snapshots_page(&query, token.as_deref()).await?;
                Ok((page.snapshots, page.next_token))
            }
        })
    }

    /// Deletes a snapshot (`DELETE /templates/{id}`, as E2B's SDKs do): `false` when
    /// there was none (or it is another API key's). Sandboxes started from it keep
    /// running.
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// let deleted = client.delete_snapshot("snap_0123456789abcdef").await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete_snapshot(&self, snapshot_id: &str) -> Result<bool> {
        let url = self.endpoint(&format!("/templates/{}", segment(snapshot_id)), &[])?;
        match self.send(Method::DELETE, url, None::<&()>, true).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Forks a sandbox (`POST /sandboxes/{id}/fork`): `count` (1..=100) new running
    /// sandboxes with a copy of its filesystem, each living `timeout` (server default
    /// 300 s). One result per fork: each starts or fails on its own.
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// use courier_e2b::models::ForkRequest;
    /// let results = client.fork("abc", &ForkRequest { count: Some(2), timeout: Some(600) }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn fork(&self, sandbox_id: &str, request: &ForkRequest) -> Result<Vec<ForkResult>> {
        if request.count == Some(0) {
            return Err(Error::InvalidArgument {
                message: "count must be at least 1".to_owned(),
            });
        }
        let url = self.endpoint(&format!("/sandboxes/{}/fork", segment(sandbox_id)), &[])?;
        // Not retried: a retry could make more forks.
        self.json(Method::POST, url, Some(request), false).await
    }

    /// Pauses a sandbox as `options` say (`POST /sandboxes/{id}/pause`): `false` when it
    /// was already paused. [`PauseOptions::filesystem_only`] ends its processes and
    /// frees its memory; connecting reboots it from its filesystem.
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// client.pause_with("abc", courier_e2b::PauseOptions::filesystem_only()).await?;
    /// let record = client.connect_sandbox("abc", None).await?; // reboots it
    /// # Ok(()) }
    /// ```
    pub async fn pause_with(&self, sandbox_id: &str, options: PauseOptions) -> Result<bool> {
        let url = self.endpoint(&format!("/sandboxes/{}/pause", segment(sandbox_id)), &[])?;
        let body = PauseRequest {
            memory: (!options.memory).then_some(false),
        };
        match self.send(Method::POST, url, Some(&body), true).await {
            Ok(_) => Ok(true),
            Err(Error::Api { status: 409, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
