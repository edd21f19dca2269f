//! Per-sandbox host id ranges and the user namespaces that map them.
//!
//! Every namespace sandbox gets its own range of [`RANGE_SIZE`] host uids and gids:
//! inside, uid 0 (`root`) is host uid `base`, uid 1000 (`user`) is `base + 1000`, and so
//! on. Root inside is therefore an unprivileged, otherwise unused account outside: it
//! cannot read a root-only host file, signal or ptrace host processes, or share per-uid
//! kernel limits (inotify instances, keyring quotas, `RLIMIT_NPROC`) with another sandbox.
//!
//! Ranges are numbered slots: slot `n` covers host ids
//! `first + n * RANGE_SIZE .. first + (n + 1) * RANGE_SIZE` with `first` =
//! [`DEFAULT_FIRST_ID`] (2^30) unless configured, which is far above the ids Debian hands
//! out to users (1000–59999) and to `/etc/subuid` ranges (from 100000 up). A slot is taken
//! at create, recorded in the sandbox's state (so a restarted server keeps it), and freed
//! when the sandbox is killed — after every process of it is gone, and with its writable
//! layer deleted, so a later sandbox with the same slot inherits nothing.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::sync::Mutex;

use nix::sched::{CloneFlags, unshare};
use nix::sys::wait::waitpid;
use nix::unistd::ForkResult;

use super::step::StepError;
use crate::error::{Error, Result};

/// Ids per sandbox: the whole 16-bit space Debian's tools assume.
pub const RANGE_SIZE: u32 = 65_536;
/// Where the first range starts by default.
pub const DEFAULT_FIRST_ID: u32 = 1 << 30;

/// The host ids of one sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdRange {
    /// Host id of the sandbox's uid/gid 0.
    pub base: u32,
    /// How many ids are mapped.
    pub count: u32,
}

impl IdRange {
    /// The `uid_map`/`gid_map` line: inside 0 → `base`, `count` ids.
    pub fn map_line(&self) -> String {
        format!("0 {} {}\n", self.base, self.count)
    }

    /// The host id of in-sandbox id `inner`, if mapped.
    pub fn to_host(&self, inner: u32) -> Option<u32> {
        (inner < self.count).then(|| self.base + inner)
    }

    /// The in-sandbox id of host id `host`, if it is in the range.
    pub fn to_inner(&self, host: u32) -> Option<u32> {
        host.checked_sub(self.base).filter(|i| *i < self.count)
    }
}

/// Hands out ranges (one slot per live sandbox).
#[derive(Debug)]
pub(crate) struct IdAllocator {
    first: u32,
    slots: u32,
    taken: Mutex<BTreeSet<u32>>,
}

impl IdAllocator {
    /// Slots from `first` up to the end of the 32-bit id space (the last id, 2^32-1, is
    /// the kernel's "invalid" id and never mapped).
    pub fn new(first: u32) -> Self {
        let slots = ((u64::from(u32::MAX) - u64::from(first)) / u64::from(RANGE_SIZE)) as u32;
        Self {
            first,
            slots,
            taken: Mutex::new(BTreeSet::new()),
        }
    }

    fn slot_of(&self, range: IdRange) -> Option<u32> {
        let off = range.base.checked_sub(self.first)?;
        (off % RANGE_SIZE == 0 && range.count == RANGE_SIZE).then_some(off / RANGE_SIZE)
    }

    /// The lowest free range.
    pub fn allocate(&self) -> Result<IdRange> {
        let mut taken = crate::lock::lock(&self.taken);
        let slot = (0..self.slots)
            .find(|s| !taken.contains(s))
            .ok_or_else(|| {
                Error::Unsupported(format!(
                    "no free host id range: all {} sandbox id ranges are in use",
                    self.slots
                ))
            })?;
        taken.insert(slot);
        Ok(IdRange {
            base: self.first + slot * RANGE_SIZE,
            count: RANGE_SIZE,
        })
    }

    /// Marks `range` taken (a sandbox recovered after a restart). Ranges not made by this
    /// allocator (another `first`) are ignored.
    pub fn adopt(&self, range: IdRange) {
        if let Some(slot) = self.slot_of(range) {
            crate::lock::lock(&self.taken).insert(slot);
        }
    }

    /// Frees `range` (its sandbox is gone).
    pub fn release(&self, range: IdRange) {
        if let Some(slot) = self.slot_of(range) {
            crate::lock::lock(&self.taken).remove(&slot);
        }
    }
}

/// Creates a user namespace mapping `range` (uids and gids; `setgroups` stays allowed so
/// `sudo` and login tools work inside) and returns a descriptor of it. Runs in the
/// single-threaded helper, as host root: a short-lived child unshares the namespace, the
/// helper writes the maps and keeps the namespace alive through the descriptor.
pub(crate) fn create_userns(range: IdRange) -> Result<OwnedFd, StepError> {
    create_userns_mapping(&range.map_line())
}

/// The user namespace of a sandbox's shared directories: host uid and gid
/// [`SHARED_USER_ID`] map to the sandbox's `user`, host `nobody` (65534) to the sandbox's
/// root, and nothing else maps. Used as the idmap of operator directories bound into a
/// sandbox: files of that host account are the sandbox user's, every other file appears
/// as `nobody`, and whatever the sandbox's root writes there (gVisor's Sentry creates
/// every file as that root before giving it to its owner) belongs to host `nobody` —
/// never to host root.
pub(crate) fn create_shared_userns(range: IdRange) -> Result<OwnedFd, StepError> {
    let inner = range
        .to_host(SHARED_USER_ID)
        .ok_or_else(|| StepError::refused("the sandbox's id range has no user id"))?;
    create_userns_mapping(&format!(
        "{SHARED_USER_ID} {inner} 1\n{HOST_NOBODY} {} 1\n",
        range.base
    ))
}

/// The host account whose files a namespace sandbox's `user` owns in shared directories
/// (the base layer's `user`, uid and gid 1000).
pub const SHARED_USER_ID: u32 = 1000;

/// Host `nobody`: what the sandbox's root writes in a shared directory belongs to.
const HOST_NOBODY: u32 = 65_534;

/// Creates a user namespace with `map` as its uid and gid map (see [`create_userns`]).
fn create_userns_mapping(map: &str) -> Result<OwnedFd, StepError> {
    let (ready_read, ready_write) = nix::unistd::pipe().map_err(StepError::os("userns pipe"))?;
    let (done_read, done_write) = nix::unistd::pipe().map_err(StepError::os("userns pipe"))?;
    match super::sys::fork_helper().map_err(StepError::os("fork for userns"))? {
        ForkResult::Child => {
            drop(ready_read);
            drop(done_write);
            let code = match unshare(CloneFlags::CLONE_NEWUSER) {
                Ok(()) => 0,
                Err(_) => 1,
            };
            // This forked child only reports and waits: a failed write or read is the
            // parent's to see (it reads no code, or it ends this child by closing its end).
            let _ = fs::File::from(ready_write).write_all(&[code]);
            // Stay until the parent has what it needs (EOF when it closes its end).
            let _ = fs::File::from(done_read).read(&mut [0u8; 1]);
            // SAFETY-free exit: no destructors of the parent's state may run here.
            std::process::exit(0);
        }
        ForkResult::Parent { child } => {
            drop(ready_write);
            drop(done_read);
            let mut code = [1u8];
            let read = fs::File::from(ready_read).read_exact(&mut code);
            let result = (|| {
                read.map_err(StepError::os("userns child"))?;
                if code[0] != 0 {
                    return Err(StepError::refused(
                        "unshare(CLONE_NEWUSER) failed in the userns child",
                    ));
                }
                for file in ["uid_map", "gid_map"] {
                    let path = format!("/proc/{child}/{file}");
                    fs::write(&path, map).map_err(StepError::os(format!("write {path}")))?;
                }
                let path = format!("/proc/{child}/ns/user");
                let ns = fs::File::open(&path).map_err(StepError::os(format!("open {path}")))?;
                Ok(OwnedFd::from(ns))
            })();
            drop(done_write);
            if let Err(error) = waitpid(child, None) {
                tracing::debug!(%error, "reaping the user namespace's child");
            }
            result
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_distinct_reused_after_release_and_adopted_after_restart() {
        let ids = IdAllocator::new(DEFAULT_FIRST_ID);
        let a = ids.allocate().unwrap();
        let b = ids.allocate().unwrap();
        assert_eq!(a.base, DEFAULT_FIRST_ID);
        assert_eq!(b.base, DEFAULT_FIRST_ID + RANGE_SIZE);
        assert_eq!(a.count, RANGE_SIZE);
        // No two live sandboxes share an id.
        assert!(a.base + a.count <= b.base);
        ids.release(a);
        assert_eq!(ids.allocate().unwrap(), a);

        let restarted = IdAllocator::new(DEFAULT_FIRST_ID);
        restarted.adopt(b);
        assert_eq!(restarted.allocate().unwrap(), a);
        assert_ne!(restarted.allocate().unwrap(), b);
    }

    #[test]
    fn ids_translate_inside_the_range_only() {
        let r = IdRange {
            base: 1 << 30,
            count: RANGE_SIZE,
        };
        assert_eq!(r.to_host(0), Some(1 << 30));
        assert_eq!(r.to_host(1000), Some((1 << 30) + 1000));
        assert_eq!(r.to_host(RANGE_SIZE), None);
        assert_eq!(r.to_inner((1 << 30) + 1000), Some(1000));
        assert_eq!(r.to_inner(0), None);
        assert_eq!(r.map_line(), format!("0 {} 65536\n", 1u32 << 30));
    }

    #[test]
    fn the_last_slot_stays_below_the_invalid_id() {
        let ids = IdAllocator::new(u32::MAX - 3 * RANGE_SIZE);
        let mut last = None;
        while let Ok(r) = ids.allocate() {
            last = Some(r);
        }
        let last = last.unwrap();
        assert!(u64::from(last.base) + u64::from(last.count) <= u64::from(u32::MAX));
    }
}
