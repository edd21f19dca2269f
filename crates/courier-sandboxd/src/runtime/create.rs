//! Creating a sandbox: checking its spec, reserving its id and directory, and starting it
//! through the helper.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::helper::helper_times;
use super::idmap::IdRange;
use super::init::{self, CONTROL_FD, DISK_FD, GO_FD, HelperTask, LIFELINE_FD};
use super::registry::{Entry, SandboxState, process_start_time};
use super::rootfs::{self, RootfsPlan, SandboxDirs};
use super::spec::{SandboxHandle, SandboxSpec, validate_id};
use super::{Runtime, disk, network, sys};
use crate::error::{Error, Result};

/// How long the helper may take to set a sandbox up before `create` gives up on it.
const HELPER_TIMEOUT: Duration = Duration::from_secs(60);

impl Runtime {
    /// Creates and starts a sandbox; returns once its init program has been exec'd (and,
    /// with [`SandboxSpec::allow_internet`], its network is up).
    ///
    /// On any failure everything created so far is removed again.
    pub fn create(&self, spec: SandboxSpec) -> Result<SandboxHandle> {
        let handle = self.create_network_pending(spec)?;
        if let Err(err) = self.wait_network(&handle.id) {
            // The create's own error is the one its caller can act on; `kill` logs its
            // steps' failures.
            let _ = self.kill(&handle.id);
            return Err(err);
        }
        Ok(handle)
    }

    /// Waits until sandbox `id`'s outbound network (slirp4netns, see [`network`]) is
    /// configured; at once when it is, or when the sandbox has none. After
    /// [`create_network_pending`](Self::create_network_pending) the caller calls it before
    /// anything of the sandbox's user runs, and kills the sandbox when it fails.
    pub fn wait_network(&self, id: &str) -> Result<()> {
        let pending = self.with_entry(id, |e| {
            Ok(e.network.as_mut().and_then(|n| n.take_pending()))
        })?;
        match pending {
            Some(pending) => pending.wait(),
            None => Ok(()),
        }
    }

    /// [`create`](Self::create), except that a namespace sandbox's network may still be
    /// coming up when it returns: slirp4netns (a few milliseconds to start) configures
    /// `tap0` while the sandbox's init starts, instead of before. The caller then owes a
    /// [`wait_network`](Self::wait_network) before anything but the init (the runtime's
    /// own agent) runs in the sandbox: until then outbound connections may fail. A
    /// gVisor sandbox's network is always up first (runsc starts on the interfaces it
    /// finds).
    pub fn create_network_pending(&self, spec: SandboxSpec) -> Result<SandboxHandle> {
        validate_id(&spec.id)?;
        spec.limits.validate()?;
        if spec.restore_from.is_some()
            && (spec.isolation != super::Isolation::Gvisor || spec.allow_internet)
        {
            return Err(Error::InvalidSpec {
                field: "restore_from",
                reason: "a memory image restores only into a gVisor sandbox without internet"
                    .to_owned(),
            });
        }
        disk::validate_size(spec.disk_mb)?;
        if spec.layers.is_empty() {
            return Err(Error::InvalidSpec {
                field: "layers",
                reason: "at least one layer is required".into(),
            });
        }
        if !spec.init.is_absolute() {
            return Err(Error::InvalidSpec {
                field: "init",
                reason: "must be an absolute path inside the sandbox".into(),
            });
        }
        self.isolator(spec.isolation)?;
        let slirp = network::check_supported(spec.allow_internet)?;
        let hostname = spec.hostname.clone().unwrap_or_else(|| spec.id.clone());
        if hostname.is_empty() || hostname.len() > 64 {
            return Err(Error::InvalidSpec {
                field: "hostname",
                reason: "must be 1-64 bytes".into(),
            });
        }
        let mut layers = Vec::new();
        for layer in &spec.layers {
            rootfs::check_mount_path("layers", layer)?;
            layers.push(rootfs::resolve_layer(layer)?);
        }
        for bind in &spec.binds {
            rootfs::check_mount_path("binds", &bind.source)?;
            rootfs::check_mount_path("binds", &bind.target)?;
        }

        // Reserve the id: the directory is the lock (also across runtimes on one data dir).
        let dirs = self.dirs(&spec.id);
        match fs::create_dir(&dirs.base) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::AlreadyExists(spec.id));
            }
            Err(e) => return Err(Error::io("create dir", &dirs.base)(e)),
        }
        // Search but no read for others, whatever the server's umask: the sandbox's PID 1
        // (an unprivileged host id) steps from its root into the root's own mount through
        // this directory (see rootfs::enter_root); nobody can list it.
        if let Err(e) = fs::set_permissions(&dirs.base, fs::Permissions::from_mode(0o711)) {
            self.creating_ids().remove(&spec.id);
            remove_reserved(&dirs);
            return Err(Error::io("chmod", &dirs.base)(e));
        }
        self.creating_ids().insert(spec.id.clone());
        // Both isolations run under the sandbox's own host ids: the namespace sandbox's
        // processes, and gVisor's Sentry and gofer (a user namespace in its OCI spec).
        let ids = match self.ids.allocate() {
            Ok(range) => Some(range),
            Err(e) => {
                self.creating_ids().remove(&spec.id);
                remove_reserved(&dirs);
                return Err(e);
            }
        };
        let result = self.start(&spec, &dirs, layers, hostname, slirp.as_deref(), ids);
        self.creating_ids().remove(&spec.id);
        match result {
            Ok((entry, handle)) => {
                self.known().insert(spec.id.clone(), entry);
                Ok(handle)
            }
            Err(err) => {
                let cgroup = self.cgroups.sandbox(&spec.id);
                // `destroy` logs each step that fails; the create's own error is the
                // one its caller can act on.
                let _ = self.destroy(&spec.id, &cgroup, None, None, ids);
                Err(err)
            }
        }
    }

    fn start(
        &self,
        spec: &SandboxSpec,
        dirs: &SandboxDirs,
        layers: Vec<rootfs::ResolvedLayer>,
        hostname: String,
        slirp: Option<&Path>,
        ids: Option<IdRange>,
    ) -> Result<(Entry, SandboxHandle)> {
        let started = Instant::now();
        // A ready disk when one waits (its image becomes this sandbox's), else this
        // sandbox's own copy of the golden image, attached and mounted by the helper.
        let ready_disk = self.disks.take(spec.disk_mb).and_then(|ready| {
            match fs::rename(&ready.image, dirs.disk_image()) {
                Ok(()) => Some(ready),
                Err(error) => {
                    tracing::debug!(%error, "taking a ready disk; preparing one instead");
                    if let Err(error) = fs::remove_file(&ready.image) {
                        tracing::debug!(%error, image = %ready.image.display(), "removing a ready disk");
                    }
                    None
                }
            }
        });
        if ready_disk.is_none() {
            let golden = disk::golden(&self.config.data_dir.join("disks"), spec.disk_mb)?;
            disk::copy_sparse(&golden, &dirs.disk_image())?;
        }
        let disk_done = started.elapsed();
        let cgroup = self.cgroups.create(&spec.id, &spec.limits)?;
        let cgroup_done = started.elapsed();

        let isolator = self.isolator(spec.isolation)?;
        let mut binds = spec.binds.clone();
        let mut control = None;
        if spec.control_socket {
            let prepared = isolator.prepare_control(dirs, ids)?;
            control = prepared.fd;
            binds.extend(prepared.binds);
        }
        let launch = isolator.launch(spec, dirs)?;
        // Only a networked sandbox with transform rules trusts the interception CA (no
        // other create reads or makes it). An egress without interception (the runtime
        // used on its own) closes such TLS instead: nothing to trust.
        let trust_ca = match slirp {
            Some(_) if !spec.egress.rules().transforms().is_empty() => {
                match spec.egress.egress().ca_certificate_pem() {
                    Ok(pem) => Some(pem),
                    Err(crate::egress::InterceptError::Disabled) => None,
                    Err(e) => return Err(Error::Config(e.to_string())),
                }
            }
            _ => None,
        };
        let task = HelperTask::Sandbox(Box::new(init::SandboxTask {
            id: spec.id.clone(),
            cgroup_procs: cgroup.procs_files(),
            blkio: cgroup.io_limit_files(&spec.io),
            rootfs: RootfsPlan {
                dirs: dirs.clone(),
                layers,
                binds,
                hostname: hostname.clone(),
                resolv_conf: slirp.map(|_| format!("nameserver {}\n", network::SANDBOX_NAMESERVER)),
                trust_ca,
                ready_disk_minor: ready_disk.as_ref().map(|d| d.minor),
            },
            ids,
            launch,
            console_cap: self.config.console_cap,
            nofile: super::sandbox_nofile(),
        }));

        let (go_read, go_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::sys("go pipe")(e.into()))?;
        let mut extra = vec![(go_read, GO_FD)];
        if let Some(ready) = ready_disk {
            extra.push((ready.mount, DISK_FD));
        }
        if let Some(control) = control {
            extra.push((control, CONTROL_FD));
        }
        let mut lifeline = None;
        if spec.die_with_runtime {
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| Error::sys("lifeline pipe")(e.into()))?;
            extra.push((read, LIFELINE_FD));
            lifeline = Some(write);
        }
        let (mut monitor, mut status) = self.spawn_helper(&dirs.console(), &task, extra)?;
        let handed_over = started.elapsed();
        let deadline = Instant::now() + HELPER_TIMEOUT;
        let mut report = String::new();
        let fail = |message: String, mut monitor: Child| {
            if let Err(error) = cgroup.kill_all() {
                tracing::warn!(%error, sandbox = %spec.id, "killing a failed sandbox's processes");
            }
            sys::kill_and_reap(&mut monitor, "the monitor of a failed sandbox");
            Err(Error::Setup {
                id: spec.id.clone(),
                message,
            })
        };

        // Phase 1: the sandbox's network namespace exists; attach the network (and, for
        // gVisor, write the bundle naming that namespace) before it goes on.
        let netns_pid = match status.until(deadline, &mut report, "netns ") {
            Ok(Some(pid)) => pid,
            Ok(None) => return fail(self.helper_failure(&report, &dirs.console()), monitor),
            Err(e) => return fail(format!("reading helper status: {e}"), monitor),
        };
        let root_done = started.elapsed();
        // Once slirp4netns runs, a failure reaps it too (the cgroup's kill ends it).
        let fail_networked =
            |message: String, monitor: Child, network: Option<network::Attached>| {
                let result = fail(message, monitor);
                if let Some(mut network) = network {
                    // Killed with the cgroup already; this only stops the supervisor and reaps.
                    let _ = network.kill();
                    let _ = network.wait();
                }
                result
            };
        let mut network = match slirp {
            None => None,
            Some(program) => match network::start(
                program,
                netns_pid,
                &cgroup.procs_files(),
                &dirs.base.join("network.log"),
                &spec.egress,
            ) {
                Ok(child) => Some(child),
                Err(e) => return fail(e.to_string(), monitor),
            },
        };
        // A namespace sandbox goes on while slirp4netns configures `tap0` (the helper
        // only needs the namespace to exist); `wait_network` waits for it at the end of
        // the create. runsc, though, starts on the interfaces it finds.
        if spec.isolation == super::Isolation::Gvisor
            && let Some(attached) = network.as_mut()
            && let Err(e) = attached.wait_ready()
        {
            return fail_networked(e.to_string(), monitor, network);
        }
        if let Err(e) = isolator.before_start(spec, dirs, &hostname, netns_pid, ids) {
            return fail_networked(e.to_string(), monitor, network);
        }
        if let Err(e) = File::from(go_write).write_all(b"g") {
            return fail_networked(
                format!("telling the helper to go on: {e}"),
                monitor,
                network,
            );
        }
        let network_done = started.elapsed();

        // Phase 2: PID 1 (or runsc) runs; the init is exec'd.
        let read = status.read_to_end(deadline, &mut report);
        let mut pid = None;
        let mut ready = None;
        let mut error = None;
        for line in report.lines() {
            if let Some(v) = line.strip_prefix("pid ") {
                pid = v.trim().parse::<i32>().ok();
            } else if let Some(v) = line.strip_prefix("ready ") {
                ready = v.trim().parse::<i32>().ok();
            } else if let Some(v) = line.strip_prefix("error ") {
                error = Some(v.to_string());
            }
        }
        if let Some(message) = error {
            return fail_networked(message, monitor, network);
        }
        let (Some(init_pid), Some(init_pid_in_sandbox)) = (pid, ready) else {
            let why = match read {
                Err(e) => format!("reading helper status: {e}"),
                Ok(()) => self.helper_failure(&report, &dirs.console()),
            };
            return fail_networked(why, monitor, network);
        };

        tracing::debug!(
            sandbox = %spec.id,
            isolation = %spec.isolation,
            disk_ms = disk_done.as_secs_f64() * 1e3,
            cgroup_ms = cgroup_done.as_secs_f64() * 1e3,
            handed_over_ms = handed_over.as_secs_f64() * 1e3,
            root_ms = root_done.as_secs_f64() * 1e3,
            network_ms = network_done.as_secs_f64() * 1e3,
            init_ms = started.elapsed().as_secs_f64() * 1e3,
            helper_us = %helper_times(&report),
            "sandbox started (cumulative times)"
        );
        let handle = SandboxHandle {
            id: spec.id.clone(),
            init_pid,
            init_pid_in_sandbox,
            isolation: spec.isolation,
        };
        let state = SandboxState {
            handle: handle.clone(),
            init_start_time: process_start_time(init_pid).unwrap_or(0),
            created_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis()),
            spec: spec.clone(),
            ids,
        };
        self.save_state(&dirs.base, &state)?;
        // Not waited for by anyone else: a monitor whose sandbox ended is reaped here or
        // at kill. Whether it has ended yet is of no interest here.
        let _ = monitor.try_wait();
        Ok((
            Entry {
                state,
                cgroup,
                monitor: Some(monitor),
                network,
                lifeline,
            },
            handle,
        ))
    }
}

/// Removes the directory of an id reserved by a create that then failed before anything
/// was put in it.
fn remove_reserved(dirs: &SandboxDirs) {
    if let Err(error) = fs::remove_dir_all(&dirs.base) {
        tracing::warn!(%error, dir = %dirs.base.display(), "removing a failed create's directory");
    }
}
