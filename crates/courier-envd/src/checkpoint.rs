//! Serving on a Unix socket that can be let go of for a gVisor checkpoint.
//!
//! In a gVisor sandbox envd's control socket is a *host* Unix socket (runsc's
//! `--host-uds=create`), and runsc 20240729 cannot save one: `runsc checkpoint` fails with
//! "Cannot save endpoint with bound host socket" while the socket is bound, and with a nil
//! dereference in `SCMConnectedEndpoint` while any connection accepted on it is open
//! (see `MEMSNAP-FINDINGS.md` at the workspace root). So for a memory snapshot the control
//! plane asks envd to let go of all of it, checkpoints, and asks it to bind again — the
//! running source and every sandbox restored from the image alike:
//!
//! - `SIGUSR2` (**quiesce**): envd stops accepting, closes the listener and removes the
//!   socket file, ends every connection (their tasks are aborted; a connection upgraded to
//!   a port tunnel lives in another task, so each accepted stream also closes itself at
//!   its next read or write), waits up to [`QUIESCE_DEADLINE`] until every accepted
//!   descriptor is closed, then writes [`QUIESCED_FILE`] beside the socket: `ok`, or
//!   `open N` when N descriptors were still open (the control plane then does not
//!   checkpoint: it would fail).
//! - `SIGUSR1` (**resume**): envd removes that file and binds the socket again.
//!
//! Processes envd started keep running throughout (their pipes live in gVisor's kernel);
//! only their streams to clients end, as when a client disconnects. A process of the
//! sandbox may send these signals too (it runs as root there): the worst it can do is
//! make its own sandbox unreachable until `SIGUSR1`, which it can already do by killing
//! envd.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::Envd;

/// The file envd writes beside its socket once it let go of it (`ok` or `open N`).
pub const QUIESCED_FILE: &str = "envd.quiesced";

/// How long a quiesce waits for the accepted descriptors to close.
pub const QUIESCE_DEADLINE: Duration = Duration::from_secs(2);

impl Envd {
    /// Serves on a Unix socket bound at `path` (a stale file there is removed first),
    /// letting go of it on `SIGUSR2` and binding it again on `SIGUSR1` (see the module
    /// docs). Returns only on an error binding or accepting.
    pub async fn serve_unix_checkpointable(self, path: PathBuf) -> io::Result<()> {
        let mut quiesce = signal(SignalKind::user_defined2())?;
        let mut resume = signal(SignalKind::user_defined1())?;
        let status = path.with_file_name(QUIESCED_FILE);
        loop {
            remove_if_present(&status)?;
            remove_if_present(&path)?;
            let listener = UnixListener::bind(&path)?;
            let severed = self.serve_until(&listener, &mut quiesce).await?;
            drop(listener);
            remove_if_present(&path)?;
            let open = severed.finish().await;
            let report = if open == 0 {
                "ok\n".to_owned()
            } else {
                format!("open {open}\n")
            };
            tracing::info!(open, "let go of the control socket for a checkpoint");
            // Written whole then renamed: the control plane never reads half a report.
            let partial = path.with_file_name(format!("{QUIESCED_FILE}.partial"));
            std::fs::write(&partial, report)?;
            std::fs::rename(&partial, &status)?;
            // Further quiesce requests while let go of change nothing.
            loop {
                tokio::select! {
                    _ = resume.recv() => break,
                    _ = quiesce.recv() => {}
                }
            }
            tracing::info!("binding the control socket again");
        }
    }

    /// Accepts and serves connections until `SIGUSR2`; then hands back what is needed to
    /// end them.
    async fn serve_until(
        &self,
        listener: &UnixListener,
        quiesce: &mut tokio::signal::unix::Signal,
    ) -> io::Result<Severed> {
        let router = self.router();
        let cancel = CancellationToken::new();
        let open = Arc::new(());
        let mut tasks = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let stream = match accepted {
                        Ok((stream, _)) => stream,
                        // Out of descriptors and the like: the next accept may work.
                        Err(e) if is_transient(&e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                        Err(e) => return Err(e),
                    };
                    let io = SeverableStream::new(stream, &cancel, &open);
                    let router = router.clone();
                    tasks.spawn(async move {
                        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                            let mut router = router.clone();
                            async move { tower_service::Service::call(&mut router, req).await }
                        });
                        let served = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(io), service)
                            .with_upgrades()
                            .await;
                        if let Err(e) = served {
                            tracing::debug!(error = %e, "connection ended");
                        }
                    });
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = quiesce.recv() => return Ok(Severed { cancel, open, tasks }),
            }
        }
    }
}

/// The connections of one bound period, to be ended.
struct Severed {
    cancel: CancellationToken,
    open: Arc<()>,
    tasks: JoinSet<()>,
}

impl Severed {
    /// Ends every connection and waits up to [`QUIESCE_DEADLINE`] for their descriptors
    /// to close; answers how many are still open.
    async fn finish(mut self) -> usize {
        self.cancel.cancel();
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        let deadline = Instant::now() + QUIESCE_DEADLINE;
        loop {
            // Every open stream holds one reference; this holds the last.
            let open = Arc::strong_count(&self.open) - 1;
            if open == 0 || Instant::now() >= deadline {
                return open;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    use rustix::io::Errno;
    let transient = [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::NOMEM];
    e.raw_os_error()
        .is_some_and(|n| transient.iter().any(|t| t.raw_os_error() == n))
        || e.kind() == io::ErrorKind::ConnectionAborted
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// An accepted stream that closes its descriptor at its next read or write once the
/// token is cancelled (it is woken for it), whoever owns it by then (hyper, or a port
/// tunnel's task after an upgrade).
struct SeverableStream {
    inner: Option<(UnixStream, Arc<()>)>,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl SeverableStream {
    fn new(stream: UnixStream, cancel: &CancellationToken, open: &Arc<()>) -> Self {
        Self {
            inner: Some((stream, Arc::clone(open))),
            cancelled: Box::pin(cancel.clone().cancelled_owned()),
        }
    }

    /// The stream, or `None` once severed (closing it now if the token was cancelled).
    fn live(&mut self, cx: &mut Context<'_>) -> Option<&mut UnixStream> {
        if self.inner.is_some() && self.cancelled.as_mut().poll(cx).is_ready() {
            self.inner = None;
        }
        self.inner.as_mut().map(|(stream, _)| stream)
    }
}

fn severed() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "envd let go of its socket for a checkpoint",
    )
}

impl AsyncRead for SeverableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().live(cx) {
            Some(stream) => Pin::new(stream).poll_read(cx, buf),
            None => Poll::Ready(Err(severed())),
        }
    }
}

impl AsyncWrite for SeverableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().live(cx) {
            Some(stream) => Pin::new(stream).poll_write(cx, buf),
            None => Poll::Ready(Err(severed())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().live(cx) {
            Some(stream) => Pin::new(stream).poll_flush(cx),
            None => Poll::Ready(Err(severed())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().live(cx) {
            Some(stream) => Pin::new(stream).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}
