//! Directory watches over `filesystem.Filesystem/WatchDir`: [`Files::watch_dir`] and the
//! stream of [`WatchEvent`]s it starts.

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures::{Stream, StreamExt};

use super::{EntryInfo, Files};
use crate::{
    Error, NotFoundKind, Result,
    envd::rpc::{CallOptions, RpcStream},
    proto::filesystem::{self as pb, watch_dir_response::Event},
};

/// What happened to a watched path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchEventKind {
    /// Created.
    Create,
    /// Written.
    Write,
    /// Removed.
    Remove,
    /// Renamed.
    Rename,
    /// Permissions or owner changed.
    Chmod,
}

/// One file system event from [`Files::watch_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The path relative to the watched directory (`nested/file.txt`).
    pub name: String,
    /// What happened.
    pub kind: WatchEventKind,
    /// The entry, when requested with [`WatchDir::include_entry`] (create/write/chmod).
    pub entry: Option<EntryInfo>,
}

impl Files {
    /// Watches a directory; `.await` the returned [`WatchDir`] for a stream of events.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: courier_e2b::Sandbox) -> courier_e2b::Result<()> {
    /// use futures::StreamExt;
    /// let mut events = sandbox.files().watch_dir("/home/user").recursive(true).await?;
    /// while let Some(event) = events.next().await {
    ///     let event = event?;
    ///     println!("{:?} {}", event.kind, event.name);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn watch_dir(&self, path: &str) -> WatchDir {
        WatchDir {
            files: self.clone(),
            path: path.to_owned(),
            recursive: false,
            include_entry: false,
            timeout: Duration::ZERO,
        }
    }
}

/// A directory watch being configured; `.await` starts it and waits for envd to confirm.
#[must_use = "a watch does nothing until awaited"]
#[derive(Debug)]
pub struct WatchDir {
    files: Files,
    path: String,
    recursive: bool,
    include_entry: bool,
    timeout: Duration,
}

impl WatchDir {
    /// Also watch subdirectories (envd ≥ 0.1.4).
    pub fn recursive(mut self, recursive: bool) -> Self {
        self.recursive = recursive;
        self
    }

    /// Include the entry's info in create/write/chmod events (envd ≥ 0.6.3).
    pub fn include_entry(mut self, include: bool) -> Self {
        self.include_entry = include;
        self
    }

    /// How long the watch lasts (default unlimited, [`Duration::ZERO`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl std::future::IntoFuture for WatchDir {
    type Output = Result<WatchHandle>;
    type IntoFuture = futures::future::BoxFuture<'static, Result<WatchHandle>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let request = pb::WatchDirRequest {
                path: self.path,
                recursive: self.recursive,
                include_entry: self.include_entry,
                allow_network_mounts: false,
            };
            let options = CallOptions {
                user: self.files.user.clone(),
                timeout: Some(self.timeout),
            };
            let mut stream = self
                .files
                .envd
                .server_stream::<_, pb::WatchDirResponse>(
                    "/filesystem.Filesystem/WatchDir",
                    &request,
                    &options,
                    NotFoundKind::File,
                )
                .await?;
            let request_timeout = self.files.envd.client.config().request_timeout();
            let first = tokio::time::timeout(request_timeout, async {
                loop {
                    match stream.next().await {
                        Some(Ok(pb::WatchDirResponse {
                            event: Some(Event::Start(_)),
                        })) => return Ok(()),
                        Some(Ok(pb::WatchDirResponse {
                            event: Some(Event::Keepalive(_)),
                        })) => {}
                        Some(Ok(other)) => {
                            return Err(Error::protocol(format!(
                                "expected a start event first, got {other:?}"
                            )));
                        }
                        Some(Err(e)) => return Err(e),
                        None => {
                            return Err(Error::protocol(
                                "watch stream ended before the start event",
                            ));
                        }
                    }
                }
            })
            .await
            .map_err(|_| Error::Timeout {
                message: "no start event from WatchDir".to_owned(),
            })?;
            first?;
            Ok(WatchHandle { stream })
        })
    }
}

/// A running directory watch: a [`Stream`] of [`WatchEvent`]s (keepalives skipped). Drop
/// it to stop watching.
pub struct WatchHandle {
    stream: RpcStream<pb::WatchDirResponse>,
}

impl fmt::Debug for WatchHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchHandle").finish_non_exhaustive()
    }
}

impl Stream for WatchHandle {
    type Item = Result<WatchEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let message = match self.stream.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(message))) => message,
            };
            let Some(Event::Filesystem(event)) = message.event else {
                continue;
            };
            let kind = match pb::EventType::try_from(event.r#type) {
                Ok(pb::EventType::Create) => WatchEventKind::Create,
                Ok(pb::EventType::Write) => WatchEventKind::Write,
                Ok(pb::EventType::Remove) => WatchEventKind::Remove,
                Ok(pb::EventType::Rename) => WatchEventKind::Rename,
                Ok(pb::EventType::Chmod) => WatchEventKind::Chmod,
                Ok(pb::EventType::Unspecified) | Err(_) => continue,
            };
            let entry = event.entry.and_then(EntryInfo::from_proto);
            return Poll::Ready(Some(Ok(WatchEvent {
                name: event.name,
                kind,
                entry,
            })));
        }
    }
}
