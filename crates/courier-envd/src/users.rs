//! Unix users and groups, read by hand from `/etc/passwd` and `/etc/group`.
//!
//! Why by hand: the daemon is linked statically and mounted into arbitrary root file
//! systems, where libc's NSS (`getpwnam`) is unavailable or would read the wrong files.

use std::{collections::HashMap, path::PathBuf};

/// One account from `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Numeric user id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory (relative paths resolve against it).
    pub home: PathBuf,
    /// Login shell (`/bin/sh` when the entry leaves it empty, as login(1) does).
    pub shell: PathBuf,
}

/// A snapshot of the account database.
#[derive(Debug, Clone, Default)]
pub struct UserDb {
    users: Vec<User>,
    /// gid → (name, member names)
    groups: HashMap<u32, (String, Vec<String>)>,
}

impl UserDb {
    /// Reads `/etc/passwd` and `/etc/group`; a missing file reads as empty.
    pub fn load() -> UserDb {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
        UserDb::parse(&passwd, &group)
    }

    /// Parses the two files' contents; malformed lines are skipped.
    ///
    /// ```
    /// let db = courier_envd::users::UserDb::parse(
    ///     "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/bash\n",
    ///     "root:x:0:\nsudo:x:27:user\nuser:x:1000:\n",
    /// );
    /// let user = db.user("user").unwrap();
    /// assert_eq!(user.uid, 1000);
    /// assert_eq!(db.supplementary_groups(user), vec![27, 1000]);
    /// assert_eq!(db.group_name(27), "sudo");
    /// ```
    pub fn parse(passwd: &str, group: &str) -> UserDb {
        let users = passwd
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                if fields.len() < 7 || fields[0].is_empty() {
                    return None;
                }
                Some(User {
                    name: fields[0].to_owned(),
                    uid: fields[2].parse().ok()?,
                    gid: fields[3].parse().ok()?,
                    home: PathBuf::from(if fields[5].is_empty() { "/" } else { fields[5] }),
                    shell: PathBuf::from(if fields[6].is_empty() {
                        "/bin/sh"
                    } else {
                        fields[6]
                    }),
                })
            })
            .collect();
        let groups = group
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                if fields.len() < 4 || fields[0].is_empty() {
                    return None;
                }
                let members = fields[3]
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
                    .collect();
                Some((fields[2].parse().ok()?, (fields[0].to_owned(), members)))
            })
            .collect();
        UserDb { users, groups }
    }

    /// The account called `name`.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The first account with this uid.
    pub fn user_by_uid(&self, uid: u32) -> Option<&User> {
        self.users.iter().find(|u| u.uid == uid)
    }

    /// The name of a uid, or the number when it has no account (as Go's envd reports).
    pub fn user_name(&self, uid: u32) -> String {
        self.user_by_uid(uid)
            .map_or_else(|| uid.to_string(), |u| u.name.clone())
    }

    /// The name of a gid, or the number when it has no entry.
    pub fn group_name(&self, gid: u32) -> String {
        self.groups
            .get(&gid)
            .map_or_else(|| gid.to_string(), |(name, _)| name.clone())
    }

    /// Whether `user` belongs to the group called `group`: listed as a member, or it is
    /// the user's primary group (as sudoers' `%group` matches).
    ///
    /// ```
    /// let db = courier_envd::users::UserDb::parse(
    ///     "user:x:1000:1000::/home/user:/bin/bash\nadm1:x:1001:27::/:/bin/sh\nx:x:1002:1002::/:\n",
    ///     "sudo:x:27:user\nuser:x:1000:\n",
    /// );
    /// assert!(db.in_group(db.user("user").unwrap(), "sudo"));
    /// assert!(db.in_group(db.user("adm1").unwrap(), "sudo"));
    /// assert!(!db.in_group(db.user("x").unwrap(), "sudo"));
    /// assert_eq!(db.user("x").unwrap().shell, std::path::PathBuf::from("/bin/sh"));
    /// ```
    pub fn in_group(&self, user: &User, group: &str) -> bool {
        self.groups.iter().any(|(gid, (name, members))| {
            name == group && (*gid == user.gid || members.contains(&user.name))
        })
    }

    /// Every group `user` belongs to (listed as a member, plus its primary group), sorted.
    pub fn supplementary_groups(&self, user: &User) -> Vec<u32> {
        let mut gids: Vec<u32> = self
            .groups
            .iter()
            .filter(|(_, (_, members))| members.contains(&user.name))
            .map(|(gid, _)| *gid)
            .collect();
        if !gids.contains(&user.gid) {
            gids.push(user.gid);
        }
        gids.sort_unstable();
        gids
    }
}

/// The name of the user this daemon runs as (`root` when it has no account entry).
pub fn current_user_name() -> String {
    let uid = nix::unistd::geteuid().as_raw();
    UserDb::load()
        .user_by_uid(uid)
        .map_or_else(|| "root".to_owned(), |u| u.name.clone())
}
