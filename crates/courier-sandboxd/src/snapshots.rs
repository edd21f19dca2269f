//! Filesystem snapshots: what a sandbox wrote, captured as one more layer on top of the
//! layers it started from, so a sandbox created from a snapshot is a sandbox created
//! from a template whose layers are the snapshot's (E2B's `POST
//! /sandboxes/{id}/snapshots`, `GET /snapshots`, `DELETE /templates/{snapshot}`, and
//! `templateID` = a snapshot in a create). Forks are snapshots nobody lists, removed once
//! their sandboxes started.
//!
//! On disk (records written atomically: temp file + rename):
//!
//! ```text
//! <data_dir>/snapshots/records/<id>.json   a SnapshotRecord
//! <data_dir>/snapshots/layers/<dir>/       a captured layer (a snapshot's, a fork's,
//!                                          or a sandbox's paused filesystem-only)
//! <data_dir>/snapshots/memory/<dir>/       a gVisor memory image taken with the layer
//!                                          of the same name (0700: it holds the
//!                                          sandbox's memory, secrets included)
//! ```
//!
//! A memory snapshot ([`SnapshotRecord::memory`]) is a gVisor sandbox checkpointed in
//! the same pause as its disk capture (see [`crate::runtime::Runtime::checkpoint`]): a
//! sandbox created from it resumes its processes and its memory (tmpfs included). The
//! image goes when no record names it; a restored sandbox no longer needs it.
//!
//! A layer directory is removed by [`Snapshots::collect_garbage`] once no record, no
//! running sandbox and no paused sandbox uses it; a half-made one (`*.partial`, a crash
//! mid-capture) likewise. Snapshots belong to the API key that made them: another key's
//! snapshot is not found, neither by id nor by name.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::lock::lock;

/// Most snapshots one API key may keep (forks in flight included); past it a new one is
/// refused until some are deleted. Each holds a copy of a sandbox's writes, at most its
/// disk size.
pub const MAX_SNAPSHOTS_PER_KEY: usize = 100;

/// Most bytes (allocated on the host's disk) one API key's snapshots may hold together.
/// A capture is measured once made, so the last one may pass it by at most one sandbox
/// disk (`diskSizeMB`, the hard bound of what a sandbox can write); it is then removed
/// and refused.
pub const MAX_SNAPSHOT_BYTES_PER_KEY: u64 = 20 << 30;

/// Longest snapshot name accepted.
const MAX_NAME_LEN: usize = 128;

/// What a snapshot is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SnapshotKind {
    /// Made through the snapshot API; listed, deleted through the API.
    Snapshot,
    /// The capture a fork starts its sandboxes from; not listed, removed once they run.
    Fork,
}

/// One snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRecord {
    /// Its id (`snap_` + 16 hex), also a `templateID` creates accept.
    pub id: String,
    /// The name it was given, if any (another `templateID` creates accept).
    pub name: Option<String>,
    /// Who made it ([`crate::keys::owner_of`]).
    pub owner: String,
    /// The sandbox it was taken of.
    pub sandbox_id: String,
    /// The template that sandbox was created from (its environment, user, workdir and
    /// limits are the snapshot's sandboxes' defaults).
    pub template_id: String,
    /// Its layers, bottom first: the sandbox's own, then the captured one.
    pub layers: Vec<PathBuf>,
    /// Listed snapshot or fork capture.
    pub kind: SnapshotKind,
    /// When it was taken.
    pub created_at: DateTime<Utc>,
    /// Bytes its own captured layer takes on the host's disk (and its memory image).
    #[serde(default)]
    pub bytes: u64,
    /// The memory image taken with it (gVisor sandboxes without internet); `None`: a
    /// filesystem snapshot, whose sandboxes boot afresh on its files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryImage>,
}

/// A gVisor memory image (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryImage {
    /// The directory `runsc checkpoint` wrote (under `<data_dir>/snapshots/memory/`).
    pub dir: PathBuf,
    /// The access token the image's envd holds in memory: a sandbox restored from it
    /// answers to this token until the control plane replaces it with its own. Written
    /// raw (a restarted server needs it; the data dir is root's alone), never logged.
    #[serde(with = "courier_secret::exposed")]
    pub envd_token: crate::state::Secret,
}

impl SnapshotRecord {
    /// The names it answers to in E2B's `SnapshotInfo.names`.
    pub fn names(&self) -> Vec<String> {
        self.name.iter().cloned().collect()
    }

    /// Whether `reference` (an id or name, optionally `:tag`-qualified and
    /// `namespace/`-prefixed as E2B writes template names) names it.
    pub fn answers_to(&self, reference: &str) -> bool {
        let bare = bare_reference(reference);
        bare == self.id || self.name.as_deref() == Some(bare)
    }
}

/// `reference` without a `:tag` (only `:default` exists for snapshots) and without a
/// `namespace/` prefix.
fn bare_reference(reference: &str) -> &str {
    let untagged = reference.split_once(':').map_or(reference, |(n, _)| n);
    untagged.rsplit_once('/').map_or(untagged, |(_, n)| n)
}

/// Checks a snapshot name: 1..=128 of `[A-Za-z0-9._-]`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidSpec {
            field: "name",
            reason: format!(
                "must be 1..={MAX_NAME_LEN} characters of letters, digits, '.', '_' and '-'"
            ),
        })
    }
}

/// The snapshot store (see the module docs).
#[derive(Debug)]
pub struct Snapshots {
    records_dir: PathBuf,
    layers_dir: PathBuf,
    memory_dir: PathBuf,
    records: std::sync::Mutex<BTreeMap<String, SnapshotRecord>>,
}

impl Snapshots {
    /// Opens (creating if needed) the store under `data_dir` and loads its records; an
    /// unreadable record is reported and removed (its layer goes with the next
    /// collection).
    pub fn open(data_dir: &Path) -> Result<Self> {
        let root = data_dir.join("snapshots");
        let records_dir = root.join("records");
        let layers_dir = root.join("layers");
        let memory_dir = root.join("memory");
        for dir in [&records_dir, &layers_dir, &memory_dir] {
            fs::create_dir_all(dir).map_err(Error::io("create dir", dir))?;
        }
        {
            // Memory images hold secrets: only root walks down to them, whatever the
            // umask was.
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(&memory_dir, fs::Permissions::from_mode(0o700))
                .map_err(Error::io("chmod", &memory_dir))?;
        }
        let mut records = BTreeMap::new();
        for entry in fs::read_dir(&records_dir).map_err(Error::io("read dir", &records_dir))? {
            let path = entry.map_err(Error::io("read dir", &records_dir))?.path();
            let parsed = (path.extension().and_then(|e| e.to_str()) == Some("json"))
                .then(|| fs::read(&path).ok())
                .flatten()
                .and_then(|b| serde_json::from_slice::<SnapshotRecord>(&b).ok());
            match parsed {
                // A fork's capture outlives no server: its sandboxes were made or not.
                Some(record) if record.kind == SnapshotKind::Snapshot => {
                    records.insert(record.id.clone(), record);
                }
                _ => crate::cleanup::remove_file(&path),
            }
        }
        Ok(Self {
            records_dir,
            layers_dir,
            memory_dir,
            records: std::sync::Mutex::new(records),
        })
    }

    /// A new, not yet existing directory for a captured layer (`prefix` says whose).
    pub fn new_layer_dir(&self, prefix: &str) -> PathBuf {
        self.layers_dir
            .join(format!("{prefix}-{}", crate::state::random_hex(8)))
    }

    /// Where the memory image taken with the layer `layer` (from
    /// [`new_layer_dir`](Self::new_layer_dir)) goes; a [`capturing`](Self::capturing)
    /// guard on the layer keeps it from collection too.
    pub fn memory_dir_for(&self, layer: &Path) -> PathBuf {
        self.memory_dir
            .join(layer.file_name().unwrap_or_else(|| "unnamed".as_ref()))
    }

    /// A new snapshot id.
    pub fn new_id() -> String {
        format!("snap_{}", crate::state::random_hex(8))
    }

    /// Refuses a new snapshot of `owner` past [`MAX_SNAPSHOTS_PER_KEY`].
    pub fn check_room(&self, owner: &str) -> Result<()> {
        let held = lock(&self.records)
            .values()
            .filter(|r| r.owner == owner)
            .count();
        if held >= MAX_SNAPSHOTS_PER_KEY {
            return Err(Error::Conflict(format!(
                "an API key may keep at most {MAX_SNAPSHOTS_PER_KEY} snapshots; delete some \
                 first"
            )));
        }
        Ok(())
    }

    /// Refuses a capture of `bytes` that would put `owner`'s snapshots past
    /// [`MAX_SNAPSHOT_BYTES_PER_KEY`] (a snapshot `replacing`, named alike, is not
    /// counted: it goes).
    pub fn check_bytes(&self, owner: &str, replacing: Option<&str>, bytes: u64) -> Result<()> {
        let held: u64 = lock(&self.records)
            .values()
            .filter(|r| r.owner == owner && r.kind == SnapshotKind::Snapshot)
            .filter(|r| replacing.is_none() || r.name.as_deref() != replacing)
            .map(|r| r.bytes)
            .sum();
        if held.saturating_add(bytes) > MAX_SNAPSHOT_BYTES_PER_KEY {
            return Err(Error::Conflict(format!(
                "snapshots of an API key may hold at most {} GiB together ({} GiB held, \
                 this one {} MiB); delete some first",
                MAX_SNAPSHOT_BYTES_PER_KEY >> 30,
                held >> 30,
                bytes >> 20
            )));
        }
        Ok(())
    }

    /// Stores `record`. A listed snapshot named like one `owner` has already replaces
    /// it under the same id (E2B: the name's template gets a new build); the replaced
    /// one's layer goes once unused. Returns the stored record.
    pub fn insert(&self, mut record: SnapshotRecord) -> Result<SnapshotRecord> {
        let mut records = lock(&self.records);
        if let Some(name) = &record.name
            && let Some(existing) = records.values().find(|r| {
                r.owner == record.owner
                    && r.kind == SnapshotKind::Snapshot
                    && r.name.as_ref() == Some(name)
            })
        {
            record.id = existing.id.clone();
        }
        if record.kind == SnapshotKind::Snapshot {
            write_json(&self.record_path(&record.id), &record)?;
        }
        records.insert(record.id.clone(), record.clone());
        Ok(record)
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.records_dir.join(format!("{id}.json"))
    }

    /// `owner`'s snapshot named `reference` (id or name, see
    /// [`SnapshotRecord::answers_to`]); fork captures are never found.
    pub fn find(&self, owner: &str, reference: &str) -> Option<SnapshotRecord> {
        lock(&self.records)
            .values()
            .find(|r| {
                r.kind == SnapshotKind::Snapshot && r.owner == owner && r.answers_to(reference)
            })
            .cloned()
    }

    /// `owner`'s listed snapshots, newest first, optionally of one sandbox and/or
    /// answering to one name.
    pub fn list(
        &self,
        owner: &str,
        sandbox_id: Option<&str>,
        name: Option<&str>,
    ) -> Vec<SnapshotRecord> {
        let mut found: Vec<SnapshotRecord> = lock(&self.records)
            .values()
            .filter(|r| r.kind == SnapshotKind::Snapshot && r.owner == owner)
            .filter(|r| sandbox_id.is_none_or(|s| r.sandbox_id == s))
            .filter(|r| name.is_none_or(|n| r.answers_to(n)))
            .cloned()
            .collect();
        found.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        found
    }

    /// Removes `owner`'s snapshot `reference` (its record; the layer goes with the next
    /// collection once no sandbox uses it). `false` when there is none.
    pub fn remove(&self, owner: &str, reference: &str) -> Result<bool> {
        let mut records = lock(&self.records);
        let Some(id) = records
            .values()
            .find(|r| {
                r.kind == SnapshotKind::Snapshot && r.owner == owner && r.answers_to(reference)
            })
            .map(|r| r.id.clone())
        else {
            return Ok(false);
        };
        let path = self.record_path(&id);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", &path)(e)),
        }
        records.remove(&id);
        Ok(true)
    }

    /// Removes a fork's capture record (by id; its layer stays while forks use it).
    pub fn forget(&self, id: &str) {
        lock(&self.records).remove(id);
    }

    /// Every layer a record stands on (template layers below its own included).
    pub fn layers_in_use(&self) -> HashSet<PathBuf> {
        lock(&self.records)
            .values()
            .flat_map(|r| r.layers.iter().cloned())
            .collect()
    }

    /// Whether a snapshot stands on a layer under `dir` (a template's layers).
    pub fn uses_layers_under(&self, dir: &Path) -> Option<String> {
        lock(&self.records)
            .values()
            .find(|r| r.layers.iter().any(|l| l.starts_with(dir)))
            .map(|r| r.id.clone())
    }

    /// Removes the captured layers that neither a record nor `in_use` (running and
    /// paused sandboxes' layers) names, and half-made captures. Returns what it removed.
    pub fn collect_garbage(&self, in_use: &HashSet<PathBuf>) -> Vec<PathBuf> {
        // Under the lock: a capture inserts its record before it is unlocked again, and
        // a capture in progress is `*.partial` until renamed... see `capturing` below.
        let records = lock(&self.records);
        let referenced: HashSet<&PathBuf> =
            records.values().flat_map(|r| r.layers.iter()).collect();
        let images: HashSet<&PathBuf> = records
            .values()
            .filter_map(|r| r.memory.as_ref().map(|m| &m.dir))
            .collect();
        let mut removed = Vec::new();
        // Memory images: kept while a record names one or its layer is being made.
        if let Ok(entries) = fs::read_dir(&self.memory_dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                let making = self
                    .layers_dir
                    .join(entry.file_name())
                    .with_extension("lock")
                    .exists();
                if !making && !images.contains(&path) {
                    match fs::remove_dir_all(&path) {
                        Ok(()) => removed.push(path),
                        Err(error) => {
                            tracing::warn!(image = %path.display(), %error, "removing an unused memory image")
                        }
                    }
                }
            }
        }
        let Ok(entries) = fs::read_dir(&self.layers_dir) else {
            return removed;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            // A capture in progress writes `<dir>.partial` and holds `<dir>.lock`.
            if name.ends_with(".lock") || path.with_extension("lock").exists() {
                continue;
            }
            if name.ends_with(".partial")
                || (!referenced.contains(&path) && !in_use.contains(&path))
            {
                match fs::remove_dir_all(&path) {
                    Ok(()) => removed.push(path),
                    Err(error) => {
                        tracing::warn!(layer = %path.display(), %error, "removing an unused snapshot layer")
                    }
                }
            }
        }
        removed
    }

    /// Marks `dir` (from [`new_layer_dir`](Self::new_layer_dir)) as being made, so no
    /// collection removes it before a record or sandbox uses it; the mark goes when the
    /// returned guard drops.
    pub fn capturing(&self, dir: &Path) -> Result<CaptureGuard> {
        let mark = dir.with_extension("lock");
        fs::write(&mark, b"").map_err(Error::io("write", &mark))?;
        Ok(CaptureGuard { mark })
    }
}

/// Keeps a layer directory being made from collection (see [`Snapshots::capturing`]).
#[derive(Debug)]
pub struct CaptureGuard {
    mark: PathBuf,
}

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        crate::cleanup::remove_file(&self.mark);
    }
}

/// Bytes the files under `dir` take on disk (allocated blocks, each inode once: hard
/// links and holes cost nothing more). Never follows a symlink.
pub fn allocated_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir()
            && let Ok(entries) = fs::read_dir(&path)
        {
            stack.extend(entries.flatten().map(|e| e.path()));
        }
        if seen.insert((meta.dev(), meta.ino())) {
            total = total.saturating_add(meta.blocks().saturating_mul(512));
        }
    }
    total
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::State {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, bytes).map_err(Error::io("write", &tmp))?;
    fs::rename(&tmp, path).map_err(Error::io("rename", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(owner: &str, name: Option<&str>, layer: PathBuf) -> SnapshotRecord {
        SnapshotRecord {
            id: Snapshots::new_id(),
            name: name.map(str::to_owned),
            owner: owner.to_owned(),
            sandbox_id: "sbx".to_owned(),
            template_id: "base".to_owned(),
            layers: vec![layer],
            kind: SnapshotKind::Snapshot,
            created_at: Utc::now(),
            bytes: 1 << 30,
            memory: None,
        }
    }

    #[test]
    fn snapshots_survive_a_reopen_and_belong_to_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Snapshots::open(dir.path()).unwrap();
        let layer = store.new_layer_dir("snap");
        fs::create_dir_all(&layer).unwrap();
        let stored = store
            .insert(record("alice", Some("mine"), layer.clone()))
            .unwrap();
        let store = Snapshots::open(dir.path()).unwrap();
        assert_eq!(store.find("alice", &stored.id), Some(stored.clone()));
        assert_eq!(
            store.find("alice", "team/mine:default").map(|r| r.id),
            Some(stored.id.clone())
        );
        // Another key finds nothing by id or name, lists nothing, deletes nothing.
        assert_eq!(store.find("mallory", &stored.id), None);
        assert_eq!(store.find("mallory", "mine"), None);
        assert!(store.list("mallory", None, None).is_empty());
        assert!(!store.remove("mallory", &stored.id).unwrap());
        assert!(store.remove("alice", &stored.id).unwrap());
        assert!(!store.remove("alice", &stored.id).unwrap());
        // Unreferenced now: collected.
        assert_eq!(store.collect_garbage(&HashSet::new()), vec![layer]);
    }

    #[test]
    fn a_reused_name_keeps_the_id_and_layers_in_use_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = Snapshots::open(dir.path()).unwrap();
        let (a, b) = (store.new_layer_dir("snap"), store.new_layer_dir("snap"));
        fs::create_dir_all(&a).unwrap();
        fs::create_dir_all(&b).unwrap();
        let first = store.insert(record("k", Some("n"), a.clone())).unwrap();
        let second = store.insert(record("k", Some("n"), b.clone())).unwrap();
        assert_eq!(first.id, second.id);
        assert_eq!(store.list("k", None, Some("n")).len(), 1);
        // `a` is no record's any more but a sandbox still runs on it.
        let in_use: HashSet<PathBuf> = [a.clone()].into();
        assert!(store.collect_garbage(&in_use).is_empty());
        assert!(a.exists() && b.exists());
        // A capture in progress is left alone too.
        let c = store.new_layer_dir("fork");
        fs::create_dir_all(&c).unwrap();
        let guard = store.capturing(&c).unwrap();
        assert_eq!(store.collect_garbage(&HashSet::new()), vec![a]);
        drop(guard);
        assert_eq!(store.collect_garbage(&HashSet::new()), vec![c]);
    }

    #[test]
    fn a_key_s_snapshots_are_bounded_in_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Snapshots::open(dir.path()).unwrap();
        let layer = store.new_layer_dir("snap");
        for n in 0..19 {
            let mut r = record("k", Some(&format!("s{n}")), layer.clone());
            r.bytes = 1 << 30;
            store.insert(r).unwrap();
        }
        store.check_bytes("k", None, 1 << 30).unwrap();
        let err = store
            .check_bytes("k", None, (1 << 30) + 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("20 GiB"), "{err}");
        // Replacing a named one frees its share; another key has its own.
        store.check_bytes("k", Some("s0"), 2 << 30).unwrap();
        store.check_bytes("other", None, 20 << 30).unwrap();
        // Allocated bytes: holes and hard links cost nothing more.
        let tree = dir.path().join("tree");
        fs::create_dir_all(&tree).unwrap();
        let sparse = fs::File::create(tree.join("sparse")).unwrap();
        sparse.set_len(1 << 30).unwrap();
        fs::write(tree.join("data"), vec![1u8; 64 << 10]).unwrap();
        fs::hard_link(tree.join("data"), tree.join("link")).unwrap();
        let bytes = allocated_bytes(&tree);
        assert!((64 << 10..1 << 20).contains(&bytes), "{bytes}");
    }

    #[test]
    fn memory_images_are_private_and_go_with_their_record() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let store = Snapshots::open(dir.path()).unwrap();
        // Another user of the host reads nothing of a sandbox's memory.
        let mode = fs::metadata(dir.path().join("snapshots/memory"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let layer = store.new_layer_dir("snap");
        let image = store.memory_dir_for(&layer);
        let guard = store.capturing(&layer).unwrap();
        fs::create_dir_all(&layer).unwrap();
        fs::create_dir_all(&image).unwrap();
        // Being made: neither goes.
        assert!(store.collect_garbage(&HashSet::new()).is_empty());
        let mut r = record("k", None, layer.clone());
        r.memory = Some(MemoryImage {
            dir: image.clone(),
            envd_token: crate::state::Secret::new("source-token"),
        });
        let stored = store.insert(r).unwrap();
        drop(guard);
        assert!(store.collect_garbage(&HashSet::new()).is_empty());
        // The token is kept for the restore, never shown.
        let reopened = Snapshots::open(dir.path()).unwrap();
        let found = reopened.find("k", &stored.id).unwrap();
        assert_eq!(
            found.memory.as_ref().unwrap().envd_token.expose(),
            "source-token"
        );
        assert!(!format!("{found:?}").contains("source-token"));
        assert!(reopened.remove("k", &stored.id).unwrap());
        let mut removed = reopened.collect_garbage(&HashSet::new());
        removed.sort();
        let mut expected = vec![layer, image.clone()];
        expected.sort();
        assert_eq!(removed, expected);
        assert!(!image.exists());
    }

    #[test]
    fn names_are_checked() {
        check_name("snap-1.ok_").unwrap();
        for bad in ["", "a/b", "../x", "a b", &"x".repeat(129)] {
            let err = check_name(bad).unwrap_err().to_string();
            assert!(err.contains("name"), "{err}");
        }
    }
}
