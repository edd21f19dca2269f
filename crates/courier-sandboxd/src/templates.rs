//! Templates: named sets of read-only layers a sandbox starts from, with default limits,
//! environment, user and working directory.
//!
//! `base` (alias `base`) is assembled from the host's system directories by
//! [`crate::base_layer`] into `<data_dir>/layers/base`. Every other template is built
//! from a recipe through E2B's template build API ([`build`]): a parent template plus
//! steps (RUN, ENV, WORKDIR, USER, COPY) run once in a build sandbox, whose writes are
//! captured as one new read-only layer ([`crate::runtime::Runtime::capture_layer`]). A
//! built template's layers are its parent's plus that layer, so templates stack.
//!
//! On disk (every JSON file written atomically: temp file + rename):
//!
//! ```text
//! <data_dir>/templates/<templateID>/template.json        a TemplateRecord
//!                                  /builds/<buildID>.json  a BuildRecord
//!                                  /builds/<buildID>.log   its log, one JSON entry a line
//!                                  /files/<hash>           archives uploaded for COPY steps
//!                                                          (until no build of the template
//!                                                          waits or runs; see [`uploads`])
//! <data_dir>/layers/<templateID>/<buildID>/               the captured layer
//! ```
//!
//! A build that a restart interrupted becomes `error` ("interrupted by a server
//! restart") when the store opens again, and its half-made layer is removed.
//!
//! Deleting a template is refused for `base`, while one of its builds runs, while a
//! sandbox runs from it, and while another template is built on it (its layers are part
//! of that template's stack); the caller deletes the dependants first.

pub mod build;
pub mod uploads;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::runtime::Isolation;

/// The id (and alias) of the built-in template.
pub const BASE_TEMPLATE: &str = "base";
/// Default CPU count of templates that name none.
pub const DEFAULT_CPU_COUNT: u32 = 2;
/// Default memory of templates that name none, in MiB.
pub const DEFAULT_MEMORY_MB: u64 = 1024;
/// Disk size reported for sandboxes, in MiB.
const DISK_SIZE_MB: u64 = 4096;
/// Most log entries one status call returns (what the official SDKs expect).
pub const MAX_LOG_ENTRIES: usize = 100;

/// One template, as sandboxes and the API see it.
#[derive(Debug, Clone)]
pub struct Template {
    /// Its id.
    pub id: String,
    /// Names that resolve to it (`base`, or the name it was built under).
    pub aliases: Vec<String>,
    /// Its tags (`default` plus those given at build).
    pub tags: Vec<String>,
    /// Its read-only layers, bottom first; empty while no build of it is ready.
    pub layers: Vec<PathBuf>,
    /// Default CPU count of its sandboxes.
    pub cpu_count: u32,
    /// Default memory of its sandboxes, in MiB.
    pub memory_mb: u64,
    /// Size of its sandboxes' disks (their writable layer), in MiB.
    pub disk_size_mb: u64,
    /// How its sandboxes are isolated; `None` = the server's default.
    pub isolation: Option<Isolation>,
    /// When it was first requested (or, for `base`, its layer assembled).
    pub created_at: DateTime<Utc>,
    /// When it last changed (a build requested or finished).
    pub updated_at: DateTime<Utc>,
    /// Its latest build (the ready one when there is one, else the newest).
    pub build_id: String,
    /// Status of that build.
    pub build_status: BuildStatus,
    /// How many builds it has had.
    pub build_count: u64,
    /// Environment of its sandboxes (ENV steps, its parent's included).
    pub envs: BTreeMap<String, String>,
    /// Default user of its sandboxes (last USER step); `None` = `user`.
    pub user: Option<String>,
    /// Default working directory of its sandboxes (last WORKDIR step); `None` = home.
    pub workdir: Option<String>,
    /// Command started in the background in each of its sandboxes at create (`startCmd`).
    pub start_cmd: Option<String>,
    /// Command that must succeed before a create returns (`readyCmd`), retried for up to
    /// [`build::READY_TIMEOUT`].
    pub ready_cmd: Option<String>,
}

impl Template {
    /// Whether sandboxes can start from it (a build of it is ready).
    pub fn is_ready(&self) -> bool {
        !self.layers.is_empty()
    }
}

/// Sandbox settings a build request may give its template (`None`: keep / default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BuildSettings {
    /// Default CPU count of its sandboxes (1..=64).
    pub cpu_count: Option<u32>,
    /// Default memory of its sandboxes, MiB (128..=65536).
    pub memory_mb: Option<u64>,
    /// Disk size of its sandboxes, MiB.
    pub disk_size_mb: Option<u64>,
    /// How its sandboxes are isolated.
    pub isolation: Option<Isolation>,
}

/// Where a build is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildStatus {
    /// Requested (`POST /v3/templates`), not started yet.
    Waiting,
    /// Running its steps.
    Building,
    /// Done: its layer is in place and the template uses it.
    Ready,
    /// Failed (see its reason).
    Error,
}

impl BuildStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Waiting => "waiting",
            BuildStatus::Building => "building",
            BuildStatus::Ready => "ready",
            BuildStatus::Error => "error",
        }
    }

    fn finished(self) -> bool {
        matches!(self, BuildStatus::Ready | BuildStatus::Error)
    }
}

/// Level of a build log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Details.
    Debug,
    /// Progress and command output.
    Info,
    /// Something odd that did not stop the build.
    Warn,
    /// What stopped the build.
    Error,
}

/// One build log line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// When it was logged.
    pub timestamp: DateTime<Utc>,
    /// Its level.
    pub level: LogLevel,
    /// The text (one line).
    pub message: String,
    /// The step it belongs to: `base` (setting up), `1`.. (the recipe's steps, in
    /// order, as the SDKs number them), `finalize` (capturing the layer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

/// Why a build failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildReason {
    /// What happened, naming the step.
    pub message: String,
    /// The failed step (see [`LogEntry::step`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

/// What a ready build made (persisted in the template record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuiltVersion {
    /// The build.
    pub build_id: String,
    /// The template's layers: its parent's plus the build's own, bottom first.
    pub layers: Vec<PathBuf>,
    /// Environment of the template's sandboxes.
    pub envs: BTreeMap<String, String>,
    /// Default user, if a USER step (here or in the parent) set one.
    pub user: Option<String>,
    /// Default working directory, if a WORKDIR step set one.
    pub workdir: Option<String>,
    /// Started in the background in each of its sandboxes at create.
    #[serde(default)]
    pub start_cmd: Option<String>,
    /// Run until it succeeds (bounded) before a create of its sandboxes returns.
    #[serde(default)]
    pub ready_cmd: Option<String>,
}

/// A built template's persisted record (`template.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateRecord {
    /// Its id.
    pub id: String,
    /// Its name (its one alias).
    pub name: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Default CPU count of its sandboxes.
    pub cpu_count: u32,
    /// Default memory of its sandboxes, MiB.
    pub memory_mb: u64,
    /// Size of its sandboxes' disks, MiB (`None`: the default).
    #[serde(default)]
    pub disk_size_mb: Option<u64>,
    /// How its sandboxes are isolated (`None`: the server's default).
    #[serde(default)]
    pub isolation: Option<Isolation>,
    /// When it was first requested.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Its builds, oldest first.
    pub builds: Vec<String>,
    /// The version sandboxes start from (the latest ready build).
    pub ready: Option<BuiltVersion>,
}

/// A build's persisted record (`builds/<buildID>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildRecord {
    /// The template it builds.
    pub template_id: String,
    /// Its id.
    pub build_id: String,
    /// Where it is.
    pub status: BuildStatus,
    /// When it was requested.
    pub created_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// The parent template (once started).
    pub from_template: Option<String>,
    /// Why it failed.
    pub reason: Option<BuildReason>,
}

/// A build's status and a page of its log (`GET .../status`).
#[derive(Debug, Clone, PartialEq)]
pub struct BuildView {
    /// The build record.
    pub record: BuildRecord,
    /// Log entries from the requested offset (at most [`MAX_LOG_ENTRIES`]).
    pub entries: Vec<LogEntry>,
}

/// What `POST /v3/templates` answers.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestedBuild {
    /// The template (new, or the existing one of that name).
    pub template_id: String,
    /// The new build.
    pub build_id: String,
    /// The template's name.
    pub name: String,
    /// Its tags.
    pub tags: Vec<String>,
}

struct BuildState {
    record: BuildRecord,
    log: Vec<LogEntry>,
}

#[derive(Default)]
struct State {
    templates: BTreeMap<String, TemplateRecord>,
    builds: HashMap<String, BuildState>,
}

/// The templates known to a server: `base` plus the built ones. Shared, internally
/// locked.
#[derive(Debug)]
pub struct Templates {
    dir: PathBuf,
    layers_dir: PathBuf,
    base: Template,
    state: Mutex<State>,
    uploads: uploads::UploadBudget,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("templates", &self.templates.len())
            .field("builds", &self.builds.len())
            .finish()
    }
}

fn state_error(path: &Path, reason: impl ToString) -> Error {
    Error::State {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Writes `value` as JSON to `path` through a temp file and a rename, so a reader (or a
/// restart) sees the old or the new content, never half of it.
fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| state_error(path, e))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, bytes).map_err(Error::io("write", &tmp))?;
    fs::rename(&tmp, path).map_err(Error::io("rename", path))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).map_err(Error::io("read", path))?;
    serde_json::from_slice(&bytes).map_err(|e| state_error(path, e))
}

/// A random build id in UUID form (what E2B's build ids look like).
fn new_build_id() -> String {
    let hex = crate::state::random_hex(16);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Splits `name[:tag]` and checks both parts.
pub fn parse_name(full: &str) -> Result<(String, Option<String>)> {
    let (name, tag) = match full.split_once(':') {
        Some((n, t)) => (n, Some(t)),
        None => (full, None),
    };
    let name_ok = (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if !name_ok {
        return Err(Error::InvalidSpec {
            field: "name",
            reason: format!(
                "{name:?} must be 1-128 of [a-z0-9._-] starting with a letter or digit \
                 (optionally followed by :tag)"
            ),
        });
    }
    if name == BASE_TEMPLATE {
        return Err(Error::InvalidSpec {
            field: "name",
            reason: "`base` is the built-in template and cannot be rebuilt".to_owned(),
        });
    }
    if let Some(tag) = tag {
        check_tag(tag)?;
    }
    Ok((name.to_owned(), tag.map(str::to_owned)))
}

fn check_tag(tag: &str) -> Result<()> {
    let ok = (1..=128).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidSpec {
            field: "tags",
            reason: format!("{tag:?} must be 1-128 of [A-Za-z0-9._-]"),
        })
    }
}

impl Templates {
    /// Assembles (or finds) the `base` layer under `<data_dir>/layers` and loads the
    /// built templates under `<data_dir>/templates`, failing builds a restart interrupted.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let layers_dir = data_dir.join("layers");
        let layer = crate::base_layer::assemble(&layers_dir.join(BASE_TEMPLATE))?;
        let created_at = fs::metadata(&layer)
            .and_then(|m| m.modified())
            .map(DateTime::<Utc>::from)
            .unwrap_or_else(|_| Utc::now());
        let base = Template {
            id: BASE_TEMPLATE.to_owned(),
            aliases: vec![BASE_TEMPLATE.to_owned()],
            tags: vec!["default".to_owned()],
            layers: vec![layer],
            cpu_count: DEFAULT_CPU_COUNT,
            memory_mb: DEFAULT_MEMORY_MB,
            disk_size_mb: DISK_SIZE_MB,
            isolation: None,
            created_at,
            updated_at: created_at,
            build_id: BASE_TEMPLATE.to_owned(),
            build_status: BuildStatus::Ready,
            build_count: 1,
            envs: BTreeMap::new(),
            user: None,
            workdir: None,
            start_cmd: None,
            ready_cmd: None,
        };
        let dir = data_dir.join("templates");
        fs::create_dir_all(&dir).map_err(Error::io("create dir", &dir))?;
        let templates = Self {
            dir,
            layers_dir,
            base,
            state: Mutex::new(State::default()),
            uploads: uploads::UploadBudget::default(),
        };
        templates.load()?;
        // No build waits or runs after a restart (interrupted ones failed in `load`):
        // the uploads left from before serve nothing.
        let ids: Vec<String> = templates
            .state
            .lock()
            .expect("templates lock")
            .templates
            .keys()
            .cloned()
            .collect();
        for id in ids {
            templates.release_uploads(&id);
        }
        Ok(templates)
    }

    fn load(&self) -> Result<()> {
        let mut state = self.state.lock().expect("templates lock");
        for entry in fs::read_dir(&self.dir).map_err(Error::io("read dir", &self.dir))? {
            let entry = entry.map_err(Error::io("read dir", &self.dir))?;
            let path = entry.path().join("template.json");
            if !path.is_file() {
                // A template deleted halfway (its record goes first): finish the job.
                let _ = fs::remove_dir_all(entry.path());
                continue;
            }
            let record: TemplateRecord = read_json(&path)?;
            for build_id in &record.builds {
                let build_path = self.build_path(&record.id, build_id, "json");
                let Ok(mut build) = read_json::<BuildRecord>(&build_path) else {
                    tracing::warn!(path = %build_path.display(), "skipping an unreadable build record");
                    continue;
                };
                let log = read_log(&self.build_path(&record.id, build_id, "log"));
                let mut build_state = BuildState {
                    record: build.clone(),
                    log,
                };
                if !build.status.finished() {
                    // The process that ran it is gone: fail it, and drop what it made.
                    let layer = self.layer_dir(&record.id, build_id);
                    let _ = fs::remove_dir_all(&layer);
                    let mut partial = layer.into_os_string();
                    partial.push(".partial");
                    let _ = fs::remove_dir_all(PathBuf::from(partial));
                    let reason = BuildReason {
                        message: "interrupted by a server restart".to_owned(),
                        step: None,
                    };
                    build.status = BuildStatus::Error;
                    build.finished_at = Some(Utc::now());
                    build.reason = Some(reason.clone());
                    write_json(&build_path, &build)?;
                    let entry = LogEntry {
                        timestamp: Utc::now(),
                        level: LogLevel::Error,
                        message: format!("Build failed: {}", reason.message),
                        step: None,
                    };
                    self.append_log_file(&record.id, build_id, &entry);
                    build_state.log.push(entry);
                    build_state.record = build;
                }
                state.builds.insert(build_id.clone(), build_state);
            }
            state.templates.insert(record.id.clone(), record);
        }
        Ok(())
    }

    fn template_dir(&self, template_id: &str) -> PathBuf {
        self.dir.join(template_id)
    }

    fn build_path(&self, template_id: &str, build_id: &str, ext: &str) -> PathBuf {
        self.template_dir(template_id)
            .join("builds")
            .join(format!("{build_id}.{ext}"))
    }

    /// Where the files uploaded for template `template_id` with hash `hash` (COPY
    /// steps) are kept: with the template, so deleting it removes them.
    pub fn files_path(&self, template_id: &str, hash: &str) -> PathBuf {
        self.template_dir(template_id).join("files").join(hash)
    }

    /// Starts counting one COPY upload against `limits` (blocking: measures the stored
    /// uploads).
    pub(crate) fn begin_upload(&self, limits: &crate::ServerLimits) -> uploads::UploadTicket {
        self.uploads.begin(&self.dir, limits)
    }

    /// Removes the COPY uploads of `template_id` unless one of its builds is waiting or
    /// running (they may need them). Checked and done under the templates lock, so a build
    /// requested meanwhile either keeps them or finds them gone (and is told to upload).
    pub(crate) fn release_uploads(&self, template_id: &str) {
        let state = self.state.lock().expect("templates lock");
        let busy = state.templates.get(template_id).is_some_and(|record| {
            record.builds.iter().any(|b| {
                state
                    .builds
                    .get(b)
                    .is_some_and(|b| !b.record.status.finished())
            })
        });
        if !busy {
            let removed = uploads::remove_stored(&self.template_dir(template_id).join("files"));
            if removed > 0 {
                tracing::info!(
                    template = template_id,
                    removed,
                    "removed the COPY uploads its builds no longer need"
                );
            }
        }
    }

    /// Where build `build_id` of `template_id` puts its layer.
    pub fn layer_dir(&self, template_id: &str, build_id: &str) -> PathBuf {
        self.layers_dir.join(template_id).join(build_id)
    }

    fn view(&self, record: &TemplateRecord, state: &State) -> Template {
        let latest = record.builds.last().and_then(|b| state.builds.get(b));
        let in_flight = latest.filter(|l| !l.record.status.finished());
        let (build_id, build_status) = match (in_flight, &record.ready, latest) {
            // A newer build in flight shows; a failed one does not hide the usable version.
            (Some(l), _, _) => (l.record.build_id.clone(), l.record.status),
            (None, Some(ready), _) => (ready.build_id.clone(), BuildStatus::Ready),
            (None, None, Some(l)) => (l.record.build_id.clone(), l.record.status),
            (None, None, None) => (String::new(), BuildStatus::Waiting),
        };
        let ready = record.ready.clone();
        Template {
            id: record.id.clone(),
            aliases: vec![record.name.clone()],
            tags: record.tags.clone(),
            layers: ready.as_ref().map(|r| r.layers.clone()).unwrap_or_default(),
            cpu_count: record.cpu_count,
            memory_mb: record.memory_mb,
            disk_size_mb: record.disk_size_mb.unwrap_or(DISK_SIZE_MB),
            isolation: record.isolation,
            created_at: record.created_at,
            updated_at: record.updated_at,
            build_id,
            build_status,
            build_count: record.builds.len() as u64,
            envs: ready.as_ref().map(|r| r.envs.clone()).unwrap_or_default(),
            user: ready.as_ref().and_then(|r| r.user.clone()),
            workdir: ready.as_ref().and_then(|r| r.workdir.clone()),
            start_cmd: ready.as_ref().and_then(|r| r.start_cmd.clone()),
            ready_cmd: ready.and_then(|r| r.ready_cmd),
        }
    }

    /// The template called `name` (an id or an alias, optionally with a `:tag`, which is
    /// ignored because sandboxes start from a template's latest ready build). Only
    /// templates with a ready build resolve.
    pub fn resolve(&self, name: &str) -> Option<Template> {
        self.find(name).filter(Template::is_ready)
    }

    /// Like [`resolve`](Self::resolve), but also templates still building or failed.
    pub fn find(&self, name: &str) -> Option<Template> {
        let name = name.split_once(':').map_or(name, |(n, _)| n);
        if name == BASE_TEMPLATE {
            return Some(self.base.clone());
        }
        let state = self.state.lock().expect("templates lock");
        state
            .templates
            .values()
            .find(|t| t.id == name || t.name == name)
            .map(|t| self.view(t, &state))
    }

    /// All templates, `base` first, then by creation time.
    pub fn all(&self) -> Vec<Template> {
        let state = self.state.lock().expect("templates lock");
        let mut built: Vec<Template> = state
            .templates
            .values()
            .map(|t| self.view(t, &state))
            .collect();
        built.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        let mut all = vec![self.base.clone()];
        all.extend(built);
        all
    }

    /// Registers a new build of template `full_name` (`name` or `name:tag`; a template of
    /// that name is rebuilt under its id, otherwise a new one is made) in state `waiting`.
    pub fn request_build(
        &self,
        full_name: &str,
        extra_tags: &[String],
        settings: &BuildSettings,
    ) -> Result<RequestedBuild> {
        let BuildSettings {
            cpu_count,
            memory_mb,
            disk_size_mb,
            isolation,
        } = *settings;
        if let Some(disk) = disk_size_mb {
            crate::runtime::disk::validate_size(disk).map_err(|_| Error::InvalidSpec {
                field: "diskSizeMB",
                reason: format!(
                    "must be {}..={}",
                    crate::runtime::disk::MIN_DISK_MB,
                    crate::runtime::disk::MAX_DISK_MB
                ),
            })?;
        }
        let (name, tag) = parse_name(full_name)?;
        for tag in extra_tags {
            check_tag(tag)?;
        }
        if let Some(cpu) = cpu_count
            && !(1..=64).contains(&cpu)
        {
            return Err(Error::InvalidSpec {
                field: "cpuCount",
                reason: "must be 1..=64".to_owned(),
            });
        }
        if let Some(memory) = memory_mb
            && !(128..=65_536).contains(&memory)
        {
            return Err(Error::InvalidSpec {
                field: "memoryMB",
                reason: "must be 128..=65536".to_owned(),
            });
        }
        let mut tags: Vec<String> = tag.into_iter().chain(extra_tags.iter().cloned()).collect();
        if tags.is_empty() {
            tags.push("default".to_owned());
        }
        tags.dedup();
        let now = Utc::now();
        let build_id = new_build_id();
        let mut state = self.state.lock().expect("templates lock");
        let existing = state.templates.values().find(|t| t.name == name).cloned();
        let mut record = existing.unwrap_or_else(|| TemplateRecord {
            id: crate::state::new_sandbox_id(),
            name: name.clone(),
            tags: Vec::new(),
            cpu_count: DEFAULT_CPU_COUNT,
            memory_mb: DEFAULT_MEMORY_MB,
            disk_size_mb: None,
            isolation: None,
            created_at: now,
            updated_at: now,
            builds: Vec::new(),
            ready: None,
        });
        record.cpu_count = cpu_count.unwrap_or(record.cpu_count);
        record.memory_mb = memory_mb.unwrap_or(record.memory_mb);
        record.disk_size_mb = disk_size_mb.or(record.disk_size_mb);
        record.isolation = isolation.or(record.isolation);
        for tag in &tags {
            if !record.tags.contains(tag) {
                record.tags.push(tag.clone());
            }
        }
        record.updated_at = now;
        record.builds.push(build_id.clone());
        let build = BuildRecord {
            template_id: record.id.clone(),
            build_id: build_id.clone(),
            status: BuildStatus::Waiting,
            created_at: now,
            finished_at: None,
            from_template: None,
            reason: None,
        };
        let builds_dir = self.template_dir(&record.id).join("builds");
        fs::create_dir_all(&builds_dir).map_err(Error::io("create dir", &builds_dir))?;
        // The build record first: a template record never names a build that has none.
        write_json(&self.build_path(&record.id, &build_id, "json"), &build)?;
        write_json(
            &self.template_dir(&record.id).join("template.json"),
            &record,
        )?;
        state.builds.insert(
            build_id.clone(),
            BuildState {
                record: build,
                log: Vec::new(),
            },
        );
        let requested = RequestedBuild {
            template_id: record.id.clone(),
            build_id,
            name,
            tags: record.tags.clone(),
        };
        state.templates.insert(record.id.clone(), record);
        Ok(requested)
    }

    /// Build `build_id` of `template_id`: its record and the log from `offset` (at most
    /// [`MAX_LOG_ENTRIES`]).
    pub fn build_view(
        &self,
        template_id: &str,
        build_id: &str,
        offset: usize,
    ) -> Result<BuildView> {
        let state = self.state.lock().expect("templates lock");
        let build = state
            .builds
            .get(build_id)
            .filter(|b| b.record.template_id == template_id)
            .ok_or_else(|| {
                Error::NotFound(format!("build {build_id} of template {template_id}"))
            })?;
        let entries = build
            .log
            .iter()
            .skip(offset)
            .take(MAX_LOG_ENTRIES)
            .cloned()
            .collect();
        Ok(BuildView {
            record: build.record.clone(),
            entries,
        })
    }

    /// Marks build `build_id` as started from `from_template` (it must be waiting).
    pub(crate) fn start_build(
        &self,
        template_id: &str,
        build_id: &str,
        from_template: &str,
    ) -> Result<()> {
        self.update_build(template_id, build_id, |build| {
            if build.status != BuildStatus::Waiting {
                return Err(Error::Conflict(format!(
                    "build {build_id} was already started (status {})",
                    build.status.as_str()
                )));
            }
            build.status = BuildStatus::Building;
            build.from_template = Some(from_template.to_owned());
            Ok(())
        })
    }

    /// Appends `entry` to the build's log (in memory and on disk).
    pub(crate) fn log(&self, template_id: &str, build_id: &str, entry: LogEntry) {
        self.append_log_file(template_id, build_id, &entry);
        let mut state = self.state.lock().expect("templates lock");
        if let Some(build) = state.builds.get_mut(build_id) {
            build.log.push(entry);
        }
    }

    fn append_log_file(&self, template_id: &str, build_id: &str, entry: &LogEntry) {
        let path = self.build_path(template_id, build_id, "log");
        let mut line = serde_json::to_vec(entry).expect("log entries serialize");
        line.push(b'\n');
        let written = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(&line));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "could not append to a build log");
        }
    }

    /// Marks the build failed with `reason`.
    pub(crate) fn fail_build(
        &self,
        template_id: &str,
        build_id: &str,
        reason: BuildReason,
    ) -> Result<()> {
        self.update_build(template_id, build_id, |build| {
            build.status = BuildStatus::Error;
            build.finished_at = Some(Utc::now());
            build.reason = Some(reason);
            Ok(())
        })
    }

    /// Marks the build ready and makes `version` the template's current one.
    pub(crate) fn finish_build(&self, template_id: &str, version: BuiltVersion) -> Result<()> {
        let build_id = version.build_id.clone();
        let mut state = self.state.lock().expect("templates lock");
        let mut record = state
            .templates
            .get(template_id)
            .cloned()
            .ok_or_else(|| Error::UnknownTemplate(template_id.to_owned()))?;
        record.ready = Some(version);
        record.updated_at = Utc::now();
        write_json(
            &self.template_dir(template_id).join("template.json"),
            &record,
        )?;
        state.templates.insert(template_id.to_owned(), record);
        drop(state);
        self.update_build(template_id, &build_id, |build| {
            build.status = BuildStatus::Ready;
            build.finished_at = Some(Utc::now());
            Ok(())
        })
    }

    fn update_build(
        &self,
        template_id: &str,
        build_id: &str,
        f: impl FnOnce(&mut BuildRecord) -> Result<()>,
    ) -> Result<()> {
        let mut state = self.state.lock().expect("templates lock");
        let build = state
            .builds
            .get_mut(build_id)
            .filter(|b| b.record.template_id == template_id)
            .ok_or_else(|| {
                Error::NotFound(format!("build {build_id} of template {template_id}"))
            })?;
        let mut record = build.record.clone();
        f(&mut record)?;
        write_json(&self.build_path(template_id, build_id, "json"), &record)?;
        build.record = record;
        Ok(())
    }

    /// Removes the layers of earlier builds that nothing uses any more: not the current
    /// version of any template (a rebuilt template's children keep its older layers),
    /// not a build in progress, and not `in_use` (layers of running sandboxes, which
    /// may still be on an older version). Returns what was removed.
    pub fn collect_garbage(&self, in_use: &std::collections::HashSet<PathBuf>) -> Vec<PathBuf> {
        let state = self.state.lock().expect("templates lock");
        let referenced: std::collections::HashSet<&PathBuf> = state
            .templates
            .values()
            .filter_map(|t| t.ready.as_ref())
            .flat_map(|v| v.layers.iter())
            .collect();
        let mut removed = Vec::new();
        for record in state.templates.values() {
            for build_id in &record.builds {
                let Some(build) = state.builds.get(build_id) else {
                    continue;
                };
                let layer = self.layer_dir(&record.id, build_id);
                if !build.record.status.finished()
                    || referenced.contains(&layer)
                    || in_use.contains(&layer)
                    || !layer.exists()
                {
                    continue;
                }
                match fs::remove_dir_all(&layer) {
                    Ok(()) => removed.push(layer),
                    Err(e) => {
                        tracing::warn!(layer = %layer.display(), error = %e, "could not remove an unused template layer")
                    }
                }
            }
        }
        removed
    }

    /// Deletes template `id` (id or alias), its builds, logs and layers. `in_use` says
    /// whether a sandbox runs from a template id. Refused (`Conflict`) for `base`, while
    /// a build of it runs, while a sandbox uses it and while another template stacks on
    /// its layers.
    pub fn delete(&self, id: &str, in_use: impl Fn(&str) -> bool) -> Result<()> {
        let mut state = self.state.lock().expect("templates lock");
        let name = id.split_once(':').map_or(id, |(n, _)| n);
        if name == BASE_TEMPLATE {
            return Err(Error::Conflict(
                "template base is built in and cannot be deleted".to_owned(),
            ));
        }
        let record = state
            .templates
            .values()
            .find(|t| t.id == name || t.name == name)
            .cloned()
            .ok_or_else(|| Error::UnknownTemplate(id.to_owned()))?;
        if let Some(build) = record.builds.iter().find(|b| {
            state
                .builds
                .get(*b)
                .is_some_and(|b| !b.record.status.finished())
        }) {
            return Err(Error::Conflict(format!(
                "template {} has build {build} in progress; delete it when the build is done",
                record.id
            )));
        }
        if in_use(&record.id) {
            return Err(Error::Conflict(format!(
                "template {} is used by running sandboxes; kill them first",
                record.id
            )));
        }
        let own_layers = self.layers_dir.join(&record.id);
        if let Some(child) = state.templates.values().find(|t| {
            t.id != record.id
                && t.ready
                    .as_ref()
                    .is_some_and(|r| r.layers.iter().any(|l| l.starts_with(&own_layers)))
        }) {
            return Err(Error::Conflict(format!(
                "template {} is built on template {}; delete {} first",
                child.id, record.id, child.id
            )));
        }
        // The record goes first: a crash after it leaves only unreferenced files, which
        // `open` removes.
        let template_json = self.template_dir(&record.id).join("template.json");
        fs::remove_file(&template_json).map_err(Error::io("remove", &template_json))?;
        for build in &record.builds {
            state.builds.remove(build);
        }
        state.templates.remove(&record.id);
        drop(state);
        let _ = fs::remove_dir_all(self.template_dir(&record.id));
        if own_layers.exists() {
            fs::remove_dir_all(&own_layers).map_err(Error::io("remove", &own_layers))?;
        }
        Ok(())
    }
}

/// Reads a JSON-lines build log; a torn last line (a crash mid-append) is skipped.
fn read_log(path: &Path) -> Vec<LogEntry> {
    let Ok(text) = fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_tags_split_off() {
        assert_eq!(
            parse_name("my-tpl:v1").unwrap(),
            ("my-tpl".to_owned(), Some("v1".to_owned()))
        );
        assert_eq!(parse_name("a.b_c").unwrap(), ("a.b_c".to_owned(), None));
        for bad in ["", "Upper", "team/name", "-x", "base", "ok:bad tag"] {
            let err = parse_name(bad).unwrap_err();
            assert!(
                err.to_string().contains("name") || err.to_string().contains("tags"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn build_ids_look_like_uuids() {
        let id = new_build_id();
        let parts: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
    }

    #[test]
    fn torn_log_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.log");
        let entry = LogEntry {
            timestamp: Utc::now(),
            level: LogLevel::Info,
            message: "hello".to_owned(),
            step: Some("1".to_owned()),
        };
        let mut text = serde_json::to_string(&entry).unwrap();
        text.push_str("\n{\"timestamp\":");
        fs::write(&path, text).unwrap();
        assert_eq!(read_log(&path), vec![entry]);
    }
}
