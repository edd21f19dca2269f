//! Sandbox records: what the control plane knows about each sandbox beyond its processes
//! (template, metadata, timestamps, envd access token, lifecycle), persisted as one JSON
//! file per sandbox so a restarted server finds its sandboxes again.
//!
//! ```text
//! <data_dir>/records/<id>.json
//! ```
//!
//! Files are written to a temporary name and renamed, so a crash leaves either the old or
//! the new record, never half of one.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Whether a sandbox's processes run or are frozen: E2B's `running` / `paused`, the same
/// type the answers carry. Paused sandboxes are frozen (memory kept); the proxy answers
/// 502 until they are resumed.
pub use courier_e2b::models::SandboxState;

/// Everything the control plane keeps about one sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxRecord {
    /// The sandbox id (20 of `[a-z0-9]`).
    pub sandbox_id: String,
    /// The resolved template id.
    pub template_id: String,
    /// The alias the sandbox was created with, when it was one.
    pub alias: Option<String>,
    /// The token envd requires in `X-Access-Token` (written raw: a restarted server needs
    /// it to reach the sandbox's envd).
    #[serde(with = "courier_secret::exposed")]
    pub envd_access_token: Secret,
    /// When it was created.
    pub started_at: DateTime<Utc>,
    /// When it is killed (or paused with `auto_pause`) unless the timeout moves.
    pub end_at: DateTime<Utc>,
    /// User metadata from the create request.
    pub metadata: BTreeMap<String, String>,
    /// CPU quota in CPUs.
    pub cpu_count: u32,
    /// Memory limit in MiB.
    pub memory_mb: u64,
    /// Disk size reported to clients, in MiB.
    pub disk_size_mb: u64,
    /// Running or paused.
    pub state: SandboxState,
    /// Pause instead of kill at the deadline.
    pub auto_pause: bool,
    /// When set, traffic reaching the sandbox while it is paused resumes it (E2B's
    /// `autoResume`), for this many seconds (the timeout it was created with). Records
    /// from before it existed read as `None` (no auto-resume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_resume_timeout_secs: Option<u64>,
    /// Whether the sandbox has outbound internet (slirp4netns); otherwise only loopback.
    pub allow_internet_requested: bool,
    /// E2B's `network` settings as enforced (records from before they existed read as no
    /// rules, public traffic allowed).
    #[serde(default)]
    pub network: NetworkRecord,
    /// The token ports other than envd's require in `e2b-traffic-access-token`; `None`
    /// when the sandbox's ports are public (`allowPublicTraffic`, the default).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "courier_secret::exposed::option"
    )]
    pub traffic_access_token: Option<Secret>,
    /// The volumes mounted into it (E2B's `volumeMounts`), kept so a volume in use is not
    /// deleted and the detail reports them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMountRecord>,
    /// Who created it ([`crate::keys::owner_of`] of its API key); `None` for sandboxes
    /// made by the server itself (template builds) or recorded before owners were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Whether its timeout's auto-pause keeps memory (E2B's `autoPauseMemory`, default
    /// true); false: the auto-pause is filesystem-only.
    #[serde(default = "default_true")]
    pub auto_pause_memory: bool,
    /// Set while it is paused filesystem-only: the layers (bottom first, its own
    /// captured writes last) it reboots from on resume. No process of it runs then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_layers: Option<Vec<PathBuf>>,
    /// The create's `envVars` as JSON, kept (masked in `Debug`: they may hold
    /// credentials) for what starts envd again with them: the reboot that resumes a
    /// filesystem-only pause, and forks.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "courier_secret::exposed::option"
    )]
    pub env_vars: Option<Secret>,
}

impl SandboxRecord {
    /// The create's environment variables (see [`SandboxRecord::env_vars`]).
    pub fn env_vars(&self) -> BTreeMap<String, String> {
        self.env_vars
            .as_ref()
            .and_then(|s| serde_json::from_str(s.expose()).ok())
            .unwrap_or_default()
    }
}

/// A volume mounted into a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMountRecord {
    /// The volume's id.
    #[serde(rename = "volumeID")]
    pub volume_id: String,
    /// Its name (what the create named).
    pub name: String,
    /// Where it is mounted inside the sandbox.
    pub path: String,
}

/// A sandbox's E2B network settings, persisted so that they survive a server restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkRecord {
    /// `allowOut`: CIDRs, IPs and domains let through.
    #[serde(default)]
    pub allow_out: Vec<String>,
    /// `denyOut`: CIDRs and IPs refused (`0.0.0.0/0` = all traffic).
    #[serde(default)]
    pub deny_out: Vec<String>,
    /// Whether the sandbox's ports are reachable without the traffic access token.
    #[serde(default = "default_true")]
    pub allow_public_traffic: bool,
    /// `rules`: per-host request transforms (header values are secrets: `Debug` masks
    /// them; the record file carries them raw, as it does the access tokens).
    #[serde(
        default,
        skip_serializing_if = "crate::egress::TransformRules::is_empty"
    )]
    pub rules: crate::egress::TransformRules,
    /// `maskRequestHost`: the `Host` requests to the sandbox's ports arrive with
    /// (`${PORT}` replaced by the port); `None` keeps the client's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_request_host: Option<String>,
}

fn default_true() -> bool {
    true
}

impl Default for NetworkRecord {
    fn default() -> Self {
        Self {
            allow_out: Vec::new(),
            deny_out: Vec::new(),
            allow_public_traffic: true,
            rules: crate::egress::TransformRules::default(),
            mask_request_host: None,
        }
    }
}

pub use courier_secret::Secret;

/// The directory of persisted [`SandboxRecord`]s.
#[derive(Debug, Clone)]
pub struct RecordStore {
    dir: PathBuf,
}

impl RecordStore {
    /// Opens (creating if needed) the record directory `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(Error::io("create dir", &dir))?;
        Ok(Self { dir })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Every readable record. Unreadable files are reported and removed: a record that
    /// cannot be parsed cannot be acted on, and its sandbox is reaped by the runtime.
    pub fn load_all(&self) -> Result<Vec<SandboxRecord>> {
        let mut records = Vec::new();
        let entries = fs::read_dir(&self.dir).map_err(Error::io("read dir", &self.dir))?;
        for entry in entries {
            let path = entry.map_err(Error::io("read dir", &self.dir))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                // Leftover temporary files from an interrupted write.
                crate::cleanup::remove_file(&path);
                continue;
            }
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(record) => records.push(record),
                Err(reason) => {
                    tracing::warn!(path = %path.display(), %reason, "dropping unreadable sandbox record");
                    crate::cleanup::remove_file(&path);
                }
            }
        }
        Ok(records)
    }

    /// Writes `record` atomically.
    pub fn save(&self, record: &SandboxRecord) -> Result<()> {
        let path = self.path(&record.sandbox_id);
        let tmp = self.dir.join(format!("{}.tmp", record.sandbox_id));
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| Error::State {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        fs::write(&tmp, bytes).map_err(Error::io("write", &tmp))?;
        fs::rename(&tmp, &path).map_err(Error::io("rename", &path))
    }

    /// Removes the record of `id` (missing is fine).
    pub fn remove(&self, id: &str) -> Result<()> {
        let path = self.path(id);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("remove", &path)(e))
            }
            _ => Ok(()),
        }
    }

    /// The record directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A new sandbox id: 20 characters of `[a-z0-9]`, like E2B's (no `-`, because hosts are
/// parsed as `<port>-<id>`).
pub fn new_sandbox_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..20)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A new random secret: `bytes` random bytes as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill(&mut buf[..]);
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> SandboxRecord {
        SandboxRecord {
            sandbox_id: id.to_owned(),
            template_id: "base".to_owned(),
            alias: Some("base".to_owned()),
            envd_access_token: Secret::new("t"),
            started_at: Utc::now(),
            end_at: Utc::now(),
            metadata: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
            cpu_count: 2,
            memory_mb: 1024,
            disk_size_mb: 4096,
            state: SandboxState::Running,
            auto_pause: false,
            auto_resume_timeout_secs: Some(30),
            allow_internet_requested: false,
            network: NetworkRecord {
                allow_out: vec!["example.com".to_owned()],
                deny_out: vec!["0.0.0.0/0".to_owned()],
                allow_public_traffic: false,
                rules: crate::egress::TransformRules::parse(
                    Some(&serde_json::json!({
                        "example.com": [{"transform": {"headers": {"X-Proof": "p-0123456789"}}}]
                    })),
                    "rules",
                )
                .unwrap(),
                mask_request_host: Some("${PORT}-app.example.com".to_owned()),
            },
            traffic_access_token: Some(Secret::new("tok")),
            volume_mounts: Vec::new(),
            owner: None,
            auto_pause_memory: true,
            paused_layers: None,
            env_vars: None,
        }
    }

    #[test]
    fn sandbox_ids_are_twenty_lowercase_alphanumerics() {
        for _ in 0..100 {
            let id = new_sandbox_id();
            assert_eq!(id.len(), 20);
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            );
        }
    }

    #[test]
    fn records_round_trip_and_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::open(dir.path().join("records")).unwrap();
        store.save(&record("a1")).unwrap();
        store.save(&record("b2")).unwrap();
        fs::write(store.dir().join("broken.json"), "{").unwrap();
        let mut all = store.load_all().unwrap();
        all.sort_by(|a, b| a.sandbox_id.cmp(&b.sandbox_id));
        assert_eq!(
            all,
            vec![record_at(&all[0], "a1"), record_at(&all[1], "b2")]
        );
        assert!(!store.dir().join("broken.json").exists());
        store.remove("a1").unwrap();
        store.remove("a1").unwrap();
        assert_eq!(store.load_all().unwrap().len(), 1);
    }

    #[test]
    fn transform_rules_survive_the_record_and_stay_out_of_debug() {
        // The record file is how rules survive a restart: the value must be there raw,
        // and nowhere in the record's Debug (logs).
        let r = record("t1");
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("p-0123456789"), "{json}");
        let back: SandboxRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back.network, r.network);
        let debug = format!("{r:?}");
        assert!(
            !debug.contains("p-0123456789") && debug.contains("X-Proof"),
            "{debug}"
        );
    }

    #[test]
    fn records_without_network_settings_read_as_public_with_no_rules() {
        let mut json = serde_json::to_value(record("old")).unwrap();
        let map = json.as_object_mut().unwrap();
        map.remove("network");
        map.remove("trafficAccessToken");
        let old: SandboxRecord = serde_json::from_value(json).unwrap();
        assert_eq!(old.network, NetworkRecord::default());
        assert!(old.network.allow_public_traffic);
        assert_eq!(old.traffic_access_token, None);
    }

    #[test]
    fn the_traffic_token_is_persisted_but_never_debug_printed() {
        let r = record("a1");
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"trafficAccessToken\":\"tok\""), "{json}");
        assert!(!format!("{r:?}").contains("\"tok\""));
    }

    fn record_at(found: &SandboxRecord, id: &str) -> SandboxRecord {
        SandboxRecord {
            started_at: found.started_at,
            end_at: found.end_at,
            ..record(id)
        }
    }
}
