//! Directory watching on inotify (through `notify`), for the `WatchDir` stream and the
//! polling watcher trio (`CreateWatcher` / `GetWatcherEvents` / `RemoveWatcher`).
//!
//! Events keep inotify's granularity (fsnotify's mapping), because clients count them:
//! writing a new file through `POST /files` yields CREATE, CHMOD (the chown), WRITE.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use courier_e2b::proto::filesystem::{EventType, FilesystemEvent};
use notify::{
    EventKind, RecommendedWatcher, RecursiveMode, Watcher as _,
    event::{ModifyKind, RenameMode},
};

use crate::{Error, paths, users::UserDb};

/// Events kept per polling watcher between two `GetWatcherEvents` calls; older ones are
/// dropped first so a forgotten watcher cannot grow without bound.
const MAX_PENDING_EVENTS: usize = 100_000;

/// A live inotify watch; dropping it stops watching.
pub(crate) struct Watch {
    _watcher: RecommendedWatcher,
}

fn event_type(kind: &EventKind) -> Option<EventType> {
    match kind {
        EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
            Some(EventType::Create)
        }
        EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any | ModifyKind::Other) => {
            Some(EventType::Write)
        }
        EventKind::Modify(ModifyKind::Metadata(_)) => Some(EventType::Chmod),
        EventKind::Modify(ModifyKind::Name(
            RenameMode::From | RenameMode::Any | RenameMode::Other,
        )) => Some(EventType::Rename),
        EventKind::Remove(_) => Some(EventType::Remove),
        _ => None,
    }
}

/// Checks that `root` is a watchable directory.
pub(crate) fn check_root(root: &Path) -> Result<(), Error> {
    match std::fs::metadata(root) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(Error::InvalidArgument(format!(
            "path '{}' is not a directory",
            paths::display(root)
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotFound(format!(
            "path '{}' does not exist",
            paths::display(root)
        ))),
        Err(e) => Err(Error::io(
            format!("watching '{}'", paths::display(root)),
            &e,
        )),
    }
}

/// Starts watching `root`, handing each event to `sink` (on notify's thread).
pub(crate) fn watch(
    root: &Path,
    recursive: bool,
    include_entry: bool,
    sink: impl Fn(FilesystemEvent) + Send + 'static,
) -> Result<Watch, Error> {
    check_root(root)?;
    let base: PathBuf = root.to_path_buf();
    let db = UserDb::load();
    let mut watcher = notify::recommended_watcher(move |result: notify::Result<notify::Event>| {
        let Ok(event) = result else { return };
        let Some(kind) = event_type(&event.kind) else {
            return;
        };
        for path in &event.paths {
            let Ok(relative) = path.strip_prefix(&base) else {
                continue;
            };
            if relative.as_os_str().is_empty() {
                continue;
            }
            let entry = (include_entry
                && matches!(
                    kind,
                    EventType::Create | EventType::Write | EventType::Chmod
                ))
            .then(|| super::entry_info(path, &db).ok())
            .flatten();
            sink(FilesystemEvent {
                name: paths::display(relative),
                r#type: kind as i32,
                entry,
            });
        }
    })
    .map_err(|e| Error::Internal(format!("starting a watcher: {e}")))?;
    let mode = if recursive {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    };
    watcher
        .watch(root, mode)
        .map_err(|e| Error::Internal(format!("watching '{}': {e}", paths::display(root))))?;
    Ok(Watch { _watcher: watcher })
}

struct Polling {
    _watch: Watch,
    events: Arc<Mutex<Vec<FilesystemEvent>>>,
}

/// The polling watchers, by id.
#[derive(Default)]
pub(crate) struct Watchers {
    inner: Mutex<HashMap<String, Polling>>,
}

impl Watchers {
    /// Starts a polling watcher and returns its id.
    pub fn create(
        &self,
        root: &Path,
        recursive: bool,
        include_entry: bool,
    ) -> Result<String, Error> {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink_events = events.clone();
        let watch = watch(root, recursive, include_entry, move |event| {
            let mut events = sink_events.lock().unwrap_or_else(PoisonError::into_inner);
            if events.len() >= MAX_PENDING_EVENTS {
                events.remove(0);
            }
            events.push(event);
        })?;
        let id = uuid::Uuid::new_v4().to_string();
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                id.clone(),
                Polling {
                    _watch: watch,
                    events,
                },
            );
        Ok(id)
    }

    /// Drains the events collected since the last call.
    pub fn drain(&self, id: &str) -> Result<Vec<FilesystemEvent>, Error> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let polling = inner
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("watcher with id '{id}' not found")))?;
        Ok(std::mem::take(
            &mut *polling
                .events
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        ))
    }

    /// Stops a watcher.
    pub fn remove(&self, id: &str) -> Result<(), Error> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id)
            .map(|_| ())
            .ok_or_else(|| Error::NotFound(format!("watcher with id '{id}' not found")))
    }
}
