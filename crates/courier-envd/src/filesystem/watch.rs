//! Directory watching on inotify (through `notify`), for the `WatchDir` stream and the
//! polling watcher trio (`CreateWatcher` / `GetWatcherEvents` / `RemoveWatcher`).
//!
//! Events keep inotify's granularity (fsnotify's mapping), because clients count them:
//! writing a new file through `POST /files` yields CREATE, CHMOD (the chown), WRITE.
//!
//! Watches are started as the requesting user ([`crate::identity::run_as`]): notify's
//! thread is born then and keeps that user's credentials for its whole life, so every
//! inotify watch it adds (the root, and subdirectories as they appear) and every entry it
//! describes is checked by the kernel against that user.

use std::{
    collections::HashMap,
    io,
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

/// Starts watching `root`, handing each event to `sink` (on notify's thread). Call it as
/// the requesting user: the watcher's thread inherits the caller's credentials.
pub(crate) fn watch(
    root: &Path,
    recursive: bool,
    include_entry: bool,
    db: Arc<UserDb>,
    sink: impl Fn(FilesystemEvent) + Send + 'static,
) -> Result<Watch, Error> {
    check_root(root)?;
    let base: PathBuf = root.to_path_buf();
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
    watcher.watch(root, mode).map_err(|e| {
        let what = format!("watching '{}'", paths::display(root));
        match e.kind {
            notify::ErrorKind::Io(io) => Error::io(what, &io),
            notify::ErrorKind::PathNotFound => Error::io(what, &io::ErrorKind::NotFound.into()),
            _ => Error::Internal(format!("{what}: {e}")),
        }
    })?;
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
    /// Starts a polling watcher and returns its id (call it as the requesting user, as
    /// [`watch`]).
    pub fn create(
        &self,
        root: &Path,
        recursive: bool,
        include_entry: bool,
        db: Arc<UserDb>,
    ) -> Result<String, Error> {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink_events = events.clone();
        let watch = watch(root, recursive, include_entry, db, move |event| {
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
