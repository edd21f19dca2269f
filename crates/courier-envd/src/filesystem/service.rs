//! The `filesystem.Filesystem` RPC handlers. Every file-system call runs as the
//! requesting user ([`crate::identity`]), so the kernel decides what they may see and change.

use std::{fs, io, path::Path};

use axum::{
    extract::{self, Request, State},
    response::Response,
};
use courier_e2b::proto::filesystem::{
    CreateWatcherRequest, CreateWatcherResponse, EntryInfo, GetWatcherEventsRequest,
    GetWatcherEventsResponse, ListDirRequest, ListDirResponse, MakeDirRequest, MakeDirResponse,
    MoveRequest, MoveResponse, RemoveRequest, RemoveResponse, RemoveWatcherRequest,
    RemoveWatcherResponse, StatRequest, StatResponse, WatchDirRequest, WatchDirResponse,
    watch_dir_response,
};
use tokio::{sync::mpsc, time::Instant};

use super::{create_dir_all, entry_from_metadata, entry_info, watch};
use crate::{
    Envd, Error,
    identity::as_user,
    paths,
    rpc::{self, Ctx, StreamWriter},
    users::UserDb,
};

/// `POST /filesystem.Filesystem/{method}`.
pub(crate) async fn route(
    State(envd): State<Envd>,
    extract::Path(method): extract::Path<String>,
    req: Request,
) -> Response {
    let kind = match method.as_str() {
        "WatchDir" => rpc::Kind::ServerStream,
        "Stat" | "MakeDir" | "Move" | "ListDir" | "Remove" | "CreateWatcher"
        | "GetWatcherEvents" | "RemoveWatcher" => rpc::Kind::Unary,
        _ => return rpc::unimplemented("filesystem.Filesystem", &method),
    };
    let (ctx, codec, body) = match rpc::prepare(envd, kind, req).await {
        Ok(prepared) => prepared,
        Err(response) => return response,
    };
    match method.as_str() {
        "WatchDir" => rpc::server_stream(ctx, codec, body, watch_dir).await,
        "Stat" => rpc::unary(ctx, codec, body, stat).await,
        "MakeDir" => rpc::unary(ctx, codec, body, make_dir).await,
        "Move" => rpc::unary(ctx, codec, body, move_entry).await,
        "ListDir" => rpc::unary(ctx, codec, body, list_dir).await,
        "Remove" => rpc::unary(ctx, codec, body, remove).await,
        "CreateWatcher" => rpc::unary(ctx, codec, body, create_watcher).await,
        "GetWatcherEvents" => rpc::unary(ctx, codec, body, get_watcher_events).await,
        _ => rpc::unary(ctx, codec, body, remove_watcher).await,
    }
}

/// Runs blocking file system work off the async threads, as the caller.
async fn blocking<T: Send + 'static>(
    ctx: &Ctx,
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    as_user(ctx.identity.clone(), work).await
}

fn resolve(ctx: &Ctx, raw: &str) -> Result<std::path::PathBuf, Error> {
    let workdir = ctx.envd.shared.runtime().default_workdir;
    paths::resolve(raw, &ctx.user, workdir.as_deref())
}

fn not_found_or(path: &Path, what: &str, e: &io::Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        Error::NotFound(format!("path '{}' does not exist", paths::display(path)))
    } else {
        Error::io(format!("{what} '{}'", paths::display(path)), e)
    }
}

/// `Stat`.
pub(crate) async fn stat(ctx: Ctx, request: StatRequest) -> Result<StatResponse, Error> {
    let path = resolve(&ctx, &request.path)?;
    let db = ctx.db.clone();
    blocking(&ctx, move || {
        let entry = entry_info(&path, &db).map_err(|e| not_found_or(&path, "stat", &e))?;
        Ok(StatResponse { entry: Some(entry) })
    })
    .await
}

/// `MakeDir`: creates parents; an existing directory is `already_exists`.
pub(crate) async fn make_dir(ctx: Ctx, request: MakeDirRequest) -> Result<MakeDirResponse, Error> {
    let path = resolve(&ctx, &request.path)?;
    let db = ctx.db.clone();
    blocking(&ctx, move || {
        match fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                return Err(Error::AlreadyExists(format!(
                    "directory '{}' already exists",
                    paths::display(&path)
                )));
            }
            Ok(_) => {
                return Err(Error::InvalidArgument(format!(
                    "path '{}' already exists and is not a directory",
                    paths::display(&path)
                )));
            }
            Err(_) => {}
        }
        create_dir_all(&path).map_err(|e| {
            Error::io(
                format!("creating directory '{}'", paths::display(&path)),
                &e,
            )
        })?;
        let entry = entry_info(&path, &db).map_err(|e| not_found_or(&path, "stat", &e))?;
        Ok(MakeDirResponse { entry: Some(entry) })
    })
    .await
}

/// `Move`: renames, creating the destination's parents.
pub(crate) async fn move_entry(ctx: Ctx, request: MoveRequest) -> Result<MoveResponse, Error> {
    if request.source.is_empty() || request.destination.is_empty() {
        return Err(Error::InvalidArgument(
            "source and destination are required".to_owned(),
        ));
    }
    let source = resolve(&ctx, &request.source)?;
    let destination = resolve(&ctx, &request.destination)?;
    let db = ctx.db.clone();
    blocking(&ctx, move || {
        if source == Path::new("/") {
            return Err(Error::PermissionDenied("refusing to move '/'".to_owned()));
        }
        if let Err(e) = fs::symlink_metadata(&source) {
            return Err(if e.kind() == io::ErrorKind::NotFound {
                Error::NotFound(format!(
                    "source '{}' does not exist",
                    paths::display(&source)
                ))
            } else {
                Error::io(format!("stat '{}'", paths::display(&source)), &e)
            });
        }
        if let Some(parent) = destination.parent() {
            create_dir_all(parent).map_err(|e| {
                Error::io(
                    format!("creating directory '{}'", paths::display(parent)),
                    &e,
                )
            })?;
        }
        fs::rename(&source, &destination).map_err(|e| {
            Error::io(
                format!(
                    "moving '{}' to '{}'",
                    paths::display(&source),
                    paths::display(&destination)
                ),
                &e,
            )
        })?;
        super::meta_store::rename(&source, &destination);
        let entry =
            entry_info(&destination, &db).map_err(|e| not_found_or(&destination, "stat", &e))?;
        Ok(MoveResponse { entry: Some(entry) })
    })
    .await
}

/// `ListDir`: pre-order, lexical within a directory, root excluded, up to `depth` levels.
pub(crate) async fn list_dir(ctx: Ctx, request: ListDirRequest) -> Result<ListDirResponse, Error> {
    let path = resolve(&ctx, &request.path)?;
    let depth = request.depth.max(1);
    let db = ctx.db.clone();
    blocking(&ctx, move || {
        // Follows a symlinked root, as envd does.
        let meta = fs::metadata(&path).map_err(|e| not_found_or(&path, "stat", &e))?;
        if !meta.is_dir() {
            return Err(Error::InvalidArgument(format!(
                "path '{}' is not a directory",
                paths::display(&path)
            )));
        }
        let mut entries = Vec::new();
        walk(&path, 1, depth, &db, &mut entries)
            .map_err(|e| Error::io(format!("listing '{}'", paths::display(&path)), &e))?;
        Ok(ListDirResponse { entries })
    })
    .await
}

fn walk(
    dir: &Path,
    level: u32,
    depth: u32,
    db: &UserDb,
    out: &mut Vec<EntryInfo>,
) -> io::Result<()> {
    let mut children: Vec<_> = fs::read_dir(dir)?.filter_map(Result::ok).collect();
    children.sort_by_key(fs::DirEntry::file_name);
    for child in children {
        let path = child.path();
        let Ok(lstat) = fs::symlink_metadata(&path) else {
            continue;
        };
        out.push(entry_from_metadata(&path, &lstat, db));
        if lstat.is_dir() && level < depth {
            // A subdirectory we may not read should not fail the whole listing.
            if let Err(e) = walk(&path, level + 1, depth, db, out) {
                tracing::debug!(path = %path.display(), error = %e, "listing skips a subdirectory");
            }
        }
    }
    Ok(())
}

/// `Remove`: recursive; a missing path is success; `/` and an empty path are refused.
pub(crate) async fn remove(ctx: Ctx, request: RemoveRequest) -> Result<RemoveResponse, Error> {
    // An empty path would resolve to the home directory: never delete that by accident.
    if request.path.trim().is_empty() {
        return Err(Error::InvalidArgument("path is required".to_owned()));
    }
    let path = resolve(&ctx, &request.path)?;
    if path == Path::new("/") {
        return Err(Error::PermissionDenied("refusing to remove '/'".to_owned()));
    }
    blocking(&ctx, move || {
        let result = match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(RemoveResponse {}),
            Err(e) => Err(e),
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(&path),
            Ok(_) => fs::remove_file(&path),
        };
        match result {
            Ok(()) => Ok(RemoveResponse {}),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(RemoveResponse {}),
            Err(e) => Err(Error::io(
                format!("removing '{}'", paths::display(&path)),
                &e,
            )),
        }
    })
    .await
}

/// `WatchDir`: start, then file system events and keepalives until the deadline.
pub(crate) async fn watch_dir(
    ctx: Ctx,
    request: WatchDirRequest,
    out: StreamWriter,
) -> Result<(), Error> {
    let root = resolve(&ctx, &request.path)?;
    let (tx, mut events) = mpsc::channel(4096);
    let db = ctx.db.clone();
    // Started as the user: the watcher's thread keeps the user's credentials, so a
    // directory they may not read cannot be watched, nor its entries described.
    let _watch = blocking(&ctx, move || {
        watch::watch(
            &root,
            request.recursive,
            request.include_entry,
            db,
            move |event| {
                // Blocking here (full channel) slows only this watcher's own notify thread;
                // once the stream has ended its events have no reader and are dropped.
                let _ = tx.blocking_send(event);
            },
        )
    })
    .await?;
    let deadline = ctx.timeout.map(|t| Instant::now() + t);
    let message = |event| WatchDirResponse { event: Some(event) };
    if !out
        .send(&message(watch_dir_response::Event::Start(
            watch_dir_response::StartEvent {},
        )))
        .await
    {
        return Ok(());
    }
    loop {
        let idle = tokio::time::sleep(ctx.keepalive);
        let until_deadline = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let next = tokio::select! {
            event = events.recv() => match event {
                Some(event) => watch_dir_response::Event::Filesystem(event),
                None => return Err(Error::Internal("the watcher stopped".to_owned())),
            },
            () = idle => watch_dir_response::Event::Keepalive(watch_dir_response::KeepAlive {}),
            () = until_deadline => return Err(Error::DeadlineExceeded("deadline exceeded".to_owned())),
            () = out.closed() => return Ok(()),
        };
        if !out.send(&message(next)).await {
            return Ok(());
        }
    }
}

/// `CreateWatcher`.
pub(crate) async fn create_watcher(
    ctx: Ctx,
    request: CreateWatcherRequest,
) -> Result<CreateWatcherResponse, Error> {
    let root = resolve(&ctx, &request.path)?;
    let (envd, db) = (ctx.envd.clone(), ctx.db.clone());
    // As the user, for the reason given in `watch_dir`.
    let watcher_id = blocking(&ctx, move || {
        envd.shared
            .watchers
            .create(&root, request.recursive, request.include_entry, db)
    })
    .await?;
    Ok(CreateWatcherResponse { watcher_id })
}

/// `GetWatcherEvents`: the events since the last call.
pub(crate) async fn get_watcher_events(
    ctx: Ctx,
    request: GetWatcherEventsRequest,
) -> Result<GetWatcherEventsResponse, Error> {
    Ok(GetWatcherEventsResponse {
        events: ctx.envd.shared.watchers.drain(&request.watcher_id)?,
    })
}

/// `RemoveWatcher`.
pub(crate) async fn remove_watcher(
    ctx: Ctx,
    request: RemoveWatcherRequest,
) -> Result<RemoveWatcherResponse, Error> {
    ctx.envd.shared.watchers.remove(&request.watcher_id)?;
    Ok(RemoveWatcherResponse {})
}
