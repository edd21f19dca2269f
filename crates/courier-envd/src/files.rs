//! `GET /files` (download) and `POST /files` (multipart or raw upload), with the access
//! token or a v1 signed URL, user-relative paths, owned parent directories, an upload
//! size limit and `X-Metadata-*` headers stored as `user.e2b.*` xattrs.
//!
//! Files are opened, created and removed as the requesting user ([`crate::identity`]);
//! only the bytes then flow through the open descriptor on the daemon's threads.

use std::{collections::HashSet, io::Write as _, os::unix::fs::OpenOptionsExt as _, path::PathBuf};

use axum::{
    Json,
    body::Body,
    extract::{FromRequest, Multipart, Query, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http_body_util::BodyExt as _;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt as _;

use crate::{
    Envd, Error,
    auth::{self, Operation, SignedQuery},
    error::json_error,
    filesystem::{announce_file_owner, create_dir_all, read_metadata, write_metadata},
    identity::{Caller, Identity, as_user},
    paths,
    users::User,
};

/// Query parameters of `/files`.
#[derive(Debug, Deserialize, Default)]
pub(crate) struct FilesQuery {
    path: Option<String>,
    username: Option<String>,
    signature: Option<String>,
    signature_expiration: Option<String>,
}

/// One written file in the `POST /files` response.
#[derive(Debug, Serialize)]
struct WrittenEntry {
    path: String,
    name: String,
    r#type: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[serde(serialize_with = "metadata_map")]
    metadata: Vec<(String, String)>,
}

fn metadata_map<S: serde::Serializer>(pairs: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(pairs.iter().map(|(k, v)| (k, v)))
}

fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Authorizes the request and returns whom it acts as.
fn authorize(
    envd: &Envd,
    headers: &HeaderMap,
    query: &FilesQuery,
    op: Operation,
) -> Result<Caller, Error> {
    let token = envd.shared.access_token();
    let signed = SignedQuery {
        path: query.path.as_deref().unwrap_or(""),
        user: query.username.as_deref().unwrap_or(""),
        signature: query.signature.as_deref(),
        expiration: query.signature_expiration.as_deref(),
    };
    auth::check_files_access(headers, token.as_deref(), op, signed, now_unix())?;
    envd.shared.caller(query.username.as_deref())
}

fn resolve(envd: &Envd, raw: &str, user: &User) -> Result<PathBuf, Error> {
    let workdir = envd.shared.runtime().default_workdir;
    paths::resolve(raw, user, workdir.as_deref())
}

/// `GET /files?path=…`: the file's bytes.
pub(crate) async fn download(
    State(envd): State<Envd>,
    query: Result<Query<FilesQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let Query(query) = query.map_err(|e| Error::InvalidArgument(format!("bad query: {e}")))?;
        let caller = authorize(&envd, &headers, &query, Operation::Read)?;
        let path = resolve(&envd, query.path.as_deref().unwrap_or(""), &caller.user)?;
        let shown = paths::display(&path);
        // Opened as the user: a link the user planted to a file only root may read is
        // refused by the kernel, as it would be for the user's own `cat`.
        let opened = path.clone();
        let (file, meta) = as_user(caller.identity.clone(), move || {
            let file = std::fs::File::open(&opened).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Error::NotFound(format!("path '{shown}' does not exist"))
                } else {
                    Error::io(format!("opening '{shown}'"), &e)
                }
            })?;
            let meta = file
                .metadata()
                .map_err(|e| Error::io(format!("stat '{shown}'"), &e))?;
            if meta.is_dir() {
                return Err(Error::InvalidArgument(format!(
                    "path '{shown}' is a directory"
                )));
            }
            Ok((file, meta))
        })
        .await?;
        let file = tokio::fs::File::from_std(file);
        let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
            file,
            256 * 1024,
        ));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let disposition = format!(
            "inline; filename=\"{}\"",
            name.replace(['"', '\\', '\r', '\n'], "_")
        );
        let mut response = (StatusCode::OK, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        // Files of /proc and /sys say they are empty and are not (`boot_id`, `status`):
        // their length is only known once read, so they go chunked.
        if meta.len() > 0 {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.len()));
        }
        if let Ok(value) = HeaderValue::from_str(&disposition) {
            headers.insert(header::CONTENT_DISPOSITION, value);
        }
        Ok::<_, Error>(response)
    }
    .await;
    result.unwrap_or_else(|err| json_error(&err))
}

/// The error of a failed metadata write; says why when the file system has no user
/// extended attributes (gVisor's gofer before its 2026-05 release answers `EOPNOTSUPP`).
fn metadata_error(shown: &str, err: &std::io::Error) -> Error {
    if err.raw_os_error() == Some(rustix::io::Errno::OPNOTSUPP.raw_os_error()) {
        return Error::Internal(format!(
            "setting metadata of '{shown}': {err}: this sandbox's file system has no user \
             extended attributes, where file metadata is kept (gVisor sandboxes need runsc \
             from 2026-05 or later; container sandboxes have them)"
        ));
    }
    Error::io(format!("setting metadata of '{shown}'"), err)
}

/// `X-Metadata-<key>: <value>` headers: printable ASCII, key ≤ 246 bytes, ≤ 4096 in all.
fn upload_metadata(headers: &HeaderMap) -> Result<Vec<(String, String)>, Error> {
    let mut out = Vec::new();
    let mut total = 0;
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix("x-metadata-") else {
            continue;
        };
        let value = value
            .to_str()
            .ok()
            .filter(|v| v.bytes().all(|b| (0x20..0x7f).contains(&b)))
            .ok_or_else(|| {
                Error::InvalidArgument(format!("metadata '{key}' must be printable ASCII"))
            })?;
        if key.is_empty() || key.len() > 246 {
            return Err(Error::InvalidArgument(format!(
                "metadata key '{key}' must be 1 to 246 bytes"
            )));
        }
        total += key.len() + value.len();
        if total > 4096 {
            return Err(Error::InvalidArgument(
                "metadata exceeds 4096 bytes in total".to_owned(),
            ));
        }
        out.push((key.to_owned(), value.to_owned()));
    }
    Ok(out)
}

/// Streams one upload into its file, enforcing the size limit over the whole request.
struct FileSink {
    file: tokio::fs::File,
    path: PathBuf,
    /// Whom the file was opened as; metadata and clean-up run as them too.
    identity: Option<Identity>,
}

struct Budget {
    used: u64,
    limit: u64,
}

impl FileSink {
    async fn create(path: PathBuf, caller: &Caller) -> Result<FileSink, Error> {
        let identity = caller.identity.clone();
        let target = path.clone();
        // As the user: parents, the file and its owner are the user's, and a link the user
        // planted to a file they may not write is refused instead of followed as root.
        let file = as_user(identity.clone(), move || {
            let shown = paths::display(&target);
            if std::fs::metadata(&target).is_ok_and(|m| m.is_dir()) {
                return Err(Error::InvalidArgument(format!(
                    "path '{shown}' is a directory"
                )));
            }
            if let Some(parent) = target.parent() {
                create_dir_all(parent).map_err(|e| {
                    Error::io(
                        format!("creating directory '{}'", paths::display(parent)),
                        &e,
                    )
                })?;
            }
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o644)
                .open(&target)
                .map_err(|e| Error::io(format!("opening '{shown}' for writing"), &e))?;
            // Create, (no-op) chown, then write: watchers see CREATE, CHMOD, WRITE as with envd.
            announce_file_owner(&file)
                .map_err(|e| Error::io(format!("changing the owner of '{shown}'"), &e))?;
            Ok(file)
        })
        .await?;
        Ok(FileSink {
            file: tokio::fs::File::from_std(file),
            path,
            identity,
        })
    }

    async fn write(&mut self, data: &[u8], budget: &mut Budget) -> Result<(), Error> {
        budget.used += data.len() as u64;
        if budget.used > budget.limit {
            return Err(Error::TooLarge(format!(
                "upload exceeds the limit of {} bytes",
                budget.limit
            )));
        }
        self.file
            .write_all(data)
            .await
            .map_err(|e| Error::io(format!("writing '{}'", paths::display(&self.path)), &e))
    }

    async fn finish(mut self, metadata: &[(String, String)]) -> Result<WrittenEntry, Error> {
        let shown = paths::display(&self.path);
        self.file
            .flush()
            .await
            .map_err(|e| Error::io(format!("writing '{shown}'"), &e))?;
        let (path, pairs) = (self.path.clone(), metadata.to_vec());
        as_user(self.identity.clone(), move || {
            if !pairs.is_empty() || !read_metadata(&path).is_empty() {
                write_metadata(&path, &pairs).map_err(|e| metadata_error(&shown, &e))?;
            }
            Ok(())
        })
        .await?;
        Ok(WrittenEntry {
            name: self
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            path: paths::display(&self.path),
            r#type: "file",
            metadata: metadata.to_vec(),
        })
    }

    /// Removes a partly written file after a failure.
    async fn abandon(self) {
        drop(self.file);
        let path = self.path;
        let removed = as_user(self.identity, move || {
            std::fs::remove_file(&path)
                .map_err(|e| Error::io(format!("removing '{}'", paths::display(&path)), &e))
        })
        .await;
        if let Err(err) = removed {
            tracing::debug!(%err, "removing a partly written upload");
        }
    }
}

/// `POST /files`: multipart (one file per part; the part's filename is its full path,
/// `path` overrides it) or a raw body (optionally gzip) written to `path`.
pub(crate) async fn upload(State(envd): State<Envd>, req: Request) -> Response {
    match upload_inner(envd, req).await {
        Ok(entries) => (StatusCode::OK, Json(entries)).into_response(),
        Err(err) => json_error(&err),
    }
}

/// How much of a refused upload's unread body is read (and dropped) before the error is
/// sent, and for how long at most.
///
/// A server that answers before the client has finished sending and then closes makes the
/// client's kernel see a reset, and the answer is lost: the SDK, or the sandboxd proxy in
/// between, reports an unreachable sandbox instead of "permission denied". Reading the rest
/// first (as nginx's lingering close does) delivers the answer. Bounded, so a caller cannot
/// hold the connection longer than an upload it is allowed to make anyway.
const DRAIN_MAX_BYTES: u64 = 64 << 20;
const DRAIN_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads and drops the rest of `body`, within [`DRAIN_MAX_BYTES`] and [`DRAIN_WINDOW`].
async fn drain_body(mut body: Body) {
    let drain = async {
        let mut read = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, |d| d.len() as u64);
            if read > DRAIN_MAX_BYTES {
                break;
            }
        }
    };
    if tokio::time::timeout(DRAIN_WINDOW, drain).await.is_err() {
        // The answer goes out anyway; a client still sending then sees a reset.
        tracing::debug!("the request body was not drained within the window");
    }
}

/// [`drain_body`] for a multipart body: the rest of the current part and all later ones.
async fn drain_parts(multipart: &mut Multipart) {
    let drain = async {
        let mut read = 0u64;
        while let Ok(Some(mut field)) = multipart.next_field().await {
            while let Ok(Some(chunk)) = field.chunk().await {
                read += chunk.len() as u64;
                if read > DRAIN_MAX_BYTES {
                    return;
                }
            }
        }
    };
    if tokio::time::timeout(DRAIN_WINDOW, drain).await.is_err() {
        // The answer goes out anyway; a client still sending then sees a reset.
        tracing::debug!("the request body was not drained within the window");
    }
}

async fn upload_inner(envd: Envd, req: Request) -> Result<Vec<WrittenEntry>, Error> {
    let (parts, body) = req.into_parts();
    let checked = Query::<FilesQuery>::try_from_uri(&parts.uri)
        .map_err(|e| Error::InvalidArgument(format!("bad query: {e}")))
        .and_then(|Query(query)| {
            let caller = authorize(&envd, &parts.headers, &query, Operation::Write)?;
            let metadata = upload_metadata(&parts.headers)?;
            Ok((query, caller, metadata))
        });
    let (query, caller, metadata) = match checked {
        Ok(checked) => checked,
        Err(err) => {
            drain_body(body).await;
            return Err(err);
        }
    };
    let mut budget = Budget {
        used: 0,
        limit: envd.shared.max_upload_bytes,
    };
    let multipart = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    if multipart {
        let mut multipart = Multipart::from_request(Request::from_parts(parts, body), &())
            .await
            .map_err(|e| Error::InvalidArgument(format!("bad multipart body: {e}")))?;
        let written = write_parts(
            &envd,
            &query,
            &caller,
            &metadata,
            &mut multipart,
            &mut budget,
        )
        .await;
        if written.is_err() {
            drain_parts(&mut multipart).await;
        }
        return written;
    }
    let gzip = parts
        .headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
    let sink = query
        .path
        .clone()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            Error::InvalidArgument(
                "the path query parameter is required for a raw upload".to_owned(),
            )
        })
        .and_then(|raw| resolve(&envd, &raw, &caller.user));
    let sink = match sink {
        Ok(path) => FileSink::create(path, &caller).await,
        Err(err) => Err(err),
    };
    let mut sink = match sink {
        Ok(sink) => sink,
        Err(err) => {
            drain_body(body).await;
            return Err(err);
        }
    };
    let mut body = body;
    match copy_body(&mut body, gzip, &mut sink, &mut budget).await {
        Ok(()) => Ok(vec![sink.finish(&metadata).await?]),
        Err(err) => {
            sink.abandon().await;
            drain_body(body).await;
            Err(err)
        }
    }
}

/// Writes each part of a multipart upload to its file (the part's filename, or `path`).
async fn write_parts(
    envd: &Envd,
    query: &FilesQuery,
    caller: &Caller,
    metadata: &[(String, String)],
    multipart: &mut Multipart,
    budget: &mut Budget,
) -> Result<Vec<WrittenEntry>, Error> {
    let mut seen = HashSet::new();
    let mut entries = Vec::new();
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|e| Error::InvalidArgument(format!("bad multipart body: {e}")))?
    {
        let raw = query
            .path
            .clone()
            .or_else(|| field.file_name().map(str::to_owned))
            .unwrap_or_default();
        if raw.is_empty() {
            return Err(Error::InvalidArgument(
                "a file part has no filename and no path was given".to_owned(),
            ));
        }
        let path = resolve(envd, &raw, &caller.user)?;
        if !seen.insert(path.clone()) {
            return Err(Error::InvalidArgument(format!(
                "path '{}' is given more than once",
                paths::display(&path)
            )));
        }
        let mut sink = FileSink::create(path, caller).await?;
        loop {
            let chunk = match field.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    sink.abandon().await;
                    return Err(Error::InvalidArgument(format!("bad multipart body: {e}")));
                }
            };
            if let Err(err) = sink.write(&chunk, budget).await {
                sink.abandon().await;
                return Err(err);
            }
        }
        entries.push(sink.finish(metadata).await?);
    }
    Ok(entries)
}

async fn copy_body(
    body: &mut Body,
    gzip: bool,
    sink: &mut FileSink,
    budget: &mut Budget,
) -> Result<(), Error> {
    let mut decoder = gzip.then(|| flate2::write::GzDecoder::new(Vec::new()));
    let bad_gzip = |e: std::io::Error| Error::InvalidArgument(format!("bad gzip body: {e}"));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Error::InvalidArgument(format!("reading the body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        match decoder.as_mut() {
            None => sink.write(&data, budget).await?,
            Some(decoder) => {
                decoder.write_all(&data).map_err(bad_gzip)?;
                let out: Bytes = std::mem::take(decoder.get_mut()).into();
                sink.write(&out, budget).await?;
            }
        }
    }
    if let Some(mut decoder) = decoder {
        decoder.try_finish().map_err(bad_gzip)?;
        let out = std::mem::take(decoder.get_mut());
        sink.write(&out, budget).await?;
    }
    Ok(())
}
