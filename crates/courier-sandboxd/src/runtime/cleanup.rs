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

/// The file `begin_kill` leaves in a sandbox's directory: the sandbox was killed and its
/// cleanup may not have finished. A sandbox with it is never adopted again (see
/// [`Runtime::recover`]): a server restarted mid-cleanup finishes it.
const ENDING_MARKER: &str = "killed";

/// A sandbox [`Runtime::begin_kill`] made unknown and signalled: each of its processes
/// has a SIGKILL pending. [`Runtime::finish_kill`] waits for them and removes the rest
/// (mounts, network, cgroups, directories, host ids); until then the sandbox's id, host
/// ids and layers stay taken. Dropped unfinished (a crash), the marker in its directory
/// has the next `recover` finish it.
#[derive(Debug)]
#[must_use = "a sandbox being killed is only cleaned up by Runtime::finish_kill"]
pub struct Ending {
    id: String,
    cgroup: SandboxCgroup,
    monitor: Option<Child>,
    network: Option<network::Attached>,
    ids: Option<IdRange>,
}

impl Ending {
    /// The sandbox's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Runtime {
    /// Kills the sandbox: SIGKILL to every process in its cgroup, then its cgroups and
    /// directories are removed and its host id range freed. Its mounts (and its disk's
    /// loop device) die with its mount namespace; any that leaked onto the host are
    /// detached. [`begin_kill`](Self::begin_kill) then [`finish_kill`](Self::finish_kill).
    pub fn kill(&self, id: &str) -> Result<()> {
        let ending = self.begin_kill(id)?;
        self.finish_kill(ending)
    }

    /// The part of a kill a caller must wait for: the sandbox leaves the runtime's
    /// list (nothing can reach it through the runtime any more), a marker is written
    /// (see [`Ending`]), and every process in its cgroup is sent SIGKILL (a paused
    /// sandbox is thawed to take it). Waits for no process to exit. A signalling
    /// failure is logged: [`finish_kill`](Self::finish_kill) kills again what it finds.
    pub fn begin_kill(&self, id: &str) -> Result<Ending> {
        let entry = self.known().remove(id);
        let ending = match entry {
            Some(entry) => {
                self.ending_ids()
                    .insert(id.to_owned(), entry.state.spec.layers.clone());
                Ending {
                    id: id.to_owned(),
                    cgroup: entry.cgroup,
                    monitor: entry.monitor,
                    network: entry.network,
                    ids: entry.state.ids,
                }
            }
            // Known on disk only (e.g. before `recover`)?
            None if self.dirs(id).base.exists()
                && !self.creating_ids().contains(id)
                && !self.ending_ids().contains_key(id) =>
            {
                let state = self.read_state(id);
                let layers = state.as_ref().map(|s| s.spec.layers.clone());
                self.ending_ids()
                    .insert(id.to_owned(), layers.unwrap_or_default());
                Ending {
                    id: id.to_owned(),
                    cgroup: self.cgroups.sandbox(id),
                    monitor: None,
                    network: None,
                    ids: state.and_then(|s| s.ids),
                }
            }
            None => return Err(Error::NotFound(id.to_string())),
        };
        let marker = self.dirs(id).base.join(ENDING_MARKER);
        if let Err(error) = fs::write(&marker, b"") {
            // The kill goes on; only a crash before `finish_kill` would miss the marker
            // (a restarted server would adopt the sandbox if its init survived).
            tracing::warn!(sandbox = id, %error, "writing the killed marker");
        }
        if let Err(error) = ending.cgroup.signal_kill() {
            tracing::warn!(sandbox = id, %error, "signalling a killed sandbox");
        }
        Ok(ending)
    }

    /// The rest of a kill begun by [`begin_kill`](Self::begin_kill): waits until the
    /// sandbox's processes are gone (pidfds, not a timer), reaps its monitor and
    /// slirp4netns, detaches leaked mounts, removes its cgroups and directory and frees
    /// its host ids. On error, what could not be removed stays (marker included) for a
    /// later `recover` or `kill`.
    pub fn finish_kill(&self, ending: Ending) -> Result<()> {
        let Ending {
            id,
            cgroup,
            monitor,
            network,
            ids,
        } = ending;
        let result = self.destroy(&id, &cgroup, monitor, network, ids);
        self.ending_ids().remove(&id);
        result
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

    /// Whether sandbox `id` was killed and its cleanup has not finished.
    pub fn is_ending(&self, id: &str) -> bool {
        self.ending_ids().contains_key(id)
    }

    pub(super) fn destroy(
        &self,
        id: &str,
        cgroup: &SandboxCgroup,
        monitor: Option<Child>,
        network: Option<network::Attached>,
        ids: Option<IdRange>,
    ) -> Result<()> {
        let start = std::time::Instant::now();
        let mut first_err = None;
        let mut note = |r: Result<()>| {
            if let Err(e) = r {
                tracing::warn!(sandbox = id, error = %e, "cleanup step failed");
                first_err.get_or_insert(e);
            }
        };
        note(cgroup.kill_all());
        let killed = start.elapsed();
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
        let unmounted = start.elapsed();
        note(cgroup.remove());
        let cgroups = start.elapsed();
        if base.exists() {
            note(fs::remove_dir_all(&base).map_err(Error::io("remove", &base)));
        }
        tracing::debug!(
            sandbox = id,
            kill_us = killed.as_micros() as u64,
            unmount_us = unmounted.as_micros() as u64,
            cgroups_us = cgroups.as_micros() as u64,
            total_us = start.elapsed().as_micros() as u64,
            "sandbox cleaned up"
        );
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
                || self.ending_ids().contains_key(&id)
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
            // A sandbox killed before the previous run could finish its cleanup is
            // finished now, whatever still runs in it.
            let killed = self.dirs(&id).base.join(ENDING_MARKER).exists();
            if policy == RecoverPolicy::Adopt
                && !killed
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
