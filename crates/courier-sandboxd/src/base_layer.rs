//! The `base` layer: a Debian userland assembled from the host's system directories.
//!
//! Approach ("copy by reference"): the layer is a structured layer (see
//! [`crate::runtime::rootfs`]) whose tree holds only small, generated or copied parts,
//! while the big read-only system directories are *referenced* in its manifest and
//! presented inside each sandbox as nested overlays over the host's directories:
//!
//! - `/usr` (and `/bin`, `/sbin`, `/lib*` when they are real directories on the host;
//!   when they are the usual merged-`/usr` symlinks the symlinks are copied): host
//!   directories, so the sandbox has exactly the host's bash, coreutils, git, python3,
//!   curl, node... and writes to them land in the sandbox's own upper dir;
//! - `/etc`: a copy of the host's, with generated `passwd`, `group`, `shadow`,
//!   `gshadow` (no host password hashes), user `user` (uid/gid 1000, home `/home/user`,
//!   shell `/bin/bash`, in group `sudo`), `/etc/sudoers.d/courier-user` granting
//!   passwordless sudo, no SSH host private keys, and none of the files other host users
//!   may not read (TLS private keys, `security/opasswd`, service credentials): root
//!   inside a sandbox would read them. sudo's policy (`sudoers`, `sudoers.d/`) is kept;
//!   it holds no secret and sudo needs it;
//! - `/home/user` from `/etc/skel`, an empty `/root` (mode 0700), `/tmp`, `/var/*`
//!   skeleton, and empty mount points (`/proc`, `/sys`, `/dev`, `/run`, ...).
//!
//! Nothing else of the host appears: not `/root`, `/home`, `/opt`, `/srv`, `/mnt`, the
//! server's data dir or other sandboxes. Creating the layer takes milliseconds and a few
//! MB (the copy of `/etc`); the trade-off is that the sandbox's system software is the
//! host's and changes with it.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};
use crate::runtime::rootfs::{HostDir, LAYER_MANIFEST, LAYER_ROOTFS, LayerManifest};

/// Host directories presented by reference (when they are directories, not symlinks).
pub const HOST_SYSTEM_DIRS: [&str; 7] = ["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// The unprivileged user every sandbox has.
pub const USER: &str = crate::runtime::SANDBOX_USER;
/// Its uid and gid.
pub const USER_ID: u32 = 1000;

/// Options of [`assemble_with`].
#[derive(Debug, Clone)]
pub struct BaseLayerOptions {
    /// The host root to take system directories from (`/`; tests may use a fake tree).
    pub host_root: PathBuf,
}

impl Default for BaseLayerOptions {
    fn default() -> Self {
        Self {
            host_root: PathBuf::from("/"),
        }
    }
}

/// Builds the `base` layer at `dest` from the host's `/` and returns `dest`. An existing
/// layer at `dest` (one with a manifest) is kept as is, so this is cheap to call at every
/// startup; remove `dest` to rebuild it.
pub fn assemble(dest: &Path) -> Result<PathBuf> {
    assemble_with(dest, &BaseLayerOptions::default())
}

/// [`assemble`] with explicit options.
pub fn assemble_with(dest: &Path, options: &BaseLayerOptions) -> Result<PathBuf> {
    if dest.join(LAYER_MANIFEST).is_file() {
        return Ok(dest.to_path_buf());
    }
    let parent = dest.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(parent).map_err(Error::io("create dir", parent))?;
    // Build next to the destination, then rename: a crash never leaves a half layer that
    // looks complete.
    let tmp = dest.with_extension(format!("building-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(Error::io("remove", &tmp))?;
    }
    let result = build(&tmp, options);
    if let Err(e) = result {
        crate::cleanup::remove_dir(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, dest).map_err(Error::io("rename", dest))?;
    Ok(dest.to_path_buf())
}

fn build(layer: &Path, options: &BaseLayerOptions) -> Result<()> {
    let root = layer.join(LAYER_ROOTFS);
    mkdir(&root, 0o755)?;
    let host = &options.host_root;

    let mut manifest = LayerManifest::default();
    for name in HOST_SYSTEM_DIRS {
        let source = host.join(name);
        let Ok(meta) = fs::symlink_metadata(&source) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&source).map_err(Error::io("read link", &source))?;
            symlink(&target, root.join(name)).map_err(Error::io("symlink", root.join(name)))?;
        } else if meta.is_dir() {
            mkdir(&root.join(name), 0o755)?;
            manifest.host_dirs.push(HostDir {
                source,
                target: PathBuf::from("/").join(name),
            });
        }
    }

    copy_etc(&host.join("etc"), &root.join("etc"))?;

    for (dir, mode) in [
        ("root", 0o700),
        ("home", 0o755),
        ("tmp", 0o1777),
        ("var", 0o755),
        ("var/tmp", 0o1777),
        ("var/log", 0o755),
        ("var/cache", 0o755),
        ("var/lib", 0o755),
        ("var/spool", 0o755),
        ("var/mail", 0o2775),
        ("run", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
        ("mnt", 0o755),
        ("media", 0o755),
        ("srv", 0o755),
        ("opt", 0o755),
    ] {
        mkdir(&root.join(dir), mode)?;
    }
    let home = root.join("home").join(USER);
    mkdir(&home, 0o755)?;
    copy_tree_flat(&root.join("etc/skel"), &home)?;
    chown_tree(&home, USER_ID)?;

    let manifest_path = layer.join(LAYER_MANIFEST);
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::State {
        path: manifest_path.clone(),
        reason: e.to_string(),
    })?;
    fs::write(&manifest_path, json).map_err(Error::io("write", &manifest_path))
}

fn mkdir(path: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(path).map_err(Error::io("create dir", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(Error::io("chmod", path))
}

/// Copies `/etc` (with `cp -a`, which keeps owners, modes, links and special files) and
/// replaces the account databases and secrets.
fn copy_etc(source: &Path, dest: &Path) -> Result<()> {
    if source.is_dir() {
        let status = Command::new("cp")
            .arg("-a")
            .arg(source)
            .arg(dest)
            .status()
            .map_err(Error::sys("run cp -a for /etc"))?;
        if !status.success() {
            return Err(Error::Sys {
                op: format!("cp -a {} {}", source.display(), dest.display()),
                source: std::io::Error::other(status.to_string()),
            });
        }
    } else {
        mkdir(dest, 0o755)?;
    }
    drop_private_files(dest, Path::new(""), false)?;

    let read = |name: &str| fs::read_to_string(dest.join(name)).unwrap_or_default();
    let passwd = accounts_passwd(&read("passwd"));
    let group = accounts_group(&read("group"));
    let names: Vec<&str> = passwd.lines().filter_map(|l| l.split(':').next()).collect();
    let groups: Vec<&str> = group.lines().filter_map(|l| l.split(':').next()).collect();
    let shadow: String = names
        .iter()
        .map(|n| format!("{n}:*:20000:0:99999:7:::\n"))
        .collect();
    let gshadow: String = groups.iter().map(|g| format!("{g}:*::\n")).collect();

    write(dest, "passwd", &passwd, 0o644)?;
    write(dest, "group", &group, 0o644)?;
    write(dest, "shadow", &shadow, 0o640)?;
    write(dest, "gshadow", &gshadow, 0o640)?;
    for stale in ["passwd-", "group-", "shadow-", "gshadow-"] {
        crate::cleanup::remove_file(&dest.join(stale));
    }
    mkdir(&dest.join("sudoers.d"), 0o755)?;
    write(
        dest,
        "sudoers.d/courier-user",
        &format!("{USER} ALL=(ALL:ALL) NOPASSWD: ALL\n"),
        0o440,
    )?;

    // SSH host private keys identify the host; a sandbox must not have them.
    if let Ok(entries) = fs::read_dir(dest.join("ssh")) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("ssh_host_") && name.ends_with("_key") {
                crate::cleanup::remove_file(&entry.path());
            }
        }
    }
    Ok(())
}

/// Removes from the copy of `/etc` at `dir` every file other users of the host may not
/// read: a regular file without the "other" read bit, or anything below a directory
/// without the "other" search bit (`ssl/private/`). On the host those are root's (or a
/// service's) secrets; in a sandbox they would belong to the sandbox's root. Directories
/// stay (empty), with their modes; sudo's policy stays. `rel` is `dir`'s path below
/// `/etc`, `private` whether an ancestor already denies other users.
fn drop_private_files(dir: &Path, rel: &Path, private: bool) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(Error::io("read dir", dir))? {
        let entry = entry.map_err(Error::io("read dir", dir))?;
        let path = entry.path();
        let rel = rel.join(entry.file_name());
        let meta = fs::symlink_metadata(&path).map_err(Error::io("stat", &path))?;
        if meta.is_dir() {
            drop_private_files(&path, &rel, private || meta.mode() & 0o001 == 0)?;
            continue;
        }
        let sudo_policy = rel == Path::new("sudoers") || rel.starts_with("sudoers.d");
        let unreadable = meta.is_file() && meta.mode() & 0o004 == 0;
        if !sudo_policy && (private || unreadable) {
            fs::remove_file(&path).map_err(Error::io("remove", &path))?;
        }
    }
    Ok(())
}

fn write(dir: &Path, name: &str, text: &str, mode: u32) -> Result<()> {
    let path = dir.join(name);
    // Whatever is there (a copy of the host's file, maybe read-only) goes first; a
    // failure to remove it surfaces as the write's error just below.
    let _ = fs::remove_file(&path);
    fs::write(&path, text).map_err(Error::io("write", &path))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(Error::io("chmod", &path))
}

/// The host's `passwd` without any entry named `user` or with uid 1000, plus `user`.
fn accounts_passwd(host: &str) -> String {
    let mut out: String = host
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split(':').collect();
            f.len() >= 7 && f[0] != USER && f[2] != USER_ID.to_string()
        })
        .map(|l| format!("{l}\n"))
        .collect();
    if out.is_empty() {
        out.push_str("root:x:0:0:root:/root:/bin/bash\n");
    }
    out.push_str(&format!(
        "{USER}:x:{USER_ID}:{USER_ID}:Courier user:/home/{USER}:/bin/bash\n"
    ));
    out
}

/// The host's `group` without `user`/gid 1000 and with `user` added to `sudo`.
fn accounts_group(host: &str) -> String {
    let mut out = String::new();
    let mut has_sudo = false;
    for line in host.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 || f[0] == USER || f[2] == USER_ID.to_string() {
            continue;
        }
        if f[0] == "sudo" {
            has_sudo = true;
            let members: Vec<&str> = f[3]
                .split(',')
                .filter(|m| !m.is_empty() && *m != USER)
                .chain([USER])
                .collect();
            out.push_str(&format!(
                "{}:{}:{}:{}\n",
                f[0],
                f[1],
                f[2],
                members.join(",")
            ));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !has_sudo {
        out.push_str(&format!("sudo:x:27:{USER}\n"));
    }
    out.push_str(&format!("{USER}:x:{USER_ID}:\n"));
    out
}

/// Copies the regular files and directories of `source` into `dest` (for `/etc/skel`).
fn copy_tree_flat(source: &Path, dest: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(source) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let from = entry.path();
        let to = dest.join(entry.file_name());
        let kind = entry.file_type().map_err(Error::io("stat", &from))?;
        if kind.is_dir() {
            mkdir(&to, 0o755)?;
            copy_tree_flat(&from, &to)?;
        } else if kind.is_file() {
            fs::copy(&from, &to).map_err(Error::io("copy", &from))?;
        }
    }
    Ok(())
}

fn chown_tree(path: &Path, id: u32) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(id), Some(id)).map_err(Error::io("chown", path))?;
    if path.is_dir()
        && !fs::symlink_metadata(path)
            .map_err(Error::io("stat", path))?
            .file_type()
            .is_symlink()
    {
        for entry in fs::read_dir(path)
            .map_err(Error::io("read dir", path))?
            .flatten()
        {
            chown_tree(&entry.path(), id)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_gets_user_and_drops_a_clashing_uid() {
        let host = "root:x:0:0:root:/root:/bin/bash\ndebian:x:1000:1000::/home/debian:/bin/bash\n";
        let out = accounts_passwd(host);
        assert_eq!(
            out,
            "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000:Courier user:/home/user:/bin/bash\n"
        );
    }

    #[test]
    fn user_joins_sudo_group() {
        assert_eq!(
            accounts_group("root:x:0:\nsudo:x:27:alice\n"),
            "root:x:0:\nsudo:x:27:alice,user\nuser:x:1000:\n"
        );
        assert_eq!(
            accounts_group("root:x:0:\n"),
            "root:x:0:\nsudo:x:27:user\nuser:x:1000:\n"
        );
    }

    #[test]
    fn base_layer_references_system_dirs_and_hides_private_ones() {
        let host = tempfile::tempdir().unwrap();
        let h = host.path();
        fs::create_dir_all(h.join("usr/bin")).unwrap();
        symlink("usr/bin", h.join("bin")).unwrap();
        fs::create_dir_all(h.join("etc/skel")).unwrap();
        fs::create_dir_all(h.join("etc/ssh")).unwrap();
        fs::write(h.join("etc/skel/.bashrc"), "# hi\n").unwrap();
        fs::write(h.join("etc/ssh/ssh_host_ed25519_key"), "secret").unwrap();
        fs::write(h.join("etc/ssh/ssh_host_ed25519_key.pub"), "public").unwrap();
        fs::write(h.join("etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
        fs::write(h.join("etc/shadow"), "root:$6$hash:1::::::\n").unwrap();
        fs::create_dir_all(h.join("root")).unwrap();
        fs::write(h.join("root/secret"), "x").unwrap();
        // Root-only files of the host's /etc: by mode, or behind a closed directory.
        let private = |path: &str, text: &str, mode: u32| {
            let path = h.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, text).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        };
        private("etc/security/opasswd", "root:1:$6$old", 0o600);
        private(
            "etc/ssl/private/host.key",
            "-----BEGIN PRIVATE KEY-----",
            0o644,
        );
        fs::set_permissions(h.join("etc/ssl/private"), fs::Permissions::from_mode(0o710)).unwrap();
        private("etc/ssl/certs/host.pem", "public cert", 0o644);
        private("etc/sudoers", "root ALL=(ALL:ALL) ALL\n", 0o440);
        private("etc/sudoers.d/admins", "%admin ALL=(ALL) ALL\n", 0o440);

        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("base");
        let layer = assemble_with(
            &dest,
            &BaseLayerOptions {
                host_root: h.to_path_buf(),
            },
        )
        .unwrap();
        let manifest: LayerManifest =
            serde_json::from_slice(&fs::read(layer.join(LAYER_MANIFEST)).unwrap()).unwrap();
        assert_eq!(
            manifest.host_dirs,
            vec![HostDir {
                source: h.join("usr"),
                target: "/usr".into()
            }]
        );
        let root = layer.join(LAYER_ROOTFS);
        assert_eq!(
            fs::read_link(root.join("bin")).unwrap(),
            PathBuf::from("usr/bin")
        );
        assert!(
            fs::read_to_string(root.join("etc/passwd"))
                .unwrap()
                .contains("user:x:1000:1000")
        );
        assert!(
            !fs::read_to_string(root.join("etc/shadow"))
                .unwrap()
                .contains("$6$")
        );
        assert!(
            fs::read_to_string(root.join("etc/sudoers.d/courier-user"))
                .unwrap()
                .contains("NOPASSWD")
        );
        assert!(!root.join("etc/ssh/ssh_host_ed25519_key").exists());
        assert!(root.join("etc/ssh/ssh_host_ed25519_key.pub").exists());
        assert!(!root.join("etc/security/opasswd").exists());
        assert!(!root.join("etc/ssl/private/host.key").exists());
        assert!(root.join("etc/ssl/private").is_dir());
        assert!(root.join("etc/ssl/certs/host.pem").exists());
        assert!(root.join("etc/sudoers").exists());
        assert!(root.join("etc/sudoers.d/admins").exists());
        assert!(root.join("home/user/.bashrc").exists());
        assert_eq!(fs::read_dir(root.join("root")).unwrap().count(), 0);
        // A second call keeps the existing layer.
        assert_eq!(
            assemble_with(
                &dest,
                &BaseLayerOptions {
                    host_root: h.to_path_buf()
                }
            )
            .unwrap(),
            dest
        );
    }
}
