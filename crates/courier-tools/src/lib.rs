//! # courier-tools
//!
//! Everything that differs between the agent CLIs Courier runs (Claude Code, OpenCode,
//! Codex, Pi, and a plain `shell` tool) lives here, as **pure data and pure functions**:
//!
//! - [`registry`]: which tools exist, what keys they need, their models, capabilities,
//!   install commands and templates ([`ToolId`], [`ToolSpec`], [`select_template`]).
//! - [`plan`]: how a sandbox is prepared for a tool, as an ordered list of typed steps
//!   ([`SetupContext`] → [`SetupPlan`] of [`SetupStep`]s).
//! - [`command`]: how a tool is started, continued and stopped ([`CommandLine`] with a
//!   safely quoted [`CommandLine::to_shell`]).
//! - [`parse`]: how a tool's output is read ([`LineBuffer`], [`StreamParser`]) into the
//!   normalized [`AgentEvent`]s of [`events`].
//!
//! ## Invariant
//!
//! This crate performs **no I/O**: no files, no processes, no network, no clocks, no
//! randomness. It returns plans and parses lines; the orchestrator executes them. Every
//! function is deterministic, so plans, command lines and parsed streams are tested with
//! recorded fixtures and snapshots.
//!
//! Secrets that a plan must carry (provider keys, the GitHub token) are wrapped in
//! [`Secret`], whose `Debug`, `Display` and `Serialize` show only `****abcd`.
//!
//! ```
//! use courier_tools::{ToolId, registry};
//!
//! let tool: ToolId = "claude".parse().unwrap();
//! assert_eq!(registry::spec(tool).default_model, Some("claude-opus-4-6"));
//! assert!(courier_tools::registry::install_command(tool, None).unwrap().contains("@anthropic-ai/claude-code@"));
//! ```

pub mod command;
pub mod error;
pub mod events;
pub mod parse;
pub mod plan;
pub mod registry;
pub mod secret;
pub mod shell;

pub use command::{
    AGENT_RUN_DIR, CommandLine, RunRequest, first_run_command, follow_up_command, shell_quote,
    stop_agent_command, tracked,
};
pub use error::ToolsError;
pub use events::{AgentEvent, RunResult, Usage};
pub use parse::{Line, LineBuffer, StreamParser};
pub use plan::{
    CommandFile, GATEWAY_GITCONFIG_PATH, GitGateway, ProviderEndpoints, ProviderKeys, SetupContext,
    SetupPlan, SetupStep, Skill, StepValue, build_setup_plan, validate_branch,
    validate_command_content, validate_command_name, validate_env_name, validate_repo_url,
    validate_skill_content, validate_skill_name,
};
pub use registry::{
    Capabilities, ModelSpec, NpmPackage, ProviderKeyKind, ThinkingEffort, ToolId, ToolSpec,
    build_custom_tag, checker_template, install_command, select_template,
};
pub use secret::Secret;

/// The directory every sandbox's repository is cloned into, and the agents' working directory.
pub const PROJECT_DIR: &str = "/home/user/project";

/// The sandbox user's home directory.
pub const HOME_DIR: &str = "/home/user";

/// Courier's own directory inside the sandbox (system prompt, credential helper).
pub const COURIER_DIR: &str = "/home/user/.courier";
