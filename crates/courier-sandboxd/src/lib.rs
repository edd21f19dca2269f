//! courier-sandboxd: Courier's local, E2B-compatible sandbox backend.
//!
//! Two halves. The **control plane** ([`server::Sandboxd`]) manages sandboxes; [`http`]
//! serves it as E2B's REST API ([`api`]) and as the sandbox proxy ([`proxy`]) that routes
//! envd and user-port traffic into sandboxes. The manager keeps per-sandbox records ([`state`]), API keys
//! ([`keys`]) and templates ([`templates`]) in its data dir and times sandboxes out. Each sandbox
//! runs courier-envd as its init, reached over a Unix socket bind-mounted out of the
//! sandbox (so envd works whether or not the sandbox has network).
//!
//! The **sandbox runtime** ([`runtime`]) creates
//! sandboxes as Linux namespaces (mount, PID, UTS, IPC, network, cgroup) + cgroups
//! (v1 and v2) + an overlay root file system, runs a given init program in each (in
//! production courier-envd), freezes, thaws, limits, measures and kills them, and reaps
//! whatever a crashed server left behind. [`base_layer`] assembles the `base` layer from
//! the host's system directories. The REST control plane and the port proxy are built on
//! top of [`runtime::Runtime`].
//!
//! Templates ([`templates`]): the built-in `base`, and templates built from recipes through
//! E2B's template build API (what the official SDKs' `Template.build` calls): a parent
//! template plus RUN, ENV, WORKDIR, USER and COPY steps run once in a build sandbox
//! through its envd, whose writes are captured as a new read-only layer
//! ([`runtime::Runtime::capture_layer`]) stacked on the parent's layers; a template's
//! `startCmd` runs in each of its sandboxes and its `readyCmd` is awaited at create.
//! Builds, their logs and the templates persist in the data dir.
//!
//! Server-wide limits ([`limits`], in [`ServerConfig::limits`]): the number of sandboxes
//! and their committed memory (a create past either answers 429 naming it), deadlines of
//! template build steps and builds, and caps on COPY uploads.
//!
//! Operators can hand every sandbox host directories (a local git mirror, tools) as
//! [`SharedDir`]s in [`ServerConfig::shared_dirs`], bind-mounted at create.
//!
//! Invariants:
//! - a sandbox sees only its layers, its own writes, its binds and fresh `/proc`, `/dev`,
//!   `/tmp`; never the host's `/root`, `/home`, the data dir or another sandbox;
//! - every process of a sandbox is in its cgroup from its first instruction;
//! - sandbox mounts exist only in the sandbox's mount namespace;
//! - kill and recover leave no process, mount, cgroup or directory behind;
//! - a sandbox's outbound traffic is decided outside it: what its slirp4netns sends is
//!   checked by a supervisor it cannot reach, and fails closed without one;
//! - it knows nothing of agents, stores or GitHub.
//!
//! Networking: loopback only, unless the create request sets `allow_internet_access`
//! (or network rules that let traffic out); then slirp4netns gives the sandbox outbound
//! access without touching the host's network configuration (see [`runtime::network`];
//! without slirp4netns installed such a request is refused with a clear error), under an
//! egress policy enforced outside the sandbox ([`egress`]): never cloud metadata, the
//! host's own addresses, loopback or private ranges unless the operator allows them
//! (`ServerConfig::egress_allow`), and E2B's `network.allowOut`/`denyOut` (CIDRs, IPs,
//! domains) and `network.rules` header transforms (plain HTTP, and HTTPS intercepted with
//! the server's own CA for names a rule matches), changeable live with
//! `PUT /sandboxes/{id}/network`. `network.maskRequestHost` sets the `Host` requests to
//! the sandbox's ports arrive with. A sandbox created with
//! `network.allowPublicTraffic: false` gets a traffic access token its ports other than
//! envd's require ([`proxy`]).
//!
//! Not there yet: snapshots and fork; template recipes from images other than
//! `e2bdev/base` or from registries (answered 400). The cgroup v2 driver's limit files
//! are tested against fake trees and its join/freeze/thaw/kill/remove against the
//! kernel's cgroup2 hierarchy (on hybrid hosts the controller-less
//! `/sys/fs/cgroup/unified`); full sandboxes have run for real only on v1 hosts so far.
//!
//! Requirements: root (or equivalent capabilities), overlayfs, and a helper program that
//! calls [`runtime::init::main_if_requested`] before anything else — either the embedding
//! binary itself (default: `/proc/self/exe`) or the `courier-sandbox-init` binary of this
//! crate.
//!
//! ```no_run
//! use courier_sandboxd::runtime::{Runtime, SandboxSpec};
//!
//! fn main() -> Result<(), courier_sandboxd::Error> {
//!     courier_sandboxd::runtime::init::main_if_requested();
//!     let base = courier_sandboxd::base_layer::assemble(std::path::Path::new("/var/lib/courier/layers/base"))?;
//!     let runtime = Runtime::new("/var/lib/courier")?;
//!     runtime.recover(courier_sandboxd::runtime::RecoverPolicy::Adopt)?;
//!     let sbx = runtime.create(SandboxSpec::new("sbx1", vec![base], "/bin/sleep", &["infinity"]))?;
//!     println!("sandbox {} has PID 1 = host pid {}", sbx.id, sbx.init_pid);
//!     runtime.kill(&sbx.id)?;
//!     Ok(())
//! }
//! ```

pub mod api;
pub mod base_layer;
mod cleanup;
pub mod egress;
mod envd_link;
mod error;
pub mod http;
pub mod images;
pub mod keys;
pub mod limits;
mod lock;
pub mod proxy;
pub mod runtime;
pub mod server;
pub mod snapshots;
pub mod state;
pub mod templates;
pub mod volumes;
mod warm;

pub use error::{Error, Result};
pub use limits::ServerLimits;
pub use server::{CreateRequest, Sandboxd, ServerConfig, SharedDir};
