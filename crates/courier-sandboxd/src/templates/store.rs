//! The template store: templates and their builds, in memory and in the data dir.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::Utc;
use serde::Serialize;

use super::names::{check_tag, new_build_id, parse_name};
use super::*;
use crate::error::{Error, Result};
use crate::lock::lock;

/// A build this server knows: its record and its log.
struct KnownBuild {
    record: BuildRecord,
    log: Vec<LogEntry>,
}

#[derive(Default)]
struct State {
    templates: BTreeMap<String, TemplateRecord>,
    builds: HashMap<String, KnownBuild>,
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
    images: crate::images::Images,
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

impl Templates {
    /// Assembles (or finds) the `base` layer under `<data_dir>/layers` and loads the
    /// built templates under `<data_dir>/templates`, failing builds a restart interrupted.
    pub fn open(data_dir: &Path) -> Result<Self> {
        Self::open_with(data_dir, crate::images::ImageConfig::default())
    }

    /// [`open`](Self::open) with where `fromImage` bases are pulled from.
    pub fn open_with(data_dir: &Path, images: crate::images::ImageConfig) -> Result<Self> {
        let images = crate::images::Images::open(data_dir, images)?;
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
            build_status: BuildState::Ready,
            build_count: 1,
            envs: BTreeMap::new(),
            user: None,
            workdir: None,
            start_cmd: None,
            ready_cmd: None,
            public: true,
            owner: None,
        };
        let dir = data_dir.join("templates");
        fs::create_dir_all(&dir).map_err(Error::io("create dir", &dir))?;
        let templates = Self {
            dir,
            layers_dir,
            base,
            state: Mutex::new(State::default()),
            uploads: uploads::UploadBudget::default(),
            images,
        };
        templates.load()?;
        // No build waits or runs after a restart (interrupted ones failed in `load`):
        // the uploads left from before serve nothing.
        let ids: Vec<String> = lock(&templates.state).templates.keys().cloned().collect();
        for id in ids {
            templates.release_uploads(&id);
        }
        Ok(templates)
    }

    fn load(&self) -> Result<()> {
        let mut state = lock(&self.state);
        for entry in fs::read_dir(&self.dir).map_err(Error::io("read dir", &self.dir))? {
            let entry = entry.map_err(Error::io("read dir", &self.dir))?;
            let path = entry.path().join("template.json");
            if !path.is_file() {
                // A template deleted halfway (its record goes first): finish the job.
                crate::cleanup::remove_dir(&entry.path());
                continue;
            }
            let mut record: TemplateRecord = read_json(&path)?;
            if !record.tags.is_empty() {
                // A record from before tags named builds: its tags name its ready build.
                if let Some(ready) = &record.ready {
                    for tag in std::mem::take(&mut record.tags) {
                        record.tag_builds.entry(tag).or_insert_with(|| TagRecord {
                            build_id: ready.build_id.clone(),
                            created_at: record.updated_at,
                        });
                    }
                }
                record.tags.clear();
                write_json(&path, &record)?;
            }
            for build_id in &record.builds {
                let build_path = self.build_path(&record.id, build_id, "json");
                let Ok(mut build) = read_json::<BuildRecord>(&build_path) else {
                    tracing::warn!(path = %build_path.display(), "skipping an unreadable build record");
                    continue;
                };
                let log = read_log(&self.build_path(&record.id, build_id, "log"));
                let mut build_state = KnownBuild {
                    record: build.clone(),
                    log,
                };
                if !build.status.is_finished() {
                    // The process that ran it is gone: fail it, and drop what it made.
                    let layer = self.layer_dir(&record.id, build_id);
                    crate::cleanup::remove_dir(&layer);
                    let mut partial = layer.into_os_string();
                    partial.push(".partial");
                    crate::cleanup::remove_dir(Path::new(&partial));
                    let reason = BuildReason {
                        message: "interrupted by a server restart".to_owned(),
                        step: None,
                    };
                    build.status = BuildState::Error;
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
        let state = lock(&self.state);
        let busy = state.templates.get(template_id).is_some_and(|record| {
            record.builds.iter().any(|b| {
                state
                    .builds
                    .get(b)
                    .is_some_and(|b| !b.record.status.is_finished())
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

    /// The directory holding every template's layers (`<data_dir>/layers`).
    pub fn layers_root(&self) -> &Path {
        &self.layers_dir
    }

    /// Where build `build_id` of `template_id` puts its layer.
    pub fn layer_dir(&self, template_id: &str, build_id: &str) -> PathBuf {
        self.layers_dir.join(template_id).join(build_id)
    }

    fn view(&self, record: &TemplateRecord, state: &State) -> Template {
        self.view_of(record, state, None)
    }

    /// The template as `version` (a tagged build) of it, or its current one.
    fn view_of(
        &self,
        record: &TemplateRecord,
        state: &State,
        version: Option<&BuiltVersion>,
    ) -> Template {
        let latest = record.builds.last().and_then(|b| state.builds.get(b));
        let in_flight = latest.filter(|l| !l.record.status.is_finished());
        let ready = version.or(record.ready.as_ref());
        let (build_id, build_status) = match (in_flight, ready, latest) {
            (_, Some(v), _) if version.is_some() => (v.build_id.clone(), BuildState::Ready),
            // A newer build in flight shows; a failed one does not hide the usable version.
            (Some(l), _, _) => (l.record.build_id.clone(), l.record.status),
            (None, Some(ready), _) => (ready.build_id.clone(), BuildState::Ready),
            (None, None, Some(l)) => (l.record.build_id.clone(), l.record.status),
            (None, None, None) => (String::new(), BuildState::Waiting),
        };
        let ready = ready.cloned();
        Template {
            id: record.id.clone(),
            aliases: vec![record.name.clone()],
            tags: record.tag_builds.keys().cloned().collect(),
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
            public: record.public,
            owner: record.owner.clone(),
        }
    }

    /// The template called `name` (an id or an alias, optionally with a `:tag`). Without
    /// a tag it is the template's latest ready build; with one, the build that tag names
    /// (an unknown tag resolves to nothing). `base` has one build and ignores tags. Only
    /// ready builds resolve.
    pub fn resolve(&self, name: &str) -> Option<Template> {
        if name.starts_with(crate::images::IMAGE_TEMPLATE_PREFIX) {
            return self.image_template(name);
        }
        let Some((bare, tag)) = name.split_once(':') else {
            return self.find(name).filter(Template::is_ready);
        };
        if bare == BASE_TEMPLATE {
            return Some(self.base.clone());
        }
        let state = lock(&self.state);
        let record = state
            .templates
            .values()
            .find(|t| t.id == bare || t.name == bare)?;
        let build_id = &record.tag_builds.get(tag)?.build_id;
        let version = version_of(record, build_id)?;
        Some(self.view_of(record, &state, Some(version))).filter(Template::is_ready)
    }

    /// The pulled images (`fromImage` bases).
    pub fn images(&self) -> &crate::images::Images {
        &self.images
    }

    /// A pulled image as a template (`image@sha256:<hex>`): its flattened layer, its
    /// config's environment and working directory. Build sandboxes of `fromImage`
    /// recipes start from it.
    fn image_template(&self, id: &str) -> Option<Template> {
        let (dir, record) = self.images.find(id)?;
        let pulled_at = record.pulled_at;
        Some(Template {
            id: id.to_owned(),
            aliases: Vec::new(),
            tags: Vec::new(),
            layers: vec![dir],
            cpu_count: DEFAULT_CPU_COUNT,
            memory_mb: DEFAULT_MEMORY_MB,
            disk_size_mb: DISK_SIZE_MB,
            isolation: None,
            created_at: pulled_at,
            updated_at: pulled_at,
            build_id: record.digest.clone(),
            build_status: BuildState::Ready,
            build_count: 1,
            envs: record.envs,
            // Until provisioning has made `user`, only root exists for sure (envd's
            // `/init` checks the default user).
            user: Some("root".to_owned()),
            workdir: record.workdir,
            start_cmd: None,
            ready_cmd: None,
            // Only build sandboxes start from a pulled image, never an API key's create.
            public: false,
            owner: None,
        })
    }

    /// A ready version of template `template_id` (current or tagged) built from the
    /// recipe `key` names (the build cache).
    pub fn cached_version(&self, template_id: &str, key: &str) -> Option<BuiltVersion> {
        let state = lock(&self.state);
        let record = state.templates.get(template_id)?;
        record
            .ready
            .iter()
            .chain(record.tagged_versions.iter())
            .find(|v| v.recipe_key.as_deref() == Some(key))
            .cloned()
    }

    /// The tags of template `name` (id or alias), by tag.
    pub fn tags(&self, name: &str) -> Result<Vec<TagView>> {
        let name = name.split_once(':').map_or(name, |(n, _)| n);
        if name == BASE_TEMPLATE {
            return Ok(vec![TagView {
                tag: "default".to_owned(),
                build_id: BASE_TEMPLATE.to_owned(),
                created_at: self.base.created_at,
            }]);
        }
        let state = lock(&self.state);
        let record = state
            .templates
            .values()
            .find(|t| t.id == name || t.name == name)
            .ok_or_else(|| Error::UnknownTemplate(name.to_owned()))?;
        Ok(record
            .tag_builds
            .iter()
            .map(|(tag, t)| TagView {
                tag: tag.clone(),
                build_id: t.build_id.clone(),
                created_at: t.created_at,
            })
            .collect())
    }

    /// Points `tags` at the build `target` (`name:tag`, or `name` for its current
    /// version) names, which must be ready; tags may be given bare or as `name:tag`.
    /// Returns that build and the tags assigned.
    pub fn assign_tags(&self, target: &str, tags: &[String]) -> Result<(String, Vec<String>)> {
        let (name, source_tag) = match target.split_once(':') {
            Some((n, t)) => (n, Some(t)),
            None => (target, None),
        };
        if name == BASE_TEMPLATE {
            return Err(Error::Conflict(
                "template base is built in and cannot be tagged".to_owned(),
            ));
        }
        let tags = bare_tags(name, tags)?;
        let mut state = lock(&self.state);
        let record = state
            .templates
            .values()
            .find(|t| t.id == name || t.name == name)
            .cloned()
            .ok_or_else(|| Error::UnknownTemplate(name.to_owned()))?;
        let build_id = match source_tag {
            Some(tag) => {
                check_tag(tag)?;
                record
                    .tag_builds
                    .get(tag)
                    .map(|t| t.build_id.clone())
                    .ok_or_else(|| Error::UnknownTemplate(format!("{}:{tag}", record.name)))?
            }
            None => record
                .ready
                .as_ref()
                .map(|r| r.build_id.clone())
                .ok_or_else(|| {
                    Error::Conflict(format!(
                        "template {} has no ready build to tag yet",
                        record.name
                    ))
                })?,
        };
        let mut record = record;
        let now = Utc::now();
        for tag in &tags {
            record.tag_builds.insert(
                tag.clone(),
                TagRecord {
                    build_id: build_id.clone(),
                    created_at: now,
                },
            );
        }
        check_tag_count(&record)?;
        prune_versions(&mut record);
        record.updated_at = now;
        write_json(
            &self.template_dir(&record.id).join("template.json"),
            &record,
        )?;
        state.templates.insert(record.id.clone(), record);
        Ok((build_id, tags))
    }

    /// Sets whether template `name` (id or alias) is public (E2B's template update), for
    /// the API key `owner`: another key's template is not found, as an unknown one is
    /// (ids cannot be probed); `base` is built in and always public (`Conflict`).
    /// Persisted at once. Returns the template as it is now.
    pub fn update(&self, name: &str, owner: &str, public: Option<bool>) -> Result<Template> {
        let name = name.split_once(':').map_or(name, |(n, _)| n);
        if name == BASE_TEMPLATE {
            return Err(Error::Conflict(
                "template base is built in and always public; it cannot be updated".to_owned(),
            ));
        }
        let mut state = lock(&self.state);
        let mut record = state
            .templates
            .values()
            .find(|t| t.id == name || t.name == name)
            .filter(|t| t.owner.as_deref().is_none_or(|o| o == owner))
            .cloned()
            .ok_or_else(|| Error::UnknownTemplate(name.to_owned()))?;
        if let Some(public) = public
            && public != record.public
        {
            record.public = public;
            record.updated_at = Utc::now();
            write_json(
                &self.template_dir(&record.id).join("template.json"),
                &record,
            )?;
        }
        let template = self.view(&record, &state);
        state.templates.insert(record.id.clone(), record);
        Ok(template)
    }

    /// Removes `tags` (bare or `name:tag`) from template `name`; every one must be
    /// there (else nothing is removed). A build no tag names any more keeps its layers
    /// only while it is the current version or a sandbox runs from it.
    pub fn remove_tags(&self, name: &str, tags: &[String]) -> Result<()> {
        let name = name.split_once(':').map_or(name, |(n, _)| n);
        if name == BASE_TEMPLATE {
            return Err(Error::Conflict(
                "template base is built in and its tags cannot be removed".to_owned(),
            ));
        }
        let tags = bare_tags(name, tags)?;
        let mut state = lock(&self.state);
        let mut record = state
            .templates
            .values()
            .find(|t| t.id == name || t.name == name)
            .cloned()
            .ok_or_else(|| Error::UnknownTemplate(name.to_owned()))?;
        if let Some(missing) = tags.iter().find(|t| !record.tag_builds.contains_key(*t)) {
            return Err(Error::UnknownTemplate(format!("{}:{missing}", record.name)));
        }
        for tag in &tags {
            record.tag_builds.remove(tag);
        }
        prune_versions(&mut record);
        record.updated_at = Utc::now();
        write_json(
            &self.template_dir(&record.id).join("template.json"),
            &record,
        )?;
        state.templates.insert(record.id.clone(), record);
        Ok(())
    }

    /// Template `name` (id or alias) with every build it has had, newest first.
    pub fn builds(&self, name: &str) -> Result<(Template, Vec<BuildRecord>)> {
        let template = self
            .find(name)
            .ok_or_else(|| Error::UnknownTemplate(name.to_owned()))?;
        if template.id == BASE_TEMPLATE {
            let base = BuildRecord {
                template_id: BASE_TEMPLATE.to_owned(),
                build_id: BASE_TEMPLATE.to_owned(),
                status: BuildState::Ready,
                created_at: template.created_at,
                finished_at: Some(template.created_at),
                from_template: None,
                reason: None,
                tags: vec!["default".to_owned()],
            };
            return Ok((template, vec![base]));
        }
        let state = lock(&self.state);
        let builds = state
            .templates
            .get(&template.id)
            .map(|r| {
                r.builds
                    .iter()
                    .rev()
                    .filter_map(|b| state.builds.get(b).map(|b| b.record.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Ok((template, builds))
    }

    /// Every log entry of build `build_id` of `template_id`.
    pub fn build_log(&self, template_id: &str, build_id: &str) -> Result<Vec<LogEntry>> {
        let state = lock(&self.state);
        state
            .builds
            .get(build_id)
            .filter(|b| b.record.template_id == template_id)
            .map(|b| b.log.clone())
            .ok_or_else(|| Error::NotFound(format!("build {build_id} of template {template_id}")))
    }

    /// Like [`resolve`](Self::resolve), but also templates still building or failed.
    pub fn find(&self, name: &str) -> Option<Template> {
        let name = name.split_once(':').map_or(name, |(n, _)| n);
        if name == BASE_TEMPLATE {
            return Some(self.base.clone());
        }
        let state = lock(&self.state);
        state
            .templates
            .values()
            .find(|t| t.id == name || t.name == name)
            .map(|t| self.view(t, &state))
    }

    /// All templates, `base` first, then by creation time.
    pub fn all(&self) -> Vec<Template> {
        let state = lock(&self.state);
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
    /// that name is rebuilt under its id, otherwise a new one is made, belonging to
    /// `owner`) in state `waiting`. Another key's template of that name is refused
    /// (`Conflict`): only its owner rebuilds it.
    pub fn request_build(
        &self,
        full_name: &str,
        extra_tags: &[String],
        settings: &BuildSettings,
        owner: Option<&str>,
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
        let mut seen = std::collections::HashSet::new();
        tags.retain(|t| seen.insert(t.clone()));
        if tags.len() > MAX_TAGS {
            return Err(Error::InvalidSpec {
                field: "tags",
                reason: format!("at most {MAX_TAGS} tags per template"),
            });
        }
        let now = Utc::now();
        let build_id = new_build_id();
        let mut state = lock(&self.state);
        let existing = state.templates.values().find(|t| t.name == name).cloned();
        if let (Some(existing), Some(owner)) = (&existing, owner)
            && existing.owner.as_deref().is_some_and(|o| o != owner)
        {
            return Err(Error::Conflict(format!(
                "the template name {name:?} belongs to another API key; choose another name"
            )));
        }
        let mut record = existing.unwrap_or_else(|| TemplateRecord {
            id: crate::state::new_sandbox_id(),
            name: name.clone(),
            tags: Vec::new(),
            tag_builds: BTreeMap::new(),
            tagged_versions: Vec::new(),
            cpu_count: DEFAULT_CPU_COUNT,
            memory_mb: DEFAULT_MEMORY_MB,
            disk_size_mb: None,
            isolation: None,
            created_at: now,
            updated_at: now,
            builds: Vec::new(),
            ready: None,
            public: false,
            owner: owner.map(str::to_owned),
        });
        record.cpu_count = cpu_count.unwrap_or(record.cpu_count);
        record.memory_mb = memory_mb.unwrap_or(record.memory_mb);
        record.disk_size_mb = disk_size_mb.or(record.disk_size_mb);
        record.isolation = isolation.or(record.isolation);
        record.updated_at = now;
        record.builds.push(build_id.clone());
        let build = BuildRecord {
            template_id: record.id.clone(),
            build_id: build_id.clone(),
            status: BuildState::Waiting,
            created_at: now,
            finished_at: None,
            from_template: None,
            reason: None,
            tags: tags.clone(),
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
            KnownBuild {
                record: build,
                log: Vec::new(),
            },
        );
        let requested = RequestedBuild {
            template_id: record.id.clone(),
            build_id,
            name,
            tags,
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
        let state = lock(&self.state);
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
            if build.status != BuildState::Waiting {
                return Err(Error::Conflict(format!(
                    "build {build_id} was already started (status {})",
                    build.status.as_str()
                )));
            }
            build.status = BuildState::Building;
            build.from_template = Some(from_template.to_owned());
            Ok(())
        })
    }

    /// Appends `entry` to the build's log (in memory and on disk).
    pub(crate) fn log(&self, template_id: &str, build_id: &str, entry: LogEntry) {
        self.append_log_file(template_id, build_id, &entry);
        let mut state = lock(&self.state);
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
            build.status = BuildState::Error;
            build.finished_at = Some(Utc::now());
            build.reason = Some(reason);
            Ok(())
        })
    }

    /// Marks the build ready and makes `version` the template's current one.
    pub(crate) fn finish_build(&self, template_id: &str, version: BuiltVersion) -> Result<()> {
        let build_id = version.build_id.clone();
        let mut state = lock(&self.state);
        let mut record = state
            .templates
            .get(template_id)
            .cloned()
            .ok_or_else(|| Error::UnknownTemplate(template_id.to_owned()))?;
        let build_tags = state
            .builds
            .get(&build_id)
            .map(|b| b.record.tags.clone())
            .unwrap_or_default();
        let now = Utc::now();
        for tag in build_tags {
            record.tag_builds.insert(
                tag,
                TagRecord {
                    build_id: build_id.clone(),
                    created_at: now,
                },
            );
        }
        // Past the cap, the tags naming the oldest builds go (never this build's).
        while record.tag_builds.len() > MAX_TAGS {
            let oldest = record
                .tag_builds
                .iter()
                .filter(|(_, t)| t.build_id != build_id)
                .min_by_key(|(_, t)| t.created_at)
                .map(|(tag, _)| tag.clone());
            match oldest {
                Some(tag) => record.tag_builds.remove(&tag),
                None => break,
            };
        }
        if let Some(previous) = record.ready.take() {
            record.tagged_versions.push(previous);
        }
        record.ready = Some(version);
        prune_versions(&mut record);
        record.updated_at = now;
        write_json(
            &self.template_dir(template_id).join("template.json"),
            &record,
        )?;
        state.templates.insert(template_id.to_owned(), record);
        drop(state);
        self.update_build(template_id, &build_id, |build| {
            build.status = BuildState::Ready;
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
        let mut state = lock(&self.state);
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
        let state = lock(&self.state);
        let referenced: std::collections::HashSet<&PathBuf> = state
            .templates
            .values()
            .flat_map(|t| t.ready.iter().chain(t.tagged_versions.iter()))
            .flat_map(|v| v.layers.iter())
            .collect();
        let mut removed = Vec::new();
        for record in state.templates.values() {
            for build_id in &record.builds {
                let Some(build) = state.builds.get(build_id) else {
                    continue;
                };
                let layer = self.layer_dir(&record.id, build_id);
                if !build.record.status.is_finished()
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
        removed.extend(self.images.collect_garbage(&|dir| {
            referenced.iter().any(|p| p.as_path() == dir) || in_use.contains(dir)
        }));
        removed
    }

    /// Deletes template `id` (id or alias), its builds, logs and layers. `in_use` says
    /// whether a sandbox runs from a template id. Refused (`Conflict`) for `base`, while
    /// a build of it runs, while a sandbox uses it and while another template stacks on
    /// its layers.
    pub fn delete(&self, id: &str, in_use: impl Fn(&str) -> bool) -> Result<()> {
        let mut state = lock(&self.state);
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
                .is_some_and(|b| !b.record.status.is_finished())
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
                    .iter()
                    .chain(t.tagged_versions.iter())
                    .any(|r| r.layers.iter().any(|l| l.starts_with(&own_layers)))
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
        // Its record is gone already: what is left of its directory is garbage (and
        // `load` finishes the job after a crash).
        crate::cleanup::remove_dir(&self.template_dir(&record.id));
        if own_layers.exists() {
            fs::remove_dir_all(&own_layers).map_err(Error::io("remove", &own_layers))?;
        }
        Ok(())
    }
}

/// The ready version of `record` that is build `build_id`, current or tagged.
fn version_of<'a>(record: &'a TemplateRecord, build_id: &str) -> Option<&'a BuiltVersion> {
    record
        .ready
        .iter()
        .chain(record.tagged_versions.iter())
        .find(|v| v.build_id == build_id)
}

/// Drops the older versions no tag names any more (their layers then go at the next
/// garbage collection, unless a sandbox still runs from them).
fn prune_versions(record: &mut TemplateRecord) {
    let named: std::collections::HashSet<&String> =
        record.tag_builds.values().map(|t| &t.build_id).collect();
    let current = record.ready.as_ref().map(|r| r.build_id.clone());
    record
        .tagged_versions
        .retain(|v| named.contains(&v.build_id) && current.as_deref() != Some(v.build_id.as_str()));
    // A tag whose build has no version left (failed, or gone) names nothing.
    let kept: std::collections::HashSet<String> = record
        .ready
        .iter()
        .chain(record.tagged_versions.iter())
        .map(|v| v.build_id.clone())
        .collect();
    record.tag_builds.retain(|_, t| kept.contains(&t.build_id));
}

fn check_tag_count(record: &TemplateRecord) -> Result<()> {
    if record.tag_builds.len() > MAX_TAGS {
        return Err(Error::InvalidSpec {
            field: "tags",
            reason: format!("at most {MAX_TAGS} tags per template"),
        });
    }
    Ok(())
}

/// `tags` as bare tags: each `tag` or `name:tag` of template `name`, checked.
fn bare_tags(name: &str, tags: &[String]) -> Result<Vec<String>> {
    if tags.is_empty() {
        return Err(Error::InvalidSpec {
            field: "tags",
            reason: "at least one tag is required".to_owned(),
        });
    }
    let mut bare = Vec::new();
    for full in tags {
        let tag = match full.split_once(':') {
            Some((n, t)) if n == name => t,
            Some(_) => {
                return Err(Error::InvalidSpec {
                    field: "tags",
                    reason: format!(
                        "{full:?} must be a tag or \"{name}:tag\" (of the template it tags)"
                    ),
                });
            }
            None => full.as_str(),
        };
        check_tag(tag)?;
        if !bare.iter().any(|b| b == tag) {
            bare.push(tag.to_owned());
        }
    }
    Ok(bare)
}

/// Reads a JSON-lines build log; a torn last line (a crash mid-append) is skipped.
pub(super) fn read_log(path: &Path) -> Vec<LogEntry> {
    let Ok(text) = fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}
