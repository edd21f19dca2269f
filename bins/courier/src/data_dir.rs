//! The data directory's permissions: `courier serve` keeps prompts, logs, repository URLs
//! (`courier.db`), the master key and the embedded sandbox server's state there, so
//! nobody but its owner may read any of it.
//!
//! [`restrict_umask`] makes everything the process creates from then on owner-only
//! (umask 077); [`secure`] creates the directory as 0700, or fixes an existing one to
//! 0700, and takes group and other permissions off what is already in it (files 0600 or
//! owner-only, directories 0700), reporting each fix. Symbolic links are left alone: their
//! targets are not the data dir's to change.

use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

/// One permission change [`secure`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixed {
    /// What was changed.
    pub path: PathBuf,
    /// Its mode before (permission bits).
    pub from: u32,
    /// Its mode after.
    pub to: u32,
}

/// Sets the process umask to 077: files and directories created from now on are
/// owner-only unless their creator asks for a mode explicitly.
pub fn restrict_umask() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

/// Creates `dir` (0700) or fixes it to 0700, then takes group and other permissions off
/// its direct entries; returns what it changed. Deeper entries are unreachable by others
/// once `dir` is 0700.
pub fn secure(dir: &Path) -> Result<Vec<Fixed>> {
    let mut fixed = Vec::new();
    match std::fs::symlink_metadata(dir) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    }
    // Through a link the operator made (`courier-data -> /srv/courier`): what matters is
    // the directory it names.
    if let Some(f) = restrict(dir, 0o700, true)? {
        fixed.push(f);
    }
    let entries = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        // Owner bits kept (an executable stays executable), group and other off.
        if kind.is_dir() || kind.is_file() {
            fixed.extend(restrict(&path, 0o700, false)?);
        }
    }
    Ok(fixed)
}

/// Takes the bits outside `allowed` off `path`'s mode; `None` when there were none.
fn restrict(path: &Path, allowed: u32, follow: bool) -> Result<Option<Fixed>> {
    let meta = if follow {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    }
    .with_context(|| format!("reading {}", path.display()))?;
    let from = meta.permissions().mode() & 0o7777;
    let to = from & allowed;
    // Directories must stay usable by their owner.
    let to = if meta.is_dir() { to | 0o700 } else { to };
    if to == from {
        return Ok(None);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(to))
        .with_context(|| format!("restricting the permissions of {}", path.display()))?;
    Ok(Some(Fixed {
        path: path.to_path_buf(),
        from,
        to,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    // What another local user tries: reading `courier.db` (prompts, logs, repository
    // URLs), its `-wal`, the master key, or listing the data dir. Each must be refused
    // by the modes asserted here.

    #[test]
    fn a_new_data_dir_is_owner_only() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("a/b/courier-data");
        let fixed = secure(&dir).unwrap();
        assert!(fixed.is_empty(), "{fixed:?}");
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn an_existing_data_dir_and_its_files_are_fixed_and_reported() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("courier-data");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        for (name, m) in [
            ("courier.db", 0o644),
            ("courier.db-wal", 0o644),
            ("courier.db-shm", 0o664),
            ("master.key", 0o600),
            ("helper", 0o755),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, "x").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m)).unwrap();
        }
        std::fs::create_dir(dir.join("sandboxd")).unwrap();
        std::fs::set_permissions(dir.join("sandboxd"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        // A link out of the data dir: its target is not ours to change.
        let outside = parent.path().join("outside");
        std::fs::write(&outside, "x").unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();

        let mut fixed = secure(&dir).unwrap();
        fixed.sort_by(|a, b| a.path.cmp(&b.path));
        let names: Vec<(String, u32, u32)> = fixed
            .iter()
            .map(|f| {
                (
                    f.path.file_name().unwrap().to_string_lossy().into_owned(),
                    f.from,
                    f.to,
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("courier-data".to_owned(), 0o755, 0o700),
                ("courier.db".to_owned(), 0o644, 0o600),
                ("courier.db-shm".to_owned(), 0o664, 0o600),
                ("courier.db-wal".to_owned(), 0o644, 0o600),
                ("helper".to_owned(), 0o755, 0o700),
                ("sandboxd".to_owned(), 0o755, 0o700),
            ]
        );
        assert_eq!(mode(&dir.join("master.key")), 0o600);
        assert_eq!(mode(&outside), 0o644, "a link's target is left alone");
        // Secure already: nothing more to do.
        assert!(secure(&dir).unwrap().is_empty());
    }
}
