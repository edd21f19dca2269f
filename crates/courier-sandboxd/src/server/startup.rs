//! Starting a server: checking its configuration, opening the data dir, choosing the
//! isolation, and recovering (or reaping) what a previous run left.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::config::ServerConfig;
use super::registry::Entry;
use super::{Inner, Sandboxd, blocking};
use crate::egress::{Egress, EgressRules};
use crate::envd_link::EnvdEndpoint;
use crate::error::{Error, Result};
use crate::keys::KeyStore;
use crate::limits::Capacity;
use crate::runtime::{Isolation, RecoverPolicy, Runtime, RuntimeConfig, SandboxStatus};
use crate::state::{RecordStore, SandboxRecord, SandboxState};
use crate::templates::Templates;
use crate::warm::WarmPool;

impl Sandboxd {
    /// Opens the data dir, assembles the `base` template, finds the sandboxes a previous
    /// run left (keeping those that still run and have a record, reaping the rest) and
    /// starts the deadline reaper. Must run inside a tokio runtime.
    pub async fn start(config: ServerConfig) -> Result<Self> {
        if !config.envd_binary.is_file() {
            return Err(Error::Config(format!(
                "envd binary {} not found (pass --envd-binary)",
                config.envd_binary.display()
            )));
        }
        for shared in &config.shared_dirs {
            if !shared.host.is_absolute() || !shared.sandbox.is_absolute() {
                return Err(Error::Config(format!(
                    "shared dir {} -> {}: both paths must be absolute",
                    shared.host.display(),
                    shared.sandbox.display()
                )));
            }
            if !shared.host.exists() {
                return Err(Error::Config(format!(
                    "shared dir {} not found",
                    shared.host.display()
                )));
            }
        }
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(Error::io("create dir", &data_dir))?;
        // Records hold envd tokens: only root may look inside.
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(Error::io("chmod", &data_dir))?;
        }
        // One server per data dir: a second one would adopt, and kill as record-less,
        // the first one's sandboxes.
        let lock_path = data_dir.join("lock");
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(Error::io("open", &lock_path))?;
        let lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|_| {
                Error::Config(format!(
                    "data dir {} is in use by another courier-sandboxd",
                    data_dir.display()
                ))
            })?;
        let cfg = config.clone();
        let (runtime, templates, snapshots, adopted, isolation) = blocking(move || {
            let mut rc = RuntimeConfig::new(cfg.data_dir.join("runtime"));
            if let Some(helper) = &cfg.helper {
                rc.helper = helper.clone();
            }
            if let Some(parent) = &cfg.cgroup_parent {
                rc.cgroup_parent = parent.clone();
            }
            let (runsc, isolation) = choose_isolation(&cfg)?;
            rc.runsc = runsc;
            rc.ready_disks = cfg.ready_disks;
            let runtime = Runtime::with_config(rc)?;
            let report = runtime.recover(RecoverPolicy::Adopt)?;
            runtime.prewarm_disks(crate::runtime::DEFAULT_DISK_MB);
            runtime.preload(&cfg.envd_binary);
            for (id, e) in &report.failed {
                tracing::warn!(sandbox = %id, error = %e, "could not clean up a sandbox from the previous run");
            }
            let templates = Templates::open_with(&cfg.data_dir, cfg.images.clone())?;
            let snapshots = crate::snapshots::Snapshots::open(&cfg.data_dir)?;
            let adopted: HashSet<String> = report.adopted.into_iter().map(|h| h.id).collect();
            Ok((runtime, templates, snapshots, adopted, isolation))
        })
        .await?;
        let runtime = Arc::new(runtime);
        let records = RecordStore::open(data_dir.join("records"))?;
        let interception =
            crate::egress::TlsInterception::new(&data_dir, &config.egress_upstream_roots)
                .map_err(|e| Error::Config(e.to_string()))?;
        let egress = Egress::with_interception(config.egress_allow.clone(), Some(interception));
        let keys = KeyStore::load(&data_dir, config.dev_api_key.as_deref())?;
        let capacity = Capacity::new(config.limits.max_sandboxes, config.limits.memory_limit_mb());
        let mut sandboxes = HashMap::new();
        let sole_owner = keys.sole_owner();
        for mut record in records.load_all()? {
            let id = record.sandbox_id.clone();
            if record.owner.is_none()
                && !record
                    .metadata
                    .contains_key(crate::templates::build::BUILD_SANDBOX_METADATA)
            {
                // Written before sandboxes recorded their owner: with one key it can only
                // have been that key's; with several, no key may reach it (guessing would
                // hand one tenant's sandbox to another).
                match &sole_owner {
                    Some(owner) => {
                        record.owner = Some(owner.clone());
                        records.save(&record)?;
                        tracing::info!(sandbox = %id, "a sandbox recorded without an owner now belongs to the only API key");
                    }
                    None => {
                        tracing::warn!(sandbox = %id, "a sandbox recorded without an owner is reachable by no API key (several keys exist)")
                    }
                }
            }
            if record.paused_layers.is_some() && !adopted.contains(&id) {
                // Paused filesystem-only: nothing of it runs; its layers are its state.
                tracing::info!(sandbox = %id, "recovered a sandbox paused filesystem-only");
                let envd = EnvdEndpoint::new(runtime.clone(), id.clone());
                let reservation = capacity.adopt(record.memory_mb);
                let sandbox_egress = egress.sandbox(&id, recorded_rules(&record));
                sandboxes.insert(
                    id,
                    Arc::new(Entry::new(record, envd, reservation, sandbox_egress)),
                );
                continue;
            }
            if !adopted.contains(&id) {
                tracing::info!(sandbox = %id, "dropping the record of a sandbox that no longer runs");
                records.remove(&id)?;
                continue;
            }
            // Make the runtime agree with the record (a crash may have come mid-pause).
            let rt = runtime.clone();
            let want = record.state;
            let rid = id.clone();
            let aligned = blocking(move || match (want, rt.status(&rid)?) {
                (SandboxState::Running, SandboxStatus::Frozen) => rt.thaw(&rid),
                (SandboxState::Paused, SandboxStatus::Running) => rt.freeze(&rid),
                (_, SandboxStatus::Exited) => Err(Error::NotRunning(rid)),
                _ => Ok(()),
            })
            .await;
            if let Err(e) = aligned {
                tracing::warn!(sandbox = %id, error = %e, "killing a recovered sandbox");
                let rt = runtime.clone();
                let kid = id.clone();
                if let Err(error) = blocking(move || rt.kill(&kid)).await {
                    tracing::warn!(sandbox = %id, %error, "kill failed");
                }
                records.remove(&id)?;
                continue;
            }
            tracing::info!(sandbox = %id, state = record.state.as_str(), "recovered sandbox");
            let envd = EnvdEndpoint::new(runtime.clone(), id.clone());
            let reservation = capacity.adopt(record.memory_mb);
            let sandbox_egress = egress.sandbox(&id, recorded_rules(&record));
            if record.allow_internet_requested {
                // Its slirp4netns answered to the previous server's supervisor, which is
                // gone: it can open nothing new until a fresh one is attached.
                let rt = runtime.clone();
                let (rid, eg) = (id.clone(), sandbox_egress.clone());
                if let Err(e) = blocking(move || rt.reattach_network(&rid, &eg)).await {
                    tracing::warn!(sandbox = %id, error = %e, "could not re-attach the sandbox's network; its outbound access stays closed");
                }
            }
            sandboxes.insert(
                id,
                Arc::new(Entry::new(record, envd, reservation, sandbox_egress)),
            );
        }
        for id in &adopted {
            if !sandboxes.contains_key(id) {
                tracing::info!(sandbox = %id, "killing a sandbox without a record");
                let rt = runtime.clone();
                let kid = id.clone();
                if let Err(e) = blocking(move || rt.kill(&kid)).await {
                    tracing::warn!(sandbox = %id, error = %e, "kill failed");
                }
            }
        }
        // Left by versions that kept envd's socket in a directory the sandbox could write.
        crate::cleanup::remove_dir(&data_dir.join("envd"));
        let logs = super::logs::SandboxLogs::open(data_dir.join("logs"))?;
        logs.orphaned(&|id| sandboxes.contains_key(id));
        let warm_sandboxes = config.warm_sandboxes;
        let (vdir, vlimits) = (data_dir.join("volumes"), config.volumes);
        let volumes = blocking(move || crate::volumes::Volumes::open(vdir, vlimits)).await?;
        let server = Self {
            inner: Arc::new(Inner {
                config,
                runtime,
                isolation,
                records,
                templates,
                snapshots,
                keys,
                capacity,
                sandboxes: Mutex::new(sandboxes),
                warm: WarmPool::new(warm_sandboxes),
                shutdown: CancellationToken::new(),
                egress,
                metrics: super::metrics::MetricsHistory::default(),
                idempotency: super::idempotency::IdempotencyKeys::default(),
                logs,
                volumes,
                cleanups: super::cleanups::Cleanups::default(),
                _lock: lock,
            }),
        };
        crate::templates::build::kill_build_sandboxes(&server).await;
        server.collect_layer_garbage().await;
        tokio::spawn(super::reaper::reaper(Arc::downgrade(&server.inner)));
        tokio::spawn(super::metrics::sampler(Arc::downgrade(&server.inner)));
        Ok(server)
    }
}

/// The egress rules a record persisted. They were validated when they were stored; a
/// record that no longer parses (edited by hand) gets every outbound connection refused
/// rather than none.
pub(super) fn recorded_rules(record: &SandboxRecord) -> EgressRules {
    EgressRules::parse(&record.network.allow_out, &record.network.deny_out, "network.")
        .map(|rules| rules.with_transforms(record.network.rules.clone()))
        .unwrap_or_else(|e| {
            tracing::warn!(sandbox = %record.sandbox_id, error = %e, "unreadable egress rules in the record: denying all traffic");
            EgressRules::deny_all()
        })
}

/// Picks the default isolation: the operator's choice, or gVisor when runsc is installed
/// and works, else container. gVisor is offered (per template) whenever it works.
fn choose_isolation(
    config: &ServerConfig,
) -> Result<(Option<crate::runtime::RunscConfig>, Isolation)> {
    let program = config
        .runsc
        .clone()
        .or_else(crate::runtime::gvisor::find_runsc);
    let probed = match &program {
        Some(program) => {
            crate::runtime::gvisor::probe(program, &config.data_dir.join("runsc-probe"))
        }
        None => Err(crate::runtime::gvisor::ProbeError::NotInstalled),
    };
    match (config.isolation, probed) {
        (Some(Isolation::Gvisor), Err(why)) => Err(Error::Config(format!(
            "isolation gvisor was asked for but cannot be used: {why}"
        ))),
        (Some(choice), Ok(runsc)) => Ok((Some(runsc), choice)),
        (Some(choice), Err(_)) => Ok((None, choice)),
        (None, Ok(runsc)) => {
            tracing::info!(platform = %runsc.platform, "isolation: gvisor (runsc works here)");
            Ok((Some(runsc), Isolation::Gvisor))
        }
        (None, Err(why)) => {
            tracing::warn!(reason = %why, "isolation: container (gVisor unavailable)");
            Ok((None, Isolation::Container))
        }
    }
}
