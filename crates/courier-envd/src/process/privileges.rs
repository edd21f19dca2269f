//! Dropping root privileges in the child between fork and exec (for the process service
//! and for commands the sudo broker starts).
//!
//! The only unsafe code of the crate: `pre_exec` is unsafe because the closure runs in
//! the forked child, where only async-signal-safe calls are allowed. std's own `uid()` /
//! `gid()` cannot be used because std calls `setgroups(0)` itself and runs `pre_exec`
//! after `setuid`, when `setgroups` is no longer permitted.
#![allow(unsafe_code)]

use std::os::fd::OwnedFd;

use nix::{
    sys::signal::{SigHandler, Signal, signal},
    unistd::{Gid, Uid, fchdir, setgid, setgroups, setuid},
};

use super::Identity;

fn switch(groups: &[Gid], gid: Gid, uid: Uid) -> std::io::Result<()> {
    // Order matters: groups and gid need privileges we lose with setuid.
    setgroups(groups)?;
    setgid(gid)?;
    setuid(uid)?;
    Ok(())
}

fn parts(identity: &Identity) -> (Vec<Gid>, Gid, Uid) {
    (
        identity.groups.iter().copied().map(Gid::from_raw).collect(),
        Gid::from_raw(identity.gid),
        Uid::from_raw(identity.uid),
    )
}

/// Makes a plain child run as `identity`.
pub(super) fn apply(command: &mut tokio::process::Command, identity: &Identity) {
    let (groups, gid, uid) = parts(identity);
    // SAFETY: the closure only issues the setgroups/setgid/setuid system calls (all
    // async-signal-safe) on data prepared before fork; it allocates nothing.
    unsafe {
        command.pre_exec(move || switch(&groups, gid, uid));
    }
}

/// Makes a PTY child run as `identity` (after pty-process made it a session leader).
pub(super) fn apply_pty(
    command: pty_process::Command,
    identity: &Identity,
) -> pty_process::Command {
    let (groups, gid, uid) = parts(identity);
    // SAFETY: as in `apply`: only async-signal-safe system calls on pre-built data.
    unsafe { command.pre_exec(move || switch(&groups, gid, uid)) }
}

/// Makes a child enter the directory `dir` refers to, then run as `identity`, with every
/// signal's disposition at its default: how the sudo broker starts a command in its
/// caller's working directory.
///
/// The directory is entered while still root, as a real sudo's child inherits the
/// caller's directory whatever the target user may enter. `dir` must be close-on-exec
/// (the command must not inherit it); it is closed when `command` is dropped. Signals
/// ignored by envd (a shell starting it in the background ignores SIGINT and SIGQUIT)
/// would stay ignored across exec: Ctrl-C could not stop the command. (The standard
/// signals 1 to 31; real-time ones are left as they are.)
pub(crate) fn apply_in_dir(
    command: &mut tokio::process::Command,
    identity: &Identity,
    dir: OwnedFd,
) {
    let (groups, gid, uid) = parts(identity);
    // SAFETY: the closure only issues the sigaction/fchdir/setgroups/setgid/setuid
    // system calls (all async-signal-safe) on a descriptor and data prepared before fork;
    // it allocates nothing (Signal::iterator walks a static table).
    unsafe {
        command.pre_exec(move || {
            for each in Signal::iterator() {
                if !matches!(each, Signal::SIGKILL | Signal::SIGSTOP) {
                    // SIG_DFL runs no code of ours in a handler; the only effect is on
                    // this (single-threaded, about to exec) child.
                    signal(each, SigHandler::SigDfl)?;
                }
            }
            fchdir(&dir)?;
            switch(&groups, gid, uid)
        });
    }
}

/// Sets the child's file-creation mask to `mask` (what a login profile's `umask` left),
/// before it switches to `identity` if any.
pub(super) fn apply_umask(command: &mut tokio::process::Command, mask: u32) {
    let mask = nix::sys::stat::Mode::from_bits_truncate(mask & 0o777);
    // SAFETY: umask is an async-signal-safe system call on a value prepared before fork;
    // nothing is allocated.
    unsafe {
        command.pre_exec(move || {
            nix::sys::stat::umask(mask);
            Ok(())
        });
    }
}
