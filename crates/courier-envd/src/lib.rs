//! courier-envd: the daemon inside every Courier sandbox, a drop-in for E2B's envd.
//!
//! The official E2B SDKs talk to it unchanged. It serves, on one port:
//!
//! - `GET /health` (204), `POST /init` (env vars, access token, default user and workdir),
//!   `GET /envs`, and `GET`/`POST /files` (download, multipart or raw upload, signed URLs);
//! - Connect-RPC `process.Process` (Start, Connect, List, SendInput, StreamInput,
//!   SendSignal, CloseStdin, Update) and `filesystem.Filesystem` (Stat, MakeDir, Move,
//!   ListDir, Remove, WatchDir, CreateWatcher, GetWatcherEvents, RemoveWatcher), in JSON or
//!   protobuf, unary and streaming;
//! - a port tunnel, `GET /tunnel/{port}` with `Connection: Upgrade` and
//!   `Upgrade: courier-tunnel`: after `101 Switching Protocols` the connection carries raw
//!   bytes to and from `127.0.0.1:<port>` inside the sandbox (see [`tunnel`]).
//!
//! Once an access token is set (flag or `/init`), every request but `/health` needs
//! `X-Access-Token`; `/files` also accepts v1 signed URLs ([`auth::sign`]).
//!
//! The daemon runs as root in the sandbox, but every file-system operation it performs
//! for a request runs with the requesting user's credentials (a per-thread switch, see
//! the `identity` module), so the kernel checks permissions and resolves symlinks as that
//! user's. It serves on TCP, on a Unix socket, or on a socket the control plane bound and
//! handed over ([`listener`], [`Envd::serve_unix_fd`]).
//!
//! In sandboxes whose kernel ignores setuid bits (gVisor), envd also provides `sudo`: a
//! privilege broker on an abstract Unix socket and a sudo-compatible client, the same
//! binary run under the name `sudo` ([`sudo`]).
//!
//! Invariant: this crate knows nothing of the orchestrator or the control plane; it only
//! speaks the envd protocol. Users come from `/etc/passwd` and `/etc/group` read by hand
//! (no NSS), so the binary can be linked statically.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! courier_envd::Envd::builder().default_user("user").build().serve(listener).await
//! # }
//! ```

pub mod auth;
pub mod checkpoint;
mod error;
mod files;
pub mod filesystem;
mod identity;
pub mod listener;
pub mod paths;
mod process;
mod rpc;
mod server;
pub mod sudo;
pub mod tcp;
pub mod tunnel;
pub mod users;

pub use error::{Error, Result};
pub use server::{Config, Envd, EnvdBuilder};

/// The envd protocol version this daemon implements; clients switch features on by it.
pub const ENVD_VERSION: &str = "0.6.13";
