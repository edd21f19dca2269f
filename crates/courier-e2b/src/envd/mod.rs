//! The envd client: everything that happens inside a sandbox (commands, terminals, files,
//! watches), over Connect-RPC and envd's plain-HTTP `/files`.

mod commands;
mod files;
mod git;
mod pty;
pub(crate) mod rpc;
mod utf8;

pub use commands::{
    CommandEvent, CommandHandle, CommandOutput, Commands, DEFAULT_COMMAND_TIMEOUT, ExitStatus,
    ProcessInfo, ProcessRef, RunCommand, Signal,
};
pub use files::{
    ByteStream, EntryInfo, FileKind, Files, WatchDir, WatchEvent, WatchEventKind, WatchHandle,
    WriteInfo, WriteOptions, file_signature,
};
pub use git::{
    CloneOptions, ConfigScope, Git, GitBranches, GitCredentials, GitFileStatus, GitStatus,
    ResetMode, SyncOptions,
};
pub use pty::{CreatePty, PtyApi, PtySize};
