//! Controlling a running sandbox: its status, freezing and thawing it, its limits, usage
//! and network.

use std::fs::File;
use std::io::Write;

use super::cgroup::{CgroupStats, SandboxCgroup};
use super::registry::process_alive;
use super::spec::{Limits, SandboxStatus};
use super::{Runtime, disk, init, network};
use crate::error::{Error, Result};

impl Runtime {
    /// Running, frozen or exited.
    pub fn status(&self, id: &str) -> Result<SandboxStatus> {
        self.with_entry(id, |e| {
            if !process_alive(e.state.handle.init_pid, e.state.init_start_time) {
                // The monitor exits with the init; reap it now rather than at kill (which
                // reaps it if this cannot).
                if let Some(monitor) = e.monitor.as_mut() {
                    let _ = monitor.try_wait();
                }
                return Ok(SandboxStatus::Exited);
            }
            Ok(if e.cgroup.is_frozen() {
                SandboxStatus::Frozen
            } else {
                SandboxStatus::Running
            })
        })
    }

    /// The sandbox's cgroup, cloned so that slow kernel waits do not hold the map lock.
    fn cgroup_of(&self, id: &str) -> Result<SandboxCgroup> {
        self.with_entry(id, |e| Ok(e.cgroup.clone()))
    }

    /// Freezes every process of the sandbox (pause); memory is kept.
    pub fn freeze(&self, id: &str) -> Result<()> {
        self.cgroup_of(id)?.freeze()
    }

    /// Resumes a frozen sandbox.
    pub fn thaw(&self, id: &str) -> Result<()> {
        self.cgroup_of(id)?.thaw()
    }

    /// Lets a sandbox created to die with this runtime ([`SandboxSpec::die_with_runtime`](super::SandboxSpec::die_with_runtime))
    /// outlive it from now on, like any other (a sandbox started ahead of a create, once
    /// the create takes it). Its monitor is told so through the lifeline itself.
    pub fn outlive_runtime(&self, id: &str) -> Result<()> {
        let base = self.dirs(id).base;
        self.with_entry(id, |e| {
            if let Some(lifeline) = e.lifeline.take() {
                File::from(lifeline)
                    .write_all(&[init::LIFELINE_RELEASE])
                    .map_err(|e| Error::sys("release the lifeline")(e))?;
            }
            e.state.spec.die_with_runtime = false;
            self.save_state(&base, &e.state)
        })
    }

    /// Changes a running sandbox's limits (lowering memory below usage triggers its OOM
    /// killer).
    pub fn update_limits(&self, id: &str, limits: Limits) -> Result<()> {
        limits.validate()?;
        let base = self.dirs(id).base;
        self.with_entry(id, |e| {
            e.cgroup.set_limits(&limits)?;
            e.state.spec.limits = limits;
            self.save_state(&base, &e.state)
        })
    }

    /// The last whole lines of sandbox `id`'s console (its envd's own log output), read
    /// from at most the last `max_bytes` of it: a sandbox writes what it likes there, so
    /// a reader never takes more than that.
    pub fn console_tail(&self, id: &str, max_bytes: u64) -> Result<Vec<String>> {
        use std::io::{Read as _, Seek as _, SeekFrom};
        self.with_entry(id, |_| Ok(()))?;
        let path = self.dirs(id).console();
        let mut file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("open", &path)(e)),
        };
        let len = file.metadata().map_err(Error::io("stat", &path))?.len();
        let from = len.saturating_sub(max_bytes);
        file.seek(SeekFrom::Start(from))
            .map_err(Error::io("seek", &path))?;
        let mut bytes = Vec::new();
        file.take(max_bytes)
            .read_to_end(&mut bytes)
            .map_err(Error::io("read", &path))?;
        let text = String::from_utf8_lossy(&bytes);
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if from > 0 && !lines.is_empty() {
            // The first line was cut by the window.
            lines.remove(0);
        }
        Ok(lines)
    }

    /// Memory, CPU and task usage from the sandbox's cgroup.
    pub fn stats(&self, id: &str) -> Result<CgroupStats> {
        Ok(self.cgroup_of(id)?.stats())
    }

    /// Bytes the sandbox's disk occupies on the host, and its size limit in bytes.
    pub fn disk_usage(&self, id: &str) -> Result<(u64, u64)> {
        let size = self.with_entry(id, |e| Ok(e.state.spec.disk_mb))?;
        Ok((
            disk::allocated_bytes(&self.dirs(id).disk_image()),
            size * 1024 * 1024,
        ))
    }

    /// Gives running sandbox `id` a fresh slirp4netns under `egress` (after a server
    /// restart: the previous server's slirp4netns is failed closed, its supervisor gone).
    /// The stale one is killed first. A sandbox without internet is left alone.
    pub fn reattach_network(&self, id: &str, egress: &crate::egress::SandboxEgress) -> Result<()> {
        let (pid, internet, cgroup) = self.with_entry(id, |e| {
            Ok((
                e.state.handle.init_pid,
                e.state.spec.allow_internet,
                e.cgroup.clone(),
            ))
        })?;
        if !internet {
            return Ok(());
        }
        let Some(program) = network::find_slirp4netns() else {
            return Err(Error::Unsupported(
                "allow_internet: slirp4netns is no longer installed".into(),
            ));
        };
        network::detach_stale(pid)?;
        let attached = network::attach(
            &program,
            pid,
            &cgroup.procs_files(),
            &self.dirs(id).base.join("network.log"),
            egress,
        )?;
        self.with_entry(id, |e| {
            e.network = Some(attached);
            Ok(())
        })
    }
}
