//! File metadata where the file system cannot hold user extended attributes: gVisor's
//! gofer before its 2026-05 release answers `EOPNOTSUPP` to `setxattr` on the sandbox's
//! root (and lists no attribute); courier-sandboxd turns this store on for gVisor
//! sandboxes with `--metadata-store`. Off unless [`enable`]d; where xattrs work (gVisor's
//! own `/tmp`) they are still used.
//!
//! Entries are keyed by the file's canonical path and hold the modification time and
//! size the file had when its metadata was set: the metadata shows while the file is
//! still the one uploaded. A file whose content a sandbox process changed, or that was
//! removed and created again at the same path, shows none (never the old file's, unless
//! the new one has the same size and the same modification time, whose clock may tick
//! only every few milliseconds). envd's own rename carries entries along ([`rename`]); a
//! `mv`, `cp` or content change by a sandbox process drops them, unlike real xattrs: the
//! known differences. (That gofer reports no birth time, and its inode numbers are
//! assigned per boot, so neither can tell files apart.) Python's `os.setxattr` in the
//! sandbox still fails: only envd's uploads use the store.
//!
//! Access: the store lives in memory, persisted as root to a 0600 JSON file (written
//! atomically, read back at start), so sandbox users cannot read or edit it; envd reads
//! and writes it on behalf of a request only after checking, with the requester's
//! credentials, that they may read (get) or write (set) the file, as `user.*` xattrs
//! require. Bounded: [`MAX_ENTRIES`] files and [`MAX_BYTES`] of keys and values.

use std::{
    collections::{BTreeMap, HashMap},
    io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use serde::{Deserialize, Serialize};

/// The most files with metadata in the store.
pub const MAX_ENTRIES: usize = 100_000;
/// The most bytes of keys and values in the store.
pub const MAX_BYTES: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    /// Modification time (seconds, nanoseconds) and size of the file the metadata was
    /// set on.
    stamp: (i64, u32, u64),
    metadata: BTreeMap<String, String>,
}

impl Entry {
    fn bytes(&self) -> usize {
        self.metadata.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

#[derive(Debug, Default)]
struct Store {
    entries: HashMap<String, Entry>,
    bytes: usize,
}

struct Shared {
    file: PathBuf,
    store: Mutex<Store>,
    dirty: tokio::sync::Notify,
}

static STORE: OnceLock<Arc<Shared>> = OnceLock::new();

/// Turns the store on, persisted at `file`. Loads what a
/// previous envd left there and starts the task that writes changes back. Call once, as
/// root, inside a tokio runtime.
pub fn enable(file: PathBuf) -> io::Result<()> {
    let store = load(&file)?;
    let shared = Arc::new(Shared {
        file,
        store: Mutex::new(store),
        dirty: tokio::sync::Notify::new(),
    });
    if STORE.set(shared.clone()).is_err() {
        return Err(io::Error::other("the metadata store is already enabled"));
    }
    tokio::spawn(persist(shared));
    Ok(())
}

/// What a previous envd persisted at `file` (nothing when there is no file).
fn load(file: &Path) -> io::Result<Store> {
    let mut store = Store::default();
    match std::fs::read(file) {
        Ok(raw) => {
            let entries: HashMap<String, Entry> = serde_json::from_slice(&raw)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            store.bytes = entries.values().map(Entry::bytes).sum();
            store.entries = entries;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(store)
}

/// Whether [`enable`] was called.
pub(crate) fn enabled() -> bool {
    STORE.get().is_some()
}

/// Writes the store back whenever it changed (at most every 50 ms), as root: this task
/// runs on envd's async workers, which never take a user's credentials.
async fn persist(shared: Arc<Shared>) {
    loop {
        shared.dirty.notified().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let json = {
            let store = lock(&shared.store);
            serde_json::to_vec(&store.entries).unwrap_or_default()
        };
        let tmp = shared.file.with_extension("tmp");
        let written = write_private(&tmp, &json).and_then(|()| std::fs::rename(&tmp, &shared.file));
        if let Err(e) = written {
            tracing::warn!(file = %shared.file.display(), error = %e, "persisting file metadata");
        }
    }
}

/// Writes `data` to `path` readable by root only, its directory created 0700 first (on
/// first use: a sandbox that never stores metadata gets no trace of the store).
fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(data)?;
    file.sync_all()
}

fn lock(store: &Mutex<Store>) -> std::sync::MutexGuard<'_, Store> {
    store
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether this thread's effective credentials (envd switches only those to the
/// requester's) allow `access` to `path`.
fn may(path: &Path, access: rustix::fs::Access) -> io::Result<()> {
    rustix::fs::accessat(rustix::fs::CWD, path, access, rustix::fs::AtFlags::EACCESS)?;
    Ok(())
}

/// The canonical path of `path` (not following a final symlink), and the modification
/// time and size that identify its current content.
fn identity(path: &Path) -> io::Result<(String, (i64, u32, u64))> {
    let canonical = match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => {
            std::fs::canonicalize(parent)?.join(name)
        }
        _ => std::fs::canonicalize(path)?,
    };
    let stat = rustix::fs::statx(
        rustix::fs::CWD,
        &canonical,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        rustix::fs::StatxFlags::MTIME | rustix::fs::StatxFlags::SIZE,
    )?;
    let key = canonical
        .to_str()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path is not UTF-8"))?
        .to_owned();
    Ok((
        key,
        (stat.stx_mtime.tv_sec, stat.stx_mtime.tv_nsec, stat.stx_size),
    ))
}

/// The stored metadata of `path`; empty when there is none, the file is not the one it
/// was stored for, or the caller (this thread's credentials) may not read it.
pub(crate) fn get(path: &Path) -> HashMap<String, String> {
    let Some(shared) = STORE.get() else {
        return HashMap::new();
    };
    if may(path, rustix::fs::Access::READ_OK).is_err() {
        return HashMap::new();
    }
    let Ok((key, stamp)) = identity(path) else {
        return HashMap::new();
    };
    let store = lock(&shared.store);
    match store.entries.get(&key) {
        Some(entry) if entry.stamp == stamp => entry
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        _ => HashMap::new(),
    }
}

/// Replaces the metadata of `path` (empty: removes it), if the caller (this thread's
/// credentials) may write the file.
pub(crate) fn set(path: &Path, metadata: &[(String, String)]) -> io::Result<()> {
    let Some(shared) = STORE.get() else {
        return Err(io::Error::from_raw_os_error(
            rustix::io::Errno::OPNOTSUPP.raw_os_error(),
        ));
    };
    may(path, rustix::fs::Access::WRITE_OK)?;
    let (key, stamp) = identity(path)?;
    let entry = Entry {
        stamp,
        metadata: metadata.iter().cloned().collect(),
    };
    {
        let mut store = lock(&shared.store);
        let old = store.entries.get(&key).map_or(0, Entry::bytes);
        if entry.metadata.is_empty() {
            if store.entries.remove(&key).is_none() {
                return Ok(());
            }
            store.bytes -= old;
        } else {
            let new_entry = !store.entries.contains_key(&key);
            if (new_entry && store.entries.len() >= MAX_ENTRIES)
                || store.bytes - old + entry.bytes() > MAX_BYTES
            {
                return Err(io::Error::new(
                    io::ErrorKind::QuotaExceeded,
                    format!(
                        "the sandbox's file metadata store is full ({MAX_ENTRIES} files, \
                         {MAX_BYTES} bytes)"
                    ),
                ));
            }
            store.bytes = store.bytes - old + entry.bytes();
            store.entries.insert(key, entry);
        }
    }
    shared.dirty.notify_one();
    Ok(())
}

/// Carries the entries of `from` (a file, or everything under a directory) to `to`,
/// after envd renamed it.
pub(crate) fn rename(from: &Path, to: &Path) {
    let Some(shared) = STORE.get() else { return };
    // `from` is gone: canonicalize its parent only (envd resolved it already).
    let from = match (from.parent(), from.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent)
            .map(|p| p.join(name))
            .unwrap_or_else(|_| from.to_owned()),
        _ => from.to_owned(),
    };
    let (Some(from), Ok(to)) = (from.to_str(), std::fs::canonicalize(to)) else {
        return;
    };
    let Some(to) = to.to_str() else { return };
    let prefix = format!("{from}/");
    let mut changed = false;
    {
        let mut store = lock(&shared.store);
        let moved: Vec<String> = store
            .entries
            .keys()
            .filter(|k| *k == from || k.starts_with(&prefix))
            .cloned()
            .collect();
        for old in moved {
            if let Some(entry) = store.entries.remove(&old) {
                let new = format!("{to}{}", &old[from.len()..]);
                store.entries.insert(new, entry);
                changed = true;
            }
        }
    }
    if changed {
        shared.dirty.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The only test of this crate that turns the store on (it is process-wide).
    #[tokio::test]
    async fn stores_persists_follows_renames_and_drops_changed_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("state/meta.json");
        enable(file.clone()).expect("enable");
        assert!(enable(file.clone()).is_err(), "enabled twice");

        let a = dir.path().join("a.txt");
        std::fs::write(&a, "one").expect("write");
        let pairs = [("k".to_owned(), "v".to_owned())];
        set(&a, &pairs).expect("set");
        assert_eq!(get(&a).get("k").map(String::as_str), Some("v"));

        // Persisted (root-only) and read back as a restarted envd would.
        let mut waited = 0;
        while !file.exists() && waited < 100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            waited += 1;
        }
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&file).expect("persisted").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let reloaded = load(&file).expect("load");
        let key = std::fs::canonicalize(&a).expect("canonical");
        assert_eq!(
            reloaded.entries[key.to_str().expect("utf-8")].metadata["k"],
            "v"
        );
        assert_eq!(reloaded.bytes, 2);

        // envd's rename carries it along.
        let b = dir.path().join("sub/b.txt");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::rename(&a, &b).expect("rename");
        rename(&a, &b);
        assert!(get(&a).is_empty());
        assert_eq!(get(&b).get("k").map(String::as_str), Some("v"));
        // A directory rename carries what is under it.
        let moved = dir.path().join("moved");
        std::fs::rename(dir.path().join("sub"), &moved).expect("rename dir");
        rename(&dir.path().join("sub"), &moved);
        let c = moved.join("b.txt");
        assert_eq!(get(&c).get("k").map(String::as_str), Some("v"));

        // A file changed, or removed and created again, by someone else shows none.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&c, "changed content").expect("rewrite");
        assert!(get(&c).is_empty());
        set(&c, &pairs).expect("set again");
        std::fs::remove_file(&c).expect("remove");
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&c, "another file").expect("recreate");
        assert!(get(&c).is_empty());

        // Clearing removes the entry and its bytes.
        set(&c, &pairs).expect("set");
        set(&c, &[]).expect("clear");
        assert!(get(&c).is_empty());
        let store = lock(&STORE.get().expect("enabled").store);
        assert_eq!(store.bytes, 0, "{:?}", store.entries);
    }
}
