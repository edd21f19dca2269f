//! Path resolution as envd does it (§4.4): relative paths and `~` resolve against the
//! requesting user's home, empty against the default workdir, and `..` is folded
//! lexically so a path can never climb above `/`.

use std::path::{Component, Path, PathBuf};

use crate::{Error, users::User};

/// Resolves a client path for `user` to a clean absolute path.
///
/// ```
/// use std::path::{Path, PathBuf};
/// use courier_envd::{paths::resolve, users::User};
/// let user = User { name: "user".into(), uid: 1000, gid: 1000, home: "/home/user".into(), shell: "/bin/bash".into() };
/// assert_eq!(resolve("a.txt", &user, None).unwrap(), PathBuf::from("/home/user/a.txt"));
/// assert_eq!(resolve("~/x/../y", &user, None).unwrap(), PathBuf::from("/home/user/y"));
/// assert_eq!(resolve("/../../etc", &user, None).unwrap(), PathBuf::from("/etc"));
/// assert_eq!(resolve("", &user, Some(Path::new("/work"))).unwrap(), PathBuf::from("/work"));
/// ```
pub fn resolve(raw: &str, user: &User, default_workdir: Option<&Path>) -> Result<PathBuf, Error> {
    if raw.contains('\0') {
        return Err(Error::InvalidArgument(format!(
            "path {raw:?} contains a NUL byte"
        )));
    }
    let joined = if raw.is_empty() {
        default_workdir.map_or_else(|| user.home.clone(), Path::to_path_buf)
    } else if raw == "~" {
        user.home.clone()
    } else if let Some(rest) = raw.strip_prefix("~/") {
        user.home.join(rest)
    } else if raw.starts_with('/') {
        PathBuf::from(raw)
    } else {
        user.home.join(raw)
    };
    Ok(normalize(&joined))
}

/// Folds `.` and `..` without touching the file system; the result is absolute.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Display form of a path for messages and responses (lossy for non-UTF-8 names).
pub fn display(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
