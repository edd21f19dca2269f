//! The test kit of Courier's suites, in the spirit of `sqlx-test`: one copy of what the
//! test suites of several crates need, so the copies cannot drift apart. It is a
//! dev-dependency only; nothing in a shipped binary links it.
//!
//! - [`binaries`]: courier-envd, courier-sandbox-init and courier-sandboxd of this target
//!   dir, built on first use (`cargo nextest run -p X` builds only X's own targets).
//! - [`root`]: the root check that decides whether a sandbox test runs or skips.
//! - [`standin`]: a local HTTP server that records requests and answers as the test says,
//!   standing in for GitHub or an LLM API.
//! - [`git_http`]: bare repositories served over git's smart HTTP (GitHub for git).
//! - [`registry`]: a container registry stand-in serving images the tooling packs
//!   itself (for `fromImage` template builds without the internet).
//! - [`host_sandbox`]: a sandbox provider whose commands run on this host, for API and
//!   CLI tests that need real agent output without a sandbox backend.

pub mod binaries;
pub mod git_http;
pub mod host_sandbox;
pub mod registry;
pub mod root;
pub mod standin;
