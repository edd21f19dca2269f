//! Serving a [`Sandboxd`] over HTTP: the REST API ([`crate::api`]) and the sandbox proxy
//! ([`crate::proxy`]), each on a listener the caller opened.
//!
//! This is the only module that puts the manager, the API and the proxy together; the
//! manager ([`crate::server`]) knows nothing of HTTP.

use std::future::Future;

use tokio::net::TcpListener;

use crate::server::Sandboxd;

impl Sandboxd {
    /// Serves the REST API on `listener` until `shutdown` completes.
    pub async fn serve_api(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let listener = courier_envd::tcp::LowLatencyListener::new(listener);
        axum::serve(listener, crate::api::router(self.clone()))
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Serves the sandbox proxy on `listener` until `shutdown` completes (open
    /// connections are dropped).
    pub async fn serve_proxy(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        crate::proxy::serve(self.clone(), listener, shutdown).await
    }
}
