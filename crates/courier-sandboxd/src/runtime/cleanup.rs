//! Ending sandboxes: kill, kill all, and recovery of what an earlier run left behind.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;

use nix::mount::{MntFlags, umount2};

use super::cgroup::SandboxCgroup;
use super::idmap::IdRange;
use super::registry::{Entry, process_alive};
use super::spec::validate_id;
use super::{RecoverPolicy, RecoveryReport, Runtime, network, sys};
use crate::error::{Error, Result};

impl Runtime {
    /// Kills the sandbox: SIGKILL to every process in its cgroup, then its cgroups and
    /// directories are removed and its host id range freed. Its mounts (and its disk's
    /// loop device) die with its mount namespace; any that leaked onto the host are
    /// detached.
    pub fn kill(&self, id: &str) -> Result<()> {
        let entry = self.known().remove(id);
        let Some(entry) = entry else {
            // Known on disk only (e.g. before `recover`)?
            if self.dirs(id).base.exists() && !self.creating_ids().contains(id) {
                let ids = self.read_state(id).and_then(|s| s.ids);
                return self.destroy(id, &self.cgroups.sandbox(id), None, None, ids);
            }
            return Err(Error::NotFound(id.to_string()));
        };
        self.destroy(
            id,
            &entry.cgroup,
            entry.monitor,
            entry.network,
            entry.state.ids,
        )
    }

    /// Kills every sandbox this runtime knows (e.g. at shutdown when sandboxes must not
    /// outlive the server). Returns the first error after trying all.
    pub fn kill_all(&self) -> Result<()> {
        let ids: Vec<String> = self.known().keys().cloned().collect();
        let mut first = Ok(());
        for id in ids {
            if let Err(e) = self.kill(&id)
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }

    pub(super) fn destroy(
        &self,
        id: &str,
        cgroup: &SandboxCgroup,
        monitor: Option<Child>,
        network: Option<network::Attached>,
        ids: Option<IdRange>,
    ) -> Result<()> {
        let mut first_err = None;
        let mut note = |r: Result<()>| {
            if let Err(e) = r {
                tracing::warn!(sandbox = id, error = %e, "cleanup step failed");
                first_err.get_or_insert(e);
            }
        };
        note(cgroup.kill_all());
        if let Some(mut monitor) = monitor {
            // The monitor is in the cgroup, so it is dead or dying: reap it.
            sys::kill_and_reap(&mut monitor, "a killed sandbox's monitor");
        }
        if let Some(mut network) = network {
            if let Err(error) = network.kill() {
                tracing::debug!(%error, sandbox = id, "killing slirp4netns");
            }
            if let Err(error) = network.wait() {
                tracing::warn!(%error, sandbox = id, "reaping slirp4netns");
            }
        }
        let base = self.dirs(id).base;
        note(detach_mounts_under(&base));
        note(cgroup.remove());
        if base.exists() {
            note(fs::remove_dir_all(&base).map_err(Error::io("remove", &base)));
        }
        // Every process with these ids is gone and the disk holding their files deleted.
        if let Some(ids) = ids
            && first_err.is_none()
        {
            self.ids.release(ids);
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Finds sandboxes left in the data dir by a previous run. With
    /// [`RecoverPolicy::Adopt`], those still running are registered again; everything else
    /// (dead inits, half-created sandboxes, or all with [`RecoverPolicy::KillAll`]) is
    /// reaped: processes killed, mounts detached, cgroups and directories removed.
    /// Call it once at startup, before creating sandboxes.
    pub fn recover(&self, policy: RecoverPolicy) -> Result<RecoveryReport> {
        let mut report = RecoveryReport::default();
        let sandboxes_dir = self.config.data_dir.join("sandboxes");
        let entries =
            fs::read_dir(&sandboxes_dir).map_err(Error::io("read dir", &sandboxes_dir))?;
        let mut ids: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        for id in ids {
            if validate_id(&id).is_err()
                || self.known().contains_key(&id)
                || self.creating_ids().contains(&id)
            {
                continue;
            }
            let cgroup = self.cgroups.sandbox(&id);
            let state = self.read_state(&id);
            let range = state.as_ref().and_then(|s| s.ids);
            if let Some(range) = range {
                // Taken until its sandbox is reaped below or killed later.
                self.ids.adopt(range);
            }
            if policy == RecoverPolicy::Adopt
                && let Some(state) = state
                && process_alive(state.handle.init_pid, state.init_start_time)
                && cgroup.exists()
            {
                report.adopted.push(state.handle.clone());
                self.known().insert(
                    id,
                    Entry {
                        state,
                        cgroup,
                        monitor: None,
                        network: None,
                        lifeline: None,
                    },
                );
                continue;
            }
            match self.destroy(&id, &cgroup, None, None, range) {
                Ok(()) => report.reaped.push(id),
                Err(e) => report.failed.push((id, e.to_string())),
            }
        }
        Ok(report)
    }
}

/// Detaches any mount point under `dir` from the host's mount table (there should be
/// none: sandbox mounts live in the sandbox's own namespace). Deepest first.
fn detach_mounts_under(dir: &Path) -> Result<()> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Ok(());
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        umount2(&point, MntFlags::MNT_DETACH)
            .map_err(|e| Error::sys(format!("umount {}", point.display()))(e.into()))?;
    }
    Ok(())
}
