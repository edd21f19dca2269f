//! Volumes: persistent storage of an API key, mounted into sandboxes
//! ([`SandboxBuilder::volume_mount`](crate::SandboxBuilder::volume_mount)) and read and
//! written from outside through the volume content API (`/volumecontent/{id}/...`,
//! authorised by the volume's own token), as the official SDKs' `Volume`.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, TryStreamExt as _};
use reqwest::Method;
use serde::de::DeserializeOwned;
use url::Url;

use crate::models::{VolumeAndToken, VolumeEntryStat, VolumeInfo};
use crate::{Client, Error, NotFoundKind, Result, Secret};

/// How long a file transfer may take (the official SDK's `FILE_TIMEOUT`): the request
/// timeout would cut large files off.
pub const VOLUME_FILE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Ownership, mode and `force` of a created entry ([`Volume::make_dir`],
/// [`Volume::write_file`]) or of an update ([`Volume::update_metadata`], where `force`
/// is ignored). Unset fields are the server's defaults (courier-sandboxd: the sandbox
/// user 1000:1000, E2B's modes `0o777` for directories and `0o666` for files).
///
/// ```
/// use courier_e2b::VolumeEntryOptions;
/// let options = VolumeEntryOptions { mode: Some(0o600), force: true, ..Default::default() };
/// assert_eq!(options.uid, None);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VolumeEntryOptions {
    /// Owner uid.
    pub uid: Option<u32>,
    /// Owner gid.
    pub gid: Option<u32>,
    /// Permission bits.
    pub mode: Option<u32>,
    /// Make missing parent directories; an existing directory (make_dir) is not an error
    /// and an existing file (write_file) is replaced. Without it both are refused.
    pub force: bool,
}

impl VolumeEntryOptions {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if let Some(uid) = self.uid {
            pairs.push(("uid", uid.to_string()));
        }
        if let Some(gid) = self.gid {
            pairs.push(("gid", gid.to_string()));
        }
        if let Some(mode) = self.mode {
            pairs.push(("mode", mode.to_string()));
        }
        if self.force {
            pairs.push(("force", "true".to_owned()));
        }
        pairs
    }
}

/// A volume: its id, name and content token, and the content operations.
///
/// ```no_run
/// # async fn demo() -> courier_e2b::Result<()> {
/// use courier_e2b::{Client, Sandbox, Volume, VolumeEntryOptions};
///
/// let client = Client::from_env()?;
/// let volume = Volume::create(&client, "datasets").await?;
/// volume
///     .write_file("/raw/a.csv", "x,y\n1,2\n", VolumeEntryOptions { force: true, ..Default::default() })
///     .await?;
///
/// // Mounted in a sandbox, owned by its user.
/// let sandbox = Sandbox::builder().volume_mount("/data", volume.name()).create(&client).await?;
/// let out = sandbox.commands().run("wc -l /data/raw/a.csv").await?;
/// assert_eq!(out.stdout, "2 /data/raw/a.csv\n");
///
/// // What the sandbox writes stays in the volume.
/// sandbox.commands().run("echo done > /data/status").await?;
/// sandbox.kill().await?;
/// assert_eq!(volume.read_text("/status").await?, "done\n");
/// Volume::destroy(&client, volume.id()).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Volume {
    client: Client,
    volume_id: String,
    name: String,
    token: Secret,
}

impl fmt::Debug for Volume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Volume")
            .field("volume_id", &self.volume_id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Volume {
    /// Creates volume `name` (`^[a-zA-Z0-9_-]+$`, unique per API key).
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// let volume = courier_e2b::Volume::create(&client, "data").await?;
    /// # Ok(()) }
    /// ```
    pub async fn create(client: &Client, name: &str) -> Result<Volume> {
        let created = client.create_volume(name).await?;
        Ok(Volume::from_parts(client, created))
    }

    /// Connects to an existing volume by id (fetching its name and token).
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// let volume = courier_e2b::Volume::connect(&client, "volume-id").await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(client: &Client, volume_id: &str) -> Result<Volume> {
        let found = client.get_volume(volume_id).await?;
        Ok(Volume::from_parts(client, found))
    }

    /// A volume from what the API returned (e.g. [`Client::get_volume`]).
    pub fn from_parts(client: &Client, volume: VolumeAndToken) -> Volume {
        Volume {
            client: client.clone(),
            volume_id: volume.volume_id,
            name: volume.name,
            token: volume.token,
        }
    }

    /// The API key's volumes.
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// let names: Vec<String> = courier_e2b::Volume::list(&client).await?.into_iter().map(|v| v.name).collect();
    /// # Ok(()) }
    /// ```
    pub async fn list(client: &Client) -> Result<Vec<VolumeInfo>> {
        client.list_volumes().await
    }

    /// A volume's id, name and token (the official SDK's class-level `get_info`).
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// let info = courier_e2b::Volume::info(&client, "volume-id").await?;
    /// # Ok(()) }
    /// ```
    pub async fn info(client: &Client, volume_id: &str) -> Result<VolumeAndToken> {
        client.get_volume(volume_id).await
    }

    /// Deletes a volume and its content: `false` when it did not exist.
    ///
    /// ```no_run
    /// # async fn demo(client: courier_e2b::Client) -> courier_e2b::Result<()> {
    /// let deleted = courier_e2b::Volume::destroy(&client, "volume-id").await?;
    /// # Ok(()) }
    /// ```
    pub async fn destroy(client: &Client, volume_id: &str) -> Result<bool> {
        client.delete_volume(volume_id).await
    }

    /// Its id.
    pub fn id(&self) -> &str {
        &self.volume_id
    }

    /// Its name (what [`SandboxBuilder::volume_mount`](crate::SandboxBuilder::volume_mount)
    /// takes).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The content API token (sent as `Authorization: Bearer`).
    pub fn token(&self) -> &Secret {
        &self.token
    }

    /// Makes a directory (with `force`, its parents too, and an existing one is fine).
    ///
    /// ```no_run
    /// # async fn demo(volume: courier_e2b::Volume) -> courier_e2b::Result<()> {
    /// use courier_e2b::VolumeEntryOptions;
    /// let dir = volume.make_dir("/a/b", VolumeEntryOptions { force: true, ..Default::default() }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn make_dir(
        &self,
        path: &str,
        options: VolumeEntryOptions,
    ) -> Result<VolumeEntryStat> {
        let url = self.url("dir", path, &options.query())?;
        self.json(self.request(Method::POST, url, None)).await
    }

    /// Whether something exists at `path`.
    ///
    /// ```no_run
    /// # async fn demo(volume: courier_e2b::Volume) -> courier_e2b::Result<()> {
    /// if !volume.exists("/config.json").await? { /* ... */ }
    /// # Ok(()) }
    /// ```
    pub async fn exists(&self, path: &str) -> Result<bool> {
        match self.get_info(path).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The entry at `path` (a symlink is reported as one, with its target).
    ///
    /// ```no_run
    /// # async fn demo(volume: courier_e2b::Volume) -> courier_e2b::Result<()> {
    /// let size = volume.get_info("/a.csv").await?.size;
    /// # Ok(()) }
    /// ```
    pub async fn get_info(&self, path: &str) -> Result<VolumeEntryStat> {
        let url = self.url("path", path, &[])?;
        self.json(self.request(Method::GET, url, None)).await
    }

    /// The entries of directory `path`, `depth` levels deep (1..=10; default 1).
    ///
    /// ```no_run
    /// # async fn demo(volume: courier_e2b::Volume) -> courier_e2b::Result<()> {
    /// for entry in volume.list_dir("/", Some(2)).await? {
    ///     println!("{} {:?}", entry.path, entry.kind);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_dir(&self, path: &str, depth: Option<u32>) -> Result<Vec<VolumeEntryStat>> {
        let mut query = Vec::new();
        if let Some(depth) = depth {
            query.push(("depth", depth.to_string()));
        }
        let url = self.url("dir", path, &query)?;
        self.json(self.request(Method::GET, url, None)).await
    }

    /// Sets the owner and/or mode of `path` (`options.force` is ignored).
    ///
    /// ```no_run
    /// # async fn demo(volume: courier_e2b::Volume) -> courier_e2b::Result<()> {
    /// use courier_e2b::VolumeEntryOptions;
    /// volume.update_metadata("/a.csv", VolumeEntryOptions { mode: Some(0o600), ..Default::default() }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn update_metadata(
        &self,
        path: &str,
        options: VolumeEntryOptions,
    ) -> Result<VolumeEntryStat> {
        let url = self.url("path", path, &[])?;
        let body =
            serde_json::json!({"uid": options.uid, "gid": options.gid, "mode": options.mode});
        let request = self
            .request(Method::PATCH, url, None)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        self.json(request).await
    }

    /// Reads a whole file.
    ///
    /// ```no_run
    /// # async fn demo(volume: courier_e2b::Volume) -> courier_e2b::Result<()> {
    /// let bytes = volume.read_file("/model.bin").await?;
    /// # Ok(()) }
    /// ```
    pub async fn read_file(&self, path: &str) -> Result<Bytes> {
        let response = self.file_response(path).await?;
        response.bytes().await.map_err(Error::from_reqwest)
    }

    /// Reads a whole file as UTF-8 text.
    ///
    /// ```no_run
    /// # async fn demo(volume: courier_e2b::Volume) -> courier_e2b::Result<()> {
    /// let text = volume.read_text("/notes.md").await?;
    /// # Ok(()) }
    /// ```
    pub async fn read_text(&self, path: &str) -> Result<String> {
        let bytes = self.read_file(path).await?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| Error::protocol(format!("{path} is not UTF-8: {e}")))
    }

    /// Streams a file chunk by chunk (nothing buffered whole).
    ///
    /// ```no_run
    /// # async fn demo(volume: courier_e2b::Volume) -> courier_e2b::Result<()> {
    /// use futures::TryStreamExt;
    /// let mut stream = std::pin::pin!(volume.read_stream("/big.bin").await?);
    /// while let Some(chunk) = stream.try_next().await? {
    ///     println!("{} bytes", chunk.len());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn read_stream(
        &self,
        path: &str,
    ) -> Result<impl Stream<Item = Result<Bytes>> + use<>> {
        let response = self.file_response(path).await?;
        Ok(response.bytes_stream().map_err(Error::from_reqwest))
    }

    /// Writes a file: without `options.force` its parent must exist and the file must
    /// not; with it parents are made and an existing file is replaced. `data` may be a
    /// stream ([`reqwest::Body::wrap_stream`]) for large files. A volume past its size
    /// answers [`Error::Api`] with status 507 on courier-sandboxd, and nothing is left.
    ///
    /// ```no_run
    /// # async fn demo(volume: courier_e2b::Volume) -> courier_e2b::Result<()> {
    /// use courier_e2b::VolumeEntryOptions;
    /// let stat = volume
    ///     .write_file("/out/result.json", "{}", VolumeEntryOptions { force: true, ..Default::default() })
    ///     .await?;
    /// assert_eq!(stat.size, 2);
    /// # Ok(()) }
    /// ```
    pub async fn write_file(
        &self,
        path: &str,
        data: impl Into<reqwest::Body>,
        options: VolumeEntryOptions,
    ) -> Result<VolumeEntryStat> {
        let url = self.url("file", path, &options.query())?;
        let request = self
            .request(Method::PUT, url, Some(VOLUME_FILE_TIMEOUT))
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .body(data);
        self.json(request).await
    }

    /// Removes a file, or a directory with everything in it (a symlink is removed, not
    /// followed).
    ///
    /// ```no_run
    /// # async fn demo(volume: courier_e2b::Volume) -> courier_e2b::Result<()> {
    /// volume.remove("/tmp").await?;
    /// # Ok(()) }
    /// ```
    pub async fn remove(&self, path: &str) -> Result<()> {
        let url = self.url("path", path, &[])?;
        self.send(self.request(Method::DELETE, url, None))
            .await
            .map(drop)
    }

    fn url(&self, resource: &str, path: &str, query: &[(&str, String)]) -> Result<Url> {
        let base = self
            .client
            .config()
            .volume_api_url()
            .as_str()
            .trim_end_matches('/');
        let id = percent_encoding::utf8_percent_encode(&self.volume_id, crate::STRICT);
        let mut url =
            Url::parse(&format!("{base}/volumecontent/{id}/{resource}")).map_err(|e| {
                Error::InvalidArgument {
                    message: format!("bad volume API URL: {e}"),
                }
            })?;
        url.query_pairs_mut()
            .append_pair("path", path)
            .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        Ok(url)
    }

    fn request(
        &self,
        method: Method,
        url: Url,
        timeout: Option<Duration>,
    ) -> reqwest::RequestBuilder {
        self.client
            .http()
            .request(method, url)
            .bearer_auth(self.token.expose())
            .timeout(timeout.unwrap_or(self.client.config().request_timeout()))
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let response = request.send().await.map_err(Error::from_reqwest)?;
        let status = response.status().as_u16();
        if status >= 300 {
            let body = response.bytes().await.map_err(Error::from_reqwest)?;
            return Err(Error::from_envd_http(status, &body, NotFoundKind::Volume));
        }
        Ok(response)
    }

    async fn json<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T> {
        let bytes = self
            .send(request)
            .await?
            .bytes()
            .await
            .map_err(Error::from_reqwest)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::protocol(format!("unexpected volume API response: {e}")))
    }

    async fn file_response(&self, path: &str) -> Result<reqwest::Response> {
        let url = self.url("file", path, &[])?;
        self.send(self.request(Method::GET, url, Some(VOLUME_FILE_TIMEOUT)))
            .await
    }
}
