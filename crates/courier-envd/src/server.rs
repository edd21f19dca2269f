//! The daemon itself: configuration, shared state, the HTTP router and `serve`.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, RwLock},
};

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{any, get, post},
};
use courier_e2b::models::EnvdInit;
use tokio::net::{TcpListener, UnixListener};

use crate::{
    Error, auth,
    error::json_error,
    filesystem::watch::Watchers,
    identity::Caller,
    process::Table,
    users::{User, UserDb},
};

/// Settings fixed at start; `/init` can change the token, default user, workdir and env.
#[derive(Debug, Clone)]
pub struct Config {
    /// User for requests that name none (`None`: the user this daemon runs as).
    pub default_user: Option<String>,
    /// Working directory for empty paths and processes without a cwd (`None`: home).
    pub default_workdir: Option<PathBuf>,
    /// Token required in `X-Access-Token` on every request but `/health`.
    pub access_token: Option<String>,
    /// Largest upload accepted by `POST /files`, in bytes (after gzip decoding).
    pub max_upload_bytes: u64,
    /// Sandbox-level environment variables given to every process.
    pub env_vars: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            default_user: None,
            default_workdir: None,
            access_token: None,
            max_upload_bytes: 4 << 30,
            env_vars: BTreeMap::new(),
        }
    }
}

/// Builds an [`Envd`].
#[derive(Debug, Clone, Default)]
pub struct EnvdBuilder {
    config: Config,
}

impl EnvdBuilder {
    /// The user for requests that name none (E2B templates use `user`).
    pub fn default_user(mut self, name: impl Into<String>) -> Self {
        self.config.default_user = Some(name.into());
        self
    }

    /// The directory empty paths and processes without a cwd use.
    pub fn default_workdir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.default_workdir = Some(dir.into());
        self
    }

    /// Requires this token on every request but `/health`.
    pub fn access_token(mut self, token: impl Into<String>) -> Self {
        self.config.access_token = Some(token.into());
        self
    }

    /// The largest upload `POST /files` accepts.
    pub fn max_upload_bytes(mut self, bytes: u64) -> Self {
        self.config.max_upload_bytes = bytes;
        self
    }

    /// Adds a sandbox-level environment variable.
    pub fn env_var(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.env_vars.insert(key.into(), value.into());
        self
    }

    /// The daemon.
    pub fn build(self) -> Envd {
        Envd::new(self.config)
    }
}

/// State that `/init` may change while running.
#[derive(Debug, Clone)]
pub(crate) struct Runtime {
    pub access_token: Option<String>,
    pub default_user: String,
    pub default_workdir: Option<PathBuf>,
    pub env_vars: BTreeMap<String, String>,
}

/// Everything the handlers share.
pub(crate) struct Shared {
    pub max_upload_bytes: u64,
    pub runtime: RwLock<Runtime>,
    pub processes: Arc<Table>,
    pub watchers: Watchers,
}

impl Shared {
    pub fn runtime(&self) -> Runtime {
        self.runtime
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn access_token(&self) -> Option<String> {
        self.runtime
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .access_token
            .clone()
    }

    /// Who a request for `name` (or the default user) acts as; unknown ⇒ `unauthenticated`.
    pub fn caller(&self, name: Option<&str>) -> Result<Caller, Error> {
        let default = self.runtime().default_user;
        let name = name.filter(|n| !n.is_empty()).unwrap_or(&default);
        let db = UserDb::load();
        let user = match db.user(name) {
            Some(user) => user.clone(),
            // A root file system without a passwd entry for us must still work for our own user.
            None if name == crate::users::current_user_name() => User {
                name: name.to_owned(),
                uid: nix::unistd::geteuid().as_raw(),
                gid: nix::unistd::getegid().as_raw(),
                home: std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from),
                shell: PathBuf::from("/bin/sh"),
            },
            None => {
                return Err(Error::Unauthenticated(format!(
                    "invalid username: '{name}'"
                )));
            }
        };
        let identity = crate::identity::acting_as(&user, &db)?;
        Ok(Caller {
            user,
            identity,
            db: Arc::new(db),
        })
    }
}

/// The envd daemon: cheap to clone, all clones share state.
#[derive(Clone)]
pub struct Envd {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Envd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envd").finish_non_exhaustive()
    }
}

impl Envd {
    /// A builder with the defaults (current user, no token, 4 GiB uploads).
    pub fn builder() -> EnvdBuilder {
        EnvdBuilder::default()
    }

    /// A daemon with this configuration.
    pub fn new(config: Config) -> Envd {
        let default_user = config
            .default_user
            .unwrap_or_else(crate::users::current_user_name);
        Envd {
            shared: Arc::new(Shared {
                max_upload_bytes: config.max_upload_bytes,
                runtime: RwLock::new(Runtime {
                    access_token: config.access_token,
                    default_user,
                    default_workdir: config.default_workdir,
                    env_vars: config.env_vars,
                }),
                processes: Arc::new(Table::default()),
                watchers: Watchers::default(),
            }),
        }
    }

    /// The HTTP application: plain endpoints, both Connect services and the tunnel.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/health", get(health))
            .route("/init", post(init))
            .route("/envs", get(envs))
            .route(
                "/files",
                get(crate::files::download).post(crate::files::upload),
            )
            .route("/tunnel/{port}", any(crate::tunnel::tunnel))
            .route(
                "/process.Process/{method}",
                post(crate::process::service::route),
            )
            .route(
                "/filesystem.Filesystem/{method}",
                post(crate::filesystem::service::route),
            )
            .fallback(not_found)
            .layer(middleware::from_fn_with_state(self.clone(), require_token))
            // Uploads are limited by `max_upload_bytes` while streaming, not by axum's 2 MB.
            .layer(DefaultBodyLimit::disable())
            .with_state(self.clone())
    }

    /// Serves on a TCP listener until the listener fails.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        let listener = crate::tcp::LowLatencyListener::new(listener);
        axum::serve(listener, self.router()).await
    }

    /// Serves on a Unix socket listener until the listener fails.
    pub async fn serve_unix(self, listener: UnixListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    /// Serves on an inherited Unix stream socket that the control plane bound (and may
    /// not have listened on yet) until the listener fails; see
    /// [`crate::listener::unix_listener_from_fd`].
    pub async fn serve_unix_fd(self, fd: std::os::fd::OwnedFd) -> std::io::Result<()> {
        let listener = crate::listener::unix_listener_from_fd(fd)?;
        self.serve_unix(listener).await
    }
}

/// Every route but `/health` needs the token once one is set; `/files` checks itself
/// because it also accepts signed URLs.
async fn require_token(State(envd): State<Envd>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path == "/health" || path == "/files" {
        return next.run(req).await;
    }
    let token = envd.shared.access_token();
    match auth::check_token(req.headers(), token.as_deref()) {
        Ok(()) => next.run(req).await,
        Err(err) => json_error(&err),
    }
}

async fn health() -> StatusCode {
    StatusCode::NO_CONTENT
}

async fn not_found() -> Response {
    json_error(&Error::NotFound("no such endpoint".to_owned()))
}

async fn init(State(envd): State<Envd>, body: axum::body::Bytes) -> Response {
    // The shared wire type; fields envd does not know are ignored.
    let request: EnvdInit = if body.iter().all(u8::is_ascii_whitespace) {
        EnvdInit::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(e) => {
                return json_error(&Error::InvalidArgument(format!(
                    "malformed /init body: {e}"
                )));
            }
        }
    };
    if let Some(name) = request.default_user.as_deref().filter(|n| !n.is_empty())
        && UserDb::load().user(name).is_none()
    {
        return json_error(&Error::InvalidArgument(format!(
            "default user '{name}' does not exist"
        )));
    }
    let mut runtime = envd
        .shared
        .runtime
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(vars) = request.env_vars {
        runtime.env_vars.extend(vars);
    }
    if let Some(token) = request.access_token.filter(|t| !t.expose().is_empty()) {
        runtime.access_token = Some(token.expose().to_owned());
    }
    if let Some(name) = request.default_user.filter(|n| !n.is_empty()) {
        runtime.default_user = name;
    }
    if let Some(dir) = request.default_workdir.filter(|d| !d.is_empty()) {
        runtime.default_workdir = Some(crate::paths::normalize(std::path::Path::new(&dir)));
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn envs(State(envd): State<Envd>) -> Json<BTreeMap<String, String>> {
    Json(envd.shared.runtime().env_vars)
}
