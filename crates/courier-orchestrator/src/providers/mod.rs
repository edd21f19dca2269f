//! Several sandbox providers behind one [`SandboxApi`]: E2B cloud and courier-sandboxd
//! hosts, each with a capacity and labels, chosen per create by load and label.
//!
//! [`ProviderSet`] hands out sandbox ids of the form `<provider name>:<inner id>`, so the
//! provider travels with the id the store keeps (`provider_sandbox_id`) and any process
//! holding the same configuration routes a call for it to the same provider. Every call
//! that names a sandbox (an id or a [`SandboxRecord`]) is routed by that prefix and
//! reaches the named provider only, with the inner id: a sandbox of one provider cannot
//! be reached through another provider's name, and an id whose prefix names no
//! configured provider is [`Error::NotFound`] naming the id and the providers.
//!
//! **Placement** ([`ProviderSet::create`]): among the providers carrying the requested
//! label (metadata key [`METADATA_PLACEMENT_LABEL`], else the label configured for the
//! template with [`ProviderSet::with_template_label`], else any provider) and with room
//! (live sandboxes below their capacity), the least loaded one, ties broken by
//! configured order. Loads are each provider's [`SandboxApi::list`] (cached for
//! [`ProviderSet::with_count_ttl`]) plus the creates and kills made through this set
//! since, plus the creates in flight, so concurrent creates spread. All full: the
//! provider 429 ([`Error::RateLimited`]) that Courier answers as `provider_at_capacity`.
//! A provider failing a create with a transport error or its own 429 is skipped for the
//! next one (at most [`MAX_CREATE_ATTEMPTS`] providers per create), the failure logged.
//!
//! **Templates**: a template must exist wherever a sandbox may land, so
//! [`SandboxApi::build_template`] builds at every provider and the returned build id
//! encodes each provider's template and build ids (`templates.rs`);
//! [`SandboxApi::template_build_status`] merges the builds (failed if any failed, ready
//! when all are; the log lines are the first provider's), and
//! [`SandboxApi::list_templates`] lists only templates every provider has.
//!
//! Capacity is counted per process: several Courier replicas placing at once can
//! overshoot a capacity by their creates in flight until the next list; a provider's own
//! hard limit (courier-sandboxd's `--max-sandboxes`) still answers 429, and the next
//! provider is tried.

mod placement;
mod templates;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use courier_e2b::models::{ListedSandbox, NewSandbox, SandboxRecord};
use courier_e2b::{
    BuildRequested, BuildStatus, CommandOutput, CommandSpec, Error, NotFoundKind, Recipe,
    SandboxApi, SpawnedCommand, TemplateInfo,
};

use crate::{OrchestratorError, Result as OrchestratorResult};
use placement::Load;

/// The create metadata key naming the label a sandbox must be placed by: only providers
/// carrying that label are considered.
pub const METADATA_PLACEMENT_LABEL: &str = "courier_placement_label";

/// Providers tried at most for one create (the first choice and the next ones after
/// transport errors or a provider's own 429).
pub const MAX_CREATE_ATTEMPTS: usize = 3;

/// How long a provider's listed count is used before it is listed again, by default.
pub const DEFAULT_COUNT_TTL: Duration = Duration::from_secs(2);

/// Longest provider name.
const MAX_NAME_LEN: usize = 32;

/// One provider of a [`ProviderSet`]: a name (`[a-z0-9-]{1,32}`, the prefix of its
/// sandboxes' ids), the API reaching it, how many live sandboxes it may hold (`None`: no
/// limit of Courier's; the provider's own still applies) and its labels.
pub struct ProviderSpec {
    /// The name, `[a-z0-9-]{1,32}`.
    pub name: String,
    /// The provider itself (a courier-e2b `Client` for E2B cloud or a courier-sandboxd).
    pub api: Arc<dyn SandboxApi>,
    /// Live (running or paused) sandboxes it may hold.
    pub capacity: Option<u32>,
    /// Labels a create can ask for (`[a-z0-9-]{1,32}` each).
    pub labels: Vec<String>,
}

impl ProviderSpec {
    /// A provider without capacity or labels.
    pub fn new(name: impl Into<String>, api: Arc<dyn SandboxApi>) -> ProviderSpec {
        ProviderSpec {
            name: name.into(),
            api,
            capacity: None,
            labels: Vec::new(),
        }
    }

    /// Sets the capacity.
    pub fn capacity(mut self, capacity: u32) -> ProviderSpec {
        self.capacity = Some(capacity);
        self
    }

    /// Adds a label.
    pub fn label(mut self, label: impl Into<String>) -> ProviderSpec {
        self.labels.push(label.into());
        self
    }
}

/// Whether `name` is a valid provider name or label: `[a-z0-9-]{1,32}`.
///
/// ```
/// use courier_orchestrator::providers::is_valid_name;
/// assert!(is_valid_name("host-1"));
/// assert!(!is_valid_name("Host_1") && !is_valid_name("") && !is_valid_name("a:b"));
/// ```
pub fn is_valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

struct Member {
    name: String,
    api: Arc<dyn SandboxApi>,
    capacity: Option<u32>,
    labels: Vec<String>,
}

/// Several sandbox providers as one [`SandboxApi`] (see the [module docs](self)).
pub struct ProviderSet {
    members: Vec<Member>,
    template_labels: HashMap<String, String>,
    count_ttl: Duration,
    loads: Mutex<Vec<Load>>,
}

impl std::fmt::Debug for ProviderSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSet")
            .field("providers", &self.names())
            .finish_non_exhaustive()
    }
}

impl ProviderSet {
    /// A set over `providers`, in this order (the tie-break of placement).
    ///
    /// Fails with [`OrchestratorError::InvalidConfig`] naming the field when there is no
    /// provider, a name or label is not `[a-z0-9-]{1,32}`, or two providers share a
    /// name.
    pub fn new(providers: Vec<ProviderSpec>) -> OrchestratorResult<ProviderSet> {
        if providers.is_empty() {
            return Err(invalid(
                "providers",
                "at least one provider is needed".into(),
            ));
        }
        let mut members: Vec<Member> = Vec::with_capacity(providers.len());
        for p in providers {
            if !is_valid_name(&p.name) {
                return Err(invalid(
                    "providers.name",
                    format!(
                        "{:?} is not a provider name: 1 to 32 of a-z, 0-9 and -",
                        p.name
                    ),
                ));
            }
            if members.iter().any(|m| m.name == p.name) {
                return Err(invalid(
                    "providers.name",
                    format!("{:?} names two providers: names must be unique", p.name),
                ));
            }
            if let Some(label) = p.labels.iter().find(|l| !is_valid_name(l)) {
                return Err(invalid(
                    "providers.labels",
                    format!(
                        "{label:?} (provider {}) is not a label: 1 to 32 of a-z, 0-9 and -",
                        p.name
                    ),
                ));
            }
            members.push(Member {
                name: p.name,
                api: p.api,
                capacity: p.capacity,
                labels: p.labels,
            });
        }
        let loads = Mutex::new(members.iter().map(|_| Load::default()).collect());
        Ok(ProviderSet {
            members,
            template_labels: HashMap::new(),
            count_ttl: DEFAULT_COUNT_TTL,
            loads,
        })
    }

    /// Places sandboxes of `template` by `label` when their create names none.
    ///
    /// Fails when no provider carries the label.
    pub fn with_template_label(
        mut self,
        template: impl Into<String>,
        label: impl Into<String>,
    ) -> OrchestratorResult<ProviderSet> {
        let label = label.into();
        if !self.members.iter().any(|m| m.labels.contains(&label)) {
            return Err(invalid(
                "provider_template_labels",
                format!("no provider carries the label {label:?}"),
            ));
        }
        self.template_labels.insert(template.into(), label);
        Ok(self)
    }

    /// How long a provider's listed count is trusted before placement lists it again
    /// (default [`DEFAULT_COUNT_TTL`]).
    pub fn with_count_ttl(mut self, ttl: Duration) -> ProviderSet {
        self.count_ttl = ttl;
        self
    }

    /// The providers' names, in configured order.
    pub fn names(&self) -> Vec<&str> {
        self.members.iter().map(|m| m.name.as_str()).collect()
    }

    /// The provider a sandbox id names, and the id at that provider.
    fn route<'a>(&self, sandbox_id: &'a str) -> Result<(usize, &'a str), Error> {
        sandbox_id
            .split_once(':')
            .and_then(|(name, inner)| {
                let index = self.members.iter().position(|m| m.name == name)?;
                (!inner.is_empty()).then_some((index, inner))
            })
            .ok_or_else(|| Error::NotFound {
                kind: NotFoundKind::Sandbox,
                message: format!(
                    "sandbox id {sandbox_id:?} names no configured provider \
                     (ids are <provider>:<id>; providers: {})",
                    self.names().join(", ")
                ),
            })
    }

    /// The provider of a record and the record as that provider knows it.
    fn route_record(&self, record: &SandboxRecord) -> Result<(&Member, SandboxRecord), Error> {
        let (index, inner) = self.route(&record.sandbox_id)?;
        let mut inner_record = record.clone();
        inner_record.sandbox_id = inner.to_owned();
        Ok((&self.members[index], inner_record))
    }

    fn loads(&self) -> MutexGuard<'_, Vec<Load>> {
        // A panic while holding the lock leaves counts that are at worst stale.
        self.loads.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn invalid(field: &'static str, message: String) -> OrchestratorError {
    OrchestratorError::InvalidConfig { field, message }
}

/// `<name>:<inner>`: the id this set hands out.
fn outer_id(name: &str, inner: &str) -> String {
    format!("{name}:{inner}")
}

/// `error` with the provider named in its message, its variant kept (a transport error
/// cannot be reworded: it is logged with the name instead).
fn naming(name: &str, error: Error) -> Error {
    let prefix = |message: String| format!("provider {name}: {message}");
    match error {
        Error::Authentication { message } => Error::Authentication {
            message: prefix(message),
        },
        Error::NotFound { kind, message } => Error::NotFound {
            kind,
            message: prefix(message),
        },
        Error::Timeout { message } => Error::Timeout {
            message: prefix(message),
        },
        Error::RateLimited {
            message,
            retry_after,
        } => Error::RateLimited {
            message: prefix(message),
            retry_after,
        },
        Error::InvalidArgument { message } => Error::InvalidArgument {
            message: prefix(message),
        },
        Error::Protocol { message } => Error::Protocol {
            message: prefix(message),
        },
        Error::Api {
            status,
            code,
            message,
        } => Error::Api {
            status,
            code,
            message: prefix(message),
        },
        other => {
            tracing::warn!(provider = name, error = %other, "sandbox provider failed");
            other
        }
    }
}

#[async_trait]
impl SandboxApi for ProviderSet {
    async fn create(&self, request: NewSandbox) -> Result<SandboxRecord, Error> {
        self.place(request).await
    }

    async fn connect(
        &self,
        sandbox_id: &str,
        timeout: Option<Duration>,
    ) -> Result<SandboxRecord, Error> {
        let (index, inner) = self.route(sandbox_id)?;
        let member = &self.members[index];
        let mut record = member.api.connect(inner, timeout).await?;
        record.sandbox_id = outer_id(&member.name, &record.sandbox_id);
        Ok(record)
    }

    async fn kill(&self, sandbox_id: &str) -> Result<bool, Error> {
        let (index, inner) = self.route(sandbox_id)?;
        let killed = self.members[index].api.kill(inner).await?;
        if killed {
            self.loads()[index].killed();
        }
        Ok(killed)
    }

    async fn set_timeout(&self, sandbox_id: &str, timeout: Duration) -> Result<(), Error> {
        let (index, inner) = self.route(sandbox_id)?;
        self.members[index].api.set_timeout(inner, timeout).await
    }

    async fn pause(&self, sandbox_id: &str) -> Result<bool, Error> {
        let (index, inner) = self.route(sandbox_id)?;
        self.members[index].api.pause(inner).await
    }

    async fn run(
        &self,
        sandbox: &SandboxRecord,
        command: CommandSpec,
    ) -> Result<CommandOutput, Error> {
        let (member, inner) = self.route_record(sandbox)?;
        member.api.run(&inner, command).await
    }

    async fn spawn(
        &self,
        sandbox: &SandboxRecord,
        command: CommandSpec,
    ) -> Result<SpawnedCommand, Error> {
        let (member, inner) = self.route_record(sandbox)?;
        member.api.spawn(&inner, command).await
    }

    async fn send_stdin(
        &self,
        sandbox: &SandboxRecord,
        pid: u32,
        data: Bytes,
    ) -> Result<(), Error> {
        let (member, inner) = self.route_record(sandbox)?;
        member.api.send_stdin(&inner, pid, data).await
    }

    async fn kill_process(&self, sandbox: &SandboxRecord, pid: u32) -> Result<bool, Error> {
        let (member, inner) = self.route_record(sandbox)?;
        member.api.kill_process(&inner, pid).await
    }

    async fn write_file(
        &self,
        sandbox: &SandboxRecord,
        path: &str,
        data: Bytes,
    ) -> Result<(), Error> {
        let (member, inner) = self.route_record(sandbox)?;
        member.api.write_file(&inner, path, data).await
    }

    async fn read_file(&self, sandbox: &SandboxRecord, path: &str) -> Result<Bytes, Error> {
        let (member, inner) = self.route_record(sandbox)?;
        member.api.read_file(&inner, path).await
    }

    /// Every provider's sandboxes, ids prefixed with the provider's name.
    ///
    /// All or nothing: when any provider cannot list, this fails (naming it) rather than
    /// answer the others' sandboxes alone, because a caller reconciling with the list
    /// would take that provider's sandboxes for vanished and end them. A successful
    /// list also refreshes the counts placement uses.
    async fn list(&self) -> Result<Vec<ListedSandbox>, Error> {
        let listed = futures::future::join_all(self.members.iter().map(|m| m.api.list())).await;
        let mut all = Vec::new();
        let mut counts = Vec::with_capacity(listed.len());
        for (member, result) in self.members.iter().zip(listed) {
            let sandboxes = result.map_err(|e| naming(&member.name, e))?;
            counts.push(sandboxes.len());
            all.extend(sandboxes.into_iter().map(|mut s| {
                s.sandbox_id = outer_id(&member.name, &s.sandbox_id);
                s
            }));
        }
        let now = tokio::time::Instant::now();
        let mut loads = self.loads();
        for (load, count) in loads.iter_mut().zip(counts) {
            load.listed(now, count);
        }
        Ok(all)
    }

    async fn build_template(&self, name: &str, recipe: Recipe) -> Result<BuildRequested, Error> {
        templates::build_everywhere(self, name, recipe).await
    }

    async fn template_build_status(
        &self,
        template_id: &str,
        build_id: &str,
        logs_offset: usize,
    ) -> Result<BuildStatus, Error> {
        templates::merged_status(self, template_id, build_id, logs_offset).await
    }

    async fn list_templates(&self) -> Result<Vec<TemplateInfo>, Error> {
        templates::common_templates(self).await
    }
}
