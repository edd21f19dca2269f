//! Files: read and write over envd's plain-HTTP `/files`, and stat, list, make dir,
//! rename, remove and watch over `filesystem.Filesystem`.

use std::{
    collections::HashMap,
    fmt,
    io::{Read, Write},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt, stream::BoxStream};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use url::Url;

mod watch;

pub use watch::{WatchDir, WatchEvent, WatchEventKind, WatchHandle};

use super::rpc::{CallOptions, Envd};
use crate::{Error, NotFoundKind, Result, Secret, proto::filesystem as pb};

/// A stream of file content chunks.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// What kind of file system entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link (newer envd reports it; older ones report the target's kind).
    Symlink,
}

/// A file or directory, as `Stat`/`ListDir` report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    /// The base name.
    pub name: String,
    /// File, directory or symlink.
    pub kind: FileKind,
    /// The path (absolute, or with the requested prefix for listings).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits (`0o644`).
    pub mode: u32,
    /// `-rw-r--r--` style permissions.
    pub permissions: String,
    /// Owner user name.
    pub owner: String,
    /// Owner group name.
    pub group: String,
    /// Last modification.
    pub modified_time: Option<DateTime<Utc>>,
    /// For symlinks, the resolved target.
    pub symlink_target: Option<String>,
    /// User metadata set at upload (`X-Metadata-*`).
    pub metadata: HashMap<String, String>,
}

impl EntryInfo {
    fn from_proto(entry: pb::EntryInfo) -> Option<EntryInfo> {
        let kind = if entry.is_symlink {
            FileKind::Symlink
        } else {
            match pb::FileType::try_from(entry.r#type).ok()? {
                pb::FileType::File => FileKind::File,
                pb::FileType::Directory => FileKind::Directory,
                pb::FileType::Symlink => FileKind::Symlink,
                pb::FileType::Unspecified => return None,
            }
        };
        let modified_time = entry
            .modified_time
            .and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)));
        Some(EntryInfo {
            name: entry.name,
            kind,
            path: entry.path,
            size: u64::try_from(entry.size).unwrap_or(0),
            mode: entry.mode,
            permissions: entry.permissions,
            owner: entry.owner,
            group: entry.group,
            modified_time,
            symlink_target: entry.symlink_target,
            metadata: entry.metadata,
        })
    }

    fn require(entry: Option<pb::EntryInfo>) -> Result<EntryInfo> {
        entry
            .and_then(EntryInfo::from_proto)
            .ok_or_else(|| Error::protocol("response without a valid entry"))
    }
}

/// What `POST /files` reports for each written file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WriteInfo {
    /// The absolute path written.
    pub path: String,
    /// The base name.
    pub name: String,
    /// `file`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// The metadata stored with the file.
    #[serde(default)]
    pub metadata: Option<HashMap<String, String>>,
}

/// How [`Files::write_with`] and [`Files::write_many_with`] upload.
///
/// ```
/// use courier_e2b::envd::WriteOptions;
/// let options = WriteOptions::new()
///     .metadata("author", "ci")
///     .metadata("purpose", "report")
///     .gzip(true);
/// assert_eq!(options.metadata_map().len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOptions {
    metadata: std::collections::BTreeMap<String, String>,
    gzip: bool,
    octet_stream: bool,
}

impl WriteOptions {
    /// Plain multipart uploads without metadata (what [`Files::write`] does).
    pub fn new() -> WriteOptions {
        WriteOptions::default()
    }

    /// Metadata stored with every written file (as `user.e2b.<key>` extended attributes
    /// by envd, sent as `X-Metadata-<key>` headers) and surfaced by
    /// [`Files::get_info`] and [`Files::list`]. Keys are HTTP token characters (envd
    /// lowercases them), values printable ASCII; envd allows 4096 bytes in all.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> WriteOptions {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The metadata set so far.
    pub fn metadata_map(&self) -> &std::collections::BTreeMap<String, String> {
        &self.metadata
    }

    /// Compresses each file's body with gzip (`Content-Encoding: gzip`, one
    /// `application/octet-stream` request per file, as the E2B SDKs do).
    pub fn gzip(mut self, on: bool) -> WriteOptions {
        self.gzip = on;
        self
    }

    /// Sends each file as its own `application/octet-stream` request instead of one
    /// multipart form (implied by [`gzip`](Self::gzip)).
    pub fn octet_stream(mut self, on: bool) -> WriteOptions {
        self.octet_stream = on;
        self
    }

    /// Checks the metadata the way the E2B SDKs do before anything is sent.
    fn validate(&self) -> Result<()> {
        const TOKEN_PUNCT: &[u8] = b"!#$%&'*+-.^_`|~";
        for (key, value) in &self.metadata {
            let key_ok = !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || TOKEN_PUNCT.contains(&b));
            if !key_ok {
                return Err(Error::InvalidArgument {
                    message: format!(
                        "metadata key {key:?}: keys must be non-empty and use only HTTP token \
                         characters (letters, digits and !#$%&'*+-.^_`|~)"
                    ),
                });
            }
            if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                return Err(Error::InvalidArgument {
                    message: format!(
                        "metadata value of key {key:?}: values must be printable US-ASCII"
                    ),
                });
            }
        }
        Ok(())
    }

    fn headers(&self, mut request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        for (key, value) in &self.metadata {
            request = request.header(format!("X-Metadata-{key}"), value.as_str());
        }
        request
    }
}

/// File operations in a sandbox. Get one from [`Sandbox::files`](crate::Sandbox::files);
/// relative paths resolve against the user's home directory.
///
/// ```no_run
/// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
/// let files = sandbox.files();
/// files.write("notes/today.txt", "hello").await?;
/// assert_eq!(files.read_text("notes/today.txt").await?, "hello");
/// for entry in files.list("notes", 1).await? {
///     println!("{} {:?} {}", entry.path, entry.kind, entry.size);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Files {
    pub(crate) envd: Envd,
    pub(crate) direct_url: Url,
    pub(crate) user: Option<String>,
}

impl fmt::Debug for Files {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Files")
            .field("sandbox_id", &self.envd.sandbox_id)
            .field("user", &self.user)
            .finish()
    }
}

const STRICT: &percent_encoding::AsciiSet = crate::STRICT;

impl Files {
    /// The same operations as Unix user `user` (default: the sandbox's default user).
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// sandbox.files().user("root").write("/etc/motd", "hi").await?;
    /// # Ok(()) }
    /// ```
    pub fn user(mut self, user: impl Into<String>) -> Files {
        self.user = Some(user.into());
        self
    }

    fn files_url(&self, path: Option<&str>) -> Url {
        let mut url = self.envd.url("/files");
        let mut query = String::new();
        if let Some(path) = path {
            query.push_str("path=");
            query.extend(percent_encoding::utf8_percent_encode(path, STRICT));
        }
        if let Some(user) = &self.user {
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str("username=");
            query.extend(percent_encoding::utf8_percent_encode(user, STRICT));
        }
        url.set_query((!query.is_empty()).then_some(query.as_str()));
        url
    }

    async fn get(&self, path: &str) -> Result<reqwest::Response> {
        let request = self
            .envd
            .headers(self.envd.client.http1().get(self.files_url(Some(path))))
            .header(http::header::ACCEPT_ENCODING, "gzip")
            .timeout(self.envd.client.config().request_timeout());
        let response = request.send().await.map_err(Error::from_reqwest)?;
        check_http(response, NotFoundKind::File).await
    }

    /// The whole content of a file (gzip transfer encoding is decoded).
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let bytes = sandbox.files().read("/etc/hostname").await?;
    /// # Ok(()) }
    /// ```
    pub async fn read(&self, path: &str) -> Result<Bytes> {
        let response = self.get(path).await?;
        let gzip = is_gzip(&response);
        let body = response.bytes().await.map_err(Error::from_reqwest)?;
        if !gzip {
            return Ok(body);
        }
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::protocol(format!("bad gzip body: {e}")))?;
        Ok(out.into())
    }

    /// The content of a file as text (invalid UTF-8 is replaced).
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let text = sandbox.files().read_text("/etc/os-release").await?;
    /// # Ok(()) }
    /// ```
    pub async fn read_text(&self, path: &str) -> Result<String> {
        let bytes = self.read(path).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The content of a file as a stream of chunks, for large files.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// use futures::TryStreamExt;
    /// let mut stream = sandbox.files().read_stream("/var/log/big.log").await?;
    /// while let Some(chunk) = stream.try_next().await? {
    ///     println!("{} bytes", chunk.len());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn read_stream(&self, path: &str) -> Result<ByteStream> {
        // A download has no overall timeout, only the one for the response headers.
        let request = self
            .envd
            .headers(self.envd.client.http1().get(self.files_url(Some(path))))
            .header(http::header::ACCEPT_ENCODING, "gzip");
        let timeout = self.envd.client.config().request_timeout();
        let response = tokio::time::timeout(timeout, request.send())
            .await
            .map_err(|_| Error::Timeout {
                message: format!("no response to GET /files within {timeout:?}"),
            })?
            .map_err(Error::from_reqwest)?;
        let response = check_http(response, NotFoundKind::File).await?;
        let gzip = is_gzip(&response);
        let body = response
            .bytes_stream()
            .map(|r| r.map_err(Error::from_reqwest))
            .boxed();
        Ok(if gzip { gunzip_stream(body) } else { body })
    }

    /// Writes a file (multipart upload), creating parent directories.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let info = sandbox.files().write("a.txt", "hello").await?;
    /// assert_eq!(info.path, "/home/user/a.txt");
    /// # Ok(()) }
    /// ```
    pub async fn write(&self, path: &str, data: impl Into<Bytes>) -> Result<WriteInfo> {
        let form = reqwest::multipart::Form::new().part("file", file_part(path, data.into())?);
        let mut written = self.upload(Some(path), form).await?;
        written
            .pop()
            .ok_or_else(|| Error::protocol("upload response lists no file"))
    }

    /// Writes a file with [`WriteOptions`]: metadata, gzip, octet-stream.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// use courier_e2b::envd::WriteOptions;
    /// let options = WriteOptions::new().metadata("author", "ci").gzip(true);
    /// let info = sandbox.files().write_with("report.txt", "all green", &options).await?;
    /// assert_eq!(info.metadata.unwrap()["author"], "ci");
    /// let entry = sandbox.files().get_info("report.txt").await?;
    /// assert_eq!(entry.metadata["author"], "ci");
    /// # Ok(()) }
    /// ```
    pub async fn write_with(
        &self,
        path: &str,
        data: impl Into<Bytes>,
        options: &WriteOptions,
    ) -> Result<WriteInfo> {
        let mut written = self.write_many_with([(path, data)], options).await?;
        written
            .pop()
            .ok_or_else(|| Error::protocol("upload response lists no file"))
    }

    /// Writes several files with [`WriteOptions`]: one multipart request, or one
    /// octet-stream request per file with `gzip`/`octet_stream`. The same metadata goes
    /// on every file.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// use courier_e2b::envd::WriteOptions;
    /// let options = WriteOptions::new().metadata("source", "import");
    /// let written = sandbox
    ///     .files()
    ///     .write_many_with([("a.txt", "A"), ("b.txt", "B")], &options)
    ///     .await?;
    /// assert_eq!(written.len(), 2);
    /// # Ok(()) }
    /// ```
    pub async fn write_many_with<P: AsRef<str>, D: Into<Bytes>>(
        &self,
        files: impl IntoIterator<Item = (P, D)>,
        options: &WriteOptions,
    ) -> Result<Vec<WriteInfo>> {
        options.validate()?;
        let files: Vec<(String, Bytes)> = files
            .into_iter()
            .map(|(p, d)| (p.as_ref().to_owned(), d.into()))
            .collect();
        if files.is_empty() {
            return Ok(Vec::new());
        }
        if !(options.gzip || options.octet_stream) {
            let single = (files.len() == 1).then(|| files[0].0.clone());
            let mut form = reqwest::multipart::Form::new();
            for (path, data) in files {
                form = form.part("file", file_part(&path, data)?);
            }
            return self.upload_with(single.as_deref(), form, options).await;
        }
        let mut written = Vec::with_capacity(files.len());
        for (path, data) in files {
            let mut request = self
                .envd
                .headers(self.envd.client.http().post(self.files_url(Some(&path))))
                .header(http::header::CONTENT_TYPE, "application/octet-stream")
                .timeout(self.envd.client.config().request_timeout());
            let body = if options.gzip {
                request = request.header(http::header::CONTENT_ENCODING, "gzip");
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                encoder
                    .write_all(&data)
                    .and_then(|()| encoder.finish())
                    .map(Bytes::from)
                    .map_err(|e| Error::protocol(format!("gzip: {e}")))?
            } else {
                data
            };
            let request = options.headers(request).body(body);
            let response = request.send().await.map_err(Error::from_reqwest)?;
            let response = check_http(response, NotFoundKind::File).await?;
            let mut one: Vec<WriteInfo> = read_json(response).await?;
            written.append(&mut one);
        }
        Ok(written)
    }

    /// Writes several files in one request.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let written = sandbox
    ///     .files()
    ///     .write_many([("a.txt", "A"), ("dir/b.txt", "B")])
    ///     .await?;
    /// assert_eq!(written.len(), 2);
    /// # Ok(()) }
    /// ```
    pub async fn write_many<P: AsRef<str>, D: Into<Bytes>>(
        &self,
        files: impl IntoIterator<Item = (P, D)>,
    ) -> Result<Vec<WriteInfo>> {
        let mut form = reqwest::multipart::Form::new();
        let mut count = 0;
        for (path, data) in files {
            form = form.part("file", file_part(path.as_ref(), data.into())?);
            count += 1;
        }
        if count == 0 {
            return Ok(Vec::new());
        }
        self.upload(None, form).await
    }

    /// Writes a file from a stream of chunks (`application/octet-stream`, envd ≥ 0.5.7).
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let chunks = futures::stream::iter(vec![Ok::<_, std::io::Error>(bytes::Bytes::from("part 1, ")), Ok("part 2".into())]);
    /// sandbox.files().write_stream("big.bin", chunks).await?;
    /// # Ok(()) }
    /// ```
    pub async fn write_stream<S, E>(&self, path: &str, stream: S) -> Result<WriteInfo>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let request = self
            .envd
            .headers(self.envd.client.http().post(self.files_url(Some(path))))
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(stream));
        let response = request.send().await.map_err(Error::from_reqwest)?;
        let response = check_http(response, NotFoundKind::File).await?;
        let mut written: Vec<WriteInfo> = read_json(response).await?;
        written
            .pop()
            .ok_or_else(|| Error::protocol("upload response lists no file"))
    }

    async fn upload(
        &self,
        path: Option<&str>,
        form: reqwest::multipart::Form,
    ) -> Result<Vec<WriteInfo>> {
        self.upload_with(path, form, &WriteOptions::default()).await
    }

    async fn upload_with(
        &self,
        path: Option<&str>,
        form: reqwest::multipart::Form,
        options: &WriteOptions,
    ) -> Result<Vec<WriteInfo>> {
        let request = self
            .envd
            .headers(self.envd.client.http().post(self.files_url(path)))
            .multipart(form)
            .timeout(self.envd.client.config().request_timeout());
        let request = options.headers(request);
        let response = request.send().await.map_err(Error::from_reqwest)?;
        let response = check_http(response, NotFoundKind::File).await?;
        read_json(response).await
    }

    fn rpc_options(&self) -> CallOptions {
        CallOptions {
            user: self.user.clone(),
            timeout: None,
        }
    }

    /// Lists a directory to `depth` levels (1 = direct children).
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let entries = sandbox.files().list("/home/user", 2).await?;
    /// # Ok(()) }
    /// ```
    pub async fn list(&self, path: &str, depth: u32) -> Result<Vec<EntryInfo>> {
        if depth < 1 {
            return Err(Error::InvalidArgument {
                message: "depth should be at least 1".to_owned(),
            });
        }
        let request = pb::ListDirRequest {
            path: path.to_owned(),
            depth,
        };
        let response: pb::ListDirResponse = self
            .envd
            .unary(
                "/filesystem.Filesystem/ListDir",
                &request,
                &self.rpc_options(),
                NotFoundKind::File,
            )
            .await?;
        Ok(response
            .entries
            .into_iter()
            .filter_map(EntryInfo::from_proto)
            .collect())
    }

    /// Whether a path exists.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// if !sandbox.files().exists("/home/user/project").await? { /* clone it */ }
    /// # Ok(()) }
    /// ```
    pub async fn exists(&self, path: &str) -> Result<bool> {
        match self.get_info(path).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Stats a path.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let info = sandbox.files().get_info("/etc/hostname").await?;
    /// println!("{} bytes, {}", info.size, info.permissions);
    /// # Ok(()) }
    /// ```
    pub async fn get_info(&self, path: &str) -> Result<EntryInfo> {
        let request = pb::StatRequest {
            path: path.to_owned(),
        };
        let response: pb::StatResponse = self
            .envd
            .unary(
                "/filesystem.Filesystem/Stat",
                &request,
                &self.rpc_options(),
                NotFoundKind::File,
            )
            .await?;
        EntryInfo::require(response.entry)
    }

    /// Creates a directory and its parents: `false` when it already existed.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let created = sandbox.files().make_dir("/home/user/a/b").await?;
    /// # Ok(()) }
    /// ```
    pub async fn make_dir(&self, path: &str) -> Result<bool> {
        let request = pb::MakeDirRequest {
            path: path.to_owned(),
        };
        let result: Result<pb::MakeDirResponse> = self
            .envd
            .unary(
                "/filesystem.Filesystem/MakeDir",
                &request,
                &self.rpc_options(),
                NotFoundKind::File,
            )
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if e.connect_code() == Some("already_exists") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Moves or renames, creating the destination's parents; returns the new entry.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let entry = sandbox.files().rename("a.txt", "b.txt").await?;
    /// # Ok(()) }
    /// ```
    pub async fn rename(&self, from: &str, to: &str) -> Result<EntryInfo> {
        let request = pb::MoveRequest {
            source: from.to_owned(),
            destination: to.to_owned(),
        };
        let response: pb::MoveResponse = self
            .envd
            .unary(
                "/filesystem.Filesystem/Move",
                &request,
                &self.rpc_options(),
                NotFoundKind::File,
            )
            .await?;
        EntryInfo::require(response.entry)
    }

    /// Removes a file or directory recursively; a missing path is not an error.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// sandbox.files().remove("/tmp/scratch").await?;
    /// # Ok(()) }
    /// ```
    pub async fn remove(&self, path: &str) -> Result<()> {
        let request = pb::RemoveRequest {
            path: path.to_owned(),
        };
        let _: pb::RemoveResponse = self
            .envd
            .unary(
                "/filesystem.Filesystem/Remove",
                &request,
                &self.rpc_options(),
                NotFoundKind::File,
            )
            .await?;
        Ok(())
    }

    /// A URL anyone can `GET` to download the file, signed with the sandbox's access token
    /// (§4.3 v1 signature; unsigned for unsecured sandboxes). `expires_in` needs a secured
    /// sandbox.
    ///
    /// ```no_run
    /// # fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let url = sandbox.files().download_url("report.pdf", Some(std::time::Duration::from_secs(600)))?;
    /// # Ok(()) }
    /// ```
    pub fn download_url(&self, path: &str, expires_in: Option<Duration>) -> Result<Url> {
        self.signed_url(path, "read", expires_in)
    }

    /// A URL anyone can `POST` a multipart upload to, signed like
    /// [`Files::download_url`].
    ///
    /// ```no_run
    /// # fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// let url = sandbox.files().upload_url("incoming/data.csv", None)?;
    /// # Ok(()) }
    /// ```
    pub fn upload_url(&self, path: &str, expires_in: Option<Duration>) -> Result<Url> {
        self.signed_url(path, "write", expires_in)
    }

    fn signed_url(&self, path: &str, operation: &str, expires_in: Option<Duration>) -> Result<Url> {
        let base = self.direct_url.as_str().trim_end_matches('/');
        let mut url = Url::parse(&format!("{base}/files")).map_err(|e| Error::InvalidArgument {
            message: format!("bad envd URL: {e}"),
        })?;
        let mut query = format!(
            "path={}",
            percent_encoding::utf8_percent_encode(path, STRICT)
        );
        if let Some(user) = &self.user {
            query.push_str(&format!(
                "&username={}",
                percent_encoding::utf8_percent_encode(user, STRICT)
            ));
        }
        match &self.envd.access_token {
            Some(token) => {
                let expiration = expires_in.map(|d| {
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default();
                    (now + d).as_secs()
                });
                let signature =
                    file_signature(path, operation, self.user.as_deref(), token, expiration);
                // Standard base64 has `+` and `/`, which must not reach the server raw.
                let signature = percent_encoding::utf8_percent_encode(&signature, STRICT);
                query.push_str(&format!("&signature={signature}"));
                if let Some(expiration) = expiration {
                    query.push_str(&format!("&signature_expiration={expiration}"));
                }
            }
            None if expires_in.is_some() => {
                return Err(Error::InvalidArgument {
                    message: "expires_in needs a secured sandbox (one with an envd access token)"
                        .to_owned(),
                });
            }
            None => {}
        }
        url.set_query(Some(&query));
        Ok(url)
    }
}

/// The v1 file URL signature: `v1_` + unpadded base64 of
/// `sha256("<path>:<operation>:<user>:<token>[:<expiration>]")`.
///
/// ```
/// use courier_e2b::{Secret, envd::file_signature};
/// let sig = file_signature("/a.txt", "read", None, &Secret::new("tok"), None);
/// assert!(sig.starts_with("v1_") && !sig.ends_with('='));
/// ```
pub fn file_signature(
    path: &str,
    operation: &str,
    user: Option<&str>,
    token: &Secret,
    expiration: Option<u64>,
) -> String {
    let mut text = format!(
        "{path}:{operation}:{}:{}",
        user.unwrap_or(""),
        token.expose()
    );
    if let Some(expiration) = expiration {
        text.push_str(&format!(":{expiration}"));
    }
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "v1_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

fn file_part(path: &str, data: Bytes) -> Result<reqwest::multipart::Part> {
    reqwest::multipart::Part::stream_with_length(data.clone(), data.len() as u64)
        .file_name(path.to_owned())
        .mime_str("application/octet-stream")
        .map_err(Error::from_reqwest)
}

fn is_gzip(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"))
}

async fn read_json<T: serde::de::DeserializeOwned>(response: reqwest::Response) -> Result<T> {
    let bytes = response.bytes().await.map_err(Error::from_reqwest)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::protocol(format!("unexpected envd response: {e}")))
}

/// Turns a non-2xx envd HTTP response into the mapped error.
pub(crate) async fn check_http(
    response: reqwest::Response,
    kind: NotFoundKind,
) -> Result<reqwest::Response> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap_or_default();
    Err(Error::from_envd_http(status, &body, kind))
}

/// Decompresses a gzip byte stream chunk by chunk.
fn gunzip_stream(body: ByteStream) -> ByteStream {
    let decoder = flate2::write::GzDecoder::new(Vec::new());
    futures::stream::unfold(
        (body, Some(decoder)),
        |(mut body, mut decoder)| async move {
            loop {
                let gz = decoder.as_mut()?;
                match body.next().await {
                    Some(Ok(chunk)) => {
                        if let Err(e) = gz.write_all(&chunk) {
                            return Some((
                                Err(Error::protocol(format!("bad gzip body: {e}"))),
                                (body, None),
                            ));
                        }
                        let out = std::mem::take(gz.get_mut());
                        if !out.is_empty() {
                            return Some((Ok(Bytes::from(out)), (body, decoder)));
                        }
                    }
                    Some(Err(e)) => return Some((Err(e), (body, None))),
                    None => {
                        let gz = decoder.take()?;
                        return match gz.finish() {
                            Ok(rest) if rest.is_empty() => None,
                            Ok(rest) => Some((Ok(Bytes::from(rest)), (body, None))),
                            Err(e) => Some((
                                Err(Error::protocol(format!("bad gzip body: {e}"))),
                                (body, None),
                            )),
                        };
                    }
                }
            }
        },
    )
    .boxed()
}
