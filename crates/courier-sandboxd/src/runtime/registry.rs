//! The sandboxes a runtime knows: their entries in memory and their persisted state.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::MutexGuard;

use super::Runtime;
use super::cgroup::SandboxCgroup;
use super::idmap::IdRange;
use super::network;
use super::spec::{SandboxHandle, SandboxSpec};
use crate::error::{Error, Result};

/// Persisted per-sandbox state (`state.json`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct SandboxState {
    pub(super) handle: SandboxHandle,
    /// `starttime` of the anchor process, to tell it from a recycled PID.
    pub(super) init_start_time: u64,
    pub(super) created_unix_ms: u128,
    pub(super) spec: SandboxSpec,
    /// The sandbox's host ids (namespace sandboxes).
    #[serde(default)]
    pub(super) ids: Option<IdRange>,
}

pub(super) struct Entry {
    pub(super) state: SandboxState,
    pub(super) cgroup: SandboxCgroup,
    /// The helper's monitor process when this runtime started it (reaped on kill).
    pub(super) monitor: Option<Child>,
    /// slirp4netns when this runtime started it for outbound access (it lives in the
    /// sandbox's cgroup and dies with it; reaped on kill).
    pub(super) network: Option<network::Attached>,
    /// The write end of the sandbox's lifeline ([`SandboxSpec::die_with_runtime`]):
    /// close-on-exec, so it lives exactly as long as this process, whose end — however
    /// it comes — is EOF for the sandbox's monitor, which then kills it.
    pub(super) lifeline: Option<OwnedFd>,
}

/// Field 22 of `/proc/<pid>/stat`: the process's start time in clock ticks after boot.
pub(super) fn process_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    // `rest` starts at field 3 (state); starttime is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is alive (not a zombie) and is the process that started at `start_time`
/// (0 = don't check).
pub(super) fn process_alive(pid: i32, start_time: u64) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(close) = stat.rfind(')') else {
        return false;
    };
    let state = stat[close + 2..].chars().next();
    if matches!(state, Some('Z') | Some('X')) {
        return false;
    }
    start_time == 0 || process_start_time(pid) == Some(start_time)
}

impl Runtime {
    /// The sandboxes this runtime knows, locked. Code holding the lock only reads and
    /// updates entries (errors are returned, not panicked), so it is never poisoned.
    pub(super) fn known(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.sandboxes
            .lock()
            .expect("the sandbox map's lock is never held across a panic")
    }

    /// The ids being created right now, locked (never poisoned: see [`Self::known`]).
    pub(super) fn creating_ids(&self) -> MutexGuard<'_, HashSet<String>> {
        self.creating
            .lock()
            .expect("the creating set's lock is never held across a panic")
    }

    /// The sandboxes being killed, locked (never poisoned: see [`Self::known`]).
    pub(super) fn ending_ids(&self) -> MutexGuard<'_, HashMap<String, Vec<PathBuf>>> {
        self.ending
            .lock()
            .expect("the ending map's lock is never held across a panic")
    }

    pub(super) fn save_state(&self, base: &Path, state: &SandboxState) -> Result<()> {
        let path = base.join("state.json");
        let tmp = base.join("state.json.tmp");
        let json = serde_json::to_vec_pretty(state).map_err(|e| Error::State {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        fs::write(&tmp, json).map_err(Error::io("write", &tmp))?;
        fs::rename(&tmp, &path).map_err(Error::io("rename", &path))
    }

    pub(super) fn read_state(&self, id: &str) -> Option<SandboxState> {
        let path = self.dirs(id).base.join("state.json");
        fs::read(&path)
            .ok()
            .and_then(|raw| serde_json::from_slice(&raw).ok())
    }

    pub(super) fn with_entry<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut Entry) -> Result<T>,
    ) -> Result<T> {
        let mut map = self.known();
        let entry = map
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        f(entry)
    }

    /// Ids and handles of the sandboxes this runtime knows.
    pub fn list(&self) -> Vec<SandboxHandle> {
        let map = self.known();
        let mut list: Vec<SandboxHandle> = map.values().map(|e| e.state.handle.clone()).collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    /// Every layer directory a known sandbox is built on (their overlays use them as
    /// lower dirs, so they must stay until those sandboxes are gone).
    pub fn layers_in_use(&self) -> HashSet<PathBuf> {
        let mut layers: HashSet<PathBuf> = self
            .known()
            .values()
            .flat_map(|e| e.state.spec.layers.iter().cloned())
            .collect();
        // A killed sandbox's overlay lives until its last process is gone.
        layers.extend(self.ending_ids().values().flatten().cloned());
        layers
    }

    /// The layers sandbox `id` runs on, bottom first.
    pub fn layers_of(&self, id: &str) -> Result<Vec<PathBuf>> {
        self.with_entry(id, |e| Ok(e.state.spec.layers.clone()))
    }

    /// The handle of sandbox `id`.
    pub fn get(&self, id: &str) -> Result<SandboxHandle> {
        self.with_entry(id, |e| Ok(e.state.handle.clone()))
    }

    /// The host ids of namespace sandbox `id` (`None` under gVisor).
    pub fn id_range(&self, id: &str) -> Result<Option<IdRange>> {
        self.with_entry(id, |e| Ok(e.state.ids))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_start_time_is_checked() {
        let me = std::process::id() as i32;
        let start = process_start_time(me).unwrap();
        assert!(process_alive(me, start));
        assert!(process_alive(me, 0));
        assert!(!process_alive(me, start + 1));
        assert!(!process_alive(i32::MAX, 0));
    }
}
