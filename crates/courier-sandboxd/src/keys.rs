//! API keys: `e2b_` + 40 lowercase hex (the shape the official SDKs expect), stored only
//! as SHA-256 hashes in `<data_dir>/api-keys.json` (mode 0600), so reading the data dir
//! never reveals a usable key.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// The file holding the key hashes, relative to the data dir.
pub const KEYS_FILE: &str = "api-keys.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeyFile {
    keys: Vec<StoredKey>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredKey {
    sha256: String,
    created_at: DateTime<Utc>,
}

fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Constant-time comparison, so response timing does not leak how much of a hash matched.
fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn read_file(path: &Path) -> Result<KeyFile> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::State {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeyFile::default()),
        Err(e) => Err(Error::io("read", path)(e)),
    }
}

/// Creates a new API key, stores its hash in `data_dir` and returns the key (the only
/// time it is ever visible).
pub fn create_key(data_dir: &Path) -> Result<String> {
    fs::create_dir_all(data_dir).map_err(Error::io("create dir", data_dir))?;
    let key = format!("e2b_{}", crate::state::random_hex(20));
    let path = data_dir.join(KEYS_FILE);
    let mut file = read_file(&path)?;
    file.keys.push(StoredKey {
        sha256: hash(&key),
        created_at: Utc::now(),
    });
    let tmp = data_dir.join(format!("{KEYS_FILE}.tmp"));
    let bytes = serde_json::to_vec_pretty(&file).map_err(|e| Error::State {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(Error::io("create", &tmp))?;
    out.write_all(&bytes).map_err(Error::io("write", &tmp))?;
    drop(out);
    fs::rename(&tmp, &path).map_err(Error::io("rename", &path))?;
    Ok(key)
}

/// Who a request acts for: the SHA-256 of its API key (what the key file stores, so
/// it reveals no usable key). Sandboxes and snapshots record their owner; another
/// key's are answered as not found.
pub fn owner_of(key: &str) -> String {
    hash(key.trim())
}

/// The set of accepted keys: the hashed keys of the data dir plus an optional fixed
/// development key.
#[derive(Debug)]
pub struct KeyStore {
    path: PathBuf,
    dev_key_hash: Option<String>,
    hashes: RwLock<Vec<String>>,
}

impl KeyStore {
    /// Loads the keys of `data_dir`; `dev_key` (when given) is accepted too.
    pub fn load(data_dir: &Path, dev_key: Option<&str>) -> Result<Self> {
        let path = data_dir.join(KEYS_FILE);
        let hashes = read_file(&path)?
            .keys
            .into_iter()
            .map(|k| k.sha256)
            .collect();
        Ok(Self {
            path,
            dev_key_hash: dev_key.filter(|k| !k.is_empty()).map(hash),
            hashes: RwLock::new(hashes),
        })
    }

    fn matches(&self, hashed: &str) -> bool {
        let known = self.hashes.read().unwrap_or_else(|e| e.into_inner());
        self.dev_key_hash
            .iter()
            .chain(known.iter())
            .any(|h| equal(h.as_bytes(), hashed.as_bytes()))
    }

    /// The owner every sandbox belongs to when exactly one key is accepted (the data
    /// dir's single key, or the development key alone): the only owner a record written
    /// before owners were recorded can have had. `None` with several keys, when whose it
    /// was cannot be known.
    pub fn sole_owner(&self) -> Option<String> {
        let known = self.hashes.read().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<&String> = self.dev_key_hash.iter().chain(known.iter()).collect();
        all.sort();
        all.dedup();
        match all.as_slice() {
            [only] => Some((*only).clone()),
            _ => None,
        }
    }

    /// Whether `key` is accepted. On a miss the key file is read again, so keys created
    /// with `keys create` while the server runs work without a restart.
    pub fn verify(&self, key: &str) -> bool {
        let hashed = hash(key);
        if self.matches(&hashed) {
            return true;
        }
        if let Ok(file) = read_file(&self.path) {
            *self.hashes.write().unwrap_or_else(|e| e.into_inner()) =
                file.keys.into_iter().map(|k| k.sha256).collect();
        }
        self.matches(&hashed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn created_keys_have_the_e2b_shape_and_are_stored_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::load(dir.path(), None).unwrap();
        let key = create_key(dir.path()).unwrap();
        assert!(key.starts_with("e2b_"));
        assert_eq!(key.len(), 44);
        assert!(
            key[4..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        let text = fs::read_to_string(dir.path().join(KEYS_FILE)).unwrap();
        assert!(
            !text.contains(&key[4..]),
            "the key itself must not be stored"
        );
        let mode = fs::metadata(dir.path().join(KEYS_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Created after the store was loaded: found by the reload on a miss.
        assert!(store.verify(&key));
        assert!(!store.verify("e2b_0000000000000000000000000000000000000000"));
    }

    #[test]
    fn the_dev_key_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::load(dir.path(), Some("e2b_dev")).unwrap();
        assert!(store.verify("e2b_dev"));
        assert!(!store.verify("e2b_other"));
    }
}
