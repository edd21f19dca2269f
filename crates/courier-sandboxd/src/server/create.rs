//! Creating sandboxes: starting one (or taking one from the warm pool), initialising
//! its envd, recording it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::config::{CreateRequest, ENVD_PATH};
use super::registry::Entry;
use super::{Sandboxd, blocking, check_timeout, end_at};
use crate::egress::SandboxEgress;
use crate::envd_link::EnvdEndpoint;
use crate::error::{Error, Result};
use crate::limits::Reservation;
use crate::lock::lock;
use crate::runtime::{BindMount, Isolation, Limits, SandboxSpec, SandboxStatus};
use crate::state::{
    NetworkRecord, SandboxRecord, SandboxState, Secret, new_sandbox_id, random_hex,
};
use crate::templates::Template;
use crate::warm::{Shape, WarmSandbox};

/// Where envd keeps file metadata in gVisor sandboxes (root-only, on the sandbox's disk,
/// so it lives and dies with the writable layer like xattrs would).
const GVISOR_METADATA_STORE: &str = "/var/lib/courier-envd/file-metadata.json";

/// How long create waits for envd to answer `/health` (generous: loaded machines).
const ENVD_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A started sandbox: what a create, or the warm pool, keeps of it.
pub(super) struct Started {
    pub(super) id: String,
    envd: EnvdEndpoint,
    egress: SandboxEgress,
    reservation: Reservation,
}

/// Where a create's sandbox comes from.
#[derive(Debug, Clone)]
pub(super) enum Origin {
    /// A template: a fresh boot.
    Template,
    /// A snapshot's layers on its template; with its memory image, a restore of its
    /// processes (see [`crate::snapshots::MemoryImage`]), else a fresh boot on its files.
    Snapshot(Option<crate::snapshots::MemoryImage>),
}

/// What [`Sandboxd::start_sandbox`] starts.
struct StartPlan<'a> {
    template: &'a Template,
    shape: &'a Shape,
    isolation: Isolation,
    /// Its egress rules (E2B's `allowOut`/`denyOut`).
    rules: crate::egress::EgressRules,
    reservation: Reservation,
    die_with_server: bool,
    /// Volumes bound in (none for the warm pool).
    volumes: &'a [super::config::VolumeBind],
    /// Restart a sandbox under its own id and egress handle (resume after a
    /// filesystem-only pause); `None`: a new id and handle.
    again: Option<(String, SandboxEgress)>,
    /// Restore this gVisor memory image instead of booting (its envd comes up without
    /// its socket, which is bound again before envd is awaited).
    restore: Option<&'a std::path::Path>,
}

impl Sandboxd {
    /// Reserves room for a sandbox of `memory_mb` MiB; when there is none but killed
    /// sandboxes are still being cleaned up (their room is given back at the end of
    /// their cleanup, see [`cleanups`](super::cleanups)), waits for those first.
    async fn reserve_after_cleanups(
        &self,
        memory_mb: u64,
    ) -> std::result::Result<crate::limits::Reservation, crate::limits::CapacityExceeded> {
        loop {
            let observed = self.inner.cleanups.observe();
            match self.inner.capacity.reserve(memory_mb) {
                Ok(reservation) => return Ok(reservation),
                Err(full) => {
                    if !super::cleanups::Cleanups::wait_for_one(observed).await {
                        return Err(full);
                    }
                }
            }
        }
    }

    /// Creates a sandbox and returns once its envd is ready.
    pub async fn create(&self, request: CreateRequest) -> Result<SandboxRecord> {
        check_timeout("timeout", request.timeout)?;
        // Another key's private template is as unknown as a missing one.
        let template = self.inner.templates.resolve(&request.template).filter(|t| {
            request
                .owner
                .as_deref()
                .is_none_or(|owner| t.visible_to(owner))
        });
        let (template, origin) = match template {
            Some(template) => (template, Origin::Template),
            None => {
                // Only the owner's snapshots resolve: another key's (its memory image
                // included) is an unknown template.
                let snapshot = request
                    .owner
                    .as_deref()
                    .and_then(|owner| self.inner.snapshots.find(owner, &request.template))
                    .ok_or_else(|| Error::UnknownTemplate(request.template.clone()))?;
                (
                    self.snapshot_template(&snapshot)?,
                    Origin::Snapshot(snapshot.memory),
                )
            }
        };
        self.create_from(request, template, origin).await
    }

    /// Creates a sandbox of `template` (a template, or a snapshot's layers on its
    /// template, see [`Origin`]).
    pub(super) async fn create_from(
        &self,
        request: CreateRequest,
        template: Template,
        origin: Origin,
    ) -> Result<SandboxRecord> {
        let from_snapshot = matches!(origin, Origin::Snapshot(_));
        check_timeout("timeout", request.timeout)?;
        let memory_mb = request.memory_mb.unwrap_or(template.memory_mb);
        let cpu_count = request.cpu_count.unwrap_or(template.cpu_count);
        if !(128..=65_536).contains(&memory_mb) {
            return Err(Error::InvalidSpec {
                field: "memoryMB",
                reason: "must be 128..=65536".to_owned(),
            });
        }
        if !(1..=64).contains(&cpu_count) {
            return Err(Error::InvalidSpec {
                field: "cpuCount",
                reason: "must be 1..=64".to_owned(),
            });
        }
        // Outbound access only when the rules let something out: a sandbox whose rules
        // deny everything gets no interface at all.
        let internet = request.allow_internet && request.egress.allows_any_traffic();
        let isolation = template.isolation.unwrap_or(self.inner.isolation);
        // A memory image restores only as it was taken: gVisor, no internet (runsc
        // cannot save the host network stack, so no image has one). A create asking for
        // internet boots on the snapshot's files instead, and its log says so.
        let mut restore_failed: Option<String> = None;
        let mut restore = match &origin {
            Origin::Snapshot(Some(image)) if !internet && isolation == Isolation::Gvisor => {
                Some(image.clone())
            }
            Origin::Snapshot(Some(_)) => {
                tracing::info!(
                    template = %request.template,
                    "a memory snapshot started with internet access boots on its files"
                );
                None
            }
            _ => None,
        };
        let shape = Shape {
            template: template.id.clone(),
            build: template.build_id.clone(),
            memory_mb,
            cpu_count,
            internet,
        };
        // Template build sandboxes die with the server; only gVisor's slow start is
        // worth a sandbox kept running ahead (see crate::warm).
        // A sandbox with volumes has binds of its own, and a snapshot's layers serve no
        // other create: never one of the pool's. Nor does a sandbox with transform rules:
        // its root trusts the interception CA from the start (see crate::egress).
        let poolable = isolation == Isolation::Gvisor
            && !request.die_with_server
            && request.volume_mounts.is_empty()
            && !from_snapshot
            && request.egress.transforms().is_empty();
        let clock = Instant::now();
        let warm = match poolable.then(|| self.inner.warm.take(&shape)).flatten() {
            Some(warm) => self.claim_warm(warm, &request.egress).await,
            None => None,
        };
        let from_pool = warm.is_some();
        let started = match warm {
            Some(started) => started,
            None => {
                // Before anything is made: a create past the server's capacity leaves
                // nothing behind (dropped, i.e. released, on every early return below).
                // A warm sandbox's share goes to a create that would not fit otherwise.
                let reservation = match self.reserve_after_cleanups(memory_mb).await {
                    Ok(reservation) => reservation,
                    Err(full) => match self.inner.warm.take_any() {
                        Some(warm) => {
                            self.destroy(&warm.id).await;
                            // Its reservation goes with it, before the second try.
                            drop(warm);
                            self.inner.capacity.reserve(memory_mb)?
                        }
                        None => return Err(full.into()),
                    },
                };
                let restore_dir = restore.as_ref().map(|m| m.dir.clone());
                let plan = |reservation, restoring: bool| StartPlan {
                    template: &template,
                    shape: &shape,
                    isolation,
                    rules: request.egress.clone(),
                    reservation,
                    die_with_server: request.die_with_server,
                    volumes: &request.volume_mounts,
                    again: None,
                    restore: restore_dir.as_deref().filter(|_| restoring),
                };
                match self.start_sandbox(plan(reservation, true)).await {
                    Ok(started) => started,
                    // runsc refused the image (e.g. a process of the source held a
                    // descriptor of the host's, which a restore cannot give back): the
                    // snapshot's files still make a sandbox, booted afresh, as for a
                    // filesystem snapshot; its log says so.
                    Err(error @ (Error::Setup { .. } | Error::Envd { .. }))
                        if restore.is_some() =>
                    {
                        tracing::warn!(%error, template = %request.template, "restoring a memory snapshot failed; booting on its files");
                        restore = None;
                        // runsc's errors end in long Go dumps: their start says why.
                        restore_failed = Some(error.to_string().chars().take(300).collect());
                        let reservation = self.inner.capacity.reserve(memory_mb)?;
                        self.start_sandbox(plan(reservation, false)).await?
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let Started {
            id,
            envd,
            egress: sandbox_egress,
            reservation,
        } = started;
        let token = random_hex(32);
        // A restored envd holds the source's token in memory: it is replaced at once, so
        // the source's token (what every sandbox restored from one image shares) never
        // works on this sandbox.
        let restored_token = restore.as_ref().map(|m| m.envd_token.expose());
        if let Err(e) = self
            .init_sandbox(&id, &token, restored_token, &envd, &request, &template)
            .await
        {
            self.destroy(&id).await;
            return Err(e);
        }
        tracing::debug!(
            sandbox = %id,
            from_pool,
            envd_ready_ms = clock.elapsed().as_secs_f64() * 1e3,
            "sandbox created"
        );
        if poolable {
            self.keep_warm(shape, template.clone(), isolation);
        }
        let now = Utc::now();
        let record = SandboxRecord {
            sandbox_id: id.clone(),
            template_id: template.id.clone(),
            alias: template
                .aliases
                .iter()
                .find(|a| **a == request.template)
                .or(template.aliases.first())
                .cloned(),
            envd_access_token: Secret::new(token),
            started_at: now,
            end_at: end_at(request.timeout),
            metadata: request.metadata,
            cpu_count,
            memory_mb,
            disk_size_mb: template.disk_size_mb,
            state: SandboxState::Running,
            auto_pause: request.auto_pause,
            auto_resume_timeout_secs: request.auto_resume.then_some(request.timeout.as_secs()),
            allow_internet_requested: internet,
            network: NetworkRecord {
                allow_out: request.egress.allow_out().to_vec(),
                deny_out: request.egress.deny_out().to_vec(),
                allow_public_traffic: request.allow_public_traffic,
                rules: request.egress.transforms().clone(),
                mask_request_host: request.mask_request_host.clone(),
            },
            traffic_access_token: (!request.allow_public_traffic)
                .then(|| Secret::new(random_hex(32))),
            volume_mounts: request
                .volume_mounts
                .iter()
                .map(|v| crate::state::VolumeMountRecord {
                    volume_id: v.volume_id.clone(),
                    name: v.name.clone(),
                    path: v.path.clone(),
                })
                .collect(),
            owner: request.owner.clone(),
            auto_pause_memory: request.auto_pause_memory,
            paused_layers: None,
            env_vars: (!request.env_vars.is_empty())
                .then(|| serde_json::to_string(&request.env_vars).ok())
                .flatten()
                .map(Secret::new),
        };
        if let Err(e) = self.inner.records.save(&record) {
            self.destroy(&id).await;
            return Err(e);
        }
        self.log_event(
            &id,
            super::logs::LogLevel::Info,
            "created",
            format!(
                "sandbox created from template {} ({} CPU, {} MiB){}",
                record.template_id,
                record.cpu_count,
                record.memory_mb,
                match (&origin, &restore, &restore_failed) {
                    (_, Some(_), _) =>
                        ", its processes and memory restored from a snapshot".to_owned(),
                    (Origin::Snapshot(Some(_)), None, Some(why)) => format!(
                        ", booted on a memory snapshot's files: restoring its memory \
                         failed ({why})"
                    ),
                    (Origin::Snapshot(Some(_)), None, None) =>
                        ", booted on a memory snapshot's files: a sandbox with internet \
                         access cannot restore memory"
                            .to_owned(),
                    (Origin::Snapshot(None), _, _) =>
                        ", booted on a filesystem snapshot".to_owned(),
                    (Origin::Template, _, _) => String::new(),
                }
            ),
        );
        lock(&self.inner.sandboxes).insert(
            id,
            Arc::new(Entry::new(
                record.clone(),
                envd,
                reservation,
                sandbox_egress,
            )),
        );
        Ok(record)
    }

    /// Makes a warm sandbox the create's: it outlives the server from now on, and its
    /// egress rules are the create's before anything of the tenant's runs. `None` (the
    /// sandbox killed) when that fails: the create starts one of its own.
    async fn claim_warm(
        &self,
        warm: WarmSandbox<Started>,
        rules: &crate::egress::EgressRules,
    ) -> Option<Started> {
        warm.started.egress.set_rules(rules.clone());
        let runtime = self.inner.runtime.clone();
        let id = warm.id.clone();
        match blocking(move || runtime.outlive_runtime(&id)).await {
            Ok(()) => Some(warm.started),
            Err(error) => {
                tracing::warn!(sandbox = %warm.id, %error, "taking a warm sandbox");
                self.destroy(&warm.id).await;
                None
            }
        }
    }

    /// Starts sandbox `id` again on `layers` (its template's, then its captured writes)
    /// with its recorded shape, the same egress handle and envd access token: the reboot
    /// that resumes a filesystem-only pause. Its reservation stayed held while paused.
    pub(super) async fn restart_sandbox(
        &self,
        record: &SandboxRecord,
        layers: Vec<PathBuf>,
        egress: SandboxEgress,
    ) -> Result<EnvdEndpoint> {
        let mut template = self
            .inner
            .templates
            .resolve(&record.template_id)
            .ok_or_else(|| Error::UnknownTemplate(record.template_id.clone()))?;
        template.layers = layers;
        let isolation = template.isolation.unwrap_or(self.inner.isolation);
        let shape = Shape {
            template: template.id.clone(),
            build: template.build_id.clone(),
            memory_mb: record.memory_mb,
            cpu_count: record.cpu_count,
            internet: record.allow_internet_requested,
        };
        let rules = super::startup::recorded_rules(record);
        // The plan needs a reservation of its own; the sandbox's stays with its entry,
        // so this one only stands for it while starting and is released at once.
        let started = self
            .start_sandbox(StartPlan {
                template: &template,
                shape: &shape,
                isolation,
                rules,
                reservation: self.inner.capacity.adopt(0),
                die_with_server: false,
                again: Some((record.sandbox_id.clone(), egress)),
                // A sandbox with volumes is never paused filesystem-only.
                volumes: &[],
                restore: None,
            })
            .await?;
        let request = CreateRequest {
            template: template.id.clone(),
            env_vars: record.env_vars(),
            ..CreateRequest::default()
        };
        if let Err(e) = self
            .init_sandbox(
                &started.id,
                record.envd_access_token.expose(),
                None,
                &started.envd,
                &request,
                &template,
            )
            .await
        {
            self.destroy(&started.id).await;
            return Err(e);
        }
        Ok(started.envd)
    }

    /// Starts a sandbox of `plan`'s shape under a new id and waits for its envd (not yet
    /// initialised: no token, no environment). Cleans up after itself on failure.
    async fn start_sandbox(&self, plan: StartPlan<'_>) -> Result<Started> {
        let StartPlan {
            template,
            shape,
            isolation,
            rules,
            reservation,
            die_with_server,
            volumes,
            again,
            restore,
        } = plan;
        let (id, egress) = match again {
            Some((id, egress)) => {
                egress.set_rules(rules);
                (id, egress)
            }
            None => {
                let id = new_sandbox_id();
                let egress = self.inner.egress.sandbox(&id, rules);
                (id, egress)
            }
        };
        let mut args = match isolation {
            Isolation::Container => vec![
                "--listen-fd".to_owned(),
                crate::runtime::init::INIT_CONTROL_FD.to_string(),
            ],
            Isolation::Gvisor => vec![
                "--socket".to_owned(),
                format!("{}/envd.sock", crate::runtime::GVISOR_CONTROL_DIR),
            ],
        };
        args.extend([
            "--default-user".to_owned(),
            crate::base_layer::USER.to_owned(),
        ]);
        if isolation == Isolation::Gvisor {
            // gVisor ignores setuid bits: envd brokers `sudo` instead (see
            // courier_envd::sudo), its client bound over the sandbox's sudo below.
            args.push("--sudo-socket".to_owned());
            // Its gofer (runsc before 2026-05) has no user xattrs: envd keeps upload
            // metadata in a root-only file on the sandbox's disk instead.
            args.extend([
                "--metadata-store".to_owned(),
                GVISOR_METADATA_STORE.to_owned(),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut spec = SandboxSpec::new(id.clone(), template.layers.clone(), ENVD_PATH, &args);
        // The access token is installed with `/init`, not in envd's environment, so it is
        // not inherited by the processes envd starts.
        spec.env.insert("HOME".to_owned(), "/root".to_owned());
        spec.env.insert("LANG".to_owned(), "C.UTF-8".to_owned());
        spec.env.insert("RUST_LOG".to_owned(), "warn".to_owned());
        spec.limits = Limits {
            memory_mb: shape.memory_mb,
            cpu_count: f64::from(shape.cpu_count),
            pids: 4096,
        };
        spec.allow_internet = shape.internet;
        spec.egress = egress.clone();
        spec.isolation = isolation;
        spec.disk_mb = template.disk_size_mb;
        spec.io = self.inner.config.io;
        spec.nested_namespaces = self.inner.config.nested_namespaces;
        spec.control_socket = true;
        spec.die_with_runtime = die_with_server;
        spec.restore_from = restore.map(std::path::Path::to_path_buf);
        spec.binds = vec![BindMount {
            source: self.inner.config.envd_binary.clone(),
            target: PathBuf::from(ENVD_PATH),
            readonly: true,
            map_user: false,
        }];
        if isolation == Isolation::Gvisor {
            // The envd binary run as `sudo` is the broker's client; over both places a
            // script may name sudo by.
            for target in ["/usr/local/bin/sudo", "/usr/bin/sudo"] {
                spec.binds.push(BindMount {
                    source: self.inner.config.envd_binary.clone(),
                    target: PathBuf::from(target),
                    readonly: true,
                    map_user: false,
                });
            }
        }
        spec.binds.extend(
            self.inner
                .config
                .shared_dirs
                .iter()
                .map(|shared| BindMount {
                    source: shared.host.clone(),
                    target: shared.sandbox.clone(),
                    readonly: shared.read_only,
                    map_user: true,
                }),
        );
        // Read-write, the volume's uid/gid 1000 shown as the sandbox's `user` (what the
        // content API creates by default); `nosuid`, `nodev` like every bind. The target
        // is resolved inside the sandbox's root, so a path through a symlink of the
        // template's stays inside it.
        spec.binds.extend(volumes.iter().map(|v| BindMount {
            source: v.source.clone(),
            target: PathBuf::from(&v.path),
            readonly: false,
            map_user: true,
        }));

        let runtime = self.inner.runtime.clone();
        let clock = Instant::now();
        let restoring = restore.is_some();
        let rid = id.clone();
        let created = blocking(move || {
            runtime.create_network_pending(spec)?;
            if restoring {
                // The image's envd let go of its socket for the checkpoint.
                runtime.rebind_control(&rid)?;
            }
            Ok(())
        })
        .await;
        if let Err(e) = created {
            // A restored sandbox whose envd did not bind again is ended (a failed
            // create left nothing behind by itself).
            if restoring {
                self.destroy(&id).await;
            }
            return Err(e);
        }
        let envd = EnvdEndpoint::new(self.inner.runtime.clone(), id.clone());
        let runtime_done = clock.elapsed();
        // slirp4netns configures the sandbox's interface while envd starts: both are
        // waited for before the create answers, and so before anything of the caller's
        // runs inside (start command, processes). Spawned now (`blocking` would start it
        // only when awaited).
        let network = {
            let runtime = self.inner.runtime.clone();
            let rid = id.clone();
            tokio::task::spawn_blocking(move || runtime.wait_network(&rid))
        };
        let runtime = self.inner.runtime.clone();
        let rid = id.clone();
        let ready = crate::envd_link::wait_healthy(&envd, ENVD_READY_TIMEOUT, move || {
            !matches!(runtime.status(&rid), Ok(SandboxStatus::Exited) | Err(_))
        })
        .await;
        let network = network.await.unwrap_or_else(|e| {
            Err(Error::Sys {
                op: "waiting for the sandbox's network".to_owned(),
                source: std::io::Error::other(e.to_string()),
            })
        });
        if let Err(message) = ready {
            self.destroy(&id).await;
            return Err(Error::Envd {
                id,
                message: message.to_string(),
            });
        }
        if let Err(error) = network {
            self.destroy(&id).await;
            return Err(error);
        }
        tracing::debug!(
            sandbox = %id,
            runtime_ms = runtime_done.as_secs_f64() * 1e3,
            envd_ready_ms = clock.elapsed().as_secs_f64() * 1e3,
            "sandbox started"
        );
        Ok(Started {
            id,
            envd,
            egress,
            reservation,
        })
    }

    /// Starts a sandbox of `shape` for the warm pool in the background, unless the pool
    /// has its share of that shape (or is starting one). Also kills warm sandboxes whose
    /// template changed since.
    fn keep_warm(&self, shape: Shape, template: Template, isolation: Isolation) {
        if self.inner.shutdown.is_cancelled() || !self.inner.warm.wants(&shape) {
            return;
        }
        let server = self.clone();
        tokio::spawn(async move {
            server.drop_stale_warm().await;
            // Only into room the server has: a warm sandbox never makes a create wait.
            let Ok(reservation) = server.inner.capacity.reserve(shape.memory_mb) else {
                server.inner.warm.failed(&shape);
                return;
            };
            let started = server
                .start_sandbox(StartPlan {
                    template: &template,
                    shape: &shape,
                    isolation,
                    // Replaced by the create's own before anything of its runs.
                    rules: crate::egress::EgressRules::default(),
                    reservation,
                    // Until a create takes it: a warm sandbox never outlives its server.
                    die_with_server: true,
                    volumes: &[],
                    again: None,
                    restore: None,
                })
                .await;
            match started {
                Ok(started) if !server.inner.shutdown.is_cancelled() => {
                    let evicted = server.inner.warm.put(WarmSandbox {
                        id: started.id.clone(),
                        shape,
                        started,
                    });
                    for warm in evicted {
                        server.destroy(&warm.id).await;
                    }
                }
                Ok(started) => {
                    server.inner.warm.failed(&shape);
                    server.destroy(&started.id).await;
                }
                Err(error) => {
                    server.inner.warm.failed(&shape);
                    tracing::warn!(%error, template = %shape.template, "starting a warm sandbox");
                }
            }
        });
    }

    /// Kills the warm sandboxes of templates deleted or rebuilt since they started: no
    /// create would take them.
    pub(crate) async fn drop_stale_warm(&self) {
        let stale = self.inner.warm.remove_stale(|s| {
            self.inner
                .templates
                .resolve(&s.template)
                .is_none_or(|t| t.build_id != s.build)
        });
        for warm in stale {
            self.destroy(&warm.id).await;
        }
    }

    /// `POST /init` (environment, token, user, workdir) and the template's start and
    /// ready commands: what makes a started sandbox the create's. A sandbox restored
    /// from a memory image (`restored_token`: the token its envd holds) is initialised
    /// with that token and keeps running what it ran: its start command is not started
    /// again.
    async fn init_sandbox(
        &self,
        id: &str,
        token: &str,
        restored_token: Option<&str>,
        envd: &EnvdEndpoint,
        request: &CreateRequest,
        template: &Template,
    ) -> Result<()> {
        // A built template's environment, user and workdir (from its recipe's ENV, USER
        // and WORKDIR steps) are the defaults; the request's variables win.
        let mut env_vars = template.envs.clone();
        env_vars.extend(request.env_vars.clone());
        let user = template.user.as_deref().unwrap_or(crate::base_layer::USER);
        let workdir = template.workdir.clone().unwrap_or_else(|| {
            if user == "root" {
                "/root".to_owned()
            } else {
                format!("/home/{user}")
            }
        });
        let body = courier_e2b::models::EnvdInit {
            env_vars: Some(env_vars),
            access_token: Some(token.into()),
            default_user: Some(user.to_owned()),
            default_workdir: Some(workdir),
        };
        crate::envd_link::init(envd, restored_token.unwrap_or(token), &body)
            .await
            .map_err(|e| Error::Envd {
                id: id.to_owned(),
                message: e.to_string(),
            })?;
        if restored_token.is_some() {
            return Ok(());
        }
        let timeout = self.inner.config.template_ready_timeout;
        crate::templates::build::start_template_processes(envd, token, template, timeout)
            .await
            .map_err(|e| Error::Envd {
                id: id.to_owned(),
                message: e.to_string(),
            })
    }
}
