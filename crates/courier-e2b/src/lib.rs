//! # courier-e2b: a Rust SDK for E2B sandboxes
//!
//! Talks to the E2B cloud, or to any server that speaks its protocol (such as Courier's
//! own `courier-sandboxd` + `courier-envd`): the REST control plane (create, connect,
//! list, pause, kill) and `envd` inside each sandbox (commands, terminals, files, watches)
//! over Connect-RPC and plain HTTP.
//!
//! Invariant: this crate depends on no other Courier crate but `courier-secret` (the one
//! `Secret`); the wire [`models`], the codec and the protobuf types are public and need no
//! feature, so servers (courier-sandboxd, courier-envd) speak exactly what the client sends.
//!
//! ## Guide
//!
//! **Configure.** [`ConnectionConfig::from_env`] reads the official variables
//! (`E2B_API_KEY`, `E2B_DOMAIN`, `E2B_API_URL`, `E2B_SANDBOX_URL`, `E2B_DEBUG`);
//! [`ConnectionConfig::builder`] sets the same things in code. envd URLs follow the
//! official SDK: the `E2B_SANDBOX_URL` override, debug mode (`http://localhost:49983`),
//! the shared `https://sandbox.<domain>` host for E2B's own domains (routed by the
//! `E2b-Sandbox-Id`/`E2b-Sandbox-Port` headers), else `https://49983-<id>.<domain>`.
//!
//! **Create and use a sandbox.**
//!
//! ```no_run
//! # async fn demo() -> courier_e2b::Result<()> {
//! use std::time::Duration;
//! use courier_e2b::{Client, Error, Sandbox};
//!
//! let client = Client::from_env()?;
//! let sandbox = Sandbox::builder()
//!     .template("base")
//!     .timeout(Duration::from_secs(300))
//!     .metadata("owner", "me")
//!     .env("GREETING", "hello")
//!     .create(&client)
//!     .await?;
//!
//! // Run to completion; a non-zero exit is an error carrying the output.
//! let output = sandbox.commands().run("echo $GREETING").await?;
//! assert_eq!(output.stdout, "hello\n");
//! match sandbox.commands().run("exit 3").await {
//!     Err(Error::CommandExited { exit_code, .. }) => assert_eq!(exit_code, 3),
//!     other => panic!("{other:?}"),
//! }
//!
//! // Files.
//! sandbox.files().write("hello.txt", "hi").await?;
//! assert_eq!(sandbox.files().read_text("hello.txt").await?, "hi");
//!
//! sandbox.kill().await?;
//! # Ok(()) }
//! ```
//!
//! **Stream a long-running process.** [`RunCommand::spawn`] returns a [`CommandHandle`],
//! which is a `Stream` of [`CommandEvent`]s and can be waited on, killed or fed stdin.
//! The process lifetime is its timeout (`Connect-Timeout-Ms`, default 60 s,
//! [`Duration::ZERO`](std::time::Duration::ZERO) = unlimited); dropping the handle does
//! not kill it, and [`Commands::connect`] re-attaches by pid or tag.
//!
//! **Errors** are one enum, [`Error`], with variants a caller can act on:
//! [`Error::NotFound`] (sandbox, file or process), [`Error::SandboxGone`] (the proxy's
//! 502 "sandbox was not found"), [`Error::CommandExited`], [`Error::RateLimited`], …
//! Idempotent control-plane calls are retried as the official SDKs do (429/502/503/504,
//! `Should-Retry`, `Retry-After`); create is never retried.
//!
//! **Codec.** envd RPCs use protobuf by default ([`codec::Codec::Proto`]); set
//! [`ConnectionConfigBuilder::codec`] to [`codec::Codec::Json`] to send exactly what the
//! official SDKs send.
//!
//! **Build templates.** [`Client::templates`] is E2B's template build API: request a
//! build, start it from a typed [`Recipe`] of [`Step`]s, follow its logs with
//! [`Templates::wait`] (a failed build is [`Error::BuildFailed`], naming the step), list
//! and delete templates.
//!
//! **Volumes.** [`Volume`] is E2B's persistent storage: create, connect, list and
//! destroy volumes, read and write their files from outside
//! ([`ConnectionConfig::volume_api_url`], `E2B_VOLUME_API_URL`), and mount them into
//! sandboxes with [`SandboxBuilder::volume_mount`].
//!
//! **Testing your code.** [`SandboxApi`] is the slice an orchestrator needs, as a
//! dyn-compatible trait; with the `mocks` feature, `MockSandboxApi` (mockall) implements it.

#[cfg(feature = "client")]
pub mod api;
pub mod codec;
#[cfg(feature = "client")]
mod config;
#[cfg(feature = "client")]
pub mod envd;
#[cfg(feature = "client")]
mod error;
pub mod models;
pub mod proto;
#[cfg(feature = "client")]
mod sandbox;
#[cfg(feature = "client")]
mod sandbox_api;
#[cfg(feature = "client")]
mod volume;

#[cfg(feature = "client")]
pub use api::{
    Client, DEBUG_ENVD_VERSION, DEBUG_SANDBOX_ID, DEFAULT_BUILD_POLL_INTERVAL,
    IDEMPOTENCY_KEY_HEADER, LogsQuery, PauseOptions, SandboxPage, SandboxQuery, SandboxStream,
    SnapshotPage, SnapshotQuery, SnapshotStream, SortOrder, Templates,
};
#[cfg(feature = "client")]
pub use config::{
    ConnectionConfig, ConnectionConfigBuilder, DEFAULT_DOMAIN, DEFAULT_MAX_RETRIES,
    DEFAULT_REQUEST_TIMEOUT, ENVD_PORT, SHARED_HOST_DOMAINS,
};
pub use courier_secret::Secret;
#[cfg(feature = "client")]
pub use envd::{
    CommandEvent, CommandHandle, CommandOutput, Commands, EntryInfo, ExitStatus, FileKind, Files,
    ProcessInfo, ProcessRef, PtyApi, PtySize, RunCommand, Signal, WatchEvent, WatchEventKind,
    WatchHandle, WriteInfo,
};
#[cfg(feature = "client")]
pub use error::{Error, NotFoundKind, Result};
pub use models::{
    AssignTags, AssignedTags, BuildLogEntry, BuildLogs, BuildReason, BuildRequest, BuildRequested,
    BuildState, BuildStatus, Recipe, RemoveTags, Step, TemplateBuild, TemplateInfo, TemplateTag,
    TemplateUpdate, TemplateUpdated, TemplateWithBuilds,
};
#[cfg(feature = "client")]
pub use sandbox::{DEFAULT_TEMPLATE, Sandbox, SandboxBuilder};
#[cfg(any(test, feature = "mocks"))]
pub use sandbox_api::MockSandboxApi;
#[cfg(feature = "client")]
pub use sandbox_api::{CommandSpec, SandboxApi, SpawnedCommand};
#[cfg(feature = "client")]
pub use volume::{VOLUME_FILE_TIMEOUT, Volume, VolumeEntryOptions};

/// Percent-encoding for query values and path segments: everything but `A-Za-z0-9-_.~`.
#[cfg(feature = "client")]
pub(crate) const STRICT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
